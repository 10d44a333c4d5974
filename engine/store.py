"""The DuckDB store: the public schema, its migrations, the "shown" views and the only write path.

Every result row carries the ``run_id`` of the run that wrote it, and a run writes and replaces
only its own rows, so different configurations coexist. What the dashboard and the report show
for (model, cohort, heads) is read through the ``shown_*`` views (`VIEWS`, described in
docs/storage.md): the rows of the latest *valid* run, where valid means finished (``status =
'done'``) on the cohort content that is registered now. Reusing a run moves its ``shown_at``
forward, so rerunning a configuration makes its rows the ones shown again.

The engine is the only writer. It opens a read-write connection for one stage's results, writes
them inside a transaction and closes, so readers (the dashboard) are blocked only briefly and
never see half-written results. Readers use `connect_read`, which retries while a writer holds
the file lock.

Every query result is fully fetched before the next query (DuckDB 2.x streams results and refuses
new work on a connection with an unfinished one).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd

from engine.core.labels import CHEXPERT_LABELS
from engine.errors import StoreError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3

_LABEL_COLUMNS = ",\n    ".join(f'"{name}" DOUBLE' for name in CHEXPERT_LABELS)

# Public tables: names and meanings are an interface; add columns, never rename.
SCHEMA_DDL: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL,
    applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)""",
    """CREATE TABLE IF NOT EXISTS cohorts (
    cohort VARCHAR PRIMARY KEY,
    format VARCHAR NOT NULL,
    root VARCHAR NOT NULL,
    site VARCHAR,
    n_patients INTEGER,
    n_studies INTEGER,
    n_images INTEGER,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    section VARCHAR,
    n_skipped INTEGER,
    problems_json VARCHAR)""",
    f"""CREATE TABLE IF NOT EXISTS items (
    cohort VARCHAR NOT NULL,
    image_id VARCHAR NOT NULL,
    study_id VARCHAR NOT NULL,
    patient_id VARCHAR NOT NULL,
    split VARCHAR NOT NULL,
    view VARCHAR,
    image_path VARCHAR NOT NULL,
    report_text VARCHAR NOT NULL,
    {_LABEL_COLUMNS},
    selected BOOLEAN NOT NULL DEFAULT TRUE,
    PRIMARY KEY (cohort, image_id))""",
    """CREATE TABLE IF NOT EXISTS models (
    model VARCHAR PRIMARY KEY,
    spec VARCHAR NOT NULL,
    specialization INTEGER,
    description VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY,
    stage VARCHAR NOT NULL,
    model VARCHAR,
    cohort VARCHAR,
    config_json VARCHAR NOT NULL,
    config_hash VARCHAR NOT NULL,
    code_version VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    seconds DOUBLE,
    n_rows INTEGER,
    n_skipped INTEGER,
    message VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS relink_metrics (
    run_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    cohort VARCHAR NOT NULL,
    split VARCHAR NOT NULL,
    direction VARCHAR NOT NULL,
    negatives VARCHAR NOT NULL,
    heads VARCHAR NOT NULL,
    pool_size INTEGER NOT NULL,
    k INTEGER NOT NULL,
    recall DOUBLE,
    chance DOUBLE,
    lift DOUBLE,
    ci_low DOUBLE,
    ci_high DOUBLE,
    n_queries INTEGER,
    n_excluded INTEGER)""",
    """CREATE TABLE IF NOT EXISTS relink_ranks (
    run_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    cohort VARCHAR NOT NULL,
    split VARCHAR NOT NULL,
    direction VARCHAR NOT NULL,
    heads VARCHAR NOT NULL,
    query_id VARCHAR NOT NULL,
    true_id VARCHAR NOT NULL,
    n_candidates INTEGER NOT NULL,
    n_greater INTEGER NOT NULL,
    n_tied INTEGER NOT NULL,
    n_matched INTEGER,
    n_matched_greater INTEGER,
    n_matched_tied INTEGER,
    top1_same_patient DOUBLE)""",
    """CREATE TABLE IF NOT EXISTS relink_summary (
    run_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    cohort VARCHAR NOT NULL,
    split VARCHAR NOT NULL,
    direction VARCHAR NOT NULL,
    heads VARCHAR NOT NULL,
    metric VARCHAR NOT NULL,
    value DOUBLE,
    ci_low DOUBLE,
    ci_high DOUBLE,
    n_queries INTEGER)""",
    """CREATE TABLE IF NOT EXISTS relink_topk (
    run_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    cohort VARCHAR NOT NULL,
    split VARCHAR NOT NULL,
    direction VARCHAR NOT NULL,
    heads VARCHAR NOT NULL,
    query_id VARCHAR NOT NULL,
    rank INTEGER NOT NULL,
    candidate_id VARCHAR NOT NULL,
    score DOUBLE NOT NULL,
    is_true BOOLEAN NOT NULL,
    is_matched BOOLEAN NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS dp_runs (
    run_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    cohort VARCHAR NOT NULL,
    epsilon DOUBLE,
    delta DOUBLE,
    patient_epsilon DOUBLE,
    patient_delta DOUBLE,
    noise_multiplier DOUBLE,
    max_grad_norm DOUBLE,
    sample_rate DOUBLE,
    steps INTEGER,
    accountant VARCHAR,
    privacy_unit VARCHAR,
    heads VARCHAR,
    target_epsilon DOUBLE,
    grad_sample_mode VARCHAR,
    n_units INTEGER,
    n_pairs_dropped INTEGER,
    final_loss DOUBLE,
    seconds DOUBLE)""",
    """CREATE TABLE IF NOT EXISTS membership (
    run_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    cohort VARCHAR NOT NULL,
    heads VARCHAR NOT NULL,
    auroc DOUBLE,
    tpr_at_fpr DOUBLE,
    fpr DOUBLE,
    n_members INTEGER,
    n_nonmembers INTEGER)""",
    # One row per hyper-parameter candidate of each epsilon (engine/dp/selection.py).
    """CREATE TABLE IF NOT EXISTS dp_selection (
    run_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    cohort VARCHAR NOT NULL,
    heads VARCHAR NOT NULL,
    heads_cohort VARCHAR,
    heads_id VARCHAR,
    target_epsilon DOUBLE,
    candidate INTEGER NOT NULL,
    params_json VARCHAR,
    optimizer VARCHAR,
    lr DOUBLE,
    epochs INTEGER,
    batch_size INTEGER,
    max_grad_norm DOUBLE,
    group_size INTEGER,
    chosen BOOLEAN,
    val_loss DOUBLE,
    epsilon DOUBLE,
    delta DOUBLE,
    noise_multiplier DOUBLE,
    sample_rate DOUBLE,
    steps INTEGER,
    accountant VARCHAR,
    seconds DOUBLE,
    final_loss DOUBLE,
    composed_epsilon DOUBLE,
    composed_delta DOUBLE,
    composed_patient_epsilon DOUBLE,
    composed_patient_delta DOUBLE,
    n_fit_pairs INTEGER,
    n_validation_pairs INTEGER,
    rule VARCHAR)""",
    # One row per adaptive attacker (engine/adaptive.py): heads fitted without privacy on the
    # released backbones; its attack rows are in relink_* under `attack_run_id`.
    """CREATE TABLE IF NOT EXISTS adaptive_runs (
    run_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    cohort VARCHAR NOT NULL,
    heads VARCHAR NOT NULL,
    heads_id VARCHAR,
    source VARCHAR NOT NULL,
    public_cohort VARCHAR,
    known_fraction DOUBLE,
    n_fit_pairs INTEGER,
    n_eval_pairs INTEGER,
    seed INTEGER,
    epochs INTEGER,
    fit_seconds DOUBLE,
    seconds DOUBLE,
    attack_run_id VARCHAR)""",
    # One row per (cohort, seed, claim) of the seed spread (engine/cli/seeds.py): the reference
    # paper's four claims measured on a copy of the demo trained with another ladder and DP seed.
    # The column `finding` holds the claim's number (1-4): it was named before the paper's
    # statements were called claims, and public columns are never renamed (see above).
    """CREATE TABLE IF NOT EXISTS seed_verdicts (
    cohort VARCHAR NOT NULL,
    seed INTEGER NOT NULL,
    finding INTEGER NOT NULL,
    title VARCHAR NOT NULL,
    verdict VARCHAR NOT NULL,
    measured VARCHAR,
    figures_json VARCHAR,
    code_version VARCHAR,
    numerics_json VARCHAR,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp)""",
    """CREATE TABLE IF NOT EXISTS utility (
    run_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    cohort VARCHAR NOT NULL,
    heads VARCHAR NOT NULL,
    label VARCHAR NOT NULL,
    auroc DOUBLE)""",
    """CREATE TABLE IF NOT EXISTS reports (
    model VARCHAR NOT NULL,
    cohort VARCHAR NOT NULL,
    format VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    written_at TIMESTAMP NOT NULL DEFAULT current_timestamp)""",
    """CREATE TABLE IF NOT EXISTS umap_points (
    run_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    cohort VARCHAR NOT NULL,
    heads VARCHAR NOT NULL,
    item_id VARCHAR NOT NULL,
    modality VARCHAR NOT NULL,
    x DOUBLE,
    y DOUBLE)""",
)

