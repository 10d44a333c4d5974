"""What a privacy officer decides from an audit: significance, the risk scale and the rule.

Torch-free (the dashboard imports it); docs/decision.md states the rule in words.

* **Heads labels with a start** (`split_label`): a bare epsilon label (``0.34``, ``inf``) is a DP
  sweep from seeded random heads; ``0.34+original`` started from the model's own heads (fitted
  without privacy), ``0.34+public-<cohort>`` from heads fitted without privacy on a
  patient-disjoint public cohort. ``adaptive+...`` labels are an attacker's refitted heads, never
  a released set (`is_adaptive`).
* **Significance** (`paired_change`): every change between two sets of heads is measured on the
  same queries, with one patient bootstrap for both (a patient's queries are resampled
  together, and the same resample is applied to both heads), so the interval is the change's
  own. A change whose interval includes zero reads "no measurable change" (`change_text`).
* **Risk scale** (`RISK_SCALE`, `risk_of`): the cut points of `engine.core.format.RISK_LEVELS`,
  applied to the **lower** end of the lift's 95% interval.
* **Recommendation** (`decide`): one sentence from the rule of docs/decision.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from engine.core import pools
from engine.core.format import RISK_LEVELS, finite, percent, risk_level, times
from engine.core.names import BACKBONE, NO_DP, ORIGINAL

# ------------------------------------------------------------------------------ heads and starts

RANDOM = "random"
ADAPTIVE = "adaptive"


def split_label(label) -> tuple[str, str | None]:
    """``(epsilon label, start)`` of a stored heads label (the one reader of heads labels).

    ``0.34`` -> ("0.34", "random"); ``0.34+original`` -> ("0.34", "original");
    ``inf+public-site-b`` -> ("inf", "public:site-b"); ``original`` -> ("original", None).
    A transfer suffix ``@<cohort>`` is kept on the epsilon label. Adaptive labels give
    ("adaptive", what follows the ``+``).
    """
    text = str(label)
    base, at, source = text.partition("@")
    suffix = at + source
    if base in (ORIGINAL, BACKBONE):
        return base + suffix, None
    eps, plus, start = base.partition("+")
    if eps == ADAPTIVE:
        return ADAPTIVE, start or None
    if not plus:
        return eps + suffix, RANDOM
    if start.startswith("public-"):
        start = "public:" + start[len("public-"):]
    return eps + suffix, start


def is_adaptive(label) -> bool:
    """Whether a heads label is an adaptive attacker's refitted heads (never a released set)."""
    return str(label).startswith(ADAPTIVE)


def start_of(label) -> str | None:
    return split_label(label)[1]


def released(labels) -> list[str]:
    """The labels that are sets of heads someone could release (adaptive rows left out)."""
    return [str(h) for h in labels if not is_adaptive(h)]


def sweep(labels, start: str = RANDOM) -> list[str]:
    """The DP heads of one start (finite epsilons and its inf), in their stored labels."""
    return [str(h) for h in labels if not is_adaptive(h) and split_label(h)[1] == start]


def inf_of(start: str | None) -> str:
    """The epsilon = inf label of a start: ``inf``, ``inf+original``, ``inf+public-x``."""
    if start in (None, RANDOM):
        return NO_DP
    if start.startswith("public:"):
        return f"{NO_DP}+public-{start[len('public:'):]}"
    return f"{NO_DP}+{start}"


def start_words(start: str | None) -> str:
    """How a start reads: from random heads, from the original heads, from public heads."""
    if start in (None, RANDOM):
        return "from seeded random heads"
    if start == ORIGINAL:
        return "from the model's original heads"
    if start.startswith("public:"):
        return f"from heads fitted on the public cohort {start[len('public:'):]}"
    return f"from {start}"


