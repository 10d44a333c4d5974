"""Pieces every dataset adapter shares: tables, ids, splits, images, reports, labels, the finish.

Conventions, the same for every format so that `cohort check` reads alike:

* A problem's ``file`` is the table (relative to the cohort root) whose data row lists the
  item, and ``row`` is that 1-based data row (header excluded; a quoted cell spanning several
  lines is still one row). The message names the file on disk (image, report) and the
  offending value. MIMIC-CXR's per-study report files are listed in no table: their problems
  name the ``.txt`` file itself, with ``row`` None.
* A skippable problem drops its row (or its study) and the load goes on. `CohortError` is
  raised only when a required file or column is missing, a table cannot be parsed at all, or
  nothing usable is left.
* Every adapter fills the counters of `STAT_LABELS` (zero when nothing happened), so a
  validation report can show the same lines for every format.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from engine.cohort.table import SECTIONS, CohortLoad, conform
from engine.errors import CohortError, ConfigError, InputProblem
from engine.labels import CHEXPERT_LABELS

_logger = logging.getLogger(__name__)

# Counters every adapter reports (zero when nothing happened), in the order and wording a
# validation report shows them.
STAT_LABELS: dict[str, str] = {
    "rows_listed": "rows listed",
    "images_listed": "images listed",
    "images_found": "images found and readable",
    "images_missing": "images missing",
    "images_unreadable": "images unreadable (corrupt)",
    "images_without_split": "images without a split",
    "images_without_report": "images without a usable report",
    "images_without_labels": "images without labels (kept, labels missing)",
    "studies_listed": "studies listed",
    "studies_without_images": "studies without a usable image",
    "reports_missing": "reports missing",
    "reports_empty": "reports empty",
    "reports_non_utf8": "reports not UTF-8",
    "reports_section_fallback": "reports using a fallback section",
    "reports_conflicting": "rows whose report differs within a study",
    "duplicate_ids": "duplicate ids (later rows skipped)",
    "rows_bad_split": "rows with an unknown split",
    "rows_missing_id": "rows with an empty id",
    "rows_non_utf8": "rows with non-UTF-8 fields",
    "label_values_invalid": "invalid label values (treated as missing)",
    "patients_in_several_splits": "patients in several splits",
    "images_kept": "images kept",
    "studies_kept": "studies kept",
    "patients_kept": "patients kept",
}

# Split spellings of the real releases (MIMIC train/validate/test, CheXpert train/valid).
SPLIT_NAMES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "valid": "validate",
    "validate": "validate",
    "validation": "validate",
    "val": "validate",
    "dev": "validate",
    "test": "test",
    "testing": "test",
}

# Share of patients a hash split puts in `test` (the rest is `train`).
HASH_TEST_FRACTION = 0.25

_BLANK_LABELS = frozenset({"", "nan", "none", "null", "na"})
_VALID_LABELS = (1.0, 0.0, -1.0)
_SURROGATE = re.compile("[\udc80-\udcff]")
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_IO_THREADS = 16
_IO_CHUNK = 256


@dataclass
class LoadLog:
    """Problems and counters collected while one adapter reads a cohort."""

    problems: list[InputProblem] = field(default_factory=list)
    stats: Counter = field(default_factory=lambda: Counter(dict.fromkeys(STAT_LABELS, 0)))

    def add(
        self, file: str, row: int | None, kind: str, message: str, *, skipped: bool = True
    ) -> None:
        self.problems.append(InputProblem(file, _row(row), kind, message, skipped))


    def missing_label_file(self, name: str, candidates, root: Path, n_images: int,
                           *, what: str, unit: str) -> None:
        """Record an absent label file: every image keeps its row, with all 14 labels missing."""
        self.add(name, None, "missing_label_file",
                 f"no {what} ({' or '.join(candidates)}) under {root}; all 14 labels are "
                 f"missing for every {unit}", skipped=False)
        self.stats["images_without_labels"] += n_images


def _row(value: object) -> int | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return int(value)  # type: ignore[arg-type]


def check_section(section: str) -> None:
    """Raise ConfigError unless `section` is one of `table.SECTIONS`."""
    if section not in SECTIONS:
        raise ConfigError(f"--section {section!r} is not one of {', '.join(SECTIONS)}")


# --------------------------------------------------------------------------- files and tables


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
    """
    for name in names:
        if any(ch in name for ch in "*?["):
            hits = sorted(p for p in root.glob(name) if p.is_file())
            if hits:
                return hits[-1]
        elif (root / name).is_file():
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
) -> pd.DataFrame:
    """Read a CSV (plain or ``.gz``) as strings, with ``_file`` and 1-based ``_row`` columns.

    Cells are stripped; blanks stay empty strings. Rows holding bytes that are not UTF-8 are
    skipped with a problem (``non_utf8_report`` when the bad cell is one of `text_columns`,
    ``non_utf8`` otherwise), so one bad report never stops the load.

    Raises:
        CohortError: the file cannot be parsed or lacks a `required` column (naming the
            missing columns and the ones found).
    """
    rel = display_path(path, root)
    try:
        frame = _read_csv(path, "strict")
        bad_bytes = False
    except UnicodeDecodeError:
        frame = _read_csv(path, "surrogateescape")
        bad_bytes = True
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, EOFError, zlib.error) as exc:
        raise CohortError(f"{rel}: cannot be read as a CSV table ({_first_line(exc)})") from exc
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


