"""A user's own cohort as one CSV table.

``--root`` is a folder holding ``cohort.csv``, or the CSV file itself. Columns (one row per
image):

* required: ``image_path`` (relative to the CSV's folder; absolute paths and paths leading
  outside that folder are skipped, see `engine.images`), ``report_text``,
  ``patient_id``;
* optional: ``study_id`` (default: the image id, i.e. one study per row), ``image_id``
  (default: ``image_path``), ``split`` (train / validate (valid) / test; default: a
  deterministic hash of ``patient_id``, 75% train and 25% test), ``view`` (upper-cased: PA,
  AP, LATERAL, ...), and any of the 14 CheXpert label columns (1 / 0 / -1 / blank; matched
  case-insensitively; absent labels are missing).

``report_text`` is sectioned like a MIMIC report (upper-case ``FINDINGS:`` / ``IMPRESSION:``
headers); plain text without headers is used whole (counted as a section fallback unless
``--section full``).

``image_path`` is stored as listed, relative to the CSV's folder, whether ``--root`` names
the folder or the file (`engine.images.cohort_folder`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from engine.cohort.adapters import (
    assembly,
    ids,
    image_check,
    label_values,
    loadlog,
    reports,
    tables,
)
from engine.cohort.table import CohortLoad
from engine.core.labels import CHEXPERT_LABELS

DEFAULT_NAME = "cohort.csv"
REQUIRED = ("image_path", "report_text", "patient_id")


def load(root: Path, *, section: str = "both") -> CohortLoad:
    """Read a user's cohort CSV (`root` is its folder or the file) into the cohort table."""
    loadlog.check_section(section)
    root = Path(root)
    if root.is_file():
        csv_path, base = root, root.parent
    else:
        csv_path = tables.require_file(root, (DEFAULT_NAME,), what="cohort table")
        base = root
    log = loadlog.LoadLog()
    # A CSV named by --root itself is the user's explicit choice; one found in the folder must
    # lie inside it, like every other file a format reads.
    rows = tables.read_table(csv_path, base, log, required=REQUIRED, text_columns=("report_text",),
                             contain=not root.is_file())
    log.stats["rows_listed"] = len(rows)
    rows = _canonical_label_names(rows)
    rows = ids.drop_blank(rows, ("image_path", "patient_id"), log)
    image_id = _column_or(rows, "image_id", rows["image_path"])
    rows = rows.assign(image_id=image_id, study_id=_column_or(rows, "study_id", image_id))
    rows = ids.drop_duplicates(rows, "image_id", log, what="image_id")
    if "split" in rows:
        rows = ids.normalise_splits(rows, log)
    else:
        rows = rows.assign(split=rows["patient_id"].map(ids.hash_split))
    rows = rows.assign(view=_column_or(rows, "view", pd.Series("", index=rows.index)).str.upper())
    log.stats["images_listed"] = len(rows)
    listed_studies = set(rows["study_id"])

    images = image_check.check_images(rows, base, log)
    log.stats["studies_listed"] = len(listed_studies)
    log.stats["studies_without_images"] = len(listed_studies - set(images["study_id"]))
    sources = images.loc[:, ["study_id", "_file", "_row"]].assign(full=images["report_text"])
    texts = reports.select_report_text(sources, section, log)
    images = reports.attach_reports(images.drop(columns="report_text"), texts, log)
    images = label_values.parse_labels(images, log, file=csv_path.name, warn_absent=False)
    return assembly.finish(images, log, root)


def _column_or(rows: pd.DataFrame, column: str, default: pd.Series) -> pd.Series:
    """`column` where present and non-blank, else `default`."""
    if column not in rows:
        return default
    return rows[column].where(rows[column] != "", default)


def _canonical_label_names(rows: pd.DataFrame) -> pd.DataFrame:
    by_lower = {label.lower(): label for label in CHEXPERT_LABELS}
    renames = {
        col: by_lower[" ".join(col.lower().split())]
        for col in rows.columns
        if " ".join(col.lower().split()) in by_lower and col not in CHEXPERT_LABELS
    }
    return rows.rename(columns=renames)
