"""DP-SGD retraining of the two projection heads on frozen features (docs/dp.md).

`train_heads` retrains copies of a model's image and text heads on pre-projection train-split
features with Opacus, at one target epsilon:

* ``privacy_unit="group"`` (default; docs/dp.md): pairs are packed into
  keyed-hash patient groups (`engine.dp.groups`); one Opacus sample is one group
  (``[g, d_img]``, ``[g, d_txt]``, mask ``[g]``) and the loss is InfoNCE inside the group
  (`InGroupInfoNCE`). Opacus's per-sample gradient is exactly the group's gradient, so its
  (epsilon, delta) holds per group; per patient it is ``(2 eps, (1 + e^eps) delta)``.
* ``privacy_unit="pair"`` (Recipe B): one Opacus sample is one pair, contrasted with K negatives
  drawn from a public pool and embedded with the current heads under ``no_grad``
  (`PublicNegativeInfoNCE`); (epsilon, delta) holds per pair, per patient by group privacy over
  the patient's pairs (`engine.dp.accounting.patient_level`).

``epsilon=inf`` runs the same loop (same data, same Poisson batches, same loss scaling: the sum of
per-unit losses over the *expected* batch size, as Opacus scales) without ``make_private``: no
clipping, no noise. Comparing it with the original heads isolates the effect of retraining;
comparing it with finite epsilons isolates the effect of privacy.

Defaults (`DPConfig`) were fixed once on synthetic data (the phantom cohort is synthetic and
public), never tuned on an evaluation split. Per-epsilon choices on a validation split of the
training patients, with their privacy cost accounted, are `engine.dp.selection`'s job.

Clipping for linear heads is this module's exact `fast` path (`_FastClipper`: per-unit norms by
the Gram identity from one ordinary backward pass, Opacus's clip factor, noise and scaling, and
Opacus's accountant); Opacus's own ghost clipping and hooks remain selectable and are the
reference the fast path is tested against.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from engine.dp import accounting
from engine.dp.groups import DEFAULT_KEY, assign_groups
from engine.errors import ConfigError

log = logging.getLogger(__name__)

PRIVACY_UNITS = ("group", "pair")
GRAD_SAMPLE_MODES = ("auto", "fast", "ghost", "hooks")
OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class DPConfig:
    """Hyper-parameters of DP head retraining (fixed defaults; see the module docstring).

    Attributes:
        privacy_unit: ``group`` (in-group negatives) or ``pair`` (public negatives).
        group_size: Pairs per group (g), padding included; 32 gives about 16 real pairs, so 15
            in-group negatives, per pair on average. A patient's pairs beyond g are not used.
        group_fill: Target mean load of a group as a fraction of `group_size` (sets the number
            of groups). With g=32 and 0.5, simulated cohorts lost 1% of pairs to full groups
            (1-6 studies per patient) to 3% (geometric, mean 3.5); fuller groups drop more.
        group_key: Key of the keyed hash that assigns patients to groups.
        batch_size: Expected privacy units (groups or pairs) per Poisson batch; lowered to
            ``n_units // min_steps_per_epoch`` for small cohorts.
        min_steps_per_epoch: Lower bound on optimizer steps per epoch for small cohorts.
        epochs: Passes over the data.
        optimizer: ``adam`` (DP-Adam: Adam on the clipped, noised gradient) or ``sgd`` (DP-SGD
            with heavy-ball `momentum`). Both are post-processing of the private gradient.
        momentum: Momentum of ``sgd`` (ignored by ``adam``).
        lr: Learning rate. Adam's step does not grow with the noise, so the rate bounds how
            far noise can push the heads; 1e-3 let non-private retraining improve the in-group
            loss and held-out retrieval on synthetic data, where 1e-4 barely moved the heads.
        max_grad_norm: Clipping norm C of a unit's gradient. On synthetic data the per-group
            gradient norms were 10-25 (logit scale 30), so every group was clipped; with Adam,
            training then does not depend on the exact C (C=1 and C=0.01 gave the same losses
            and retrieval).
        delta: Target delta; lowered to ``1 / (10 n_units)`` when not below ``1 / n_units``.
        accountant: ``prv`` (falls back to ``rdp`` on numerical failure) or ``rdp``.
        grad_sample_mode: ``auto`` (``fast`` when every trainable layer is ``nn.Linear``, else
            ``hooks``), ``fast`` (this module's exact Gram-trick clipping, `_FastClipper`),
            ``ghost`` (Opacus's ghost clipping) or ``hooks`` (Opacus's per-sample gradients).
        public_negatives: K, public negatives per step (``pair`` unit only).
        max_noise_multiplier: Noise ceiling; a target needing more fails fast with
            `PrivacyBudgetError`.
        seed: Seeds the Poisson sampler, the noise and the public-negative draws.
    """

    privacy_unit: str = "group"
    group_size: int = 32
    group_fill: float = 0.5
    group_key: str = DEFAULT_KEY
    batch_size: int = 64
    min_steps_per_epoch: int = 10
    epochs: int = 5
    optimizer: str = "adam"
    momentum: float = 0.9
    lr: float = 1e-3
    max_grad_norm: float = 1.0
    delta: float = 6e-6
    accountant: str = "prv"
    grad_sample_mode: str = "auto"
    public_negatives: int = 64
    max_noise_multiplier: float = 1000.0
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.privacy_unit in PRIVACY_UNITS, "privacy_unit", f"one of {PRIVACY_UNITS}"),
            (self.grad_sample_mode in GRAD_SAMPLE_MODES, "grad_sample_mode",
             f"one of {GRAD_SAMPLE_MODES}"),
            (self.accountant in accounting.ACCOUNTANTS, "accountant",
             f"one of {accounting.ACCOUNTANTS}"),
            (self.group_size >= 1, "group_size", ">= 1"),
            (0 < self.group_fill <= 1, "group_fill", "in (0, 1]"),
            (self.batch_size >= 1, "batch_size", ">= 1"),
            (self.min_steps_per_epoch >= 1, "min_steps_per_epoch", ">= 1"),
            (self.epochs >= 1, "epochs", ">= 1"),
            (self.lr > 0, "lr", "> 0"),
            (self.optimizer in OPTIMIZERS, "optimizer", f"one of {OPTIMIZERS}"),
            (0 <= self.momentum < 1, "momentum", "in [0, 1)"),
            (self.max_grad_norm > 0, "max_grad_norm", "> 0"),
            (0 < self.delta < 1, "delta", "in (0, 1)"),
            (self.public_negatives >= 1, "public_negatives", ">= 1"),
            (self.max_noise_multiplier > 0, "max_noise_multiplier", "> 0"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise ConfigError(f"dp {name}={getattr(self, name)!r}: expected {expected}")


@dataclass
class DPResult:
    """Trained heads and the guarantee they carry.

    Attributes:
        image_head: Trained image head (a clean copy of the given module, no Opacus wrapper or
            hooks), in eval mode, gradients off.
        text_head: Trained text head, likewise.
        epsilon: Spent epsilon per privacy unit, from the accountant after training (<= the
            target); ``inf`` for the non-private run.
        delta: Delta of that guarantee (None for the non-private run).
        patient_epsilon: Epsilon per patient (`accounting.patient_level`).
        patient_delta: Delta per patient (None for the non-private run).
        noise_multiplier: Sigma (0 for the non-private run).
        max_grad_norm: Clipping norm C (``inf`` for the non-private run).
        sample_rate: Poisson sampling rate q of units per step.
        steps: Optimizer steps taken.
        accountant: ``prv`` or ``rdp`` (the one that produced `epsilon`), None when non-private.
        privacy_unit: ``group`` or ``pair``.
        grad_sample_mode: ``fast``, ``ghost`` or ``hooks`` (None when non-private).
        seconds: Wall time of the call (noise calibration and training).
        final_loss: Mean per-unit training loss over the last epoch. Diagnostic only: it is
            computed on the private data and is *not* covered by the DP guarantee.
        target_epsilon: The epsilon asked for (None when calibrated by `noise_multiplier`).
        delta_lowered: True when the configured delta was lowered below ``1 / n_units``.
        n_units: Privacy units in the training data (groups, or pairs).
        n_pairs: Training pairs given.
        n_pairs_dropped: Pairs left out of training because their group was full.
        max_pairs_per_patient: Largest number of training pairs of one patient (after drops).
        epoch_losses: Mean per-unit training loss of each epoch (diagnostic, not private).
        n_empty_batches: Poisson batches that drew no unit (the step still runs, with noise).
    """

    image_head: object
    text_head: object
    epsilon: float
    delta: float | None
    patient_epsilon: float
    patient_delta: float | None
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int
    accountant: str | None
    privacy_unit: str
    grad_sample_mode: str | None
    seconds: float
    final_loss: float
    target_epsilon: float | None = None
    delta_lowered: bool = False
    n_units: int = 0
    n_pairs: int = 0
    n_pairs_dropped: int = 0
    max_pairs_per_patient: int = 0
    epoch_losses: list[float] = field(default_factory=list)
    n_empty_batches: int = 0

    def dp_row(self) -> dict:
        """The `dp_runs` columns this result fills (run, model and cohort keys excluded)."""
        return dict(
            epsilon=self.epsilon, delta=self.delta, patient_epsilon=self.patient_epsilon,
            patient_delta=self.patient_delta, noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm, sample_rate=self.sample_rate, steps=self.steps,
            accountant=self.accountant, privacy_unit=self.privacy_unit,
        )


def effective_batch_size(n_units: int, config: DPConfig) -> int:
    """Expected units per batch: `config.batch_size`, lowered so an epoch has enough steps."""
    return max(1, min(config.batch_size, n_units // config.min_steps_per_epoch))


def effective_delta(n_units: int, delta: float) -> tuple[float, bool]:
    """``delta`` if it is below ``1 / n_units``, else ``1 / (10 n_units)``; and whether lowered."""
    if delta * n_units < 1.0:
        return delta, False
    return 1.0 / (10.0 * n_units), True


def train_heads(
    image_features: np.ndarray,
    text_features: np.ndarray,
    patient_ids: Sequence[object],
    *,
    image_head,
    text_head,
    logit_scale: float,
    epsilon: float | None = None,
    noise_multiplier: float | None = None,
    config: DPConfig = DPConfig(),
    pair_ids: Sequence[object] | None = None,
    public_image_features: np.ndarray | None = None,
    public_text_features: np.ndarray | None = None,
    progress=None,
    loss: str = "infonce",
    logit_bias: float | None = None,
) -> DPResult:
    """Retrain copies of the heads on train-split features, at one privacy level.

    Args:
        image_features: [n, d_img] float32 pre-projection image features of the training pairs.
        text_features: [n, d_txt] float32 pre-projection text features (row i = pair i).
        patient_ids: [n] patient of each pair.
        image_head: The model's image head (``nn.Linear`` or ``nn.Sequential``); not modified.
        text_head: The model's text head; not modified.
        logit_scale: The model's *log* logit scale (``TowerSplit.logit_scale``); the loss uses
            the fixed multiplier ``exp(logit_scale)``.
        epsilon: Target epsilon per privacy unit; ``math.inf`` trains without DP.
        noise_multiplier: Instead of `epsilon`, a fixed sigma (``make_private``; epsilon is then
            whatever the accountant says). Exactly one of the two must be given.
        config: Hyper-parameters.
        pair_ids: [n] stable pair ids (e.g. image ids) for deterministic tie-breaking in groups.
        public_image_features: [m, d_img] public pool, required for ``privacy_unit="pair"``.
        public_text_features: [m', d_txt] public pool, required for ``privacy_unit="pair"``.
        progress: Optional object with ``update(n)``, called once per optimizer step (see
            `planned_steps` for the total).
        loss: The family's loss: ``infonce`` (CLIP) or ``sigmoid`` (SigLIP, with `logit_bias`,
            fixed like the scale); `engine.dp.losses.make_criterion`.
        logit_bias: The model's logit bias (the sigmoid loss only).

    Raises:
        PrivacyBudgetError: the target epsilon cannot be reached below
            ``config.max_noise_multiplier``; raised before any training.
        ConfigError: inconsistent arguments.
    """
    import torch

    if (epsilon is None) == (noise_multiplier is None):
        raise ConfigError("give exactly one of epsilon and noise_multiplier")
    if noise_multiplier is not None and not noise_multiplier >= 0:
        raise ConfigError(f"noise_multiplier={noise_multiplier}: expected >= 0")
    if epsilon is not None and not epsilon > 0:
        raise accounting.PrivacyBudgetError(f"epsilon={epsilon}: must be positive (or inf)")
    n = len(patient_ids)
    if len(image_features) != n or len(text_features) != n:
        raise ConfigError(f"{len(image_features)} image / {len(text_features)} text feature rows "
                          f"for {n} patient ids: they must be aligned row by row")
    if n == 0:
        raise ConfigError("no training pairs")
    private = not (epsilon is not None and math.isinf(epsilon))
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Secure RNG turned off.*")
        warnings.filterwarnings("ignore", message=".*Optimal order is the largest alpha.*")
        warnings.filterwarnings("ignore", message=".*Full backward hook.*")
        torch.manual_seed(config.seed)
        data = _TrainingData.build(image_features, text_features, patient_ids, pair_ids, config,
                                   public_image_features, public_text_features)
        delta, lowered = effective_delta(data.n_units, config.delta)
        loop = _Loop(data, image_head, text_head, math.exp(float(logit_scale)), config,
                     loss=loss, logit_bias=logit_bias)
        if private:
            loop.make_private(epsilon=epsilon, noise_multiplier=noise_multiplier, delta=delta)
        losses = loop.run(progress)
        heads = loop.trained_heads(image_head, text_head)
        guarantee = loop.guarantee(delta) if private else None
    if guarantee is None:
        eps, delta_out, sigma, accountant, mode = math.inf, None, 0.0, None, None
        p_eps, p_delta, clip = math.inf, None, math.inf
    else:
        eps, accountant = guarantee
        delta_out, sigma, mode, clip = delta, loop.noise_multiplier, loop.mode, config.max_grad_norm
        p_eps, p_delta = accounting.patient_level(
            eps, delta, privacy_unit=config.privacy_unit,
            max_pairs_per_patient=data.max_pairs_per_patient)
    return DPResult(
        image_head=heads[0], text_head=heads[1], epsilon=eps, delta=delta_out,
        patient_epsilon=p_eps, patient_delta=p_delta, noise_multiplier=sigma,
        max_grad_norm=clip, sample_rate=loop.sample_rate, steps=loop.steps,
        accountant=accountant, privacy_unit=config.privacy_unit, grad_sample_mode=mode,
        seconds=time.perf_counter() - started,
        final_loss=losses[-1] if losses else math.nan,
        target_epsilon=epsilon if private else None, delta_lowered=lowered and private,
        n_units=data.n_units, n_pairs=n, n_pairs_dropped=data.n_dropped,
        max_pairs_per_patient=data.max_pairs_per_patient, epoch_losses=losses,
        n_empty_batches=loop.n_empty,
    )


def planned_steps(n_pairs: int, config: DPConfig) -> int:
    """Optimizer steps `train_heads` will take for `n_pairs` training pairs (for progress bars)."""
    from engine.dp.groups import number_of_groups

    units = (number_of_groups(n_pairs, config.group_size, config.group_fill)
             if config.privacy_unit == "group" else n_pairs)
    batches = math.ceil(units / effective_batch_size(units, config))
    return config.epochs * int(1 / (1 / batches))


def grad_sample_mode_for(module, requested: str = "auto") -> str:
    """``fast`` when every layer holding trainable parameters is ``nn.Linear``, else ``hooks``.

    The fast path (`_FastClipper`) gets every unit's gradient norm of an ``nn.Linear`` from one
    ordinary backward pass by the Gram identity; other layers need Opacus's materialised
    per-sample gradients (hooks).
    """
    from torch import nn

    if requested != "auto":
        return requested
    for sub in module.modules():
        if any(p.requires_grad for p in sub.parameters(recurse=False)) and not isinstance(
                sub, nn.Linear):
            return "hooks"
    return "fast"


# --------------------------------------------------------------------------------------------
# Internals


class _Batch(tuple):
    """A batch already stacked by the dataset's ``__getitems__`` (collation passes it through)."""


def _collate(batch):
    from torch.utils.data import default_collate

    return tuple(batch) if isinstance(batch, _Batch) else default_collate(batch)


def _group_dataset(image, text, index):
    """Dataset of groups: item b is ``(image [g, d_img], text [g, d_txt], mask [g])``.

    Features are gathered per batch from the pair matrices (no padded copy of the data); padded
    rows are zeros.
    """
    import torch
    from torch.utils.data import Dataset

    class GroupDataset(Dataset):
        def __init__(self):
            self.image, self.text = image, text
            self.mask = index >= 0
            self.rows = index.clamp(min=0)

        def __len__(self):
            return self.rows.shape[0]

        def __getitem__(self, i):
            return tuple(x[0] for x in self.__getitems__([i]))

        def __getitems__(self, indices):
            if len(indices) == 0:
                return []  # Opacus's collate wrapper turns this into an empty batch
            idx = torch.as_tensor(indices, dtype=torch.long)
            rows, mask = self.rows[idx], self.mask[idx]
            keep = mask.unsqueeze(-1).to(self.image.dtype)
            return _Batch((self.image[rows] * keep, self.text[rows] * keep, mask))

    return GroupDataset()


def _pair_dataset(image, text):
    """Dataset of pairs: item i is ``(image [d_img], text [d_txt])``."""
    import torch
    from torch.utils.data import Dataset

    class PairDataset(Dataset):
        def __len__(self):
            return image.shape[0]

        def __getitem__(self, i):
            return image[i], text[i]

        def __getitems__(self, indices):
            if len(indices) == 0:
                return []
            idx = torch.as_tensor(indices, dtype=torch.long)
            return _Batch((image[idx], text[idx]))

    return PairDataset()


@dataclass
class _TrainingData:
    dataset: object
    n_units: int
    n_dropped: int
    max_pairs_per_patient: int
    public_image: object = None
    public_text: object = None

    @classmethod
    def build(cls, image_features, text_features, patient_ids, pair_ids, config,
              public_image, public_text):
        import torch

        image, text = _tensor(image_features), _tensor(text_features)
        pids = np.asarray([str(p) for p in patient_ids], dtype=object)
        if config.privacy_unit == "group":
            groups = assign_groups(pids, capacity=config.group_size, fill=config.group_fill,
                                   key=config.group_key, pair_ids=pair_ids)
            if groups.n_dropped:
                log.info("%d of %d pairs left out: their group was full (%d patients affected)",
                         groups.n_dropped, len(pids), groups.n_capped_patients)
            kept = pids[groups.group_of_pair >= 0]
            return cls(
                dataset=_group_dataset(image, text, torch.from_numpy(groups.index)),
                n_units=groups.n_groups, n_dropped=groups.n_dropped,
                max_pairs_per_patient=_max_count(kept),
            )
        if public_image is None or public_text is None or not len(public_image) or not len(
                public_text):
            raise ConfigError("privacy_unit='pair' needs public_image_features and "
                              "public_text_features (a public or synthetic negative pool)")
        if public_image.shape[1] != image.shape[1] or public_text.shape[1] != text.shape[1]:
            raise ConfigError(
                f"public pool widths {public_image.shape[1]}/{public_text.shape[1]} differ from "
                f"the training features' {image.shape[1]}/{text.shape[1]}")
        return cls(
            dataset=_pair_dataset(image, text), n_units=len(pids), n_dropped=0,
            max_pairs_per_patient=_max_count(pids),
            public_image=_tensor(public_image), public_text=_tensor(public_text),
        )


def _tensor(array):
    """A float32 CPU tensor sharing memory with `array` where possible (read-only maps copied)."""
    import torch

    array = np.ascontiguousarray(array, dtype=np.float32)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def _max_count(values: np.ndarray) -> int:
    if not len(values):
        return 0
    _, counts = np.unique(values, return_counts=True)
    return int(counts.max())


class _Loop:
    """One training run: model, optimizer, Poisson loader, optionally made private."""

    def __init__(self, data: _TrainingData, image_head, text_head, multiplier: float,
                 config: DPConfig, *, loss: str = "infonce",
                 logit_bias: float | None = None) -> None:
        import torch
        from torch.utils.data import DataLoader

        from engine.dp.losses import make_criterion

        self.data, self.config = data, config
        self._heads = (image_head, text_head)
        self.model = self._fresh_model()
        self.optimizer = _optimizer(self.model.parameters(), config)
        self.criterion = make_criterion(loss, config.privacy_unit, multiplier, logit_bias)
        self.batch_size = effective_batch_size(data.n_units, config)
        self.loader = DataLoader(
            data.dataset, batch_size=self.batch_size, collate_fn=_collate,
            generator=torch.Generator().manual_seed(config.seed),
        )
        # Opacus's definitions, so that the non-private run scales its loss the same way.
        self.sample_rate = 1 / len(self.loader)
        self.expected_batch_size = int(len(self.loader.dataset) * self.sample_rate)
        self.negatives = torch.Generator().manual_seed(config.seed + 2)
        self.private = False
        self.engine = None
        self.mode: str | None = None
        self.noise_multiplier = 0.0
        self.steps = 0
        self.n_empty = 0
        self.clipper: _FastClipper | None = None

    def _fresh_model(self):
        from engine.dp.losses import ProjectionHeads

        return ProjectionHeads(*(_trainable_copy(h) for h in self._heads))

    def make_private(self, *, epsilon, noise_multiplier, delta) -> None:
        """Wrap model, optimizer and loader with a fresh PrivacyEngine; PRV falls back to RDP."""
        import torch
        from opacus import PrivacyEngine

        config = self.config
        self.mode = grad_sample_mode_for(self.model, config.grad_sample_mode)
        chain = ((config.accountant,) if config.accountant == "rdp"
                 else (config.accountant, "rdp"))
        plan_steps = int(config.epochs / self.sample_rate)  # what Opacus's search assumes
        if self.mode == "fast":
            self._make_private_fast(chain, epsilon=epsilon, noise_multiplier=noise_multiplier,
                                    delta=delta, plan_steps=plan_steps)
            return
        model, optimizer = self.model, self.optimizer
        for attempt, name in enumerate(chain):
            last = attempt == len(chain) - 1
            if attempt:  # a fresh model and optimizer: the failed attempt may have wrapped them
                model = self._fresh_model()
                optimizer = _optimizer(model.parameters(), config)
            kwargs = dict(
                module=model, optimizer=optimizer, criterion=self.criterion,
                data_loader=self.loader, max_grad_norm=config.max_grad_norm,
                poisson_sampling=True, grad_sample_mode=self.mode,
                noise_generator=torch.Generator().manual_seed(config.seed + 1),
            )
            engine = PrivacyEngine(accountant=name, secure_mode=False)
            try:
                if epsilon is not None:
                    accounting.check_budget(
                        epsilon, delta=delta, sample_rate=self.sample_rate, steps=plan_steps,
                        accountant=name, max_noise_multiplier=config.max_noise_multiplier)
                    out = engine.make_private_with_epsilon(
                        **kwargs, target_epsilon=epsilon, target_delta=delta,
                        epochs=config.epochs)
                else:
                    out = engine.make_private(**kwargs, noise_multiplier=noise_multiplier)
            except accounting.PrivacyBudgetError:
                raise
            except Exception as exc:  # noqa: BLE001 - PRV fails numerically in many ways
                if last:
                    raise
                log.warning("%s accountant failed (%s); falling back to rdp", name, exc)
                continue
            break
        if "ghost" in self.mode:
            self.model, self.optimizer, self.criterion, self.loader = out
        else:
            self.model, self.optimizer, self.loader = out
        self.engine, self.private = engine, True
        self.noise_multiplier = float(self.optimizer.noise_multiplier)

    def _make_private_fast(self, chain, *, epsilon, noise_multiplier, delta, plan_steps) -> None:
        """Own DP-SGD step: Opacus's noise calibration and accountant, `_FastClipper` clipping.

        The noise search is Opacus's `get_noise_multiplier` with the arguments
        `make_private_with_epsilon` passes it (sample rate ``1 / len(loader)``, the configured
        epochs, the accountant's default tolerance), so both paths find the same sigma.
        """
        import torch
        from opacus.accountants.utils import get_noise_multiplier
        from opacus.data_loader import DPDataLoader

        config = self.config
        for attempt, name in enumerate(chain):
            try:
                if epsilon is not None:
                    accounting.check_budget(
                        epsilon, delta=delta, sample_rate=self.sample_rate, steps=plan_steps,
                        accountant=name, max_noise_multiplier=config.max_noise_multiplier)
                    with warnings.catch_warnings(), np.errstate(all="ignore"):
                        warnings.simplefilter("ignore")
                        sigma = float(get_noise_multiplier(
                            target_epsilon=epsilon, target_delta=delta,
                            sample_rate=self.sample_rate, epochs=config.epochs, accountant=name))
                else:
                    sigma = float(noise_multiplier)
            except accounting.PrivacyBudgetError:
                raise
            except Exception as exc:  # noqa: BLE001 - PRV fails numerically in many ways
                if attempt == len(chain) - 1:
                    raise
                log.warning("%s accountant failed (%s); falling back to rdp", name, exc)
                continue
            break
        self.engine = _OwnEngine(accounting._accountant(name))
        self.loader = DPDataLoader.from_data_loader(self.loader)
        self.clipper = _FastClipper(
            self.model, max_grad_norm=config.max_grad_norm, noise_multiplier=sigma,
            expected_batch_size=self.expected_batch_size,
            generator=torch.Generator().manual_seed(config.seed + 1))
        self.private, self.noise_multiplier = True, sigma

    def run(self, progress) -> list[float]:
        from opacus.data_loader import DPDataLoader

        if not self.private:
            # The same Poisson batches as a private run with this seed.
            self.loader = DPDataLoader.from_data_loader(self.loader)
        self.model.train()
        epoch_losses = []
        for _ in range(self.config.epochs):
            total, units = 0.0, 0
            for batch in self.loader:
                self.optimizer.zero_grad(set_to_none=True)
                per_unit = self._step(batch)
                self.optimizer.step()
                if self.clipper is not None:
                    self.engine.accountant.step(noise_multiplier=self.noise_multiplier,
                                                sample_rate=self.sample_rate)
                self.steps += 1
                total += float(per_unit.sum())
                units += int(per_unit.shape[0])
                self.n_empty += int(per_unit.shape[0] == 0)
                if progress is not None:
                    progress.update(1)
            epoch_losses.append(total / units if units else math.nan)
        return epoch_losses

    def _step(self, batch):
        """Forward and backward on one batch; returns the detached per-unit losses ``[B]``."""
        import contextlib

        import torch

        capture = self.clipper.capture() if self.clipper is not None else contextlib.nullcontext()
        if self.config.privacy_unit == "pair":
            image, text = batch
            k = self.config.public_negatives
            pi = torch.randint(len(self.data.public_image), (k,), generator=self.negatives)
            pt = torch.randint(len(self.data.public_text), (k,), generator=self.negatives)
            with torch.no_grad():  # constants: Opacus's hooks (and ours) skip no-grad forwards
                neg_image, neg_text = self.model(self.data.public_image[pi],
                                                 self.data.public_text[pt])
            extra = (neg_image, neg_text)
        else:
            image, text, mask = batch
            extra = (mask,)
        with capture:
            emb = self.model(image, text)
        if self.clipper is not None:
            per_unit = _per_unit(self.criterion, emb, extra)
            self.clipper.set_private_grads(per_unit)
            return per_unit.detach()
        if self.private and "ghost" in (self.mode or ""):
            loss = self.criterion(*emb, *extra)  # DPTensorFastGradientClipping
            loss.backward()  # ghost clipping's two passes
            return loss.loss_per_sample.detach()
        per_unit = _per_unit(self.criterion, emb, extra)
        if self.private:
            loss = per_unit.mean() if per_unit.shape[0] else per_unit.sum()
        else:
            # Opacus sums clipped per-unit gradients and divides by the expected batch size.
            loss = per_unit.sum() / self.expected_batch_size
        loss.backward()
        return per_unit.detach()

    def trained_heads(self, image_head, text_head):
        inner = getattr(self.model, "_module", self.model)
        out = []
        for original, trained in ((image_head, inner.image_head), (text_head, inner.text_head)):
            clean = copy.deepcopy(original)
            clean.float()
            clean.load_state_dict({k: v.detach().clone() for k, v in trained.state_dict().items()})
            clean.eval()
            clean.requires_grad_(False)
            out.append(clean)
        if hasattr(self.model, "_close"):
            self.model._close()
        return out

    def guarantee(self, delta: float) -> tuple[float, str]:
        """Epsilon spent, from the engine's accountant (RDP when PRV fails), and its name."""
        accountant = self.engine.accountant
        name = accountant.mechanism()
        if self.steps == 0:
            return 0.0, name
        if self.noise_multiplier == 0:
            return math.inf, name  # no noise: no guarantee (PRV cannot even discretise it)
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                eps = float(self.engine.get_epsilon(delta))
            if not math.isfinite(eps) and self.noise_multiplier > 0:
                raise FloatingPointError(f"{name} returned {eps}")
            return eps, name
        except Exception as exc:  # noqa: BLE001
            if name == "rdp":
                raise
            log.warning("%s accountant failed after training (%s); using rdp", name, exc)
            sigma, q, steps = _single_history(accountant.history)
            return accounting.epsilon_for(sigma, q, steps, delta, "rdp"), "rdp"


def _single_history(history):
    if len(history) != 1:
        raise accounting.AccountantError(f"expected one (sigma, q, steps) entry, got {history}")
    sigma, q, steps = history[0]
    return float(sigma), float(q), int(steps)


def _per_unit(criterion, embeddings, extra):
    reduction = criterion.reduction
    criterion.reduction = "none"
    try:
        return criterion(*embeddings, *extra)
    finally:
        criterion.reduction = reduction


def _trainable_copy(head):
    clone = copy.deepcopy(head)
    clone.float()
    clone.requires_grad_(True)
    clone.train()
    return clone


def _optimizer(params, config: DPConfig):
    import torch

    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum)
    return torch.optim.Adam(params, lr=config.lr)


