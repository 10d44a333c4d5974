"""The 14 CheXpert labels: defined in `engine.core.labels`, re-exported for the engine's modules."""

from engine.core.labels import CHEXPERT_LABELS  # noqa: F401
