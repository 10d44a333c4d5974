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

from engine.labels import CHEXPERT_LABELS

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
    ["1", "normal", "normal", "Xray Chest PA and Lateral", "Positive TB test", "None.",
     "The cardiac silhouette and mediastinum size are within normal limits.",
     "Normal chest x-XXXX."],
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
