"""CheXpert Plus (Stanford AIMI) with its CheXbert label files.

Layout read, under the cohort root::

    df_chexpert_plus_240401.csv   one row per image (required): path_to_image, deid_patient_id,
                                  report, split, and when present section_findings,
                                  section_impression, frontal_lateral, ap_pa
    train/patient00001/study1/view1_frontal.png    (path_to_image; also under PNG/)
    report_fixed.json             CheXbert labels keyed by path_to_image (also looked for in
                                  chexbert_labels/); findings_fixed.json / impression_fixed.json
                                  are used instead for --section findings / impression

Any ``df_chexpert_plus_*.csv`` (or ``.csv.gz``) is accepted; the newest name wins.
A study is (deid_patient_id, study folder of path_to_image): ``study_id`` is
``"<deid_patient_id>/<study folder>"``, e.g. ``patient00001/study1``; ``image_id`` is
``path_to_image`` as listed. ``path_to_image`` may say ``.jpg`` while the release ships PNG:
when the listed file is missing, the same name with ``.png`` (or ``.jpg``), and the same
under ``PNG/``, are tried, and the path that exists is stored. Split ``valid`` becomes
``validate``. View: frontal -> the ``ap_pa`` value (``AP``/``PA``; ``FRONTAL`` when blank),
lateral -> ``LATERAL``; when ``frontal_lateral`` is blank the file name (``view1_frontal``)
decides.

Labels: a JSON Lines file (or a JSON array) of objects with ``path_to_image`` and the 14
labels, values 1 / 0 / -1 / null. Missing label file: every label missing, with a problem.
Sections come from the ``section_findings`` / ``section_impression`` columns, or are parsed
from ``report`` when those columns are absent.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

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

TABLE_NAMES = (
    "df_chexpert_plus_240401.csv",
    "df_chexpert_plus_*.csv",
    "df_chexpert_plus_*.csv.gz",
)
LABEL_DIRS = (".", "chexbert_labels")
LABEL_FILES: dict[str, tuple[str, ...]] = {
    "findings": ("findings_fixed.json", "report_fixed.json"),
    "impression": ("impression_fixed.json", "report_fixed.json"),
    "both": ("report_fixed.json",),
    "full": ("report_fixed.json",),
}
IMAGE_BASES = ("", "PNG/")
IMAGE_SUFFIXES = (".png", ".jpg")
REQUIRED = ("path_to_image", "deid_patient_id", "report", "split")
TEXT_COLUMNS = ("report", "section_findings", "section_impression")


def load(root: Path, *, section: str = "both") -> CohortLoad:
    """Read a CheXpert Plus release at `root` into the cohort table (all images, every view)."""
    loadlog.check_section(section)
    root = Path(root)
    log = loadlog.LoadLog()

    table_path = tables.require_file(root, TABLE_NAMES, what="CheXpert Plus table")
    rows = tables.read_table(table_path, root, log, required=REQUIRED, text_columns=TEXT_COLUMNS)
    log.stats["rows_listed"] = len(rows)
    rows = ids.drop_blank(rows, ("path_to_image", "deid_patient_id"), log)
    rows = ids.drop_duplicates(rows, "path_to_image", log, what="path_to_image")
    rows = ids.normalise_splits(rows, log)
    rows = _drop_shallow_paths(rows, log)
    study_dir = rows["path_to_image"].map(lambda p: PurePosixPath(p).parent.name)
    images = rows.assign(
        image_id=rows["path_to_image"],
        patient_id=rows["deid_patient_id"],
        study_id=rows["deid_patient_id"] + "/" + study_dir,
        view=_views(rows),
        image_path=rows["path_to_image"],
    )
    log.stats["images_listed"] = len(images)
    listed_studies = set(images["study_id"])
    images = image_check.check_images(images, root, log, alternatives=_alternatives)
    log.stats["studies_listed"] = len(listed_studies)
    log.stats["studies_without_images"] = len(listed_studies - set(images["study_id"]))

    sources = images.loc[:, ["study_id", "_file", "_row"]].assign(full=images["report"])
    if "section_findings" in images and "section_impression" in images:
        sources = sources.assign(
            findings=images["section_findings"], impression=images["section_impression"]
        )
    texts = reports.select_report_text(sources, section, log)
    images = reports.attach_reports(images, texts, log)
    images = _attach_labels(images, root, section, log)
    return assembly.finish(images, log, root)


def _drop_shallow_paths(rows: pd.DataFrame, log: loadlog.LoadLog) -> pd.DataFrame:
    """Skip rows whose path_to_image has no study folder (``<patient>/<study>/<file>``)."""
    shallow = rows["path_to_image"].map(lambda p: len(PurePosixPath(p).parts) < 3)
    for _, r in rows.loc[shallow].iterrows():
        log.add(
            r["_file"],
            r["_row"],
            "bad_path",
            f"path_to_image {r['path_to_image']!r} has no <patient>/<study>/ folders; skipped",
        )
    return rows.loc[~shallow]


def _views(rows: pd.DataFrame) -> pd.Series:
    name = rows["path_to_image"].str.lower()
    if "frontal_lateral" in rows:
        kind = rows["frontal_lateral"].str.lower()
    else:
        kind = pd.Series("", index=rows.index)
    kind = kind.where(kind != "", name.map(_kind_from_name))
    ap_pa = rows["ap_pa"].str.upper() if "ap_pa" in rows else pd.Series("", index=rows.index)
    frontal = ap_pa.where(ap_pa != "", "FRONTAL")
    return frontal.where(kind == "frontal", kind.str.upper().where(kind != "", ap_pa))


def _kind_from_name(name: str) -> str:
    stem = PurePosixPath(name).stem
    return "frontal" if "frontal" in stem else "lateral" if "lateral" in stem else ""


def _alternatives(listed: str) -> list[str]:
    path = PurePosixPath(listed)
    suffixes = (path.suffix, *IMAGE_SUFFIXES)
    return [
        f"{base}{path.with_suffix(suffix)}"
        for base in IMAGE_BASES
        for suffix in dict.fromkeys(suffixes)
    ]


def _attach_labels(
    images: pd.DataFrame, root: Path, section: str, log: loadlog.LoadLog
) -> pd.DataFrame:
    names = LABEL_FILES[section]
    candidates = [f"{d}/{n}" if d != "." else n for n in names for d in LABEL_DIRS]
    label_path = tables.find_file(root, candidates)
    if label_path is None:
        log.missing_label_file(names[-1], candidates, root, len(images),
                               what="CheXbert label file", unit="image")
        return images
    rel = tables.display_path(label_path, root)
    labels = tables.read_json_records(label_path, root, log)
    if "path_to_image" not in labels:
        labels["path_to_image"] = None
    keyless = labels["path_to_image"].isna() | (labels["path_to_image"].map(str).str.strip() == "")
    for row in labels.loc[keyless, "_row"]:
        log.add(rel, row, "bad_label_row", "record has no path_to_image; skipped")
    labels = labels.loc[~keyless]
    labels = labels.assign(path_to_image=labels["path_to_image"].map(str).str.strip())
    labels = ids.drop_duplicates(labels, "path_to_image", log, what="path_to_image")
    labels = label_values.parse_labels(labels, log, file=rel)
    merged = images.merge(
        labels.loc[:, ["path_to_image", *CHEXPERT_LABELS]], on="path_to_image", how="left"
    )
    unlabelled = ~images["path_to_image"].isin(labels["path_to_image"]).to_numpy()
    log.stats["images_without_labels"] += int(unlabelled.sum())
    for _, r in images.loc[unlabelled].iterrows():
        log.add(
            r["_file"],
            r["_row"],
            "no_labels",
            f"image {r['path_to_image']!r} has no record in {rel}; its labels are missing",
            skipped=False,
        )
    return merged
