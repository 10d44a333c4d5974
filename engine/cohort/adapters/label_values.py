"""Label parsing: the 14 CheXpert label columns of a label table as 1 / 0 / -1 / missing."""

from __future__ import annotations

import numpy as np
import pandas as pd

from engine.cohort.adapters.loadlog import LoadLog
from engine.core.labels import CHEXPERT_LABELS

_BLANK_LABELS = frozenset({"", "nan", "none", "null", "na"})
_VALID_LABELS = (1.0, 0.0, -1.0)


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