def _read_csv(path: Path, errors: str) -> pd.DataFrame:
    # object dtype keeps surrogate-escaped text (Arrow strings refuse it); no NA parsing, so a
    # blank cell is "" and a label column's blanks are told apart from bad values.
    return pd.read_csv(
        path,
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


def _first_line(exc: BaseException) -> str:
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


# --------------------------------------------------------------------------- ids and splits


def drop_blank(frame: pd.DataFrame, columns: Sequence[str], log: LoadLog) -> pd.DataFrame:
    """Skip rows where any of `columns` (ids) is empty, one problem per row."""
    blank = (frame[list(columns)] == "").any(axis=1)
    for _, r in frame.loc[blank].iterrows():
        cols = [c for c in columns if r[c] == ""]
        log.add(r["_file"], r["_row"], "missing_id", f"empty {', '.join(cols)}; row skipped")
    log.stats["rows_missing_id"] += int(blank.sum())
    return frame.loc[~blank]


def drop_duplicates(
    frame: pd.DataFrame, key: str | Sequence[str], log: LoadLog, *, what: str
) -> pd.DataFrame:
    """Keep the first row of each `key`; skip the others, naming both rows."""
    cols = [key] if isinstance(key, str) else list(key)
    dup = frame.duplicated(cols, keep="first")
    if not dup.any():
        return frame
    first = frame.groupby(cols, sort=False)["_row"].transform("first")
    for idx in frame.index[dup]:
        value = "/".join(str(frame.at[idx, c]) for c in cols)
        log.add(
            frame.at[idx, "_file"],
            frame.at[idx, "_row"],
            "duplicate_id",
            f"duplicate {what} {value!r}: first listed in row {first[idx]}, which is kept; "
            "this row skipped",
        )
    log.stats["duplicate_ids"] += int(dup.sum())
    return frame.loc[~dup]


def normalise_splits(frame: pd.DataFrame, log: LoadLog, column: str = "split") -> pd.DataFrame:
    """Map split spellings to train/validate/test (`SPLIT_NAMES`); skip rows with other values."""
    mapped = frame[column].str.lower().map(SPLIT_NAMES)
    bad = mapped.isna()
    for idx in frame.index[bad]:
        log.add(
            frame.at[idx, "_file"],
            frame.at[idx, "_row"],
            "bad_split",
            f"split {frame.at[idx, column]!r} is not one of train, validate (valid), test; "
            "row skipped",
        )
    log.stats["rows_bad_split"] += int(bad.sum())
    out = frame.loc[~bad].copy()
    out["split"] = mapped[~bad]
    return out


def hash_split(key: str) -> str:
    """Deterministic split of a patient id: ``test`` for 25% of ids, ``train`` for the rest.

    The same id gets the same split on every machine and run (SHA-256, not Python's hash), so
    splits made this way are patient-disjoint by construction.
    """
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2.0**64 < HASH_TEST_FRACTION else "train"


# --------------------------------------------------------------------------- images


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
        return "corrupt", f"cannot be read ({_first_line(exc)})"
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


# --------------------------------------------------------------------------- reports

# Section headers of radiology reports: a line starting with upper-case words and a colon
# (" FINDINGS:", "IMPRESSION:", "CLINICAL HISTORY:"). Every header ends the section before it.
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z0-9 ()/,&'-]*?)[ \t]*:(?=\s|$)", re.MULTILINE)

# Header spellings (lower case, single spaces) that mean findings or impression, after the
# normalisation of the MIMIC-CXR sectioner (MIT-LCP/mimic-cxr txt/section_parser.py),
# typos of the real reports included. Other headers are sections we do not use.
SECTION_ALIASES: dict[str, str] = {
    "findings": "findings",
    "finding": "findings",
    "findins": "findings",
    "findngs": "findings",
    "finidngs": "findings",
    "findnings": "findings",
    "findgings": "findings",
    "findindgs": "findings",
    "reference findings": "findings",
    "chest, two views": "findings",
    "impression": "impression",
    "impresson": "impression",
    "impresion": "impression",
    "impession": "impression",
    "imperssion": "impression",
    "imprssion": "impression",
    "impressoin": "impression",
    "imoression": "impression",
    "imprression": "impression",
    "mpression": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "findings and impression": "impression",
    "impression and findings": "impression",
    "findings/impression": "impression",
    "findings/ impression": "impression",
}


def normalise_text(text: str) -> str:
    """Whitespace collapsed to single spaces (sections are stored as one paragraph)."""
    return " ".join(text.split())


def normalise_full(text: str) -> str:
    """A whole report: lines stripped, blank lines dropped, line breaks kept."""
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def parse_sections(text: str) -> dict[str, str]:
    """Findings and impression of a free-text report with upper-case section headers.

    Returns:
        ``{"findings": ..., "impression": ...}``, each whitespace-normalised, empty when the
        report has no such section. Repeated sections are joined in order.
    """
    out = {"findings": [], "impression": []}
    matches = list(_HEADER.finditer(text))
    for i, m in enumerate(matches):
        name = SECTION_ALIASES.get(" ".join(m.group(1).lower().split()))
        if name is None:
            continue
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = normalise_text(text[m.end() : end])
        if body:
            out[name].append(body)
    return {k: " ".join(v) for k, v in out.items()}


def has_content(text: str) -> bool:
    """True when `text` holds more than section headers and a ``FINAL REPORT`` banner."""
    stripped = _HEADER.sub(" ", text).replace("FINAL REPORT", " ")
    return bool(stripped.strip())


def compose_report(findings: str, impression: str, full: str, section: str) -> tuple[str, bool]:
    """The report text for `section`, falling back when that section is empty.

    Fallbacks: findings -> impression -> whole report; impression -> findings -> whole
    report; both (findings, then impression, one per line) -> whichever exists -> whole
    report; full -> whole report.

    Returns:
        ``(text, fell_back)``; text is empty when the report has no content at all.
    """
    full_text = full if has_content(full) else ""
    if section == "full":
        return full_text, False
    parts = {"findings": findings, "impression": impression}
    wanted = ("findings", "impression") if section == "both" else (section,)
    present = [parts[k] for k in wanted if parts[k]]
    if len(present) == len(wanted):
        return "\n".join(present), False
    if present:
        return "\n".join(present), True
    others = [v for k, v in parts.items() if k not in wanted and v]
    if others:
        return others[0], True
    return full_text, bool(full_text)


def select_report_text(sources: pd.DataFrame, section: str, log: LoadLog) -> dict[str, str]:
    """One report text per study from candidate report rows.

    Args:
        sources: Rows with ``study_id``, ``_file``, ``_row`` and ``full`` (the whole report),
            optionally ``findings`` and ``impression`` (given sections; when these columns are
            absent the sections are parsed from ``full``). Several rows of one study are
            allowed (an image-level table); the first usable one wins.
        section: One of `table.SECTIONS`.

    Returns:
        study_id -> text, for studies with a usable report. Studies without one get an
        ``empty_report`` problem and are left out; rows whose text differs from the one
        used get a ``conflicting_report`` problem (not skipped).
    """
    given = "findings" in sources.columns and "impression" in sources.columns
    texts, fell = [], []
    for r in sources.itertuples(index=False):
        full = str(r.full)
        if given:
            findings, impression = normalise_text(r.findings), normalise_text(r.impression)
        else:
            found = parse_sections(full)
            findings, impression = found["findings"], found["impression"]
        text, fell_back = compose_report(findings, impression, normalise_full(full), section)
        texts.append(text)
        fell.append(fell_back)
    frame = sources.assign(_text=texts, _fell=fell)
    usable = frame.loc[frame["_text"] != ""]
    chosen = usable.drop_duplicates("study_id", keep="first").set_index("study_id")
    for study, grp in frame.loc[~frame["study_id"].isin(chosen.index)].groupby(
        "study_id", sort=False
    ):
        first = grp.iloc[0]
        log.add(
            first["_file"],
            first["_row"],
            "empty_report",
            f"report of study {study!r} is empty (no text in any section); study skipped",
        )
        log.stats["reports_empty"] += 1
    log.stats["reports_section_fallback"] += int(chosen["_fell"].sum())
    used = frame["study_id"].map(chosen["_text"])
    differs = used.notna() & (frame["_text"] != used)
    if differs.any():
        first_row = frame["study_id"].map(chosen["_row"])
        for idx in frame.index[differs]:
            log.add(
                frame.at[idx, "_file"],
                frame.at[idx, "_row"],
                "conflicting_report",
                f"report of study {frame.at[idx, 'study_id']!r} differs from the one in row "
                f"{first_row[idx]}, which is used for every image of the study",
                skipped=False,
            )
        log.stats["reports_conflicting"] += int(differs.sum())
    return chosen["_text"].to_dict()


def attach_reports(
    images: pd.DataFrame, texts: dict[str, str], log: LoadLog
) -> pd.DataFrame:
    """Give each image its study's report; drop images whose study has none (counted)."""
    report = images["study_id"].map(texts)
    log.stats["images_without_report"] += int(report.isna().sum())
    return images.assign(report_text=report).loc[report.notna()]


# --------------------------------------------------------------------------- labels


def parse_labels(
    frame: pd.DataFrame, log: LoadLog, *, file: str, warn_absent: bool = True
) -> pd.DataFrame:
    """Turn the label columns of a label table into floats 1 / 0 / -1 / NaN.

    A label column absent from the table is missing (NaN) for every row, with one
    ``missing_label_column`` problem when `warn_absent`. A value other than 1, 0, -1 or blank
    becomes NaN with a ``bad_label_value`` problem; neither skips the row.
    """
    out = frame.copy()
    absent = [label for label in CHEXPERT_LABELS if label not in out.columns]
    if absent and warn_absent:
        found = [c for c in frame.columns if not c.startswith("_")]
        log.add(
            file,
            None,
            "missing_label_column",
            f"label column(s) {', '.join(map(repr, absent))} not found (columns: "
            f"{', '.join(map(repr, found))}); these labels are missing for every study",
            skipped=False,
        )
    for label in CHEXPERT_LABELS:
        if label not in out.columns:
            out[label] = np.nan
            continue
        raw = out[label]
        text = raw.astype(object).where(raw.notna(), "").map(str).str.strip()
        values = pd.to_numeric(text, errors="coerce").astype("float64")
        blank = text.str.lower().isin(_BLANK_LABELS)
        bad = ~blank & ~values.isin(_VALID_LABELS)
        for idx in out.index[bad]:
            log.add(
                file,
                out.at[idx, "_row"],
                "bad_label_value",
                f"{label} = {text[idx]!r} is not 1, 0, -1 or blank; treated as missing",
                skipped=False,
            )
        log.stats["label_values_invalid"] += int(bad.sum())
        out[label] = values.where(~bad & ~blank)
    return out


def read_json_records(path: Path, root: Path, log: LoadLog) -> pd.DataFrame:
    """Records of a JSON Lines file (one object per line) or a JSON array, with ``_row``.

    A JSONL line that is not a JSON object is skipped with a ``bad_label_row`` problem.

    Raises:
        CohortError: a JSON array file that does not parse.
    """
    rel = display_path(path, root)
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
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


# --------------------------------------------------------------------------- the finish


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
        first = f"; first: {log.problems[0]}" if log.problems else ""
        raise CohortError(f"{root}: no usable images ({summary}){first}")
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
        where = ", ".join(f"{r['split']} (row {_row(r[row_col])})" for _, r in firsts.iterrows())
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
            f"{_row(first['_row'])}) and patient {other['patient_id']!r}",
            skipped=False,
        )
