"""Phantom cohort generator (synthetic.cohort) and contact sheets (engine.cohort.sheet).

The layout checks read the files directly with pandas (not through the adapters) so that the
generator is tested against the real releases' formats on its own.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from engine.cohort.sheet import caption, pick_items, render_contact_sheet
from engine.cohort.table import conform
from engine.config import SynthConfig
from engine.core.labels import CHEXPERT_LABELS
from engine.errors import ConfigError
from synthetic.cohort import GENERATOR_VERSION, generate_cohort, generator
from synthetic.cohort.layouts import CHEXPERT_PLUS_COLUMNS, MIMIC_LABELS, MIMIC_METADATA_COLUMNS
from synthetic.cohort.reports import _Sentence, aggregate_labels

HEDGES = (
    "cannot be excluded",
    "not excluded",
    "possible",
    "possibly",
    "may represent",
    "may reflect",
    "concerning for",
    "likely",
    "borderline",
    "questioned",
    "congestion",
    "engorgement",
    "may be due",
)


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _generate(root: Path, **kw) -> Path:
    workers = kw.pop("workers", 1)
    generate_cohort(SynthConfig(**kw), root, workers=workers)
    return root


# --------------------------------------------------------------------------- readers for tests


def _read_a(root: Path) -> pd.DataFrame:
    meta = pd.read_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", dtype={"StudyTime": str})
    labels = pd.read_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz")
    split = pd.read_csv(root / "mimic-cxr-2.0.0-split.csv.gz")
    df = meta.merge(labels, on=["subject_id", "study_id"]).merge(
        split, on=["dicom_id", "study_id", "subject_id"]
    )
    df["image_id"] = df["dicom_id"]
    df["patient_id"] = df["subject_id"]
    df["view"] = df["ViewPosition"]
    df["image_path"] = [
        f"files/p{str(s)[:2]}/p{s}/s{t}/{d}.jpg"
        for s, t, d in zip(df.subject_id, df.study_id, df.dicom_id)
    ]
    df["report_text"] = [
        (root / f"files/p{str(s)[:2]}/p{s}/s{t}.txt").read_text()
        for s, t in zip(df.subject_id, df.study_id)
    ]
    return conform(df)


def _read_b(root: Path) -> pd.DataFrame:
    df = pd.read_csv(root / "df_chexpert_plus_240401.csv", keep_default_na=False)
    labels = pd.read_json(root / "report_fixed.json", lines=True)
    df = df.merge(labels, on="path_to_image")
    df["image_id"] = df["path_to_image"]
    df["patient_id"] = df["deid_patient_id"]
    df["study_id"] = [p.rsplit("/", 1)[0] for p in df["path_to_image"]]
    df["view"] = [v if v else "LATERAL" for v in df["ap_pa"]]
    df["image_path"] = [p[: -len(".jpg")] + ".png" for p in df["path_to_image"]]
    df["report_text"] = df["report"]
    df["split"] = df["split"].replace({"valid": "validate"})
    return conform(df)


@pytest.fixture(scope="module")
def cohort_a(tmp_path_factory) -> Path:
    # 60 patients through the process pool: every label should appear
    return _generate(
        tmp_path_factory.mktemp("a") / "site_a", site="A", patients=80, seed=0, workers=2
    )


@pytest.fixture(scope="module")
def cohort_b(tmp_path_factory) -> Path:
    return _generate(tmp_path_factory.mktemp("b") / "site_b", site="B", patients=30, seed=0)


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("site", ["A", "B"])
def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path, site):
    one = _files(_generate(tmp_path / "one", site=site, patients=5, seed=3))
    two = _files(_generate(tmp_path / "two", site=site, patients=5, seed=3))
    assert one.keys() == two.keys()
    assert all(one[k] == two[k] for k in one), [k for k in one if one[k] != two[k]]
    other = _files(_generate(tmp_path / "other", site=site, patients=5, seed=4))
    table = "mimic-cxr-2.0.0-metadata.csv.gz" if site == "A" else "df_chexpert_plus_240401.csv"
    assert other[table] != one[table]


def test_process_pool_gives_the_same_bytes_as_one_process(tmp_path, monkeypatch):
    monkeypatch.setattr(generator, "_POOL_MIN_PATIENTS", 2)
    serial = _files(_generate(tmp_path / "serial", site="A", patients=8, seed=1, workers=1))
    pooled = _files(_generate(tmp_path / "pooled", site="A", patients=8, seed=1, workers=2))
    assert serial == pooled


def test_gzip_headers_carry_no_name_or_time(cohort_a):
    for name in ("metadata", "chexpert", "split"):
        raw = (cohort_a / f"mimic-cxr-2.0.0-{name}.csv.gz").read_bytes()
        assert raw[:2] == b"\x1f\x8b"
        assert raw[3] & 0x08 == 0  # no FNAME field
        assert raw[4:8] == b"\x00\x00\x00\x00"  # mtime 0
        gzip.decompress(raw)


def test_rerun_replaces_a_phantom_cohort_but_refuses_other_folders(tmp_path):
    root = _generate(tmp_path / "c", site="B", patients=2, seed=0)
    (root / "stale.txt").write_text("old")
    _generate(root, site="B", patients=2, seed=0)
    assert not (root / "stale.txt").exists()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("do not delete")
    with pytest.raises(ConfigError, match="not empty"):
        generate_cohort(SynthConfig(site="A", patients=2), other)
    assert (other / "keep.txt").exists()


def test_progress_is_told_every_image(tmp_path):
    class Counter:
        total = 0

        def update(self, n):
            self.total += n

    bar = Counter()
    summary = generate_cohort(
        SynthConfig(site="A", patients=4, seed=2), tmp_path / "p", progress=bar
    )
    assert bar.total == summary.n_images > 0
    assert summary.n_studies >= summary.n_patients == 4
    assert summary.out == tmp_path / "p"


# --------------------------------------------------------------------------- site A layout


def test_site_a_files_and_columns(cohort_a):
    meta = pd.read_csv(cohort_a / "mimic-cxr-2.0.0-metadata.csv.gz", dtype=str)
    assert tuple(meta.columns) == MIMIC_METADATA_COLUMNS
    labels = pd.read_csv(cohort_a / "mimic-cxr-2.0.0-chexpert.csv.gz")
    assert list(labels.columns) == ["subject_id", "study_id", *sorted(CHEXPERT_LABELS)]
    assert MIMIC_LABELS == tuple(sorted(CHEXPERT_LABELS))
    assert labels.columns[2] == "Atelectasis" and labels.columns[-1] == "Support Devices"
    split = pd.read_csv(cohort_a / "mimic-cxr-2.0.0-split.csv.gz", dtype=str)
    assert list(split.columns) == ["dicom_id", "study_id", "subject_id", "split"]

    assert meta["subject_id"].str.fullmatch(r"1\d{7}").all()
    assert meta["study_id"].str.fullmatch(r"5\d{7}").all()
    assert meta["dicom_id"].str.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{8}){4}").all()
    assert meta["dicom_id"].is_unique
    assert set(meta["ViewPosition"]) <= {"PA", "AP", "LATERAL", "LL"}
    assert {"PA", "AP"} <= set(meta["ViewPosition"]) and meta["ViewPosition"].isin(
        ["LATERAL", "LL"]
    ).any()
    assert meta["StudyDate"].str.fullmatch(r"2[12]\d{2}[01]\d[0-3]\d").all()
    assert (meta["Rows"] == "256").all() and (meta["Columns"] == "256").all()
    # each study has one date, and one subject
    assert (meta.groupby("study_id")["StudyDate"].nunique() == 1).all()
    assert (meta.groupby("study_id")["subject_id"].nunique() == 1).all()

    for rec in meta.itertuples():
        folder = cohort_a / "files" / f"p{rec.subject_id[:2]}" / f"p{rec.subject_id}"
        assert (folder / f"s{rec.study_id}" / f"{rec.dicom_id}.jpg").is_file()
        assert (folder / f"s{rec.study_id}.txt").is_file()
    listed = (cohort_a / "IMAGE_FILENAMES").read_text().split()
    assert len(listed) == len(meta) and all((cohort_a / p).is_file() for p in listed)
    assert set(labels["study_id"].astype(str)) == set(meta["study_id"])


def test_site_a_splits_are_patient_disjoint_with_a_large_test_set(cohort_a):
    split = pd.read_csv(cohort_a / "mimic-cxr-2.0.0-split.csv.gz")
    assert set(split["split"]) == {"train", "validate", "test"}
    assert (split.groupby("subject_id")["split"].nunique() == 1).all()
    per_patient = split.drop_duplicates("subject_id")["split"].value_counts()
    # default held-out fraction 25%, validate 5%, the rest train (80 patients)
    assert per_patient["test"] == 20 and per_patient["validate"] == 4 and per_patient["train"] == 56


def test_site_a_reports_have_mimic_sections(cohort_a):
    reports = sorted((cohort_a / "files").rglob("s*.txt"))
    assert reports
    both = 0
    for path in reports:
        text = path.read_text()
        assert text.splitlines()[0].strip() == "FINAL REPORT"
        for head in (" EXAMINATION:", " INDICATION:", " TECHNIQUE:", " COMPARISON:"):
            assert head in text, (path, head)
        assert " FINDINGS:" in text or " IMPRESSION:" in text
        both += " FINDINGS:" in text and " IMPRESSION:" in text
        assert "___" in text  # redactions
    assert both > len(reports) / 2


def test_every_label_appears_positive_and_values_are_chexpert(cohort_a):
    labels = pd.read_csv(cohort_a / "mimic-cxr-2.0.0-chexpert.csv.gz")
    for label in CHEXPERT_LABELS:
        values = set(labels[label].dropna())
        assert values <= {1.0, 0.0, -1.0}, label
        assert 1.0 in values, f"{label} never positive"
    assert set(labels["No Finding"].dropna()) == {1.0}
    others = [lab for lab in CHEXPERT_LABELS if lab not in ("No Finding", "Support Devices")]
    abnormal = labels[others].isin([1.0, -1.0]).any(axis=1)
    assert ((labels["No Finding"] == 1.0) == ~abnormal).all()
    assert (labels[others] == -1.0).any().sum() >= 5  # uncertainty is common
    assert labels[list(CHEXPERT_LABELS)].isna().any().all()  # blanks: not mentioned


def test_hedged_reports_produce_uncertain_labels(cohort_a):
    items = _read_a(cohort_a).drop_duplicates("study_id")
    uncertain = items[list(CHEXPERT_LABELS)].eq(-1.0).any(axis=1)
    assert uncertain.sum() >= 5
    for text in items.loc[uncertain, "report_text"]:
        assert any(h in text.lower() for h in HEDGES), text
    hedged = items["report_text"].str.contains("cannot be excluded")
    assert hedged.any()
    # a hedged mention is -1 unless another sentence states the same label (positive wins)
    assert uncertain[hedged].mean() >= 0.75


def test_normal_reports_are_many_and_nearly_identical(cohort_a):
    items = _read_a(cohort_a).drop_duplicates("study_id")
    normal = items[items["No Finding"] == 1.0]
    assert len(normal) > 0.2 * len(items)
    impressions = normal["report_text"].str.extract(r"IMPRESSION: \n \n(.*)\n")[0].str.strip()
    assert impressions.value_counts().iloc[0] > 0.3 * impressions.notna().sum()


def test_aggregate_labels_follow_chexpert_precedence():
    sents = [
        _Sentence("a", {"Pneumonia": -1.0, "Lung Opacity": 1.0}),
        _Sentence("b", {"Pneumonia": 1.0}),
        _Sentence("c", {"Pleural Effusion": 0.0, "Edema": -1.0}),
        _Sentence("d", {"Edema": 0.0}),
        _Sentence("e", {"Support Devices": 1.0}),
    ]
    out = aggregate_labels(sents)
    assert out["Pneumonia"] == 1.0 and out["Edema"] == -1.0 and out["Pleural Effusion"] == 0.0
    assert out["Cardiomegaly"] is None and out["No Finding"] is None
    devices_only = aggregate_labels([_Sentence("x", {"Support Devices": 1.0, "Pneumothorax": 0.0})])
    assert devices_only["No Finding"] == 1.0


# --------------------------------------------------------------------------- site B layout


def test_site_b_files_and_columns(cohort_b):
    df = pd.read_csv(cohort_b / "df_chexpert_plus_240401.csv", keep_default_na=False, dtype=str)
    assert tuple(df.columns) == CHEXPERT_PLUS_COLUMNS and len(df.columns) == 27
    assert (
        df["path_to_image"]
        .str.fullmatch(r"(train|valid)/patient\d{5}/study\d+/view\d_(frontal|lateral)\.jpg")
        .all()
    )
    assert (df["path_to_image"].str.split("/").str[0] == df["split"]).all()
    assert set(df["frontal_lateral"]) <= {"Frontal", "Lateral"}
    frontal = df["frontal_lateral"] == "Frontal"
    assert set(df.loc[frontal, "ap_pa"]) <= {"AP", "PA"} and (df.loc[~frontal, "ap_pa"] == "").all()
    assert set(df["split"]) == {"train", "valid"}
    assert (df.groupby("deid_patient_id")["split"].nunique() == 1).all()
    assert df.drop_duplicates("deid_patient_id")["split"].value_counts()["valid"] == 8  # 25 % of 30
    for p in df["path_to_image"]:
        png = cohort_b / (p[: -len(".jpg")] + ".png")
        assert png.is_file() and not (cohort_b / p).exists()
    assert (df["section_impression"] != "").all()
    assert (df["section_findings"] == "").mean() > 0.3  # impression-heavy, like CheXpert Plus
    assert df["report"].str.contains("IMPRESSION:").all()
    assert (
        df["report"].str.contains(r"^1\. ", regex=True).any()
        or df["report"].str.contains("\n1. ").any()
    )
    orders = df.groupby("deid_patient_id")["patient_report_date_order"].apply(
        lambda s: sorted(set(map(int, s)))
    )
    assert all(o == list(range(1, len(o) + 1)) for o in orders)

    lines = (cohort_b / "report_fixed.json").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["path_to_image"] for r in records] == list(df["path_to_image"])
    for r in records:
        assert list(r) == ["path_to_image", *CHEXPERT_LABELS]
        assert all(r[lab] in (1, 0, -1, None) for lab in CHEXPERT_LABELS)


def test_site_b_looks_different_from_site_a(cohort_a, cohort_b):
    a = np.stack(
        [np.asarray(Image.open(cohort_a / p)) for p in _read_a(cohort_a)["image_path"][:20]]
    )
    b = np.stack(
        [np.asarray(Image.open(cohort_b / p)) for p in _read_b(cohort_b)["image_path"][:20]]
    )
    # site B: flatter contrast, more noise, black collimation borders
    assert a.std() != pytest.approx(b.std(), rel=0.02) or a.mean() != pytest.approx(
        b.mean(), rel=0.02
    )
    assert (b[:, :, :2] == 0).mean() > (a[:, :, :2] == 0).mean()


# --------------------------------------------------------------------------- images and README


def test_images_are_grayscale_of_the_configured_size(cohort_a, cohort_b, tmp_path):
    for root, paths in (
        (cohort_a, _read_a(cohort_a)["image_path"][:10]),
        (cohort_b, _read_b(cohort_b)["image_path"][:10]),
    ):
        for p in paths:
            with Image.open(root / p) as img:
                assert img.mode == "L" and img.size == (256, 256)
                assert img.format == ("JPEG" if root == cohort_a else "PNG")
    big = _generate(tmp_path / "big", site="B", patients=1, seed=0, image_size=320)
    with Image.open(next(big.rglob("*.png"))) as img:
        assert img.size == (320, 320)


def test_readme_says_synthetic(cohort_a, cohort_b):
    for root, site in ((cohort_a, "A"), (cohort_b, "B")):
        text = (root / "README.txt").read_text()
        assert text.startswith("SYNTHETIC (PHANTOM) DATA")
        assert (
            f"version {GENERATOR_VERSION}" in text
            and "seed:        0" in text
            and f"site:        {site}" in text
        )


# --------------------------------------------------------------------------- contact sheet


def test_contact_sheet_renders_varied_images(cohort_a, tmp_path):
    items = _read_a(cohort_a)
    picked = pick_items(items, 8, seed=0)
    assert len(picked) == 8 and picked["study_id"].is_unique
    assert (picked["No Finding"] == 1.0).any()
    assert (
        picked[[lab for lab in CHEXPERT_LABELS if lab != "No Finding"]].eq(1.0).any(axis=1).sum()
        >= 6
    )
    out = render_contact_sheet(items, cohort_a, tmp_path / "sheets" / "a.png", n=8, seed=0)
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > 256 * 2 and img.height > 256 * 2


def test_caption_marks_uncertain_labels():
    row = pd.Series(
        {
            "view": "AP",
            **{lab: np.nan for lab in CHEXPERT_LABELS},
            "Edema": -1.0,
            "Cardiomegaly": 1.0,
            "Pneumothorax": 0.0,
        }
    )
    text = caption(row)
    assert text.startswith("AP: ") and "Cardiomegaly" in text and "Edema?" in text
    assert "Pneumothorax" not in text


def test_contact_sheet_survives_missing_images(tmp_path):
    items = conform(
        pd.DataFrame(
            [
                {
                    "image_id": "x",
                    "study_id": "s",
                    "patient_id": "p",
                    "split": "test",
                    "view": "PA",
                    "image_path": "missing.jpg",
                    "report_text": "",
                    "No Finding": 1.0,
                }
            ]
        )
    )
    out = render_contact_sheet(items, tmp_path, tmp_path / "s.png", n=4)
    assert out.is_file()


def test_study_dates_are_shifted_far_into_the_future(cohort_a):
    meta = pd.read_csv(cohort_a / "mimic-cxr-2.0.0-metadata.csv.gz")
    years = meta["StudyDate"] // 10000
    assert years.between(2100, 2200).all()
    assert re.fullmatch(r"\d+\.\d+", str(meta["StudyTime"].iloc[0]))


def test_draw_study_draws_what_the_findings_say_and_is_deterministic():
    """The entry point for drawing from a findings list: effusion side and devices show."""
    from synthetic.cohort.anatomy import sample_anatomy
    from synthetic.cohort.findings import Finding
    from synthetic.cohort.radiograph import draw_study

    anat = sample_anatomy(np.random.default_rng(0), "M", 60, 0.0)
    clear = draw_study(anat, [], seed=1)[0].astype(np.float32)
    right = draw_study(anat, [Finding("effusion", "right", 3)], seed=1)[0].astype(np.float32)
    left = draw_study(anat, [Finding("effusion", "left", 3)], seed=1)[0].astype(np.float32)
    half = clear.shape[1] // 2
    # the patient's right is the image's left: a large right effusion brightens that half
    assert (right - clear)[:, :half].mean() > 5 * abs((right - clear)[:, half:].mean())
    assert (left - clear)[:, half:].mean() > 5 * abs((left - clear)[:, :half].mean())
    both = draw_study(anat, [Finding("pacemaker", "left", 1, "", (2, False))], lateral=True, seed=1)
    assert len(both) == 2 and both[0].shape == (256, 256) and both[0].dtype == np.uint8
    assert np.array_equal(
        both[0],
        draw_study(anat, [Finding("pacemaker", "left", 1, "", (2, False))], lateral=True, seed=1)[
            0
        ],
    )
    assert not np.array_equal(both[0], draw_study(anat, [], seed=1)[0])


def test_reports_carry_lung_volumes_only_when_the_image_shows_them():
    from synthetic.cohort.courses import StudyPlan
    from synthetic.cohort.reports import write_report

    def study(inspiration):
        return StudyPlan(
            index=0,
            day=0,
            view="PA",
            supine=False,
            lateral=False,
            extra_frontal=False,
            inspiration=inspiration,
            findings=(),
            indication="cough",
        )

    rng = np.random.default_rng(0)
    low = [write_report(study(-0.9), None, sex="F", age=50, site="A", rng=rng) for _ in range(60)]
    mid = [write_report(study(0.0), None, sex="F", age=50, site="A", rng=rng) for _ in range(60)]
    words = ("Low lung volumes", "Lung volumes are low", "well expanded", "hyperexpanded")
    said = [any(w in r.sections.get("findings", "") for w in words[:2]) for r in low]
    assert 0.5 < np.mean(said) < 1.0  # only part of what the image shows is described
    assert not any(w in r.text for r in mid for w in words)
    # the words carry no label: a normal study stays "No Finding" (but for the reader's rare
    # uncertain mention with nothing behind it)
    assert np.mean([r.labels["No Finding"] == 1.0 for r in low]) > 0.9