def adaptive_words(label) -> str:
    """``adaptive+public-site-b`` -> "refitted on the public cohort site-b" (and known-k%)."""
    _, what = split_label(label)
    what = what or ""
    if what.startswith("public-"):
        return f"refitted on the public cohort {what[len('public-'):]}"
    if what.startswith("known-"):
        return f"refitted on {what[len('known-'):].replace('pct', '%')} of the held-out pairs"
    return f"refitted ({what})" if what else "refitted"


def heads_name(label) -> str:
    """How any heads label reads in prose, starts and attackers included."""
    from engine.core.names import heads_name as plain

    text = str(label)
    if is_adaptive(text):
        return f"attacker's heads, {adaptive_words(text)}"
    eps, start = split_label(text)
    if start in (None, RANDOM):
        return plain(text)
    what = plain(eps)
    return f"{what}, {start_words(start).replace('from ', 'started from ', 1)}"


def epsilon_scope(label, cohort: str | None = None) -> str:
    """What the epsilon of a set of heads covers, and what it does not (one sentence).

    Empty for the original heads and the attacker's (no epsilon). Every place that shows an
    epsilon shows this beside it.
    """
    text = str(label)
    if is_adaptive(text) or text in (ORIGINAL, BACKBONE):
        return ""
    eps, start = split_label(text)
    who = f"the training patients of {cohort}" if cohort else "the training patients"
    if eps.partition("@")[0] == NO_DP:
        head = f"ε = ∞: retrained {start_words(start)} without privacy"
    else:
        head = (f"ε = {eps.partition('@')[0]} covers the head-training steps on {who}, "
                f"{start_words(start)}")
    notes = ["it does not cover the frozen backbones"]
    if start == ORIGINAL:
        notes.append("ε does not cover the starting heads, which were fitted without privacy")
    elif start and start.startswith("public:"):
        notes.append("the starting heads were fitted without privacy on patients outside this "
                     "cohort")
    return f"{head}; " + "; ".join(notes) + "."


# ------------------------------------------------------------------------------ significance


@dataclass(frozen=True)
class Change:
    """A relative change ``mean(b) / mean(a) - 1`` with its paired 95% bootstrap interval."""

    point: float
    low: float
    high: float
    n_queries: int = 0

    @property
    def measurable(self) -> bool:
        """True when the interval excludes zero (both ends on the same side)."""
        return finite(self.low) and finite(self.high) and (self.low > 0 or self.high < 0)


