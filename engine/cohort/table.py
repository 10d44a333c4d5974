"""The cohort table (docs/cohorts.md): one row per image, with its study's report and labels.

Columns: ``image_id, study_id, patient_id, split, view, image_path, report_text`` plus the 14
CheXpert labels (float: 1, 0, -1, or NaN for not mentioned). ``image_path`` is relative to the
cohort root; ``split`` is one of ``train``, ``validate``, ``test``; ``view`` is an upper-case view
position (``PA``, ``AP``, ``LATERAL``, ``LL``, ...), ``FRONTAL`` for a frontal image whose AP/PA
is not recorded (IU X-ray), or empty when unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from engine.core.labels import CHEXPERT_LABELS
from engine.errors import InputProblem

ID_COLUMNS: tuple[str, ...] = (
    "image_id",
    "study_id",
    "patient_id",
    "split",
    "view",
    "image_path",
    "report_text",
)
COLUMNS: tuple[str, ...] = ID_COLUMNS + CHEXPERT_LABELS
SPLITS: tuple[str, ...] = ("train", "validate", "test")
FRONTAL_VIEWS: tuple[str, ...] = ("PA", "AP", "FRONTAL")
SECTIONS: tuple[str, ...] = ("findings", "impression", "both", "full")
# Optional item columns an adapter may add (strings, kept by `conform` when present): a
# release's own finer finding and localization sets, sorted and ";"-joined (PadChest).
EXTRA_COLUMNS: tuple[str, ...] = ("findings", "localizations")


@dataclass
class CohortLoad:
    """What an adapter returns: the table, every problem found, and join statistics.

    Attributes:
        items: The cohort table (all images that survived, every view), columns `COLUMNS`.
        problems: Problems found, each with its file and row; skipped rows are counted here.
        stats: Counts worth showing in a validation report, e.g. ``images_listed``,
            ``images_without_report``, ``studies_without_images``.
    """

    items: pd.DataFrame
    problems: list[InputProblem] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def n_skipped(self) -> int:
        return sum(p.skipped for p in self.problems)


def conform(frame: pd.DataFrame) -> pd.DataFrame:
    """Return `frame` with `COLUMNS` (then any `EXTRA_COLUMNS` it has), string ids, float labels."""
    out = frame.copy()
    for col in ID_COLUMNS:
        if col not in out:
            out[col] = ""
        out[col] = out[col].fillna("").astype(str)
    for label in CHEXPERT_LABELS:
        out[label] = pd.to_numeric(out[label], errors="coerce") if label in out else np.nan
        out[label] = out[label].astype("float64")
    extras = [col for col in EXTRA_COLUMNS if col in out]
    for col in extras:
        out[col] = out[col].fillna("").astype(str)
    return out.loc[:, list(COLUMNS) + extras].reset_index(drop=True)


def select_one_image_per_study(items: pd.DataFrame) -> pd.DataFrame:
    """Keep one image per study: frontal if any (PA, then AP, then FRONTAL), then first by id.

    Studies with no frontal image keep their first image by id, so a study is never dropped
    silently; callers that need frontal-only filter on ``view`` afterwards.
    """
    if items.empty:
        return items.copy()
    rank = items["view"].map({view: i for i, view in enumerate(FRONTAL_VIEWS)})
    rank = rank.fillna(len(FRONTAL_VIEWS))
    ordered = items.assign(_rank=rank).sort_values(["study_id", "_rank", "image_id"], kind="stable")
    chosen = ordered.drop_duplicates("study_id", keep="first").drop(columns="_rank")
    return chosen.sort_values("image_id", kind="stable").reset_index(drop=True)


def resolve_image(root: str | Path, image_path: str) -> Path:
    """Absolute path of an image given the cohort root and the stored relative path.

    Raises `engine.images.ImagePathError` for a path outside the root (see `engine.images`).
    """
    from engine import images

    return images.resolve_image(root, image_path)
