"""The sigmoid in-group loss (SigLIP family): its value, and that each group's per-sample
gradient is that group's own gradient, the property docs/dp.md's group-level argument needs."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.dp.losses import (
    InGroupInfoNCE,
    InGroupSigmoid,
    ProjectionHeads,
    PublicNegativeSigmoid,
    make_criterion,
)

S, B = 10.0, -2.0


def _batch(seed=0, b=4, g=5, d_img=6, d_txt=7):
    gen = torch.Generator().manual_seed(seed)
    image, text = torch.randn(b, g, d_img, generator=gen), torch.randn(b, g, d_txt, generator=gen)
    mask = torch.ones(b, g, dtype=torch.bool)
    mask[1, 3:] = False
    mask[3, :] = False
    return image, text, mask


def _model(seed=0, mlp=False):
    torch.manual_seed(seed)
    image = (torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.GELU(), torch.nn.Linear(8, 4))
             if mlp else torch.nn.Linear(6, 4))
    return ProjectionHeads(image, torch.nn.Linear(7, 4, bias=False))


def test_in_group_sigmoid_is_siglips_loss_over_the_valid_pairs():
    _, _, mask = _batch()
    zi, zt = F.normalize(torch.randn(4, 5, 3), dim=-1), F.normalize(torch.randn(4, 5, 3), dim=-1)
    got = InGroupSigmoid(S, B, reduction="none")(zi, zt, mask)
    for b in range(4):
        valid = torch.nonzero(mask[b]).flatten().tolist()
        total = 0.0
        for i in valid:
            for j in valid:
                logit = S * float(zi[b, i] @ zt[b, j]) + B
                label = 1.0 if i == j else -1.0
                total += -math.log(1 / (1 + math.exp(-label * logit)))
        want = total / max(len(valid), 1)
        assert float(got[b]) == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert float(got[3]) == 0.0  # all padding


@pytest.mark.parametrize("mlp", [False, True])
def test_per_sample_gradient_is_each_groups_own_gradient(mlp):
    from opacus import GradSampleModule

    model = _model(mlp=mlp)
    reference = copy.deepcopy(model)
    image, text, mask = _batch(seed=1)
    wrapped = GradSampleModule(model, loss_reduction="mean")
    InGroupSigmoid(S, B)(*wrapped(image, text), mask).backward()
    for b in range(4):
        alone = copy.deepcopy(reference)
        InGroupSigmoid(S, B)(*alone(image[b:b + 1], text[b:b + 1]), mask[b:b + 1]).backward()
        for (name, p), (_, q) in zip(model.named_parameters(), alone.named_parameters()):
            expected = q.grad if q.grad is not None else torch.zeros_like(q)
            diff = (p.grad_sample[b] - expected).abs().max().item()
            assert diff < 2e-6 * max(1.0, expected.abs().max().item()), (b, name, diff)
    assert all(p.grad_sample[3].abs().max().item() == 0 for p in model.parameters())


def test_public_negative_sigmoid_reads_its_own_pair_only():
    zi, zt = F.normalize(torch.randn(3, 4), dim=-1), F.normalize(torch.randn(3, 4), dim=-1)
    ni, nt = F.normalize(torch.randn(5, 4), dim=-1), F.normalize(torch.randn(5, 4), dim=-1)
    loss = PublicNegativeSigmoid(S, B, reduction="none")
    full = loss(zi, zt, ni, nt)
    for i in range(3):
        torch.testing.assert_close(loss(zi[i:i + 1], zt[i:i + 1], ni, nt)[0], full[i])


def test_make_criterion_picks_by_family_loss():
    assert isinstance(make_criterion("infonce", "group", S, None), InGroupInfoNCE)
    crit = make_criterion("sigmoid", "group", S, B)
    assert isinstance(crit, InGroupSigmoid) and crit.logit_bias == B
    with pytest.raises(ValueError):
        make_criterion("hinge", "group", S, None)


def test_train_heads_with_the_sigmoid_loss_is_private_and_differs_from_infonce():
    from engine.dp.training import DPConfig, train_heads

    rng = np.random.default_rng(0)
    n = 96
    image = rng.normal(size=(n, 6)).astype(np.float32)
    text = (image[:, :1] + 0.1 * rng.normal(size=(n, 7))).astype(np.float32)
    patients = [f"p{i // 2}" for i in range(n)]
    heads = _model()
    config = DPConfig(epochs=2)
    common = dict(image_head=heads.image_head, text_head=heads.text_head, logit_scale=math.log(S),
                  epsilon=8.0, config=config)
    sig = train_heads(image, text, patients, loss="sigmoid", logit_bias=B, **common)
    nce = train_heads(image, text, patients, **common)
    assert math.isfinite(sig.final_loss) and sig.epsilon <= 8.0 + 1e-6
    assert sig.steps == nce.steps  # same data, same Poisson batches
    assert not torch.allclose(sig.image_head.weight, nce.image_head.weight)
