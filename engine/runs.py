"""Runs: every stage's computation is a stored record (config, hash, code version, status, timing).

A run id is a function of the stage, model, cohort and config, so rerunning the same config finds
its earlier run: a ``done`` run is reused, anything else is recomputed and replaced.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from engine import __version__, store


def code_version() -> str:
    """Package version plus the git commit when run from a checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def run_id_for(stage: str, model: str | None, cohort: str | None, config: dict) -> str:
    payload = json.dumps({"stage": stage, "model": model, "cohort": cohort, "config": config},
                         sort_keys=True, default=str)
    return f"{stage}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


@dataclass
class Run:
    """One stage computation, recorded in the ``runs`` table."""

    stage: str
    model: str | None
    cohort: str | None
    config: dict
    run_id: str = ""
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def __post_init__(self) -> None:
        self.run_id = self.run_id or run_id_for(self.stage, self.model, self.cohort, self.config)

    @property
    def config_json(self) -> str:
        return json.dumps(self.config, sort_keys=True, default=str)

    def is_done(self, db: Path) -> bool:
        """True when this exact run already finished (so the stage can skip it)."""
        if not Path(db).exists():
            return False
        con = store.connect_read(db)
        try:
            rows = con.execute(
                "SELECT status FROM runs WHERE run_id = ?", [self.run_id]
            ).fetchall()
        except duckdb.CatalogException:
            return False
        finally:
            con.close()
        return bool(rows) and rows[0][0] == "done"

    def record(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        status: str,
        n_rows: int = 0,
        n_skipped: int = 0,
        message: str = "",
    ) -> None:
        """Write (or replace) this run's row; call inside the transaction that writes results."""
        finished = datetime.now(timezone.utc)
        con.execute("DELETE FROM runs WHERE run_id = ?", [self.run_id])
        con.execute(
            "INSERT INTO runs (run_id, stage, model, cohort, config_json, config_hash, "
            "code_version, status, started_at, finished_at, seconds, n_rows, n_skipped, message) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                self.run_id, self.stage, self.model, self.cohort, self.config_json,
                hashlib.sha256(self.config_json.encode()).hexdigest()[:16], code_version(),
                status, self.started.replace(tzinfo=None), finished.replace(tzinfo=None),
                (finished - self.started).total_seconds(), n_rows, n_skipped, message,
            ],
        )
