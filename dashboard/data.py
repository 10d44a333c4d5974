"""The dashboard's only door to storage: read-only DuckDB queries with bound parameters.

Never imports torch, open_clip, opacus, faiss, umap or the engine. Every query attaches the
results file read-only, runs, fully fetches and detaches at once, so the engine (the only
writer) is blocked only for the instant of a read, and a read that meets the writer's lock is
retried briefly and then reported as `ResultsUpdating` instead of a traceback.

Public functions take plain arguments ``(db, token, ...)``: ``db`` is the database path as a
string and ``token`` is `DbState.token`, which changes whenever the file (or its WAL) does, so
the `st.cache_data` cache never serves results older than the file. They work outside a
Streamlit run too (the cache then lives in memory), which keeps them testable with plain pytest.
User-supplied values always travel as bound parameters; the few identifiers that vary (a label
column, a join column) come from fixed whitelists.

Results are read through the store's ``shown_*`` views (`engine.store.VIEWS`, docs/storage.md):
for each (model, cohort, heads) the rows of the latest valid run, the same rows the audit report
uses. A ``heads`` value handed to and returned by these functions is the views' ``heads_key``:
``original``, an epsilon label (``inf``, ``0.34``, ``1``) for heads trained on the cohort
itself, and ``<label>@<cohort>`` for heads trained on another cohort and transferred.
"""

from __future__ import annotations

import io
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import streamlit as st

from dashboard.logic import LABELS
from engine.core.names import epsilon_label

# Tables shown on the Runs page, in this order (the public ones of the README's "Results
# database", then the rest).
TABLES = ("cohorts", "items", "models", "runs", "relink_metrics", "relink_ranks", "relink_summary",
          "relink_topk", "dp_runs", "utility", "membership", "umap_points", "heads", "reports")

_CACHE = dict(show_spinner=False, max_entries=512)
_DIRECTION_KEYS = {"image_to_report": ("image_id", "study_id"),
                   "report_to_image": ("study_id", "image_id")}


def default_db() -> Path:
    """The results database: ``$RELINK_DB``, else ``cache/relink.duckdb``."""
    return Path(os.environ.get("RELINK_DB", "cache/relink.duckdb"))


class ResultsUpdating(Exception):
    """The engine is writing; try again in a moment."""


@dataclass(frozen=True)
class DbState:
    """Whether results exist, and a token that changes whenever the file does (cache key).

    ``exists`` is False for a missing file and for one that cannot be shown (`db_problem`:
    ``problem`` then says why, in one sentence).
    """

    path: str
    exists: bool
    mtime_ns: int
    wal_mtime_ns: int = 0
    problem: str = ""

    @property
    def token(self) -> str:
        return f"{self.mtime_ns}:{self.wal_mtime_ns}"


def db_state(path: str | Path | None = None) -> DbState:
    p = Path(path) if path is not None else default_db()
    try:
        mtime = p.stat().st_mtime_ns
    except FileNotFoundError:
        return DbState(str(p), False, 0)
    except OSError as exc:
        return DbState(str(p), False, 0, problem=f"The results path {p} cannot be read "
                                                 f"({exc.strerror or exc}).")
    try:
        wal = Path(f"{p}.wal").stat().st_mtime_ns
    except OSError:
        wal = 0
    problem = db_problem(str(p), f"{mtime}:{wal}")
    if problem:
        return DbState(str(p), False, mtime, wal, problem=problem)
    return DbState(str(p), True, mtime, wal)


# The newest results schema this dashboard reads (engine.store.SCHEMA_VERSION; a test keeps the
# two equal). A file written by a newer engine may hold tables this code misreads.
SCHEMA_VERSION = 3
_DUCKDB_MAGIC = b"DUCK"  # bytes 8-11 of every DuckDB database file


