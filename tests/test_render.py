"""Rendered cohorts: real PadChest reports (from the installed package) with synthetic images.

The tests render a few patients of a small slice of the real table (written to a temporary
folder at test time; nothing built from the release is kept) and read them back with the
PadChest adapter.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.cohort import sources
from engine.cohort.adapters import load_cohort
from engine.cohort.sidecar import read_sidecar
from engine.errors import ConfigError
from synthetic.render import RenderConfig, render_cohort
from synthetic.render.patients import make_patient
from synthetic.render.release import PADCHEST_CSV
from synthetic.render.vocabulary import (
    padchest_drawing,
    padchest_groups,
    padchest_place,
    stable_seed,
)

SLICE_ROWS = 2500


@pytest.fixture(scope="module")
def release_slice(tmp_path_factory) -> Path:
    """The first rows of the real PadChest table, as a gzipped CSV in a temporary folder."""
    src = sources.padchest_table()
    out = tmp_path_factory.mktemp("padchest-slice") / PADCHEST_CSV
    with gzip.open(src, "rt", encoding="utf-8", newline="") as fin, \
            gzip.open(out, "wt", encoding="utf-8", newline="") as fout:
        for i, line in enumerate(fin):
            if i > SLICE_ROWS:
                break
            fout.write(line)
    return out


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def rendered(release_slice, tmp_path_factory):
    out = tmp_path_factory.mktemp("rendered") / "padchest"
    config = RenderConfig("padchest", max_patients=12, seed=3, image_size=64,
                          release_path=release_slice)
    return config, out, render_cohort(config, out, workers=1)


def test_padchest_round_trip_has_no_join_losses(rendered):
    config, out, summary = rendered
    load = load_cohort("padchest", out)
    assert summary.n_patients == 12
    assert len(load.items) == summary.n_studies == summary.n_images
    assert load.n_skipped == 0
    assert load.stats["images_missing"] == 0 and load.stats["images_unreadable"] == 0
    assert load.items["patient_id"].nunique() == 12
    # 16-bit PNG with 12 bits used, at the chosen size
    first = out / load.items["image_path"].iloc[0]
    with Image.open(first) as image:
        assert image.mode.startswith("I;16") and image.size == (64, 64)
        pixels = np.asarray(image)
    assert pixels.max() <= 4095 and pixels.max() > 255
    readme = (out / "README.txt").read_text()
    assert "REAL" in readme and "SYNTHETIC" in readme and "research use only" in readme
    sidecar = read_sidecar(out)
    assert sidecar["source"] == "padchest" and sidecar["n_studies"] == summary.n_studies
    assert sum(sidecar["drawn"].values()) + sum(sidecar["undrawn"].values()) > 0
    # `cohort check` shows what the images do not show
    from engine.cohort.check import format_check_report

    report = format_check_report(load, fmt="padchest", root=out)
    assert f"{sum(sidecar['undrawn'].values())} not drawn" in report
    worst = max(sidecar["undrawn"].items(), key=lambda kv: (kv[1], kv[0]), default=None)
    if worst:
        assert f"  {worst[0]}: {worst[1]}" in report


def test_same_seed_same_bytes_and_resume(rendered, tmp_path):
    config, out, summary = rendered
    again = tmp_path / "again"
    render_cohort(config, again, workers=2)
    assert _digest(again) == _digest(out)
    # a rerun keeps every image and rewrites identical tables
    before = _digest(out)
    resumed = render_cohort(config, out, workers=1)
    assert resumed.n_written == 0 and _digest(out) == before
    # an interrupted render: a deleted image is drawn again, identically
    victim = next(p for p in out.rglob("*.png"))
    expected = victim.read_bytes()
    victim.unlink()
    assert render_cohort(config, out, workers=1).n_written == 1
    assert victim.read_bytes() == expected


def test_other_seed_other_images(rendered, tmp_path):
    config, out, _ = rendered
    other = RenderConfig("padchest", max_patients=12, seed=4, image_size=64,
                         release_path=config.release_path)
    render_cohort(other, tmp_path / "other", workers=1)
    mine = {k: v for k, v in _digest(out).items() if k.endswith(".png")}
    theirs = {k: v for k, v in _digest(tmp_path / "other").items() if k.endswith(".png")}
    assert set(mine.values()).isdisjoint(theirs.values())


def test_refuses_a_foreign_folder(tmp_path, release_slice):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        render_cohort(RenderConfig("padchest", max_patients=1, release_path=release_slice),
                      tmp_path)


def test_anatomy_is_stable_per_patient_and_differs_between_patients():
    a = make_patient("padchest", "p1", seed=0, sex="F", age=70)
    b = make_patient("padchest", "p1", seed=0, sex="F", age=70)
    c = make_patient("padchest", "p2", seed=0, sex="F", age=70)
    assert a.anatomy == b.anatomy
    assert a.anatomy != c.anatomy
    assert a.anatomy.sex == "F" and a.anatomy.breast > 0
    assert make_patient("padchest", "p1", seed=1, sex="F", age=70).anatomy != a.anatomy


def test_studies_of_one_patient_share_anatomy(rendered):
    """Two studies of one patient: same lungs; the findings decide what differs."""
    from synthetic.render.release import read_padchest

    config, out, _ = rendered
    table = read_padchest(out / PADCHEST_CSV)
    counts = table["PatientID"].value_counts()
    assert (counts > 1).any(), "the slice should hold a patient with several studies"
    pid = counts.index[0]
    patient = make_patient("padchest", pid, seed=config.seed, sex=None, age=None)
    again = make_patient("padchest", pid, seed=config.seed, sex=None, age=None)
    assert patient.seed == again.seed == stable_seed(config.seed, "padchest", pid)


def test_groups_tie_localizations_to_their_labels():
    flat = ["consolidation", " pneumonia", "loc right lower lobe", "pacemaker", "loc left"]
    assert padchest_groups(flat) == [
        ("consolidation", ("loc right lower lobe",)), ("pneumonia", ("loc right lower lobe",)),
        ("pacemaker", ("loc left",))]
    nested = [["normal"], ["pleural effusion", "loc left", "loc pleural"], []]
    assert padchest_groups(nested) == [("normal", ()), ("pleural effusion",
                                                        ("loc left", "loc pleural"))]


def test_places_from_localizations():
    assert padchest_place(("loc right upper lobe",)) == ("right", "upper")
    assert padchest_place(("loc basal bilateral",)) == ("bilateral", "base")
    assert padchest_place(("loc left", "loc costophrenic angle")) == ("left", "base")
    assert padchest_place(("loc apical",)) == ("", "apex")
    assert padchest_place(()) == ("", "")


def test_drawing_follows_the_report():
    anat = make_patient("padchest", "x", seed=0, sex="M", age=60).anatomy
    groups = [("pleural effusion", ("loc left", "loc pleural")), ("dual chamber device", ()),
              ("COPD signs", ()), ("scoliosis", ("loc column",)), ("normal", ()),
              ("nodule", ("loc right upper lobe",))]
    d = padchest_drawing(groups, "derram pleural izquierd pequen . marcapas", seed=1, anat=anat)
    kinds = {(f.kind, f.side) for f in d.findings}
    assert ("effusion", "left") in kinds and ("pacemaker", "left") in kinds
    assert ("nodule", "right") in kinds
    effusion = next(f for f in d.findings if f.kind == "effusion")
    assert effusion.severity == 1  # "pequen" (small)
    pacer = next(f for f in d.findings if f.kind == "pacemaker")
    assert pacer.detail[0] == 2  # dual chamber: two leads
    nodule = next(f for f in d.findings if f.kind == "nodule")
    assert nodule.zone == "upper" and nodule.detail[1] < anat.carina_y + 0.12
    assert d.inspiration == pytest.approx(0.95)  # COPD signs: hyperinflated
    assert d.undrawn == ["scoliosis"]
    # the same patient seed puts the nodule in the same place every time
    again = padchest_drawing(groups, "", seed=1, anat=anat)
    assert next(f for f in again.findings if f.kind == "nodule").detail[:2] == nodule.detail[:2]


def test_openi_round_trip_and_same_bytes(tmp_path):
    config = RenderConfig("iu-xray", max_patients=6, seed=0, image_size=64)
    out = tmp_path / "openi"
    summary = render_cohort(config, out, workers=1)
    load = load_cohort("iu-xray", out)
    assert summary.n_studies == 6 and len(load.items) == summary.n_images
    assert load.n_skipped == 0 and load.stats["images_missing"] == 0
    assert set(load.items["view"]) <= {"PA", "AP", "LATERAL"}
    assert len(list((out / "ecgen-radiology").glob("*.xml"))) == 6
    assert "CC BY-NC-ND 4.0" in (out / "README.txt").read_text()
    again = tmp_path / "again"
    render_cohort(config, again, workers=1)
    assert _digest(again) == _digest(out)
