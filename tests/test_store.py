"""The DuckDB store: public schema, idempotent writes, and the reader's lock handling."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from engine import store
from engine.core.labels import CHEXPERT_LABELS
from engine.errors import StoreError

PUBLIC_COLUMNS = {
    "cohorts": ["cohort", "format", "root", "site", "n_patients", "n_studies", "n_images",
                "created_at"],
    "items": ["cohort", "image_id", "study_id", "patient_id", "split", "view", "image_path",
              "report_text", *CHEXPERT_LABELS],
    "models": ["model", "spec", "specialization", "description"],
    "relink_metrics": ["run_id", "model", "cohort", "split", "direction", "negatives", "heads",
                       "pool_size", "k", "recall", "chance", "lift", "ci_low", "ci_high",
                       "n_queries", "n_excluded"],
    "relink_ranks": ["run_id", "model", "cohort", "split", "direction", "heads", "query_id",
                     "true_id", "n_candidates", "n_greater", "n_tied", "n_matched",
                     "n_matched_greater", "n_matched_tied"],
    "dp_runs": ["run_id", "model", "cohort", "epsilon", "delta", "patient_epsilon",
                "patient_delta", "noise_multiplier", "max_grad_norm", "sample_rate", "steps",
                "accountant", "privacy_unit"],
    "utility": ["run_id", "model", "cohort", "heads", "label", "auroc"],
    "umap_points": ["run_id", "model", "cohort", "heads", "item_id", "modality", "x", "y"],
}


def test_public_schema_has_the_documented_columns(tmp_path):
    db = tmp_path / "r.duckdb"
    with store.connect_write(db) as con:
        for table, expected in PUBLIC_COLUMNS.items():
            cols = [r[0] for r in con.execute(f'DESCRIBE "{table}"').fetchall()]
            assert cols[: len(expected)] == expected, table
        assert con.execute("SELECT version FROM schema_version").fetchall() == [
            (store.SCHEMA_VERSION,)]


def test_reopening_keeps_one_schema_version_row(tmp_path):
    db = tmp_path / "r.duckdb"
    for _ in range(2):
        with store.connect_write(db):
            pass
    con = store.connect_read(db)
    assert con.execute("SELECT count(*) FROM schema_version").fetchall() == [(1,)]
    con.close()


def test_newer_schema_is_refused(tmp_path):
    db = tmp_path / "r.duckdb"
    with store.connect_write(db) as con:
        con.execute("INSERT INTO schema_version (version) VALUES (?)", [store.SCHEMA_VERSION + 1])
    with pytest.raises(StoreError, match="newer than this engine"):
        with store.connect_write(db):
            pass


def test_replace_rows_is_idempotent_per_key(tmp_path):
    db = tmp_path / "r.duckdb"
    rows = pd.DataFrame({"model": ["m1", "m2"], "spec": ["a", "b"], "specialization": [0, 1],
                         "description": ["x", "y"]})
    with store.connect_write(db) as con, store.transaction(con):
        store.replace_rows(con, "models", rows)
        store.replace_rows(con, "models", rows.iloc[[0]], model="m1")
        assert con.execute("SELECT model FROM models ORDER BY 1").fetchall() == [("m1",), ("m2",)]
        with pytest.raises(StoreError, match="unknown table"):
            store.replace_rows(con, "nope", rows)


def test_failed_transaction_leaves_nothing_visible(tmp_path):
    db = tmp_path / "r.duckdb"
    with store.connect_write(db) as con:
        with pytest.raises(RuntimeError):
            with store.transaction(con):
                con.execute("INSERT INTO models VALUES ('m', 's', 0, 'd')")
                raise RuntimeError("interrupted")
        assert con.execute("SELECT count(*) FROM models").fetchall() == [(0,)]


def test_reader_reports_missing_database(tmp_path):
    with pytest.raises(StoreError, match="no results database"):
        store.connect_read(tmp_path / "absent.duckdb")


def test_reader_waits_for_writer_then_reports_updating(tmp_path):
    db = tmp_path / "r.duckdb"
    with store.connect_write(db):
        pass
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import duckdb, sys, time
            con = duckdb.connect({str(db)!r})
            print("locked", flush=True)
            time.sleep(float(sys.argv[1]))
            con.close()
        """), "1.0"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreError, match="being updated"):
            store.connect_read(db, retry_seconds=0.1)
        start = time.monotonic()
        con = store.connect_read(db, retry_seconds=10)  # succeeds once the writer closes
        assert time.monotonic() - start < 10
        con.close()
    finally:
        holder.wait(timeout=20)