@st.cache_data(**_CACHE)
def db_problem(path: str, token: str) -> str:
    """Why the results file at `path` cannot be shown, in one sentence ("" when it can).

    A folder, an empty file, a file that is not a DuckDB database (checked by its header, never
    written to), a file DuckDB refuses, and a database of a newer schema than `SCHEMA_VERSION`
    each get their own sentence. `token` is only the cache key.
    """
    p = Path(path)
    what = f"The results path {path}"
    if p.is_dir():
        return f"{what} is a folder, not a results database file."
    if not p.is_file():  # a FIFO would make the read below wait forever
        return f"{what} is not a regular file, not a results database."
    try:
        with p.open("rb") as handle:
            head = handle.read(16)
    except OSError as exc:
        return f"{what} cannot be read ({exc.strerror or exc})."
    if not head:
        return f"{what} is an empty file, not a results database."
    if head[8:12] != _DUCKDB_MAGIC:
        return f"{what} is not a DuckDB database (its first bytes are not DuckDB's header)."
    try:
        found = query(path, "SELECT max(version) AS v FROM schema_version")
    except ResultsUpdating:
        return ""  # being written right now; the pages say so
    except duckdb.CatalogException:
        return ""  # no version table: an empty database, shown as "no cohorts yet"
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"{what} cannot be opened as a DuckDB database ({first})."
    version = found["v"].iloc[0] if len(found) else None
    if version is not None and not pd.isna(version) and int(version) > SCHEMA_VERSION:
        return (f"{what} was written by a newer engine (results schema version "
                f"{int(version)}; this dashboard reads up to version {SCHEMA_VERSION}). "
                "Upgrade the dashboard, or point RELINK_DB at another file.")
    return ""


# One in-memory DuckDB instance per process; each query attaches the results file read-only,
# runs, and detaches. Creating a DuckDB instance costs 20-40 ms, an ATTACH about 1 ms, and the
# file lock is held exactly as briefly as with a fresh read-only connection. An instance may
# attach a file only once, so queries take turns (they are short and fully fetched).
_BASE: duckdb.DuckDBPyConnection | None = None
_TURN = threading.Lock()


def _attached_query(path: str, sql: str, params: list) -> pd.DataFrame:
    global _BASE
    if _BASE is None:
        _BASE = duckdb.connect(":memory:")
    con = _BASE.cursor()
    try:
        con.execute("DETACH DATABASE IF EXISTS results")
        con.execute("ATTACH '" + path.replace("'", "''") + "' AS results (READ_ONLY)")
        try:
            con.execute("USE results")
            return con.execute(sql, params).df()
        finally:
            con.execute("USE memory")
            con.execute("DETACH DATABASE results")
    finally:
        con.close()


def query(path: str | Path, sql: str, params: list | None = None, *,
          retry_s: float = 2.0) -> pd.DataFrame:
    """Run one read-only query and return its fully fetched result.

    Raises:
        ResultsUpdating: the writer held the lock for longer than `retry_s`.
    """
    deadline = time.monotonic() + retry_s
    delay = 0.05
    while True:
        try:
            with _TURN:
                return _attached_query(str(path), sql, list(params or []))
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            if time.monotonic() >= deadline:
                raise ResultsUpdating(str(path)) from exc
        time.sleep(delay)  # outside the turn, so other sessions' reads go on
        delay = min(delay * 2, 0.4)


@st.cache_data(**_CACHE)
def tables(db: str, token: str) -> frozenset[str]:
    """Names of the tables and views the database holds."""
    return frozenset(query(db, "SELECT table_name AS name FROM duckdb_tables() UNION "
                               "SELECT view_name FROM duckdb_views() WHERE NOT internal")["name"])


def _has(db: str, token: str, *names: str) -> bool:
    return set(names) <= tables(db, token)


def _label_cols(alias: str) -> str:
    return ", ".join(f'{alias}."{name}"' for name in LABELS)


# ------------------------------------------------------------------------------ catalogue


@st.cache_data(**_CACHE)
def table_counts(db: str, token: str) -> pd.DataFrame:
    """Row count of each results table that exists (empty frame for a new database)."""
    names = [t for t in TABLES if t in tables(db, token)]
    if not names:
        return pd.DataFrame(columns=["table", "rows"])
    union = " UNION ALL ".join(
        f"SELECT '{t}' AS \"table\", count(*) AS rows, {i} AS o FROM \"{t}\""
        for i, t in enumerate(names))
    return query(db, f"SELECT \"table\", rows FROM ({union}) ORDER BY o")