# Version 2 added these columns (to new and to migrated version-1 files alike).
ADDED_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "cohorts": (("fingerprint", "VARCHAR"),),
    # A release's own finer finding and localization sets (sorted, ";"-joined; NULL when the
    # format has none): the keys of the attack's finer matched negatives (`AttackConfig.match`).
    "items": (("findings", "VARCHAR"), ("localizations", "VARCHAR")),
    "runs": (("heads", "VARCHAR"), ("heads_cohort", "VARCHAR"),
             ("cohort_fingerprint", "VARCHAR"), ("source_fingerprint", "VARCHAR"),
             ("n_stored", "BIGINT"), ("shown_at", "TIMESTAMP"), ("torch_version", "VARCHAR"),
             ("threads", "INTEGER")),
    **{table: (("heads_cohort", "VARCHAR"), ("heads_id", "VARCHAR"))
       for table in ("relink_metrics", "relink_ranks", "relink_summary", "relink_topk",
                     "utility", "membership", "umap_points")},
    "dp_runs": (("heads_cohort", "VARCHAR"), ("heads_id", "VARCHAR"),
                ("heads_path", "VARCHAR"), ("heads_fingerprint", "VARCHAR"),
                # hyper-parameter selection (engine/dp/selection.py; NULL without selection)
                ("selection_chosen", "INTEGER"), ("selection_params", "VARCHAR"),
                ("selection_epsilon", "DOUBLE"), ("selection_delta", "DOUBLE"),
                ("selection_patient_epsilon", "DOUBLE"), ("selection_patient_delta", "DOUBLE"),
                ("n_fit_pairs", "INTEGER"), ("n_validation_pairs", "INTEGER"),
                # version 3: where training started (engine/dp/start.py) and whether the
                # epsilon covers that start (False for the model's own heads)
                ("start", "VARCHAR"), ("covers_start", "BOOLEAN")),
    "heads": (("start", "VARCHAR"),),
    "reports": (("run_id", "VARCHAR"), ("content_hash", "VARCHAR"), ("bytes", "BIGINT")),
}

