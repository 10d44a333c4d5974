"""DP head retraining: per-unit gradients, equivalence with plain training, accounting, grouping.

Small dimensions and few steps throughout, so the file runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("opacus")
from torch import nn  # noqa: E402

from engine.dp import accounting  # noqa: E402
from engine.dp.groups import assign_groups, number_of_groups  # noqa: E402
from engine.dp.losses import InGroupInfoNCE, ProjectionHeads, PublicNegativeInfoNCE  # noqa: E402
from engine.dp.training import DPConfig, grad_sample_mode_for, train_heads  # noqa: E402
from engine.errors import EngineError  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore:Full backward hook:UserWarning"),
              pytest.mark.filterwarnings("ignore:Secure RNG turned off:UserWarning")]

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: thread hand-offs cost more than they save on a shared 2-core machine."""
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


D_IMG, D_TXT, EMB = 12, 10, 8
SCALE = math.log(20.0)  # log logit scale; multiplier 20


def _heads(mlp: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    if mlp:
        image = nn.Sequential(nn.Linear(D_IMG, 16), nn.GELU(), nn.Linear(16, EMB))
    else:
        image = nn.Linear(D_IMG, EMB, bias=False)
    return image, nn.Linear(D_TXT, EMB, bias=True)


def _pairs(n=240, per_patient=3, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 6))
    image = (z @ rng.normal(size=(6, D_IMG)) + 0.3 * rng.normal(size=(n, D_IMG)))
    text = (z @ rng.normal(size=(6, D_TXT)) + 0.3 * rng.normal(size=(n, D_TXT)))
    patients = [f"p{i // per_patient:04d}" for i in range(n)]
    return image.astype(np.float32), text.astype(np.float32), patients


def _diff(got, expected) -> float:
    """Max abs difference relative to the gradient's scale (float32: ~1e-7 per unit)."""
    return (got - expected).abs().max().item() / max(1.0, expected.abs().max().item())


def _group_batch(seed=0, b=4, g=5):
    """A batch of groups: group 1 half padded (garbage in the padding), group 3 all padding."""
    gen = torch.Generator().manual_seed(seed)
    image, text = torch.randn(b, g, D_IMG, generator=gen), torch.randn(b, g, D_TXT, generator=gen)
    mask = torch.ones(b, g, dtype=torch.bool)
    mask[1, 3:] = False
    mask[3, :] = False
    return image, text, mask


def _single_group_grads(model, image, text, mask, b):
    """Gradient of group b's loss computed alone, on a plain copy of the model."""
    plain = copy.deepcopy(model)
    plain.zero_grad()
    loss = InGroupInfoNCE(20.0)(*plain(image[b:b + 1], text[b:b + 1]), mask[b:b + 1])
    loss.backward()
    return {name: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
            for name, p in plain.named_parameters()}


# --- (a) Opacus's per-sample gradient is the unit's own gradient -----------------------------

@pytest.mark.parametrize("mlp", [False, True])
def test_hooks_grad_sample_equals_each_groups_gradient_alone(mlp):
    from opacus import GradSampleModule

    model = ProjectionHeads(*_heads(mlp))
    reference = copy.deepcopy(model)
    image, text, mask = _group_batch()
    wrapped = GradSampleModule(model, loss_reduction="mean")
    InGroupInfoNCE(20.0)(*wrapped(image, text), mask).backward()
    for b in range(image.shape[0]):
        alone = _single_group_grads(reference, image, text, mask, b)
        for name, p in model.named_parameters():
            diff = _diff(p.grad_sample[b], alone[name])
            assert diff < 2e-6, (b, name, diff)
    # the all-padding group contributes exactly nothing
    assert all(p.grad_sample[3].abs().max().item() == 0 for p in model.parameters())


