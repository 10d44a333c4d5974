"""`python -m engine audit`: the printed plan, reuse, one changed epsilon, --dry-run, the gate."""

from __future__ import annotations

import json
import re

import pytest

import _tiny_clip as tiny
from engine import store
from engine.cli import main
from engine.plan import Gate

# Small everywhere: one epoch of DP, few bootstrap replicates, a short UMAP, JSON reports only.
TOML = """\
model = "{model}"
cohort = "A"
external = "B"
epsilons = [8]
formats = ["json"]

[attack]
pool_sizes = [5, 10]
n_boot = 50

[dp]
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


def tiny_cohort(db, root, name: str, *, prefix: str, n: int, external: bool = False,
                findings: bool = False):
    """`n` one-image studies of n // 2 patients, split by patient (a third held-out);
    `findings`: with a finding set per study (the matched-negative key of `matched`)."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    from engine.cohort.registry import register_cohort
    from engine.cohort.table import CohortLoad, conform

    rng = np.random.default_rng(len(prefix) + n)
    rows = []
    for i in range(n):
        patient = i // 2
        rel = f"img/{prefix}{i}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((24, 24)) * 255).astype("uint8"), mode="L").save(root / rel)
        rows.append({
            "image_id": f"{prefix}-i{i:03d}", "study_id": f"{prefix}-s{i:03d}",
            "patient_id": f"{prefix}-p{patient:03d}", "view": "PA", "image_path": rel,
            "split": "test" if external or patient % 3 == 2 else "train",
            "report_text": tiny.REPORTS[i % len(tiny.REPORTS)] + f" Study {i}.",
            "Pleural Effusion": float(i % 2), "Cardiomegaly": float(i % 3 == 0),
        })
        if findings:
            rows[-1]["findings"] = ["effusion", "cardiomegaly", "normal"][i % 3]
    register_cohort(db, name, fmt="csv", root=root, load=CohortLoad(items=conform(
        pd.DataFrame(rows))))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("plan")
    db, cache = base / "r.duckdb", base / "cache"
    tiny_cohort(db, base / "A", "A", prefix="a", n=60)
    tiny_cohort(db, base / "B", "B", prefix="b", n=24, external=True)
    tiny.write_local_dir(base / "model", tiny.native_cfg(), seed=3)
    g = ["--db", str(db), "--cache", str(cache)]
    config = base / "audit.toml"
    config.write_text(TOML.format(model=f"local-dir:{base / 'model'}"), encoding="utf-8")
    return db, cache, g, config


def plan_of(out: str) -> dict[str, str]:
    """Step name -> state, from the printed plan."""
    found = {}
    for line in out.splitlines():
        m = re.match(r"  (\S+(?: \S+| -> \S+)*?)\s{2,}(done|to do|stale|to check)\b", line)
        if m:
            found[m.group(1)] = m.group(2)
    return found


STEPS = ["embed A", "embed B", "attack A", "attack B", "dp A", "adaptive A", "transfer A -> B",
         "umap A", "umap B", "report A", "report B"]


def snapshot(db, cache) -> dict:
    files = {str(p): (p.stat().st_size, p.stat().st_mtime_ns)
             for p in [db, *cache.rglob("*")] if p.is_file()}
    return {"files": files, "dirs": sorted(str(p) for p in cache.rglob("*") if p.is_dir())}