# Version 2: every set of projection heads with its identity (original heads included).
HEADS_DDL = """CREATE TABLE IF NOT EXISTS heads (
    heads_id VARCHAR PRIMARY KEY,
    model VARCHAR NOT NULL,
    heads VARCHAR NOT NULL,
    heads_cohort VARCHAR,
    epsilon DOUBLE,
    fingerprint VARCHAR NOT NULL,
    path VARCHAR,
    run_id VARCHAR,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"""

# Tables whose rows belong to the run named in their run_id (what `Run.is_done` counts).
RESULT_TABLES = ("relink_metrics", "relink_ranks", "relink_summary", "relink_topk", "dp_runs",
                 "utility", "membership", "umap_points", "dp_selection")

# The label under which a row's heads appear in the shown views: heads trained on another cohort
# (a transfer) read "<label>@<training cohort>", so they never share a name with the cohort's own.
_HEADS_KEY = ("CASE WHEN t.heads IS NULL THEN NULL WHEN t.heads_cohort IS NULL "
              "OR t.heads_cohort = t.cohort THEN t.heads "
              "ELSE t.heads || '@' || t.heads_cohort END AS heads_key")


# Attack runs with a finer matched-negative policy store only their ``matched:<policy>`` rows of
# relink_metrics (engine/attack/stage.py), so those rows are shown per policy, beside the rows of
# the default run rather than instead of them.
_POLICY = {"relink_metrics": ", CASE WHEN t.negatives LIKE 'matched:%' THEN t.negatives END"}


def _label_original_starts(con) -> None:
    """Version 2 -> 3: DP heads of older engines all started from the model's own heads.

    Their bare epsilon labels (``0.34``) now mean the default random start, so they are
    relabelled ``0.34+original`` everywhere they appear (engine/dp/start.py).
    """
    where = ("heads_cohort IS NOT NULL AND heads NOT IN ('original', 'backbone') "
             "AND heads NOT LIKE '%+%'")
    for table in (*RESULT_TABLES, "heads"):
        if table == "dp_runs" or table == "heads":
            con.execute(f'UPDATE "{table}" SET start = \'original\' WHERE {where}')
        con.execute(f"UPDATE \"{table}\" SET heads = heads || '+original' WHERE {where}")
    con.execute(f"UPDATE runs SET heads = heads || '+original' WHERE stage != 'dp' AND {where}")