@pytest.mark.parametrize("mlp", [False, True])
def test_ghost_norms_and_clipped_sum_equal_per_group_gradients(mlp):
    from opacus.grad_sample import GradSampleModuleFastGradientClipping
    from opacus.optimizers import DPOptimizerFastGradientClipping
    from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

    model = ProjectionHeads(*_heads(mlp))
    reference = copy.deepcopy(model)
    image, text, mask = _group_batch(seed=1)
    alone = [_single_group_grads(reference, image, text, mask, b) for b in range(image.shape[0])]
    norms = torch.tensor([math.sqrt(sum(float((g ** 2).sum()) for g in grads.values()))
                          for grads in alone])
    clip = float(norms[norms > 0].median())  # clips about half of the groups
    wrapped = GradSampleModuleFastGradientClipping(model, max_grad_norm=clip,
                                                   use_ghost_clipping=True, loss_reduction="mean")
    optimizer = DPOptimizerFastGradientClipping(
        torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=0.0, max_grad_norm=clip,
        expected_batch_size=image.shape[0], loss_reduction="mean")
    criterion = DPLossFastGradientClipping(wrapped, optimizer, InGroupInfoNCE(20.0), "mean")
    criterion(*wrapped(image, text), mask).backward()
    got = wrapped.per_sample_gradient_norms
    assert _diff(got, norms) < 2e-6
    coef = (clip / (norms + 1e-6)).clamp(max=1.0)
    for name, p in model.named_parameters():
        expected = sum(coef[b] * alone[b][name] for b in range(len(alone)))
        assert _diff(p.grad, expected) < 2e-6, name


def test_public_negative_grad_sample_equals_each_pairs_gradient_alone():
    from opacus import GradSampleModule

    model = ProjectionHeads(*_heads())
    reference = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(3)
    image, text = torch.randn(5, D_IMG, generator=gen), torch.randn(5, D_TXT, generator=gen)
    pub_image, pub_text = torch.randn(7, D_IMG, generator=gen), torch.randn(7, D_TXT, generator=gen)
    wrapped = GradSampleModule(model, loss_reduction="mean")
    with torch.no_grad():
        negatives = wrapped(pub_image, pub_text)
    PublicNegativeInfoNCE(20.0)(*wrapped(image, text), *negatives).backward()
    for i in range(5):
        plain = copy.deepcopy(reference)
        with torch.no_grad():
            neg = plain(pub_image, pub_text)
        PublicNegativeInfoNCE(20.0)(*plain(image[i:i + 1], text[i:i + 1]), *neg).backward()
        for (name, p), (_, q) in zip(model.named_parameters(), plain.named_parameters()):
            assert _diff(p.grad_sample[i], q.grad) < 2e-6, (i, name)


# --- (b) clipping and noise off == plain training -------------------------------------------

@pytest.mark.parametrize("mode", ["ghost", "hooks"])
def test_private_path_without_clipping_or_noise_equals_non_private_training(mode):
    image, text, patients = _pairs()
    ih, th = _heads(mlp=mode == "hooks")
    config = DPConfig(epochs=2, lr=1e-2, max_grad_norm=1e9, grad_sample_mode=mode, group_size=8,
                      batch_size=8)
    plain = train_heads(image, text, patients, image_head=ih, text_head=th, logit_scale=SCALE,
                        epsilon=math.inf, config=config)
    dp = train_heads(image, text, patients, image_head=ih, text_head=th, logit_scale=SCALE,
                     noise_multiplier=0.0, config=config)
    assert dp.steps == plain.steps > 0
    assert dp.grad_sample_mode == mode and plain.grad_sample_mode is None
    moved = 0.0
    for a, b, orig in ((plain.image_head, dp.image_head, ih), (plain.text_head, dp.text_head, th)):
        for (name, pa), pb, po in zip(a.named_parameters(), b.parameters(), orig.parameters()):
            assert (pa - pb).abs().max().item() < 1e-5, name
            moved = max(moved, (pa - po).abs().max().item())
    assert moved > 1e-3  # training really changed the heads
    assert np.allclose(plain.epoch_losses, dp.epoch_losses, atol=1e-5)


# --- (b2) the engine's fast clipping == Opacus's clipped and noised gradient ------------------

