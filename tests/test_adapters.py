"""Dataset adapters, the validation report and the `cohort check` / `cohort add` commands.

Every dataset is a tiny tree built in tmp_path in the real release's layout
(`cohort_fixtures`); the bad-input tests break one thing each and check that the problem names
the file, the row and the offending value, that skippable rows are skipped and counted, and
that the rest of the cohort still loads.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from cohort_fixtures import (
    CSV_REPORT,
    CXP_COLUMNS,
    CXP_IMAGES,
    CXP_TABLE,
    IU_PROJECTIONS,
    IU_REPORTS,
    MIMIC_IMAGES,
    MIMIC_META,
    MIMIC_REPORT,
    cxp_label_record,
    cxp_rows,
    image_bytes,
    make_chexpert_plus,
    make_csv,
    make_iu,
    make_mimic,
    mimic_image_rel,
    mimic_report_rel,
    read_csv_rows,
    write_csv,
    write_image,
)
from engine.cli import main
from engine.cohort.adapters import ids, image_check, load_cohort, reports
from engine.cohort.registry import read_cohort
from engine.cohort.table import COLUMNS, select_one_image_per_study
from engine.core.labels import CHEXPERT_LABELS
from engine.errors import CohortError, ConfigError
from engine.images import cohort_folder


def problems_of(load, kind: str) -> list:
    return [p for p in load.problems if p.kind == kind]


def only_problem(load, kind: str):
    found = problems_of(load, kind)
    assert len(found) == 1, f"expected one {kind} problem, got {load.problems}"
    return found[0]


def rewrite_csv(path: Path, edit) -> None:
    """Rewrite a fixture table through `edit(header, rows) -> (header, rows)`."""
    header, rows = edit(*read_csv_rows(path))
    write_csv(path, header, rows)


# ----------------------------------------------------------------------------- MIMIC-CXR-JPG


class TestMimic:
    def test_reads_the_release_layout(self, tmp_path):
        make_mimic(tmp_path)
        load = load_cohort("mimic-cxr-jpg", tmp_path)
        items = load.items
        assert list(items.columns) == list(COLUMNS)
        assert len(items) == len(MIMIC_IMAGES) and load.problems == []
        first = items.iloc[0]
        subject, study, dicom, view, split = MIMIC_IMAGES[0]
        assert (first.image_id, first.study_id, first.patient_id) == (dicom, study, subject)
        assert first.image_path == mimic_image_rel(subject, study, dicom)
        assert not Path(first.image_path).is_absolute()
        assert set(items["split"]) == {"train", "validate", "test"}
        assert set(items["view"]) == {"PA", "AP", "LATERAL", "LL"}
        assert first.report_text == (
            "There is no focal consolidation, pleural effusion or pneumothorax. The "
            "cardiomediastinal silhouette is normal (50414267).\nNo acute cardiopulmonary process."
        )
        for label in CHEXPERT_LABELS:
            assert items[label].dtype == np.float64
        assert first["No Finding"] == 1.0 and math.isnan(first["Cardiomegaly"])
        assert (items["Pleural Effusion"] == 0.0).all()
        assert (items.loc[items.study_id == "53189527", "Cardiomegaly"] == -1.0).all()
        stats = load.stats
        assert stats["images_listed"] == 6 and stats["images_found"] == 6
        assert (stats["studies_kept"], stats["patients_kept"]) == (4, 3)

    def test_plain_csv_tables(self, tmp_path):
        make_mimic(tmp_path, gz=False)
        load = load_cohort("mimic-cxr-jpg", tmp_path)
        assert len(load.items) == 6 and load.problems == []

    def test_reports_in_the_separate_reports_folder(self, tmp_path):
        make_mimic(tmp_path)
        for report in (tmp_path / "files").rglob("*.txt"):
            moved = tmp_path / "mimic-cxr-reports" / report.relative_to(tmp_path)
            moved.parent.mkdir(parents=True, exist_ok=True)
            report.rename(moved)
        load = load_cohort("mimic-cxr-jpg", tmp_path)
        assert len(load.items) == 6 and load.problems == []

    @pytest.mark.parametrize(
        ("section", "expected"),
        [
            ("findings", "There is no focal consolidation, pleural effusion or pneumothorax. "
                         "The cardiomediastinal silhouette is normal (50414267)."),
            ("impression", "No acute cardiopulmonary process."),
        ],
    )
    def test_section_selection(self, tmp_path, section, expected):
        make_mimic(tmp_path)
        load = load_cohort("mimic-cxr-jpg", tmp_path, section=section)
        assert load.items.iloc[0].report_text == expected
        assert load.stats["reports_section_fallback"] == 0

    def test_full_section_keeps_the_whole_report(self, tmp_path):
        make_mimic(tmp_path)
        text = load_cohort("mimic-cxr-jpg", tmp_path, section="full").items.iloc[0].report_text
        assert text.startswith("FINAL REPORT\nEXAMINATION:  CHEST (PA AND LAT)")
        assert "INDICATION:" in text and text.endswith("No acute cardiopulmonary process.")

    def test_section_fallbacks_are_counted(self, tmp_path):
        make_mimic(tmp_path)
        subject, study = MIMIC_IMAGES[0][:2]
        (tmp_path / mimic_report_rel(subject, study)).write_text(
            "                 FINAL REPORT\n INDICATION: cough\n\n IMPRESSION: Clear lungs.\n"
        )
        subject2, study2 = MIMIC_IMAGES[3][:2]
        (tmp_path / mimic_report_rel(subject2, study2)).write_text("Portable chest: no change.\n")
        for section in ("findings", "both"):
            load = load_cohort("mimic-cxr-jpg", tmp_path, section=section)
            texts = load.items.drop_duplicates("study_id").set_index("study_id")["report_text"]
            assert texts[study] == "Clear lungs."
            assert texts[study2] == "Portable chest: no change."
            assert load.stats["reports_section_fallback"] == 2

    def test_missing_metadata_is_an_error_naming_the_file(self, tmp_path):
        make_mimic(tmp_path)
        (tmp_path / MIMIC_META).unlink()
        with pytest.raises(CohortError, match=r"mimic-cxr-\*-metadata\.csv\.gz"):
            load_cohort("mimic-cxr-jpg", tmp_path)

    def test_missing_metadata_column_is_an_error_naming_it(self, tmp_path):
        paths = make_mimic(tmp_path)
        rewrite_csv(paths["meta"], lambda h, rows: (
            [c for c in h if c != "ViewPosition"],
            [[v for c, v in zip(h, r) if c != "ViewPosition"] for r in rows],
        ))
        with pytest.raises(CohortError) as err:
            load_cohort("mimic-cxr-jpg", tmp_path)
        assert MIMIC_META in str(err.value) and "'ViewPosition'" in str(err.value)
        assert "columns found: 'dicom_id'" in str(err.value)

    def test_image_problems_are_skipped_and_named(self, tmp_path):
        make_mimic(tmp_path)
        paths = [tmp_path / mimic_image_rel(*img[:3]) for img in MIMIC_IMAGES]
        paths[0].write_bytes(b"this is not a jpeg at all")          # garbage
        paths[1].write_bytes(image_bytes("JPEG")[:-200])             # truncated
        paths[2].write_bytes(b"")                                    # empty
        paths[3].unlink()                                            # missing
        load = load_cohort("mimic-cxr-jpg", tmp_path)
        assert len(load.items) == 2
        corrupt = problems_of(load, "corrupt_image")
        assert [p.row for p in corrupt] == [1, 2, 3]
        assert all(p.file == MIMIC_META and p.skipped for p in corrupt)
        assert mimic_image_rel(*MIMIC_IMAGES[0][:3]) in corrupt[0].message
        assert "Pillow" in corrupt[0].message
        assert "truncated" in corrupt[1].message and "0 bytes" in corrupt[2].message
        missing = only_problem(load, "missing_image")
        assert (missing.file, missing.row) == (MIMIC_META, 4)
        assert mimic_image_rel(*MIMIC_IMAGES[3][:3]) + " not found" in missing.message
        assert load.stats["images_unreadable"] == 3 and load.stats["images_missing"] == 1
        assert load.stats["studies_without_images"] == 2  # 50414267 and 53189527 lost all images
        assert load.n_skipped == 4

    def test_report_problems_skip_the_study(self, tmp_path):
        make_mimic(tmp_path)
        (s1, st1), (s2, st2), (s3, st3) = (
            MIMIC_IMAGES[0][:2], MIMIC_IMAGES[2][:2], MIMIC_IMAGES[3][:2])
        (tmp_path / mimic_report_rel(s1, st1)).write_bytes(
            b" FINDINGS: Lungs clear, caf\xe9 \xff.\n IMPRESSION: ok\n")
        headers_only = " FINAL REPORT\n FINDINGS:\n\n IMPRESSION:\n"
        (tmp_path / mimic_report_rel(s2, st2)).write_text(headers_only)
        (tmp_path / mimic_report_rel(s3, st3)).unlink()
        load = load_cohort("mimic-cxr-jpg", tmp_path)
        assert set(load.items["study_id"]) == {MIMIC_IMAGES[5][1]}
        bad = only_problem(load, "non_utf8_report")
        assert bad.file == mimic_report_rel(s1, st1) and bad.row is None
        assert st1 in bad.message and "\\xe9" in bad.message
        empty = only_problem(load, "empty_report")
        assert empty.file == mimic_report_rel(s2, st2) and st2 in empty.message
        missing = only_problem(load, "missing_report")
        assert missing.file == mimic_report_rel(s3, st3) and "not found" in missing.message
        stats = load.stats
        counts = (stats["reports_non_utf8"], stats["reports_empty"], stats["reports_missing"])
        assert counts == (1, 1, 1)
        assert stats["images_without_report"] == 5

    def test_duplicate_dicom_ids_keep_the_first(self, tmp_path):
        paths = make_mimic(tmp_path)
        rewrite_csv(paths["meta"], lambda h, rows: (h, rows + [rows[1][:4] + ["AP"] + rows[1][5:]]))
        load = load_cohort("mimic-cxr-jpg", tmp_path)
        dup = only_problem(load, "duplicate_id")
        assert (dup.file, dup.row) == (MIMIC_META, 7)
        assert MIMIC_IMAGES[1][2] in dup.message and "row 2" in dup.message
        assert len(load.items) == 6
        assert load.items.set_index("image_id").at[MIMIC_IMAGES[1][2], "view"] == "LATERAL"
        assert load.stats["duplicate_ids"] == 1

    def test_label_file_problems_warn_and_go_on(self, tmp_path):
        paths = make_mimic(tmp_path)

        def drop_and_spoil(header, rows):
            keep = [i for i, c in enumerate(header) if c not in ("Pneumothorax", "Edema")]
            rows = [[r[i] for i in keep] for r in rows]
            header = [header[i] for i in keep]
            rows[0][header.index("Fracture")] = "yes"
            return header, rows[:-1]

        rewrite_csv(paths["labels"], drop_and_spoil)
        load = load_cohort("mimic-cxr-jpg", tmp_path)
        assert len(load.items) == 6 and load.n_skipped == 0
        missing = only_problem(load, "missing_label_column")
        assert missing.file == "mimic-cxr-2.0.0-chexpert.csv.gz" and not missing.skipped
        assert "'Edema'" in missing.message and "'Pneumothorax'" in missing.message
        assert load.items["Pneumothorax"].isna().all()
        bad = only_problem(load, "bad_label_value")
        assert bad.row == 1 and "Fracture = 'yes'" in bad.message
        unlabelled = only_problem(load, "no_labels")
        assert "'50771383'" in unlabelled.message  # the last label row was dropped
        assert load.stats["images_without_labels"] == 1
        assert load.items.loc[load.items.study_id == "50771383", "No Finding"].isna().all()

    def test_missing_label_file_leaves_labels_missing(self, tmp_path):
        paths = make_mimic(tmp_path)
        paths["labels"].unlink()
        load = load_cohort("mimic-cxr-jpg", tmp_path)
        assert len(load.items) == 6
        assert only_problem(load, "missing_label_file").skipped is False
        assert load.items[list(CHEXPERT_LABELS)].isna().all().all()

    def test_split_problems(self, tmp_path):
        paths = make_mimic(tmp_path)

        def spoil(header, rows):
            rows[0][3] = "holdout"          # unknown split value
            rows[2][3] = "test"             # patient 10000032 now in train and test
            return header, rows[:-1]        # the last image has no split row

        rewrite_csv(paths["split"], spoil)
        load = load_cohort("mimic-cxr-jpg", tmp_path)
        bad = only_problem(load, "bad_split")
        assert (bad.file, bad.row) == ("mimic-cxr-2.0.0-split.csv.gz", 1)
        assert "'holdout'" in bad.message
        no_split = problems_of(load, "no_split")
        assert {p.row for p in no_split} == {1, 6}  # metadata rows of the two unsplit images
        leak = only_problem(load, "split_not_patient_disjoint")
        assert not leak.skipped and "'10000032'" in leak.message
        assert "train (row 2)" in leak.message and "test (row 3)" in leak.message
        assert leak.file == "mimic-cxr-2.0.0-split.csv.gz"
        assert load.stats["patients_in_several_splits"] == 1
        assert len(load.items) == 4

    def test_missing_split_file_hash_splits_by_patient(self, tmp_path):
        paths = make_mimic(tmp_path)
        paths["split"].unlink()
        load = load_cohort("mimic-cxr-jpg", tmp_path)
        assert only_problem(load, "missing_split_file").skipped is False
        assert load.items.groupby("patient_id")["split"].nunique().max() == 1
        assert set(load.items["split"]) <= {"train", "test"}

    def test_no_usable_images_names_the_root(self, tmp_path):
        make_mimic(tmp_path)
        shutil.rmtree(tmp_path / "files")
        with pytest.raises(CohortError, match="no usable images") as err:
            load_cohort("mimic-cxr-jpg", tmp_path)
        assert str(tmp_path) in str(err.value) and "missing_image x6" in str(err.value)

    def test_bad_section_is_a_config_error(self, tmp_path):
        make_mimic(tmp_path)
        with pytest.raises(ConfigError, match="--section 'summary'"):
            load_cohort("mimic-cxr-jpg", tmp_path, section="summary")


# ----------------------------------------------------------------------------- CheXpert Plus


class TestChexpertPlus:
    def test_reads_the_release_layout(self, tmp_path):
        make_chexpert_plus(tmp_path)
        load = load_cohort("chexpert-plus", tmp_path)
        items = load.items.set_index("image_id")
        assert load.problems == [] and len(items) == 4
        first = items.loc[CXP_IMAGES[0][0]]
        assert first.study_id == "patient00001/study1" and first.patient_id == "patient00001"
        assert first.image_path == "train/patient00001/study1/view1_frontal.png"  # .jpg listed
        assert first.view == "PA" and items.loc[CXP_IMAGES[1][0]].view == "LATERAL"
        assert first.report_text == "Heart size is normal. Lungs are clear.\n1. No acute disease."
        assert items.loc[CXP_IMAGES[3][0]].split == "validate"
        assert items.loc[CXP_IMAGES[2][0], "Pleural Effusion"] == 1.0
        assert items.loc[CXP_IMAGES[2][0], "Cardiomegaly"] == 0.0
        assert items.loc[CXP_IMAGES[3][0], "Cardiomegaly"] == -1.0
        assert math.isnan(items.loc[CXP_IMAGES[3][0], "Edema"])
        # study2 has no findings: both -> impression only, counted as a fallback
        assert items.loc[CXP_IMAGES[2][0]].report_text == "1. Small left pleural effusion."
        assert load.stats["reports_section_fallback"] == 1

    def test_listed_jpg_files_are_used_when_present(self, tmp_path):
        make_chexpert_plus(tmp_path, image_ext=".jpg")
        load = load_cohort("chexpert-plus", tmp_path)
        assert load.items["image_path"].str.endswith(".jpg").all()

    def test_section_label_files_follow_the_section(self, tmp_path):
        make_chexpert_plus(tmp_path)
        record = cxp_label_record(CXP_IMAGES[0][0], Edema=1.0)
        (tmp_path / "chexbert_labels").mkdir()
        (tmp_path / "chexbert_labels" / "findings_fixed.json").write_text(json.dumps(record) + "\n")
        findings = load_cohort("chexpert-plus", tmp_path, section="findings")
        assert findings.items.set_index("image_id").at[CXP_IMAGES[0][0], "Edema"] == 1.0
        assert findings.items.iloc[0].report_text == "Heart size is normal. Lungs are clear."
        both = load_cohort("chexpert-plus", tmp_path, section="both")
        assert math.isnan(both.items.set_index("image_id").at[CXP_IMAGES[0][0], "Edema"])

    def test_json_array_label_file(self, tmp_path):
        paths = make_chexpert_plus(tmp_path)
        records = [json.loads(line) for line in paths["labels"].read_text().splitlines()]
        paths["labels"].write_text(json.dumps(records, indent=1))
        load = load_cohort("chexpert-plus", tmp_path)
        assert load.problems == []
        assert load.items.set_index("image_id").at[CXP_IMAGES[2][0], "Pleural Effusion"] == 1.0

    def test_bad_label_rows_and_images_without_labels(self, tmp_path):
        paths = make_chexpert_plus(tmp_path)
        lines = paths["labels"].read_text().splitlines()
        lines[1] = "{not json"
        lines[2] = lines[2].replace('"Cardiomegaly": 0.0', '"Cardiomegaly": 2')
        paths["labels"].write_text("\n".join(lines) + "\n")
        load = load_cohort("chexpert-plus", tmp_path)
        assert len(load.items) == 4
        bad_row = only_problem(load, "bad_label_row")
        assert (bad_row.file, bad_row.row) == ("report_fixed.json", 2)
        bad_value = only_problem(load, "bad_label_value")
        assert bad_value.row == 3 and "Cardiomegaly = '2.0'" in bad_value.message
        unlabelled = only_problem(load, "no_labels")
        assert (unlabelled.file, unlabelled.row) == (CXP_TABLE, 2)
        assert CXP_IMAGES[1][0] in unlabelled.message

    def test_missing_label_file(self, tmp_path):
        paths = make_chexpert_plus(tmp_path)
        paths["labels"].unlink()
        load = load_cohort("chexpert-plus", tmp_path)
        problem = only_problem(load, "missing_label_file")
        assert "report_fixed.json" in problem.message and not problem.skipped
        assert load.stats["images_without_labels"] == 4

    def test_missing_required_column(self, tmp_path):
        paths = make_chexpert_plus(tmp_path)
        rewrite_csv(paths["table"], lambda h, rows: (
            [c for c in h if c != "deid_patient_id"],
            [[v for c, v in zip(h, r) if c != "deid_patient_id"] for r in rows],
        ))
        with pytest.raises(CohortError, match=rf"{CXP_TABLE}: missing required column\(s\) "
                                              r"'deid_patient_id'"):
            load_cohort("chexpert-plus", tmp_path)

    def test_row_problems(self, tmp_path):
        make_chexpert_plus(tmp_path)
        rows = cxp_rows()
        duplicate = list(rows[0])
        conflicting = list(rows[1])
        extra = "train/patient00001/study1/view3_frontal.jpg"
        conflicting[CXP_COLUMNS.index("path_to_image")] = extra
        conflicting[CXP_COLUMNS.index("section_impression")] = "1. Something else."
        write_image(tmp_path / "train/patient00001/study1/view3_frontal.png", "PNG")
        table = write_csv(tmp_path / CXP_TABLE, CXP_COLUMNS, rows + [duplicate, conflicting])
        # a byte that is not UTF-8 inside the report cells of row 4
        raw = table.read_bytes().replace(b"Cardiomegaly, otherwise", b"Cardiom\xe9galie")
        table.write_bytes(raw)
        load = load_cohort("chexpert-plus", tmp_path)
        non_utf8 = only_problem(load, "non_utf8_report")
        assert (non_utf8.file, non_utf8.row) == (CXP_TABLE, 4)
        assert "'report'" in non_utf8.message and "\\xe9" in non_utf8.message
        dup = only_problem(load, "duplicate_id")
        assert dup.row == 5 and "first listed in row 1" in dup.message
        conflict = only_problem(load, "conflicting_report")
        assert conflict.row == 6 and "row 1" in conflict.message and not conflict.skipped
        assert len(load.items) == 4
        assert load.items["report_text"].str.contains("Something else").sum() == 0
        assert load.stats["reports_non_utf8"] == 1 and load.stats["duplicate_ids"] == 1


# ----------------------------------------------------------------------------- IU X-ray


class TestIU:
    def test_reads_the_kaggle_layout(self, tmp_path):
        make_iu(tmp_path)
        load = load_cohort("iu-xray", tmp_path)
        items = load.items.set_index("image_id")
        assert load.problems == [] and len(items) == len(IU_PROJECTIONS)
        first = items.loc["1_IM-0001-4001.dcm.png"]
        assert first.image_path == "images/images_normalized/1_IM-0001-4001.dcm.png"
        assert (first.study_id, first.patient_id, first.view) == ("1", "1", "FRONTAL")
        assert items.loc["1_IM-0001-3001.dcm.png"].view == "LATERAL"
        assert "XXXX" in first.report_text  # redactions stay as text

    def test_labels_from_problems_and_mesh(self, tmp_path):
        make_iu(tmp_path)
        labels = load_cohort("iu-xray", tmp_path).items.drop_duplicates("study_id")
        labels = labels.set_index("study_id")[list(CHEXPERT_LABELS)]
        assert labels.loc["1", "No Finding"] == 1.0
        assert labels.loc["1"].drop("No Finding").isna().all()
        assert labels.loc["2", "Cardiomegaly"] == 1.0 and math.isnan(labels.loc["2", "No Finding"])
        assert labels.loc["3", "Pleural Effusion"] == 1.0
        assert labels.loc["3", "Support Devices"] == 1.0
        assert labels.loc["4"].isna().all()  # Granulomatous Disease maps to nothing

    def test_hash_split_is_deterministic_and_patient_disjoint(self, tmp_path):
        make_iu(tmp_path)
        items = load_cohort("iu-xray", tmp_path).items
        assert items["split"].tolist() == [ids.hash_split(u) for u in items["patient_id"]]
        splits = [ids.hash_split(str(i)) for i in range(4000)]
        assert 0.22 < splits.count("test") / len(splits) < 0.28
        assert set(splits) == {"train", "test"}

    def test_sections(self, tmp_path):
        make_iu(tmp_path)
        texts = {
            s: load_cohort("iu-xray", tmp_path, section=s).items.set_index("image_id").report_text
            for s in ("findings", "impression", "both", "full")
        }
        key = "2_IM-0652-1001.dcm.png"
        assert texts["findings"][key] == "Borderline cardiomegaly."
        assert texts["impression"][key] == "No acute pulmonary findings."
        assert texts["both"][key] == "Borderline cardiomegaly.\nNo acute pulmonary findings."
        assert texts["full"][key] == (
            "INDICATION: XXXX-year-old male, chest pain.\nFINDINGS: Borderline cardiomegaly.\n"
            "IMPRESSION: No acute pulmonary findings."
        )
        # study 3 has no findings: the impression stands in
        impression_3 = "Small left effusion. Catheter in place."
        assert texts["findings"]["3_IM-1384-1001.dcm.png"] == impression_3

    def test_join_losses(self, tmp_path):
        paths = make_iu(tmp_path)
        write_csv(paths["reports"], list(read_csv_rows(paths["reports"])[0]),
                  IU_REPORTS[1:] + [["5", "normal", "normal", "", "", "", "Clear.", "Normal."]])
        load = load_cohort("iu-xray", tmp_path)
        orphans = problems_of(load, "missing_report")
        assert [(p.file, p.row) for p in orphans] == [("indiana_projections.csv", 1),
                                                      ("indiana_projections.csv", 2)]
        assert "uid '1'" in orphans[0].message
        lonely = only_problem(load, "study_without_images")
        assert (lonely.file, lonely.row) == ("indiana_reports.csv", 4) and "'5'" in lonely.message
        assert load.stats["images_without_report"] == 2
        assert "1" not in set(load.items["study_id"])

    def test_missing_mesh_column_warns(self, tmp_path):
        paths = make_iu(tmp_path)
        rewrite_csv(  # drop the MeSH column (second)
            paths["reports"], lambda h, rows: (h[:1] + h[2:], [r[:1] + r[2:] for r in rows])
        )
        load = load_cohort("iu-xray", tmp_path)
        problem = only_problem(load, "missing_label_column")
        assert "'MeSH'" in problem.message and problem.file == "indiana_reports.csv"
        assert load.items.set_index("study_id").loc["2", "Cardiomegaly"].eq(1.0).all()

    def test_one_image_per_study_prefers_frontal(self, tmp_path):
        make_iu(tmp_path)
        chosen = select_one_image_per_study(load_cohort("iu-xray", tmp_path).items)
        assert chosen.set_index("study_id").loc["1", "image_id"] == "1_IM-0001-4001.dcm.png"
        assert len(chosen) == 4


# ----------------------------------------------------------------------------- user CSV


class TestCsv:
    def test_reads_a_user_table(self, tmp_path):
        make_csv(tmp_path)
        load = load_cohort("csv", tmp_path)
        items = load.items.set_index("image_id")
        assert load.problems == [] and list(items.index) == ["img/a.jpg", "img/b.jpg", "img/c.png"]
        assert items.loc["img/a.jpg"].view == "PA" and items.loc["img/c.png"].split == "validate"
        assert items.loc["img/a.jpg"].report_text == "Lungs are clear.\nNo acute process."
        assert items.loc["img/c.png"].report_text == "Heart is enlarged."
        assert items.loc["img/a.jpg", "Cardiomegaly"] == 1.0
        assert math.isnan(items.loc["img/c.png", "Cardiomegaly"])
        assert items["Edema"].isna().all()

    def test_root_may_be_the_file_and_defaults_fill_in(self, tmp_path):
        rows = [
            {"image_path": "x/1.png", "report_text": "Clear.", "patient_id": "A",
             "pleural effusion": "-1"},
            {"image_path": str(tmp_path / "abs" / "2.jpg"), "report_text": "Effusion.",
             "patient_id": "B", "pleural effusion": "1"},
        ]
        write_image(tmp_path / "abs" / "2.jpg")
        csv_file = make_csv(tmp_path, rows, name="mine.csv")
        load = load_cohort("csv", csv_file)
        items = load.items
        # An absolute path is refused even inside the folder (engine.images); the rest is kept
        # relative to the CSV's folder.
        assert items["image_id"].tolist() == ["x/1.png"]
        assert [p.kind for p in load.problems] == ["image_outside_root"]
        assert load.problems[0].row == 2 and "is absolute" in load.problems[0].message
        assert items["study_id"].tolist() == items["image_id"].tolist()  # one study per row
        assert items["image_path"].tolist() == ["x/1.png"]
        assert (cohort_folder(csv_file) / items["image_path"][0]).is_file()
        assert items["split"].tolist() == [ids.hash_split("A")]
        assert items["Pleural Effusion"].tolist() == [-1.0]  # label name matched loosely
        assert items["view"].tolist() == [""]

    def test_missing_required_columns(self, tmp_path):
        make_csv(tmp_path, [{"path": "img/a.jpg", "report_text": "x", "subject": "P"}])
        with pytest.raises(CohortError) as err:
            load_cohort("csv", tmp_path)
        message = str(err.value)
        assert message.startswith("cohort.csv: missing required column(s)")
        assert "'image_path', 'patient_id'" in message and "columns found: 'path'" in message

    def test_missing_table_names_the_file(self, tmp_path):
        with pytest.raises(CohortError, match="cohort.csv"):
            load_cohort("csv", tmp_path)

    def test_row_problems_are_skipped_and_named(self, tmp_path):
        rows = [
            {"image_path": "img/a.jpg", "report_text": CSV_REPORT, "patient_id": "P1",
             "split": "train"},
            {"image_path": "img/a.jpg", "report_text": CSV_REPORT, "patient_id": "P1",
             "split": "train"},
            {"image_path": "img/b.jpg", "report_text": "  ", "patient_id": "P2", "split": "train"},
            {"image_path": "img/c.jpg", "report_text": "ok", "patient_id": "", "split": "train"},
            {"image_path": "img/d.jpg", "report_text": "ok", "patient_id": "P4",
             "split": "heldout"},
            {"image_path": "img/e.jpg", "report_text": "ok", "patient_id": "P1", "split": "test"},
            {"image_path": "img/f.jpg", "report_text": "ok", "patient_id": "P6", "split": "test"},
        ]
        make_csv(tmp_path, rows)
        (tmp_path / "img" / "f.jpg").unlink()
        load = load_cohort("csv", tmp_path)
        assert sorted(load.items["image_id"]) == ["img/a.jpg", "img/e.jpg"]
        expect = {
            "duplicate_id": (2, "duplicate image_id 'img/a.jpg': first listed in row 1"),
            "empty_report": (3, "report of study 'img/b.jpg' is empty"),
            "missing_id": (4, "empty patient_id"),
            "bad_split": (5, "split 'heldout'"),
            "missing_image": (7, "image img/f.jpg not found"),
            "split_not_patient_disjoint": (6, "patient 'P1' has images in several splits"),
        }
        for kind, (row, text) in expect.items():
            problem = only_problem(load, kind)
            assert problem.file == "cohort.csv" and problem.row == row, problem
            assert text in problem.message, problem
        assert load.n_skipped == 5
        assert only_problem(load, "split_not_patient_disjoint").skipped is False

    def test_one_image_per_study_picks_pa_then_ap_then_lateral(self, tmp_path):
        rows = [
            {"image_path": f"img/{name}.jpg", "report_text": "ok", "patient_id": "P",
             "study_id": "S", "view": view}
            for name, view in (("a", "LATERAL"), ("b", "AP"), ("c", "PA"), ("d", "LL"))
        ]
        make_csv(tmp_path, rows)
        items = load_cohort("csv", tmp_path).items
        assert select_one_image_per_study(items)["image_id"].tolist() == ["img/c.jpg"]
        no_pa = items.loc[items["view"] != "PA"]
        assert select_one_image_per_study(no_pa)["image_id"].tolist() == ["img/b.jpg"]
        laterals = items.loc[items["view"].isin(["LATERAL", "LL"])]
        assert select_one_image_per_study(laterals)["image_id"].tolist() == ["img/a.jpg"]

    def test_validating_5000_images_takes_seconds(self, tmp_path):
        jpeg = image_bytes("JPEG", size=64)
        (tmp_path / "img").mkdir()
        rows = []
        for i in range(5000):
            (tmp_path / "img" / f"{i}.jpg").write_bytes(jpeg)
            rows.append([f"img/{i}.jpg", "FINDINGS: clear. IMPRESSION: normal.", f"P{i // 3}"])
        write_csv(tmp_path / "cohort.csv", ["image_path", "report_text", "patient_id"], rows)
        start = time.perf_counter()
        load = load_cohort("csv", tmp_path)
        seconds = time.perf_counter() - start
        assert len(load.items) == 5000 and load.problems == []
        assert seconds < 10, f"validating 5000 images took {seconds:.1f} s"


# ----------------------------------------------------------------------------- shared helpers


def test_section_parser_handles_mimic_headers():
    text = MIMIC_REPORT.format(heart="normal")
    sections = reports.parse_sections(text)
    assert sections["findings"].startswith("There is no focal consolidation")
    assert sections["impression"] == "No acute cardiopulmonary process."
    typo = " FINDINGS AND IMPRESSION: Stable.\n CONCLUSION: Nothing new.\n"
    assert reports.parse_sections(typo) == {"findings": "", "impression": "Stable. Nothing new."}
    assert reports.parse_sections("no headers here") == {"findings": "", "impression": ""}


def test_inspect_image_statuses(tmp_path):
    good = write_image(tmp_path / "good.png", "PNG")
    assert image_check.inspect_image(good) == ("ok", "")
    assert image_check.inspect_image(tmp_path / "nope.jpg")[0] == "missing"
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[:-12])
    assert image_check.inspect_image(truncated) == ("corrupt", "is truncated (no PNG IEND chunk)")


# ----------------------------------------------------------------------------- the CLI


def test_cli_check_prints_the_report(tmp_path, capsys):
    make_csv(tmp_path)
    (tmp_path / "img" / "b.jpg").write_bytes(b"\xff\xd8\xff broken")
    assert main(["cohort", "check", "--format", "csv", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"Cohort check: csv at {tmp_path}" in out
    assert "Usable: 2 patients, 2 studies, 2 images" in out
    assert "images unreadable (corrupt)" in out
    assert "corrupt_image (1, skipped):" in out
    assert "cohort.csv, row 2: image img/b.jpg is truncated" in out
    assert "Cardiomegaly" in out


def test_cli_check_reports_a_cohort_error(tmp_path, capsys):
    assert main(["cohort", "check", "--format", "iu-xray", "--root", str(tmp_path)]) == 2
    assert "indiana_reports.csv" in capsys.readouterr().err


def test_cli_check_caps_long_problem_lists(tmp_path, capsys):
    rows = [{"image_path": f"img/{i}.jpg", "report_text": "ok", "patient_id": f"P{i}"}
            for i in range(15)]
    make_csv(tmp_path, rows)
    for i in range(1, 14):
        (tmp_path / "img" / f"{i}.jpg").unlink()
    assert main(["cohort", "check", "--format", "csv", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "missing_image (13, skipped):" in out and "... and 3 more" in out


def test_cli_add_registers_the_cohort(tmp_path, capsys):
    root = tmp_path / "mimic"
    make_mimic(root)
    db = tmp_path / "x.duckdb"
    argv = ["--db", str(db), "cohort", "add", "--name", "siteA", "--format", "mimic-cxr-jpg",
            "--root", str(root), "--site", "A", "--section", "impression"]
    assert main(argv) == 0
    assert "registered cohort 'siteA'" in capsys.readouterr().out
    meta, items = read_cohort(db, "siteA")
    assert meta["n_images"] == 6 and meta["n_studies"] == 4 and meta["section"] == "impression"
    assert len(items) == 4  # one image per study
    assert set(items["view"]) == {"PA", "AP"}
    assert (items["report_text"] == "No acute cardiopulmonary process.").all()
    _, all_items = read_cohort(db, "siteA", selected_only=False)
    assert len(all_items) == 6
