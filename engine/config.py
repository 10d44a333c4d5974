"""Typed, frozen configuration, built at the edge (CLI flags) and passed down as values."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_CACHE = Path("cache")
DEFAULT_DB = DEFAULT_CACHE / "relink.duckdb"


@dataclass(frozen=True)
class SynthConfig:
    """Phantom cohort generation (docs/phantom.md).

    Attributes:
        site: ``A`` (MIMIC-CXR-JPG layout, site A style) or ``B`` (CheXpert Plus layout).
        patients: Number of patients; each has 1-5 studies.
        seed: Everything is a deterministic function of the seed (byte-identical output).
        image_size: Side of the square grayscale images, in pixels (at least 256).
        lateral_fraction: Fraction of studies that also get a lateral image.
        held_out_fraction: Site A: fraction of patients in the held-out (test) split; 5% go to
            validate and the rest to train. Site B: fraction in ``valid``.
    """

    site: str = "A"
    patients: int = 1000
    seed: int = 0
    image_size: int = 256
    lateral_fraction: float = 0.3
    held_out_fraction: float = 0.25

    def __post_init__(self) -> None:
        from engine.errors import ConfigError

        if self.site not in ("A", "B"):
            raise ConfigError(f"--site {self.site!r}: expected A or B")
        if self.patients < 1:
            raise ConfigError(f"--patients {self.patients}: expected at least 1")
        if self.image_size < 256:
            raise ConfigError(f"--image-size {self.image_size}: expected at least 256")
        if not 0.0 <= self.lateral_fraction <= 1.0:
            raise ConfigError(f"lateral_fraction {self.lateral_fraction}: expected 0..1")
        if not 0.0 < self.held_out_fraction < 0.95:
            raise ConfigError(f"held_out_fraction {self.held_out_fraction}: expected in (0, 0.95)")

