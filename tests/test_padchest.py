"""The `padchest` adapter: on the real release table (read from the installed torchxrayvision
package, never copied into the repository), on hand-made fake rows in the release's layout,
the label mapping table and the keyed-hash split."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cohort_fixtures import PADCHEST_TABLE, make_padchest, read_csv_rows, write_csv
from engine.cli import main
from engine.cohort import sources
from engine.cohort.adapters import ids, load_cohort, loadlog, padchest, padchest_labels
from engine.cohort.adapters.assembly import NoUsableImages
from engine.core.labels import CHEXPERT_LABELS

DOC = Path(__file__).resolve().parents[1] / "docs" / "label-mapping.md"
N_ROWS = 6000  # the first rows of the real table: small runs on the real release


@pytest.fixture(scope="module")
def real_table() -> Path:
    return sources.padchest_table()


@pytest.fixture(scope="module")
def real_columns(real_table) -> pd.DataFrame:
    """Two columns of the whole real table (the label vocabulary and the patients)."""
    return pd.read_csv(real_table, usecols=["Labels", "PatientID"], dtype=str,
                       keep_default_na=False)


@pytest.fixture(scope="module")
def real_head(real_table, tmp_path_factory) -> tuple[pd.DataFrame, Path]:
    """The first `N_ROWS` rows, as a release table in a temporary folder (never committed)."""
    head = pd.read_csv(real_table, nrows=N_ROWS, dtype=str, keep_default_na=False)
    folder = tmp_path_factory.mktemp("padchest-head")
    head.to_csv(folder / (PADCHEST_TABLE + ".gz"), index=False)
    return head, folder


@pytest.fixture(scope="module")
def real_release(real_head):
    log = loadlog.LoadLog()
    return padchest.read_release(real_head[1] / (PADCHEST_TABLE + ".gz"), log=log), log


@pytest.fixture(scope="module")
def real_vocabulary(real_columns) -> set[str]:
    return {x.strip() for cell in real_columns["Labels"] for x in re.findall(r"'([^']*)'", cell)
            if x.strip()}


# ----------------------------------------------------------------------------- real release


def test_package_data_is_found_without_importing_the_package():
    import sys

    assert sources.padchest_table().is_file()
    assert "torchxrayvision" not in sys.modules


def test_read_release_on_the_real_table(real_release):
    studies, log = real_release
    assert studies["study_id"].is_unique and len(studies) > N_ROWS / 2
    assert set(studies["projection"]) <= {"PA", "AP", "AP_horizontal"}
    assert set(studies["view"]) <= {"PA", "AP"}
    assert (studies["image_path"] == studies["image_dir"] + "/" + studies["image_id"]).all()
    assert (studies["report"] != "").all() and not studies["report"].str.startswith(" ").any()
    assert set(studies["sex"]) <= {"M", "F", "O", ""}
    assert studies["study_date"].str.fullmatch(r"\d{4}-\d{2}-\d{2}|").all()
    ages = studies["age"].dropna()
    assert len(ages) > 0.95 * len(studies) and ages.between(0, 110).all()
    for column in ("findings", "localizations"):
        lists = studies[column]
        assert all(x == sorted(set(x)) and all(i == i.strip() and i for i in x) for x in lists)
    assert all(loc.startswith("loc ") for x in studies["localizations"] for loc in x)
    # Physician rows are nested per sentence, RNN rows one flat group
    physician = studies.loc[studies["method_label"] == "Physician", "findings_by_sentence"]
    assert (physician.map(len) > 1).any()
    rnn = studies.loc[studies["method_label"] == "RNN_model", "findings_by_sentence"]
    assert (rnn.map(len) <= 1).all()
    # the sentence lists carry the study's findings (the release's two columns mostly agree)
    agree = [set(found) <= {x for g in groups for x in g} | {"normal"}
             for found, groups in zip(studies["findings"], studies["findings_by_sentence"])]
    assert np.mean(agree) > 0.9
    assert log.stats["images_other_views"] > 0 and log.stats["images_not_selected"] > 0


def test_one_image_per_study_follows_the_rule(real_head, real_release):
    studies, _ = real_release
    raw = real_head[0]
    frontal = raw.loc[raw["Projection"].isin(["PA", "AP", "AP_horizontal"])
                      & ~raw["Report"].str.strip().isin(["", "nan"])]
    rank = {"PA": 0, "AP": 1, "AP_horizontal": 2}
    chosen = dict(zip(studies["study_id"], studies["image_id"]))
    best: dict[str, tuple[int, str]] = {}  # naive reference, row by row
    for study, projection, image in zip(frontal["StudyID"], frontal["Projection"],
                                        frontal["ImageID"]):
        key = (rank[projection], image)
        if study not in best or key < best[study]:
            best[study] = key
    assert chosen == {study: image for study, (_, image) in best.items()}


def test_check_on_the_real_table_names_every_missing_image(real_head, capsys):
    folder = real_head[1]
    with pytest.raises(NoUsableImages) as caught:
        load_cohort("padchest", folder)
    stats = caught.value.load.stats
    missing = [p for p in caught.value.load.problems if p.kind == "missing_image"]
    assert stats["rows_listed"] == N_ROWS and stats["images_missing"] == len(missing) > 1000
    assert all(re.search(r"image \d+/\S+\.png not found", p.message) for p in missing)
    assert main(["cohort", "check", "--format", "padchest", "--root", str(folder)]) != 0
    out, err = capsys.readouterr()
    assert re.search(rf"images missing +{len(missing)}\n", out)
    assert f"missing_image ({len(missing)}, skipped)" in out and "more" in out
    assert "Traceback" not in out + err and err.strip().startswith("error:")


# ----------------------------------------------------------------------------- label mapping


def test_every_mapped_finding_exists_in_the_real_release(real_vocabulary):
    assert set(padchest_labels.FINDING_LABELS) <= real_vocabulary
    assert set(padchest_labels.FINDING_LABELS.values()) <= set(CHEXPERT_LABELS)
    assert padchest_labels.TAGS <= real_vocabulary


def test_the_mapping_doc_covers_every_row_and_every_real_finding(real_vocabulary):
    doc = DOC.read_text()
    table = dict(re.findall(r"^\| ([^|]+?) \| ([A-Z][^|]+?) \| [^|]+\|$", doc, re.MULTILINE))
    mapped = {k: v for k, v in table.items() if k in padchest_labels.FINDING_LABELS}
    assert mapped == padchest_labels.FINDING_LABELS  # the doc's table is the code's table
    unmapped = real_vocabulary - set(padchest_labels.FINDING_LABELS)
    section = doc.split("### PadChest findings left unmapped")[1].split("The ones")[0]
    tags, others = section.split("(kept in `findings`):")
    listed = {" ".join(x.split()).strip(" .") for x in others.split(",")}
    listed |= {t.strip("`") for t in re.findall(r"`[^`]+`", tags)}
    assert unmapped <= listed, sorted(unmapped - listed)
    # each of the 14 labels has at least one PadChest row (No Finding by its rule)
    assert set(CHEXPERT_LABELS) - {"No Finding"} <= set(padchest_labels.FINDING_LABELS.values())
    assert all(f"| {label} |" in doc or f"**{label}**" in doc for label in CHEXPERT_LABELS)


def naive_labels(findings: list[str]) -> dict[str, float]:
    """Reference for `padchest.map_labels`, written from the doc's rules."""
    out = dict.fromkeys(CHEXPERT_LABELS, math.nan)
    if "exclude" in findings:
        return out
    for f in findings:
        label = padchest_labels.FINDING_LABELS.get(f)
        if label:
            out[label] = 1.0
    devices = {f for f in findings
               if padchest_labels.FINDING_LABELS.get(f) == "Support Devices"}
    if "normal" in findings and set(findings) - devices <= {"normal", "unchanged",
                                                             "suboptimal study"}:
        out["No Finding"] = 1.0
    return out


