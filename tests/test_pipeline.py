"""The audit end to end through the CLI: phantom cohorts, a tiny model, every stage."""

from __future__ import annotations

import pytest

import _tiny_clip as tiny
from engine import store
from engine.cli import main
from engine.config import SynthConfig
from synthetic.cohort import generate_cohort


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    base = tmp_path_factory.mktemp("pipeline")
    db, cache = base / "r.duckdb", base / "cache"
    generate_cohort(SynthConfig(site="A", patients=40, seed=1), base / "siteA", workers=1)
    generate_cohort(SynthConfig(site="B", patients=16, seed=2), base / "siteB", workers=1)
    folder = base / "model"
    tiny.write_local_dir(folder, tiny.native_cfg(), seed=3)
    model = f"local-dir:{folder}"
    g = ["--db", str(db), "--cache", str(cache)]
    assert main([*g, "cohort", "add", "--name", "A", "--format", "mimic-cxr-jpg",
                 "--root", str(base / "siteA")]) == 0
    assert main([*g, "cohort", "add", "--name", "B", "--format", "chexpert-plus",
                 "--root", str(base / "siteB")]) == 0
    for cohort in ("A", "B"):
        assert main([*g, "embed", "--model", model, "--cohort", cohort]) == 0
    assert main([*g, "attack", "--model", model, "--cohort", "A", "--pool-sizes", "5,10"]) == 0
    assert main([*g, "attack", "--model", model, "--cohort", "B", "--external",
                 "--pool-sizes", "5,10"]) == 0
    assert main([*g, "dp", "--model", model, "--cohort", "A", "--epsilons", "1,8"]) == 0
    assert main([*g, "transfer", "--model", model, "--cohort", "B", "--source", "A"]) == 0
    return db, cache, model, g


def test_every_heads_label_is_attacked_on_both_cohorts(audited):
    db, *_ = audited
    heads = store.read_df(db, "SELECT cohort, list(DISTINCT heads ORDER BY heads) AS h "
                    "FROM relink_metrics GROUP BY cohort ORDER BY cohort")
    assert list(heads["h"][0]) == ["1", "8", "inf", "original"]
    assert list(heads["h"][1]) == ["1", "8", "inf", "original"]
    splits = store.read_df(db, "SELECT DISTINCT split FROM relink_metrics WHERE cohort = 'B'")
    assert list(splits["split"]) == ["test"]  # external: every pair held-out


def test_dp_runs_utility_and_membership_are_stored(audited):
    db, *_ = audited
    dp = store.read_df(db, "SELECT heads, epsilon, patient_epsilon, accountant, privacy_unit "
                           "FROM dp_runs ORDER BY heads")
    assert list(dp["heads"]) == ["1", "8", "inf"]
    finite = dp[dp.heads != "inf"]
    assert (finite["epsilon"] <= finite["heads"].astype(float) * 1.02).all()
    assert (finite["patient_epsilon"] == 2 * finite["epsilon"]).all()
    util = store.read_df(db, "SELECT cohort, heads FROM utility WHERE label = 'macro'")
    for cohort in ("A", "B"):
        assert {"backbone", "original", "1", "8", "inf"} <= set(util[util.cohort == cohort].heads)
    member = store.read_df(db, "SELECT heads, auroc FROM membership ORDER BY heads")
    assert set(member["heads"]) == {"original", "1", "8", "inf"}


def test_rerunning_the_attack_reuses_it(audited, capsys):
    db, cache, model, g = audited
    assert main([*g, "attack", "--model", model, "--cohort", "A", "--pool-sizes", "5,10"]) == 0
    assert "reused" in capsys.readouterr().out


@pytest.mark.slow
def test_umap_maps_every_heads(audited):
    db, cache, model, g = audited
    assert main([*g, "umap", "--model", model, "--cohort", "A"]) == 0
    maps = store.read_df(db, "SELECT DISTINCT heads FROM umap_points ORDER BY heads")
    assert list(maps["heads"]) == ["1", "8", "inf", "original"]


def test_readme_tables_come_from_the_engine_written_database(audited, tmp_path, capsys):
    db, cache, model, g = audited
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- results:begin -->\n<!-- results:end -->\n", encoding="utf-8")
    assert main([*g, "readme", "--readme", str(readme), "--cohort", "A", "--external", "B"]) == 0
    text = readme.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert any(line.startswith(f"| {model} |") for line in lines)  # the ladder table's one model
    dp = text.split("**DP on the projection heads**", 1)[1].split("**Transfer**", 1)[0]
    assert [line.split(" | ")[0][2:] for line in dp.splitlines() if line.startswith("| ")] == [
        "heads", "original", "ε=1", "ε=8", "ε=∞"]
    transfer = text.split("**Transfer**", 1)[1]
    assert "external cohort `B`" in transfer and "| ε=8 |" in transfer
    assert main([*g, "readme", "--readme", str(readme), "--cohort", "A", "--external", "B",
                 "--check"]) == 0