class _OwnEngine:
    """The part of Opacus's `PrivacyEngine` the loop reads back: its accountant."""

    def __init__(self, accountant) -> None:
        self.accountant = accountant

    def get_epsilon(self, delta: float) -> float:
        return self.accountant.get_epsilon(delta=delta)


class _FastClipper:
    """Exact per-unit clipping for ``nn.Linear`` layers from one ordinary backward pass.

    For a linear layer applied to the rows of unit b (inputs ``x_bi``, output gradients
    ``d_bi`` = gradient of unit b's own loss with respect to the layer's output), unit b's
    weight gradient is ``G_b = sum_i d_bi x_bi^T`` and its squared norm is
    ``sum_ij (d_bi . d_bj)(x_bi . x_bj)``: two g x g Gram matrices per unit instead of a
    materialised d_out x d_in gradient (the bias gradient is ``sum_i d_bi``). Since the loss is a
    sum of per-unit losses, one backward of that sum gives every ``d_bi`` at once. With the
    flat norms (over all layers, as Opacus's flat clipping) the clip factors
    ``c_b = min(1, C / (||g_b|| + 1e-6))`` (Opacus's formula) weight one einsum that gives the
    clipped sum; Gaussian noise of standard deviation sigma * C is added per parameter, in
    parameter order, and the result divided by the expected batch size, which is what Opacus's
    ``DPOptimizer`` does with ``loss_reduction="mean"``. Noise off, the gradients equal Opacus's
    (tests/test_dp.py); the accounting is Opacus's accountant stepped once per step.
    """

    def __init__(self, model, *, max_grad_norm: float, noise_multiplier: float,
                 expected_batch_size: int, generator) -> None:
        from torch import nn

        self.model, self.generator = model, generator
        self.max_grad_norm, self.noise_multiplier = float(max_grad_norm), float(noise_multiplier)
        self.expected_batch_size = expected_batch_size
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.layers = [m for m in model.modules()
                       if any(p.requires_grad for p in m.parameters(recurse=False))]
        for m in self.layers:
            if not isinstance(m, nn.Linear):
                raise ConfigError(f"grad_sample_mode='fast' handles nn.Linear layers only, not "
                                  f"{type(m).__name__}; use grad_sample_mode='hooks'")
        self._records: list[tuple] = []
        self._active = False
        for m in self.layers:
            m.register_forward_hook(self._hook)

    def capture(self):
        import contextlib

        @contextlib.contextmanager
        def active():
            self._records, self._active = [], True
            try:
                yield
            finally:
                self._active = False
        return active()

    def _hook(self, module, inputs, output) -> None:
        import torch

        if self._active and torch.is_grad_enabled():
            self._records.append((module, inputs[0].detach(), output))

    def set_private_grads(self, per_unit_losses) -> None:
        """Set every trainable parameter's ``.grad`` to the clipped, noised, scaled sum."""
        import torch

        records, self._records = self._records, []
        used = [id(m) for m, _, _ in records]
        if sorted(used) != sorted(set(used)) or len(used) != len(self.layers):
            raise RuntimeError("fast clipping expects every trainable layer used once per step")
        b = int(per_unit_losses.shape[0])
        grads: dict[int, torch.Tensor] = {}
        if b:
            outs = torch.autograd.grad(per_unit_losses.sum(), [o for _, _, o in records])
            flat = []
            sq = torch.zeros(b, dtype=per_unit_losses.dtype)
            for (module, x, _), d in zip(records, outs):
                x3 = x.reshape(b, -1, x.shape[-1])
                d3 = d.reshape(b, -1, d.shape[-1])
                flat.append((module, x3, d3))
                gram_x = torch.bmm(x3, x3.transpose(1, 2))
                gram_d = torch.bmm(d3, d3.transpose(1, 2))
                sq = sq + (gram_x * gram_d).sum(dim=(1, 2)).clamp(min=0)
                if module.bias is not None and module.bias.requires_grad:
                    sq = sq + d3.sum(dim=1).pow(2).sum(dim=1)
            norms = sq.sqrt()
            clip = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
            for module, x3, d3 in flat:
                weighted = (d3 * clip[:, None, None]).reshape(-1, d3.shape[-1])
                if module.weight.requires_grad:
                    grads[id(module.weight)] = weighted.T @ x3.reshape(-1, x3.shape[-1])
                if module.bias is not None and module.bias.requires_grad:
                    grads[id(module.bias)] = weighted.sum(dim=0)
        std = self.noise_multiplier * self.max_grad_norm
        for p in self.params:
            g = grads.get(id(p))
            g = torch.zeros_like(p) if g is None else g.to(p.dtype)
            if std > 0:
                g = g + torch.normal(mean=0, std=std, size=p.shape, device=p.device,
                                     generator=self.generator)
            p.grad = (g / self.expected_batch_size).view_as(p)
