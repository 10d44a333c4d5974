"""PadChest (BIMCV, Hospital San Juan de Alicante), the release as distributed.

Layout read, under the cohort root::

    PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv[.gz]   one row per image (36 columns)
    <ImageDir>/<ImageID>                                           16-bit PNG (the release's
                                                                   numbered zip folders, 0..54)

`read_release` parses the table into one row per study (the renderer of real-report cohorts
uses it too); `load` turns that into the cohort table. What the release is like, and what this
adapter does about it:

* **Views.** ``Projection`` is PA, AP, AP_horizontal (supine AP), L, COSTAL, EXCLUDE or UNK.
  Only the frontal ones (`FRONTAL_PROJECTIONS`) are used; the view column gets PA or AP.
* **One image per study**, chosen from the table before any image is looked at (PA, then AP,
  then AP_horizontal, then the first ImageID), so a cohort rendered from `read_release` reads
  back with no loss. Only that image is checked on disk; if it is missing the study is skipped.
* **Reports.** ``Report`` is Spanish, pre-processed by the release (lower case, stemmed,
  sentences separated by " . ") and not sectioned: every ``--section`` gives the whole report.
  ``nan`` (the release's empty value) counts as no report. A ``ReportID`` may be shared by two
  same-day studies: both are kept with the same text (counted).
* **Findings.** ``Labels`` (findings, some spelled with a leading space: stripped),
  ``Localizations`` and ``LabelsLocalizationsBySentence`` (nested per sentence for rows
  labelled by physicians, one flat list for rows labelled by the release's RNN) are Python-list
  strings. They are kept whole (`findings`, `localizations`, `findings_by_sentence`) and the 14
  CheXpert labels are mapped from the findings by `padchest_labels` (docs/label-mapping.md).
  ``exclude`` (a report the labellers could not use) keeps the study with every label missing;
  ``suboptimal study`` and ``unchanged`` are kept as findings and map to nothing.
* **Patients.** ``PatientID`` is the patient; ``PatientBirth`` a year, ``PatientSex_DICOM``
  M / F / O; ``StudyDate_DICOM`` YYYYMMDD. A study listed under several patients is flagged.
* **No split.** Patients are assigned by a keyed hash of PatientID (`ids.keyed_hash_split`):
  `DEFAULT_TEST_FRACTION` of them held out (``test``), the rest ``train``, seeded.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from engine.cohort.adapters import assembly, ids, image_check, loadlog, padchest_labels, tables
from engine.cohort.adapters.reports import normalise_text
from engine.cohort.table import CohortLoad
from engine.core.labels import CHEXPERT_LABELS

TABLE_NAMES = (
    "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv",
    "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz",
    "PADCHEST_*.csv",
    "PADCHEST_*.csv.gz",
)
# Frontal projections in order of preference for the one image of a study.
FRONTAL_PROJECTIONS: tuple[str, ...] = ("PA", "AP", "AP_horizontal")
VIEWS: dict[str, str] = {"PA": "PA", "AP": "AP", "AP_horizontal": "AP"}
SEXES = frozenset({"M", "F", "O"})
REQUIRED = ("ImageID", "ImageDir", "StudyID", "PatientID", "Projection", "Report", "Labels")
OPTIONAL = (
    "ReportID", "StudyDate_DICOM", "PatientBirth", "PatientSex_DICOM", "Localizations",
    "LabelsLocalizationsBySentence", "MethodLabel", "Pediatric", "BitsStored_DICOM",
)
# 45% of patients held out gives about 49,000 held-out studies on the full release (the reference
# paper that this audit reproduces evaluated 43,793 held-out pairs).
DEFAULT_TEST_FRACTION = 0.45
DEFAULT_SEED = 0
EMPTY_VALUES = frozenset({"", "nan", "none", "null"})

_ITEM = re.compile(r"'([^']*)'")
_GROUP = re.compile(r"\[([^\[\]]*)\]|nan")


def parse_list(cell: str) -> list[str]:
    """Items of a Python-list string such as ``"['loc left', ' pacemaker']"``, stripped.

    Empty items and the release's ``nan`` cells give nothing.
    """
    return [item.strip() for item in _ITEM.findall(cell) if item.strip()]


def parse_by_sentence(cell: str) -> list[list[str]]:
    """``LabelsLocalizationsBySentence`` as one list of findings/localizations per sentence.

    Physician rows are nested (``"[['normal'], nan, ['cardiomegaly', 'loc cardiac']]"``: one
    list per sentence, ``nan`` or ``[]`` for a sentence without labels, kept as an empty list so
    positions still match the sentences); RNN rows are one flat list for the whole report,
    returned as a single group. A ``nan`` cell gives no groups.
    """
    text = cell.strip()
    if text.lower() in EMPTY_VALUES or not text.startswith("["):
        return []
    inner = text[1:-1]
    if "[" in inner or inner.strip().startswith("nan"):
        return [parse_list(group) for group in _GROUP.findall(inner)]
    items = parse_list(inner)
    return [items] if items else []


def read_release(
    csv_path: str | Path,
    *,
    root: Path | None = None,
    log: loadlog.LoadLog | None = None,
    max_patients: int | None = None,
) -> pd.DataFrame:
    """Read the PadChest table into one row per selected study (frontal, with a report).

    Args:
        csv_path: The release table, plain or gzipped (the one in the installed
            ``torchxrayvision`` package is `engine.cohort.sources.padchest_table`).
        root: Folder that problems name files relative to (default: the table's folder).
        log: Where problems and counters go (a fresh one when None).
        max_patients: Keep only the first this many patients, in order of first appearance
            in the table (small runs and tests).

    Returns:
        One row per study, sorted by ``study_id``, columns:

        * ``image_id`` (ImageID, the PNG's file name), ``study_id``, ``patient_id``, ``image_dir``
          (ImageDir, the numbered folder), ``image_path`` (``"<image_dir>/<image_id>"``);
        * ``projection`` (PA, AP or AP_horizontal, as released) and ``view`` (PA or AP);
        * ``sex`` (M, F, O or ""), ``birth_year`` (Int64, NA when unknown), ``study_date``
          (``"YYYY-MM-DD"`` or ""), ``age`` (float years at the study, NaN when unknown),
          ``pediatric`` (bool), ``bits_stored`` (Int64);
        * ``report_id``, ``report`` (the release's text, whitespace collapsed), ``method_label``
          (``Physician`` or ``RNN_model``);
        * ``findings`` (list[str], sorted, unique: the release's labels, leading spaces
          stripped, tags such as ``normal`` included), ``localizations`` (list[str], sorted,
          unique: the ``Localizations`` column together with every ``loc ...`` item of the
          sentence lists, which the column sometimes misses), ``findings_by_sentence``
          (list[list[str]], see `parse_by_sentence`);
        * ``_file``, ``_row``: the table and 1-based data row of the chosen image.

    Raises:
        CohortError: the table cannot be read or lacks a required column.
    """
    path = Path(csv_path)
    root = path.parent if root is None else Path(root)
    log = loadlog.LoadLog() if log is None else log
    frame = tables.read_table(
        path, root, log, required=REQUIRED, text_columns=("Report",),
        columns=REQUIRED + OPTIONAL,
    )
    for col in OPTIONAL:
        if col not in frame:
            frame[col] = ""
    if max_patients is not None:
        keep = pd.unique(frame["PatientID"].to_numpy())[: max(0, int(max_patients))]
        frame = frame.loc[frame["PatientID"].isin(keep)]
    log.stats["rows_listed"] += len(frame)
    log.stats["images_listed"] += len(frame)
    log.stats["studies_listed"] += int(frame["StudyID"].nunique())
    frame = ids.drop_blank(frame, ("ImageID", "StudyID", "PatientID"), log)
    frame = ids.drop_duplicates(frame, "ImageID", log, what="ImageID")
    _flag_studies_of_several_patients(frame, log)

    frontal = frame["Projection"].isin(FRONTAL_PROJECTIONS)
    log.stats["images_other_views"] += int((~frontal).sum())
    frame = frame.loc[frontal]
    has_report = ~frame["Report"].str.lower().isin(EMPTY_VALUES)
    _flag_studies_without_report(frame, has_report, log)
    frame = frame.loc[has_report]

    rank = frame["Projection"].map({p: i for i, p in enumerate(FRONTAL_PROJECTIONS)})
    ordered = frame.assign(_rank=rank).sort_values(["StudyID", "_rank", "ImageID"], kind="stable")
    chosen = ordered.drop_duplicates("StudyID", keep="first")
    log.stats["images_not_selected"] += len(ordered) - len(chosen)
    return _study_rows(chosen, log)


def _study_rows(rows: pd.DataFrame, log: loadlog.LoadLog) -> pd.DataFrame:
    """The output columns of `read_release` from the chosen image rows."""
    # The same cells repeat thousands of times ("['normal']"): parse each distinct one once.
    items_of = _memo(parse_list)
    label_sets = _memo(lambda cell: sorted(set(items_of(cell))))
    sentence_lists = _memo(parse_by_sentence)
    findings = [list(label_sets(cell)) for cell in rows["Labels"]]
    by_sentence = [
        [list(g) for g in sentence_lists(cell)] for cell in rows["LabelsLocalizationsBySentence"]
    ]
    loc_sets = _memo(lambda key: sorted(set(items_of(key[0])) | {
        x for grp in sentence_lists(key[1]) for x in grp if x.startswith("loc ")
    }))
    localizations = [
        list(loc_sets((cell, groups)))
        for cell, groups in zip(rows["Localizations"], rows["LabelsLocalizationsBySentence"])
    ]
    birth = pd.to_numeric(rows["PatientBirth"], errors="coerce")
    dates = pd.to_datetime(rows["StudyDate_DICOM"], format="%Y%m%d", errors="coerce")
    age = (dates.dt.year - birth).astype("float64")
    report_ids = rows["ReportID"]
    shared = report_ids.loc[report_ids != ""].duplicated(keep=False)
    log.stats["reports_shared"] += int(report_ids.loc[report_ids != ""][shared].nunique())
    out = pd.DataFrame(
        {
            "image_id": rows["ImageID"],
            "study_id": rows["StudyID"],
            "patient_id": rows["PatientID"],
            "image_dir": rows["ImageDir"],
            "image_path": rows["ImageDir"] + "/" + rows["ImageID"],
            "projection": rows["Projection"],
            "view": rows["Projection"].map(VIEWS),
            "sex": rows["PatientSex_DICOM"].where(rows["PatientSex_DICOM"].isin(SEXES), ""),
            "birth_year": birth.round().astype("Int64"),
            "study_date": dates.dt.strftime("%Y-%m-%d").fillna(""),
            "age": age,
            "pediatric": rows["Pediatric"].str.upper().eq("PED"),
            "bits_stored": pd.to_numeric(rows["BitsStored_DICOM"], errors="coerce")
            .round()
            .astype("Int64"),
            "report_id": report_ids,
            "report": [normalise_text(text) for text in rows["Report"]],
            "method_label": rows["MethodLabel"],
            "findings": findings,
            "localizations": localizations,
            "findings_by_sentence": by_sentence,
            "_file": rows["_file"],
            "_row": rows["_row"],
        }
    )
    return out.sort_values("study_id", kind="stable").reset_index(drop=True)


def _memo(func):
    """`func` with its results kept per argument (callers copy what they store)."""
    cache: dict = {}

    def cached(key):
        if key not in cache:
            cache[key] = func(key)
        return cache[key]

    return cached


def _flag_studies_of_several_patients(frame: pd.DataFrame, log: loadlog.LoadLog) -> None:
    per_study = frame.groupby("StudyID", sort=False)["PatientID"].nunique()
    for study in per_study.index[per_study > 1][:1000]:
        grp = frame.loc[frame["StudyID"] == study].drop_duplicates("PatientID")
        first, other = grp.iloc[0], grp.iloc[1]
        log.add(
            other["_file"],
            other["_row"],
            "study_in_several_patients",
            f"study {study!r} is listed under PatientID {first['PatientID']!r} (row "
            f"{first['_row']}) and {other['PatientID']!r}; the chosen image's patient is used",
            skipped=False,
        )


def _flag_studies_without_report(
    frame: pd.DataFrame, has_report: pd.Series, log: loadlog.LoadLog
) -> None:
    usable = set(frame.loc[has_report, "StudyID"])
    lost = frame.loc[~has_report & ~frame["StudyID"].isin(usable)].drop_duplicates("StudyID")
    for file, row, study, text in zip(lost["_file"], lost["_row"], lost["StudyID"], lost["Report"]):
        log.add(file, row, "empty_report",
                f"study {study!r} has no report (Report is {text!r}); study skipped")
    log.stats["reports_empty"] += len(lost)


def map_labels(findings: list[list[str]]) -> pd.DataFrame:
    """The 14 CheXpert labels (1 or NaN) of each study's findings, by `padchest_labels`.

    Returns:
        float64 frame, one row per element of `findings`, columns `CHEXPERT_LABELS`.
    """
    col = {label: i for i, label in enumerate(CHEXPERT_LABELS)}
    values = np.full((len(findings), len(CHEXPERT_LABELS)), np.nan)
    table = padchest_labels.FINDING_LABELS
    allowed = padchest_labels.NO_FINDING_ALLOWED
    for i, items in enumerate(findings):
        if "exclude" in items:
            continue
        mapped = [table[x] for x in items if x in table]
        for label in mapped:
            values[i, col[label]] = 1.0
        if padchest_labels.NORMAL in items and all(
            x in allowed or table.get(x) == "Support Devices" for x in items
        ):
            values[i, col["No Finding"]] = 1.0
    return pd.DataFrame(values, columns=list(CHEXPERT_LABELS))


def load(
    root: Path,
    *,
    section: str = "both",
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = DEFAULT_SEED,
    max_patients: int | None = None,
) -> CohortLoad:
    """Read the PadChest release at `root` into the cohort table (one frontal image per study).

    The items also carry ``findings`` and ``localizations``: the study's full PadChest finding
    and localization sets as sorted ``;``-joined strings, for matching on finer labels than
    the 14.
    """
    loadlog.check_section(section)  # every section is the whole report; checked for typos
    root = Path(root)
    log = loadlog.LoadLog()
    path = tables.require_file(root, TABLE_NAMES, what="PadChest labels table")
    studies = read_release(path, root=root, log=log, max_patients=max_patients)
    studies = image_check.check_images(studies, root, log)
    studies = studies.loc[studies["report"] != ""]
    labels = map_labels(studies["findings"].tolist())
    labels.index = studies.index
    split = ids.keyed_hash_split(studies["patient_id"], test_fraction=test_fraction, seed=seed)
    log.add(
        tables.display_path(path, root), None, "hash_split",
        f"the release has no split: patients assigned by a keyed hash of PatientID (seed "
        f"{seed}), {test_fraction:.0%} held out as test, the rest train",
        skipped=False,
    )
    items = pd.concat([studies, labels], axis=1).assign(
        split=split,
        report_text=studies["report"],
        findings=[";".join(x) for x in studies["findings"]],
        localizations=[";".join(x) for x in studies["localizations"]],
    )
    log.stats["studies_without_images"] += log.stats["studies_listed"] - len(items)
    return assembly.finish(items, log, root)