def test_writer_waits_out_a_reader(tmp_path):
    db = tmp_path / "r.duckdb"
    with store.connect_write(db):
        pass
    reader = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import duckdb, time
            con = duckdb.connect({str(db)!r}, read_only=True)
            print("reading", flush=True)
            time.sleep(0.8)
            con.close()
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert reader.stdout.readline().strip() == "reading"
        with pytest.raises(StoreError, match="cannot open for writing"):
            with store.connect_write(db, retry_seconds=0.05):
                pass
        with store.connect_write(db, retry_seconds=10) as con:
            con.execute("INSERT INTO models VALUES ('m', 's', 0, 'd')")
    finally:
        reader.wait(timeout=20)


def _run(con, run_id, *, shown_at, status="done", cohort="c", fingerprint=None, heads=None,
         heads_cohort=None, source_fingerprint=None):
    con.execute(
        "INSERT INTO runs (run_id, stage, model, cohort, config_json, config_hash, code_version, "
        "status, shown_at, cohort_fingerprint, heads, heads_cohort, source_fingerprint) "
        "VALUES (?, 'attack', 'm', ?, '{}', 'h', 'v', ?, ?, ?, ?, ?, ?)",
        [run_id, cohort, status, pd.Timestamp(shown_at), fingerprint, heads, heads_cohort,
         source_fingerprint])


def _metric(con, run_id, *, cohort="c", heads="original", heads_cohort=None, lift=1.0):
    con.execute("INSERT INTO relink_metrics (run_id, model, cohort, split, direction, negatives, "
                "heads, pool_size, k, lift, heads_cohort) VALUES (?, 'm', ?, 'test', "
                "'image_to_report', 'random', ?, 10, 1, ?, ?)",
                [run_id, cohort, heads, lift, heads_cohort])
    con.execute("INSERT INTO relink_ranks (run_id, model, cohort, split, direction, heads, "
                "query_id, true_id, n_candidates, n_greater, n_tied, heads_cohort) VALUES "
                "(?, 'm', ?, 'test', 'image_to_report', ?, 'q', 't', 9, 0, 0, ?)",
                [run_id, cohort, heads, heads_cohort])


def test_shown_views_pick_the_latest_valid_run_per_heads(tmp_path):
    db = tmp_path / "r.duckdb"
    with store.connect_write(db) as con:
        con.execute("INSERT INTO cohorts (cohort, format, root, fingerprint) VALUES "
                    "('c', 'csv', '/x', 'F2'), ('src', 'csv', '/y', 'S1')")
        _run(con, "old", shown_at="2026-01-01", fingerprint="F2")
        _run(con, "new", shown_at="2026-01-02", fingerprint="F2")
        _run(con, "stale", shown_at="2026-01-05", status="stale", fingerprint="F2")
        _run(con, "other-content", shown_at="2026-01-06", fingerprint="F1")
        _run(con, "legacy", shown_at="2025-12-31", heads="inf")  # no fingerprint (version 1)
        _run(con, "moved-source", shown_at="2026-01-07", fingerprint="F2", heads="1",
             heads_cohort="src", source_fingerprint="S0")
        _run(con, "transfer", shown_at="2026-01-03", fingerprint="F2", heads="1",
             heads_cohort="src", source_fingerprint="S1")
        _run(con, "own", shown_at="2026-01-03", fingerprint="F2", heads="1", heads_cohort="c")
        for run_id, lift in (("old", 1.0), ("new", 2.0), ("stale", 3.0), ("other-content", 4.0)):
            _metric(con, run_id, lift=lift)
        _metric(con, "legacy", heads="inf", lift=5.0)
        _metric(con, "moved-source", heads="1", heads_cohort="src", lift=6.0)
        _metric(con, "transfer", heads="1", heads_cohort="src", lift=7.0)
        _metric(con, "own", heads="1", heads_cohort="c", lift=8.0)
    shown = store.read_df(db, "SELECT heads_key, run_id, lift FROM shown_relink_metrics "
                              "ORDER BY heads_key")
    assert shown.values.tolist() == [["1", "own", 8.0], ["1@src", "transfer", 7.0],
                                     ["inf", "legacy", 5.0], ["original", "new", 2.0]]
    ranks = store.read_df(db, "SELECT heads_key, run_id FROM shown_relink_ranks ORDER BY 1")
    assert ranks.values.tolist() == [["1", "own"], ["1@src", "transfer"], ["inf", "legacy"],
                                     ["original", "new"]]
    with store.connect_write(db) as con:  # a reuse moves shown_at: the old run is shown again
        con.execute("UPDATE runs SET shown_at = TIMESTAMP '2026-02-01' WHERE run_id = 'old'")
    assert store.read_df(db, "SELECT run_id FROM shown_relink_metrics WHERE heads = 'original'"
                         )["run_id"].tolist() == ["old"]
    runs = set(store.read_df(db, "SELECT run_id FROM shown_runs")["run_id"])
    assert runs == {"old", "legacy", "transfer", "own"}
