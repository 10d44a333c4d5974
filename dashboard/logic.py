"""Plain functions behind the pages: no Streamlit, no storage, unit-tested on their own.

Selections -> ids, headline numbers and the plain-language risk sentence, label groups and
finding comparisons, per-query matched-pool Recall@1, word differences between reports, the
epsilon grid and the privacy/utility frontier.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

# Labels, names, number formats and pool maths come from the engine's torch-free core, shared
# with the audit report (re-exported here: the pages call them as `logic.percent` etc.).
from engine.core import decision, pools
from engine.core.decision import heads_name  # noqa: F401  (start- and attacker-aware)
from engine.core.format import (  # noqa: F401
    auroc,
    finite,
    percent,
    relative_reduction,
    risk_level,
    times,
)
from engine.core.labels import CHEXPERT_LABELS as LABELS
from engine.core.names import DIRECTION_NAMES, SPLIT_NAMES, sort_heads  # noqa: F401
from engine.core.pools import expected_rank  # noqa: F401

# ------------------------------------------------------------------------------ numbers


def default_pool_size(sizes: Sequence[int], preferred: int = 100) -> int | None:
    """The pool size to show first: `preferred` when stored, else the largest stored one."""
    sizes = sorted(int(s) for s in sizes)
    if not sizes:
        return None
    return preferred if preferred in sizes else sizes[-1]


@dataclass(frozen=True)
class Headline:
    """Recall@1 and lift at one pool size, with 95% intervals (lift interval = recall CI/chance)."""

    pool_size: int
    recall: float
    ci_low: float
    ci_high: float
    chance: float
    n_queries: int
    n_excluded: int

    @property
    def lift(self) -> float:
        return self.recall / self.chance if self.chance else float("nan")

    @property
    def lift_low(self) -> float:
        return self.ci_low / self.chance if self.chance else float("nan")

    @property
    def lift_high(self) -> float:
        return self.ci_high / self.chance if self.chance else float("nan")


def headline(metrics: pd.DataFrame, pool_size: int, *, split: str = "test",
             direction: str = "image_to_report", negatives: str = "random",
             k: int = 1) -> Headline | None:
    """The `Headline` of one (split, direction, negatives, N, k) from `relink_metrics` rows."""
    rows = metrics[(metrics["split"] == split) & (metrics["direction"] == direction)
                   & (metrics["negatives"] == negatives) & (metrics["pool_size"] == pool_size)
                   & (metrics["k"] == k)]
    if rows.empty:
        return None
    r = rows.iloc[0]
    return Headline(int(pool_size), float(r["recall"]), float(r["ci_low"]), float(r["ci_high"]),
                    float(r["chance"]), int(r["n_queries"]), int(r["n_excluded"]))


def risk_sentence(model: str, h: Headline, *, direction: str = "image_to_report") -> str:
    """The plain-language risk sentence of the overview."""
    if direction == "image_to_report":
        what = f"a pool of {h.pool_size:,} reports finds an image's own report"
    else:
        what = f"a pool of {h.pool_size:,} images finds a report's own image"
    return (
        f"An attacker holding {model} and {what} {percent(h.recall)} of the time, "
        f"{times(h.lift)} chance (95% CI {percent(h.ci_low)} to {percent(h.ci_high)}, "
        f"{times(h.lift_low)} to {times(h.lift_high)}); guessing would succeed "
        f"{percent(h.chance)} of the time."
    )


def lift_curves(metrics: pd.DataFrame, *, direction: str = "image_to_report",
                k: int = 1) -> pd.DataFrame:
    """Rows for lift-vs-N plots: one per (model, split, negatives, N), with readable names.

    The matched full-database row is left out: its pool size varies per query, so it is not a
    point on the N axis.
    """
    m = metrics[(metrics["direction"] == direction) & (metrics["k"] == k)].copy()
    if m.empty:
        return m.assign(group="", members="")
    full = m.groupby(["model", "split", "heads"])["pool_size"].transform("max")
    # "matched" and the finer "matched:<policy>" rows alike
    m = m[~(m["negatives"].str.startswith("matched") & (m["pool_size"] == full))]
    m["members"] = m["split"].map(SPLIT_NAMES).fillna(m["split"])
    m["group"] = m["model"] + " · " + m["negatives"]
    return m.sort_values(["model", "split", "negatives", "pool_size"]).reset_index(drop=True)


def summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """`relink_summary` rows as one readable row per (split, direction)."""
    if summary.empty:
        return pd.DataFrame(columns=["split", "direction", "queries", "MRR", "median rank",
                                     "patient top-1", "chance top-1"])
    wide = summary.pivot_table(index=["split", "direction"], columns="metric", values="value",
                               aggfunc="first").reset_index()
    n = summary.groupby(["split", "direction"])["n_queries"].max().reset_index()
    wide = wide.merge(n, on=["split", "direction"])
    out = pd.DataFrame({
        "split": wide["split"].map(SPLIT_NAMES).fillna(wide["split"]),
        "direction": wide["direction"].map(DIRECTION_NAMES).fillna(wide["direction"]),
        "queries": wide["n_queries"],
    })
    for metric, name in (("mrr", "MRR"), ("median_rank", "median rank"),
                         ("patient_top1", "patient top-1"), ("chance_top1", "chance top-1")):
        out[name] = wide[metric] if metric in wide else np.nan
    return out


# ------------------------------------------------------------------------------ per query


def recall_at_1(n_distractors, n_greater, n_tied, pool_size: int) -> np.ndarray:
    """Exact expected Recall@1 per query for random pools of `pool_size` (`engine.core.pools`).

    Queries with fewer than N-1 distractors get NaN (they are left out of that N).
    """
    return pools.recall_where_eligible(n_distractors, n_greater, n_tied, pool_size, 1)


def label_group(row: Mapping[str, float]) -> str:
    """A readable name for a label vector: its positive findings, then uncertain ones with '?'.

    ``No Finding`` alone (or nothing positive) reads as ``No Finding``.
    """
    pos = [name for name in LABELS if name != "No Finding" and _value(row.get(name)) == 1.0]
    unc = [f"{name}?" for name in LABELS if _value(row.get(name)) == -1.0]
    names = pos + unc
    return " + ".join(names) if names else "No Finding"


def _value(v) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if math.isnan(v) else v


def _label_matrix(frame: pd.DataFrame) -> np.ndarray:
    """[n, 14] label values with missing as 0."""
    m = frame.reindex(columns=list(LABELS)).to_numpy(dtype=np.float64, na_value=np.nan)
    return np.nan_to_num(m, nan=0.0)


def label_groups(frame: pd.DataFrame) -> pd.Series:
    """`label_group` of every row of a frame holding the 14 label columns (vectorised)."""
    if frame.empty:
        return pd.Series([], dtype=object, index=frame.index)
    m = _label_matrix(frame)
    m[~np.isin(m, (-1.0, 0.0, 1.0))] = 0.0
    # One integer per label vector (base 3 digits), so grouping is a 1-D unique.
    keys = ((m + 1.0).astype(np.int64) * 3 ** np.arange(len(LABELS), dtype=np.int64)).sum(axis=1)
    unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    names = np.array([label_group(dict(zip(LABELS, m[i]))) for i in first], dtype=object)
    return pd.Series(names[inverse.ravel()], index=frame.index)


def main_label(row: Mapping[str, float]) -> str:
    """The first positive finding (by the schema's order), else ``No Finding``: a colour key."""
    for name in LABELS:
        if name != "No Finding" and _value(row.get(name)) == 1.0:
            return name
    return "No Finding"


def main_labels(frame: pd.DataFrame) -> pd.Series:
    """`main_label` of every row (vectorised)."""
    positive = _label_matrix(frame) == 1.0
    positive[:, LABELS.index("No Finding")] = False
    names = np.array(LABELS, dtype=object)[positive.argmax(axis=1)]
    names[~positive.any(axis=1)] = "No Finding"
    return pd.Series(names, index=frame.index, dtype=object)


def compare_findings(a: Mapping[str, float], b: Mapping[str, float]) -> pd.DataFrame:
    """Finding by finding, the values of two label vectors and whether they agree.

    Missing counts as not mentioned (0), as in the matched-negative key. Rows where either is
    positive or uncertain come first.
    """
    words = {1.0: "positive", 0.0: "not mentioned / negative", -1.0: "uncertain"}
    rows = []
    for name in LABELS:
        va, vb = _value(a.get(name)), _value(b.get(name))
        rows.append(dict(finding=name, true_report=words.get(va, str(va)),
                         other_report=words.get(vb, str(vb)),
                         agreement="shared" if va == vb else "differs",
                         _interesting=(va != 0.0) or (vb != 0.0)))
    out = pd.DataFrame(rows)
    out = out[out["_interesting"] | (out["agreement"] == "differs")]
    out = out.drop(columns="_interesting").sort_values("agreement", kind="stable")
    return out.reset_index(drop=True)


def filter_queries(frame: pd.DataFrame, *, label: str | None = None,
                   ids: Iterable[str] | None = None) -> pd.DataFrame:
    """Queries with `label` positive (any value when None) and, when given, among `ids`."""
    out = frame
    if label and label in out.columns:
        out = out[out[label] == 1.0]
    if ids is not None:
        out = out[out["image_id"].isin(set(ids)) | out["query_id"].isin(set(ids))]
    return out


# ------------------------------------------------------------------------------ hard negatives


def random_vs_matched(curves: pd.DataFrame, full: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per N: Recall@1 with random and with matched negatives, and who was left out.

    Args:
        curves: `lift_curves` rows of one split (random and matched, fixed N).
        full: The matched rows at the full database (which `lift_curves` drops, since each
            query's matched pool there has its own size); joined to the largest N, and the
            ``pool`` column says so.
    """
    cols = ["N", "pool", "random Recall@1", "matched Recall@1", "matched lift", "matched queries",
            "left out"]
    if curves.empty:
        return pd.DataFrame(columns=cols)
    rnd = curves[curves["negatives"] == "random"].set_index("pool_size")
    mat = curves[curves["negatives"] == "matched"].set_index("pool_size")
    if full is not None and len(full):
        mat = pd.concat([mat, full.set_index("pool_size")])
        mat = mat[~mat.index.duplicated(keep="first")]
    sizes = sorted(set(rnd.index) | set(mat.index))
    out = pd.DataFrame({"N": sizes})
    largest = max(sizes)
    out["pool"] = ["full held-out set; matched: all of each query's matched distractors"
                   if (n == largest and full is not None and len(full)) else f"{n:,}"
                   for n in sizes]
    out["random Recall@1"] = rnd["recall"].reindex(sizes).to_numpy()
    out["matched Recall@1"] = mat["recall"].reindex(sizes).to_numpy()
    out["matched lift"] = mat["lift"].reindex(sizes).to_numpy()
    out["matched queries"] = mat["n_queries"].reindex(sizes).to_numpy()
    out["left out"] = mat["n_excluded"].reindex(sizes).to_numpy()
    return out


def matched_full(metrics: pd.DataFrame, *, direction: str = "image_to_report",
                 k: int = 1) -> pd.DataFrame:
    """The matched-negative rows at the full database (the largest N of each split and heads)."""
    m = metrics[(metrics["direction"] == direction) & (metrics["k"] == k)]
    if m.empty:
        return m
    largest = m.groupby(["model", "split", "heads"])["pool_size"].transform("max")
    return m[(m["negatives"] == "matched") & (m["pool_size"] == largest)]


def with_matched_recall(frame: pd.DataFrame, pool_size: int) -> pd.DataFrame:
    """Add ``eligible`` (enough matched distractors for N) and ``matched_recall`` at N."""
    out = frame.copy()
    m = out["n_matched"].fillna(0).to_numpy(dtype=np.float64)
    out["eligible"] = m >= pool_size - 1
    out["matched_recall"] = recall_at_1(m, out["n_matched_greater"].fillna(0),
                                        out["n_matched_tied"].fillna(0), pool_size)
    return out


def groups_sentence(groups: pd.DataFrame, pool_size: int) -> str:
    """Which label groups a matched figure at N rests on, with eligible queries per group."""
    from engine.core.claims import groups_text

    if groups is None or groups.empty:
        return ""
    text = groups_text(zip(groups["label group"], groups["eligible"], groups["queries"]))
    if not text:
        return f"At N = {pool_size:,} no label group has enough matched distractors."
    return f"The matched figure at N = {pool_size:,} {text}."


def group_table(frame: pd.DataFrame, pool_size: int) -> pd.DataFrame:
    """Per label group: queries, eligible queries, matched Recall@1 at N and its lift."""
    cols = ["label group", "queries", "eligible", "matched Recall@1", "lift"]
    if frame.empty:
        return pd.DataFrame(columns=cols)
    f = with_matched_recall(frame, pool_size)
    f["label group"] = label_groups(f)
    g = f.groupby("label group").agg(queries=("query_id", "size"), eligible=("eligible", "sum"),
                                     recall=("matched_recall", "mean")).reset_index()
    g["matched Recall@1"] = g["recall"]
    g["lift"] = g["recall"] * pool_size
    g = g.drop(columns="recall").sort_values(["queries", "label group"], ascending=[False, True])
    return g.loc[:, cols].reset_index(drop=True)


def still_relinking(frame: pd.DataFrame, pool_size: int, k: int = 1) -> pd.DataFrame:
    """Queries whose true report ranks within `k` among their matched distractors (>= N-1).

    The rank among matched distractors is the expected one with ties broken at random,
    ``1 + n_matched_greater + n_matched_tied / 2``; with k = 1 a tie is not a win (a query with
    a matched distractor level with its true report is left out, the tie being broken by
    chance). Adds ``matched_rank``, ``matched_beaten`` (matched distractors scoring strictly
    below the true report) and ``matched_recall`` at N. Sorted by the rank among *all* reports
    (``expected_rank``), so the images that re-link in the full pool too come first.
    """
    if frame.empty:
        return frame.assign(matched_recall=pd.Series(dtype=float), eligible=pd.Series(dtype=bool),
                            matched_beaten=pd.Series(dtype=float),
                            matched_rank=pd.Series(dtype=float))
    f = with_matched_recall(frame, pool_size)
    f["matched_beaten"] = matched_beaten(f)
    f["matched_rank"] = matched_rank(f)
    if k <= 1:
        keep = (f["n_matched_greater"] == 0) & (f["n_matched_tied"].fillna(0) == 0)
    else:
        keep = f["matched_rank"] <= k
    keep &= f["eligible"]
    order = ["expected_rank", "matched_rank", "query_id"] if "expected_rank" in f else [
        "matched_rank", "query_id"]
    return f[keep].sort_values(order).reset_index(drop=True)


def matched_rank(frame: pd.DataFrame) -> pd.Series:
    """Expected rank of the true report among its matched distractors (ties at random)."""
    return (1 + frame["n_matched_greater"].fillna(0)
            + frame["n_matched_tied"].fillna(0) / 2.0)


def matched_beaten(frame: pd.DataFrame) -> pd.Series:
    """Matched distractors scoring strictly below the true item: n_matched - greater - tied."""
    m = frame["n_matched"].fillna(0)
    return m - frame["n_matched_greater"].fillna(0) - frame["n_matched_tied"].fillna(0)


def tied_winners(frame: pd.DataFrame, pool_size: int) -> int:
    """Eligible queries that no matched distractor outscores but at least one ties."""
    if frame.empty:
        return 0
    m = frame["n_matched"].fillna(0) >= pool_size - 1
    return int(((frame["n_matched_greater"] == 0) & (frame["n_matched_tied"].fillna(0) > 0)
                & m).sum())


_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def words(text: str | None) -> list[str]:
    """Lower-case words of a report, in order."""
    return _WORD.findall((text or "").lower())


def word_diff(a: str | None, b: str | None) -> tuple[list[str], list[str]]:
    """Words of `a` missing from `b` and of `b` missing from `a`, each in first-seen order."""
    wa, wb = words(a), words(b)
    sa, sb = set(wa), set(wb)
    return (list(dict.fromkeys(w for w in wa if w not in sb)),
            list(dict.fromkeys(w for w in wb if w not in sa)))


# Filler that tells two reports apart without saying anything about the patient.
STOP_WORDS = frozenset(
    "a an and are as at be been being by for from has have had in into is it its of on or "
    "than that the their there these this to was were which with within without no not nor "
    "there's is there are also again now seen noted present shown demonstrated identified "
    "evidence".split())


def content_words(text: str | None) -> list[str]:
    """Lower-case words of a report that carry content: no stop word, no negated mention.

    "No pneumothorax." gives nothing ("pneumothorax" is negated, "no" is a stop word); "small
    left effusion" gives small, left, effusion. Negation is `negated_at`'s NegEx-style rule.
    """
    text = text or ""
    out = []
    for m in _WORD.finditer(text.lower()):
        w = m.group(0)
        if w in STOP_WORDS or w.isdigit():
            continue
        if negated_at(text, m.start(), m.end()):
            continue
        out.append(w)
    return out


def evidence_diff(a: str | None, b: str | None) -> tuple[list[str], list[str]]:
    """`word_diff` on content words only (`content_words`): what one report affirms and the
    other does not."""
    wa, wb = content_words(a), content_words(b)
    sa, sb = set(wa), set(wb)
    return (list(dict.fromkeys(w for w in wa if w not in sb)),
            list(dict.fromkeys(w for w in wb if w not in sa)))


def candidate_flags(candidates: pd.DataFrame) -> pd.DataFrame:
    """Candidates with ``is_matched`` meaning "a matched negative": never the true report.

    The attack marks every candidate whose label vector equals the true report's, the true report
    included; a matched *negative* is a distractor, so the true row is cleared here.
    """
    out = candidates.copy()
    true = out["is_true"].fillna(False).astype(bool)
    out["is_true"] = true
    out["is_matched"] = out["is_matched"].fillna(False).astype(bool) & ~true
    return out


# Report search: the typed words as one phrase, whole words only (so "effusion" does not match
# "effusions" nor "%" anything but a percent sign); a mention counts as negated when a negation
# cue precedes it in the same sentence with no "but"/"however" in between, or "resolved",
# "not seen", ... follows it (a small NegEx-style rule: docs/dashboard.md, "Selections and
# search").
_NEGATION_BEFORE = re.compile(
    r"\b(?:no|not|without|negative\s+for|free\s+of|absence\s+of|absent|resolution\s+of|"
    r"resolved|clear\s+of|nor|neither)\b", re.IGNORECASE)
_NEGATION_AFTER = re.compile(
    r"^[^.;:!?\n]*?\b(?:(?:has|have|had)\s+resolved|resolved|(?:is|are)?\s*not\s+"
    r"(?:seen|identified|present|visualized|demonstrated)|(?:is|are)\s+absent)\b",
    re.IGNORECASE)
_SCOPE_END = re.compile(r"\b(?:but|however|although|though|except|aside\s+from|which|whereas)\b",
                        re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.;:!?\n]")


def search_pattern(text: str | None) -> str | None:
    """A case-insensitive regular expression (RE2 and Python) matching the typed words as a phrase.

    Words are those of `words` (letters, digits, inner ``'`` and ``-``); everything else typed,
    ``%`` and ``_`` included, separates words and is never a wildcard. None when no word is left.
    """
    typed = words(text)
    if not typed:
        return None
    return r"(?i)\b" + r"[^a-z0-9]+".join(re.escape(w) for w in typed) + r"\b"


def negated_at(text: str, start: int, end: int) -> bool:
    """Whether the mention ``text[start:end]`` is negated (see `affirmed`)."""
    before = text[:start]
    cut = max((m.end() for m in _SENTENCE_END.finditer(before)), default=0)
    clause = before[cut:]
    ends = [m.end() for m in _SCOPE_END.finditer(clause)]
    if ends:
        clause = clause[ends[-1]:]
    if _NEGATION_BEFORE.search(clause):
        return True
    return bool(_NEGATION_AFTER.search(text[end:]))


def affirmed(text: str | None, pattern: str) -> bool:
    """Whether `text` mentions `pattern` at least once without negating it.

    "No pleural effusion." and "Effusion has resolved." are negated mentions of "effusion";
    "No pneumothorax, but a small left effusion." is affirmed.
    """
    text = text or ""
    return any(not negated_at(text, m.start(), m.end()) for m in re.finditer(pattern, text))


def best_wrong(candidates: pd.DataFrame, *, matched_only: bool = False) -> pd.Series | None:
    """The highest-ranked stored candidate that is not the true one (optionally matched only)."""
    if candidates.empty:
        return None
    wrong = candidates[~candidates["is_true"].astype(bool)]
    if matched_only:
        wrong = wrong[wrong["is_matched"].astype(bool)]
    return None if wrong.empty else wrong.sort_values("rank").iloc[0]


# ------------------------------------------------------------------------------ selections


def selected_row(state) -> int | None:
    """The selected row position of a ``st.dataframe(on_select=...)`` state, or None."""
    try:
        rows = state["selection"]["rows"]
    except (KeyError, TypeError):
        return None
    return int(rows[0]) if rows else None


def _selection(state, name: str):
    """Entry `name` of a chart selection state (``state["selection"][name]``), or None."""
    try:
        return state["selection"][name]
    except (KeyError, TypeError):
        return None


def selected_points(state, name: str = "pick") -> list[int]:
    """Row labels of the points a click selection holds (``[{"row": 15}, ...]``), in order.

    A Vega-Lite point selection over the field ``row`` (`charts.umap_scatter`); entries that are
    not a mapping or hold no integer row are skipped.
    """
    out = []
    for p in _selection(state, name) or []:
        value = p.get("row") if isinstance(p, Mapping) else None
        try:
            out.append(int(value))
        except (TypeError, ValueError):
            continue
    return list(dict.fromkeys(out))


def selection_box(state, name: str = "box") -> tuple[float, float, float, float] | None:
    """The box ``(x0, x1, y0, y1)`` of an interval selection over ``x`` and ``y``, or None.

    Streamlit passes a Vega-Lite interval selection as ``{"x": [x0, x1], "y": [y0, y1]}`` (in
    data coordinates, either order; ``{}`` once cleared). A malformed or non-finite box is None.
    """
    box = _selection(state, name)
    try:
        (x0, x1), (y0, y1) = (sorted(float(v) for v in box["x"]),
                              sorted(float(v) for v in box["y"]))
    except (KeyError, TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (x0, x1, y0, y1)):
        return None
    return x0, x1, y0, y1


def in_box(x, y, box: tuple[float, float, float, float]) -> np.ndarray:
    """Whether each point (x, y) lies in the box ``(x0, x1, y0, y1)``, edges included."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    x0, x1, y0, y1 = box
    return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


def selected_rows(points: pd.DataFrame, state) -> list:
    """Index labels of `points` a joint-space selection covers.

    A box selects by its bounds over *every* point of `points`, drawn or not (a map draws a
    sample, `sample_items`); without a box, a click selects the clicked points that exist.
    """
    box = selection_box(state)
    if box is not None:
        return list(points.index[in_box(points["x"], points["y"], box)])
    return [r for r in selected_points(state) if r in points.index]


def sample_items(points: pd.DataFrame, max_items: int, seed: int = 0) -> pd.DataFrame:
    """At most `max_items` items' points (both modalities of each kept item), index preserved."""
    codes, items = pd.factorize(points["image_id"].fillna(points["item_id"]))
    if len(items) <= max_items:
        return points
    keep = np.zeros(len(items), dtype=bool)
    keep[np.random.default_rng(seed).choice(len(items), size=max_items, replace=False)] = True
    return points[keep[codes]]


def pairs_of(points: pd.DataFrame, rows: Sequence[int]) -> pd.DataFrame:
    """The items behind selected UMAP points (``rows`` are index labels of `points`).

    One row per item, with both of its points and the distance between them. Vectorised on
    integer item codes: a box over a dense map of 20,000 items selects thousands.
    """
    if not len(rows) or points.empty:
        return pd.DataFrame(columns=["image_id", "study_id", "split", "label group",
                                     "expected_rank", "image_x", "image_y", "report_x",
                                     "report_y", "gap"])
    at = points.index.get_indexer(list(rows))
    codes, _ = pd.factorize(points["image_id"])  # -1: a point without an image id
    chosen = np.unique(codes[at[at >= 0]])
    sub = points[np.isin(codes, chosen[chosen >= 0])]
    first = sub.drop_duplicates("image_id").set_index("image_id")
    img = sub[sub["modality"] == "image"].drop_duplicates("image_id").set_index("image_id")
    rep = sub[sub["modality"] == "report"].drop_duplicates("image_id").set_index("image_id")
    ix = img.reindex(first.index)[["x", "y"]].to_numpy(dtype=float)
    rx = rep.reindex(first.index)[["x", "y"]].to_numpy(dtype=float)
    return pd.DataFrame({
        "image_id": first.index.to_numpy(), "study_id": first["study_id"].to_numpy(),
        "split": first["split"].to_numpy(),
        "label group": label_groups(first).to_numpy(),
        "expected_rank": first["expected_rank"].to_numpy(),
        "image_x": ix[:, 0], "image_y": ix[:, 1], "report_x": rx[:, 0], "report_y": rx[:, 1],
        "gap": np.hypot(ix[:, 0] - rx[:, 0], ix[:, 1] - rx[:, 1]),
    })


# ------------------------------------------------------------------------------ privacy / utility


def privacy_view(metrics: pd.DataFrame, dp_heads: Iterable[str]
                 ) -> tuple[pd.DataFrame, list[str], str]:
    """The privacy page's rows and picker: the held-out image -> report rows with random
    negatives, the default start's heads in reading order (`epsilon_grid`), and the heads the
    page opens on (the strongest privacy; ``original`` when there are no DP heads). One
    definition for the page and for the launcher that warms it."""
    held = metrics[(metrics["split"] == "test") & (metrics["direction"] == "image_to_report")
                   & (metrics["negatives"] == "random")]
    grid = epsilon_grid(dp_heads, held["heads"], start=decision.RANDOM)
    opened = next((h for h in grid if h != "original"), grid[0])
    return held, grid, opened


def epsilon_grid(dp_heads: Iterable[str], available: Iterable[str] = (), *,
                 start: str | None = None) -> list[str]:
    """Heads options in reading order: ``original``, DP heads by increasing epsilon, ``inf``.

    From no retraining, through the strongest privacy to the weakest, to retraining without DP
    (`engine.core.names.sort_heads`). Heads found only in `available` (attack results without a
    DP row) join the grid too; ``original`` is always offered, the probe's ``backbone`` never,
    an adaptive attacker's heads (``adaptive+...``) never: they are not a released set. With
    `start`, only that sweep (``random``: the bare labels); without, every start, each sweep in
    its own epsilon order after the random one.
    """
    labels = {str(h) for h in dp_heads} | {str(h) for h in available} | {"original"}
    labels.discard("backbone")
    labels = {h for h in labels if not decision.is_adaptive(h)}
    if start is not None:
        labels = {h for h in labels if h == "original" or decision.start_of(h) == start}

    def key(h: str):
        eps, st = decision.split_label(h)
        group = "" if st in (None, decision.RANDOM) else st
        return (group, *_sort_key(eps))

    return sorted(labels, key=key)


def _sort_key(label: str):
    from engine.core.names import heads_sort_key

    return heads_sort_key(label)


# ------------------------------------------------------------------------------ decision
# The decision's pure parts live in the engine's core, shared with the audit report.
point = decision.point_from
strongest = decision.strongest
adaptive_table = decision.adaptive_table
decision_for = decision.decide_from


def model_about(specialization=None, description=None) -> str:
    """One line about a model: its specialisation level and description, when known."""
    parts = []
    try:
        parts.append(f"specialisation level {int(specialization)}")
    except (TypeError, ValueError):
        pass
    if isinstance(description, str) and description.strip():
        parts.append(description.strip())
    return " · ".join(parts) or "not in the models table"


def frontier(metrics: pd.DataFrame, utility: pd.DataFrame, *, pool_size: int,
             split: str = "test", direction: str = "image_to_report") -> pd.DataFrame:
    """One row per heads with Recall@1 and lift at N (random negatives) and probe macro AUROC.

    Heads lacking either number are left out. Sorted by the epsilon grid's order.
    """
    m = metrics[(metrics["split"] == split) & (metrics["direction"] == direction)
                & (metrics["negatives"] == "random") & (metrics["pool_size"] == pool_size)
                & (metrics["k"] == 1)].loc[:, ["heads", "recall", "lift", "ci_low", "ci_high"]]
    u = utility[utility["label"] == "macro"].loc[:, ["heads", "auroc"]]
    out = m.merge(u, on="heads", how="inner")
    order = {h: i for i, h in enumerate(epsilon_grid(out["heads"]))}
    out["order"] = out["heads"].map(order)
    out["name"] = out["heads"].map(heads_name)
    return out.sort_values("order").drop(columns="order").reset_index(drop=True)


def dp_table(dp_runs: pd.DataFrame) -> pd.DataFrame:
    """DP parameters as they read (group- and patient-level guarantees), in the heads order.

    Every value is text: infinity reads ``∞``, a parameter that does not apply (delta, accountant
    of the heads retrained without DP) reads ``—``, never ``None``, ``nan`` or ``Infinity``.
    """
    names = {"heads": "heads", "epsilon": "ε (group)", "delta": "δ (group)",
             "patient_epsilon": "ε (patient)", "patient_delta": "δ (patient)",
             "noise_multiplier": "σ (noise)", "max_grad_norm": "C (clip)",
             "sample_rate": "q (sampling)", "steps": "steps", "accountant": "accountant",
             "privacy_unit": "unit", "run_id": "run"}
    cols = [c for c in names if c in dp_runs.columns]
    frame = dp_runs.loc[:, cols].copy()
    if "heads" in frame:
        order = {h: i for i, h in enumerate(sort_heads(frame["heads"].astype(str)))}
        frame = frame.iloc[np.argsort(frame["heads"].astype(str).map(order).to_numpy(),
                                      kind="stable")]
    out = pd.DataFrame(index=frame.index)
    for col in cols:
        values = frame[col]
        if col in ("delta", "patient_delta"):
            out[col] = [_param(v, "{:.1e}") for v in values]
        elif col == "steps":
            out[col] = [_param(v, "{:,.0f}") for v in values]
        elif col in ("epsilon", "patient_epsilon", "noise_multiplier", "max_grad_norm",
                     "sample_rate"):
            out[col] = [_param(v, "{:.3g}") for v in values]
        else:
            out[col] = [_param(v, "{}") for v in values]
    return out.rename(columns=names).reset_index(drop=True)


def _param(value, fmt: str) -> str:
    """One DP parameter as text: ``∞`` for infinity, ``—`` when missing or not applicable."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "—"
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        v = float(value)
        if math.isnan(v):
            return "—"
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        return fmt.format(v) if fmt != "{}" else f"{v:g}"
    text = str(value)
    return text if text.strip() else "—"


# Above this patient-level delta a DP guarantee says little: delta is the probability that the
# epsilon bound fails outright, and it should stay far below 1 / (number of patients).
WEAK_DELTA = 1e-3


def weak_patient_delta(dp_runs: pd.DataFrame, threshold: float = WEAK_DELTA) -> pd.DataFrame:
    """DP runs whose patient-level delta exceeds `threshold`: heads, patient epsilon and delta."""
    if dp_runs.empty or "patient_delta" not in dp_runs.columns:
        return pd.DataFrame(columns=["heads", "patient_epsilon", "patient_delta"])
    delta = pd.to_numeric(dp_runs["patient_delta"], errors="coerce")
    rows = dp_runs[delta > threshold]
    cols = [c for c in ("heads", "patient_epsilon", "patient_delta") if c in rows.columns]
    return rows.loc[:, cols].reset_index(drop=True)


def problems_table(problems_json: str | None) -> pd.DataFrame:
    """A cohort's stored input problems (JSON list) as a table."""
    cols = ["file", "row", "kind", "message", "skipped"]
    try:
        rows = json.loads(problems_json or "[]")
    except (TypeError, ValueError):
        rows = []
    if not isinstance(rows, list) or not rows:
        return pd.DataFrame(columns=cols)
    return pd.DataFrame(rows).reindex(columns=cols)