@st.cache_data(**_CACHE)
def cohorts(db: str, token: str) -> pd.DataFrame:
    """Every registered cohort (one row each), with its root folder and skipped-input report."""
    if not _has(db, token, "cohorts"):
        return pd.DataFrame(columns=["cohort"])
    return query(
        db,
        "SELECT cohort, format, site, n_patients, n_studies, n_images, n_skipped, created_at, "
        "root, section, problems_json FROM cohorts ORDER BY cohort",
    )


@st.cache_data(**_CACHE)
def models(db: str, token: str, cohort: str) -> pd.DataFrame:
    """Models with attack results on `cohort`, least specialised first.

    Columns: model, spec, specialization, description (the last three empty when the model is not
    in the ``models`` table).
    """
    if not _has(db, token, "shown_relink_metrics", "models"):
        return pd.DataFrame(columns=["model", "spec", "specialization", "description"])
    return query(
        db,
        "SELECT r.model, m.spec, m.specialization, m.description "
        "FROM (SELECT DISTINCT model FROM shown_relink_metrics WHERE cohort = ?) r "
        "LEFT JOIN models m USING (model) "
        "ORDER BY m.specialization NULLS LAST, r.model",
        [cohort],
    )


@st.cache_data(**_CACHE)
def heads(db: str, token: str, cohort: str, model: str) -> list[str]:
    """Heads with attack results for (cohort, model), as stored (``original``, ``inf``, ...)."""
    if not _has(db, token, "shown_relink_metrics"):
        return []
    frame = query(db, "SELECT DISTINCT heads_key AS heads FROM shown_relink_metrics "
                      "WHERE cohort = ? AND model = ? ORDER BY 1", [cohort, model])
    return list(frame["heads"])


# ------------------------------------------------------------------------------ pool metrics