def test_audit_runs_the_plan_then_reuses_it_then_reruns_only_dp_and_dependants(world, capsys):
    db, cache, g, config = world
    assert main([*g, "audit", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    first = plan_of(out)
    assert list(first) == STEPS
    assert set(first.values()) == {"to do"}
    heads = store.read_df(db, "SELECT DISTINCT cohort, heads FROM relink_metrics")
    assert {("A", "8"), ("A", "inf"), ("A", "original"), ("B", "8"), ("B", "original"),
            ("A", "adaptive+public-B")} <= set(map(tuple, heads.to_numpy().tolist()))
    assert len(list((cache / "reports").rglob("*__A*.json"))) == 1

    # again: every stage is found done and reused, nothing recomputed
    n_runs = store.read_df(db, "SELECT count(*) AS n FROM runs")["n"][0]
    assert main([*g, "audit", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert plan_of(out) == dict.fromkeys(STEPS, "done"), out
    assert store.read_df(db, "SELECT count(*) AS n FROM runs")["n"][0] == n_runs
    assert "report A: reused: current, not rewritten" in out

    # one epsilon changed: dp is stale (and says why), its dependants rerun, the rest reused
    before = set(store.read_df(db, "SELECT run_id FROM runs WHERE status = 'done'")["run_id"])
    assert main([*g, "audit", "--config", str(config), "--epsilons", "4"]) == 0
    out = capsys.readouterr().out
    third = plan_of(out)
    for step in ("embed A", "embed B", "attack A", "attack B", "adaptive A"):
        assert third[step] == "done", out
    assert third["dp A"] == "stale"
    assert re.search(r"dp A\s+stale\s+dp: config changed: sweep", out), out
    for step in ("transfer A -> B", "umap A", "umap B"):
        assert third[step] == "to check", out
    # report B reads transfer and umap B, which may come out the same: to check
    assert third["report A"] == "stale" and third["report B"] == "to check"
    new = store.read_df(db, "SELECT stage, cohort, heads FROM runs WHERE status = 'done'"
                            " AND NOT list_contains(?, run_id)", [sorted(before)])
    stages = set(new["stage"])
    assert "embed" not in stages and "adaptive" not in stages, new
    assert {"dp", "umap", "report"} <= stages
    attacks = new[new.stage == "attack"]
    assert set(attacks["heads"]) == {"4"}  # only the new heads are attacked (A, and B by transfer)
    assert "[audit] attack A: reused" in out and "[audit] embed A: " in out


@pytest.fixture(scope="module")
def audited(world):
    """The world audited with the file's config (reused when the first test ran it)."""
    db, cache, g, config = world
    assert main([*g, "audit", "--config", str(config)]) == 0
    return world


def test_dry_run_writes_nothing(audited, capsys, tmp_path):
    db, cache, g, config = audited
    capsys.readouterr()
    before = snapshot(db, cache)
    assert main([*g, "audit", "--config", str(config), "--epsilons", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert plan_of(out)["dp A"] == "stale" and "dry run" in out
    assert snapshot(db, cache) == before
    # no database: one line, and none is created
    missing = tmp_path / "none.duckdb"
    assert main(["--db", str(missing), "--cache", str(tmp_path / "c"), "audit", "--config",
                 str(config), "--dry-run"]) == 2
    assert "no results database" in capsys.readouterr().err
    assert not missing.exists() and not (tmp_path / "c").exists()


def measured(db) -> tuple[float, float, float]:
    row = store.read_df(db, "SELECT recall / chance AS lift, ci_low / chance AS low, "
                            "ci_high / chance AS high FROM shown_relink_metrics WHERE cohort = "
                            "'A' AND split = 'test' AND direction = 'image_to_report' AND "
                            "negatives = 'random' AND heads = 'original' AND k = 1 AND "
                            "pool_size = 10")
    assert len(row) == 1
    return tuple(float(row[c][0]) for c in ("lift", "low", "high"))


def test_gate_fails_below_the_lower_bound_and_passes_above(audited, capsys):
    db, cache, g, config = audited
    capsys.readouterr()
    lift, low, high = measured(db)
    below, above = low - 0.25, high + 0.25
    rc = main([*g, "audit", "--config", str(config), "--fail-if", f"lift@10 > {below:.3f}"])
    captured = capsys.readouterr()
    assert rc == 3
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gate failed: lift@10 ("), captured.err
    assert f"{lift:.4g}" in lines[0] and f"[{low:.4g}, {high:.4g}]" in lines[0]
    verdict = json.loads(next((cache / "reports").rglob("gate.json")).read_text())
    assert verdict["passed"] is False and verdict["metric"] == "lift@10"
    assert verdict["ci"] == pytest.approx([low, high]) and verdict["cohort"] == "A"
    assert verdict["threshold"] == pytest.approx(round(below, 3)) and verdict["commit"]

    rc = main([*g, "audit", "--config", str(config), "--fail-if", f"lift@10 > {above:.3f}"])
    captured = capsys.readouterr()
    assert rc == 0 and "gate passed: lift@10" in captured.out and not captured.err
    verdict = json.loads(next((cache / "reports").rglob("gate.json")).read_text())
    assert verdict["passed"] is True

    # a pool size that was not stored: one line naming the sizes there are
    rc = main([*g, "audit", "--config", str(config), "--fail-if", "lift@1000 > 5"])
    err = capsys.readouterr().err
    assert rc == 2 and "no pool of N=1000" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("text, want", [
    ("lift@1000 > 5", Gate("lift", 1000, 5.0)),
    ("recall@1@100 > 0.05", Gate("recall", 100, 0.05, k=1)),
    ("lift@5@full>20", Gate("lift", "full", 20.0, k=5)),
])
def test_gate_expressions(text, want):
    assert Gate.parse(text) == want


@pytest.mark.parametrize("text", ["lift > 5", "lift@x > 5", "auc@10 > 1", "lift@10 = 5"])
def test_bad_gate_is_one_line(text, capsys, tmp_path):
    db = tmp_path / "r.duckdb"
    rc = main(["--db", str(db), "audit", "--model", "m", "--cohort", "c", "--fail-if", text,
               "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "error:" in err


def test_toml_unknown_key_names_the_file(tmp_path, capsys):
    config = tmp_path / "a.toml"
    config.write_text('model = "m"\ncohort = "c"\n[dp]\nepoch = 3\n', encoding="utf-8")
    rc = main(["--db", str(tmp_path / "r.duckdb"), "audit", "--config", str(config),
               "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 2 and str(config) in err and "'epoch'" in err
