"""The demo's and the study's plans: shipped configs, several models, the comparison start,
matched negatives; a rerun finds every step done; one changed epsilon reruns its dependants only."""

from __future__ import annotations

import argparse
import tomllib
from dataclasses import asdict
from pathlib import Path

import pytest
from test_plan import tiny_cohort

import _tiny_clip as tiny
from engine import plan as planning
from engine import store
from engine.cli import main
from engine.configs import CONFIGS, load_config
from engine.errors import ConfigError


def test_demo_and_study_configs_load_from_the_package(tmp_path):
    import engine

    for name in ("demo", "study"):
        assert (CONFIGS / f"{name}.toml").is_file()
        assert CONFIGS == Path(engine.__file__).resolve().parent / "configs"
    with open(CONFIGS.parent.parent / "pyproject.toml", "rb") as handle:
        data = tomllib.load(handle)["tool"]["setuptools"]["package-data"]["engine"]
    assert "configs/*.toml" in data  # shipped in the wheel
    demo = load_config("demo", tmp_path, model="r3", others=["r0", "r1", "r2"])
    assert (demo.cohort, demo.external) == ("site-a", "site-b")
    assert (demo.dp.group_size, demo.dp.epochs, demo.dp.lr) == (8, 20, 3e-3)
    assert demo.compare.start == "original" and demo.compare.dp.epochs == 10
    assert demo.selection is None and demo.matched is None
    assert (demo.umap.n_epochs, demo.umap.aligned_epochs) == (200, 50)
    assert demo.out == tmp_path / "reports"
    names = [s.name for s in planning.steps(tmp_path / "r.duckdb", tmp_path, demo)]
    assert names[:4] == ["embed r0 / site-a", "attack r0 / site-a", "embed r0 / site-b",
                         "attack r0 / site-b"]
    assert names[16:] == [
        "dp grid r3", "dp grid r3, original start (comparison)", "adaptive attack r3 / site-a",
        "transfer r3 -> site-b", "umap r3 / site-a", "umap r3 / site-b", "report r0 / site-a",
        "report r1 / site-a", "report r2 / site-a", "report r3 / site-a", "report r3 / site-b"]

    from engine.study import StudyConfig, study_plan

    study = load_config("study", tmp_path, model="r3")
    assert study.matched == "findings" and study.selection == 0.2
    assert study.compare.epsilons == (0.34, float("inf"))
    defaults = asdict(StudyConfig())
    assert defaults["pool_sizes"] == study.attack.pool_sizes == (10, 100, 1000, 10000)
    assert defaults["epsilons"] == study.epsilons
    assert defaults["umap_points"] == study.umap.max_points
    plan = study_plan(StudyConfig(seed=7, pool_sizes=(10,)), tmp_path, ["r0", "r3"],
                      external=False)
    assert plan.external is None and plan.start_seed == plan.adaptive_seed == 7
    assert plan.attack.pool_sizes == (10,) and plan.others == ("r0",)
    names = [s.name for s in planning.steps(tmp_path / "r.duckdb", tmp_path, plan)]
    assert "attack r3 / padchest, matched on findings" in names
    assert not any("padchest-later" in n for n in names)


def test_a_bad_plan_setting_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="matched 'labels'"):
        load_config("demo", tmp_path, model="m", matched="labels")
    with pytest.raises(ConfigError, match=r"\[compare\] start"):
        load_config("demo", tmp_path, model="m", start="original")


TOML = """\
model = "{strong}"
others = ["{weak}"]
cohort = "A"
external = "B"
epsilons = [{eps}]
matched = "findings"
formats = ["json"]

[attack]
pool_sizes = [5, 10]
n_boot = 50

[dp]
epochs = 1
group_size = 8

[compare]
start = "original"
epsilons = [8]

[compare.dp]
epochs = 1
group_size = 8

[adaptive]
known = [0.2]
epochs = 1

[umap]
n_epochs = 10
aligned_epochs = 5
max_points = 64
"""


def states_of(out: str, names: list[str]) -> dict[str, str]:
    """Step name -> state, from the printed plan (the names are known)."""
    found = {}
    for line in out.splitlines():
        for name in names:
            if line.startswith(f"  {name}  "):
                rest = line[len(name) + 2:].lstrip()
                found[name] = next(s for s in (planning.CHECK, planning.TODO, planning.STALE,
                                               planning.DONE) if rest.startswith(s))
    return found


