"""Adapters from dataset layouts on disk to the cohort table.

Each adapter is a function ``load(root: Path, *, section: str) -> CohortLoad`` registered under its
format name. Adapters never raise on a bad row: they skip it and record an `InputProblem` naming
the file and row. They raise `CohortError` only when the cohort cannot be read at all (a missing
required file or column, or no usable rows).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from engine.cohort.table import CohortLoad
from engine.errors import ConfigError

# format name -> "module:function"; imported on use so a format's dependencies stay optional.
FORMATS: dict[str, str] = {
    "mimic-cxr-jpg": "engine.cohort.adapters.mimic_cxr_jpg:load",
    "chexpert-plus": "engine.cohort.adapters.chexpert_plus:load",
    "iu-xray": "engine.cohort.adapters.iu_xray:load",
    "padchest": "engine.cohort.adapters.padchest:load",
    "csv": "engine.cohort.adapters.csv_table:load",
}


def get_adapter(fmt: str) -> Callable[..., CohortLoad]:
    """Return the loader for a format name, or raise naming the valid ones."""
    try:
        target = FORMATS[fmt]
    except KeyError:
        raise ConfigError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}") from None
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def load_cohort(fmt: str, root: str | Path, *, section: str = "both", **options) -> CohortLoad:
    """Read a dataset of format `fmt` at `root` into a `CohortLoad`.

    `options` go to the format's loader as keywords (e.g. PadChest's ``test_fraction``,
    ``seed``, ``max_patients``); a loader raises TypeError for one it does not take.
    """
    return get_adapter(fmt)(Path(root), section=section, **options)
