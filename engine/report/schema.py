"""The report document's JSON Schema (``report.schema.json``) and its validation.

The schema is versioned with the document: ``schema_version`` is ``"MAJOR.MINOR"``; minor
versions only add fields, a change of meaning bumps the major version (and the schema's
``schema_version`` pattern).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from engine.errors import EngineError

SCHEMA_PATH = Path(__file__).with_name("report.schema.json")


class ReportSchemaError(EngineError):
    """A report document that does not match the JSON Schema (names the field and the value)."""


@functools.lru_cache(maxsize=1)
def load_schema() -> dict:
    """The JSON Schema of the report document, as a dict."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate_document(document: dict) -> None:
    """Check a document against the schema.

    Raises:
        ReportSchemaError: naming the first offending field (as a JSON path) and the problem.
    """
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(document)"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ReportSchemaError(
            f"report document does not match {SCHEMA_PATH.name} at {where}: "
            f"{first.message}{more}")
