"""The reference paper's four claims, measured again on a results database, with a plain verdict
each.

The reference paper (see ``docs/`` and the README) makes four claims. `summarize_claims`
recomputes each from stored rows and says whether it reproduces. (A *finding* in this
repository is always a radiology finding, such as "Pleural Effusion"; the paper's statements are
*claims*: docs/glossary.md.)

1. **Specialisation**: re-linkage rises with specialisation (lift at N = 100 of every rung of a
   ladder, least specialised first).
2. **Far above chance**: the most specialised model at realistic pool sizes (the paper: 15x at
   N = 100, 50x at N = 10,000).
3. **Matched negatives**: the signal persists when the distractors carry the same 14 labels.
4. **DP heads**: retraining the projection heads with DP at epsilon = 0.34 cuts Recall@1 (the
   paper: -61.8% at N = 10,000) while the probe's macro AUROC barely moves (79.63% -> 79.43%);
   the reduction counts as a DP effect only where the epsilon = inf heads (the same retraining
   without privacy) do not cut as much; then the same heads on the external cohort.

Every figure is held-out pairs, image -> report, Recall@1 (k = 1); intervals are the stored 95%
bootstrap intervals. Inputs are plain frames (``relink_metrics`` and ``utility`` rows), so this
module needs no database driver and the demo, the dashboard and tests share it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from engine.core.decision import Change, change_text, rate_with_count
from engine.core.format import auroc, finite, percent, times

# The reference paper's published figures that the claims are compared against: claim 2's
# lift at N = 100 and N = 10,000; claim 4's epsilon, pool size and Recall@1 cut, and the probe's
# macro AUROC before and after DP. Source: Tayebi Arasteh, Lotfinia, Nebelung, Truhn, "Cross-modal
# linkage risk in clinical vision-language models", arXiv:2606.02276v1 (June 2026).
PAPER_LIFT = {100: 15.0, 10_000: 50.0}
PAPER_DP_EPSILON = 0.34
PAPER_DP_POOL = 10_000
PAPER_DP_REDUCTION = 0.618
PAPER_AUROC = (0.7963, 0.7943)

REPRODUCES = "reproduces"
PARTLY = "partly"
NOT_REPRODUCED = "does not reproduce"
NOT_MEASURABLE = "not measurable"

# A DP cut counts when Recall@1 falls by at least this fraction and the probe keeps its AUROC
# within this many AUROC units (the paper: -61.8% for -0.002).
MIN_CUT = 0.10
MAX_AUROC_DROP = 0.01


@dataclass(frozen=True)
class ClaimResult:
    """One claim: what the paper says, what was measured, and whether it reproduces.

    Attributes:
        number: 1..4 (the order of the module docstring).
        claim: The paper's claim in a few words.
        paper: The paper's figures.
        measured: The measured figures, with 95% intervals.
        verdict: `REPRODUCES`, `PARTLY`, `NOT_REPRODUCED` or `NOT_MEASURABLE`.
        why: One sentence behind the verdict.
        figures: The claim's key figures by name (lifts, relative changes as fractions, AUROC
            points), for the spread of a claim over seeds (`engine.cli.seeds`).
    """

    number: int
    claim: str
    paper: str
    measured: str
    verdict: str
    why: str
    figures: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class _Point:
    recall: float
    lift: float
    lift_low: float
    lift_high: float
    ci_low: float
    ci_high: float
    n_queries: int
    n_excluded: int


def _rows(metrics, *, model: str, heads: str = "original", negatives: str = "random"):
    if metrics is None or len(metrics) == 0:
        return metrics.iloc[0:0] if metrics is not None else None
    m = metrics
    mask = ((m["model"] == model) & (m["heads"].astype(str) == heads)
            & (m["negatives"] == negatives) & (m["split"] == "test")
            & (m["direction"] == "image_to_report") & (m["k"] == 1))
    return m[mask]


def _point(metrics, n: int, **where) -> _Point | None:
    rows = _rows(metrics, **where)
    if rows is None or len(rows) == 0:
        return None
    rows = rows[rows["pool_size"] == n]
    if len(rows) == 0:
        return None
    r = rows.iloc[-1]  # the latest stored row of this setting
    chance = float(r["chance"])
    ok = finite(chance) and chance > 0
    return _Point(
        recall=float(r["recall"]), lift=float(r["lift"]),
        lift_low=float(r["ci_low"]) / chance if ok else math.nan,
        lift_high=float(r["ci_high"]) / chance if ok else math.nan,
        ci_low=float(r["ci_low"]), ci_high=float(r["ci_high"]),
        n_queries=int(r["n_queries"]), n_excluded=int(r["n_excluded"] or 0),
    )


def _sizes(metrics, **where) -> list[int]:
    rows = _rows(metrics, **where)
    if rows is None or len(rows) == 0:
        return []
    return sorted(int(n) for n in rows["pool_size"].unique())


def _lift(p: _Point | None) -> str:
    if p is None:
        return "n/a"
    return f"{times(p.lift)} ({times(p.lift_low)[:-1]}-{times(p.lift_high)})"


def _change(value: float) -> str:
    """A relative change such as ``-61.8%`` (``n/a`` when undefined)."""
    return f"{value:+.1%}" if finite(value) else "n/a"


def _macro(utility, heads: str) -> float:
    if utility is None or len(utility) == 0:
        return math.nan
    rows = utility[(utility["heads"].astype(str) == heads) & (utility["label"] == "macro")]
    return float(rows["auroc"].iloc[-1]) if len(rows) else math.nan


def _specialisation(metrics, ladder: Sequence[str]) -> ClaimResult:
    paper = "rises systematically over 4 models"
    # N = 100 as in the paper; a cohort too small for it uses its largest N below 100
    shared = set.intersection(*(set(_sizes(metrics, model=m)) for m in ladder)) if ladder else set()
    n = 100 if 100 in shared else max((s for s in shared if s < 100), default=max(shared or {0}))
    points = [(m, _point(metrics, n, model=m)) for m in ladder]
    points = [(m, p) for m, p in points if p is not None]
    if len(points) < 2:
        return ClaimResult(1, "re-linkage rises with specialisation", paper, "n/a",
                           NOT_MEASURABLE, "fewer than two models with a specialisation order "
                           "have a lift at one N")
    lifts = [p.lift for _, p in points]
    measured = f"lift at N={n:,}: " + ", ".join(times(v) for v in lifts)
    rising = all(b >= a for a, b in zip(lifts, lifts[1:]))
    separated = points[-1][1].lift_low > points[0][1].lift_high
    if rising and separated:
        verdict, why = REPRODUCES, (f"every rung re-links at least as often as the one before; "
                                    f"{points[-1][0]}'s interval lies above {points[0][0]}'s")
    elif separated:
        verdict, why = PARTLY, "the most specialised model re-links more, but not every step rises"
    else:
        verdict, why = NOT_REPRODUCED, "the intervals of the first and last rung overlap"
    figures = {f"lift {m} N={n:,}": p.lift for m, p in points}
    return ClaimResult(1, "re-linkage rises with specialisation", paper, measured, verdict, why,
                       figures)


def _far_above_chance(metrics, model: str) -> ClaimResult:
    paper = "15x at N=100, 50x at N=10,000"
    sizes = [n for n in _sizes(metrics, model=model) if n >= 100]
    if not sizes:
        return ClaimResult(2, "far above chance at realistic pool sizes", paper, "n/a",
                           NOT_MEASURABLE, f"{model} has no held-out pool of N >= 100")
    shown = [n for n in sizes if n in (100, 1_000, 10_000)] or sizes[-1:]
    if sizes[-1] not in shown:
        shown.append(sizes[-1])
    parts = []
    pts = {}
    for n in shown:
        pts[n] = _point(metrics, n, model=model)
        label = f"N={n:,}" if n != sizes[-1] or n in (100, 1_000, 10_000) else f"full N={n:,}"
        parts.append(f"{label}: {_lift(pts[n])}")
    missing = "" if 10_000 in sizes else f"; N=10,000 not measurable (held-out set {sizes[-1]:,})"
    above = all(p is not None and p.lift_low > 1 for p in pts.values())
    if above and 10_000 in sizes:
        verdict, why = REPRODUCES, "every interval lies above chance, up to N = 10,000"
    elif above:
        verdict, why = PARTLY, ("every interval lies above chance, but the held-out set is too "
                                "small for N = 10,000")
    else:
        verdict, why = NOT_REPRODUCED, "an interval reaches chance (1x)"
    figures = {f"lift N={n:,}": p.lift for n, p in pts.items() if p is not None}
    return ClaimResult(2, "far above chance at realistic pool sizes", paper,
                       "; ".join(parts) + missing, verdict, why, figures)


def label_group_name(values) -> str:
    """A label vector's name: its positive findings, then uncertain ones with '?' (as the
    dashboard names them); nothing positive reads ``No Finding``."""
    from engine.core.labels import CHEXPERT_LABELS

    pos, unc = [], []
    for name, v in zip(CHEXPERT_LABELS, values):
        v = 0.0 if v is None or v != v else float(v)
        if v == 1.0 and name != "No Finding":
            pos.append(name)
        elif v == -1.0:
            unc.append(f"{name}?")
    return " + ".join(pos + unc) or "No Finding"


def matched_groups(ranks, pool_size: int) -> list[tuple[str, int, int]]:
    """``(label group, eligible queries, queries)`` per label vector of per-query rank rows
    (``n_matched`` and the 14 label columns): eligible = at least N - 1 matched distractors."""
    from engine.core.labels import CHEXPERT_LABELS

    if ranks is None or len(ranks) == 0:
        return []
    labels = ranks.reindex(columns=list(CHEXPERT_LABELS)).to_numpy(dtype=float)
    matched = ranks["n_matched"].fillna(0).to_numpy(dtype=float)
    out: dict[str, list[int]] = {}
    for row, m in zip(labels, matched):
        name = label_group_name(row)
        counts = out.setdefault(name, [0, 0])
        counts[0] += int(m >= pool_size - 1)
        counts[1] += 1
    return sorted(((g, e, q) for g, (e, q) in out.items()), key=lambda x: (-x[1], -x[2], x[0]))


def groups_text(groups) -> str:
    """``rests on 1 label group: No Finding (801 of 801 eligible)``; '' without groups."""
    groups = [(str(g), int(e), int(q)) for g, e, q in (groups or []) if int(e) > 0]
    if not groups:
        return ""
    groups.sort(key=lambda x: -x[1])
    named = ", ".join(f"{g} ({e:,} of {q:,} queries eligible)" for g, e, q in groups[:5])
    more = f" and {len(groups) - 5} more" if len(groups) > 5 else ""
    word = "group" if len(groups) == 1 else "groups"
    return f"rests on {len(groups)} label {word}: {named}{more}"


def _matched(metrics, model: str, groups=None) -> ClaimResult:
    paper = "persists under pathology-matched negatives"
    p = _point(metrics, 100, model=model, negatives="matched")
    if p is None or p.n_queries == 0:
        return ClaimResult(3, "persists under matched negatives", paper, "n/a", NOT_MEASURABLE,
                           "no held-out query has 99 distractors with its 14 labels")
    total = p.n_queries + p.n_excluded
    share = p.n_queries / total if total else 0.0
    measured = (f"matched lift at N=100: {_lift(p)}, {p.n_queries:,} of {total:,} queries "
                f"({percent(share)})")
    named = groups_text(groups)
    if named:
        measured += f"; {named}"
    n_groups = len([g for g in (groups or []) if int(g[1]) > 0])
    if p.lift_low > 1 and share >= 0.5 and n_groups == 1:
        verdict, why = PARTLY, ("the interval lies above 1, but every eligible query is in one "
                                "label group, so the figure speaks for that group only")
    elif p.lift_low > 1 and share >= 0.5:
        verdict, why = REPRODUCES, "the interval lies above 1 for most held-out queries"
    elif p.lift_low > 1:
        verdict, why = PARTLY, "the interval lies above 1, but fewer than half the queries qualify"
    else:
        verdict, why = NOT_REPRODUCED, "the interval reaches 1: matched labels explain the signal"
    return ClaimResult(3, "persists under matched negatives", paper, measured, verdict, why,
                       {"matched lift N=100": p.lift, "eligible share": share})


def _dp_label(metrics, model: str) -> str | None:
    if metrics is None or len(metrics) == 0:
        return None
    heads = {str(h) for h in metrics[metrics["model"] == model]["heads"].unique()}
    eps = []
    for h in heads - {"original", "inf", "backbone"}:
        try:
            eps.append((abs(float(h) - PAPER_DP_EPSILON), float(h), h))
        except ValueError:
            continue
    return min(eps)[2] if eps else None


def _approx_change(p: _Point, ref: _Point) -> Change:
    """The heads' interval against the reference's point estimate (no paired bootstrap)."""
    return Change(p.recall / ref.recall - 1, p.ci_low / ref.recall - 1,
                  p.ci_high / ref.recall - 1, p.n_queries)


dp_heads_label = _dp_label  # the DP heads claim 4 reads (closest to the paper's epsilon)


def _dp(metrics, utility, model: str, external=None, external_cohort: str | None = None,
        changes=None) -> ClaimResult:
    paper = "-61.8% at N=10,000 (eps 0.34); AUROC 79.63% -> 79.43%; transfers"
    title = "DP heads cut it, utility kept"
    label = _dp_label(metrics, model)
    if label is None:
        return ClaimResult(4, title, paper, "n/a", NOT_MEASURABLE, "no DP heads were attacked")
    sizes = set(_sizes(metrics, model=model, heads=label)) & set(_sizes(metrics, model=model))
    if not sizes:
        return ClaimResult(4, title, paper, "n/a", NOT_MEASURABLE,
                           f"heads {label} have no held-out pool metrics")
    n = PAPER_DP_POOL if PAPER_DP_POOL in sizes else max(sizes)
    orig, dp = _point(metrics, n, model=model), _point(metrics, n, model=model, heads=label)
    inf = _point(metrics, n, model=model, heads="inf")
    if orig is None or dp is None:
        return ClaimResult(4, title, paper, "n/a", NOT_MEASURABLE,
                           f"no Recall@1 at N = {n:,} for both the original and {label} heads")
    cut = 1 - dp.recall / orig.recall if orig.recall > 0 else math.nan
    vs_inf = (1 - dp.recall / inf.recall) if inf is not None and inf.recall > 0 else math.nan
    a0, a1 = _macro(utility, "original"), _macro(utility, label)
    changes = changes or {}
    ch_o = changes.get(("original", label, n)) or (_approx_change(dp, orig) if orig.recall > 0
                                                   else None)
    ch_i = changes.get(("inf", label, n)) or (_approx_change(dp, inf) if inf is not None
                                              and inf.recall > 0 else None)
    total = orig.n_queries + orig.n_excluded
    parts = [f"eps {label}, N={n:,}: Recall@1 {rate_with_count(orig.recall, total)} -> "
             f"{rate_with_count(dp.recall, total)} ({percent(dp.ci_low)[:-1]}-"
             f"{percent(dp.ci_high)}); vs original {change_text(ch_o)}; vs eps=inf "
             f"{change_text(ch_i)}", f"AUROC {auroc(a0)} -> {auroc(a1)}"]
    if external is not None and len(external):
        en = max(set(_sizes(external, model=model))
                 & set(_sizes(external, model=model, heads=label))
                 or {0})
        e0 = _point(external, en, model=model) if en else None
        e1 = _point(external, en, model=model, heads=label) if en else None
        if e0 is not None and e1 is not None and e0.recall > 0:
            parts.append(f"{external_cohort or 'external'} N={en:,}: "
                         f"{_change(e1.recall / e0.recall - 1)} with the same heads")
    measured = "; ".join(parts)
    significant = (finite(cut) and cut >= MIN_CUT and ch_o is not None and ch_o.measurable
                   and ch_o.high < 0)
    kept = finite(a0) and finite(a1) and a0 - a1 <= MAX_AUROC_DROP
    # beyond retraining: the DP heads re-link measurably less than the eps=inf heads of the same
    # start (paired interval below zero); a point estimate below theirs is not enough
    beyond_inf = inf is None or (ch_i is not None and ch_i.measurable and ch_i.high < 0)
    if significant and kept and beyond_inf:
        verdict, why = REPRODUCES, ("Recall@1 falls measurably below both the original and the "
                                    "eps=inf heads, and the probe holds")
    elif significant and beyond_inf:
        verdict, why = PARTLY, "Recall@1 falls, but the probe loses more than 1 AUROC point"
    elif significant and dp.recall < inf.recall:
        verdict, why = PARTLY, (f"Recall@1 falls against the original heads, but against the "
                                f"eps=inf heads of the same start it is {change_text(ch_i)}: "
                                "the noise's own effect cannot be told from retraining's")
    elif significant:
        verdict, why = NOT_REPRODUCED, (f"retraining without privacy (eps=inf) cuts Recall@1 as "
                                        f"much or more ({_change(inf.recall / orig.recall - 1)}): "
                                        "the cut comes from retraining, not from the noise")
    else:
        why = (f"against the original heads: {change_text(ch_o)}"
               if ch_o is not None and not ch_o.measurable else
               f"Recall@1 falls by less than {MIN_CUT:.0%}")
        within = [p is not None and orig.ci_low <= p.recall <= orig.ci_high for p in (dp, inf)]
        if inf is not None and inf.recall > 0 and ch_i is not None and ch_i.high < 0:
            # the noise does lower re-linkage against the same retraining without it, but the
            # retraining itself raised it: against the original heads little or nothing is left
            why += (f"; against the eps=inf heads it is {_change(-vs_inf)} with its interval "
                    f"below them (the effect of the noise), but retraining without noise "
                    f"changes Recall@1 by {_change(inf.recall / orig.recall - 1)} (the effect of "
                    "retraining), so against the original heads little is left")
        elif all(within):
            # Neither the private nor the non-private retraining leaves the original heads'
            # interval: the heads barely move at this budget, so no noise level has anything
            # to cut; the measurement cannot tell privacy from retraining.
            why += (f"; the eps=inf heads ({percent(inf.recall)}) also stay within the original "
                    f"heads' interval ({percent(orig.ci_low)[:-1]}-{percent(orig.ci_high)}): "
                    "retraining the heads on this cohort does not move re-linkage, with or "
                    "without noise")
        verdict = NOT_REPRODUCED
    figures = {f"R@1 change vs original N={n:,}": ch_o.point if ch_o is not None else math.nan,
               f"R@1 change vs eps=inf N={n:,}": ch_i.point if ch_i is not None else math.nan,
               "AUROC change (points)": 100 * (a1 - a0)}
    return ClaimResult(4, title, paper, measured, verdict, why, figures)


def ordered_ladder(ladder: Sequence[str], orders: Mapping[str, object] | None) -> list[str]:
    """The models that have a specialisation order, in that order (all of `ladder` without
    `orders`). Models registered without one (``specialization`` NULL) are no rung."""
    if orders is None:
        return list(ladder)
    ranked = [(_order(orders.get(m)), i, m) for i, m in enumerate(ladder)]
    return [m for order, _, m in sorted(r for r in ranked if r[0] is not None)]


def _order(value: object) -> float | None:
    """A specialisation order, or None for None / NaN / pandas NA (an unordered model)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def strongest_model(ladder: Sequence[str],
                    orders: Mapping[str, object] | None = None) -> str | None:
    """The model claims 2-4 use: the most specialised rung, else the last model listed."""
    ranked = ordered_ladder(ladder, orders)
    return ranked[-1] if ranked else (ladder[-1] if ladder else None)