def _clipped_step_grads(mode, mlp, sigma, unit="group"):
    """p.grad after one private step of `mode` (Opacus's DPOptimizer or the fast clipper)."""
    from engine.dp.training import _Loop, _TrainingData

    image, text, patients = _pairs(n=120)
    ih, th = _heads(mlp=mlp)
    rng = np.random.default_rng(3)
    pub = (rng.normal(size=(30, D_IMG)).astype(np.float32),
           rng.normal(size=(30, D_TXT)).astype(np.float32))
    config = DPConfig(epochs=1, group_size=8, batch_size=6, max_grad_norm=0.05,
                      grad_sample_mode=mode, optimizer="sgd", momentum=0.0, lr=1e-12,
                      privacy_unit=unit, public_negatives=7)
    data = _TrainingData.build(image, text, patients, None, config, *pub)
    loop = _Loop(data, ih, th, 20.0, config)
    loop.make_private(epsilon=None, noise_multiplier=sigma, delta=1e-5)
    batch = next(iter(loop.loader))
    loop.optimizer.zero_grad(set_to_none=True)
    loop._step(batch)
    loop.optimizer.step()  # lr ~0: Opacus's pre-step fills p.grad, the weights stay
    inner = getattr(loop.model, "_module", loop.model)
    return [p.grad.detach().clone() for p in inner.parameters()], int(batch[0].shape[0])


@pytest.mark.parametrize(("mlp", "unit"), [(False, "group"), (True, "group"), (False, "pair")])
def test_fast_clipping_equals_opacus_clipped_gradient_noise_off(mlp, unit):
    fast, b = _clipped_step_grads("fast", mlp, 0.0, unit)
    assert b > 1
    for reference in ("hooks", "ghost"):
        ref, _ = _clipped_step_grads(reference, mlp, 0.0, unit)
        assert len(ref) == len(fast)
        for g, r in zip(fast, ref):
            assert r.abs().max() > 0  # clipping at C=0.05 left a non-zero gradient
            assert (g - r).abs().max().item() < 1e-5, reference


def test_fast_training_equals_opacus_training_same_noise_and_accountant():
    """Same sigma, seed and steps: same heads (Opacus's noise draw order) and the same epsilon."""
    image, text, patients = _pairs()
    ih, th = _heads(mlp=True)
    out = {}
    for mode in ("fast", "hooks"):
        config = DPConfig(epochs=2, lr=0.5, optimizer="sgd", momentum=0.0, max_grad_norm=0.05,
                          grad_sample_mode=mode, group_size=8, batch_size=8, accountant="rdp")
        out[mode] = train_heads(image, text, patients, image_head=ih, text_head=th,
                                logit_scale=SCALE, noise_multiplier=1.0, config=config)
    fast, hooks = out["fast"], out["hooks"]
    assert fast.grad_sample_mode == "fast" and hooks.grad_sample_mode == "hooks"
    assert fast.steps == hooks.steps > 0 and fast.sample_rate == hooks.sample_rate
    assert fast.epsilon == pytest.approx(hooks.epsilon, rel=1e-12)
    assert fast.epsilon == pytest.approx(accounting.epsilon_for(
        fast.noise_multiplier, fast.sample_rate, fast.steps, fast.delta, "rdp"), rel=1e-12)
    for a, b in ((fast.image_head, hooks.image_head), (fast.text_head, hooks.text_head)):
        for pa, pb in zip(a.parameters(), b.parameters()):
            assert (pa - pb).abs().max().item() < 1e-5
    # a target epsilon: the same noise search as make_private_with_epsilon
    found = {}
    for mode in ("fast", "ghost"):
        config = DPConfig(epochs=1, group_size=8, batch_size=4, grad_sample_mode=mode,
                          accountant="rdp")
        found[mode] = train_heads(image, text, patients, image_head=ih, text_head=th,
                                  logit_scale=SCALE, epsilon=3.0, config=config)
    assert found["fast"].noise_multiplier == found["ghost"].noise_multiplier > 0
    assert found["fast"].epsilon == pytest.approx(found["ghost"].epsilon, rel=1e-12)


def test_dp_sgd_with_momentum_option_trains():
    image, text, patients = _pairs()
    ih, th = _heads()
    r = train_heads(image, text, patients, image_head=ih, text_head=th, logit_scale=SCALE,
                    epsilon=math.inf, config=DPConfig(epochs=2, optimizer="sgd", lr=1.0,
                                                      group_size=8, batch_size=8))
    assert r.epoch_losses[-1] < r.epoch_losses[0]
    with pytest.raises(EngineError, match="optimizer"):
        DPConfig(optimizer="rmsprop")


# --- (c) stored epsilon == Opacus's accountant on the stored parameters ----------------------

