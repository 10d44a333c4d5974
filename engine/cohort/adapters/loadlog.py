"""The load log: problems and counters one adapter collects while it reads a cohort.

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

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.cohort.table import SECTIONS
from engine.errors import ConfigError, InputProblem

# Counters every adapter reports (zero when nothing happened), in the order and wording a
# validation report shows them.
STAT_LABELS: dict[str, str] = {
    "rows_listed": "rows listed",
    "images_listed": "images listed",
    "images_other_views": "images not frontal (not used)",
    "images_not_selected": "frontal images beyond one per study (not used)",
    "images_found": "images found and readable",
    "images_missing": "images missing",
    "images_unreadable": "images unreadable (corrupt)",
    "images_outside_root": "images outside the cohort root (not read)",
    "images_too_small": "images too small",
    "images_high_bit_depth": "images high bit depth (kept, windowed)",
    "images_without_split": "images without a split",
    "images_without_report": "images without a usable report",
    "images_without_labels": "images without labels (kept, labels missing)",
    "studies_listed": "studies listed",
    "studies_without_images": "studies without a usable image",
    "reports_missing": "reports missing",
    "reports_empty": "reports empty",
    "reports_non_utf8": "reports not UTF-8",
    "reports_refused": "reports not read (outside the root, not a regular file, too large)",
    "reports_section_fallback": "reports using a fallback section",
    "reports_conflicting": "rows whose report differs within a study",
    "reports_shared": "report ids shared by several studies (all kept)",
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


@dataclass
class LoadLog:
    """Problems and counters collected while one adapter reads a cohort."""

    problems: list[InputProblem] = field(default_factory=list)
    stats: Counter = field(default_factory=lambda: Counter(dict.fromkeys(STAT_LABELS, 0)))

    def add(
        self, file: str, row: int | None, kind: str, message: str, *, skipped: bool = True
    ) -> None:
        self.problems.append(InputProblem(file, row_number(row), kind, message, skipped))

    def missing_label_file(self, name: str, candidates, root: Path, n_images: int,
                           *, what: str, unit: str) -> None:
        """Record an absent label file: every image keeps its row, with all 14 labels missing."""
        self.add(name, None, "missing_label_file",
                 f"no {what} ({' or '.join(candidates)}) under {root}; all 14 labels are "
                 f"missing for every {unit}", skipped=False)
        self.stats["images_without_labels"] += n_images


def row_number(value: object) -> int | None:
    """A 1-based row number as int, or None for a missing one (None or NaN)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return int(value)  # type: ignore[arg-type]


def check_section(section: str) -> None:
    """Raise ConfigError unless `section` is one of `table.SECTIONS`."""
    if section not in SECTIONS:
        raise ConfigError(f"--section {section!r} is not one of {', '.join(SECTIONS)}")
