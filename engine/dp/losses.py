"""Contrastive losses whose per-example gradient is a valid DP unit (docs/dp.md).

Both losses take L2-normalised embeddings and a **fixed** logit multiplier (a Python float, the
model's ``exp(logit_scale)``; never an ``nn.Parameter``, which would break Opacus's per-sample
machinery and is not what the reference paper trained). Both return one loss per privacy unit for
``reduction="none"``, which is what Opacus's ghost clipping asks of a criterion.

* `InGroupInfoNCE`: one unit = one group; symmetric InfoNCE over the group's g x g logits only,
  padded rows and columns masked out. Row b of the batch depends on group b alone.
* `PublicNegativeInfoNCE`: one unit = one pair; each pair is contrasted with K public negatives
  that were embedded under ``torch.no_grad()``, so row b depends on pair b alone.

`InGroupSigmoid` and `PublicNegativeSigmoid` are the same two units with SigLIP's sigmoid
pairwise loss and the model's fixed bias, for SigLIP-family heads; `make_criterion` picks by
the family's loss (docs/dp.md).

`ProjectionHeads` is the trainable module: the image and text heads side by side, returning
normalised embeddings for inputs of any leading shape (``[B, g, d]`` or ``[B, d]``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Finite fill for masked logits: exp() underflows to exactly 0, and all-padding groups stay finite
# (a -inf fill would turn an empty group's loss into NaN and poison the batch).
_MASKED = -1e9
_REDUCTIONS = ("mean", "sum", "none")


class ProjectionHeads(nn.Module):
    """The image and text projection heads trained together.

    Holds no parameters of its own (only the two heads), so Opacus wraps it with its per-layer
    grad samplers.
    """

    def __init__(self, image_head: nn.Module, text_head: nn.Module) -> None:
        super().__init__()
        self.image_head = image_head
        self.text_head = text_head

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[..., d_img], [..., d_txt] -> [..., e], [..., e]``, each L2-normalised."""
        return (F.normalize(self.image_head(image), dim=-1),
                F.normalize(self.text_head(text), dim=-1))