@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_stored_epsilon_matches_opacus_accountant(accountant):
    from opacus.accountants import PRVAccountant, RDPAccountant

    image, text, patients = _pairs()
    ih, th = _heads()
    r = train_heads(image, text, patients, image_head=ih, text_head=th, logit_scale=SCALE,
                    epsilon=2.0, config=DPConfig(epochs=1, accountant=accountant, group_size=8,
                                                 batch_size=1, min_steps_per_epoch=1))
    assert r.accountant == accountant and r.privacy_unit == "group"
    assert r.epsilon <= 2.0 + 1e-9 and r.epsilon > 1.0
    acc = {"prv": PRVAccountant, "rdp": RDPAccountant}[accountant]()
    acc.history = [(r.noise_multiplier, r.sample_rate, r.steps)]
    assert acc.get_epsilon(delta=r.delta) == pytest.approx(r.epsilon, rel=1e-9)
    assert accounting.compute_epsilon(r.noise_multiplier, r.sample_rate, r.steps, r.delta,
                                      accountant) == (pytest.approx(r.epsilon, rel=1e-9),
                                                      accountant)
    assert r.patient_epsilon == pytest.approx(2 * r.epsilon)
    assert r.patient_delta == pytest.approx((1 + math.exp(r.epsilon)) * r.delta)
    assert r.dp_row()["accountant"] == accountant


def test_prv_failure_falls_back_to_rdp(monkeypatch):
    from opacus.accountants import PRVAccountant

    def broken(self, *args, **kwargs):
        raise ValueError("Discrete mean differs significantly from continuous mean")

    monkeypatch.setattr(PRVAccountant, "get_epsilon", broken)
    image, text, patients = _pairs(n=120)
    ih, th = _heads()
    r = train_heads(image, text, patients, image_head=ih, text_head=th, logit_scale=SCALE,
                    epsilon=3.0, config=DPConfig(epochs=1, group_size=8))
    assert r.accountant == "rdp"
    assert r.epsilon == pytest.approx(accounting.epsilon_for(
        r.noise_multiplier, r.sample_rate, r.steps, r.delta, "rdp"))
    assert accounting.compute_epsilon(1.0, 0.01, 100, 1e-5, "prv")[1] == "rdp"


# --- (d) empty Poisson batches ----------------------------------------------------------------

@pytest.mark.parametrize(("sigma", "mode"), [(None, "auto"), (1.0, "fast"), (1.0, "ghost"),
                                           (1.0, "hooks")])
def test_empty_poisson_batches_do_not_crash(sigma, mode):
    image, text, patients = _pairs(n=40, per_patient=1)
    ih, th = _heads()
    # 40 pairs -> 10 groups, one expected group per batch: about a third of batches are empty
    config = DPConfig(epochs=4, group_size=8, batch_size=1, min_steps_per_epoch=1,
                      accountant="rdp", grad_sample_mode=mode)
    r = train_heads(image, text, patients, image_head=ih, text_head=th, logit_scale=SCALE,
                    config=config, **({"epsilon": math.inf} if sigma is None
                                      else {"noise_multiplier": sigma}))
    assert r.n_units == 10 and r.sample_rate == pytest.approx(0.1)
    assert r.steps == 40 and r.n_empty_batches > 0
    for head in (r.image_head, r.text_head):
        assert all(torch.isfinite(p).all() for p in head.parameters())


# --- (e) an unreachable epsilon fails fast and clearly ----------------------------------------

@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_unreachable_epsilon_raises_budget_error_quickly(accountant):
    image, text, patients = _pairs(n=60)
    ih, th = _heads()
    started = time.perf_counter()
    with pytest.raises(accounting.PrivacyBudgetError, match="cannot be reached") as info:
        train_heads(image, text, patients, image_head=ih, text_head=th, logit_scale=SCALE,
                    epsilon=1e-4, config=DPConfig(epochs=50, accountant=accountant))
    assert time.perf_counter() - started < 10
    assert isinstance(info.value, EngineError)
    with pytest.raises(accounting.PrivacyBudgetError):
        train_heads(image, text, patients, image_head=ih, text_head=th, logit_scale=SCALE,
                    epsilon=0.0)


