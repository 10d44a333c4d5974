"""The `report` stage: one model × cohort audit as HTML, PDF and JSON, for a compliance file.

Data flow: `content.build_document` reads DuckDB (read-only) into one plain document ->
`schema.validate_document` checks it against ``report.schema.json`` -> `outline.blocks_of` lays
it out as blocks -> `html.render_html` / `pdf.write_pdf` render the blocks, with the figures of
`figures` (matplotlib: inline SVG in the HTML, vector drawings in the PDF). The JSON file is the
document itself. Nothing here imports torch, open_clip, opacus, faiss or umap.

Public entry point: `write_report`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from engine.core.plaintext import visible_tree
from engine.errors import ConfigError
from engine.files import replacing
from engine.report.content import SCHEMA_VERSION, build_document
from engine.report.schema import ReportSchemaError, validate_document

log = logging.getLogger(__name__)

FORMATS = ("html", "pdf", "json")

__all__ = ["FORMATS", "SCHEMA_VERSION", "ReportSchemaError", "build_document", "report_stem",
           "validate_document", "write_report"]


def write_report(
    db: Path,
    *,
    model: str,
    cohort: str,
    formats: Iterable[str] = FORMATS,
    out: Path,
    examples: bool | None = None,
) -> dict[str, Path]:
    """Write the audit report of `model` on `cohort` in the requested formats.

    Files are named ``<model>__<cohort>.<format>`` inside `out`, which is created if needed
    (`report_stem`: names with other characters than ``[a-z0-9._-]`` are made safe and get a
    short hash, so the name is unique per model and cohort). Each file is written to a
    temporary name and renamed into place, so a reader never sees half a report; a write that
    fails (a full disk) removes its temporary file and names the file it was writing.

    Args:
        db: The results database (read for the content; the written files are listed in its
            ``reports`` table).
        model: Registered model name, or a registered model's open_clip spec.
        cohort: Registered cohort name.
        formats: Any of ``html``, ``pdf``, ``json`` (a list, or one comma-separated string).
        out: Output folder.
        examples: Quote example report texts; default: only when the cohort is synthetic.

    Returns:
        Format -> path of the written file.

    Raises:
        ConfigError: an unknown format, model or cohort (the message names it).
        ReportSchemaError: the document does not match the JSON Schema (a bug, not bad input).
        StoreError: the database is missing or locked.
    """
    if isinstance(formats, str):  # "html,pdf" as typed on the command line
        formats = formats.split(",")
    wanted = [f.strip().lower() for f in formats if f and f.strip()]
    bad = [f for f in wanted if f not in FORMATS]
    if bad or not wanted:
        raise ConfigError(f"--format {','.join(bad) or '(empty)'}: expected a comma-separated "
                          f"subset of {','.join(FORMATS)}")
    from engine import store

    if Path(db).is_file():
        with store.connect_write(Path(db)):
            pass  # brings a results file of an earlier schema version up to date before reading
    doc = build_document(Path(db), model=model, cohort=cohort, examples=examples)
    validate_document(doc)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = report_stem(doc["model"]["name"], doc["cohort"]["name"])
    written: dict[str, Path] = {}
    try:
        _write_formats(doc, wanted, out / stem, written)
    finally:
        if written:  # the files written before a failure stay listed
            _record(Path(db), doc["model"]["name"], doc["cohort"]["name"], written)
    return written


def _write_formats(doc: dict, wanted: list[str], stem: Path, written: dict[str, Path]) -> None:
    """Write `doc` as each format of `wanted` to ``<stem>.<format>``, filling `written`."""
    blocks = shown = None
    for fmt in dict.fromkeys(wanted):
        path = stem.with_name(f"{stem.name}.{fmt}")
        if fmt != "json" and blocks is None:
            from engine.report.outline import blocks_of

            # Control and bidi characters of stored text (a NUL in a report, a right-to-left
            # override) are shown as markers in the HTML and PDF; the JSON keeps the exact text.
            shown = visible_tree(doc)
            blocks = blocks_of(shown)
        with replacing(path, tmp=path.with_name(f".{path.name}.tmp")) as tmp:
            if fmt == "json":
                tmp.write_text(
                    json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n",
                    encoding="utf-8")
            elif fmt == "html":
                from engine.report.html import render_html

                tmp.write_text(render_html(shown, blocks), encoding="utf-8")
            else:
                from engine.report.pdf import write_pdf

                write_pdf(shown, tmp, blocks)
        written[fmt] = path
        log.info("report %s/%s: wrote %s", doc["model"]["name"], doc["cohort"]["name"], path)


def _record(db: Path, model: str, cohort: str, written: dict[str, Path]) -> None:
    """List the written files in the ``reports`` table and record a ``report`` run.

    Every report ever written stays listed (one row per path: a rewrite of the same file
    replaces its row), with its content hash and size, so a copy written elsewhere never hides
    the default one; the dashboard offers the newest listed file that still exists.
    """
    import hashlib

    import pandas as pd

    from engine import store
    from engine.runs import Run, cohort_fingerprint

    hashes = {fmt: hashlib.sha256(path.read_bytes()).hexdigest()[:16]
              for fmt, path in written.items()}
    run = Run("report", model, cohort, {"formats": sorted(written),
                                        "paths": {f: str(p.resolve()) for f, p in
                                                  written.items()}},
              inputs={"content": hashes}, cohort_fingerprint=cohort_fingerprint(db, cohort))
    rows = pd.DataFrame([{"model": model, "cohort": cohort, "format": fmt,
                          "path": str(path.resolve()), "run_id": run.run_id,
                          "content_hash": hashes[fmt], "bytes": path.stat().st_size}
                         for fmt, path in written.items()])
    with store.connect_write(db) as con, store.transaction(con):
        for row in rows.to_dict("records"):
            store.replace_rows(con, "reports", pd.DataFrame([row]), path=row["path"])
        run.record(con, status="done", n_rows=len(rows))


def report_stem(model: str, cohort: str) -> str:
    """The file name stem of a report, unique per exact (model, cohort) pair.

    ``<model>__<cohort>`` when both names are made of ``[a-z0-9._-]`` only and neither holds
    ``__`` (such names map to distinct stems, on case-insensitive disks too). Otherwise every
    character outside ``[A-Za-z0-9._-]`` becomes ``-`` and a short hash of the exact names is
    appended, ``<model>__<cohort>-<8 hex>``, so cohorts ``col x`` and ``col-x`` never share a
    file.
    """
    import hashlib

    def safe(s: str) -> str:
        return "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "-" for c in s)

    stem = f"{safe(model)}__{safe(cohort)}"
    plain = all(name == safe(name) and name == name.lower() and "__" not in name
                for name in (model, cohort))
    if plain:
        return stem
    digest = hashlib.sha256(json.dumps([model, cohort]).encode("utf-8")).hexdigest()[:8]
    return f"{stem}-{digest}"
