"""Tiny cohorts in the real releases' layouts, built in a temporary folder by code.

Each builder writes a small, valid dataset and returns the paths a test may break (overwrite a
table, corrupt an image, remove a report) before loading it.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

from PIL import Image

from engine.core.labels import CHEXPERT_LABELS

MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough  // eval for pneumonia

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  The
 cardiomediastinal silhouette is {heart}.

 IMPRESSION:

 No acute cardiopulmonary process.
"""


def image_bytes(fmt: str = "JPEG", size: int = 24, value: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (size, size), value).save(buf, format=fmt)
    return buf.getvalue()


def write_image(path: Path, fmt: str = "JPEG", value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(fmt, value=value))
    return path


def write_csv(path: Path, header: list[str], rows: list[list], *, gz: bool | None = None) -> Path:
    """Write a CSV table (gzip-compressed when the name ends in .gz)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    data = buf.getvalue().encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    compress = gz if gz is not None else path.suffix == ".gz"
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def read_csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    raw = path.read_bytes()
    text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], rows[1:]


# ----------------------------------------------------------------------------- MIMIC-CXR-JPG

# (subject_id, study_id, dicom_id, ViewPosition, split)
MIMIC_IMAGES = [
    ("10000032", "50414267", "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "PA", "train"),
    ("10000032", "50414267", "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "LATERAL", "train"),
    ("10000032", "53189527", "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "AP", "train"),
    ("10000764", "57375967", "096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4", "AP", "test"),
    ("10000764", "57375967", "8959e402-2175d68d-edba5a6c-520e1f3f-b8c4d1ee", "LL", "test"),
    ("10000898", "50771383", "3b6d2b2a-1b5b7b1e-6a1c6f5e-2b7a0c9d-5e4f3a2b", "PA", "validate"),
]
MIMIC_META = "mimic-cxr-2.0.0-metadata.csv.gz"
MIMIC_SPLIT = "mimic-cxr-2.0.0-split.csv.gz"
MIMIC_LABELS = "mimic-cxr-2.0.0-chexpert.csv.gz"
MIMIC_LABEL_ORDER = sorted(CHEXPERT_LABELS)  # the release's alphabetical column order


def mimic_image_rel(subject: str, study: str, dicom: str) -> str:
    return f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg"


def mimic_report_rel(subject: str, study: str) -> str:
    return f"files/p{subject[:2]}/p{subject}/s{study}.txt"


def make_mimic(root: Path, *, gz: bool = True) -> dict[str, Path]:
    """A 3-patient, 4-study, 6-image MIMIC-CXR-JPG tree with reports, split and labels."""
    ext = ".csv.gz" if gz else ".csv"
    meta_rows, split_rows = [], []
    for subject, study, dicom, view, split in MIMIC_IMAGES:
        write_image(root / mimic_image_rel(subject, study, dicom))
        meta_rows.append([dicom, subject, study, "CHEST (PA AND LAT)", view, 24, 24, "21800506",
                          "213014.531", "CHEST (PA AND LAT)", "postero-anterior", "Erect"])
        split_rows.append([dicom, study, subject, split])
    studies = sorted({(s[0], s[1]) for s in MIMIC_IMAGES})
    for subject, study in studies:
        path = root / mimic_report_rel(subject, study)
        path.write_text(MIMIC_REPORT.format(heart=f"normal ({study})"))
    label_rows = []
    for i, (subject, study) in enumerate(studies):
        values = {label: "" for label in CHEXPERT_LABELS}
        values["No Finding"] = "1.0" if i % 2 == 0 else ""
        values["Cardiomegaly"] = "" if i % 2 == 0 else "-1.0"
        values["Pleural Effusion"] = "0.0"
        label_rows.append([subject, study, *[values[k] for k in MIMIC_LABEL_ORDER]])
    paths = {
        "meta": write_csv(
            root / MIMIC_META.replace(".csv.gz", ext),
            ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
             "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime",
             "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
             "PatientOrientationCodeSequence_CodeMeaning"],
            meta_rows,
        ),
        "split": write_csv(
            root / MIMIC_SPLIT.replace(".csv.gz", ext),
            ["dicom_id", "study_id", "subject_id", "split"], split_rows,
        ),
        "labels": write_csv(
            root / MIMIC_LABELS.replace(".csv.gz", ext),
            ["subject_id", "study_id", *MIMIC_LABEL_ORDER], label_rows,
        ),
    }
    return paths


# ----------------------------------------------------------------------------- CheXpert Plus

CXP_TABLE = "df_chexpert_plus_240401.csv"
CXP_COLUMNS = [
    "path_to_image", "path_to_dcm", "frontal_lateral", "ap_pa", "deid_patient_id",
    "patient_report_date_order", "report", "section_narrative", "section_clinical_history",
    "section_history", "section_comparison", "section_technique", "section_procedure_comments",
    "section_findings", "section_impression", "section_end_of_impression", "section_summary",
    "section_accession_number", "age", "sex", "race", "ethnicity", "interpreter_needed",
    "insurance_type", "recent_bmi", "deceased", "split",
]
# (path_to_image, frontal_lateral, ap_pa, patient, date order, findings, impression, split)
CXP_IMAGES = [
    ("train/patient00001/study1/view1_frontal.jpg", "Frontal", "PA", "patient00001", 1,
     "Heart size is normal. Lungs are clear.", "No acute disease.", "train"),
    ("train/patient00001/study1/view2_lateral.jpg", "Lateral", "", "patient00001", 1,
     "Heart size is normal. Lungs are clear.", "No acute disease.", "train"),
    ("train/patient00001/study2/view1_frontal.jpg", "Frontal", "AP", "patient00001", 2,
     "", "Small left pleural effusion.", "train"),
    ("valid/patient64541/study1/view1_frontal.jpg", "Frontal", "AP", "patient64541", 1,
     "Mild cardiomegaly.", "Cardiomegaly, otherwise clear.", "valid"),
]


def cxp_report(findings: str, impression: str) -> str:
    parts = ["NARRATIVE:\nCHEST 2 VIEWS", "CLINICAL HISTORY: Cough."]
    if findings:
        parts.append(f"FINDINGS:\n{findings}")
    parts.append(f"IMPRESSION:\n1. {impression}")
    return "\n\n".join(parts)


def cxp_rows() -> list[list]:
    rows = []
    for path, fl, ap_pa, patient, order, findings, impression, split in CXP_IMAGES:
        row = dict.fromkeys(CXP_COLUMNS, "")
        row.update(
            path_to_image=path, path_to_dcm=path.replace(".jpg", ".dcm"), frontal_lateral=fl,
            ap_pa=ap_pa, deid_patient_id=patient, patient_report_date_order=order,
            report=cxp_report(findings, impression), section_findings=findings,
            section_impression=f"1. {impression}", split=split,
        )
        rows.append([row[c] for c in CXP_COLUMNS])
    return rows


def cxp_label_record(path: str, **values: float | None) -> dict:
    record: dict = {"path_to_image": path}
    record.update(dict.fromkeys(CHEXPERT_LABELS))
    record.update({k.replace("_", " "): v for k, v in values.items()})
    return record


def make_chexpert_plus(root: Path, *, image_ext: str = ".png") -> dict[str, Path]:
    """A 2-patient, 3-study, 4-image CheXpert Plus tree: table lists .jpg, disk holds .png."""
    for path, *_ in CXP_IMAGES:
        fmt = "PNG" if image_ext == ".png" else "JPEG"
        write_image(root / Path(path).with_suffix(image_ext), fmt)
    table = write_csv(root / CXP_TABLE, CXP_COLUMNS, cxp_rows())
    records = [
        cxp_label_record(CXP_IMAGES[0][0], No_Finding=1.0),
        cxp_label_record(CXP_IMAGES[1][0], No_Finding=1.0),
        cxp_label_record(CXP_IMAGES[2][0], Pleural_Effusion=1.0, Cardiomegaly=0.0),
        cxp_label_record(CXP_IMAGES[3][0], Cardiomegaly=-1.0),
    ]
    labels = root / "report_fixed.json"
    labels.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return {"table": table, "labels": labels}


# ----------------------------------------------------------------------------- IU X-ray

IU_REPORTS = [
    # uid, MeSH, Problems, image, indication, comparison, findings, impression
    ["1", "normal", "normal", "Chest two views", "Fake indication, XXXX.", "None.",
     "Fake findings: heart and lungs drawn normal.", "Fake impression: normal XXXX."],
    ["2", "Cardiomegaly/borderline;Pulmonary Artery/enlarged", "Cardiomegaly;Pulmonary Artery",
     "Chest, 2 views", "XXXX-year-old male, chest pain.", "", "Borderline cardiomegaly.",
     "No acute pulmonary findings."],
    ["3", "Pleural Effusion/left/small;Catheters, Indwelling",
     "Pleural Effusion;Catheters, Indwelling", "PA and lateral", "Dyspnea", "", "",
     "Small left effusion. Catheter in place."],
    ["4", "Granulomatous Disease", "Granulomatous Disease", "PA", "", "", "Calcified granuloma.",
     "No active disease."],
]
IU_PROJECTIONS = [
    ["1", "1_IM-0001-4001.dcm.png", "Frontal"],
    ["1", "1_IM-0001-3001.dcm.png", "Lateral"],
    ["2", "2_IM-0652-1001.dcm.png", "Frontal"],
    ["2", "2_IM-0652-2001.dcm.png", "Lateral"],
    ["3", "3_IM-1384-1001.dcm.png", "Frontal"],
    ["4", "4_IM-2050-1001.dcm.png", "Lateral"],
]
IU_REPORT_COLUMNS = ["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings",
                     "impression"]


def make_iu(root: Path) -> dict[str, Path]:
    """A 4-study, 6-image IU X-ray tree in the Kaggle layout."""
    for _, filename, _ in IU_PROJECTIONS:
        write_image(root / "images" / "images_normalized" / filename, "PNG")
    return {
        "reports": write_csv(root / "indiana_reports.csv", IU_REPORT_COLUMNS, IU_REPORTS),
        "projections": write_csv(
            root / "indiana_projections.csv", ["uid", "filename", "projection"], IU_PROJECTIONS
        ),
    }


# ----------------------------------------------------------------------------- user CSV

CSV_REPORT = "FINDINGS: Lungs are clear.\nIMPRESSION: No acute process."


def make_csv(root: Path, rows: list[dict] | None = None, name: str = "cohort.csv") -> Path:
    """A user cohort table; default: 2 patients, 3 images, images under img/."""
    if rows is None:
        rows = [
            {"image_path": "img/a.jpg", "report_text": CSV_REPORT, "patient_id": "P1",
             "study_id": "S1", "view": "pa", "split": "train", "Cardiomegaly": "1"},
            {"image_path": "img/b.jpg", "report_text": CSV_REPORT, "patient_id": "P1",
             "study_id": "S1", "view": "lateral", "split": "train", "Cardiomegaly": "1"},
            {"image_path": "img/c.png", "report_text": "Heart is enlarged.", "patient_id": "P2",
             "study_id": "S2", "view": "AP", "split": "valid", "Cardiomegaly": ""},
        ]
    header = list(dict.fromkeys(k for r in rows for k in r))
    for r in rows:
        rel = r.get("image_path", "")
        if rel and not (root / rel).exists():
            write_image(root / rel, "PNG" if rel.endswith(".png") else "JPEG")
    return write_csv(root / name, header, [[r.get(k, "") for k in header] for r in rows])


# ----------------------------------------------------------------------------- PadChest

# Hand-written, clearly fake rows in the real table's layout (a subset of its 36 columns, in
# its order). Reports imitate the release's form only (lower case, stemmed, " . " between
# sentences). Columns: ImageID, ImageDir, StudyDate_DICOM, StudyID, PatientID, PatientBirth,
# PatientSex_DICOM, Projection, Pediatric, BitsStored_DICOM, ReportID, Report, MethodLabel,
# Labels, Localizations, LabelsLocalizationsBySentence
PADCHEST_COLUMNS = [
    "Unnamed: 0", "ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID",
    "PatientBirth", "PatientSex_DICOM", "ViewPosition_DICOM", "Projection", "Pediatric",
    "BitsStored_DICOM", "ReportID", "Report", "MethodLabel", "Labels", "Localizations",
    "LabelsLocalizationsBySentence",
]
PADCHEST_ROWS = [
    # patient fakeP1: study S1 (PA + lateral), study S2 (AP_horizontal, devices)
    ["fakeS1_pa.png", "0", "20150102", "fakeS1", "fakeP1", "1950.0", "M", "nan", "PA", "No",
     "12", "9001", " fake cardiomegali . sin derram .", "Physician",
     "['cardiomegaly', ' pleural effusion']", "['loc cardiac']",
     "[['cardiomegaly', 'loc cardiac'], nan, [' pleural effusion', 'loc left']]"],
    ["fakeS1_lat.png", "0", "20150102", "fakeS1", "fakeP1", "1950.0", "M", "nan", "L", "No",
     "12", "9001", " fake cardiomegali . sin derram .", "Physician",
     "['cardiomegaly', ' pleural effusion']", "['loc cardiac']",
     "[['cardiomegaly', 'loc cardiac'], nan, [' pleural effusion', 'loc left']]"],
    ["fakeS2_ap.png", "1", "20160304", "fakeS2", "fakeP1", "1950.0", "M", "nan",
     "AP_horizontal", "No", "10", "9002", "fake sond nasogastr . fake via central .",
     "RNN_model", "['NSG tube', 'central venous catheter via jugular vein', ' pneumonia']",
     "['loc gastric chamber', 'loc right']",
     "['NSG tube', 'loc gastric chamber', 'central venous catheter via jugular vein', "
     "'loc right', ' pneumonia', 'loc basal']"],
    # patient fakeP2: study S3 with both AP and PA (PA is chosen), a normal report
    ["fakeS3_b_ap.png", "1", "20170506", "fakeS3", "fakeP2", "1985.0", "F", "nan", "AP", "No",
     "12", "9003", "fake sin alter .", "RNN_model", "['normal']", "[]", "['normal']"],
    ["fakeS3_c_pa.png", "1", "20170506", "fakeS3", "fakeP2", "1985.0", "F", "nan", "PA", "No",
     "12", "9003", "fake sin alter .", "RNN_model", "['normal']", "[]", "['normal']"],
    # patient fakeP3: S4 'exclude', S5 shares S4's report id (same-day), S6 has no report
    ["fakeS4_pa.png", "0", "20180708", "fakeS4", "fakeP3", "", "O", "nan", "PA", "PED",
     "12", "9004", "fake impresion", "RNN_model", "['exclude']", "[]", "['exclude']"],
    ["fakeS5_pa.png", "0", "20180708", "fakeS5", "fakeP3", "", "O", "nan", "PA", "PED",
     "12", "9004", "fake impresion", "RNN_model", "['exclude']", "[]", "['exclude']"],
    ["fakeS6_pa.png", "0", "20190910", "fakeS6", "fakeP3", "", "O", "nan", "PA", "PED",
     "12", "9005", "nan", "RNN_model", "nan", "nan", "nan"],
    # patient fakeP4: a lateral-only study (never used)
    ["fakeS7_lat.png", "2", "20120101", "fakeS7", "fakeP4", "1940.0", "F", "nan", "L", "No",
     "12", "9006", "fake escoliosi .", "RNN_model", "['scoliosis']", "[]", "['scoliosis']"],
]
PADCHEST_TABLE = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"


def write_png16(path: Path, value: int = 2000, size: int = 24) -> Path:
    """A 16-bit grayscale PNG (PadChest's format; 12 bits used)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("I;16", (size, size), value).save(path, format="PNG")
    return path


def make_padchest(root: Path, *, gz: bool = False, images: bool = True) -> dict[str, Path]:
    """A 4-patient, 7-study fake PadChest release: table + 16-bit PNGs at ImageDir/ImageID."""
    rows = [[str(i)] + r for i, r in enumerate(PADCHEST_ROWS)]
    name = PADCHEST_TABLE + (".gz" if gz else "")
    table = write_csv(root / name, PADCHEST_COLUMNS, rows)
    if images:
        for r in PADCHEST_ROWS:
            write_png16(root / r[1] / r[0])
    return {"table": table}


# ----------------------------------------------------------------------------- OpenI original

# Hand-written, clearly fake reports in the OpenI XML layout: (number, findings, impression,
# MeSH major tags, image ids).
OPENI_REPORTS = [
    ("7", "Fake findings: lungs clear.", "Fake impression: normal XXXX.", ["normal"],
     ["CXR7_IM-0001-1001", "CXR7_IM-0001-2001"]),
    ("12", "Fake findings: heart large.", "Fake impression: cardiomegaly.",
     ["Cardiomegaly/mild", "Opacity/lung/base/left/mild", "Thickening/pleura/right"],
     ["CXR12_IM-0002-1001"]),
    ("30", "", "Fake impression: effusion, line in place.",
     ["Pleural Effusion/right/small", "Catheters, Indwelling", "Calcified Granuloma"],
     ["CXR30_1_IM-0003-3001", "CXR30_1_IM-0003-4001"]),
    ("41", "Fake findings: no image was kept.", "Fake impression.", ["Scoliosis"], []),
]
# image id -> DICOM View Position, as the optional metadata table gives it
OPENI_VIEWS = {"CXR7_IM-0001-1001": "PA", "CXR7_IM-0001-2001": "LL", "CXR12_IM-0002-1001": "",
               "CXR30_1_IM-0003-3001": "LATERAL", "CXR30_1_IM-0003-4001": "AP"}
OPENI_LICENCE = "http://creativecommons.org/licenses/by-nc-nd/4.0/"


def openi_xml(number: str, findings: str, impression: str, major: list[str],
              images: list[str]) -> str:
    """One fake report in the OpenI ecgen-radiology XML layout."""
    sections = "".join(
        f'<AbstractText Label="{label}">{text}</AbstractText>'
        for label, text in (("COMPARISON", "None."), ("INDICATION", "Fake indication."),
                            ("FINDINGS", findings), ("IMPRESSION", impression))
    )
    mesh = "".join(f"<major>{tag}</major>" for tag in major)
    parents = "".join(f'<parentImage id="{i}"><caption>Fake</caption></parentImage>'
                      for i in images)
    return (f'<?xml version="1.0" encoding="utf-8"?><eCitation><uId id="CXR{number}"/>'
            f"<licenseURL>{OPENI_LICENCE}</licenseURL><MedlineCitation><Article><Abstract>"
            f"{sections}</Abstract></Article></MedlineCitation><MeSH>{mesh}"
            f"<automatic>fake</automatic></MeSH>{parents}</eCitation>")


def make_openi(root: Path, *, archive: bool = False, views: bool = True,
               images: bool = True) -> dict[str, Path]:
    """A 4-report fake OpenI release: ecgen-radiology/*.xml (or its .tgz) + NLMCXR_png/."""
    import tarfile

    xml_dir = root / "ecgen-radiology"
    xml_dir.mkdir(parents=True, exist_ok=True)
    for number, findings, impression, major, ids in OPENI_REPORTS:
        (xml_dir / f"{number}.xml").write_text(openi_xml(number, findings, impression, major,
                                                          ids))
        if images:
            for image_id in ids:
                write_image(root / "NLMCXR_png" / f"{image_id}.png", "PNG")
    paths = {"xml_dir": xml_dir}
    if archive:
        tgz = root / "NLMCXR_reports.tgz"
        with tarfile.open(tgz, "w:gz") as tar:
            tar.add(xml_dir, arcname="ecgen-radiology")
        for file in xml_dir.iterdir():
            file.unlink()
        xml_dir.rmdir()
        paths = {"archive": tgz}
    if views:
        paths["views"] = write_csv(
            root / "nlmcxr_dicom_metadata.csv.gz", ["imageid", "View Position", "filename"],
            [[i, v, f"./{i[3:]}.dcm"] for i, v in OPENI_VIEWS.items()],
        )
    return paths