def _shown_view(table: str) -> str:
    return (
        f"CREATE OR REPLACE VIEW shown_{table} AS SELECT * EXCLUDE (_rank) FROM ("
        f"SELECT t.*, {_HEADS_KEY}, dense_rank() OVER (PARTITION BY t.model, t.cohort, t.heads, "
        f"t.heads_cohort{_POLICY.get(table, '')} "
        "ORDER BY v.shown_at DESC NULLS LAST, v.run_id DESC) AS _rank "
        f'FROM "{table}" t JOIN valid_runs v ON v.run_id = t.run_id) WHERE _rank = 1'
    )


def _shown_with_metrics(table: str) -> str:
    """An attack run writes its metrics, ranks, summary and top-k rows under one run id: the
    large tables follow the small metrics table's choice (a window over millions of rank rows
    would make every dashboard read slow)."""
    same = " AND ".join(f"s.{c} IS NOT DISTINCT FROM t.{c}" for c in
                        ("run_id", "model", "cohort", "heads", "heads_cohort"))
    return (
        f"CREATE OR REPLACE VIEW shown_{table} AS SELECT t.*, {_HEADS_KEY} "
        f'FROM "{table}" t SEMI JOIN (SELECT DISTINCT run_id, model, cohort, heads, heads_cohort '
        f"FROM shown_relink_metrics) s ON {same}"
    )


_FOLLOW_METRICS = ("relink_ranks", "relink_summary", "relink_topk")

