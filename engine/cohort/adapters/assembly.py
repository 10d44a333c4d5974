"""Table assembly: the whole-table checks every adapter ends with, and the `CohortLoad`."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pandas as pd

from engine.cohort.adapters.loadlog import LoadLog, row_number
from engine.cohort.table import CohortLoad, conform
from engine.errors import CohortError

_logger = logging.getLogger(__name__)


class NoUsableImages(CohortError):
    """Nothing usable was left; `load` still holds every problem and counter (for a report)."""

    def __init__(self, message: str, load: CohortLoad) -> None:
        super().__init__(message)
        self.load = load


def finish(items: pd.DataFrame, log: LoadLog, root: Path) -> CohortLoad:
    """Check the assembled table as a whole and return the `CohortLoad`.

    Flags (without skipping) patients whose images sit in several splits and studies listed
    under several patients, counts what is kept, and raises `CohortError` when nothing is.
    Items may carry ``_split_file``/``_split_row`` naming where their split came from
    (default: their listing row).
    """
    if items.empty:
        kinds = Counter(p.kind for p in log.problems)
        summary = ", ".join(f"{k} x{n}" for k, n in kinds.most_common(4)) or "no rows listed"
        # The first problem that dropped something, of the most frequent kind: the likely cause.
        dropped = [p for p in log.problems if p.skipped] or log.problems
        top = Counter(p.kind for p in dropped).most_common(1)
        example = next((p for p in dropped if p.kind == top[0][0]), None) if top else None
        first = f"; e.g. {example}" if example else ""
        log.stats["images_kept"] = log.stats["studies_kept"] = log.stats["patients_kept"] = 0
        empty = CohortLoad(items=conform(items), problems=log.problems, stats=dict(log.stats))
        raise NoUsableImages(f"{root}: no usable images ({summary}){first}", empty)
    _flag_split_leaks(items, log)
    _flag_shared_studies(items, log)
    log.stats["images_kept"] = len(items)
    log.stats["studies_kept"] = int(items["study_id"].nunique())
    log.stats["patients_kept"] = int(items["patient_id"].nunique())
    table = conform(items)
    _logger.info("%s: %d images kept, %d problems", root, len(table), len(log.problems))
    return CohortLoad(items=table, problems=log.problems, stats=dict(log.stats))


def _flag_split_leaks(items: pd.DataFrame, log: LoadLog) -> None:
    per_patient = items.groupby("patient_id", sort=False)["split"].nunique()
    leaking = per_patient.index[per_patient > 1]
    log.stats["patients_in_several_splits"] = len(leaking)
    if not len(leaking):
        return
    file_col = "_split_file" if "_split_file" in items else "_file"
    row_col = "_split_row" if "_split_row" in items else "_row"
    sub = items.loc[items["patient_id"].isin(leaking)]
    for patient, grp in sub.groupby("patient_id", sort=False):
        firsts = grp.drop_duplicates("split")
        where = ", ".join(
            f"{r['split']} (row {row_number(r[row_col])})" for _, r in firsts.iterrows()
        )
        last = firsts.iloc[-1]
        log.add(
            last[file_col],
            last[row_col],
            "split_not_patient_disjoint",
            f"patient {patient!r} has images in several splits: {where}; the split is not "
            "patient-disjoint, so held-out results may be optimistic",
            skipped=False,
        )


def _flag_shared_studies(items: pd.DataFrame, log: LoadLog) -> None:
    per_study = items.groupby("study_id", sort=False)["patient_id"].nunique()
    shared = per_study.index[per_study > 1]
    for study in shared[:1000]:
        grp = items.loc[items["study_id"] == study].drop_duplicates("patient_id")
        first, other = grp.iloc[0], grp.iloc[1]
        log.add(
            other["_file"],
            other["_row"],
            "study_in_several_patients",
            f"study {study!r} is listed under patient {first['patient_id']!r} (row "
            f"{row_number(first['_row'])}) and patient {other['patient_id']!r}",
            skipped=False,
        )
