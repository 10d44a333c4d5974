"""On-disk layouts of the two phantom sites, following the real releases' names and columns.

Site A, MIMIC-CXR-JPG v2.0.0 + MIMIC-CXR reports::

    files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg
    files/p10/p10000032/s50414267.txt
    mimic-cxr-2.0.0-metadata.csv.gz   dicom_id, subject_id, study_id, PerformedProcedureStepDescription,
                                      ViewPosition, Rows, Columns, StudyDate, StudyTime,
                                      ProcedureCodeSequence_CodeMeaning, ViewCodeSequence_CodeMeaning,
                                      PatientOrientationCodeSequence_CodeMeaning
    mimic-cxr-2.0.0-chexpert.csv.gz   subject_id, study_id, then the 14 labels in alphabetical order
                                      (1.0 / 0.0 / -1.0 / blank)
    mimic-cxr-2.0.0-split.csv.gz      dicom_id, study_id, subject_id, split (train / validate / test)
    IMAGE_FILENAMES                   one image path per line, relative to the root

Site B, CheXpert Plus::

    df_chexpert_plus_240401.csv       the 27 columns of the release, one row per image
    report_fixed.json                 CheXbert labels of the full report, JSON lines keyed by
                                      path_to_image, values 1 / 0 / -1 / null
    train/patient00001/study1/view1_frontal.png   (listed as .jpg in path_to_image; the release
                                      ships PNG, adapters map the extension)

Both roots get a ``README.txt`` saying the data is synthetic. Every file is byte-deterministic:
gzip headers carry no name or time, CSV line endings are ``\\n``, images have no metadata.
"""

from __future__ import annotations

import gzip
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from engine.core.labels import CHEXPERT_LABELS

MIMIC_LABELS: tuple[str, ...] = tuple(sorted(CHEXPERT_LABELS))
"""The 14 labels in the order of ``mimic-cxr-2.0.0-chexpert.csv.gz`` (alphabetical)."""
MIMIC_METADATA_COLUMNS: tuple[str, ...] = (
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)
MIMIC_SPLIT_COLUMNS: tuple[str, ...] = ("dicom_id", "study_id", "subject_id", "split")
CHEXPERT_PLUS_COLUMNS: tuple[str, ...] = (
    "path_to_image",
    "path_to_dcm",
    "frontal_lateral",
    "ap_pa",
    "deid_patient_id",
    "patient_report_date_order",
    "report",
    "section_narrative",
    "section_clinical_history",
    "section_history",
    "section_comparison",
    "section_technique",
    "section_procedure_comments",
    "section_findings",
    "section_impression",
    "section_end_of_impression",
    "section_summary",
    "section_accession_number",
    "age",
    "sex",
    "race",
    "ethnicity",
    "interpreter_needed",
    "insurance_type",
    "recent_bmi",
    "deceased",
    "split",
)
MIMIC_FILES = (
    "mimic-cxr-2.0.0-metadata.csv.gz",
    "mimic-cxr-2.0.0-chexpert.csv.gz",
    "mimic-cxr-2.0.0-split.csv.gz",
    "IMAGE_FILENAMES",
)
CHEXPERT_PLUS_FILES = ("df_chexpert_plus_240401.csv", "report_fixed.json")
VIEW_MEANING = {
    "PA": "postero-anterior",
    "AP": "antero-posterior",
    "LATERAL": "lateral",
    "LL": "left lateral",
}


# --------------------------------------------------------------------------- ids and paths


def dicom_id(rng: np.random.Generator) -> str:
    """A MIMIC-style image id: five groups of eight lower-case hex digits."""
    return "-".join(f"{int(v):08x}" for v in rng.integers(0, 2**32, 5, dtype=np.uint64))


def mimic_study_dir(subject_id: int, study_id: int) -> str:
    s = str(subject_id)
    return f"files/p{s[:2]}/p{s}/s{study_id}"


def mimic_image_path(subject_id: int, study_id: int, dicom: str) -> str:
    return f"{mimic_study_dir(subject_id, study_id)}/{dicom}.jpg"


def mimic_report_path(subject_id: int, study_id: int) -> str:
    return f"{mimic_study_dir(subject_id, study_id)}.txt"


def chexpert_plus_path(split: str, patient: int, study: int, view: int, frontal: bool) -> str:
    """The ``path_to_image`` of CheXpert Plus (``.jpg``; the file on disk is ``.png``)."""
    kind = "frontal" if frontal else "lateral"
    return f"{split}/patient{patient:05d}/study{study}/view{view}_{kind}.jpg"


def png_for(path_to_image: str) -> str:
    return path_to_image[: -len(".jpg")] + ".png"


# --------------------------------------------------------------------------- writers


def write_image(root: Path, relpath: str, pixels: np.ndarray, *, fmt: str) -> None:
    """Write a ``uint8 (S, S)`` image as 8-bit grayscale JPEG (quality 95) or PNG."""
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))
    if fmt == "JPEG":
        img.save(path, format="JPEG", quality=95)
    else:
        img.save(path, format="PNG", compress_level=1)


