"""Honest hyper-parameters: a per-epsilon choice on a validation split carved from training.

The rule (docs/dp.md, "Hyper-parameter selection"):

1. **Validation split.** Patients of the *training* split are sent to validation by a keyed hash
   of their id (`validation_mask`): ``blake2b(patient_id, key) / 2^64 < fraction``. Nothing
   else is read: no features, labels or reports, and never the held-out split, whose rows are
   dropped before anything is computed (`select_for_split`). The other training patients are the
   *fit* patients.
2. **Candidates.** A handful of `DPConfig` overrides (`Selection.candidates`: learning rate,
   epochs, expected groups per step, clipping norm, group capacity, DP-Adam vs DP-SGD with
   momentum). At one target epsilon every candidate is trained on the fit patients only.
3. **Score.** Each candidate's heads are scored by the mean in-group symmetric InfoNCE over the
   validation patients' groups (`validation_loss`; a grouping of fixed capacity, the same for
   every candidate, so that the scores are comparable; groups with fewer than two pairs have no
   negative and are left out). The lowest score wins; ties go to the earlier candidate.
4. **Release.** The winner's heads, trained on the fit patients, are the heads of that epsilon:
   validation patients are never trained on, so they are used non-privately for the choice only.

**Privacy of the choice.** Every candidate's training touched the fit patients, and the released
choice depends on all of them, so the guarantee of what is released at one epsilon is the
composition of the K candidates' runs. `compose_epsilon` composes their ``(sigma, q, steps)``
histories in one Opacus RDP accountant (tighter than K times epsilon), stored beside the per-run
epsilon (``dp_selection.composed_epsilon``). The validation patients get no DP guarantee from
the choice: their data picks one of K candidates (at most log2 K bits), and they are excluded
from every candidate's training.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from engine.dp import accounting
from engine.dp.groups import assign_groups, keyed_hash
from engine.dp.training import DPConfig, DPResult
from engine.errors import ConfigError

log = logging.getLogger(__name__)

VALIDATION_KEY = "relink-audit/dp-validation/v1"
RULE = "lowest mean validation in-group InfoNCE (fixed validation groups), ties to the first"

# Small on purpose (2 shared cores): each is trained once per epsilon. Chosen to span what moved
# the in-group loss on synthetic data: Adam's rate and length, DP-SGD with momentum, smaller
# groups (more privacy units, so a lower sampling rate per unit) and a larger clipping norm.
DEFAULT_CANDIDATES: tuple[dict, ...] = (
    {"optimizer": "adam", "lr": 1e-3, "epochs": 5},
    {"optimizer": "adam", "lr": 3e-3, "epochs": 10},
    {"optimizer": "sgd", "lr": 2.0, "momentum": 0.9, "epochs": 5},
    {"optimizer": "adam", "lr": 1e-3, "epochs": 5, "group_size": 16, "batch_size": 128,
     "max_grad_norm": 5.0},
)

# From seeded random heads (engine/dp/start.py) the heads have to travel much further than from
# the model's own: measured on the phantom, Adam at 1e-3 for 5 epochs left random heads far from
# the original level even without noise, so these candidates take larger rates and longer runs
# (20 epochs per epsilon in all, on 2 shared cores).
RANDOM_START_CANDIDATES: tuple[dict, ...] = (
    {"optimizer": "adam", "lr": 3e-3, "epochs": 10},
    {"optimizer": "adam", "lr": 1e-2, "epochs": 10},
)

_TUNABLE = {f.name for f in fields(DPConfig)} - {"privacy_unit", "group_key", "delta",
                                                  "accountant", "max_noise_multiplier", "seed"}


@dataclass(frozen=True)
class Selection:
    """How hyper-parameters are chosen per epsilon (module docstring).

    Attributes:
        candidates: `DPConfig` overrides, one per candidate (applied to the sweep's config).
        validation_fraction: Share of training patients held out for validation.
        validation_key: Key of the validation hash.
        validation_group_size: Capacity of the fixed validation groups.
        validation_group_fill: Their target fill.
    """

    candidates: tuple[dict, ...] = DEFAULT_CANDIDATES
    validation_fraction: float = 0.2
    validation_key: str = VALIDATION_KEY
    validation_group_size: int = 32
    validation_group_fill: float = 0.5

    def __post_init__(self) -> None:
        if not self.candidates:
            raise ConfigError("dp selection: at least one candidate is needed")
        for i, cand in enumerate(self.candidates):
            bad = set(cand) - _TUNABLE
            if bad:
                raise ConfigError(f"dp selection candidate {i}: {sorted(bad)} cannot be tuned; "
                                  f"tunable: {sorted(_TUNABLE)}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ConfigError(f"dp selection validation_fraction={self.validation_fraction}: "
                              "expected in (0, 1)")

    def for_start(self, kind: str) -> Selection:
        """The selection for a start (`engine.dp.start`): with the default candidates, a random
        start gets `RANDOM_START_CANDIDATES`; explicit candidates are kept as given."""
        if kind == "random" and self.candidates == DEFAULT_CANDIDATES:
            return replace(self, candidates=RANDOM_START_CANDIDATES)
        return self

    def configs(self, base: DPConfig) -> list[DPConfig]:
        """The candidates as full configs (invalid values fail here, naming the option)."""
        return [replace(base, **cand) for cand in self.candidates]

    def describe(self) -> dict:
        """JSON-ready description (stored in the run config)."""
        return {**asdict(self), "candidates": [dict(c) for c in self.candidates], "rule": RULE}


@dataclass
class SelectionResult:
    """The chosen heads of one epsilon and how they were chosen.

    Attributes:
        result: The winner's `DPResult` (trained on the fit patients).
        chosen: Index of the winner in `Selection.candidates`.
        trials: One dict per candidate (`rows` columns).
        composed_epsilon: Epsilon of all candidates' runs composed (RDP), per privacy unit.
        composed_delta: Its delta.
        composed_patient_epsilon: Patient level (`accounting.patient_level`).
        composed_patient_delta: Likewise.
        n_fit_pairs: Training pairs of the fit patients.
        n_validation_pairs: Pairs of the validation patients.
        n_validation_patients: Validation patients.
    """

    result: DPResult
    chosen: int
    trials: list[dict]
    composed_epsilon: float
    composed_delta: float | None
    composed_patient_epsilon: float
    composed_patient_delta: float | None
    n_fit_pairs: int
    n_validation_pairs: int
    n_validation_patients: int
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """What the ``dp_runs`` row and ``dp.json`` carry about the selection."""
        return dict(selection_chosen=self.chosen,
                    selection_params=json.dumps(self.trials[self.chosen]["params"],
                                                sort_keys=True),
                    selection_epsilon=self.composed_epsilon, selection_delta=self.composed_delta,
                    selection_patient_epsilon=self.composed_patient_epsilon,
                    selection_patient_delta=self.composed_patient_delta,
                    n_fit_pairs=self.n_fit_pairs, n_validation_pairs=self.n_validation_pairs)

    def rows(self) -> list[dict]:
        """One ``dp_selection`` row per candidate (run, model, cohort and heads keys excluded)."""
        out = []
        for t in self.trials:
            out.append({
                "candidate": t["candidate"], "params_json": json.dumps(t["params"],
                                                                       sort_keys=True),
                "optimizer": t["params"]["optimizer"], "lr": t["params"]["lr"],
                "epochs": t["params"]["epochs"], "batch_size": t["params"]["batch_size"],
                "max_grad_norm": t["params"]["max_grad_norm"],
                "group_size": t["params"]["group_size"], "chosen": t["candidate"] == self.chosen,
                "val_loss": t["val_loss"], "epsilon": t["epsilon"], "delta": t["delta"],
                "noise_multiplier": t["noise_multiplier"], "sample_rate": t["sample_rate"],
                "steps": t["steps"], "accountant": t["accountant"], "seconds": t["seconds"],
                "final_loss": t["final_loss"], "composed_epsilon": self.composed_epsilon,
                "composed_delta": self.composed_delta,
                "composed_patient_epsilon": self.composed_patient_epsilon,
                "composed_patient_delta": self.composed_patient_delta,
                "n_fit_pairs": self.n_fit_pairs, "n_validation_pairs": self.n_validation_pairs,
                "rule": RULE,
            })
        return out


def validation_mask(patient_ids: Sequence[object], *, fraction: float,
                    key: str = VALIDATION_KEY) -> np.ndarray:
    """True for pairs whose patient goes to validation: a keyed hash of the patient id only."""
    pids = [str(p) for p in patient_ids]
    uniq, inverse = np.unique(np.asarray(pids, dtype=object), return_inverse=True)
    u = keyed_hash(list(uniq), key).astype(np.float64) / 2.0 ** 64
    return (u < fraction)[inverse]


def compose_epsilon(histories: Sequence[tuple[float, float, int]], delta: float) -> float:
    """Epsilon of several DP-SGD runs on the same data, composed in one Opacus RDP accountant.

    Args:
        histories: ``(noise_multiplier, sample_rate, steps)`` of each run.
        delta: Delta of the composed guarantee.

    Returns:
        The composed epsilon; ``inf`` when any run had no noise.
    """
    from opacus.accountants import RDPAccountant

    runs = [(float(s), float(q), int(t)) for s, q, t in histories if int(t) > 0]
    if not runs:
        return 0.0
    if any(s <= 0 or math.isinf(s) for s, _, _ in runs):
        return math.inf
    acc = RDPAccountant()
    acc.history = runs
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(acc.get_epsilon(delta=float(delta)))


def validation_loss(image_head, text_head, image_features: np.ndarray,
                    text_features: np.ndarray, patient_ids: Sequence[object], *,
                    logit_scale: float, selection: Selection,
                    pair_ids: Sequence[object] | None = None, loss: str = "infonce",
                    logit_bias: float | None = None) -> float:
    """Mean in-group loss of the heads over the validation patients' groups.

    The loss is the family's (`engine.dp.losses.make_criterion`): symmetric InfoNCE, or the
    sigmoid loss with the model's bias.

    The groups come from the keyed hash of the patient ids at the selection's fixed capacity, so
    every candidate is scored on the same groups; groups with fewer than two pairs are left out.
    """
    import torch

    from engine.dp.losses import ProjectionHeads, make_criterion

    groups = assign_groups(patient_ids, capacity=selection.validation_group_size,
                           fill=selection.validation_group_fill,
                           key=selection.validation_key + "/groups", pair_ids=pair_ids)
    keep = groups.mask.sum(axis=1) >= 2
    if not keep.any():
        raise ConfigError("dp selection: no validation group has two pairs; raise "
                          "validation_fraction or lower validation_group_fill")
    index = torch.from_numpy(groups.index[keep])
    mask = index >= 0
    rows = index.clamp(min=0)
    image = torch.from_numpy(np.ascontiguousarray(image_features, dtype=np.float32))[rows]
    text = torch.from_numpy(np.ascontiguousarray(text_features, dtype=np.float32))[rows]
    model = ProjectionHeads(image_head, text_head).eval()
    with torch.no_grad():
        emb = model(image * mask[..., None], text * mask[..., None])
        criterion = make_criterion(loss, "group", math.exp(float(logit_scale)), logit_bias,
                                   reduction="none")
        losses = criterion(*emb, mask)
    return float(losses.mean())


def select_for_split(items, image_features: np.ndarray, text_features: np.ndarray, *,
                     train_split: str, epsilon: float, base: DPConfig, selection: Selection,
                     image_head, text_head, logit_scale: float,
                     public_image_features: np.ndarray | None = None,
                     public_text_features: np.ndarray | None = None,
                     progress=None, loss: str = "infonce",
                     logit_bias: float | None = None) -> SelectionResult:
    """Choose and train the heads of one epsilon from the training split's rows only.

    Args:
        items: All audited items (``image_id, patient_id, split``), aligned with the features.
            Rows outside `train_split` are dropped first and never read again.
        image_features: [n, d_img] pre-projection image features (all items).
        text_features: [n, d_txt] pre-projection text features.
        train_split: The members' split name.
        epsilon: Target epsilon per privacy unit (``inf``: non-private candidates).
        base: The sweep's config; candidates override it.
        selection: Candidates and validation settings.
        image_head, text_head, logit_scale: As `engine.dp.training.train_heads`.
        public_image_features, public_text_features: Public pools (``pair`` unit only).
        progress: Optional ``update(n)`` object, advanced once per optimizer step.
        loss, logit_bias: The family's loss and the model's bias (`train_heads`).
    """
    from engine.dp.training import train_heads

    train = np.flatnonzero((items["split"] == train_split).to_numpy())
    if not len(train):
        raise ConfigError(f"dp selection: no {train_split!r} items to train on")
    patients = items["patient_id"].astype(str).to_numpy()[train]
    pair_ids = items["image_id"].astype(str).to_numpy()[train]
    image = np.asarray(image_features)[train]  # the held-out rows are gone from here on
    text = np.asarray(text_features)[train]
    val = validation_mask(patients, fraction=selection.validation_fraction,
                          key=selection.validation_key)
    if val.all() or not val.any():
        raise ConfigError(f"dp selection: the validation split of {len(set(patients))} training "
                          f"patients at fraction {selection.validation_fraction} leaves "
                          f"{'no fit' if val.all() else 'no validation'} patients")
    fit = ~val
    trials, results = [], []
    for i, config in enumerate(selection.configs(base)):
        res = train_heads(image[fit], text[fit], patients[fit], image_head=image_head,
                          text_head=text_head, logit_scale=logit_scale, epsilon=epsilon,
                          config=config, pair_ids=pair_ids[fit],
                          public_image_features=public_image_features,
                          public_text_features=public_text_features, progress=progress,
                          loss=loss, logit_bias=logit_bias)
        score = validation_loss(res.image_head, res.text_head, image[val], text[val],
                                patients[val], logit_scale=logit_scale, selection=selection,
                                pair_ids=pair_ids[val], loss=loss, logit_bias=logit_bias)
        log.info("dp selection epsilon=%s candidate %d %s: validation loss %.4f, epsilon %.4g",
                 epsilon, i, selection.candidates[i], score, res.epsilon)
        results.append(res)
        trials.append(dict(candidate=i, params={k: getattr(config, k) for k in sorted(_TUNABLE)},
                           val_loss=score, epsilon=res.epsilon, delta=res.delta,
                           noise_multiplier=res.noise_multiplier, sample_rate=res.sample_rate,
                           steps=res.steps, accountant=res.accountant, seconds=res.seconds,
                           final_loss=res.final_loss))
    scores = [t["val_loss"] for t in trials]
    chosen = min(range(len(scores)), key=lambda k: (not math.isfinite(scores[k]), scores[k], k))
    private = not math.isinf(epsilon)
    if private:
        delta = min(t["delta"] for t in trials)
        composed = compose_epsilon([(t["noise_multiplier"], t["sample_rate"], t["steps"])
                                    for t in trials], delta)
        p_eps, p_delta = accounting.patient_level(
            composed, delta, privacy_unit=base.privacy_unit,
            max_pairs_per_patient=max(r.max_pairs_per_patient for r in results))
    else:
        delta, composed, p_eps, p_delta = None, math.inf, math.inf, None
    return SelectionResult(
        result=results[chosen], chosen=chosen, trials=trials, composed_epsilon=composed,
        composed_delta=delta, composed_patient_epsilon=p_eps, composed_patient_delta=p_delta,
        n_fit_pairs=int(fit.sum()), n_validation_pairs=int(val.sum()),
        n_validation_patients=int(len(set(patients[val]))),
    )
