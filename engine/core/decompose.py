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

from engine.core.findings import STUDY_AUROC, STUDY_DP_EPSILON, STUDY_DP_POOL, STUDY_DP_REDUCTION
from engine.core.names import epsilon_label

POOLS: tuple[int | None, ...] = (100, 10_000, None)  # None: the whole held-out set

# The reference study's DP figure (engine.core.findings holds its numbers): the sentence the
# README and the report put beside this project's figures at its pool size.
STUDY_DP = (f"The study, for comparison: Recall@1 at N = {STUDY_DP_POOL:,} "
            f"{STUDY_DP_REDUCTION:.1%} lower at ε = {STUDY_DP_EPSILON} than with the original "
            f"heads; macro AUROC {STUDY_AUROC[0]:.2%} -> {STUDY_AUROC[1]:.2%}.")

COLUMNS = ["heads", "epsilon", "pool", "pool_size", "recall", "ci_low", "ci_high", "lift",
           "lift_low", "lift_high", "recall_original", "recall_inf", "drop_vs_original",
           "drop_low", "drop_high", "drop_vs_inf", "inf_drop_low", "inf_drop_high",
           "retraining_points", "privacy_points",
           "membership_auroc", "membership_tpr", "membership_fpr", "macro_auroc",
           "macro_change_vs_original", "backbone_auroc"]


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
              k: int = 1) -> pd.DataFrame:
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
        ref_o, ref_inf = at.get(("original", size)), at.get(("inf", size))
        r_o = _num(ref_o["recall"]) if ref_o else math.nan
        r_inf = _num(ref_inf["recall"]) if ref_inf else math.nan
        for lab in order:
            row = at.get((lab, size))
            if row is None:
                continue
            r = _num(row["recall"])
            lo, hi, chance = _num(row.get("ci_low")), _num(row.get("ci_high")), _num(
                row.get("chance"))
            lift = _num(row.get("lift")) if "lift" in row else r / chance
            mem = member.get(lab, {})
            dp = lab not in ("original",)
            vs_inf = lab not in ("original", "inf")
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
            })
    return pd.DataFrame(rows, columns=COLUMNS)


def _epsilon(label: str) -> float:
    if label == "original":
        return math.nan
    try:
        return float(label)
    except ValueError:
        return math.nan


def _heads_order(label: str) -> tuple:
    """original, inf, then epsilon from the largest (least private) to the smallest."""
    if label == "original":
        return (0, 0.0, label)
    eps = _epsilon(label)
    if math.isinf(eps):
        return (1, 0.0, label)
    return (2, -eps if math.isfinite(eps) else 0.0, label)


def drop_sentence(frame: pd.DataFrame, heads: str, pool: int | None = 10_000) -> str | None:
    """The one sentence: how much of the drop at N is retraining and how much privacy.

    Args:
        frame: `decompose` output.
        heads: An epsilon label (``0.34``).
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
    eps = f"ε = {heads}"
    parts = (f"{y:+.1f} points come from retraining (ε = ∞ vs original) and {z:+.1f} from "
             f"privacy ({eps} vs ε = ∞)")
    if x >= 0:
        return f"Of the {x:.1f}% drop in Recall@1 at N = {n} with {eps}, {parts}."
    return (f"Recall@1 at N = {n} is {-x:.1f}% higher with {eps} than with the original heads; "
            f"of that change, {parts}.")


def sentences(frame: pd.DataFrame, *, pools: Sequence[int | None] = (10_000, None, 100)
              ) -> list[str]:
    """`drop_sentence` for the strongest privacy (smallest epsilon) at the first pool stored."""
    finite = frame[frame["epsilon"].map(lambda e: math.isfinite(e))]
    if finite.empty:
        return []
    strongest = epsilon_label(float(finite["epsilon"].min()))
    for pool in pools:
        s = drop_sentence(frame, strongest, pool)
        if s:
            return [s]
    return []