def summarize_claims(metrics, utility, *, ladder: Sequence[str], external=None,
                     external_cohort: str | None = None,
                     orders: Mapping[str, object] | None = None, matched_groups=None,
                     dp_changes=None) -> list[ClaimResult]:
    """The four claims on one cohort.

    Args:
        metrics: ``relink_metrics`` rows of the cohort (every model and heads; columns model,
            split, direction, negatives, heads, pool_size, k, recall, chance, lift, ci_low,
            ci_high, n_queries, n_excluded), oldest first.
        utility: ``utility`` rows of the most specialised model on the cohort (heads, label,
            auroc).
        ladder: Model names, least specialised first; the last is the one claims 2-4 use.
        external: ``relink_metrics`` rows of the external cohort (transfer), or None.
        external_cohort: Its name, for the text.
        orders: Model -> ``specialization`` (None / NaN: no order). When given, claim 1 compares
            only the models that have an order (unrelated models are no ladder) and claims 2-4
            use `strongest_model`.
        matched_groups: ``(label group, eligible queries, queries)`` at N = 100 of the most
            specialised model, which claim 3 names (a figure resting on one group says so).
        dp_changes: ``{(reference, heads, N): decision.Change}``, paired changes for claim 4
            (without them, the heads' interval against the reference's point estimate).
    """
    if not ladder:
        return [ClaimResult(i, t, s, "n/a", NOT_MEASURABLE, "no models")
                for i, t, s in ((1, "re-linkage rises with specialisation", ""),
                                (2, "far above chance at realistic pool sizes", ""),
                                (3, "persists under matched negatives", ""),
                                (4, "DP heads cut it, utility kept", ""))]
    strongest = strongest_model(ladder, orders)
    return [
        _specialisation(metrics, ordered_ladder(ladder, orders)),
        _far_above_chance(metrics, strongest),
        _matched(metrics, strongest, matched_groups),
        _dp(metrics, utility, strongest, external, external_cohort, dp_changes),
    ]


def format_claims(results: Sequence[ClaimResult]) -> str:
    """The claims as a plain-text table for a terminal (one block per claim)."""
    lines = []
    for r in results:
        lines.append(f"{r.number}. {r.claim} -- {r.verdict.upper()}")
        lines.append(f"   paper:    {r.paper}")
        lines.append(f"   measured: {r.measured}")
        lines.append(f"   why:      {r.why}")
    return "\n".join(lines)


def claims_rows(results: Sequence[ClaimResult]) -> list[dict[str, str]]:
    """The claims as table rows (claim, paper, measured, verdict, why) for a dashboard."""
    return [{"claim": f"{r.number}. {r.claim}", "paper": r.paper, "measured": r.measured,
             "verdict": r.verdict, "why": r.why} for r in results]


__all__ = ["ClaimResult", "NOT_MEASURABLE", "NOT_REPRODUCED", "PARTLY", "REPRODUCES",
           "claims_rows", "format_claims", "groups_text", "ordered_ladder",
           "strongest_model", "summarize_claims"]
