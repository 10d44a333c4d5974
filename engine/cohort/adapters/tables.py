"""Files and tables: finding a release's files, reading CSV and JSON tables, bad bytes, I/O."""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from engine import files
from engine.cohort.adapters.loadlog import LoadLog
from engine.errors import CohortError

_SURROGATE = re.compile("[\udc80-\udcff]")
_IO_THREADS = 16
_IO_CHUNK = 256


def display_path(path: Path, root: Path) -> str:
    """`path` relative to `root` when it lies under it, else as given."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def find_file(root: Path, names: Sequence[str]) -> Path | None:
    """The first of `names` (relative paths or glob patterns) that exists under `root`.

    A pattern matching several files picks the last in sorted order (the newest version, for
    names that carry one such as ``mimic-cxr-2.0.0-...``).

    Any entry but a folder counts as found (a FIFO or a device too), so that reading it gives
    the file rule's reason (`engine.files`) instead of "not found".
    """
    def present(path: Path) -> bool:
        return path.exists() and not path.is_dir()

    for name in names:
        if any(ch in name for ch in "*?["):
            hits = sorted(p for p in root.glob(name) if present(p))
            if hits:
                return hits[-1]
        elif present(root / name):
            return root / name
    return None


def require_file(root: Path, names: Sequence[str], *, what: str) -> Path:
    """Like `find_file`, but raise CohortError naming what was looked for."""
    found = find_file(root, names)
    if found is None:
        if not root.exists():
            raise CohortError(f"{root}: cohort root does not exist")
        raise CohortError(f"{root}: no {what} found (looked for {', '.join(names)})")
    return found


def read_table(
    path: Path,
    root: Path,
    log: LoadLog,
    *,
    required: Iterable[str],
    text_columns: Iterable[str] = (),
    columns: Iterable[str] | None = None,
    contain: bool = True,
) -> pd.DataFrame:
    """Read a CSV (plain or ``.gz``) as strings, with ``_file`` and 1-based ``_row`` columns.

    The file must be a regular file and, unless `contain` is False (a file the user named
    explicitly), resolve inside `root` (`engine.files`).

    Cells are stripped; blanks stay empty strings. Rows holding bytes that are not UTF-8 are
    skipped with a problem (``non_utf8_report`` when the bad cell is one of `text_columns`,
    ``non_utf8`` otherwise), so one bad report never stops the load.

    Args:
        columns: When given, only these columns are read (the others are never parsed, which
            keeps wide release tables fast); absent ones are simply not there, and `required`
            still applies.

    Raises:
        CohortError: the file is refused by a file rule, cannot be parsed or lacks a
            `required` column (naming the missing columns and the ones found).
    """
    rel = display_path(path, root)
    wanted = None if columns is None else frozenset(columns) | frozenset(required)
    try:
        if contain:
            files.contained(root, path, what="table")
        with files.open_regular(path, what="table") as handle:
            try:
                frame = _read_csv(handle, "strict", wanted, path)
                bad_bytes = False
            except UnicodeDecodeError:
                handle.seek(0)
                frame = _read_csv(handle, "surrogateescape", wanted, path)
                bad_bytes = True
    except files.InputFileError as exc:
        raise CohortError(str(exc)) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, EOFError, zlib.error) as exc:
        raise CohortError(f"{rel}: cannot be read as a CSV table ({first_line(exc)})") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise CohortError(
            f"{rel}: missing required column(s) {', '.join(map(repr, missing))}; "
            f"columns found: {', '.join(map(repr, frame.columns)) or 'none'}"
        )
    for col in frame.columns:
        frame[col] = frame[col].str.strip()
    frame["_file"] = rel
    frame["_row"] = np.arange(1, len(frame) + 1)
    if bad_bytes:
        frame = _drop_non_utf8(frame, log, set(text_columns))
    return frame


def _read_csv(handle, errors: str, wanted: frozenset[str] | None, path: Path) -> pd.DataFrame:
    # object dtype keeps surrogate-escaped text (Arrow strings refuse it); no NA parsing, so a
    # blank cell is "" and a label column's blanks are told apart from bad values.
    return pd.read_csv(
        handle,
        compression="gzip" if Path(path).name.lower().endswith(".gz") else None,
        usecols=None if wanted is None else (lambda name: str(name).strip() in wanted),
        dtype=object,
        keep_default_na=False,
        na_filter=False,
        encoding="utf-8-sig",
        encoding_errors=errors,
    )


def _drop_non_utf8(frame: pd.DataFrame, log: LoadLog, text_columns: set[str]) -> pd.DataFrame:
    bad_rows = pd.Series(False, index=frame.index)
    first_bad: dict[int, str] = {}
    for col in frame.columns:
        if col.startswith("_"):
            continue
        hit = frame[col].str.contains(_SURROGATE, regex=True)
        for idx in frame.index[hit & ~bad_rows]:
            first_bad[idx] = col
        bad_rows |= hit
    for idx, col in first_bad.items():
        value = frame.at[idx, col]
        is_report = col in text_columns
        log.add(
            frame.at[idx, "_file"],
            frame.at[idx, "_row"],
            "non_utf8_report" if is_report else "non_utf8",
            f"column {col!r} is not valid UTF-8 text ({show_bad_bytes(value)}); row skipped",
        )
        log.stats["reports_non_utf8" if is_report else "rows_non_utf8"] += 1
    return frame.loc[~bad_rows]


def has_bad_bytes(text: str) -> bool:
    """True when `text` (decoded with ``surrogateescape``) held bytes that are not UTF-8."""
    return _SURROGATE.search(text) is not None


def show_bad_bytes(text: str, width: int = 60) -> str:
    """An excerpt of surrogate-escaped text around its first undecodable byte, bytes as \\xNN."""
    pos = _SURROGATE.search(text)
    start = max(0, (pos.start() if pos else 0) - width // 2)
    excerpt = text[start : start + width]
    shown = excerpt.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    shown = shown.replace("\n", " ").replace("\r", " ")
    return f"first bad byte at character {pos.start() if pos else 0}: '{shown}'"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def map_threads(func: Callable, items: Sequence) -> list:
    """`func` over `items` on a thread pool (file I/O: many small reads, slow on network disks).

    Items go to the threads in chunks, so the pool's per-task overhead stays small next to
    the reads.
    """
    chunks = [items[i : i + _IO_CHUNK] for i in range(0, len(items), _IO_CHUNK)]
    if len(chunks) < 2:
        return [func(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(_IO_THREADS, len(chunks))) as pool:
        done = pool.map(lambda chunk: [func(x) for x in chunk], chunks)
        return [result for chunk in done for result in chunk]


def read_json_records(path: Path, root: Path, log: LoadLog) -> pd.DataFrame:
    """Records of a JSON Lines file (one object per line) or a JSON array, with ``_row``.

    A JSONL line that is not a JSON object is skipped with a ``bad_label_row`` problem.

    Raises:
        CohortError: a JSON array file that does not parse.
    """
    rel = display_path(path, root)
    try:
        files.contained(root, path, what="label file")
        text = files.read_regular(path, what="label file").decode("utf-8-sig", errors="replace")
    except files.InputFileError as exc:
        raise CohortError(str(exc)) from None
    records: list[dict] = []
    rows: list[int] = []
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CohortError(f"{rel}: not valid JSON ({exc})") from exc
        numbered = enumerate(items, start=1)
    else:
        numbered = ((n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip())
    for n, item in numbered:
        if isinstance(item, str):
            try:
                item = json.loads(item)
            except json.JSONDecodeError as exc:
                log.add(rel, n, "bad_label_row", f"line is not valid JSON ({exc}); skipped")
                continue
        if not isinstance(item, dict):
            log.add(rel, n, "bad_label_row", f"expected a JSON object, got {item!r:.60}; skipped")
            continue
        records.append(item)
        rows.append(n)
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    frame = frame.astype(object)
    frame["_file"] = rel
    frame["_row"] = rows
    return frame
