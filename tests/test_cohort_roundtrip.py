"""Phantom cohorts read back by the real-dataset adapters with zero join losses."""

from __future__ import annotations

import pytest

from engine.cli import main
from engine.cohort.adapters import load_cohort
from engine.cohort.registry import read_cohort
from engine.cohort.table import select_one_image_per_study
from engine.config import SynthConfig
from synthetic.cohort import generate_cohort

LOSSES = ("images_missing", "images_unreadable", "images_without_split", "images_without_report",
          "images_without_labels", "studies_without_images", "reports_missing", "reports_empty",
          "reports_non_utf8", "reports_conflicting")


@pytest.fixture(scope="module", params=[("A", "mimic-cxr-jpg"), ("B", "chexpert-plus")],
                ids=["siteA-mimic", "siteB-chexpert-plus"])
def phantom(request, tmp_path_factory):
    site, fmt = request.param
    out = tmp_path_factory.mktemp(f"site{site}")
    summary = generate_cohort(SynthConfig(site=site, patients=30, seed=5), out, workers=1)
    return site, fmt, out, summary


def test_adapter_reads_phantom_with_zero_join_losses(phantom):
    site, fmt, root, summary = phantom
    load = load_cohort(fmt, root)
    assert load.problems == []
    for key in LOSSES:
        assert load.stats.get(key, 0) == 0, key
    items = load.items
    assert len(items) == summary.n_images
    assert items["study_id"].nunique() == summary.n_studies
    assert items["patient_id"].nunique() == summary.n_patients
    assert (items["report_text"].str.len() > 0).all()
    assert set(items["split"]) <= {"train", "validate", "test"}
    assert items.groupby("patient_id")["split"].nunique().max() == 1  # patient-disjoint
    chosen = select_one_image_per_study(items)
    assert len(chosen) == summary.n_studies
    assert chosen["view"].isin(["PA", "AP"]).all()


def test_cli_registers_phantom_cohort(phantom, tmp_path, capsys):
    site, fmt, root, summary = phantom
    db = tmp_path / "r.duckdb"
    rc = main(["--db", str(db), "cohort", "add", "--name", f"site-{site}", "--format", fmt,
               "--root", str(root)])
    assert rc == 0
    assert "0 rows skipped" in capsys.readouterr().out
    meta, items = read_cohort(db, f"site-{site}")
    assert meta["n_images"] == summary.n_images
    assert len(items) == summary.n_studies  # one audited image per study