# --- (f) keyed-hash grouping ------------------------------------------------------------------

def test_grouping_is_by_patient_id_only_and_respects_capacity():
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 12, size=300)  # some patients exceed the capacity
    patients = np.repeat([f"pt{i}" for i in range(300)], counts)
    a = assign_groups(patients, capacity=8, fill=0.5)
    assert a.n_groups == number_of_groups(len(patients), 8, 0.5)
    assert a.index.shape == (a.n_groups, 8) and (a.mask == (a.index >= 0)).all()
    kept = a.index[a.mask]
    assert len(np.unique(kept)) == len(kept) == len(patients) - a.n_dropped
    assert a.n_dropped > 0 and a.n_capped_patients > 0
    for p in np.unique(patients):  # all of a patient's kept pairs in one group
        groups = set(a.group_of_pair[(patients == p) & (a.group_of_pair >= 0)])
        assert len(groups) <= 1
    # same patient -> same group whatever else is in the data and in whatever order
    perm = rng.permutation(len(patients))
    b = assign_groups(patients[perm], capacity=8, n_groups=a.n_groups)
    assert (b.group_of_pair >= 0).sum() == (a.group_of_pair >= 0).sum()
    first = {p: g for p, g in zip(patients, a.group_of_pair) if g >= 0}
    assert all(first[p] == g for p, g in zip(patients[perm], b.group_of_pair) if g >= 0)


def test_adding_one_patient_changes_exactly_one_group():
    patients = np.repeat([f"pt{i}" for i in range(200)], 2)
    ids = [f"{p}/{i}" for i, p in enumerate(patients)]
    base = assign_groups(patients, capacity=16, n_groups=50, pair_ids=ids)
    more = assign_groups(np.r_[patients, ["new", "new"]], capacity=16, n_groups=50,
                         pair_ids=ids + ["new/0", "new/1"])
    members = lambda a, names: [  # noqa: E731
        sorted(names[i] for i in row[row >= 0]) for row in a.index]
    names = np.r_[ids, ["new/0", "new/1"]]
    changed = [g for g, (x, y) in enumerate(zip(members(base, names), members(more, names)))
               if x != y]
    assert len(changed) == 1 and "new/0" in members(more, names)[changed[0]]


def test_group_loss_ignores_padding_values_and_matches_unpadded_loss():
    model = ProjectionHeads(*_heads())
    image, text, mask = _group_batch()
    loss = InGroupInfoNCE(20.0, reduction="none")
    base = loss(*model(image, text), mask)
    noisy_image, noisy_text = image.clone(), text.clone()
    noisy_image[~mask] = 1e3 * torch.randn_like(noisy_image[~mask])
    noisy_text[~mask] = -7.0
    assert torch.allclose(loss(*model(noisy_image, noisy_text), mask), base)
    # group 1 has 3 real pairs: equal to the same 3 pairs as a group of capacity 3
    unpadded = loss(*model(image[1:2, :3], text[1:2, :3]), torch.ones(1, 3, dtype=torch.bool))
    assert torch.allclose(unpadded[0], base[1])
    assert base[3].item() == 0.0  # an all-padding group
    # naive symmetric InfoNCE for group 0
    zi, zt = model(image[0], text[0])
    logits = 20.0 * zi @ zt.T
    target = torch.arange(len(logits))
    naive = 0.5 * (nn.functional.cross_entropy(logits, target)
                   + nn.functional.cross_entropy(logits.T, target))
    assert torch.allclose(naive, base[0], atol=1e-6)


def test_training_sees_groups_not_feature_values():
    image, text, patients = _pairs(n=90)
    ih, th = _heads()
    config = DPConfig(epochs=1, group_size=8, accountant="rdp")
    a = train_heads(image, text, patients, image_head=ih, text_head=th, logit_scale=SCALE,
                    noise_multiplier=1.0, config=config)
    b = train_heads(image * 5 + 1, text[::-1].copy(), patients, image_head=ih, text_head=th,
                    logit_scale=SCALE, noise_multiplier=1.0, config=config)
    assert (a.n_units, a.n_pairs_dropped, a.sample_rate, a.steps, a.n_empty_batches,
            a.epsilon) == (b.n_units, b.n_pairs_dropped, b.sample_rate, b.steps,
                           b.n_empty_batches, b.epsilon)


