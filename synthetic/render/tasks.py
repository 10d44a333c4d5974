"""What a render is asked to do and what it did: the settings, the per-patient tasks, the summary.

Shared by `release` (which plans the tasks from a source release) and `renderer` (which draws
them), so neither imports the other's module for its types.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.errors import ConfigError

SOURCES: tuple[str, ...] = ("padchest", "iu-xray")
DEFAULT_IMAGE_SIZE = 128


@dataclass(frozen=True)
class RenderConfig:
    """What to render.

    Attributes:
        source: ``padchest`` or ``iu-xray``.
        max_patients: Render only this many patients (a seeded sample); None = all.
        seed: Anatomy, acquisition and noise seed (same seed, same bytes).
        image_size: Side of the square images in pixels (128 by default: fast, and twice the
            ladder's 64-pixel input).
        release_path: The release file to read (default: the installed torchxrayvision copy).
    """

    source: str
    max_patients: int | None = None
    seed: int = 0
    image_size: int = DEFAULT_IMAGE_SIZE
    release_path: Path | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"--source {self.source!r}: expected one of {', '.join(SOURCES)}")
        if self.max_patients is not None and self.max_patients < 1:
            raise ConfigError(f"--max-patients {self.max_patients}: expected at least 1")
        if not 64 <= self.image_size <= 1024:
            raise ConfigError(f"--image-size {self.image_size}: expected 64..1024 pixels")


@dataclass(frozen=True)
class ImageTask:
    """One image to draw: where it goes and how it was taken."""

    path: str  # relative to the output root
    view: str  # PA, AP or LATERAL
    supine: bool


@dataclass(frozen=True)
class StudyTask:
    """One study: its id, images and what it shows (source annotations)."""

    study_id: str
    images: tuple[ImageTask, ...]
    groups: tuple = ()  # PadChest: (label, (loc, ...)) pairs
    report: str = ""
    major: tuple[str, ...] = ()  # OpenI MeSH major tags


@dataclass(frozen=True)
class PatientTask:
    source: str
    patient_id: str
    sex: str | None
    age: int | None
    studies: tuple[StudyTask, ...]
    seed: int
    size: int
    out: str


@dataclass(frozen=True)
class RenderSummary:
    """What `render_cohort` did."""

    source: str
    out: Path
    n_patients: int
    n_studies: int
    n_images: int
    n_written: int
    seconds: float
    draw_seconds: float
    undrawn: dict[str, int]
    drawn: dict[str, int]

    @property
    def images_per_second(self) -> float:
        """Images drawn and written per second of drawing (reading the release excluded)."""
        return self.n_written / self.draw_seconds if self.draw_seconds > 0 else 0.0