def write_text(root: Path, relpath: str, text: str) -> None:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    frame.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue().encode("utf-8")


def write_csv_gz(path: Path, frame: pd.DataFrame) -> None:
    """Gzipped CSV with an empty file name and mtime 0 in the header (byte-deterministic)."""
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(_csv_bytes(frame))


def write_site_a_tables(
    root: Path, metadata: list[dict], labels: list[dict], splits: list[dict]
) -> None:
    """The MIMIC-CXR-JPG tables (see the module docstring), rows sorted by ids."""
    meta = pd.DataFrame(metadata, columns=list(MIMIC_METADATA_COLUMNS))
    meta = meta.sort_values(["subject_id", "study_id", "dicom_id"], kind="stable")
    write_csv_gz(root / "mimic-cxr-2.0.0-metadata.csv.gz", meta)
    lab = pd.DataFrame(labels, columns=["subject_id", "study_id", *MIMIC_LABELS])
    for col in MIMIC_LABELS:
        lab[col] = pd.to_numeric(lab[col]).astype("float64")
    lab = lab.sort_values(["subject_id", "study_id"], kind="stable")
    write_csv_gz(root / "mimic-cxr-2.0.0-chexpert.csv.gz", lab)
    split = pd.DataFrame(splits, columns=list(MIMIC_SPLIT_COLUMNS))
    split = split.sort_values(["subject_id", "study_id", "dicom_id"], kind="stable")
    write_csv_gz(root / "mimic-cxr-2.0.0-split.csv.gz", split)
    paths = [
        mimic_image_path(r["subject_id"], r["study_id"], r["dicom_id"])
        for r in meta.to_dict("records")
    ]
    (root / "IMAGE_FILENAMES").write_bytes(("\n".join(paths) + "\n").encode())


def write_site_b_tables(root: Path, rows: list[dict], labels: list[dict]) -> None:
    """``df_chexpert_plus_240401.csv`` and ``report_fixed.json`` (rows in path order)."""
    frame = pd.DataFrame(rows, columns=list(CHEXPERT_PLUS_COLUMNS))
    frame["recent_bmi"] = pd.to_numeric(frame["recent_bmi"]).astype("float64")
    frame = frame.sort_values("path_to_image", kind="stable", key=_natural_key)
    (root / "df_chexpert_plus_240401.csv").write_bytes(_csv_bytes(frame))
    order = {p: i for i, p in enumerate(frame["path_to_image"])}
    lines = []
    for rec in sorted(labels, key=lambda r: order[r["path_to_image"]]):
        clean = {"path_to_image": rec["path_to_image"]}
        for label in CHEXPERT_LABELS:
            v = rec.get(label)
            clean[label] = None if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)
        lines.append(json.dumps(clean))
    (root / "report_fixed.json").write_bytes(("\n".join(lines) + "\n").encode())


def _natural_key(col: pd.Series) -> pd.Series:
    # train/patient00012/study10/view1 sorts after study9: pad the study and view numbers
    return col.str.replace(r"study(\d+)", lambda m: f"study{int(m.group(1)):04d}", regex=True)


def write_readme(
    root: Path,
    *,
    site: str,
    seed: int,
    patients: int,
    image_size: int,
    version: str,
    n_studies: int,
    n_images: int,
) -> None:
    layout = (
        "MIMIC-CXR-JPG v2.0.0 + MIMIC-CXR reports"
        if site == "A"
        else "CHEXPERT PLUS (df_chexpert_plus_240401.csv + report_fixed.json, images as PNG)"
    )
    splits = (
        "train / validate / test, patient-disjoint, about 70 / 5 / 25 % of patients"
        if site == "A"
        else "train / valid, patient-disjoint, about 75 / 25 % of patients (unlike the real "
        "release, where nearly everything is train)"
    )
    # "engine.cohort.synth" is the generator's name as written into every cohort since version 1
    # (now the package synthetic.cohort); kept so a regenerated cohort keeps the same bytes.
    text = f"""SYNTHETIC (PHANTOM) DATA - NOT REAL PATIENTS

This folder was written by the re-linkage audit's phantom cohort generator
(engine.cohort.synth, generator version {version}). Every image is a rendered
phantom radiograph and every report is generated text; no real patient data
was used. Names, ids and dates only imitate the layout of the real release.

site:        {site}
layout:      {layout}
seed:        {seed}
patients:    {patients}
studies:     {n_studies}
images:      {n_images}
image size:  {image_size} x {image_size}, 8-bit grayscale
splits:      {splits}

Labels are those of the report text (what a CheXbert-style labeller extracts),
not the hidden truth of the image: reports mention only part of what the image
shows, and some mentions are hedged (-1).

Regenerate with:
  python -m engine cohort synth --site {site} --patients {patients} --seed {seed} --image-size {image_size} --out <folder>
"""
    (root / "README.txt").write_bytes(text.encode("utf-8"))
