"""Registering cohorts in the store and reading them back for the later stages.

A registered cohort has a content fingerprint (`content_fingerprint`), and every stage keys its
results by it: re-registering a name with other content makes what was computed on the old
content stale (no longer shown, recomputed on demand) and says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from engine import store
from engine.cohort.table import COLUMNS, EXTRA_COLUMNS, CohortLoad, select_one_image_per_study
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
    (docs/cohorts.md). When the name was registered before with other content, every run computed
    on the old content is marked ``stale`` and a one-line notice is logged and returned in
    ``stored.attrs["notice"]`` (empty when nothing changed).

    Returns:
        The stored items, with the ``selected`` column.
    """
    name = check_name(name, "cohort name")
    items = load.items
    if items.empty:
        raise CohortError(f"{root}: cohort {name!r} has no usable images; nothing registered")
    chosen = set(select_one_image_per_study(items)["image_id"])
    # A format's finer finding sets (PadChest) are stored too, so they are part of the content
    # fingerprint; formats without them keep their fingerprint and store NULL.
    extras = [col for col in EXTRA_COLUMNS if col in items]
    stored = items.loc[:, list(COLUMNS) + extras].copy()
    stored.insert(0, "cohort", name)
    stored["selected"] = stored["image_id"].isin(chosen)
    fingerprint = content_fingerprint(stored, root)
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
                "fingerprint": fingerprint,
            }
        ]
    )
    from engine.runs import Run

    run = Run("cohort", None, name, {"format": fmt, "root": str(Path(root).resolve()),
                                     "site": site, "section": section},
              cohort_fingerprint=fingerprint)
    notice = ""
    with store.connect_write(db) as con:
        with store.transaction(con):
            before = con.execute("SELECT fingerprint, root FROM cohorts WHERE cohort = ?",
                                 [name]).fetchall()
            stale = 0
            if before and before[0][0] != fingerprint:
                stale = _mark_stale(con, name, fingerprint)
                notice = (f"cohort {name!r} was registered before with other content (from "
                          f"{before[0][1]}); {stale} runs computed on the old content are no "
                          "longer shown and will be recomputed")
            store.replace_rows(con, "cohorts", meta, cohort=name)
            store.replace_rows(con, "items", stored, cohort=name)
            run.record(con, status="done", n_rows=len(stored), n_skipped=load.n_skipped,
                       message=notice)
    if notice:
        log.warning(notice)
    log.info("registered cohort %s: %d images, fingerprint %s", name, len(stored), fingerprint)
    stored.attrs["notice"] = notice
    stored.attrs["fingerprint"] = fingerprint
    return stored


def _mark_stale(con, name: str, fingerprint: str) -> int:
    """Mark done runs computed on other content of cohort `name` (as cohort or heads source)."""
    where = ("status = 'done' AND ((cohort = ? AND cohort_fingerprint IS DISTINCT FROM ?) "
             "OR (heads_cohort = ? AND heads_cohort <> cohort "
             "AND source_fingerprint IS DISTINCT FROM ?)) AND stage <> 'cohort'")
    params = [name, fingerprint, name, fingerprint]
    count = con.execute(f"SELECT count(*) FROM runs WHERE {where}", params).fetchall()[0][0]
    con.execute(f"UPDATE runs SET status = 'stale' WHERE {where}", params)
    return int(count)


def content_fingerprint(items: pd.DataFrame, root: Path) -> str:
    """Content identity of a cohort: its item rows and, per image file, size and mtime.

    The rows cover every stored column (ids, split, view, image path, report text, labels,
    the finer ``findings`` / ``localizations`` when the format has them, ``selected``), sorted
    by image id, so the same content read in another order has the same fingerprint. Image
    files are identified by ``(size, mtime_ns)`` rather than hashed: reading every image of a
    real release would take hours, and a rewritten or replaced file changes its mtime. A
    missing file counts as ``(-1, -1)``. The cohort's name and root folder are not part of it,
    so a moved cohort keeps its results.
    """
    from engine.cohort.table import resolve_image

    rows = items.drop(columns=["cohort"], errors="ignore").sort_values("image_id")
    digest = hashlib.sha256()
    digest.update(",".join(rows.columns).encode())
    hashed = pd.util.hash_pandas_object(rows.astype(str), index=False).to_numpy()
    digest.update(np.ascontiguousarray(hashed).tobytes())
    stats = np.empty((len(rows), 2), dtype=np.int64)
    for i, rel in enumerate(rows["image_path"]):
        try:
            st = os.stat(resolve_image(root, rel))
            stats[i] = (st.st_size, st.st_mtime_ns)
        except Exception:  # noqa: BLE001 - unreadable or outside the root: it counts as missing
            stats[i] = (-1, -1)
    digest.update(stats.tobytes())
    return digest.hexdigest()[:16]


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