def _reduce(losses: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return losses
    if reduction == "sum" or losses.shape[0] == 0:
        return losses.sum()  # an empty Poisson batch: 0, not the NaN of an empty mean
    return losses.mean()


class _InfoNCE(nn.Module):
    """Shared state of the losses: the fixed logit multiplier and Opacus's ``reduction``."""

    def __init__(self, logit_multiplier: float, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction={reduction!r}: expected one of {_REDUCTIONS}")
        self.logit_multiplier = float(logit_multiplier)
        self.reduction = reduction


class InGroupInfoNCE(_InfoNCE):
    """Symmetric InfoNCE inside each group, padding masked.

    For group b with valid rows V (|V| = m), logits ``L = s * Z_img Z_txt^T`` restricted to V x V;
    the group's loss is ``(mean_{i in V} CE(L[i, :], i) + mean_{j in V} CE(L[:, j], j)) / 2``.
    A group with no valid row has loss 0 and zero gradient.

    Args:
        logit_multiplier: The fixed s (e.g. 100 = exp(4.605)).
        reduction: ``mean`` (over groups), ``sum`` or ``none`` (``[B]``).
    """

    def forward(
        self, image: torch.Tensor, text: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Args: image, text ``[B, g, e]`` normalised; mask ``[B, g]`` bool (True = real pair)."""
        mask = mask.bool()
        logits = self.logit_multiplier * torch.einsum("bie,bje->bij", image, text)
        valid = mask[:, :, None] & mask[:, None, :]
        logits = logits.masked_fill(~valid, _MASKED)
        diag = torch.diagonal(logits, dim1=1, dim2=2)
        row = torch.logsumexp(logits, dim=2) - diag  # image -> text, [B, g]
        col = torch.logsumexp(logits, dim=1) - diag  # text -> image, [B, g]
        weight = mask.to(logits.dtype)
        count = weight.sum(dim=1).clamp(min=1.0)
        losses = 0.5 * ((row * weight).sum(dim=1) + (col * weight).sum(dim=1)) / count
        return _reduce(losses, self.reduction)


class PublicNegativeInfoNCE(_InfoNCE):
    """Per-pair symmetric InfoNCE against public negatives.

    Pair i's loss is ``(CE([s z_i.t_i, s z_i.T_neg], 0) + CE([s t_i.z_i, s t_i.Z_neg], 0)) / 2``,
    with ``T_neg`` / ``Z_neg`` the K public text / image embeddings, shared by the batch and
    computed without gradient (they are constants, so the loss of pair i depends on pair i only).

    Args:
        logit_multiplier: The fixed s.
        reduction: ``mean`` (over pairs), ``sum`` or ``none`` (``[B]``).
    """

    def forward(
        self,
        image: torch.Tensor,
        text: torch.Tensor,
        negative_image: torch.Tensor,
        negative_text: torch.Tensor,
    ) -> torch.Tensor:
        """Args: image, text ``[B, e]``; negative_image, negative_text ``[K, e]``, normalised."""
        s = self.logit_multiplier
        positive = s * (image * text).sum(dim=1, keepdim=True)  # [B, 1]
        i2t = torch.cat([positive, s * image @ negative_text.detach().T], dim=1)
        t2i = torch.cat([positive, s * text @ negative_image.detach().T], dim=1)
        losses = 0.5 * ((torch.logsumexp(i2t, dim=1) - positive[:, 0])
                        + (torch.logsumexp(t2i, dim=1) - positive[:, 0]))
        return _reduce(losses, self.reduction)


class _Sigmoid(_InfoNCE):
    """The sigmoid pairwise loss's state: the fixed multiplier s and the model's fixed bias b."""

    def __init__(self, logit_multiplier: float, logit_bias: float = 0.0,
                 reduction: str = "mean") -> None:
        super().__init__(logit_multiplier, reduction)
        self.logit_bias = float(logit_bias)


class InGroupSigmoid(_Sigmoid):
    """SigLIP's sigmoid pairwise loss inside each group, padding masked.

    For group b with valid rows V (|V| = m), every pair (i, j) of V x V is a binary problem with
    logit ``s z_i.t_j + b`` and label +1 on the diagonal, -1 off it; the group's loss is
    ``-(1/m) sum_{i,j in V} log sigmoid(label_ij * logit_ij)`` (SigLIP's normalisation by the
    batch size). As with `InGroupInfoNCE`, it reads group b alone; a group with no valid row has
    loss 0 and zero gradient.

    Args:
        logit_multiplier: The fixed s (``exp(logit_scale)``).
        logit_bias: The model's fixed b.
        reduction: ``mean`` (over groups), ``sum`` or ``none`` (``[B]``).
    """

    def forward(
        self, image: torch.Tensor, text: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Args: image, text ``[B, g, e]`` normalised; mask ``[B, g]`` bool (True = real pair)."""
        mask = mask.bool()
        logits = (self.logit_multiplier * torch.einsum("bie,bje->bij", image, text)
                  + self.logit_bias)
        g = logits.shape[1]
        labels = 2.0 * torch.eye(g, dtype=logits.dtype, device=logits.device) - 1.0
        valid = (mask[:, :, None] & mask[:, None, :]).to(logits.dtype)
        pair_losses = -F.logsigmoid(labels * logits) * valid
        count = mask.to(logits.dtype).sum(dim=1).clamp(min=1.0)
        losses = pair_losses.sum(dim=(1, 2)) / count
        return _reduce(losses, self.reduction)


class PublicNegativeSigmoid(_Sigmoid):
    """Per-pair sigmoid loss against public negatives.

    Pair i's loss is ``-log sigmoid(s z_i.t_i + b) - (1/2) sum_k [log sigmoid(-(s z_i.T_k + b))
    + log sigmoid(-(s t_i.Z_k + b))]`` with ``T`` / ``Z`` the K public text / image embeddings
    (constants: the loss of pair i depends on pair i only).
    """

    def forward(
        self,
        image: torch.Tensor,
        text: torch.Tensor,
        negative_image: torch.Tensor,
        negative_text: torch.Tensor,
    ) -> torch.Tensor:
        """Args: image, text ``[B, e]``; negative_image, negative_text ``[K, e]``, normalised."""
        s, b = self.logit_multiplier, self.logit_bias
        positive = s * (image * text).sum(dim=1) + b
        i2t = s * image @ negative_text.detach().T + b
        t2i = s * text @ negative_image.detach().T + b
        losses = (-F.logsigmoid(positive)
                  - 0.5 * (F.logsigmoid(-i2t).sum(dim=1) + F.logsigmoid(-t2i).sum(dim=1)))
        return _reduce(losses, self.reduction)


def make_criterion(loss: str, privacy_unit: str, logit_multiplier: float,
                   logit_bias: float | None, reduction: str = "mean") -> nn.Module:
    """The criterion of a family's loss (``infonce`` or ``sigmoid``) for a privacy unit."""
    if loss == "infonce":
        cls = InGroupInfoNCE if privacy_unit == "group" else PublicNegativeInfoNCE
        return cls(logit_multiplier, reduction=reduction)
    if loss == "sigmoid":
        cls = InGroupSigmoid if privacy_unit == "group" else PublicNegativeSigmoid
        return cls(logit_multiplier, 0.0 if logit_bias is None else logit_bias,
                   reduction=reduction)
    raise ValueError(f"loss={loss!r}: expected infonce or sigmoid")
