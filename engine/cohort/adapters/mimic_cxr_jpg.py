"""MIMIC-CXR-JPG (PhysioNet v2.0.0 / v2.1.0) with the MIMIC-CXR free-text reports.

Layout read, under the cohort root::

    files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg
    files/p10/p10000032/s50414267.txt           (reports, from mimic-cxr-reports.zip; also
                                                 accepted under mimic-cxr-reports/files/...)
    mimic-cxr-2.0.0-metadata.csv.gz   dicom_id, subject_id, study_id, ViewPosition, ...  (required)
    mimic-cxr-2.0.0-split.csv.gz      dicom_id, study_id, subject_id, split
    mimic-cxr-2.0.0-chexpert.csv.gz   subject_id, study_id, the 14 labels (blank = missing)

Plain ``.csv`` files are accepted as well as ``.csv.gz``, and any version in the name (the
newest wins). The metadata table lists the images; the image path follows the release's rule
``files/p{subject_id[:2]}/p{subject_id}/s{study_id}/{dicom_id}.jpg``. Ids are kept as in the
CSVs (digits, no ``p``/``s`` prefix); ``image_id`` is the ``dicom_id``.

Missing split file: a hash split by patient (`ids.hash_split`), with a problem saying so.
Missing label file: every label missing, with a problem. A study without a row in the label
file keeps its images with missing labels (counted in ``images_without_labels``). Reports are
sectioned with `reports.parse_sections` (upper-case headers such as `` FINDINGS:``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from engine import files
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

METADATA_NAMES = ("mimic-cxr-*-metadata.csv.gz", "mimic-cxr-*-metadata.csv")
SPLIT_NAMES = ("mimic-cxr-*-split.csv.gz", "mimic-cxr-*-split.csv")
LABEL_NAMES = ("mimic-cxr-*-chexpert.csv.gz", "mimic-cxr-*-chexpert.csv")
REPORT_BASES = (".", "mimic-cxr-reports")
# Names used in problems about a missing optional file.
SPLIT_FILE = "mimic-cxr-2.0.0-split.csv.gz"
LABEL_FILE = "mimic-cxr-2.0.0-chexpert.csv.gz"

_ID_PREFIX = re.compile(r"^[ps](?=\d)")
_INT_FLOAT = re.compile(r"^(\d+)\.0+$")


def load(root: Path, *, section: str = "both") -> CohortLoad:
    """Read a MIMIC-CXR-JPG release at `root` into the cohort table (all images, every view)."""
    loadlog.check_section(section)
    root = Path(root)
    log = loadlog.LoadLog()

    meta_path = tables.require_file(root, METADATA_NAMES, what="MIMIC-CXR-JPG metadata table")
    meta = tables.read_table(
        meta_path, root, log, required=("dicom_id", "subject_id", "study_id", "ViewPosition")
    )
    log.stats["rows_listed"] = len(meta)
    meta = _normalise_ids(meta, ("dicom_id", "subject_id", "study_id"))
    meta = ids.drop_blank(meta, ("dicom_id", "subject_id", "study_id"), log)
    meta = ids.drop_duplicates(meta, "dicom_id", log, what="dicom_id")
    images = meta.assign(
        image_id=meta["dicom_id"],
        patient_id=meta["subject_id"],
        view=meta["ViewPosition"].str.upper(),
        image_path="files/p" + meta["subject_id"].str[:2] + "/p" + meta["subject_id"]
        + "/s" + meta["study_id"] + "/" + meta["dicom_id"] + ".jpg",
    )
    log.stats["images_listed"] = len(images)
    listed_studies = set(images["study_id"])

    images = _attach_split(images, root, log)
    images = image_check.check_images(images, root, log)
    studies_with_images = set(images["study_id"])

    texts = _read_reports(images, root, section, log)
    images = reports.attach_reports(images, texts, log)
    images, label_studies = _attach_labels(images, root, log)

    log.stats["studies_listed"] = len(listed_studies | label_studies)
    log.stats["studies_without_images"] = len(
        (listed_studies | label_studies) - studies_with_images
    )
    return assembly.finish(images, log, root)


def _normalise_ids(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """Ids as the CSVs write them: no ``p``/``s`` prefix, no ``.0`` from a float round trip."""
    out = frame.copy()
    for col in columns:
        if col in out:
            out[col] = out[col].str.replace(_ID_PREFIX, "", regex=True).str.replace(
                _INT_FLOAT, r"\1", regex=True
            )
    return out


def _attach_split(images: pd.DataFrame, root: Path, log: loadlog.LoadLog) -> pd.DataFrame:
    split_path = tables.find_file(root, SPLIT_NAMES)
    if split_path is None:
        log.add(
            SPLIT_FILE,
            None,
            "missing_split_file",
            f"no split file ({' or '.join(SPLIT_NAMES)}) under {root}; patients are split "
            "by a hash of subject_id (75% train, 25% test)",
            skipped=False,
        )
        return images.assign(split=images["patient_id"].map(ids.hash_split))
    split = tables.read_table(split_path, root, log, required=("dicom_id", "split"))
    split = _normalise_ids(split, ("dicom_id",))
    split = ids.drop_duplicates(split, "dicom_id", log, what="dicom_id")
    split = ids.normalise_splits(split, log)
    split = split.loc[:, ["dicom_id", "split", "_file", "_row"]].rename(
        columns={"_file": "_split_file", "_row": "_split_row"}
    )
    merged = images.merge(split, on="dicom_id", how="left")
    absent = merged["split"].isna()
    rel = tables.display_path(split_path, root)
    for _, r in merged.loc[absent].iterrows():
        log.add(
            r["_file"],
            r["_row"],
            "no_split",
            f"dicom_id {r['dicom_id']!r} has no usable row in {rel}; image skipped",
        )
    log.stats["images_without_split"] += int(absent.sum())
    return merged.loc[~absent]


def _report_path(root: Path, subject: str, study: str) -> tuple[Path, str]:
    rel = f"files/p{subject[:2]}/p{subject}/s{study}.txt"
    for base in REPORT_BASES:
        path = root / base / rel
        if path.exists():  # any kind of file: a FIFO or a device is refused when read
            return path, tables.display_path(path, root)
    return root / rel, rel


def _read_reports(
    images: pd.DataFrame, root: Path, section: str, log: loadlog.LoadLog
) -> dict[str, str]:
    studies = images.drop_duplicates("study_id")

    def read(pair: tuple[str, str]) -> tuple[str, str | None]:
        path, rel = _report_path(root, *pair)
        try:
            files.contained(root, path, what="report")
            raw = files.read_regular(path, what="report", max_bytes=files.MAX_REPORT_BYTES)
        except files.InputFileError as exc:
            return rel, exc
        except OSError:
            return rel, None
        return rel, raw.decode("utf-8-sig", errors="surrogateescape")

    results = tables.map_threads(read, list(zip(studies["subject_id"], studies["study_id"])))
    rows = []
    for study, (rel, text) in zip(studies["study_id"], results):
        if text is None:
            log.add(
                rel, None, "missing_report", f"report of study {study!r} not found; study skipped"
            )
            log.stats["reports_missing"] += 1
        elif isinstance(text, files.InputFileError):
            log.add(rel, None, f"report_{text.reason}",
                    f"report of study {study!r}: {text}; study skipped")
            log.stats["reports_refused"] += 1
        elif tables.has_bad_bytes(text):
            log.add(
                rel,
                None,
                "non_utf8_report",
                f"report of study {study!r} is not valid UTF-8 ({tables.show_bad_bytes(text)}); "
                "study skipped",
            )
            log.stats["reports_non_utf8"] += 1
        else:
            rows.append({"study_id": study, "_file": rel, "_row": None, "full": text})
    sources = pd.DataFrame(rows, columns=["study_id", "_file", "_row", "full"])
    return reports.select_report_text(sources, section, log)


def _attach_labels(
    images: pd.DataFrame, root: Path, log: loadlog.LoadLog
) -> tuple[pd.DataFrame, set[str]]:
    label_path = tables.find_file(root, LABEL_NAMES)
    if label_path is None:
        log.missing_label_file(LABEL_FILE, LABEL_NAMES, root, len(images),
                               what="label file", unit="study")
        return images, set()
    rel = tables.display_path(label_path, root)
    labels = tables.read_table(label_path, root, log, required=("study_id",))
    labels = _normalise_ids(labels, ("study_id", "subject_id"))
    labels = ids.drop_duplicates(labels, "study_id", log, what="study_id")
    labels = label_values.parse_labels(labels, log, file=rel)
    label_cols = list(CHEXPERT_LABELS)
    merged = images.merge(labels.loc[:, ["study_id", *label_cols]], on="study_id", how="left")
    unlabelled = ~images["study_id"].isin(labels["study_id"]).to_numpy()
    log.stats["images_without_labels"] += int(unlabelled.sum())
    for study in images.loc[unlabelled, "study_id"].unique():
        log.add(
            rel,
            None,
            "no_labels",
            f"study {study!r} has no row in {rel}; its labels are missing",
            skipped=False,
        )
    return merged, set(labels["study_id"])
