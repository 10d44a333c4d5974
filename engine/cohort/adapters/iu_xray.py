"""IU X-ray / OpenI (Indiana University), Kaggle layout (raddar/chest-xrays-indiana-university).

Layout read, under the cohort root::

    indiana_reports.csv       uid, MeSH, Problems, image, indication, comparison, findings,
                              impression (one report per uid; required: uid, findings,
                              impression)
    indiana_projections.csv   uid, filename, projection (Frontal/Lateral) (required: uid,
                              filename)
    images/images_normalized/1_IM-0001-4001.dcm.png   (also accepted: images_normalized/, images/)

What the release does not have, and what this adapter does instead:

* No patient ids: ``patient_id`` is the ``uid`` (one study per patient as far as we can
  tell), so patient-level results equal study-level ones.
* No split: a deterministic hash of the uid puts 25% of studies in ``test`` and 75% in
  ``train`` (`ids.hash_split`), patient-disjoint by construction.
* No AP/PA: frontal images get the view ``FRONTAL``, laterals ``LATERAL``.
* No CheXpert labels: they are mapped from the ``Problems`` and ``MeSH`` terms through
  `TERM_LABELS` (a term present sets its label to 1); labels no term maps to stay missing.
  A study whose Problems field is ``normal`` gets No Finding = 1 and nothing else.

``study_id`` is the uid, ``image_id`` the file name. Sections come from the ``findings`` and
``impression`` columns; ``full`` is indication, comparison, findings and impression, each
under its header. ``XXXX`` (the release's redaction mark) stays in the text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from engine.cohort.adapters import assembly, ids, image_check, loadlog, reports, tables
from engine.cohort.table import CohortLoad
from engine.labels import CHEXPERT_LABELS

REPORTS_FILE = "indiana_reports.csv"
PROJECTIONS_FILE = "indiana_projections.csv"
IMAGE_DIRS = ("images/images_normalized", "images_normalized", "images")
FULL_SECTIONS = ("indication", "comparison", "findings", "impression")
VIEWS = {"frontal": "FRONTAL", "lateral": "LATERAL"}

# Problems / MeSH main headings (lower case) -> CheXpert label. Terms not listed map to nothing.
TERM_LABELS: dict[str, str] = {
    "normal": "No Finding",
    "cardiomegaly": "Cardiomegaly",
    "pleural effusion": "Pleural Effusion",
    "pneumothorax": "Pneumothorax",
    "atelectasis": "Atelectasis",
    "pulmonary atelectasis": "Atelectasis",
    "edema": "Edema",
    "pulmonary edema": "Edema",
    "consolidation": "Consolidation",
    "pneumonia": "Pneumonia",
    "opacity": "Lung Opacity",
    "airspace disease": "Lung Opacity",
    "infiltrate": "Lung Opacity",
    "nodule": "Lung Lesion",
    "mass": "Lung Lesion",
    "lung neoplasms": "Lung Lesion",
    "fractures, bone": "Fracture",
    "rib fractures": "Fracture",
    "catheters, indwelling": "Support Devices",
    "implanted medical device": "Support Devices",
    "surgical instruments": "Support Devices",
    "tube, inserted": "Support Devices",
    "pacemaker, artificial": "Support Devices",
    "stents": "Support Devices",
}


def load(root: Path, *, section: str = "both") -> CohortLoad:
    """Read the Kaggle IU X-ray release at `root` into the cohort table."""
    loadlog.check_section(section)
    root = Path(root)
    log = loadlog.LoadLog()

    reports_path = tables.require_file(root, (REPORTS_FILE,), what="IU X-ray reports table")
    projections_path = tables.require_file(
        root, (PROJECTIONS_FILE,), what="IU X-ray projections table"
    )
    report_rows = tables.read_table(
        reports_path, root, log, required=("uid", "findings", "impression"),
        text_columns=FULL_SECTIONS,
    )
    report_rows = ids.drop_blank(report_rows, ("uid",), log)
    report_rows = ids.drop_duplicates(report_rows, "uid", log, what="uid")
    projections = tables.read_table(projections_path, root, log, required=("uid", "filename"))
    log.stats["rows_listed"] = len(projections)
    projections = ids.drop_blank(projections, ("uid", "filename"), log)
    projections = ids.drop_duplicates(projections, "filename", log, what="filename")

    image_dir = next((d for d in IMAGE_DIRS if (root / d).is_dir()), IMAGE_DIRS[0])
    if "projection" in projections:
        projection = projections["projection"]
    else:
        projection = pd.Series("", index=projections.index)
        log.add(
            PROJECTIONS_FILE,
            None,
            "missing_column",
            "column 'projection' not found; every view is unknown",
            skipped=False,
        )
    images = projections.assign(
        image_id=projections["filename"],
        study_id=projections["uid"],
        patient_id=projections["uid"],
        split=projections["uid"].map(ids.hash_split),
        view=projection.str.lower().map(VIEWS).fillna(projection.str.upper()),
        image_path=image_dir + "/" + projections["filename"],
    )
    log.stats["images_listed"] = len(images)
    listed_studies = set(images["study_id"]) | set(report_rows["uid"])
    _flag_reports_without_images(report_rows, set(images["study_id"]), log)
    images = _drop_images_without_report_row(images, report_rows, log)
    images = image_check.check_images(images, root, log)
    log.stats["studies_listed"] = len(listed_studies)
    log.stats["studies_without_images"] = len(listed_studies - set(images["study_id"]))

    full = [
        "\n".join(f"{s.upper()}: {r[s]}" for s in FULL_SECTIONS if s in r and r[s])
        for _, r in report_rows.iterrows()
    ]
    sources = report_rows.loc[:, ["_file", "_row", "findings", "impression"]].assign(
        study_id=report_rows["uid"], full=full
    )
    texts = reports.select_report_text(sources, section, log)
    images = reports.attach_reports(images, texts, log)
    labels = _labels(report_rows, log)
    images = images.merge(labels, left_on="study_id", right_index=True, how="left")
    return assembly.finish(images, log, root)


def _drop_images_without_report_row(
    images: pd.DataFrame, report_rows: pd.DataFrame, log: loadlog.LoadLog
) -> pd.DataFrame:
    orphan = ~images["study_id"].isin(report_rows["uid"])
    for _, r in images.loc[orphan].iterrows():
        log.add(
            r["_file"],
            r["_row"],
            "missing_report",
            f"uid {r['uid']!r} of image {r['filename']!r} has no row in {REPORTS_FILE}; "
            "image skipped",
        )
    log.stats["images_without_report"] += int(orphan.sum())
    return images.loc[~orphan]


def _flag_reports_without_images(
    report_rows: pd.DataFrame, listed: set[str], log: loadlog.LoadLog
) -> None:
    lonely = ~report_rows["uid"].isin(listed)
    for _, r in report_rows.loc[lonely].iterrows():
        log.add(
            r["_file"],
            r["_row"],
            "study_without_images",
            f"report uid {r['uid']!r} has no image in {PROJECTIONS_FILE}; skipped",
        )


def _labels(report_rows: pd.DataFrame, log: loadlog.LoadLog) -> pd.DataFrame:
    """The 14 labels per uid (index), mapped from Problems and MeSH through `TERM_LABELS`."""
    present = [col for col in ("Problems", "MeSH") if col in report_rows]
    if len(present) < 2:
        absent = [col for col in ("Problems", "MeSH") if col not in present]
        log.add(
            REPORTS_FILE,
            None,
            "missing_label_column",
            f"column(s) {', '.join(map(repr, absent))} not found; labels come from "
            f"{', '.join(present) or 'nothing'} only",
            skipped=False,
        )
    out = pd.DataFrame(np.nan, index=report_rows["uid"], columns=list(CHEXPERT_LABELS))
    for uid, (_, r) in zip(report_rows["uid"], report_rows.iterrows()):
        # The normal rule reads Problems (MeSH when the table has no Problems column).
        if present and r[present[0]].strip().lower() == "normal":
            out.at[uid, "No Finding"] = 1.0
            continue
        terms = [t for col in present for t in r[col].split(";")]
        for term in terms:
            # MeSH terms carry qualifiers after "/" ("Cardiomegaly/mild"); the heading maps.
            label = TERM_LABELS.get(" ".join(term.split("/")[0].lower().split()))
            if label is not None and label != "No Finding":
                out.at[uid, label] = 1.0
    return out
