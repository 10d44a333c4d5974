"""Every figure belongs to the run that made it: the scenarios that used to mix results up.

One small audit is written by the engine itself through its CLI (two tiny csv cohorts, a tiny
open_clip model: embed, attack, dp on both cohorts, transfer, report), then each scenario is
played on a private copy of it: alternating attack configs, a transfer next to a cohort's own DP
run, a cohort re-registered with other files, a report written to a second folder and deleted,
two databases sharing one cache, a results file of schema version 1, and the dashboard's pages
on the engine-written database.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

import _tiny_clip as tiny
from engine import store
from engine.cli import main
from engine.core.labels import CHEXPERT_LABELS

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
PAGES = ("overview", "explorer", "joint_space", "privacy", "hard_negatives", "report", "runs")


def _write_csv_cohort(root: Path, *, n: int, seed: int) -> Path:
    """A tiny cohort in the `csv` format (images + cohort.csv), different content per seed."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        rel = f"img/s{seed}_{i}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((40, 40)) * 255).astype("uint8"), mode="L").save(root / rel)
        rows.append({"image_path": rel, "image_id": f"i{i:03d}", "study_id": f"s{i:03d}",
                     "patient_id": f"p{i // 2:03d}", "split": ("train", "test")[(i // 2) % 2],
                     "view": "PA",
                     "report_text": tiny.REPORTS[(i + seed) % len(tiny.REPORTS)] + f" Seed {seed}.",
                     "Pleural Effusion": float((i + seed) % 2), "No Finding": float(i % 3 == 0)})
    pd.DataFrame(rows).to_csv(root / "cohort.csv", index=False)
    return root


@pytest.fixture(scope="module")
def audit(tmp_path_factory):
    """An audit written by the engine: cohorts A (24 pairs) and B (16), tiny model, every stage."""
    base = tmp_path_factory.mktemp("identity")
    db, cache = base / "r.duckdb", base / "cache"
    _write_csv_cohort(base / "A", n=24, seed=0)
    _write_csv_cohort(base / "B", n=16, seed=1)
    folder = base / "model"
    tiny.write_local_dir(folder, tiny.native_cfg(), seed=3)
    model = f"local-dir:{folder}"
    g = ["--db", str(db), "--cache", str(cache)]
    for name in ("A", "B"):
        assert main([*g, "cohort", "add", "--name", name, "--format", "csv",
                     "--root", str(base / name)]) == 0
        assert main([*g, "embed", "--model", model, "--cohort", name]) == 0
    assert main([*g, "attack", "--model", model, "--cohort", "A", "--pool-sizes", "3"]) == 0
    assert main([*g, "attack", "--model", model, "--cohort", "B", "--pool-sizes", "3"]) == 0
    assert main([*g, "dp", "--model", model, "--cohort", "A", "--epsilons", "1"]) == 0
    assert main([*g, "dp", "--model", model, "--cohort", "B", "--epsilons", "1"]) == 0
    assert main([*g, "transfer", "--model", model, "--cohort", "B", "--source", "A"]) == 0
    assert main([*g, "report", "--model", model, "--cohort", "A", "--format", "json",
                 "--out", str(base / "reports")]) == 0
    return base, db, cache, model


@pytest.fixture()
def copy(audit, tmp_path):
    """A private copy of the audit's database (the cache is shared, as two users' would be)."""
    base, db, cache, model = audit
    target = tmp_path / "r.duckdb"
    shutil.copyfile(db, target)
    return target, cache, model, ["--db", str(target), "--cache", str(cache)]


def _q(db, sql, params=()):
    return store.read_df(db, sql, params)


def test_alternating_attack_configs_each_keep_their_rows_and_a_rerun_is_shown(copy, capsys):
    db, cache, model, g = copy
    sizes = lambda: set(_q(db, "SELECT DISTINCT pool_size FROM shown_relink_metrics WHERE "  # noqa: E731
                             "cohort = 'A' AND heads = 'original' AND split = 'test' AND "
                             "negatives = 'random'")["pool_size"])
    full = sizes() - {3}
    assert sizes() == {3, *full}
    assert main([*g, "attack", "--model", model, "--cohort", "A", "--pool-sizes", "5"]) == 0
    assert "computed" in capsys.readouterr().out
    assert sizes() == {5, *full}
    assert main([*g, "attack", "--model", model, "--cohort", "A", "--pool-sizes", "3"]) == 0
    assert "reused" in capsys.readouterr().out
    assert sizes() == {3, *full}  # the reused run is the one shown again
    runs = _q(db, "SELECT run_id, n_stored FROM runs WHERE stage = 'attack' AND cohort = 'A' "
                  "AND heads = 'original'")
    assert len(runs) == 2
    for run_id, n_stored in runs.itertuples(index=False):  # both runs' rows are all still there
        counted = sum(_q(db, f"SELECT count(*) AS n FROM {t} WHERE run_id = ?", [run_id])["n"][0]
                      for t in store.RESULT_TABLES)
        assert counted == n_stored > 0


def test_is_done_checks_the_rows_are_there(copy, capsys):
    db, cache, model, g = copy
    run_id = _q(db, "SELECT run_id FROM shown_runs WHERE stage = 'attack' AND cohort = 'A' "
                    "AND heads = 'original'")["run_id"][0]
    with store.connect_write(db) as con:
        con.execute("DELETE FROM relink_topk WHERE run_id = ? AND rank = 1", [run_id])
    assert main([*g, "attack", "--model", model, "--cohort", "A", "--pool-sizes", "3"]) == 0
    assert "computed" in capsys.readouterr().out  # rows missing: not reused
    assert _q(db, "SELECT count(*) AS n FROM relink_topk WHERE run_id = ? AND rank = 1",
              [run_id])["n"][0] > 0


def test_transfer_sits_next_to_the_cohorts_own_dp_run(audit):
    _, db, _, _ = audit
    dp = _q(db, "SELECT cohort, heads, heads_cohort, heads_id FROM shown_dp_runs ORDER BY 1, 2")
    assert list(zip(dp["cohort"], dp["heads"], dp["heads_cohort"])) == [
        ("A", "1", "A"), ("A", "inf", "A"), ("B", "1", "B"), ("B", "inf", "B")]
    assert dp["heads_id"].nunique() == 4  # B's own "1" and A's "1" are different heads
    util = _q(db, "SELECT DISTINCT heads_key FROM shown_utility WHERE cohort = 'B' "
                  "AND label = 'macro'")
    assert set(util["heads_key"]) == {"backbone", "original", "1", "inf", "1@A", "inf@A"}
    # B's own dp run still has every row it stored, and is still shown
    own = _q(db, "SELECT run_id, n_stored FROM runs WHERE stage = 'dp' AND cohort = 'B'")
    assert _q(db, "SELECT count(*) AS n FROM utility WHERE run_id = ?", [own["run_id"][0]])["n"][
        0] > 0
    assert own["run_id"][0] in set(_q(db, "SELECT run_id FROM shown_runs")["run_id"])
    heads = _q(db, "SELECT DISTINCT heads_key FROM shown_relink_metrics WHERE cohort = 'B'")
    assert set(heads["heads_key"]) == {"original", "1", "inf", "1@A", "inf@A"}
    # the heads table knows every set, original heads included
    table = _q(db, "SELECT heads, heads_cohort FROM heads ORDER BY 1, 2")
    assert ("original", None) in {(h, None if pd.isna(c) else c) for h, c in
                                  table.itertuples(index=False)}
    assert {("1", "A"), ("1", "B")} <= set(table.itertuples(index=False, name=None))


def test_report_transfer_reads_the_heads_cohort(audit):
    base, db, _, _ = audit
    doc = json.loads((base / "reports").glob("*.json").__next__().read_text())
    assert doc["transfer"]["available"]
    assert {r["cohort"] for r in doc["transfer"]["rows"]} == {"B"}
    assert [r["heads"] for r in doc["transfer"]["rows"]] == ["original", "inf", "1"]


def test_re_registering_a_cohort_with_other_files_invalidates_its_results(copy, tmp_path, capsys):
    db, cache, model, g = copy
    other = _write_csv_cohort(tmp_path / "other", n=20, seed=7)
    assert main([*g, "cohort", "add", "--name", "A", "--format", "csv", "--root", str(other)]) == 0
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "other content" in notes[0] and "no longer shown" in notes[0]
    for view in ("shown_relink_metrics", "shown_dp_runs", "shown_utility"):
        assert _q(db, f"SELECT count(*) AS n FROM {view} WHERE cohort = 'A'")["n"][0] == 0
    # heads trained on the old A are no longer shown on B either
    assert _q(db, "SELECT count(*) AS n FROM shown_relink_metrics WHERE cohort = 'B' "
                  "AND heads_cohort = 'A'")["n"][0] == 0
    assert set(_q(db, "SELECT DISTINCT status FROM runs WHERE cohort = 'A' AND stage <> "
                      "'cohort'")["status"]) == {"stale"}
    # the old embedding is not used for the new content
    assert main([*g, "attack", "--model", model, "--cohort", "A"]) != 0
    assert "no embedding of the current content" in capsys.readouterr().err
    assert main([*g, "embed", "--model", model, "--cohort", "A"]) == 0
    assert main([*g, "attack", "--model", model, "--cohort", "A", "--pool-sizes", "3"]) == 0
    assert "computed" in capsys.readouterr().out
    n = _q(db, "SELECT max(pool_size) AS n FROM shown_relink_metrics WHERE cohort = 'A' "
               "AND split = 'test'")["n"][0]
    assert n == 10  # the new content's held-out set, not the old one's


def test_a_report_written_elsewhere_and_deleted_leaves_the_default_one(copy, tmp_path):
    db, cache, model, g = copy
    from dashboard import data

    default = _q(db, "SELECT path FROM reports WHERE cohort = 'A'")["path"][0]
    assert main([*g, "report", "--model", model, "--cohort", "A", "--format", "json",
                 "--out", str(tmp_path / "second")]) == 0
    listed = _q(db, "SELECT path, content_hash, run_id FROM reports WHERE cohort = 'A'")
    assert len(listed) == 2 and listed["content_hash"].notna().all()
    state = data.db_state(db)
    newest = data.reports(state.path, state.token, "A", _model_name(db))
    assert Path(newest["path"][0]).parent == tmp_path / "second"
    for f in (tmp_path / "second").iterdir():
        f.unlink()
    shown = data.reports(state.path, state.token, "A", _model_name(db))
    assert list(shown["path"]) == [default] and Path(default).is_file()
    stages = set(_q(db, "SELECT stage FROM runs")["stage"])
    assert {"cohort", "embed", "attack", "dp", "transfer", "report"} <= stages


def _model_name(db) -> str:
    return _q(db, "SELECT DISTINCT model FROM relink_metrics")["model"][0]


def test_two_databases_sharing_one_cache_use_their_own_features(audit, tmp_path):
    base, db, cache, model = audit
    from engine import audit as audit_mod

    db2 = tmp_path / "other.duckdb"
    g2 = ["--db", str(db2), "--cache", str(cache)]
    other = _write_csv_cohort(tmp_path / "A2", n=24, seed=11)
    assert main([*g2, "cohort", "add", "--name", "A", "--format", "csv", "--root",
                 str(other)]) == 0
    assert main([*g2, "embed", "--model", model, "--cohort", "A"]) == 0
    mine = audit_mod.load_inputs(db, cache, model, "A")
    theirs = audit_mod.load_inputs(db2, cache, model, "A")
    assert mine.embeddings.folder != theirs.embeddings.folder
    assert not np.allclose(mine.embeddings.text_features, theirs.embeddings.text_features)
    # and the first database's stored results are still its own, reused
    from engine.attack.stage import AttackConfig

    _, reused = audit_mod.attack(db, mine, config=AttackConfig(pool_sizes=(3,)))
    assert reused


def test_every_run_records_torch_version_and_threads(audit):
    _, db, _, _ = audit
    runs = _q(db, "SELECT stage, torch_version, threads, config_json FROM runs")
    assert runs["threads"].notna().all() and (runs["threads"] >= 1).all()
    torch_stages = runs[runs["stage"].isin(["embed", "dp"])]
    assert torch_stages["torch_version"].str.startswith("2.").all()
    for text in runs["config_json"]:
        env = json.loads(text)["environment"]
        assert env["threads"] >= 1 and "torch" in env


# ------------------------------------------------------------------------------ migration

# The schema as version 1 wrote it (engine/store.py before run identities), verbatim.
_V1_LABELS = ",\n    ".join(f'"{name}" DOUBLE' for name in CHEXPERT_LABELS)
V1_DDL = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL, "
    "applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)",
    "CREATE TABLE cohorts (cohort VARCHAR PRIMARY KEY, format VARCHAR NOT NULL, root VARCHAR NOT "
    "NULL, site VARCHAR, n_patients INTEGER, n_studies INTEGER, n_images INTEGER, created_at "
    "TIMESTAMP NOT NULL DEFAULT current_timestamp, section VARCHAR, n_skipped INTEGER, "
    "problems_json VARCHAR)",
    f"CREATE TABLE items (cohort VARCHAR NOT NULL, image_id VARCHAR NOT NULL, study_id VARCHAR "
    f"NOT NULL, patient_id VARCHAR NOT NULL, split VARCHAR NOT NULL, view VARCHAR, image_path "
    f"VARCHAR NOT NULL, report_text VARCHAR NOT NULL, {_V1_LABELS}, selected BOOLEAN NOT NULL "
    f"DEFAULT TRUE, PRIMARY KEY (cohort, image_id))",
    "CREATE TABLE models (model VARCHAR PRIMARY KEY, spec VARCHAR NOT NULL, specialization "
    "INTEGER, description VARCHAR)",
    "CREATE TABLE runs (run_id VARCHAR PRIMARY KEY, stage VARCHAR NOT NULL, model VARCHAR, "
    "cohort VARCHAR, config_json VARCHAR NOT NULL, config_hash VARCHAR NOT NULL, code_version "
    "VARCHAR NOT NULL, status VARCHAR NOT NULL, started_at TIMESTAMP, finished_at TIMESTAMP, "
    "seconds DOUBLE, n_rows INTEGER, n_skipped INTEGER, message VARCHAR)",
    "CREATE TABLE relink_metrics (run_id VARCHAR NOT NULL, model VARCHAR NOT NULL, cohort "
    "VARCHAR NOT NULL, split VARCHAR NOT NULL, direction VARCHAR NOT NULL, negatives VARCHAR NOT "
    "NULL, heads VARCHAR NOT NULL, pool_size INTEGER NOT NULL, k INTEGER NOT NULL, recall "
    "DOUBLE, chance DOUBLE, lift DOUBLE, ci_low DOUBLE, ci_high DOUBLE, n_queries INTEGER, "
    "n_excluded INTEGER)",
    "CREATE TABLE relink_ranks (run_id VARCHAR NOT NULL, model VARCHAR NOT NULL, cohort VARCHAR "
    "NOT NULL, split VARCHAR NOT NULL, direction VARCHAR NOT NULL, heads VARCHAR NOT NULL, "
    "query_id VARCHAR NOT NULL, true_id VARCHAR NOT NULL, n_candidates INTEGER NOT NULL, "
    "n_greater INTEGER NOT NULL, n_tied INTEGER NOT NULL, n_matched INTEGER, n_matched_greater "
    "INTEGER, n_matched_tied INTEGER, top1_same_patient DOUBLE)",
    "CREATE TABLE relink_summary (run_id VARCHAR NOT NULL, model VARCHAR NOT NULL, cohort "
    "VARCHAR NOT NULL, split VARCHAR NOT NULL, direction VARCHAR NOT NULL, heads VARCHAR NOT "
    "NULL, metric VARCHAR NOT NULL, value DOUBLE, ci_low DOUBLE, ci_high DOUBLE, n_queries "
    "INTEGER)",
    "CREATE TABLE relink_topk (run_id VARCHAR NOT NULL, model VARCHAR NOT NULL, cohort VARCHAR "
    "NOT NULL, split VARCHAR NOT NULL, direction VARCHAR NOT NULL, heads VARCHAR NOT NULL, "
    "query_id VARCHAR NOT NULL, rank INTEGER NOT NULL, candidate_id VARCHAR NOT NULL, score "
    "DOUBLE NOT NULL, is_true BOOLEAN NOT NULL, is_matched BOOLEAN NOT NULL)",
    "CREATE TABLE dp_runs (run_id VARCHAR NOT NULL, model VARCHAR NOT NULL, cohort VARCHAR NOT "
    "NULL, epsilon DOUBLE, delta DOUBLE, patient_epsilon DOUBLE, patient_delta DOUBLE, "
    "noise_multiplier DOUBLE, max_grad_norm DOUBLE, sample_rate DOUBLE, steps INTEGER, "
    "accountant VARCHAR, privacy_unit VARCHAR, heads VARCHAR, target_epsilon DOUBLE, "
    "grad_sample_mode VARCHAR, n_units INTEGER, n_pairs_dropped INTEGER, final_loss DOUBLE, "
    "seconds DOUBLE)",
    "CREATE TABLE membership (run_id VARCHAR NOT NULL, model VARCHAR NOT NULL, cohort VARCHAR "
    "NOT NULL, heads VARCHAR NOT NULL, auroc DOUBLE, tpr_at_fpr DOUBLE, fpr DOUBLE, n_members "
    "INTEGER, n_nonmembers INTEGER)",
    "CREATE TABLE utility (run_id VARCHAR NOT NULL, model VARCHAR NOT NULL, cohort VARCHAR NOT "
    "NULL, heads VARCHAR NOT NULL, label VARCHAR NOT NULL, auroc DOUBLE)",
    "CREATE TABLE reports (model VARCHAR NOT NULL, cohort VARCHAR NOT NULL, format VARCHAR NOT "
    "NULL, path VARCHAR NOT NULL, written_at TIMESTAMP NOT NULL DEFAULT current_timestamp)",
    "CREATE TABLE umap_points (run_id VARCHAR NOT NULL, model VARCHAR NOT NULL, cohort VARCHAR "
    "NOT NULL, heads VARCHAR NOT NULL, item_id VARCHAR NOT NULL, modality VARCHAR NOT NULL, x "
    "DOUBLE, y DOUBLE)",
)


def _v1_database(path: Path) -> Path:
    con = duckdb.connect(str(path))
    for ddl in V1_DDL:
        con.execute(ddl)
    con.execute("INSERT INTO schema_version (version) VALUES (1)")
    con.execute("INSERT INTO cohorts (cohort, format, root) VALUES ('c', 'csv', '/nowhere')")
    con.execute("INSERT INTO runs VALUES ('attack-old', 'attack', 'm', 'c', '{}', 'h', '0.1', "
                "'done', TIMESTAMP '2026-01-01', TIMESTAMP '2026-01-01 00:01', 60, 1, 0, '')")
    con.execute("INSERT INTO relink_metrics VALUES ('attack-old', 'm', 'c', 'test', "
                "'image_to_report', 'random', 'original', 10, 1, 0.5, 0.1, 5.0, 0.4, 0.6, 20, 0)")
    con.close()
    return path


def test_a_version_1_database_is_migrated_on_open(tmp_path):
    db = _v1_database(tmp_path / "v1.duckdb")
    with store.connect_write(db) as con:
        assert con.execute("SELECT max(version) FROM schema_version").fetchall() == [
            (store.SCHEMA_VERSION,)]
        cols = {r[0] for r in con.execute("DESCRIBE runs").fetchall()}
        assert {"shown_at", "n_stored", "cohort_fingerprint", "torch_version"} <= cols
    shown = _q(db, "SELECT run_id, lift, heads_key FROM shown_relink_metrics")
    assert shown.to_dict("records") == [{"run_id": "attack-old", "lift": 5.0,
                                         "heads_key": "original"}]
    from engine.runs import Run

    old = Run("attack", "m", "c", {}, run_id="attack-old")
    assert not old.is_done(db)  # its rows cannot be verified: recomputed when asked for
    with store.connect_write(db):  # reopening does not migrate twice
        pass
    assert _q(db, "SELECT count(*) AS n FROM schema_version")["n"][0] == 2


def test_a_version_1_database_is_migrated_by_the_report_command(tmp_path, capsys):
    db = _v1_database(tmp_path / "v1.duckdb")
    code = main(["--db", str(db), "report", "--model", "m", "--cohort", "c", "--format", "json",
                 "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    assert _q(db, "SELECT max(version) AS v FROM schema_version")["v"][0] == store.SCHEMA_VERSION


# ------------------------------------------------------------------------------ dashboard


@pytest.mark.parametrize("page", PAGES)
def test_dashboard_pages_on_the_engine_written_database(audit, page, monkeypatch):
    from streamlit.testing.v1 import AppTest

    _, db, _, _ = audit
    monkeypatch.setenv("RELINK_DB", str(db))
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.selectbox(key="cohort").set_value("B").run()
    at = at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    if page == "overview":
        assert at.metric, "the headline metric is shown"
    if page == "privacy":
        assert at.dataframe, "the DP grid of B's own heads is shown"


def test_the_readmes_sql_examples_run_on_an_engine_written_database(audit):
    _, db, _, _ = audit
    readme = (Path(__file__).resolve().parent.parent / "docs" / "storage.md").read_text(
        encoding="utf-8")
    section = readme[readme.index("## Results database"):]
    blocks = [b.split("```", 1)[0] for b in section.split("```sql\n")[1:]]
    assert len(blocks) >= 3
    model = _model_name(db)
    for sql in blocks:
        sql = sql.replace("'site-a'", "'A'").replace("'phantom-r3'", f"'{model}'")
        sql = sql.replace("pool_size = 100", "pool_size = 3")
        assert len(_q(db, sql)), sql


def test_transferred_heads_keys_read_as_such():
    from engine.core.names import heads_epsilon, heads_name, sort_heads, split_heads_key

    assert split_heads_key("1@site-a") == ("1", "site-a") and split_heads_key("inf") == ("inf",
                                                                                        None)
    assert heads_name("1@site-a") == f"{heads_name('1')}, trained on site-a"
    assert heads_epsilon("inf@site-a") == float("inf")
    assert sort_heads(["1@A", "original", "1", "inf"]) == ["original", "1", "1@A", "inf"]
