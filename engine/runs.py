"""Runs: every computation is a stored record (config, inputs, code version, status, timing).

A run id is a function of the stage, model, cohort, config and the identity of the inputs
(cohort content fingerprint, model weights fingerprint, heads identity, embeddings), so rerunning
the same configuration on the same inputs finds its earlier run. A run is *done* only when its
record says so, the rows it stored are all still there (``n_stored`` against a count of the
result tables) and the cohort content it was computed on is still the registered one. Reusing a
done run moves its ``shown_at`` forward, which makes its rows the ones the ``shown_*`` views
(`engine.store`) return.

Every record also keeps the environment it ran in (torch version when torch is loaded, thread
count) under ``config_json["environment"]`` and in the ``torch_version`` / ``threads`` columns;
the environment is not part of the run's identity.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
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


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``; elsewhere `platform.processor`)."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def environment() -> dict:
    """Torch version (when torch is loaded; never imported here) and thread counts."""
    torch = sys.modules.get("torch")
    env = {"python": sys.version.split()[0], "cpu": cpu_model(), "cpu_count": os.cpu_count(),
           "torch": getattr(torch, "__version__", None) if torch is not None else None}
    try:
        env["threads"] = int(torch.get_num_threads()) if torch is not None else None
    except Exception:  # noqa: BLE001 - a half-imported torch must not stop a record
        env["threads"] = None
    if env["threads"] is None:
        env["threads"] = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    from engine.distributed import world_size

    env["world_size"] = world_size()  # torchrun ranks that computed the run (1 without)
    from engine.numerics import settings

    env.update(settings())  # the instruction-set pinning and training threads
    return {k: str(v) if k == "torch" and v is not None else v for k, v in env.items()}


def run_id_for(stage: str, model: str | None, cohort: str | None, config: dict,
               inputs: dict | None = None) -> str:
    """``<stage>-<12 hex>``: a hash of what the run computes and what it computed it from."""
    payload = json.dumps({"stage": stage, "model": model, "cohort": cohort, "config": config,
                          **({"inputs": inputs} if inputs else {})},
                         sort_keys=True, default=str)
    return f"{stage}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def now() -> datetime:
    """UTC now, naive (as DuckDB TIMESTAMP columns store it)."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class Run:
    """One computation, recorded in the ``runs`` table.

    Attributes:
        stage: ``cohort``, ``embed``, ``ladder``, ``attack``, ``dp``, ``transfer``, ``umap``,
            ``report``.
        model: Model name, or None for stages without one.
        cohort: The cohort the results belong to.
        config: What is computed (the options).
        inputs: Identity of what it is computed from (fingerprints); part of the run id.
        heads: The heads label when the run is about one set of heads (an attack).
        heads_cohort: The cohort the heads were trained on (None for the original heads).
        cohort_fingerprint: Content fingerprint of `cohort` when the run started.
        source_fingerprint: Content fingerprint of `heads_cohort` when the run started.
    """

    stage: str
    model: str | None
    cohort: str | None
    config: dict
    inputs: dict = field(default_factory=dict)
    heads: str | None = None
    heads_cohort: str | None = None
    cohort_fingerprint: str | None = None
    source_fingerprint: str | None = None
    run_id: str = ""
    started: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        self.run_id = self.run_id or run_id_for(
            self.stage, self.model, self.cohort, self.config,
            {**self.inputs, "cohort_fingerprint": self.cohort_fingerprint,
             "source_fingerprint": self.source_fingerprint, "heads": self.heads,
             "heads_cohort": self.heads_cohort})

    @property
    def config_json(self) -> str:
        return json.dumps(self.config, sort_keys=True, default=str)

    def is_done(self, db: Path) -> bool:
        """True when this run finished, every row it stored is present, and its inputs are current.

        A run recorded before row counts were kept (schema version 1) counts as not done.
        """
        if not Path(db).exists():
            return False
        con = store.connect_read(db)
        try:
            rows = con.execute(
                "SELECT status, n_stored, run_id IN (SELECT run_id FROM valid_runs) "
                "FROM runs WHERE run_id = ?", [self.run_id]).fetchall()
            if not rows or rows[0][0] != "done" or rows[0][1] is None or not rows[0][2]:
                return False
            return count_rows(con, self.run_id) == int(rows[0][1])
        except (duckdb.CatalogException, duckdb.BinderException):
            return False
        finally:
            con.close()

    def mark_shown(self, db: Path) -> None:
        """Make this (done) run the one shown: a reuse is as recent as a fresh computation."""
        with store.connect_write(db) as con:
            con.execute("UPDATE runs SET shown_at = ? WHERE run_id = ?", [now(), self.run_id])

    def reuse(self, db: Path) -> bool:
        """`is_done`, and if so mark the run shown; the one check a stage makes before working."""
        if not self.is_done(db):
            return False
        self.mark_shown(db)
        return True

    def record(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        status: str,
        n_rows: int = 0,
        n_skipped: int = 0,
        message: str = "",
    ) -> None:
        """Write (or replace) this run's row; call inside the transaction that writes results.

        ``n_stored`` is counted here, from the result tables, after the stage wrote its rows.
        """
        finished = datetime.now(UTC)
        env = environment()
        config_json = json.dumps({**self.config, "environment": env}, sort_keys=True, default=str)
        stored = count_rows(con, self.run_id)
        con.execute("DELETE FROM runs WHERE run_id = ?", [self.run_id])
        con.execute(
            "INSERT INTO runs (run_id, stage, model, cohort, config_json, config_hash, "
            "code_version, status, started_at, finished_at, seconds, n_rows, n_skipped, message, "
            "heads, heads_cohort, cohort_fingerprint, source_fingerprint, n_stored, shown_at, "
            "torch_version, threads) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                self.run_id, self.stage, self.model, self.cohort, config_json,
                hashlib.sha256(self.config_json.encode()).hexdigest()[:16], code_version(),
                status, self.started.replace(tzinfo=None), finished.replace(tzinfo=None),
                (finished - self.started).total_seconds(), n_rows, n_skipped, message,
                self.heads, self.heads_cohort, self.cohort_fingerprint, self.source_fingerprint,
                stored, finished.replace(tzinfo=None) if status == "done" else None,
                env["torch"], env["threads"],
            ],
        )


def count_rows(con: duckdb.DuckDBPyConnection, run_id: str) -> int:
    """Rows of `run_id` in every result table (`store.RESULT_TABLES`)."""
    union = " UNION ALL ".join(f'SELECT count(*) AS n FROM "{t}" WHERE run_id = ?'
                               for t in store.RESULT_TABLES)
    return int(con.execute(f"SELECT sum(n) FROM ({union})",
                           [run_id] * len(store.RESULT_TABLES)).fetchall()[0][0] or 0)


def record_run(db: Path, run: Run, *, n_rows: int = 0, n_skipped: int = 0, message: str = "",
               status: str = "done") -> None:
    """Record a run that stores no result rows of its own (cohort add, ladder, report)."""
    with store.connect_write(db) as con, store.transaction(con):
        run.record(con, status=status, n_rows=n_rows, n_skipped=n_skipped, message=message)


def cohort_fingerprint(db: Path, cohort: str) -> str | None:
    """The registered content fingerprint of `cohort` (None when unknown or not recorded)."""
    if not Path(db).exists():
        return None
    con = store.connect_read(db)
    try:
        rows = con.execute("SELECT fingerprint FROM cohorts WHERE cohort = ?", [cohort]).fetchall()
    except (duckdb.CatalogException, duckdb.BinderException):
        return None
    finally:
        con.close()
    return rows[0][0] if rows else None