def test_two_models_comparison_start_and_matched_negatives(tmp_path, capsys):
    db, cache = tmp_path / "r.duckdb", tmp_path / "cache"
    tiny_cohort(db, tmp_path / "A", "A", prefix="a", n=60, findings=True)
    tiny_cohort(db, tmp_path / "B", "B", prefix="b", n=24, external=True)
    weak, strong = (f"local-dir:{tmp_path / name}" for name in ("weak", "strong"))
    tiny.write_local_dir(tmp_path / "weak", tiny.native_cfg(), seed=1)
    tiny.write_local_dir(tmp_path / "strong", tiny.native_cfg(), seed=2)
    config = tmp_path / "plan.toml"
    g = ["--db", str(db), "--cache", str(cache)]

    def audit(eps: str) -> str:
        config.write_text(TOML.format(strong=strong, weak=weak, eps=eps), encoding="utf-8")
        assert main([*g, "audit", "--config", str(config)]) == 0
        return capsys.readouterr().out

    from engine.cli.plan import build_config

    config.write_text(TOML.format(strong=strong, weak=weak, eps="8"), encoding="utf-8")
    flags = dict.fromkeys(("model", "cohort", "external", "epsilons", "start", "formats", "out",
                           "fail_if", "pool_sizes", "known"))
    parsed = build_config(argparse.Namespace(config=config, db=db, cache=cache, **flags))[0]
    names = [s.name for s in planning.steps(db, cache, parsed)]
    s, w = strong, weak
    assert names == [
        f"embed {w} / A", f"attack {w} / A", f"embed {w} / B", f"attack {w} / B",
        f"embed {s} / A", f"attack {s} / A", f"embed {s} / B", f"attack {s} / B",
        f"attack {s} / A, matched on findings", f"dp grid {s}",
        f"dp grid {s}, original start (comparison)", f"adaptive attack {s} / A",
        f"transfer {s} -> B", f"umap {s} / A", f"umap {s} / B", f"report {w} / A",
        f"report {s} / A", f"report {s} / B"]

    first = states_of(audit("8"), names)
    assert first == dict.fromkeys(names, "to do")
    matched = store.read_df(db, "SELECT DISTINCT model, cohort, split FROM shown_relink_metrics "
                                "WHERE negatives = 'matched:findings'")
    assert matched[["cohort", "split"]].values.tolist() == [["A", "test"]]
    models = set(store.read_df(db, "SELECT DISTINCT model FROM runs WHERE stage = 'attack'")
                 ["model"])
    assert len(models) == 2
    heads = store.read_df(db, "SELECT DISTINCT model, heads FROM relink_metrics WHERE cohort = "
                              "'A' AND heads <> 'original'")
    assert heads["model"].nunique() == 1  # DP, adaptive: the audited model only
    assert {"8", "inf", "8+original", "inf+original"} <= set(heads["heads"]), heads
    assert matched["model"][0] == heads["model"][0]
    assert len(list((cache / "reports").rglob("*.json"))) == 3

    # again: every step done, no run added
    n_runs = store.read_df(db, "SELECT count(*) AS n FROM runs")["n"][0]
    out = audit("8")
    assert states_of(out, names) == dict.fromkeys(names, "done"), out
    assert store.read_df(db, "SELECT count(*) AS n FROM runs")["n"][0] == n_runs

    # one epsilon changed in the file: the default start's grid and what reads it rerun
    before = set(store.read_df(db, "SELECT run_id FROM runs WHERE status = 'done'")["run_id"])
    third = states_of(audit("4"), names)
    assert third.pop(f"dp grid {s}") == "stale"
    for name in (f"transfer {s} -> B", f"umap {s} / A", f"umap {s} / B", f"report {s} / B"):
        assert third.pop(name) == "to check", name
    assert third.pop(f"report {s} / A") == "stale"
    assert third == dict.fromkeys(third, "done")  # the comparison grid and the weak model too
    new = store.read_df(db, "SELECT stage, model, heads FROM runs WHERE status = 'done' AND "
                            "NOT list_contains(?, run_id)", [sorted(before)])
    assert set(new["model"]) == {heads["model"][0]}
    assert set(new[new.stage == "attack"]["heads"]) == {"4"}
    assert not {"embed", "adaptive"} & set(new["stage"])