# --- (g) patient-level conversion -------------------------------------------------------------

def test_patient_level_conversion_numbers():
    eps, delta = 0.34, 6e-6
    assert accounting.patient_level(eps, delta, privacy_unit="group") == pytest.approx(
        (0.68, (1 + math.exp(0.34)) * 6e-6))
    assert accounting.patient_level(1.0, 1e-6, privacy_unit="pair", max_pairs_per_patient=3) \
        == pytest.approx((3.0, 1e-6 * (1 + math.e + math.e ** 2)))
    assert accounting.group_privacy(1.0, 1e-6, 1) == (1.0, 1e-6)
    k_eps, k_delta = accounting.group_privacy(0.5, 1e-6, 4)
    assert k_eps == 2.0 and k_delta <= 4 * math.exp(3 * 0.5) * 1e-6  # tighter than k e^{(k-1)e}


def test_public_negative_training_reports_pair_and_patient_level():
    image, text, patients = _pairs(n=120, per_patient=3)
    pub_image, pub_text, _ = _pairs(n=50, seed=9)
    ih, th = _heads()
    r = train_heads(image, text, patients, image_head=ih, text_head=th, logit_scale=SCALE,
                    noise_multiplier=1.0, public_image_features=pub_image,
                    public_text_features=pub_text,
                    config=DPConfig(privacy_unit="pair", epochs=1, public_negatives=16,
                                    batch_size=16, accountant="rdp"))
    assert r.privacy_unit == "pair" and r.n_units == 120 and r.max_pairs_per_patient == 3
    assert r.patient_epsilon == pytest.approx(3 * r.epsilon)
    assert r.patient_delta == pytest.approx(
        r.delta * sum(math.exp(i * r.epsilon) for i in range(3)))
    with pytest.raises(EngineError, match="public"):
        train_heads(image, text, patients, image_head=ih, text_head=th, logit_scale=SCALE,
                    epsilon=4.0, config=DPConfig(privacy_unit="pair"))


# --- the result: clean heads, determinism, delta, modes ----------------------------------------

def test_result_heads_are_clean_copies_and_runs_are_deterministic():
    image, text, patients = _pairs(n=120)
    ih, th = _heads(mlp=True)
    before = copy.deepcopy(ih.state_dict())
    config = DPConfig(epochs=1, group_size=8, delta=0.5, accountant="rdp")
    a = train_heads(image, text, patients, image_head=ih, text_head=th, logit_scale=SCALE,
                    noise_multiplier=1.0, config=config)
    b = train_heads(image, text, patients, image_head=ih, text_head=th, logit_scale=SCALE,
                    noise_multiplier=1.0, config=config)
    assert all(torch.equal(before[k], v) for k, v in ih.state_dict().items())  # not modified
    assert type(a.image_head) is type(ih) and a.image_head.state_dict().keys() == before.keys()
    assert not a.image_head._forward_hooks and not a.image_head[0]._forward_hooks
    assert not any(p.requires_grad for p in a.image_head.parameters())
    for x, y in ((a.image_head, b.image_head), (a.text_head, b.text_head)):
        assert all(torch.equal(p, q) for p, q in zip(x.parameters(), y.parameters()))
    assert a.grad_sample_mode == "fast"  # Linear + GELU + Linear: the fast path applies
    # delta 0.5 is not below 1 / n_units, so it is lowered and recorded
    assert a.delta_lowered and a.delta == pytest.approx(1 / (10 * a.n_units))


def test_grad_sample_mode_auto():
    assert grad_sample_mode_for(ProjectionHeads(*_heads())) == "fast"
    assert grad_sample_mode_for(ProjectionHeads(*_heads(mlp=True))) == "fast"
    norm_head = nn.Sequential(nn.Linear(D_IMG, EMB), nn.LayerNorm(EMB))
    assert grad_sample_mode_for(ProjectionHeads(norm_head, _heads()[1])) == "hooks"
    assert grad_sample_mode_for(ProjectionHeads(*_heads()), "hooks") == "hooks"


# --- the stage: dp_runs and utility rows, heads on disk, idempotence ---------------------------

