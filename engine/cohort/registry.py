"""Registering cohorts in the store and reading them back for the later stages."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from engine import store
from engine.cohort.table import COLUMNS, CohortLoad, select_one_image_per_study
from engine.errors import CohortError, check_name

log = logging.getLogger(__name__)


def register_cohort(
    db: Path,
    name: str,
    *,
    fmt: str,
    root: Path,
    load: CohortLoad,
    site: str | None = None,
    section: str = "both",
) -> pd.DataFrame:
    """Write a loaded cohort to ``cohorts`` and ``items`` (replacing an earlier one of that name).

    Every image is stored; ``items.selected`` marks the one image per study the audit uses
    (docs/cohorts.md).

    Returns:
        The stored items, with the ``selected`` column.
    """
    name = check_name(name, "cohort name")
    items = load.items
    if items.empty:
        raise CohortError(f"{root}: cohort {name!r} has no usable images; nothing registered")
    chosen = set(select_one_image_per_study(items)["image_id"])
    stored = items.loc[:, list(COLUMNS)].copy()
    stored.insert(0, "cohort", name)
    stored["selected"] = stored["image_id"].isin(chosen)
    meta = pd.DataFrame(
        [
            {
                "cohort": name,
                "format": fmt,
                "root": str(Path(root).resolve()),
                "site": site,
                "n_patients": int(items["patient_id"].nunique()),
                "n_studies": int(items["study_id"].nunique()),
                "n_images": int(len(items)),
                "section": section,
                "n_skipped": load.n_skipped,
                "problems_json": json.dumps([asdict(p) for p in load.problems[:1000]]),
            }
        ]
    )
    with store.connect_write(db) as con:
        with store.transaction(con):
            store.replace_rows(con, "cohorts", meta, cohort=name)
            store.replace_rows(con, "items", stored, cohort=name)
    log.info("registered cohort %s: %d images", name, len(stored))
    return stored


def read_cohort(db: Path, name: str, *, selected_only: bool = True) -> tuple[dict, pd.DataFrame]:
    """Read a registered cohort: its ``cohorts`` row as a dict and its items.

    Raises:
        CohortError: no cohort of that name is registered.
    """
    con = store.connect_read(db)
    try:
        meta = con.execute("SELECT * FROM cohorts WHERE cohort = ?", [name]).df()
        if meta.empty:
            known = [r[0] for r in con.execute("SELECT cohort FROM cohorts ORDER BY 1").fetchall()]
            raise CohortError(
                f"--cohort {name!r} is not registered (known: {', '.join(known) or 'none'}); "
                "run `python -m engine cohort add`"
            )
        query = "SELECT * FROM items WHERE cohort = ?" + (" AND selected" if selected_only else "")
        items = con.execute(query + " ORDER BY image_id", [name]).df()
    finally:
        con.close()
    return meta.iloc[0].to_dict(), items