def replicate_means(values, clusters, *, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """[n_boot, c] means of the columns of `values` [q, c] over patient-bootstrap resamples.

    One resample of patients (clusters) serves every column, so differences and ratios between
    columns computed per replicate are paired.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    _, inverse = np.unique(np.asarray(clusters).astype(str), return_inverse=True)
    n = int(inverse.max()) + 1 if len(inverse) else 0
    if not n:
        return np.full((n_boot, values.shape[1]), np.nan)
    return pools.cluster_replicate_means(values, inverse.ravel(), n, n_boot=n_boot, seed=seed)


def paired_change(a, b, clusters, *, n_boot: int = 1000, seed: int = 0,
                  level: float = 0.95) -> Change:
    """Relative change of the mean of `b` against the mean of `a` on the same queries.

    Queries where either value is NaN (not in one of the pools) are left out of both.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    clusters = np.asarray(clusters)
    ok = np.isfinite(a) & np.isfinite(b)
    if not ok.any() or a[ok].mean() == 0:
        return Change(math.nan, math.nan, math.nan, int(ok.sum()))
    point = b[ok].mean() / a[ok].mean() - 1.0
    reps = replicate_means(np.column_stack([a[ok], b[ok]]), clusters[ok], n_boot=n_boot,
                           seed=seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = reps[:, 1] / reps[:, 0] - 1.0
    ratio = ratio[np.isfinite(ratio)]
    if not len(ratio):
        return Change(float(point), math.nan, math.nan, int(ok.sum()))
    alpha = (1.0 - level) / 2.0
    return Change(float(point), float(np.quantile(ratio, alpha)),
                  float(np.quantile(ratio, 1.0 - alpha)), int(ok.sum()))


def _pct(v: float) -> str:
    """``−45%``; under 1% in size with one decimal (``−0.4%``), so an interval end that nearly
    touches zero never reads ``−0%``."""
    digits = 1 if abs(100.0 * v) < 0.95 else 0
    return f"{100.0 * v:+.{digits}f}%".replace("-", "−")


def change_text(c: Change | None) -> str:
    """``−45% (95% CI −60% to −20%)`` or ``no measurable change (95% CI −31% to +12%)``."""
    if c is None or not finite(c.point):
        return "n/a"
    if not (finite(c.low) and finite(c.high)):
        return f"{_pct(c.point)} (no interval)"
    ci = f"95% CI {_pct(c.low)} to {_pct(c.high)}"
    if not c.measurable:
        return f"no measurable change ({ci})"
    return f"{_pct(c.point)} ({ci})"


def expected_count(rate, n) -> str:
    """``about 7 of 1,471 images``: a rate as the number of queries it stands for."""
    if not (finite(rate) and finite(n)):
        return ""
    count = float(rate) * float(n)
    shown = f"{count:.1f}" if count < 10 else f"{count:,.0f}"
    return f"about {shown} of {int(n):,}"


SMALL_RATE = 0.05


def rate_with_count(rate, n, what: str = "images") -> str:
    """A rate, with the expected count beside it when small (below 5%)."""
    text = percent(rate)
    if finite(rate) and float(rate) < SMALL_RATE and finite(n):
        text += f" ({expected_count(rate, n)} {what})"
    return text


# ------------------------------------------------------------------------------ the risk scale

RISK_SCALE = RISK_LEVELS  # the cut points, applied to the lift's lower 95% bound


def scale_text() -> str:
    """The scale in words: ``near chance below 1.5×, elevated 1.5× to 5×, ...``."""
    parts, low = [], None
    for bound, name in RISK_SCALE:
        parts.append(f"{name} below {times(bound)}" if low is None
                     else f"{name} {times(low)} to {times(bound)}")
        low = bound
    parts.append(f"very high from {times(low)}")
    return ", ".join(parts)


def risk_of(lift_low) -> str:
    """The risk level of a lift interval: the scale applied to its lower end."""
    return risk_level(lift_low)


# ------------------------------------------------------------------------------ the decision


@dataclass(frozen=True)
class Point:
    """Recall@1 at one N with its interval (a set of heads, or an attacker)."""

    recall: float
    ci_low: float
    ci_high: float
    chance: float
    n_queries: int

    @property
    def lift(self) -> float:
        return self.recall / self.chance if self.chance else math.nan

    @property
    def lift_low(self) -> float:
        return self.ci_low / self.chance if self.chance else math.nan

    @property
    def lift_high(self) -> float:
        return self.ci_high / self.chance if self.chance else math.nan


@dataclass(frozen=True)
class Mitigation:
    heads: str
    point: Point
    change: Change  # vs the original heads, same queries


@dataclass(frozen=True)
class Adaptive:
    heads: str
    point: Point
    n_fit_pairs: int | None
    share_of_original: float  # the attacker's Recall@1 / the original heads'


@dataclass(frozen=True)
class Decision:
    model: str
    pool_size: int
    threat: tuple[str, str, str]
    risk: str
    risk_text: str
    mitigation: str
    adaptive: str
    recommendation: str
    rule: str = field(default="docs/decision.md")


def threat_model(model: str, pool_size: int) -> tuple[str, str, str]:
    return (f"The attacker holds the released model ({model}) with its projection heads.",
            "The attacker holds a de-identified chest X-ray of a patient.",
            f"The attacker holds a pool of {pool_size:,} candidate reports, the true one among "
            "them, and ranks them by similarity to the image.")


def _attacker_text(a: Adaptive, pool: int) -> str:
    who = adaptive_words(a.heads)
    fit = f" with {a.n_fit_pairs:,} pairs" if a.n_fit_pairs else ""
    share = (f", {percent(a.share_of_original)} of the original model's rate"
             if finite(a.share_of_original) else "")
    return (f"An attacker who refits the heads on the frozen backbones ({who}{fit}) re-links "
            f"{rate_with_count(a.point.recall, a.point.n_queries)} at N = {pool:,} "
            f"({times(a.point.lift)} chance, 95% CI {times(a.point.lift_low)} to "
            f"{times(a.point.lift_high)}){share}.")


def decide(model: str, headline: Point, pool_size: int, *, mitigation: Mitigation | None = None,
           adaptive: Adaptive | None = None, cohort: str | None = None) -> Decision:
    """The decision section: threat model, risk level, what the mitigation buys, recommendation.

    The rule (docs/decision.md):

    1. The risk level is the scale applied to the lower end of the lift's interval.
    2. Near chance: the audit does not block a release.
    3. Otherwise the DP heads are recommended only when their change against the original heads
       is measurable, the upper end of their lift interval is below the first cut point (1.5×,
       so they cannot be told from guessing) and, when an adaptive attacker was measured, the
       upper end of the attacker's lift interval is below it too.
    4. Otherwise: do not release to anyone who could hold the images and a pool of reports.
    """
    risk = risk_of(headline.lift_low)
    first_cut = RISK_SCALE[0][0]
    risk_text = (f"Lift {times(headline.lift)} at N = {pool_size:,} (95% CI "
                 f"{times(headline.lift_low)} to {times(headline.lift_high)}); the level is read "
                 f"on the interval's lower end, {times(headline.lift_low)}, on the scale "
                 f"{scale_text()}.")
    if mitigation is None:
        mit = "No DP heads were measured: the audit says nothing yet about a mitigation."
    else:
        m = mitigation
        scope = epsilon_scope(m.heads, cohort)
        mit = (f"{heads_name(m.heads)}: Recall@1 "
               f"{rate_with_count(m.point.recall, m.point.n_queries)} at N = {pool_size:,} "
               f"against {rate_with_count(headline.recall, headline.n_queries)} with the "
               f"original heads, "
               f"{change_text(m.change)} on the same {m.change.n_queries:,} queries; lift "
               f"{times(m.point.lift)} (95% CI {times(m.point.lift_low)} to "
               f"{times(m.point.lift_high)}). {scope}")
    if adaptive is None:
        adp = ("No adaptive attacker was measured: what an attacker gets back by refitting the "
               "heads is unknown.")
    else:
        adp = (_attacker_text(adaptive, pool_size) + " A heads-only mitigation protects against "
               "the released heads' own similarity, not against an attacker who refits them.")
    if risk in ("near chance", "unknown"):
        rec = ("The measured re-linkage cannot be told from guessing at this pool size: this "
               "audit does not block a release (repeat it at the pool size recipients will hold)."
               if risk == "near chance" else
               "No risk level could be measured: run the attack before deciding.")
    else:
        ok_mit = (mitigation is not None and mitigation.change.measurable
                  and mitigation.change.point < 0 and finite(mitigation.point.lift_high)
                  and mitigation.point.lift_high < first_cut)
        ok_adp = adaptive is None or (finite(adaptive.point.lift_high)
                                      and adaptive.point.lift_high < first_cut)
        if ok_mit and ok_adp:
            eps = split_label(mitigation.heads)[0]
            rec = (f"Release {model} only with the DP heads at ε = {eps}, which bring "
                   "re-linkage down to chance, and only to recipients who cannot refit the heads"
                   + ("" if adaptive is not None else
                      " (an adaptive attacker has not been measured)") + ".")
        else:
            why = ("the DP heads do not bring it down to chance" if mitigation is not None
                   else "no mitigation has been measured")
            if mitigation is not None and ok_mit and not ok_adp:
                why = "an attacker who refits the heads gets it back"
            rec = (f"Do not release {model} to anyone who could hold the patients' images and a "
                   f"pool of their reports: re-linkage is {risk} and {why}.")
    return Decision(model, pool_size, threat_model(model, pool_size), risk, risk_text, mit, adp,
                    rec)


def decision_dict(d: Decision) -> dict:
    return {"model": d.model, "pool_size": d.pool_size, "threat_model": list(d.threat),
            "risk_level": d.risk, "risk": d.risk_text, "mitigation": d.mitigation,
            "adaptive": d.adaptive, "recommendation": d.recommendation, "rule": d.rule,
            "scale": [{"below": b, "level": n} for b, n in RISK_SCALE]}


# ------------------------------------------------------------------------------ per-query inputs


def per_query_recall(ranks, pool_size: int) -> np.ndarray:
    """Exact Recall@1 at N per query from ``n_candidates, n_greater, n_tied`` (NaN: not in N)."""
    from engine.core.pools import recall_where_eligible

    return recall_where_eligible(ranks["n_candidates"], ranks["n_greater"], ranks["n_tied"],
                                 pool_size, 1)


def aligned(ranks_by_heads: Mapping[str, object], heads: Sequence[str], pool_size: int):
    """(per-query recall [q, len(heads)], patient ids [q]) on the queries every heads has.

    `ranks_by_heads` maps a heads label to its ``relink_ranks`` frame (with ``query_id`` and
    ``patient_id``); a query missing from one heads is left out of all.
    """
    import pandas as pd

    unique = list(dict.fromkeys(heads))
    frames = []
    for h in unique:
        r = ranks_by_heads[h]
        frames.append(pd.DataFrame({"query_id": r["query_id"].astype(str).to_numpy(),
                                    "patient_id": r["patient_id"].astype(str).to_numpy(),
                                    h: per_query_recall(r, pool_size)}).drop_duplicates(
                                        "query_id").set_index("query_id"))
    joined = frames[0]
    for f in frames[1:]:
        joined = joined.join(f.drop(columns="patient_id"), how="inner")
    # a heads named twice (inf against itself) reads the same column twice
    return joined[list(heads)].to_numpy(dtype=np.float64), joined["patient_id"].to_numpy()


def heads_change(ranks_by_heads: Mapping[str, object], reference: str, heads: str,
                 pool_size: int, *, n_boot: int = 1000, seed: int = 0) -> Change:
    """`paired_change` of `heads` against `reference` at N, from their per-query rank counts."""
    if reference not in ranks_by_heads or heads not in ranks_by_heads:
        return Change(math.nan, math.nan, math.nan)
    values, patients = aligned(ranks_by_heads, [reference, heads], pool_size)
    return paired_change(values[:, 0], values[:, 1], patients, n_boot=n_boot, seed=seed)


def decomposition_intervals(ranks_by_heads: Mapping[str, object], original: str, inf: str,
                            heads: str, pool_size: int, *, n_boot: int = 1000, seed: int = 0,
                            level: float = 0.95) -> dict[str, float]:
    """Paired intervals of the drop and its two parts, in points of the original Recall@1.

    One patient resample for the three sets of heads: ``drop`` = 100 (R_o - R) / R_o,
    ``retraining`` = 100 (R_o - R_inf) / R_o, ``privacy`` = 100 (R_inf - R) / R_o and
    ``vs_inf`` = 100 (R_inf - R) / R_inf, each as ``<name>_low`` / ``<name>_high``. Empty when
    one of the three has no ranks.
    """
    if any(h not in ranks_by_heads for h in (original, inf, heads)):
        return {}
    values, patients = aligned(ranks_by_heads, [original, inf, heads], pool_size)
    ok = np.isfinite(values).all(axis=1)
    if not ok.any():
        return {}
    reps = replicate_means(values[ok], patients[ok], n_boot=n_boot, seed=seed)
    o, i, h = reps[:, 0], reps[:, 1], reps[:, 2]
    alpha = (1.0 - level) / 2.0
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        parts = {"drop": 100 * (o - h) / o, "retraining": 100 * (o - i) / o,
                 "privacy": 100 * (i - h) / o, "vs_inf": 100 * (i - h) / i}
    for name, v in parts.items():
        v = v[np.isfinite(v)]
        out[f"{name}_low"] = float(np.quantile(v, alpha)) if len(v) else math.nan
        out[f"{name}_high"] = float(np.quantile(v, 1 - alpha)) if len(v) else math.nan
    return out


def points_text(point, low, high, *, unit: str = "points") -> str:
    """``+12.3 points (95% CI +2.0 to +20.1)`` or ``no measurable change (95% CI ...)``."""
    if not finite(point):
        return "n/a"
    if not (finite(low) and finite(high)):
        return f"{point:+.1f} {unit}".replace("-", "−")
    ci = f"95% CI {low:+.1f} to {high:+.1f}".replace("-", "−")
    if low <= 0 <= high:
        return f"no measurable change ({ci} {unit})"
    return f"{point:+.1f} {unit} ({ci})".replace("-", "−")


# ------------------------------------------------------------------------------ from stored rows


def point_from(metrics, heads: str, pool_size: int) -> Point | None:
    """Held-out image -> report Recall@1 of `heads` at N (random negatives, k = 1) as a `Point`.

    `metrics`: ``relink_metrics``-like rows (heads, split, direction, negatives, pool_size, k,
    recall, ci_low, ci_high, chance, n_queries).
    """
    m = metrics
    rows = m[(m["heads"].astype(str) == str(heads)) & (m["split"] == "test")
             & (m["direction"] == "image_to_report") & (m["negatives"] == "random")
             & (m["pool_size"] == pool_size) & (m["k"] == 1)]
    if rows.empty:
        return None
    r = rows.iloc[-1]
    return Point(float(r["recall"]), float(r["ci_low"]), float(r["ci_high"]),
                 float(r["chance"]), int(r["n_queries"]))


def strongest(labels, start: str = RANDOM) -> str | None:
    """The smallest finite epsilon of one start's sweep (the strongest privacy measured)."""
    best = None
    for h in sweep(labels, start):
        if "@" in h:
            continue
        try:
            eps = float(split_label(h)[0])
        except ValueError:
            continue
        if math.isfinite(eps) and (best is None or eps < best[0]):
            best = (eps, h)
    return best[1] if best else None


def adaptive_table(metrics, runs, pool_size: int, original: Point | None):
    """One row per adaptive attacker at N: what it re-links, against chance and the original;
    the attacker who re-links most first."""
    import pandas as pd

    cols = ["heads", "attacker", "fit pairs", "Recall@1", "95% CI low", "95% CI high", "lift",
            "share of original"]
    fit = {}
    if runs is not None and len(runs) and "heads" in runs:
        fit = dict(zip(runs["heads"].astype(str), runs["n_fit_pairs"]))
    rows = []
    for h in sorted({str(h) for h in metrics["heads"] if is_adaptive(h)}):
        p = point_from(metrics, h, pool_size)
        if p is None:
            continue
        n_fit = fit.get(h)
        rows.append({"heads": h, "attacker": adaptive_words(h),
                     "fit pairs": None if n_fit is None or pd.isna(n_fit) else int(n_fit),
                     "Recall@1": p.recall, "95% CI low": p.ci_low, "95% CI high": p.ci_high,
                     "lift": p.lift,
                     "share of original": (p.recall / original.recall
                                           if original is not None and original.recall
                                           else math.nan)})
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values("Recall@1", ascending=False).reset_index(drop=True)


def decide_from(model: str, cohort: str | None, metrics, ranks_by_heads, adaptive_runs,
                pool_size: int, *, n_boot: int = 1000) -> Decision | None:
    """`decide` from stored rows at N: the original heads, the strongest random-start DP heads
    (paired change on the same queries), the adaptive attacker who re-links most."""
    head = point_from(metrics, "original", pool_size)
    if head is None:
        return None
    mitigation = None
    label = strongest(metrics["heads"].astype(str).unique())
    if label is not None:
        p = point_from(metrics, label, pool_size)
        if p is not None:
            change = heads_change(ranks_by_heads, "original", label, pool_size, n_boot=n_boot)
            mitigation = Mitigation(label, p, change)
    attackers = adaptive_table(metrics, adaptive_runs, pool_size, head)
    adaptive = None
    if len(attackers):
        top = attackers.iloc[0]
        fit = top["fit pairs"]
        adaptive = Adaptive(str(top["heads"]), point_from(metrics, str(top["heads"]), pool_size),
                            None if fit is None or fit != fit else int(fit),
                            float(top["share of original"]))
    return decide(model, head, pool_size, mitigation=mitigation, adaptive=adaptive,
                  cohort=cohort)


# ------------------------------------------------------------------------------ per record


def pairing_roc(n_candidates, n_greater, n_tied) -> tuple[np.ndarray, np.ndarray]:
    """ROC of the pairing decision "is this image-report pair a true pair?", from rank counts.

    The decision declares a pair true when the report ranks within the image's top r candidates
    (ties broken at random); r runs over 0..max pool. For each r, exactly:
    TPR(r) = mean over queries of P[true rank <= r] and
    FPR(r) = sum over queries of (min(r, M + 1) - P[true rank <= r]) / sum of M,
    with M the query's distractors (every wrong pair is a negative). Returns (fpr, tpr).

    Both sums are built in O(queries + pool) memory from difference arrays: P[true rank <= r]
    rises by 1/(E+1) at each of r = G+1 .. G+E+1 (true rank uniform over the E+1 tied places),
    and min(r, M+1) rises by one at each r <= M+1. The points returned are every r up to 2,000
    and 400 log-spaced ones above (the curve between them is linear to the eye).
    """
    M = np.asarray(n_candidates, dtype=np.int64)
    G = np.asarray(n_greater, dtype=np.int64)
    E = np.asarray(n_tied, dtype=np.int64)
    if not len(M):
        return np.array([0.0, 1.0]), np.array([0.0, 1.0])
    top = int(M.max()) + 1
    weight = 1.0 / (E + 1.0)
    # rises[r] = sum over queries of P[true rank = r]: +w on G+1 .. G+E+1
    rises = np.zeros(top + 2)
    np.add.at(rises, G + 1, weight)
    np.add.at(rises, np.minimum(G + E + 2, top + 1), -weight)
    hits = np.cumsum(np.cumsum(rises))  # sum over queries of P[true rank <= r]
    # places[r] = sum over queries of min(r, M+1) = sum over s = 1..r of #{queries: M+1 >= s}
    at_least = np.bincount(M + 1, minlength=top + 2)[::-1].cumsum()[::-1]  # #{M+1 >= s}
    at_least[0] = 0
    places = np.cumsum(at_least).astype(np.float64)
    rs = np.unique(np.concatenate([np.arange(0, min(top, 2000) + 1),
                                   np.geomspace(1, top, 400).round()])).astype(np.int64)
    rs = rs[rs <= top]
    tpr = hits[rs] / len(M)
    fpr = (places[rs] - hits[rs]) / float(M.sum())
    return np.concatenate([fpr, [1.0]]), np.concatenate([tpr, [1.0]])


def tpr_at(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """TPR at a false-positive rate (linear interpolation along the ROC)."""
    order = np.argsort(fpr, kind="stable")
    return float(np.interp(target, fpr[order], tpr[order]))


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    order = np.argsort(fpr, kind="stable")
    return float(np.trapezoid(tpr[order], fpr[order]))


def per_record(ranks, pool_size: int):
    """Every query's risk: the true report's expected rank among all held-out reports and the
    probability that it ranks first in a random pool of N (exact, `pools`); riskiest first."""
    out = ranks.copy()
    out["expected_rank"] = 1 + out["n_greater"] + out["n_tied"] / 2.0
    out["risk_at_n"] = per_query_recall(ranks, pool_size)
    return out.sort_values(["expected_rank", "query_id"]).reset_index(drop=True)
