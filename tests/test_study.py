"""The study's split and a whole study run at tiny size (real PadChest reports, rendered images)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from engine import store
from engine.cohort import sources
from engine.study import COHORT, EXTERNAL, PeakMemory, StudyConfig, run_study, study_split
from synthetic.render.release import PADCHEST_CSV


def _studies(n_patients: int, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for p in range(n_patients):
        first = 20090101 + int(rng.integers(0, 9)) * 10000
        for k in range(int(rng.integers(1, 4))):
            rows.append({"patient_id": f"p{p:04d}", "study_id": f"s{p:04d}-{k}",
                         "study_date": str(first + k * 100)})
    return pd.DataFrame(rows)


def test_split_is_patient_disjoint_seeded_and_sized():
    studies = _studies(2000, np.random.default_rng(0))
    split = study_split(studies, seed=5, held_out_fraction=0.45, external_from="20160101")
    assert split["patient_id"].is_unique
    assert set(split["patient_id"]) == set(studies["patient_id"])
    first = studies.groupby("patient_id")["study_date"].min()
    external = set(split.loc[split["cohort"] == EXTERNAL, "patient_id"])
    assert external == set(first[first >= "20160101"].index)
    held = split[(split["cohort"] == COHORT) & (split["split"] == "test")]
    assert len(held) == round(0.45 * 2000)
    assert set(held["patient_id"]).isdisjoint(external)
    # seeded: the same seed gives the same split, another seed another one
    again = study_split(studies, seed=5, held_out_fraction=0.45, external_from="20160101")
    pd.testing.assert_frame_equal(split, again)
    other = study_split(studies, seed=6, held_out_fraction=0.45, external_from="20160101")
    assert not split["split"].equals(other["split"])
    # shuffling the input rows changes nothing
    shuffled = study_split(studies.sample(frac=1.0, random_state=1), seed=5,
                           held_out_fraction=0.45, external_from="20160101")
    pd.testing.assert_frame_equal(split, shuffled)


def test_peak_memory_sees_an_allocation():
    with PeakMemory(interval=0.01) as before:
        pass
    with PeakMemory(interval=0.01) as mem:
        block = np.ones(200 * 1024 * 1024 // 8)  # 200 MB
        block.sum()
    del block
    assert mem.peak_mb > before.peak_mb + 150


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    slice_dir = tmp_path_factory.mktemp("slice")
    table = slice_dir / PADCHEST_CSV
    with gzip.open(sources.padchest_table(), "rt", encoding="utf-8", newline="") as fin, \
            gzip.open(table, "wt", encoding="utf-8", newline="") as fout:
        for i, line in enumerate(fin):
            if i > 3000:
                break
            fout.write(line)
    workdir = tmp_path_factory.mktemp("study")
    config = StudyConfig(max_patients=48, seed=0, rung_epochs=(0, 1, 2, 3),
                         external_from="20160601", pool_sizes=(10,), epsilons=(1.0, float("inf")),
                         original_start_epsilons=(1.0, float("inf")),
                         validation_fraction=0.8,  # 6 training patients at this size
                         umap_points=32, report_formats=("json",), release_path=table)
    lines: list[str] = []
    result = run_study(workdir / "relink.duckdb", workdir, config, echo=lines.append)
    return workdir, config, result, lines


def test_study_runs_every_stage(tiny_study):
    workdir, config, result, lines = tiny_study
    db = workdir / "relink.duckdb"
    names = [s.name for s in result.stages]
    assert names[:3] == ["render PadChest", "register and split", "ladder"]
    assert len(result.rungs) == 4
    assert sum(n.startswith("embed ") for n in names) == 8
    assert sum(n.startswith("attack ") for n in names) == 9  # 8 + matched on findings
    assert any(n.startswith("dp grid") for n in names)
    assert any(n.startswith("dp grid") and n.endswith("original start (comparison)")
               for n in names)
    assert any(n.startswith("adaptive attack") for n in names)
    assert any(n.startswith("transfer") for n in names)
    assert sum(n.startswith("report ") for n in names) == 5
    assert all(s.seconds > 0 and s.peak_mb > 0 for s in result.stages)
    assert sum(line.startswith("[study]") and " MB)" in line for line in lines) == len(names)
    stages = json.loads((workdir / "stages.json").read_text())
    assert [s["name"] for s in stages["stages"]] == names
    con = store.connect_read(db)
    try:
        cohorts = dict(con.execute("SELECT cohort, n_studies FROM cohorts").fetchall())
        items = con.execute("SELECT cohort, patient_id, split FROM items WHERE selected").df()
        models = {r[0] for r in con.execute(
            "SELECT DISTINCT model FROM runs WHERE stage = 'attack'").fetchall()}
        n_study_runs = con.execute("SELECT count(*) FROM runs WHERE stage = 'study'").fetchall()
        finer = con.execute(
            "SELECT DISTINCT model, split FROM shown_relink_metrics "
            "WHERE negatives = 'matched:findings'").fetchall()
    finally:
        con.close()
    assert set(cohorts) == {COHORT, EXTERNAL}
    assert result.n_train + result.n_held_out == cohorts[COHORT]
    main = items[items["cohort"] == COHORT]
    assert set(main["split"]) == {"train", "test"}
    by_patient = main.groupby("patient_id")["split"].nunique()
    assert (by_patient == 1).all()  # patient-disjoint
    assert set(main["patient_id"]).isdisjoint(items.loc[items["cohort"] == EXTERNAL,
                                                        "patient_id"])
    assert models == set(result.rungs)
    assert n_study_runs[0][0] >= len(names)
    assert finer == [(result.rungs[-1], "test")]  # the strongest rung, held-out only
    assert (workdir / "reports" / f"{result.rungs[-1]}__{COHORT}.json").is_file()


def test_study_resumes(tiny_study):
    workdir, config, first, _ = tiny_study
    lines: list[str] = []
    again = run_study(workdir / "relink.duckdb", workdir, config, echo=lines.append)
    done = {s.name: s.what for s in again.stages}
    assert done["render PadChest"].startswith("reused")
    assert done["register and split"].startswith("reused")
    assert done["ladder"].startswith("reused")
    assert all(done[n] == "reused" or "(reused)" in done[n]
               for n in done if n.startswith(("embed", "attack", "umap")))
    assert again.n_held_out == first.n_held_out
    # The resumed run reports what each stage cost when it was computed, not the reuse.
    kept = {s["name"]: s for s in json.loads((workdir / "stages.json").read_text())["stages"]}
    firsts = {s.name: s for s in first.stages}
    assert kept["ladder"]["what"] == firsts["ladder"].what
    assert kept["ladder"]["peak_mb"] == pytest.approx(firsts["ladder"].peak_mb)
    con = store.connect_read(workdir / "relink.duckdb")
    try:
        messages = [json.loads(m) for (m,) in con.execute(
            "SELECT message FROM runs WHERE stage = 'study'").fetchall()]
    finally:
        con.close()
    ladder = [m for m in messages if m["what"].startswith(("reused", "trained"))
              and "held-out lift" in m["what"]]
    assert [m["what"] for m in ladder] == [firsts["ladder"].what]


def test_each_stage_is_recorded_as_it_ends_and_a_reuse_keeps_the_measurement(tmp_path):
    """A study that stops keeps every stage it measured; a later run that only finds a stage's
    outputs does not replace the figures of the run that computed it."""
    from engine.study import STAGES_FILE, _record, _Stages

    db, config, counts = tmp_path / "s.duckdb", StudyConfig(max_patients=4), {}
    stage = _Stages(lambda line: None,
                    on_record=lambda rec: _record(db, tmp_path, config, [rec], counts))
    stage("ladder", lambda: "trained on 10 pairs; held-out lift")
    with pytest.raises(RuntimeError):
        stage("embed r0 / c", lambda: (_ for _ in ()).throw(RuntimeError("killed")))
    kept = json.loads((tmp_path / STAGES_FILE).read_text())["stages"]
    assert [s["name"] for s in kept] == ["ladder"]  # recorded before the crash
    first = kept[0]
    again = _Stages(lambda line: None,
                    on_record=lambda rec: _record(db, tmp_path, config, [rec], counts))
    again("ladder", lambda: "reused; held-out lift")
    again("embed r0 / c", lambda: "10 pairs")
    kept = {s["name"]: s for s in json.loads((tmp_path / STAGES_FILE).read_text())["stages"]}
    assert kept["ladder"] == first and kept["embed r0 / c"]["what"] == "10 pairs"
    con = store.connect_read(db)
    try:
        whats = sorted(json.loads(m)["what"] for (m,) in con.execute(
            "SELECT message FROM runs WHERE stage = 'study'").fetchall())
    finally:
        con.close()
    assert whats == ["10 pairs", "trained on 10 pairs; held-out lift"]
