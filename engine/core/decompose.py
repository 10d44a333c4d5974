"""How much of the drop in re-linkage is privacy, and how much is retraining (docs/dp.md).

Torch-free (the dashboard imports it). For every set of DP heads at a pool size N, Recall@1 of
the held-out pairs (image -> report, random negatives) is compared with the original heads (R_o)
and with the heads retrained without privacy, epsilon = inf (R_inf). With R the epsilon heads'
Recall@1, the relative drop splits additively into two parts, in points of the original Recall@1:

    drop     = 100 (R_o - R) / R_o
             = 100 (R_o - R_inf) / R_o   (retraining: inf vs original)
             + 100 (R_inf - R) / R_o     (privacy: epsilon vs inf)

`decompose` gives one row per (heads, N) with these, the intervals of each Recall@1 (the
bootstrap interval of the stored metric; the drop's interval is that interval expressed against
the original's point estimate, and likewise against the inf heads' one), the lift, the
membership signal (AUROC and TPR at the stored FPR, members vs held-out), the probe's macro
AUROC on projected embeddings and the frozen-backbone probe (the sanity line). `drop_sentence`
writes the one sentence the report and the dashboard show. For a transfer, pass the external
cohort's rows and ``source`` (the training cohort): the DP heads there are named
``<epsilon>@<source>``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from engine.core import decision
from engine.core.claims import PAPER_AUROC, PAPER_DP_EPSILON, PAPER_DP_POOL, PAPER_DP_REDUCTION
from engine.core.names import epsilon_label

POOLS: tuple[int | None, ...] = (100, 10_000, None)  # None: the whole held-out set

# The reference paper's DP figure (engine.core.claims holds its numbers): the sentence the
# README and the report put beside this project's figures at its pool size.
PAPER_DP = (f"The reference paper, for comparison: Recall@1 at N = {PAPER_DP_POOL:,} "
            f"{PAPER_DP_REDUCTION:.1%} lower at ε = {PAPER_DP_EPSILON} than with the original "
            f"heads; macro AUROC {PAPER_AUROC[0]:.2%} -> {PAPER_AUROC[1]:.2%}.")

COLUMNS = ["heads", "epsilon", "pool", "pool_size", "recall", "ci_low", "ci_high", "lift",
           "lift_low", "lift_high", "recall_original", "recall_inf", "drop_vs_original",
           "drop_low", "drop_high", "drop_vs_inf", "inf_drop_low", "inf_drop_high",
           "retraining_points", "privacy_points",
           "membership_auroc", "membership_tpr", "membership_fpr", "macro_auroc",
           "macro_change_vs_original", "backbone_auroc", "start", "reference_inf",
           "paired", "retraining_low", "retraining_high", "privacy_low", "privacy_high"]


def _num(value) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _share(a: float, b: float, ref: float) -> float:
    """100 (a - b) / ref, NaN when undefined."""
    if not (math.isfinite(a) and math.isfinite(b) and math.isfinite(ref)) or ref == 0:
        return math.nan
    return 100.0 * (a - b) / ref


def pool_name(pool: int | None) -> str:
    return "full" if pool is None else f"{pool:,}"


def decompose(metrics: pd.DataFrame, *, membership: pd.DataFrame | None = None,
              utility: pd.DataFrame | None = None, source: str | None = None,
              pools: Sequence[int | None] = POOLS, split: str = "test",
              direction: str = "image_to_report", negatives: str = "random",
              k: int = 1, ranks=None, n_boot: int = 1000) -> pd.DataFrame:
    """Decompose the Recall@1 drop of every set of heads at every pool size.

    Args:
        metrics: ``relink_metrics``-like rows of one model and cohort: ``heads, split,
            direction, negatives, pool_size, k, recall, ci_low, ci_high, chance`` (``lift``
            optional). ``heads`` as in the shown views' ``heads_key``.
        membership: Optional ``heads, auroc, tpr_at_fpr[, fpr]`` rows.
        utility: Optional ``heads, label, auroc`` rows (``label = 'macro'`` is read, and heads
            ``backbone`` is the sanity line).
        source: The training cohort of transferred heads (their keys are ``<label>@<source>``).
        pools: Pool sizes; None is the whole held-out set (the largest stored pool).
        split, direction, negatives, k: Which metric rows.
        ranks: Optional mapping heads label -> its ``relink_ranks`` rows of the same split and
            direction (``query_id, patient_id, n_candidates, n_greater, n_tied``). With it, the
            drop, its parts and the change against epsilon = inf get paired intervals from one
            patient bootstrap of the three sets of heads (`decision.decomposition_intervals`);
            without it, the heads' own interval against the reference's point estimate.
        n_boot: Replicates of that bootstrap.

    Heads with a start (``0.34+original``) are compared with the epsilon = inf heads of the same
    start (``inf+original``); an adaptive attacker's heads (``adaptive+...``) are left out.

    Returns:
        One row per (heads, pool) with `COLUMNS`, heads ordered original, inf, then epsilon
        descending; pools whose size is not stored are left out. Percentages are in points.
    """
    m = metrics
    if m is None or m.empty:
        return pd.DataFrame(columns=COLUMNS)
    m = m[(m["split"] == split) & (m["direction"] == direction) & (m["negatives"] == negatives)
          & (m["k"] == k)].copy()
    suffix = f"@{source}" if source else ""

    def plain(key: str) -> str | None:
        key = str(key)
        if key in ("original", "backbone"):
            return key
        if suffix:
            return key[: -len(suffix)] if key.endswith(suffix) else None
        return None if "@" in key else key

    m["label"] = [plain(h) for h in m["heads"]]
    m = m.dropna(subset=["label"])
    m = m[~m["label"].map(decision.is_adaptive)]
    m = m.sort_values("pool_size").drop_duplicates(["label", "pool_size"], keep="last")
    if m.empty:
        return pd.DataFrame(columns=COLUMNS)
    full = int(m["pool_size"].max())
    at = {(r["label"], int(r["pool_size"])): r for r in m.to_dict("records")}

    member = {}
    if membership is not None and len(membership):
        for r in membership.to_dict("records"):
            lab = plain(r["heads"])
            if lab is not None:
                member[lab] = r
    macro = {}
    if utility is not None and len(utility):
        u = utility[utility["label"] == "macro"]
        for h, v in zip(u["heads"], u["auroc"]):
            lab = plain(h)
            if lab is not None:
                macro[lab] = _num(v)
    labels = [lab for lab in dict.fromkeys(m["label"]) if lab != "backbone"]
    order = sorted(labels, key=_heads_order)
    rows = []
    for pool in pools:
        size = full if pool is None else int(pool)
        ref_o = at.get(("original", size))
        r_o = _num(ref_o["recall"]) if ref_o else math.nan
        for lab in order:
            row = at.get((lab, size))
            if row is None:
                continue
            start = decision.start_of(lab)
            inf_label = decision.inf_of(start)
            ref_inf = at.get((inf_label, size))
            r_inf = _num(ref_inf["recall"]) if ref_inf else math.nan
            r = _num(row["recall"])
            lo, hi, chance = _num(row.get("ci_low")), _num(row.get("ci_high")), _num(
                row.get("chance"))
            lift = _num(row.get("lift")) if "lift" in row else r / chance
            mem = member.get(lab, {})
            dp = lab not in ("original",)
            vs_inf = lab not in ("original", inf_label)
            paired = {}
            if ranks is not None and dp:
                paired = decision.decomposition_intervals(
                    {plain(h) or h: v for h, v in ranks.items()}, "original", inf_label, lab,
                    size, n_boot=n_boot)
            rows.append({
                "heads": lab, "epsilon": _epsilon(lab), "pool": pool_name(pool),
                "pool_size": size, "recall": r, "ci_low": lo, "ci_high": hi, "lift": lift,
                "lift_low": lo / chance if chance > 0 else math.nan,
                "lift_high": hi / chance if chance > 0 else math.nan,
                "recall_original": r_o, "recall_inf": r_inf,
                "drop_vs_original": _share(r_o, r, r_o) if dp else math.nan,
                # the eps heads' interval against the original's point estimate
                "drop_low": _share(r_o, hi, r_o) if dp else math.nan,
                "drop_high": _share(r_o, lo, r_o) if dp else math.nan,
                "drop_vs_inf": _share(r_inf, r, r_inf) if vs_inf else math.nan,
                # and against the inf heads' point estimate
                "inf_drop_low": _share(r_inf, hi, r_inf) if vs_inf else math.nan,
                "inf_drop_high": _share(r_inf, lo, r_inf) if vs_inf else math.nan,
                "retraining_points": _share(r_o, r_inf, r_o) if dp else math.nan,
                "privacy_points": _share(r_inf, r, r_o) if dp else math.nan,
                "membership_auroc": _num(mem.get("auroc")),
                "membership_tpr": _num(mem.get("tpr_at_fpr")),
                "membership_fpr": _num(mem.get("fpr")),
                "macro_auroc": macro.get(lab, math.nan),
                "macro_change_vs_original": 100.0 * (macro.get(lab, math.nan)
                                                     - macro.get("original", math.nan))
                if dp else math.nan,
                "backbone_auroc": macro.get("backbone", math.nan),
                "start": start, "reference_inf": inf_label, "paired": bool(paired),
                "retraining_low": math.nan, "retraining_high": math.nan,
                "privacy_low": math.nan, "privacy_high": math.nan,
            })
            if paired:
                rows[-1].update({
                    "drop_low": paired["drop_low"], "drop_high": paired["drop_high"],
                    "retraining_low": paired["retraining_low"],
                    "retraining_high": paired["retraining_high"],
                    "privacy_low": paired["privacy_low"], "privacy_high": paired["privacy_high"],
                })
                if vs_inf:
                    rows[-1].update({"inf_drop_low": paired["vs_inf_low"],
                                     "inf_drop_high": paired["vs_inf_high"]})
    return pd.DataFrame(rows, columns=COLUMNS)


def _epsilon(label: str) -> float:
    if label == "original":
        return math.nan
    try:
        return float(decision.split_label(label)[0])
    except ValueError:
        return math.nan


def _heads_order(label: str) -> tuple:
    """original, then per start (random first): inf, epsilon from the largest to the smallest."""
    if label == "original":
        return (0, "", 0, 0.0, label)
    start = decision.start_of(label) or ""
    rank = "" if start == decision.RANDOM else start
    eps = _epsilon(label)
    if math.isinf(eps):
        return (1, rank, 0, 0.0, label)
    return (1, rank, 1, -eps if math.isfinite(eps) else 0.0, label)


def drop_sentence(frame: pd.DataFrame, heads: str, pool: int | None = 10_000) -> str | None:
    """The one sentence: the change at N, with its interval, and how much is retraining/privacy.

    A change whose 95% interval includes zero reads "no measurable change" with the interval;
    a part (retraining, privacy) likewise. The epsilon's scope (what it covers, from which start)
    ends the sentence.

    Args:
        frame: `decompose` output.
        heads: An epsilon label (``0.34``, ``0.34+original``).
        pool: The pool size (None: the whole held-out set).

    Returns:
        The sentence, or None when the row (or its references) is missing.
    """
    rows = frame[(frame["heads"] == str(heads)) & (frame["pool"] == pool_name(pool))]
    if rows.empty:
        return None
    r = rows.iloc[0]
    x, y, z = r["drop_vs_original"], r["retraining_points"], r["privacy_points"]
    if not all(math.isfinite(v) for v in (x, y, z)):
        return None
    n = f"{int(r['pool_size']):,}" + (" (the whole held-out set)" if pool is None else "")
    eps_label, start = decision.split_label(str(heads))
    eps = f"ε = {eps_label}"
    inf = "ε = ∞" + ("" if start in (None, decision.RANDOM) else ", same start")
    lo, hi = r.get("drop_low", math.nan), r.get("drop_high", math.nan)
    # the change of Recall@1 (negative = lower), its interval from the drop's
    change = decision.Change(-x / 100.0, -_num(hi) / 100.0, -_num(lo) / 100.0)
    how = "paired patient bootstrap" if r.get("paired") else "the heads' own interval"
    def part(point, name: str) -> str:
        return decision.points_text(-point, -_num(r.get(f"{name}_high")),
                                    -_num(r.get(f"{name}_low")))

    pr = (f"retraining ({inf} vs original) {part(y, 'retraining')}, privacy ({eps} vs {inf}) "
          f"{part(z, 'privacy')}")
    scope = decision.epsilon_scope(str(heads))
    return (f"Recall@1 at N = {n}, {decision.heads_name(str(heads))} against the original "
            f"heads: {decision.change_text(change)} ({how}); in points of the original "
            f"Recall@1, {pr}. {scope}").strip()


def sentences(frame: pd.DataFrame, *, pools: Sequence[int | None] = (10_000, None, 100)
              ) -> list[str]:
    """`drop_sentence` for the strongest privacy (smallest epsilon) at the first pool stored."""
    finite = frame[frame["epsilon"].map(lambda e: math.isfinite(e))
                   & frame["heads"].map(lambda h: decision.start_of(h) == decision.RANDOM)]
    if finite.empty:
        return []
    strongest = epsilon_label(float(finite["epsilon"].min()))
    for pool in pools:
        s = drop_sentence(frame, strongest, pool)
        if s:
            return [s]
    return []