@st.cache_data(**_CACHE)
def pool_metrics(db: str, token: str, cohort: str, model: str | None = None,
                 heads: str | None = "original", k: int | None = 1) -> pd.DataFrame:
    """`relink_metrics` rows of a cohort (one model or all; one heads or all; one k or all)."""
    if not _has(db, token, "shown_relink_metrics"):
        return pd.DataFrame(columns=["model", "split", "direction", "negatives", "heads",
                                     "pool_size", "k", "recall", "chance", "lift", "ci_low",
                                     "ci_high", "n_queries", "n_excluded"])
    where, params = ["cohort = ?"], [cohort]
    for column, value in (("model", model), ("heads_key", heads), ("k", k)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    return query(
        db,
        "SELECT model, split, direction, negatives, heads_key AS heads, pool_size, k, recall, "
        "chance, lift, ci_low, ci_high, n_queries, n_excluded, run_id FROM shown_relink_metrics "
        f"WHERE {' AND '.join(where)} "
        "ORDER BY model, split, direction, negatives, heads, pool_size, k",
        params,
    )


@st.cache_data(**_CACHE)
def summary(db: str, token: str, cohort: str, model: str,
            heads: str | None = "original") -> pd.DataFrame:
    """`relink_summary` rows (mrr, patient_top1, median_rank, chance_top1) per split/direction."""
    if not _has(db, token, "shown_relink_summary"):
        return pd.DataFrame(columns=["split", "direction", "heads", "metric", "value", "ci_low",
                                     "ci_high", "n_queries"])
    where, params = "cohort = ? AND model = ?", [cohort, model]
    if heads is not None:
        where += " AND heads_key = ?"
        params.append(heads)
    return query(db, "SELECT split, direction, heads_key AS heads, metric, value, ci_low, "
                     f"ci_high, n_queries FROM shown_relink_summary WHERE {where} "
                     "ORDER BY split, direction, heads, metric", params)


# ------------------------------------------------------------------------------ per query


@st.cache_data(**_CACHE)
def query_ranks(db: str, token: str, cohort: str, model: str, heads: str, split: str = "test",
                direction: str = "image_to_report") -> pd.DataFrame:
    """Every query of one (split, direction, heads) with its counts, expected rank and labels.

    Columns: query_id, true_id, image_id, study_id, patient_id, view, n_candidates, n_greater,
    n_tied, n_matched, n_matched_greater, n_matched_tied, top1_same_patient, expected_rank and
    the 14 labels; riskiest (lowest expected rank) first.
    """
    if direction not in _DIRECTION_KEYS:
        raise ValueError(f"direction={direction!r}")
    if not _has(db, token, "shown_relink_ranks", "items"):
        return pd.DataFrame(columns=["query_id", "expected_rank", *LABELS])
    key = _DIRECTION_KEYS[direction][0]
    return query(
        db,
        "SELECT r.query_id, r.true_id, i.image_id, i.study_id, i.patient_id, i.view, "
        "r.n_candidates, r.n_greater, r.n_tied, r.n_matched, r.n_matched_greater, "
        "r.n_matched_tied, r.top1_same_patient, 1 + r.n_greater + r.n_tied / 2.0 AS expected_rank, "
        f"{_label_cols('i')} "
        # the shown run's rows straight from the table (as in `_topk_of`): a filter on the
        # shown view would rank every run's rows first
        "FROM relink_ranks r LEFT JOIN items i "
        f"ON i.cohort = r.cohort AND i.selected AND i.{key} = r.query_id "
        "WHERE r.run_id IN (SELECT DISTINCT run_id FROM shown_relink_metrics WHERE cohort = ? "
        "AND model = ? AND heads_key = ?) AND r.cohort = ? AND r.model = ? AND r.split = ? "
        "AND r.direction = ? "
        "ORDER BY expected_rank, r.query_id",
        [cohort, model, heads, cohort, model, split, direction],
    )


@st.cache_data(**_CACHE)
def search_reports(db: str, token: str, cohort: str, text: str, *,
                   skip_negated: bool = True) -> list[str]:
    """Image ids (selected items) whose image or study id is `text`, or whose report has its words.

    Words match whole and in order (`logic.search_pattern`: ``%`` and ``_`` are never wildcards,
    "effusion" does not match "effusions"); with `skip_negated`, a report whose only mentions are
    negated ("No pleural effusion.") does not match (`logic.affirmed`). Ids match exactly,
    ignoring case.
    """
    if not text.strip() or not _has(db, token, "items"):
        return []
    from dashboard.logic import affirmed, search_pattern

    pattern = search_pattern(text)
    typed = text.strip()
    frame = query(db, "SELECT image_id, report_text, "
                      "(lower(image_id) = lower(?) OR lower(study_id) = lower(?)) AS by_id "
                      "FROM items WHERE cohort = ? AND selected AND "
                      "(lower(image_id) = lower(?) OR lower(study_id) = lower(?) "
                      " OR (? IS NOT NULL AND regexp_matches(report_text, ?)))",
                  [typed, typed, cohort, typed, typed, pattern, pattern or ""])
    if skip_negated and pattern is not None and len(frame):
        keep = frame["by_id"] | frame["report_text"].map(lambda t: affirmed(t, pattern))
        frame = frame[keep]
    return list(frame["image_id"])


@st.cache_resource(max_entries=4, show_spinner=False)
def _items_of(db: str, token: str, cohort: str) -> pd.DataFrame:
    """Every item of a cohort with its cohort root, indexed by image id (read once per token).

    Each read attaches the file afresh, so DuckDB's buffers start cold every time: one read of
    the whole (small) items table beats one cold read per item picked. Shared, not copied:
    callers never modify it.
    """
    frame = query(db, "SELECT i.*, c.root FROM items i JOIN cohorts c USING (cohort) "
                      "WHERE i.cohort = ?", [cohort])
    return frame.set_index("image_id", drop=False)


def item(db: str, token: str, cohort: str, image_id: str) -> dict | None:
    """One item (image, its study's report and labels) with the cohort root, or None."""
    if not _has(db, token, "items", "cohorts"):
        return None
    frame = _items_of(db, token, cohort)
    if image_id not in frame.index:
        return None
    row = frame.loc[image_id]
    return (row.iloc[0] if isinstance(row, pd.DataFrame) else row).to_dict()


@st.cache_resource(max_entries=8, show_spinner=False)
def _topk_of(db: str, token: str, cohort: str, model: str, heads: str, split: str,
             direction: str) -> tuple[np.ndarray, pd.DataFrame]:
    """Every stored top-k row of one (heads, split, direction), sorted by query (one read).

    The rows come from the run `shown_relink_metrics` shows for these heads (the attack writes
    metrics and top-k lists under one run id), read straight from `relink_topk`: filtering the
    shown view by query would rank every run's rows first. Returns the sorted query ids and
    the frame, for slicing with `numpy.searchsorted`.
    """
    run = query(db, "SELECT DISTINCT run_id FROM shown_relink_metrics WHERE cohort = ? "
                    "AND model = ? AND heads_key = ?", [cohort, model, heads])
    cols = "t.query_id, t.rank, t.candidate_id, t.score, t.is_true, t.is_matched"
    if len(run) == 1:
        frame = query(db, f"SELECT {cols} FROM relink_topk t WHERE t.run_id = ? AND t.split = ? "
                          "AND t.direction = ? ORDER BY t.query_id, t.rank",
                      [run["run_id"].iloc[0], split, direction])
    else:
        frame = query(db, f"SELECT {cols} FROM shown_relink_topk t WHERE t.cohort = ? "
                          "AND t.model = ? AND t.heads_key = ? AND t.split = ? "
                          "AND t.direction = ? ORDER BY t.query_id, t.rank",
                      [cohort, model, heads, split, direction])
    return frame["query_id"].to_numpy(dtype=object), frame


def candidates(db: str, token: str, cohort: str, model: str, heads: str, split: str,
               direction: str, query_id: str) -> pd.DataFrame:
    """The stored top-k candidates of one query with each candidate's report (or image) and labels.

    Columns: rank, candidate_id, score, is_true, is_matched, image_id, study_id, patient_id,
    report_text and the 14 labels. Sliced from `_topk_of` and `_items_of`, so picking another
    query reads nothing.
    """
    if direction not in _DIRECTION_KEYS:
        raise ValueError(f"direction={direction!r}")
    cols = ["rank", "candidate_id", "score", "is_true", "is_matched", "image_id", "study_id",
            "patient_id", "report_text", *LABELS]
    if not _has(db, token, "shown_relink_topk", "items"):
        return pd.DataFrame(columns=cols)
    ids, frame = _topk_of(db, token, cohort, model, heads, split, direction)
    lo, hi = np.searchsorted(ids, query_id, "left"), np.searchsorted(ids, query_id, "right")
    top = frame.iloc[lo:hi].drop(columns="query_id").reset_index(drop=True)
    key = _DIRECTION_KEYS[direction][1]
    items = _items_of(db, token, cohort)
    items = items[items["selected"].fillna(False).astype(bool)]
    items = items.loc[:, ["image_id", "study_id", "patient_id", "report_text", *LABELS]]
    out = top.merge(items.reset_index(drop=True), how="left", left_on="candidate_id",
                    right_on=key, sort=False)
    return out.loc[:, cols].sort_values("rank", kind="stable").reset_index(drop=True)


@st.cache_data(show_spinner=False, max_entries=256)
def thumbnail(path: str, mtime_ns: int, max_side: int = 512) -> bytes | None:
    """A PNG thumbnail of an image file, or None when it cannot be read.

    High bit depths are windowed into 8 bits as the engine reads them (`engine.images.to_8bit`),
    not clipped. Call it with a path from `engine.images.resolve_image` (`item_thumbnail` does).
    `mtime_ns` is only a cache key, so that a replaced file is reloaded.
    """
    from PIL import Image, UnidentifiedImageError

    from engine.images import HIGH_BIT_MODES, ImageReadError, open_image_file, to_8bit

    try:
        with open_image_file(path) as fh, Image.open(fh) as img:
            gray = img.mode in ("1", "L", "LA") or img.mode in HIGH_BIT_MODES
            small = to_8bit(img, "L" if gray else "RGB")
            small.thumbnail((max_side, max_side))
            out = io.BytesIO()
            small.save(out, "PNG")
            return out.getvalue()
    except (OSError, UnidentifiedImageError, ValueError, ImageReadError):
        return None


def item_thumbnail(root: str | None, image_path: str | None) -> tuple[bytes | None, str]:
    """An item's thumbnail, or None and why not.

    The stored path is data: it is opened only when `engine.images.resolve_image` finds it inside
    the cohort root (no absolute paths, no ``..`` or symbolic link out of it).
    """
    from engine.images import ImagePathError, resolve_image

    if not root or not image_path:
        return None, "no image path is stored for this item"
    try:
        path = resolve_image(root, str(image_path))
    except ImagePathError as exc:
        return None, str(exc)
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return None, (f"{path} is missing; it may have been moved or deleted after the cohort "
                      "was registered")
    png = thumbnail(str(path), mtime) if path.is_file() else None
    if png is None:
        return None, f"{path} is not an image that can be read"
    return png, ""


# ------------------------------------------------------------------------------ joint space


@st.cache_data(**_CACHE)
def umap_heads(db: str, token: str, cohort: str, model: str) -> list[str]:
    """Heads with stored UMAP coordinates for (cohort, model)."""
    if not _has(db, token, "shown_umap_points"):
        return []
    return list(query(db, "SELECT DISTINCT heads_key AS heads FROM shown_umap_points "
                          "WHERE cohort = ? AND model = ? ORDER BY 1", [cohort, model])["heads"])


@st.cache_resource(max_entries=8, show_spinner=False)
def umap_points(db: str, token: str, cohort: str, model: str, heads: str) -> pd.DataFrame:
    """UMAP points of one map, each with its item's ids, split, labels and expected rank.

    Shared, not copied (a map of 20,000 items is 40,000 rows, and every rerun of the joint space
    reads it): callers never modify it.

    ``item_id`` is matched to the item's image id; a report point whose id is a study id is
    matched through the study. ``expected_rank`` is the image -> report rank of the item in its
    own split under the same heads (NaN where the attack has not run).
    """
    if not _has(db, token, "shown_umap_points", "items"):
        return pd.DataFrame(columns=["item_id", "modality", "x", "y", "image_id", "study_id",
                                     "split", "expected_rank", *LABELS])
    has_ranks = _has(db, token, "shown_relink_ranks")
    rank_join = (
        "LEFT JOIN shown_relink_ranks r ON r.cohort = u.cohort AND r.model = u.model "
        "AND r.heads_key = u.heads_key AND r.direction = 'image_to_report' "
        "AND r.query_id = coalesce(a.image_id, b.image_id) "
        "AND r.split = coalesce(a.split, b.split)" if has_ranks else "")
    rank_col = "1 + r.n_greater + r.n_tied / 2.0" if has_ranks else "NULL::DOUBLE"
    cols = ", ".join(f'coalesce(a."{n}", b."{n}") AS "{n}"' for n in LABELS)
    return query(
        db,
        "SELECT u.item_id, u.modality, u.x, u.y, coalesce(a.image_id, b.image_id) AS image_id, "
        "coalesce(a.study_id, b.study_id) AS study_id, "
        "coalesce(a.patient_id, b.patient_id) AS patient_id, "
        f"coalesce(a.split, b.split) AS split, {rank_col} AS expected_rank, {cols} "
        "FROM shown_umap_points u "
        "LEFT JOIN items a ON a.cohort = u.cohort AND a.image_id = u.item_id "
        "LEFT JOIN items b ON a.image_id IS NULL AND u.modality = 'report' "
        "AND b.cohort = u.cohort AND b.selected AND b.study_id = u.item_id "
        f"{rank_join} "
        "WHERE u.cohort = ? AND u.model = ? AND u.heads_key = ? ORDER BY u.modality, u.item_id",
        [cohort, model, heads],
    )


# ------------------------------------------------------------------------------ DP and utility


@st.cache_data(**_CACHE)
def dp_runs(db: str, token: str, cohort: str, model: str) -> pd.DataFrame:
    """DP runs of heads trained on (cohort, model), each with its ``heads`` label, smallest
    epsilon first."""
    if not _has(db, token, "shown_dp_runs"):
        return pd.DataFrame(columns=["heads", "epsilon"])
    frame = query(db, "SELECT * EXCLUDE (heads_key) FROM shown_dp_runs WHERE cohort = ? "
                      "AND model = ? ORDER BY epsilon NULLS LAST", [cohort, model])
    if "heads" not in frame.columns:
        frame.insert(0, "heads", [epsilon_label(e) for e in frame["epsilon"]])
    return frame


@st.cache_data(**_CACHE)
def adaptive_runs(db: str, token: str, cohort: str, model: str) -> pd.DataFrame:
    """The adaptive attacker's runs (issue 21: heads refitted without privacy on the frozen
    backbones); empty when the table does not exist (the stage has not run)."""
    cols = ["heads", "source", "public_cohort", "known_fraction", "n_fit_pairs",
            "n_eval_pairs"]
    if not _has(db, token, "adaptive_runs"):
        return pd.DataFrame(columns=cols)
    return query(db, "SELECT heads, source, public_cohort, known_fraction, n_fit_pairs, "
                     "n_eval_pairs FROM adaptive_runs WHERE cohort = ? AND model = ? "
                     "ORDER BY heads", [cohort, model])


@st.cache_data(**_CACHE)
def utility(db: str, token: str, cohort: str, model: str) -> pd.DataFrame:
    """Linear-probe AUROC per (heads, label) for (cohort, model); label ``macro`` is the mean."""
    if not _has(db, token, "shown_utility"):
        return pd.DataFrame(columns=["heads", "label", "auroc"])
    return query(db, "SELECT heads_key AS heads, label, auroc, run_id FROM shown_utility "
                     "WHERE cohort = ? AND model = ? ORDER BY heads, label", [cohort, model])


@st.cache_data(**_CACHE)
def membership(db: str, token: str, cohort: str, model: str) -> pd.DataFrame:
    """Membership signal (members vs held-out true-pair similarity) per heads."""
    if not _has(db, token, "shown_membership"):
        return pd.DataFrame(columns=["heads", "auroc", "tpr_at_fpr", "fpr"])
    return query(db, "SELECT heads_key AS heads, auroc, tpr_at_fpr, fpr, n_members, "
                     "n_nonmembers FROM shown_membership WHERE cohort = ? AND model = ? "
                     "ORDER BY heads", [cohort, model])


@st.cache_data(**_CACHE)
def dp_selection(db: str, token: str, cohort: str, model: str) -> pd.DataFrame:
    """Hyper-parameter candidates of every epsilon (engine/dp/selection.py), if selected."""
    if not _has(db, token, "shown_dp_selection"):
        return pd.DataFrame(columns=["heads", "candidate", "chosen", "val_loss"])
    return query(db, "SELECT heads_key AS heads, candidate, chosen, optimizer, lr, epochs, "
                     "batch_size, max_grad_norm, group_size, val_loss, epsilon, "
                     "composed_epsilon, composed_patient_epsilon, noise_multiplier, steps "
                     "FROM shown_dp_selection WHERE cohort = ? AND model = ? "
                     "ORDER BY target_epsilon, candidate", [cohort, model])


# ------------------------------------------------------------------------------ provenance


@st.cache_data(**_CACHE)
def runs(db: str, token: str) -> pd.DataFrame:
    """Every stored run, newest first; ``shown`` says whether its results are the ones shown."""
    if not _has(db, token, "runs"):
        return pd.DataFrame(columns=["run_id", "stage", "model", "cohort", "status"])
    if not _has(db, token, "shown_runs"):  # a results file of schema version 1, not migrated
        return query(db, "SELECT run_id, stage, model, cohort, status, started_at, finished_at, "
                         "seconds, n_rows, n_skipped, code_version, config_hash, message, "
                         "config_json FROM runs ORDER BY finished_at DESC NULLS LAST, run_id")
    return query(db, "SELECT run_id, stage, model, cohort, heads, heads_cohort, status, "
                     "run_id IN (SELECT run_id FROM shown_runs) AS shown, started_at, "
                     "finished_at, seconds, n_rows, n_stored, n_skipped, torch_version, threads, "
                     "code_version, config_hash, message, config_json "
                     "FROM runs ORDER BY finished_at DESC NULLS LAST, run_id")


@st.cache_data(**_CACHE)
def _report_rows(db: str, token: str, cohort: str, model: str) -> pd.DataFrame:
    if not _has(db, token, "reports"):
        return pd.DataFrame(columns=["format", "path", "written_at"])
    return query(db, "SELECT format, path, written_at FROM reports WHERE cohort = ? AND model = ? "
                     "ORDER BY format, written_at DESC, path", [cohort, model])


def reports(db: str, token: str, cohort: str, model: str) -> pd.DataFrame:
    """One audit report file per format for (cohort, model): the newest that exists on disk.

    Every report the engine wrote is listed in ``reports``; a copy written elsewhere and
    deleted falls back to the next newest. A format whose every listed file is gone keeps its
    newest row (so the page can say it is missing). Existence is checked on every call, not
    cached: deleting a file does not change the database.
    """
    rows = _report_rows(db, token, cohort, model)
    if rows.empty:
        return rows
    exists = rows["path"].map(lambda p: Path(p).is_file())
    rows = rows.assign(_exists=exists).sort_values(["format", "_exists", "written_at"],
                                                   ascending=[True, False, False], kind="stable")
    return rows.drop_duplicates("format").drop(columns="_exists").reset_index(drop=True)


REPORT_FORMATS = ("html", "pdf", "json")


def report_folders(db: str | Path) -> list[Path]:
    """Folders the report page may read: ``reports/`` beside the database, and ``$RELINK_REPORTS``.

    ``python -m engine report`` writes to ``cache/reports`` by default, the folder beside the
    default database (the demo too); ``RELINK_REPORTS`` (folders separated by ``os.pathsep``)
    adds the folders of reports written elsewhere with ``--out``.
    """
    folders = [Path(db).resolve().parent / "reports"]
    for extra in os.environ.get("RELINK_REPORTS", "").split(os.pathsep):
        if extra.strip():
            folders.append(Path(extra.strip()).expanduser().resolve())
    return list(dict.fromkeys(folders))


def report_file(db: str | Path, path: str | None, fmt: str) -> tuple[Path | None, str]:
    """The report file a ``reports`` row names, if the engine could have written it; else why not.

    The path stored in the database is data, not an instruction: it is followed only when it
    resolves (symbolic links included) to a regular ``.<fmt>`` file inside one of
    `report_folders`. Anything else is refused and never read.

    Returns:
        ``(resolved path, "")`` when it may be shown, else ``(None, reason)``.
    """
    if fmt not in REPORT_FORMATS:
        return None, f"unknown report format {fmt!r}"
    if not path or "\x00" in str(path):
        return None, "no file path stored"
    resolved = Path(os.path.realpath(Path(path).expanduser()))
    folders = report_folders(db)
    if not any(resolved.is_relative_to(folder) for folder in folders):
        where = " or ".join(str(f) for f in folders)
        return None, (f"the stored path lies outside the report folder ({where}); set "
                      "RELINK_REPORTS to the folder given to `python -m engine report --out` "
                      "to show reports written there")
    if resolved.suffix.lower() != f".{fmt}":
        return None, f"the stored path is not a .{fmt} file"
    if not resolved.is_file():
        return None, "the file is missing on disk (rerun `python -m engine report`)"
    return resolved, ""

