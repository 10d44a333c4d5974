"""The dashboard's only door to storage: read-only DuckDB queries with bound parameters.

Never imports torch, open_clip, opacus, faiss or umap. Every query runs on a fresh read-only
connection that is closed at once, so the engine (the only writer) is blocked only for the
instant of a read, and a read that meets the writer's lock is retried briefly and then reported
as `ResultsUpdating` instead of a traceback.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd



def default_db() -> Path:
    """The results database: ``$RELINK_DB``, else ``cache/relink.duckdb``."""
    return Path(os.environ.get("RELINK_DB", "cache/relink.duckdb"))


class ResultsUpdating(Exception):
    """The engine is writing; try again in a moment."""


@dataclass(frozen=True)
class DbState:
    """Whether results exist, and a token that changes whenever the file does (cache key)."""

    path: str
    exists: bool
    mtime_ns: int


def db_state(path: str | Path | None = None) -> DbState:
    p = Path(path) if path is not None else default_db()
    try:
        return DbState(str(p), True, p.stat().st_mtime_ns)
    except FileNotFoundError:
        return DbState(str(p), False, 0)


def query(path: str | Path, sql: str, params: list | None = None, *, retry_s: float = 2.0) -> pd.DataFrame:
    """Run one read-only query and return its fully fetched result.

    Raises:
        ResultsUpdating: the writer held the lock for longer than `retry_s`.
    """
    deadline = time.monotonic() + retry_s
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(str(path), read_only=True)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower() and time.monotonic() < deadline:
                time.sleep(delay)
                delay = min(delay * 2, 0.4)
                continue
            if "lock" in str(exc).lower():
                raise ResultsUpdating(str(path)) from exc
            raise
        try:
            return con.execute(sql, params or []).df()
        finally:
            con.close()


def table_counts(path: str | Path) -> pd.DataFrame:
    """Row count of each public table that exists (empty frame for a new database)."""
    tables = query(path, "SELECT table_name FROM duckdb_tables() ORDER BY table_name")
    public = ("cohorts", "items", "models", "relink_metrics", "relink_ranks", "dp_runs",
              "utility", "umap_points")
    names = [t for t in tables["table_name"] if t in public]
    if not names:
        return pd.DataFrame(columns=["table", "rows"])
    union = " UNION ALL ".join(f"SELECT '{t}' AS \"table\", count(*) AS rows FROM \"{t}\"" for t in names)
    return query(path, union)


def cohorts(path: str | Path) -> pd.DataFrame:
    return query(
        path,
        "SELECT cohort, format, site, n_patients, n_studies, n_images, n_skipped, created_at "
        "FROM cohorts ORDER BY cohort",
    )