def test_map_labels_matches_a_naive_reference(real_release):
    studies, _ = real_release
    cases = studies["findings"].tolist()[:2000] + [
        ["normal"], ["normal", "pacemaker"], ["normal", "scoliosis"], ["exclude"],
        ["exclude", "cardiomegaly"], ["hydropneumothorax"], [], ["unchanged"],
    ]
    got = padchest.map_labels(cases)
    want = pd.DataFrame([naive_labels(c) for c in cases], columns=list(CHEXPERT_LABELS))
    pd.testing.assert_frame_equal(got, want)
    assert got.loc[len(cases) - 8, "No Finding"] == 1.0
    assert got.loc[len(cases) - 6].isna().all()  # normal + scoliosis: No Finding missing


# ----------------------------------------------------------------------------- split


def test_keyed_hash_split_on_the_real_patients(real_columns):
    patients = real_columns["PatientID"]
    split = ids.keyed_hash_split(patients, test_fraction=0.45, seed=0)
    assert (split.groupby(patients).nunique() == 1).all()  # patient-disjoint
    unique = pd.Series(patients.unique())
    first = ids.keyed_hash_split(unique, test_fraction=0.45, seed=0)
    assert abs((first == "test").mean() - 0.45) < 0.01  # 67,625 patients: sd 0.002
    # the same id gets the same split whatever the order or the other ids
    part = unique.iloc[::-7]
    assert ids.keyed_hash_split(part, test_fraction=0.45, seed=0).equals(first.loc[part.index])
    other = ids.keyed_hash_split(unique, test_fraction=0.45, seed=1)
    assert 0.4 < (other != first).mean() < 0.6  # another seed, another (independent) split
    for fraction in (0.0, 0.2, 1.0):
        got = ids.keyed_hash_split(unique[:5000], test_fraction=fraction, seed=3) == "test"
        assert abs(got.mean() - fraction) < 0.03