def test_run_dp_writes_rows_saves_heads_and_reuses(tmp_path, monkeypatch):
    import pandas as pd

    from engine import store
    from engine.core.labels import CHEXPERT_LABELS
    from engine.dp import stage, training
    from engine.embed.reader import load_heads

    n = 150
    image, text, patients = _pairs(n=n)
    rng = np.random.default_rng(5)
    items = pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "patient_id": patients,
                          "split": ["test" if int(p[1:]) % 4 == 0 else "train" for p in patients]})
    for name in CHEXPERT_LABELS:
        items[name] = rng.choice([1.0, 0.0, np.nan, -1.0], size=n, p=[0.3, 0.3, 0.3, 0.1])
    ih, th = _heads()
    calls = []
    real = training.train_heads
    monkeypatch.setattr(training, "train_heads", lambda *a, **k: calls.append(k["epsilon"])
                        or real(*a, **k))
    # one group per batch: a small sampling rate keeps Opacus's noise search fast
    sweep = stage.DPSweep(epsilons=(2.0,), training=DPConfig(
        epochs=1, group_size=8, accountant="rdp", batch_size=1, min_steps_per_epoch=1))
    db = tmp_path / "r.duckdb"
    kwargs = dict(model="m", cohort="c", items=items, image_features=image,
                  image_head=ih, text_head=th, logit_scale=SCALE, heads_dir=tmp_path / "heads")
    first = stage.run_dp(db, text_features=text, sweep=sweep, **kwargs)
    assert not first.reused and calls == [2.0, math.inf]
    assert set(first.heads) == {"2", "inf"}
    assert set(first.utility) == {"backbone", "original", "2", "inf"}
    loaded = load_heads(first.heads["2"])
    assert torch.equal(loaded.image.weight, torch.load(first.heads["2"] / "heads.pt")["image"]
                       ["weight"]) and loaded.logit_scale == SCALE
    con = store.connect_read(db)
    dp = con.execute("SELECT * FROM dp_runs ORDER BY epsilon").df()
    util = con.execute("SELECT heads, count(*) AS k FROM utility GROUP BY heads").fetchall()
    status = con.execute("SELECT status FROM runs WHERE run_id = ?", [first.run_id]).fetchall()
    con.close()
    assert len(dp) == 2 and math.isinf(dp["epsilon"].iloc[1]) and dp["epsilon"].iloc[0] <= 2.0
    assert dp["privacy_unit"].tolist() == ["group", "group"]
    assert dp["patient_epsilon"].iloc[0] == pytest.approx(2 * dp["epsilon"].iloc[0])
    assert dp["accountant"].iloc[0] == "rdp" and dp["accountant"].isna().iloc[1]
    assert dict(util) == {"backbone": 15, "original": 15, "2": 15, "inf": 15}
    assert status == [("done",)]
    # same config: reused; one more epsilon: only that one is trained
    assert stage.run_dp(db, text_features=text, sweep=sweep, **kwargs).reused
    more = stage.DPSweep(epsilons=(2.0, 3.0), training=sweep.training)
    calls.clear()
    again = stage.run_dp(db, text_features=text, sweep=more, **kwargs)
    assert not again.reused and calls == [3.0]
    assert again.dp_rows["2"]["epsilon"] == first.dp_rows["2"]["epsilon"]
    con = store.connect_read(db)
    # each run keeps its own rows; the shown ones are the latest run's, one per epsilon
    assert con.execute("SELECT count(*) FROM dp_runs").fetchall() == [(5,)]
    assert con.execute("SELECT heads, run_id FROM shown_dp_runs ORDER BY heads").fetchall() == [
        ("2", again.run_id), ("3", again.run_id), ("inf", again.run_id)]
    con.close()
    # different inputs (features changed): a new run, not a reuse
    import engine.utility

    stub = engine.utility.ProbeResult(math.nan, {}, (), {}, {})
    monkeypatch.setattr(engine.utility, "probe_auroc", lambda *a, **k: stub)  # speed only
    only_inf = stage.DPSweep(epsilons=(math.inf,), training=sweep.training)
    a = stage.run_dp(db, text_features=text, sweep=only_inf, **kwargs)
    b = stage.run_dp(db, text_features=text + 1, sweep=only_inf, **kwargs)
    assert not b.reused and a.run_id != b.run_id
