"""Model families: one module per way a dual encoder loads, behind one registry (docs/models.md).

The prefix of a spec picks the family; a spec without a known prefix is an open_clip spec (the
default, `engine.models.loading`). Every family's ``load`` returns a `FamilyModel`: the frozen
backbones, the two heads, the image preprocessing, a tokenizer giving ids and an attention mask,
and the family's temperature, bias and contrastive loss. Every family's ``fingerprint`` gives a
content identity of what the spec loads without building the model, and ``files`` the files
that identity reads (so a caller can tell when they changed).

Adding a family: write its module (``load``, ``fingerprint``, ``files``, ``available``), add its
prefixes to `PREFIXES`, a test, and a row in docs/models.md. Importing this package loads
neither torch, open_clip nor transformers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

# prefix -> family; the family's module is engine.models.families.<family>.
PREFIXES: dict[str, str] = {
    "open_clip:": "open_clip",
    "hf:": "hf",
    "transformers:": "hf",
    "openai:": "openai",
    "imported:": "imported",
}
DEFAULT_FAMILY = "open_clip"
FAMILIES: tuple[str, ...] = (DEFAULT_FAMILY, "hf", "openai", "imported")
# The contrastive loss a family's heads were trained with (the DP stage retrains them with it).
LOSSES = ("infonce", "sigmoid")


@dataclass
class FamilyModel:
    """A loaded dual encoder taken apart for the audit (frozen backbones, trainable heads).

    Attributes:
        spec: The spec as given.
        family: The family name (`FAMILIES`).
        image_backbone: ``pixels [B, 3, H, W] -> features [B, d_img]`` (pre-projection, float).
        text_backbone: ``(ids [B, L], mask [B, L]) -> features [B, d_txt]`` (pre-projection).
        image_head: ``[B, d_img] -> [B, e]`` (``nn.Linear`` or ``nn.Sequential``).
        text_head: ``[B, d_txt] -> [B, e]``.
        preprocess: PIL image -> float tensor [3, H, W] (the model's own eval transform).
        preprocess_cfg: The preprocessing settings, JSON-able (recorded in the manifest).
        tokenize: list of texts -> (ids, attention mask), both ``[B, context_length]`` tensors.
        context_length: Token length reports are truncated to.
        logit_scale: The model's log temperature.
        logit_bias: The sigmoid loss's bias (SigLIP), or None.
        loss: ``infonce`` (CLIP) or ``sigmoid`` (SigLIP): what the DP stage retrains with.
        towers: Human-readable tower types, e.g. ``{"image": "native-vit", "text": "hf-text"}``.
        weights: The weights file that was loaded, or None (random weights).
        model: The underlying library module (tests compare against it).
    """

    spec: str
    family: str
    image_backbone: Callable[[Any], Any]
    text_backbone: Callable[[Any, Any], Any]
    image_head: Any
    text_head: Any
    preprocess: Callable[[Any], Any]
    preprocess_cfg: dict
    tokenize: Callable[[list[str]], tuple[Any, Any]]
    context_length: int
    logit_scale: float
    logit_bias: float | None
    loss: str
    towers: dict[str, str]
    weights: Path | None = None
    model: Any = field(default=None, repr=False)

    @property
    def image_width(self) -> int:
        from engine.models.split import head_in_features

        return head_in_features(self.image_head)

    @property
    def text_width(self) -> int:
        from engine.models.split import head_in_features

        return head_in_features(self.text_head)

    @property
    def embed_dim(self) -> int:
        from engine.models.split import head_out_features

        return head_out_features(self.image_head)


def family_name(spec: str) -> str:
    """The family a spec belongs to (its prefix; open_clip without one)."""
    text = spec.strip()
    for prefix, family in PREFIXES.items():
        if text.startswith(prefix):
            return family
    return DEFAULT_FAMILY


def family_module(spec: str) -> ModuleType:
    """The module of the spec's family."""
    return importlib.import_module(f"{__name__}.{family_name(spec)}")


def strip_prefix(spec: str) -> str:
    """The spec without its family prefix (unchanged for open_clip specs)."""
    text = spec.strip()
    for prefix in PREFIXES:
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


def load(spec: str, *, device: str = "cpu", seed: int = 0) -> FamilyModel:
    """Load a spec with its family, offline and weights-only, split into backbones and heads.

    Raises:
        ModelLoadError: one line naming the spec and what is missing or broken.
    """
    return family_module(spec).load(spec, device=device, seed=seed)


def fingerprint(spec: str) -> str:
    """A content identity of what the spec loads (16 hex), without building the model."""
    return family_module(spec).fingerprint(spec)


def files(spec: str) -> list[Path]:
    """The files `fingerprint` reads (empty when it reads none)."""
    return family_module(spec).files(spec)


def available(spec: str) -> str:
    """A cheap local status for `models list`: ``ready``, ``missing``, ``not built``, ``cache``."""
    return family_module(spec).available(spec)
