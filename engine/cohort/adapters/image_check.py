"""Image checks: which listed image files exist and can be read (the adapters' one image helper).

Every adapter checks its images through `check_images`; `inspect_image` is the per-file test.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from engine import images
from engine.cohort.adapters.loadlog import LoadLog
from engine.cohort.adapters.tables import map_threads


def inspect_image(path: Path) -> tuple[str, str]:
    """Cheap validity check of one image file: ``(status, reason)``.

    Status is ``ok``, ``missing``, ``corrupt`` or ``too_small``; the rules live in
    `engine.images.inspect_image` (header and end marker read, pixels not decoded).
    """
    info = images.inspect_image(path)
    return info.status, info.reason


def check_images(
    frame: pd.DataFrame,
    base: Path,
    log: LoadLog,
    *,
    alternatives: Callable[[str], list[str]] | None = None,
) -> pd.DataFrame:
    """Keep the rows whose ``image_path`` (relative to `base`) is a readable image.

    Paths are checked by `engine.images.resolve_image` first: an absolute path, or one that
    leads outside `base` (``..``, symbolic links), is skipped and never opened. Images smaller
    than `engine.images.MIN_SIDE` are skipped; high-bit-depth ones are kept and counted.

    Args:
        alternatives: Other relative paths to try, in order, when the listed one does not
            exist (e.g. the same name with ``.png``); the first that exists is stored in
            ``image_path``.
    """

    folder_present: dict[str, bool] = {}

    def in_missing_folder(candidate: str) -> bool:
        # A release of 100k images in a few dozen folders, none unpacked: one contained,
        # resolved check per folder instead of one per image. Paths with ".." or an absolute
        # start take the full per-image check below.
        parent = posixpath.dirname(candidate)
        if not parent or ".." in parent.split("/") or candidate.startswith(("/", "\\")):
            return False
        if parent not in folder_present:
            try:
                folder = images.resolve_image(base, parent)
            except images.ImagePathError:
                folder_present[parent] = True  # let the per-image check report it
            else:
                folder_present[parent] = folder.is_dir()
        return not folder_present[parent]

    def probe(listed: str) -> tuple[str, str, str, list[str], bool]:
        others = alternatives(listed) if alternatives else []
        tried = [listed] + [c for c in others if c != listed]
        for candidate in tried:
            if in_missing_folder(candidate):
                continue
            try:
                # Containment first: a path outside the root is never opened, not even stat'ed.
                file = images.resolve_image(base, candidate)
            except images.ImagePathError as exc:
                return candidate, "outside", str(exc), tried, False
            info = images.inspect_image(file)
            if info.status != "missing":
                return candidate, info.status, info.reason, tried, info.high_bit_depth
        return listed, "missing", "not found", tried, False

    results = map_threads(probe, frame["image_path"].tolist())
    files, rows = frame["_file"].to_numpy(), frame["_row"].to_numpy()
    keep = np.array([r[1] == "ok" for r in results], dtype=bool)
    for i in np.flatnonzero(~keep):
        path, status, reason, tried, _ = results[i]
        if status == "missing":
            also = f" (also tried {', '.join(tried[1:])})" if len(tried) > 1 else ""
            log.add(files[i], rows[i], "missing_image", f"image {path} not found{also}; skipped")
            log.stats["images_missing"] += 1
        elif status == "outside":
            log.add(files[i], rows[i], "image_outside_root", f"{reason}; skipped")
            log.stats["images_outside_root"] += 1
        elif status == "too_small":
            log.add(files[i], rows[i], "image_too_small", f"image {path} {reason}; skipped")
            log.stats["images_too_small"] += 1
        else:
            log.add(files[i], rows[i], "corrupt_image", f"image {path} {reason}; skipped")
            log.stats["images_unreadable"] += 1
    # Kept, not a problem: these are windowed into 8 bits whenever they are read.
    log.stats["images_high_bit_depth"] += int(sum(r[4] for r, k in zip(results, keep) if k))
    found_paths = [r[0] for r in results]
    out = frame.assign(image_path=found_paths).loc[keep]
    log.stats["images_found"] += len(out)
    return out
