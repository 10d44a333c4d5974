"""The engine's exception hierarchy.

Every error names what the user has to look at: a file and row, a flag, a key, and the offending
value. The CLI turns any `EngineError` into one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

# Longest cohort or model name accepted (names become folder names and page labels).
NAME_MAX = 100


class EngineError(Exception):
    """Base class: an error the user can act on, shown as one line by the CLI."""


class ConfigError(EngineError):
    """A bad option value or configuration file entry."""


class CohortError(EngineError):
    """A cohort that cannot be read at all (as opposed to skippable bad rows)."""


class ModelLoadError(EngineError):
    """A model spec that cannot be resolved or loaded."""


class StoreError(EngineError):
    """The DuckDB store is missing, locked or from an incompatible schema version."""


@dataclass(frozen=True)
class InputProblem:
    """One problem found in the input, with enough context to find and fix it.

    Attributes:
        file: Path of the offending file (as given by the user, or relative to the cohort root).
        row: 1-based data row in that file (header excluded), or None when the file as a whole is
            affected.
        kind: Short machine-readable category, e.g. ``missing_image`` or ``duplicate_id``.
        message: Human-readable explanation naming the offending value.
        skipped: True when the affected item was left out and the rest of the run went on.
    """

    file: str
    row: int | None
    kind: str
    message: str
    skipped: bool = True

    def __str__(self) -> str:
        where = self.file if self.row is None else f"{self.file}, row {self.row}"
        return f"{where}: {self.message}"


def check_name(value: str, what: str = "--name") -> str:
    """A cohort or model name: printable, no path separators, not empty; returns it stripped.

    Names become folder names under the cache and labels on every page, so a name that is
    empty, ``.``/``..``, or holds a slash, backslash or control character is refused.

    Raises:
        ConfigError: naming the option and the offending value.
    """
    name = str(value).strip()
    if not name:
        raise ConfigError(f"{what} {value!r}: a name cannot be empty; choose one like site-a")
    if name in (".", ".."):
        raise ConfigError(f"{what} {value!r}: not a usable name; choose one like site-a")
    bad = sorted({c for c in name if c in "/\\" or unicodedata.category(c)[0] == "C"})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise ConfigError(f"{what} {value!r}: names cannot contain path separators or control "
                          f"characters ({shown}); use letters, digits, '-', '_' or '.'")
    if len(name) > NAME_MAX:
        raise ConfigError(f"{what}: a name has at most {NAME_MAX} characters, got {len(name)}")
    return name
