"""The `iu-xray` adapter on the original OpenI release: the real report archive (read from the
installed torchxrayvision package, never copied into the repository), the MeSH rules, and
hand-made fake reports in the release's XML layout."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from cohort_fixtures import OPENI_LICENCE, make_iu, make_openi
from engine.cli import main
from engine.cohort import sources
from engine.cohort.adapters import ids, iu_xray, load_cohort, loadlog, openi_labels
from engine.cohort.adapters.assembly import NoUsableImages
from engine.core.labels import CHEXPERT_LABELS

DOC = Path(__file__).resolve().parents[1] / "docs" / "label-mapping.md"


@pytest.fixture(scope="module")
def real_reports():
    log = loadlog.LoadLog()
    return iu_xray.read_openi(sources.openi_reports(), log=log), log


# ----------------------------------------------------------------------------- real release


def test_read_openi_on_the_real_archive(real_reports):
    reports, log = real_reports
    assert len(reports) == 3955 and log.problems == []
    assert reports["report_id"].is_unique
    assert (reports["uid"] == "CXR" + reports["report_id"]).all()
    assert (reports["licence"] == OPENI_LICENCE).all()  # CC BY-NC-ND, stated in every XML
    image_ids = [i for ids_ in reports["image_ids"] for i in ids_]
    assert len(image_ids) == len(set(image_ids)) > 7000
    for number, ids_ in zip(reports["report_id"], reports["image_ids"]):
        assert all(re.fullmatch(rf"CXR{number}_(\d+_)?IM-\d+-\d+(-\d+)?", i) for i in ids_)
    assert (reports["findings"] != "").sum() > 3000 and (reports["impression"] != "").sum() > 3500
    assert reports["normal"].sum() > 1000
    assert all(len(m) == len(t) for m, t in zip(reports["mesh"], reports["mesh_major"]))


def test_parse_mesh_puts_every_qualifier_somewhere(real_reports):
    reports, _ = real_reports
    for tags, parsed in zip(reports["mesh_major"], reports["mesh"]):
        for tag, p in zip(tags, parsed):
            parts = [x.strip().lower() for x in tag.split("/")[1:] if x.strip()]
            got = [x for k in ("location", "laterality", "severity", "attributes")
                   for x in p[k].split("/") if x]
            assert sorted(got) == sorted(parts) and p["term"] == tag.split("/")[0].strip()
            assert set(p["laterality"].split("/")) <= openi_labels.LATERALITY | {""}


def test_every_mesh_rule_fires_on_a_real_report(real_reports):
    reports, _ = real_reports
    parsed = [[iu_xray._term_and_qualifiers(t) for t in tags] for tags in reports["mesh_major"]]
    for term, qualifier, label in openi_labels.MESH_RULES:
        assert label in CHEXPERT_LABELS
        assert any(t == term and (not qualifier or qualifier in q)
                   for tags in parsed for t, q in tags), (term, qualifier)


def test_the_mapping_doc_lists_every_mesh_rule():
    doc = DOC.read_text().split("## IU X-ray / OpenI")[1]
    rows = re.findall(r"^\|([^|]+)\|([^|]*)\|([^|]+)\|[^|]+\|$", doc, re.MULTILINE)
    documented = {(t.strip().lower(), q.strip().lower(), label.strip())
                  for t, q, labels in rows[2:] for label in labels.split(",")}  # after the head
    assert documented == set(openi_labels.MESH_RULES)


def test_check_on_the_real_archive_names_every_missing_image(tmp_path, capsys):
    # A copy, not a link: a link leading out of the cohort root is refused (engine.files).
    shutil.copyfile(sources.openi_reports(), tmp_path / "NLMCXR_reports.tgz")
    with pytest.raises(NoUsableImages) as caught:
        load_cohort("iu-xray", tmp_path)
    load = caught.value.load
    missing = [p for p in load.problems if p.kind == "missing_image"]
    assert load.stats["images_listed"] == load.stats["images_missing"] == len(missing) > 7000
    assert all(re.fullmatch(r"ecgen-radiology/\d+\.xml", p.file) for p in missing)
    assert all("NLMCXR_png/CXR" in p.message for p in missing)
    assert load.stats["studies_listed"] == 3955
    assert any(p.kind == "missing_views" for p in load.problems)
    assert main(["cohort", "check", "--format", "iu-xray", "--root", str(tmp_path)]) != 0
    out, err = capsys.readouterr()
    assert re.search(rf"images missing +{len(missing)}\n", out) and "studies listed" in out
    assert "Traceback" not in out + err and err.strip().startswith("error:")


# ----------------------------------------------------------------------------- fake release


@pytest.mark.parametrize("archive", [False, True])
def test_fake_openi_release_with_images(tmp_path, archive):
    make_openi(tmp_path, archive=archive)
    load = load_cohort("iu-xray", tmp_path)
    items = load.items.set_index("image_id")
    assert sorted(items["study_id"].unique()) == ["12", "30", "7"]
    assert items.at["CXR7_IM-0001-1001", "image_path"] == "NLMCXR_png/CXR7_IM-0001-1001.png"
    assert items.at["CXR7_IM-0001-1001", "view"] == "PA"
    assert items.at["CXR7_IM-0001-2001", "view"] == "LATERAL"
    assert items.at["CXR12_IM-0002-1001", "view"] == ""  # no view position recorded
    assert (items["patient_id"] == items["study_id"]).all()
    assert (items["split"] == items["study_id"].map(ids.hash_split)).all()
    labels = load.items.drop_duplicates("study_id").set_index("study_id")[list(CHEXPERT_LABELS)]
    assert labels.loc["7", "No Finding"] == 1.0 and labels.loc["7"].drop("No Finding").isna().all()
    assert labels.loc["12", ["Cardiomegaly", "Lung Opacity", "Pleural Other"]].eq(1.0).all()
    assert labels.loc["30", ["Pleural Effusion", "Support Devices"]].eq(1.0).all()
    assert math.isnan(labels.loc["30", "Lung Lesion"])  # Calcified Granuloma maps to nothing
    assert items.at["CXR7_IM-0001-1001", "report_text"] == (
        "Fake findings: lungs clear.\nFake impression: normal XXXX.")
    lonely = [p for p in load.problems if p.kind == "study_without_images"]
    assert [(p.file, p.row) for p in lonely] == [("ecgen-radiology/41.xml", None)]
    assert load.stats["studies_listed"] == 4 and load.stats["images_found"] == 5


def test_fake_openi_sections_and_missing_views(tmp_path):
    make_openi(tmp_path, views=False)
    texts = {s: load_cohort("iu-xray", tmp_path, section=s).items.set_index("image_id")
             for s in ("findings", "impression", "full")}
    key = "CXR30_1_IM-0003-3001"
    assert texts["findings"]["report_text"][key] == "Fake impression: effusion, line in place."
    assert texts["full"]["report_text"]["CXR12_IM-0002-1001"].startswith(
        "INDICATION: Fake indication.\nCOMPARISON: None.\nFINDINGS: Fake findings")
    assert (texts["impression"]["view"] == "").all()
    load = load_cohort("iu-xray", tmp_path)
    assert [p.kind for p in load.problems if not p.skipped] == ["missing_views"]


def test_fake_openi_missing_image_and_bad_xml(tmp_path):
    paths = make_openi(tmp_path)
    (tmp_path / "NLMCXR_png" / "CXR12_IM-0002-1001.png").unlink()
    (paths["xml_dir"] / "99.xml").write_text("<eCitation><MeSH>")  # truncated
    load = load_cohort("iu-xray", tmp_path)
    assert "12" not in set(load.items["study_id"])
    missing = [p for p in load.problems if p.kind == "missing_image"]
    assert [(p.file, "NLMCXR_png/CXR12_IM-0002-1001.png" in p.message) for p in missing] == [
        ("ecgen-radiology/12.xml", True)]
    bad = [p for p in load.problems if p.kind == "bad_report_xml"]
    assert [p.file for p in bad] == ["ecgen-radiology/99.xml"] and bad[0].skipped


def test_read_openi_folder_forms_and_limit(tmp_path):
    paths = make_openi(tmp_path)
    by_root = iu_xray.read_openi(tmp_path)
    by_dir = iu_xray.read_openi(paths["xml_dir"])
    assert by_root["report_id"].tolist() == by_dir["report_id"].tolist() == ["7", "12", "30", "41"]
    assert iu_xray.read_openi(tmp_path, max_reports=2)["report_id"].tolist() == ["7", "12"]
    first = by_root.iloc[1]
    assert first["mesh"][1] == {"term": "Opacity", "location": "lung/base",
                                "laterality": "left", "severity": "mild", "attributes": ""}
    assert first["image_ids"] == ["CXR12_IM-0002-1001"] and first["mesh_automatic"] == ["fake"]


def test_no_release_found_is_one_clear_error(tmp_path, capsys):
    assert main(["cohort", "check", "--format", "iu-xray", "--root", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "ecgen-radiology" in err and "indiana_reports.csv" in err
    assert len(err.strip().splitlines()) == 1


def test_kaggle_layout_still_read_with_the_mesh_rules(tmp_path):
    make_iu(tmp_path)
    labels = load_cohort("iu-xray", tmp_path).items.drop_duplicates("study_id")
    labels = labels.set_index("study_id")[list(CHEXPERT_LABELS)]
    assert labels.loc["2", "Cardiomegaly"] == 1.0 and labels.loc["1", "No Finding"] == 1.0
    got = iu_xray.mesh_labels(["Hydropneumothorax/left"], ["Nodule"])
    want = np.full(len(CHEXPERT_LABELS), np.nan)
    for label in ("Pneumothorax", "Pleural Effusion", "Lung Lesion"):
        want[CHEXPERT_LABELS.index(label)] = 1.0
    np.testing.assert_array_equal(got, want)
    assert np.isnan(iu_xray.mesh_labels(["Cicatrix/bone"])).all()  # qualifier rule: lung only