def test_keyed_hash_split_rejects_a_bad_fraction():
    with pytest.raises(ValueError, match="test_fraction"):
        ids.keyed_hash_split(pd.Series(["a"]), test_fraction=1.5, seed=0)


# ----------------------------------------------------------------------------- fake release


@pytest.mark.parametrize("gz", [False, True])
def test_fake_release_with_images(tmp_path, gz):
    make_padchest(tmp_path, gz=gz)
    load = load_cohort("padchest", tmp_path)
    items = load.items.set_index("study_id")
    assert sorted(items.index) == ["fakeS1", "fakeS2", "fakeS3", "fakeS4", "fakeS5"]
    assert items.at["fakeS3", "image_id"] == "fakeS3_c_pa.png"  # PA before AP
    assert items.at["fakeS2", "view"] == "AP"  # AP_horizontal is an AP
    assert items.at["fakeS1", "image_path"] == "0/fakeS1_pa.png"
    assert items.at["fakeS1", "findings"] == "cardiomegaly;pleural effusion"  # space stripped
    assert items.at["fakeS1", "localizations"] == "loc cardiac;loc left"  # from sentences too
    assert items.loc["fakeS1", ["Cardiomegaly", "Pleural Effusion"]].eq(1.0).all()
    assert items.loc["fakeS2", ["Support Devices", "Pneumonia"]].eq(1.0).all()
    assert items.at["fakeS3", "No Finding"] == 1.0
    assert items.loc["fakeS4", list(CHEXPERT_LABELS)].isna().all()  # exclude
    assert items.at["fakeS4", "report_text"] == items.at["fakeS5", "report_text"]
    s = load.stats
    assert (s["images_listed"], s["images_other_views"], s["images_not_selected"]) == (9, 2, 1)
    assert (s["images_found"], s["images_high_bit_depth"], s["reports_empty"]) == (5, 5, 1)
    assert s["reports_shared"] == 1 and s["patients_kept"] == 3
    empty = [p for p in load.problems if p.kind == "empty_report"]
    assert [(p.row, "fakeS6" in p.message, p.skipped) for p in empty] == [(8, True, True)]
    assert set(items["split"]) <= {"train", "test"}
    assert (items["split"] == ids.keyed_hash_split(items["patient_id"], test_fraction=0.45,
                                                   seed=0)).all()


def test_fake_release_reports_missing_images_and_options(tmp_path):
    make_padchest(tmp_path)
    (tmp_path / "1" / "fakeS3_c_pa.png").unlink()  # the chosen image: study skipped
    load = padchest.load(tmp_path, test_fraction=1.0, seed=5, max_patients=2)
    items = load.items
    assert sorted(items["study_id"]) == ["fakeS1", "fakeS2"]
    assert set(items["split"]) == {"test"}
    missing = [p for p in load.problems if p.kind == "missing_image"]
    assert len(missing) == 1 and "1/fakeS3_c_pa.png" in missing[0].message
    assert missing[0].file == PADCHEST_TABLE and missing[0].row == 5
    note = next(p for p in load.problems if p.kind == "hash_split")
    assert "seed 5" in note.message and "100%" in note.message


def test_missing_required_column_is_one_clear_error(tmp_path, capsys):
    paths = make_padchest(tmp_path)
    header, rows = read_csv_rows(paths["table"])
    keep = [i for i, h in enumerate(header) if h != "Report"]
    write_csv(paths["table"], [header[i] for i in keep], [[r[i] for i in keep] for r in rows])
    assert main(["cohort", "check", "--format", "padchest", "--root", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "'Report'" in err and PADCHEST_TABLE in err and len(err.strip().splitlines()) == 1


def test_sentence_parser_cases():
    assert padchest.parse_by_sentence("nan") == []
    assert padchest.parse_by_sentence("['normal']") == [["normal"]]
    assert padchest.parse_by_sentence("[]") == []
    assert padchest.parse_by_sentence("[nan, ['a', ' b'], [], ['loc x']]") == [
        [], ["a", "b"], [], ["loc x"]]
    assert padchest.parse_list("['', ' pacemaker', 'x']") == ["pacemaker", "x"]
    assert np.all([padchest.parse_list(c) == [] for c in ("nan", "[]", "")])


def test_options_reach_the_loader_through_load_cohort(tmp_path):
    make_padchest(tmp_path)
    load = load_cohort("padchest", tmp_path, test_fraction=0.0, max_patients=1)
    assert set(load.items["patient_id"]) == {"fakeP1"} and set(load.items["split"]) == {"train"}
