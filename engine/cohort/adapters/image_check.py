"""Image checks: which listed image files exist and can be read (the adapters' one image helper).

Every adapter checks its images through `check_images`; `inspect_image` is the per-file test.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from engine.cohort.adapters.loadlog import LoadLog
from engine.cohort.adapters.tables import first_line, map_threads

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def inspect_image(path: Path) -> tuple[str, str]:
    """Cheap validity check of one image file: ``(status, reason)``.

    Status is ``ok``, ``missing`` or ``corrupt``. The check reads the header and the last KiB
    (JPEG and PNG must start with their magic bytes and end with their end marker, which
    catches truncated copies) and lets Pillow parse the header for the size; it does not
    decode pixels, so thousands of images take seconds.
    """
    try:
        size = path.stat().st_size
    except (FileNotFoundError, NotADirectoryError):
        return "missing", "not found"
    except OSError as exc:
        return "corrupt", f"cannot be read ({first_line(exc)})"
    if not path.is_file():
        return "corrupt", "is not a regular file"
    if size == 0:
        return "corrupt", "is empty (0 bytes)"
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
            fh.seek(max(0, size - 1024))
            tail = fh.read()
        if head.startswith(_JPEG_MAGIC) and b"\xff\xd9" not in tail:
            return "corrupt", "is truncated (no JPEG end-of-image marker)"
        if head.startswith(_PNG_MAGIC) and b"IEND" not in tail:
            return "corrupt", "is truncated (no PNG IEND chunk)"
        with Image.open(path) as img:
            width, height = img.size
    except UnidentifiedImageError:
        return "corrupt", "is not an image Pillow can read (unknown or damaged header)"
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "unreadable"
        return "corrupt", f"is not an image Pillow can read ({type(exc).__name__}: {exc})"
    if width == 0 or height == 0:
        return "corrupt", f"has an empty size {width}x{height}"
    return "ok", ""


def check_images(
    frame: pd.DataFrame,
    base: Path,
    log: LoadLog,
    *,
    alternatives: Callable[[str], list[str]] | None = None,
) -> pd.DataFrame:
    """Keep the rows whose ``image_path`` (relative to `base`) is a readable image.

    Args:
        alternatives: Other relative paths to try, in order, when the listed one does not
            exist (e.g. the same name with ``.png``); the first that exists is stored in
            ``image_path``.
    """

    def probe(listed: str) -> tuple[str, str, str, list[str]]:
        others = alternatives(listed) if alternatives else []
        tried = [listed] + [c for c in others if c != listed]
        for candidate in tried:
            status, reason = inspect_image(base / candidate)
            if status != "missing":
                return candidate, status, reason, tried
        return listed, "missing", "not found", tried

    results = map_threads(probe, frame["image_path"].tolist())
    files, rows = frame["_file"].to_numpy(), frame["_row"].to_numpy()
    keep = np.array([status == "ok" for _, status, _, _ in results], dtype=bool)
    for i in np.flatnonzero(~keep):
        path, status, reason, tried = results[i]
        if status == "missing":
            also = f" (also tried {', '.join(tried[1:])})" if len(tried) > 1 else ""
            log.add(files[i], rows[i], "missing_image", f"image {path} not found{also}; skipped")
            log.stats["images_missing"] += 1
        else:
            log.add(files[i], rows[i], "corrupt_image", f"image {path} {reason}; skipped")
            log.stats["images_unreadable"] += 1
    found_paths = [path for path, _, _, _ in results]
    out = frame.assign(image_path=found_paths).loc[keep]
    log.stats["images_found"] += len(out)
    return out
