"""Embeddings imported from elsewhere: ``imported:DIGEST`` (`engine.embed.imports`).

A model whose embeddings were exported by its own code (BioViL-T, MedImageInsight, ...) and
imported with ``import-embeddings`` is registered with this spec; ``DIGEST`` is the content hash
of the imported files, and is the model's fingerprint. There is nothing to load: the embeddings
are already in the cache.
"""

from __future__ import annotations

import re
from pathlib import Path

from engine.errors import ModelLoadError
from engine.models.families import FamilyModel, strip_prefix

PREFIX = "imported:"
_DIGEST = re.compile(r"^[0-9a-f]{16}$")


def spec_for(digest: str) -> str:
    return f"{PREFIX}{digest}"


def fingerprint(spec: str) -> str:
    digest = strip_prefix(spec).strip()
    if not _DIGEST.match(digest):
        raise ModelLoadError(f"--model {spec!r}: expected imported:<16 hex digits>")
    return digest


def load(spec: str, *, device: str = "cpu", seed: int = 0) -> FamilyModel:
    raise ModelLoadError(
        f"--model {spec!r}: its embeddings were imported (`import-embeddings`); there is no model "
        "to run here: import the new cohort's embeddings the same way")


def files(spec: str) -> list[Path]:
    return []


def available(spec: str) -> str:
    return "imported"