# The one definition of "what is shown" (docs/storage.md). A run is valid when it finished and
# the content it was computed from (its cohort, and the cohort its heads were trained on) is
# still the registered content. For each (model, cohort, heads, heads_cohort) a shown_* view
# holds the rows of the valid run shown last (`shown_at`: finished, or reused).
VIEWS: tuple[str, ...] = (
    """CREATE OR REPLACE VIEW valid_runs AS SELECT r.* FROM runs r
    LEFT JOIN cohorts c ON c.cohort = r.cohort
    LEFT JOIN cohorts s ON s.cohort = r.heads_cohort
    WHERE r.status = 'done'
      AND (r.cohort_fingerprint IS NULL OR r.cohort_fingerprint IS NOT DISTINCT FROM c.fingerprint)
      AND (r.source_fingerprint IS NULL
           OR r.source_fingerprint IS NOT DISTINCT FROM s.fingerprint)""",
    """CREATE OR REPLACE VIEW shown_runs AS SELECT * EXCLUDE (_rank) FROM (
    SELECT v.*, row_number() OVER (PARTITION BY v.stage, v.model, v.cohort, v.heads,
        v.heads_cohort, json_extract_string(v.config_json, '$.match')
        ORDER BY v.shown_at DESC NULLS LAST, v.run_id DESC) AS _rank
    FROM valid_runs v) WHERE _rank = 1""",
    *(_shown_view(t) for t in RESULT_TABLES if t not in _FOLLOW_METRICS),
    *(_shown_with_metrics(t) for t in _FOLLOW_METRICS),
)


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create missing tables, migrate a version-1 file to this version, (re)create the views.

    Migration from version 1 only adds columns and tables: nothing is dropped or rewritten.
    Version-1 runs get ``shown_at = finished_at`` and no ``n_stored``, so they stay shown but
    are recomputed when asked for again (their rows cannot be verified).

    Raises:
        StoreError: the file was written by a newer engine.
    """
    for ddl in (*SCHEMA_DDL, HEADS_DDL):
        con.execute(ddl)
    stored = con.execute("SELECT max(version) FROM schema_version").fetchall()[0][0]
    if stored is not None and stored > SCHEMA_VERSION:
        raise StoreError(
            f"database schema version {stored} is newer than this engine's {SCHEMA_VERSION}; "
            "upgrade the engine or point --db at another file"
        )
    # The added columns and the views are (re)applied only when they changed: a digest of their
    # definitions is kept in `schema_views` (applying them costs about 0.2 s per open).
    digest = hashlib.sha256(repr((ADDED_COLUMNS, VIEWS)).encode()).hexdigest()[:16]
    con.execute("CREATE TABLE IF NOT EXISTS schema_views (digest VARCHAR NOT NULL)")
    if stored == SCHEMA_VERSION and con.execute(
            "SELECT count(*) FROM schema_views WHERE digest = ?", [digest]).fetchall()[0][0]:
        return
    for table, columns in ADDED_COLUMNS.items():
        for name, kind in columns:
            con.execute(f'ALTER TABLE "{table}" ADD COLUMN IF NOT EXISTS "{name}" {kind}')
    if stored is not None:
        log.info("migrating results database from schema version %s to %s", stored,
                 SCHEMA_VERSION)
        con.execute("UPDATE runs SET shown_at = coalesce(finished_at, started_at) "
                    "WHERE shown_at IS NULL")
    if stored is not None and stored < 3:
        _label_original_starts(con)
    for ddl in VIEWS:
        con.execute(ddl)
    if stored != SCHEMA_VERSION:
        con.execute("INSERT INTO schema_version (version) VALUES (?)", [SCHEMA_VERSION])
    con.execute("DELETE FROM schema_views")
    con.execute("INSERT INTO schema_views VALUES (?)", [digest])


@contextlib.contextmanager
def connect_write(db: Path, *, retry_seconds: float = 10.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the store for writing, creating it and its schema if needed.

    Hold the connection only while writing one stage's results. Dashboard reads hold the file
    for milliseconds at a time, so a lock held by a reader is waited out for `retry_seconds`.
    """
    db = Path(db)
    db.parent.mkdir(parents=True, exist_ok=True)
    con = _connect_retrying(db, read_only=False, retry_seconds=retry_seconds)
    try:
        ensure_schema(con)
        yield con
    finally:
        con.close()


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """Run a block in one transaction: readers see all of it or none of it."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def connect_read(db: Path, *, retry_seconds: float = 3.0) -> duckdb.DuckDBPyConnection:
    """Open the store read-only, retrying while a writer holds the file lock.

    Raises:
        StoreError: the file does not exist, or the lock was still held after `retry_seconds`.
    """
    db = Path(db)
    if not db.exists():
        raise StoreError(f"{db}: no results database yet (run `python -m engine demo`)")
    return _connect_retrying(db, read_only=True, retry_seconds=retry_seconds)


def table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """True when the open database has a table or view called `name`."""
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                            [name]).fetchone()[0])


def read_df(db: Path, sql: str, params: list | tuple = ()) -> pd.DataFrame:
    """Run one read-only query with bound parameters and return its fully fetched result."""
    con = connect_read(db)
    try:
        return con.execute(sql, list(params)).df()
    finally:
        con.close()


def _connect_retrying(db: Path, *, read_only: bool,
                      retry_seconds: float) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + retry_seconds
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(db), read_only=read_only)
        except duckdb.IOException as exc:
            if "not a valid duckdb database" in str(exc).lower():
                # Not a lock: waiting would not help, so say what the file is.
                raise StoreError(f"not a DuckDB database: {db} (point --db at a results file "
                                 "written by the engine, or at a new path)") from exc
            if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                what = "results are being updated" if read_only else "cannot open for writing"
                raise StoreError(f"{db}: {what} ({_first_line(exc)})") from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def replace_rows(
    con: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame, **keys: object
) -> int:
    """Delete the rows of `table` matching `keys`, then insert `frame` (its columns by name).

    Stages key their result rows by ``run_id``, so a run replaces its own rows only and other
    configurations' rows stay. Call it inside `transaction` so that readers see the old
    rows or the new ones, never a mix.

    Returns:
        The number of rows inserted.
    """
    known = {name for (name,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if table not in known:
        raise StoreError(f"unknown table {table!r}")
    where = " AND ".join(f'"{k}" = ?' for k in keys) or "TRUE"
    con.execute(f'DELETE FROM "{table}" WHERE {where}', list(keys.values()))
    if len(frame):
        con.register("_incoming", frame)
        try:
            cols = ", ".join(f'"{c}"' for c in frame.columns)
            con.execute(f'INSERT INTO "{table}" ({cols}) SELECT {cols} FROM _incoming')
        except duckdb.Error as exc:
            raise StoreError(f"cannot store {len(frame)} rows in table {table!r} "
                             f"({_first_line(exc)})") from exc
        finally:
            # After a failed insert the transaction is aborted and unregister fails too; that
            # second error must not replace the first.
            with contextlib.suppress(duckdb.Error):
                con.unregister("_incoming")
    return len(frame)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
