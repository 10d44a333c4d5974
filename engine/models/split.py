"""The backbone / head split of an open_clip model (docs/models.md).

The audit keeps the encoders frozen and works on their **pre-projection** features; the two
projection heads are separate modules that the DP stage retrains. `split_towers` takes a loaded
open_clip model apart so that, for every supported tower type::

    F.normalize(head(backbone(x)), dim=-1) == model.encode_*(x, normalize=True)   (within 1e-5)

Supported towers and where their projection lives:

* native ViT (`VisionTransformer`): the ``visual.proj`` parameter [w, e] becomes
  ``nn.Linear(w, e, bias=False)`` with weight = proj.T;
* native text (`CLIP`): the ``text_projection`` parameter (as above) or Linear (a copy);
* native text (`CustomTextCLIP`): ``text.text_projection``, as above;
* timm vision (`TimmModel`): the ``visual.head.proj`` Linear (a copy), or ``visual.head.mlp``
  (``nn.Sequential(Linear, GELU, Linear)``);
* timm vision with ``timm_proj: none`` (SigLIP: the pooled trunk output): an identity-initialised
  ``nn.Linear``;
* HF text (`HFTextEncoder`): the ``text.proj`` Linear or MLP ``Sequential`` (or Identity), a copy.

A tower without a projection (an Identity) gets an identity-initialised ``nn.Linear(w, w)`` so the
DP stage always has a trainable head. Heads are plain ``nn.Linear`` / ``nn.Sequential`` of
``Linear`` and activation layers, which Opacus can wrap; `describe_head` / `build_head` turn them
into a small JSON description and back, so stored heads reload without open_clip.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from engine.errors import ModelLoadError


@dataclass
class TowerSplit:
    """A model taken apart into frozen backbones and trainable heads.

    Attributes:
        image_backbone: ``images [B, 3, H, W] -> features [B, d_img]`` (pre-projection, float32).
        text_backbone: ``token ids [B, L] -> features [B, d_txt]`` (pre-projection, float32).
        image_head: ``[B, d_img] -> [B, e]`` (``nn.Linear`` or ``nn.Sequential``).
        text_head: ``[B, d_txt] -> [B, e]``.
        logit_scale: The model's learned log temperature (``exp`` gives the logit multiplier).
        logit_bias: SigLIP's logit bias, or None.
        image_width: d_img.
        text_width: d_txt.
        embed_dim: e.
        towers: Human-readable tower types, e.g. ``{"image": "native-vit", "text": "hf-text"}``.
    """

    image_backbone: Callable[[torch.Tensor], torch.Tensor]
    text_backbone: Callable[[torch.Tensor], torch.Tensor]
    image_head: nn.Module
    text_head: nn.Module
    logit_scale: float
    logit_bias: float | None
    image_width: int
    text_width: int
    embed_dim: int
    towers: dict[str, str]


def split_towers(model: nn.Module) -> TowerSplit:
    """Detach the projection heads of an open_clip model; the model is modified in place.

    After the call the model's own ``encode_image`` / ``encode_text`` return pre-projection
    features (they are the backbones); the returned heads hold copies of the projection weights.

    Raises:
        ModelLoadError: a tower whose projection is not one of the supported structures.
    """
    image_head, image_kind = _detach_image_head(model)
    text_head, text_kind = _detach_text_head(model)
    for head in (image_head, text_head):
        head.eval()
        head.requires_grad_(False)
        head.float()
    logit_scale = float(model.logit_scale.detach().float().reshape(-1)[0])
    bias = getattr(model, "logit_bias", None)
    logit_bias = None if bias is None else float(bias.detach().float().reshape(-1)[0])

    def image_backbone(images: torch.Tensor) -> torch.Tensor:
        return model.encode_image(images, normalize=False).float()

    def text_backbone(tokens: torch.Tensor) -> torch.Tensor:
        return model.encode_text(tokens, normalize=False).float()

    return TowerSplit(
        image_backbone=image_backbone,
        text_backbone=text_backbone,
        image_head=image_head,
        text_head=text_head,
        logit_scale=logit_scale,
        logit_bias=logit_bias,
        image_width=head_in_features(image_head),
        text_width=head_in_features(text_head),
        embed_dim=head_out_features(image_head),
        towers={"image": image_kind, "text": text_kind},
    )


def _linear_from_parameter(proj: torch.Tensor) -> nn.Linear:
    """``x @ proj`` as an ``nn.Linear`` (weight = proj.T), which Opacus can wrap."""
    width, embed = proj.shape
    head = nn.Linear(width, embed, bias=False)
    with torch.no_grad():
        head.weight.copy_(proj.detach().T.float())
    return head


def _identity_linear(width: int) -> nn.Linear:
    head = nn.Linear(width, width, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(width))
    return head


def _detach_image_head(model: nn.Module) -> tuple[nn.Module, str]:
    visual = getattr(model, "visual", None)
    if visual is None:
        raise ModelLoadError(f"{type(model).__name__}: no `visual` tower; not an open_clip model")
    kind = type(visual).__name__
    if kind == "VisionTransformer":
        proj = visual.proj
        if proj is None:
            raise ModelLoadError("VisionTransformer without `visual.proj` is not supported")
        head = _linear_from_parameter(proj)
        visual.proj = None
        return head, "native-vit"
    if kind == "TimmModel":
        layers = visual.head
        if "proj" in layers._modules and isinstance(layers.proj, nn.Linear):
            head = copy.deepcopy(layers.proj)
            layers.proj = nn.Identity()
            return head, "timm-linear"
        if "mlp" in layers._modules:
            head = _sequential_from_timm_mlp(layers.mlp)
            layers.mlp = nn.Identity()
            return head, "timm-mlp"
        if len(layers) == 0 and hasattr(visual.trunk, "num_features"):
            # timm_proj 'none' (e.g. SigLIP): the trunk's pooled features are the embedding
            return _identity_linear(int(visual.trunk.num_features)), "timm-none"
        raise ModelLoadError(
            "timm vision tower without a `head.proj` Linear or `head.mlp` (timm_proj "
            "'linear', 'mlp' or 'none') is not supported"
        )
    raise ModelLoadError(f"vision tower {kind} is not supported (native ViT or timm only)")


def _sequential_from_timm_mlp(mlp: nn.Module) -> nn.Sequential:
    if not isinstance(getattr(mlp, "norm", nn.Identity()), nn.Identity) or not isinstance(
        getattr(mlp, "fc1", None), nn.Linear
    ):
        raise ModelLoadError(
            "timm MLP projection with a norm layer or conv layers is not supported")
    return nn.Sequential(copy.deepcopy(mlp.fc1), copy.deepcopy(mlp.act), copy.deepcopy(mlp.fc2))


def _detach_text_head(model: nn.Module) -> tuple[nn.Module, str]:
    text = getattr(model, "text", None)
    owner = model if text is None else text
    if hasattr(owner, "text_projection"):  # native text transformer (CLIP or TextTransformer)
        proj = owner.text_projection
        if proj is None:
            raise ModelLoadError("native text tower without `text_projection` is not supported")
        if isinstance(proj, nn.Linear):
            head: nn.Module = copy.deepcopy(proj)
        else:
            head = _linear_from_parameter(proj)
        owner.text_projection = None
        return head, "native-text"
    if text is not None and type(text).__name__ == "HFTextEncoder":
        proj = text.proj
        if isinstance(proj, nn.Identity):
            head = _identity_linear(int(text.output_dim))
        elif isinstance(proj, (nn.Linear, nn.Sequential)):
            head = copy.deepcopy(proj)
        else:
            raise ModelLoadError(f"HF text projection {type(proj).__name__} is not supported")
        text.proj = nn.Identity()
        return head, "hf-text"
    kind = type(text).__name__ if text is not None else type(model).__name__
    raise ModelLoadError(f"text tower {kind} is not supported (native or HF text only)")


# --- heads as JSON + state dict ------------------------------------------------------------------

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "GELU": nn.GELU,
    "ReLU": nn.ReLU,
    "SiLU": nn.SiLU,
    "Tanh": nn.Tanh,
    "Identity": nn.Identity,
    "Dropout": nn.Dropout,
}


def describe_head(head: nn.Module) -> dict[str, Any]:
    """A JSON-able description of a head's structure (its weights go in a state dict)."""
    if isinstance(head, nn.Linear):
        return {
            "kind": "Linear",
            "in_features": head.in_features,
            "out_features": head.out_features,
            "bias": head.bias is not None,
        }
    if isinstance(head, nn.Sequential):
        return {"kind": "Sequential", "layers": [describe_head(layer) for layer in head]}
    name = type(head).__name__
    if name == "GELU":
        return {"kind": "GELU", "approximate": head.approximate}
    if name == "Dropout":
        return {"kind": "Dropout", "p": head.p}
    if name in _ACTIVATIONS:
        return {"kind": name}
    raise ModelLoadError(f"head layer {name} cannot be described (Linear, Sequential, activations)")


def build_head(description: dict[str, Any]) -> nn.Module:
    """Rebuild an (uninitialised) head from `describe_head`'s output; load its state dict after."""
    kind = description["kind"]
    if kind == "Linear":
        return nn.Linear(
            description["in_features"], description["out_features"], bias=description["bias"]
        )
    if kind == "Sequential":
        return nn.Sequential(*(build_head(layer) for layer in description["layers"]))
    if kind == "GELU":
        return nn.GELU(approximate=description.get("approximate", "none"))
    if kind == "Dropout":
        return nn.Dropout(description.get("p", 0.0))
    if kind in _ACTIVATIONS:
        return _ACTIVATIONS[kind]()
    raise ModelLoadError(f"unknown head layer kind {kind!r}")


def head_in_features(head: nn.Module) -> int:
    """Input width of a head (its first Linear)."""
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    return int(linears[0].in_features)


def head_out_features(head: nn.Module) -> int:
    """Output width of a head (its last Linear)."""
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    return int(linears[-1].out_features)
