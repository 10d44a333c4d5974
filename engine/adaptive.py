"""The attacker who adapts: heads refitted on the released frozen backbones (docs/adaptive.md).

A heads-only mitigation releases the frozen image and text backbones with the new heads. An
attacker who holds paired data of their own can fit heads on those backbones, without any
privacy, and re-link with them instead of the released heads. This stage measures two such
attackers on the target cohort's held-out pairs:

* **public**: heads fitted on every pair of a named cohort whose patients are disjoint from the
  target's (another hospital's release, a public cohort); refused with one line when a patient
  id occurs in both. Evaluated on all of the target's held-out pairs.
* **known**: heads fitted on a fraction of the target's own held-out pairs that the attacker
  already knows (a leak). The known pairs are whole patients chosen by a keyed hash of the
  patient id (`known_mask`), never by features or labels, and the attack is evaluated on the
  *other* held-out patients only: the attacker's heads never see a pair they are scored on.

Every attacker fits through the engine's own heads training (`engine.dp.training.train_heads` at
epsilon = inf, from seeded random heads, `engine.dp.start.random_heads`): no second training
loop. Its attack is the ordinary attack (`engine.attack.stage.run_attack`: Recall@k, lift, both
directions, random and matched negatives, N up to the full set), stored under its own heads label
(``adaptive+public-<cohort>``, ``adaptive+known-1pct``), never under a released heads' label, with
one ``adaptive_runs`` row per attacker (source, fraction, seed, epochs, pairs, time) and its own
``runs`` record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from engine.dp.training import DPConfig
from engine.errors import ConfigError

log = logging.getLogger(__name__)

PREFIX = "adaptive"
KNOWN_KEY = "relink-audit/adaptive-known/v1"

# The attacker's schedule: non-private Adam from random heads, long enough to converge on a few
# thousand pairs (the attacker has no privacy budget to respect and no reason to stop early).
ATTACKER_TRAINING = DPConfig(optimizer="adam", lr=3e-3, epochs=20)


@dataclass(frozen=True)
class AdaptiveConfig:
    """Which attackers to fit.

    Attributes:
        public: Public cohorts (registered and embedded with the same model) to fit heads on.
        known_fractions: Fractions of the target's held-out patients taken as known pairs.
        seed: Seed of the attacker's random starting heads and of the training.
        training: The attacker's (non-private) schedule.
        eval_split: The target's split attacked (its held-out pairs).
    """

    public: tuple[str, ...] = ()
    known_fractions: tuple[float, ...] = (0.01, 0.05)
    seed: int = 0
    training: DPConfig = field(default_factory=lambda: ATTACKER_TRAINING)
    eval_split: str = "test"

    def __post_init__(self) -> None:
        for f in self.known_fractions:
            if not (isinstance(f, (int, float)) and 0.0 < f < 1.0):
                raise ConfigError(f"--known {f!r}: a fraction of the held-out pairs in (0, 1)")


def known_label(fraction: float) -> str:
    """``adaptive+known-1pct`` (fractions below 1% keep their decimals: ``known-0.5pct``)."""
    pct = fraction * 100
    return f"{PREFIX}+known-{pct:g}pct"


def public_label(cohort: str) -> str:
    return f"{PREFIX}+public-{cohort}"


def is_adaptive(label: str) -> bool:
    """True for an adaptive attacker's heads label: never a released set of heads."""
    return str(label).startswith(PREFIX + "+")


def known_mask(patient_ids, fraction: float, *, key: str = KNOWN_KEY) -> np.ndarray:
    """Pairs whose patient's keyed hash falls below `fraction`: a data-independent leak."""
    def unit(pid: str) -> float:
        digest = hashlib.blake2b(str(pid).encode(), key=key.encode()[:64], digest_size=8)
        return int.from_bytes(digest.digest(), "little") / 2**64

    return np.array([unit(p) < fraction for p in patient_ids], dtype=bool)


@dataclass
class Attacker:
    """One adaptive attacker's outcome."""

    label: str
    source: str
    public_cohort: str | None
    known_fraction: float | None
    n_fit_pairs: int
    n_eval_pairs: int
    seconds: float
    attack_run_id: str
    reused: bool


def fit_heads(image_features, text_features, patient_ids, *, image_head, text_head,
              logit_scale: float, config: AdaptiveConfig, loss: str = "infonce",
              logit_bias: float | None = None):
    """The attacker's heads: random start, no privacy, the engine's own training loop with the
    model family's own loss (InfoNCE for CLIP, the sigmoid loss with the model's bias for
    SigLIP), as the DP stage trains them."""
    from engine.dp.start import random_heads
    from engine.dp.training import train_heads

    start_image, start_text = random_heads(image_head, text_head, config.seed)
    training = DPConfig(**{**asdict(config.training), "seed": config.seed})
    result = train_heads(np.asarray(image_features, dtype=np.float32),
                         np.asarray(text_features, dtype=np.float32),
                         [str(p) for p in patient_ids], image_head=start_image,
                         text_head=start_text, logit_scale=logit_scale, epsilon=math.inf,
                         config=training, loss=loss, logit_bias=logit_bias)
    return result.image_head, result.text_head


def run_adaptive(db, target, *, public: dict | None = None,
                 config: AdaptiveConfig = AdaptiveConfig(), attack_config=None,
                 echo=None) -> list[Attacker]:
    """Fit every attacker of `config` and attack the target's held-out pairs with their heads.

    Args:
        db: The results database.
        target: `engine.audit.AuditInputs` of the audited model on the target cohort.
        public: Public cohort name -> its `AuditInputs` (same model), for ``config.public``.
        config: The attackers.
        attack_config: `engine.attack.stage.AttackConfig` (its splits are set to the held-out
            split only).
        echo: Optional callable for one progress line per attacker.

    Returns:
        One `Attacker` per fitted attacker.
    """
    from dataclasses import replace

    from engine import store
    from engine.attack.stage import AttackConfig, run_attack
    from engine.dp.start import check_disjoint
    from engine.heads import family_loss, project, state_fingerprint, trained_heads_id
    from engine.numerics import training_threads
    from engine.runs import Run

    attack_config = replace(attack_config or AttackConfig(), splits=(config.eval_split,))
    emb = target.embeddings
    heads = emb.heads
    loss = family_loss(getattr(emb, "manifest", None) or {}, heads.logit_bias)
    items = target.items
    held = (items["split"] == config.eval_split).to_numpy()
    if held.sum() < 2:
        raise ConfigError(f"adaptive attack: cohort {target.cohort!r} has {int(held.sum())} "
                          f"{config.eval_split!r} pairs")
    image_f = np.asarray(emb.image_features, dtype=np.float32)
    text_f = np.asarray(emb.text_features, dtype=np.float32)
    patients = items["patient_id"].astype(str).to_numpy()
    plans = []  # (label, source, public cohort, fraction, fit rows / arrays, eval mask)
    for name in config.public:
        if public is None or name not in public:
            raise ConfigError(f"--public {name}: embed that cohort with {target.model} first")
        if name == target.cohort:
            raise ConfigError(f"--public {name}: the public cohort must not be the target")
        pub = public[name]
        check_disjoint(patients, pub.items["patient_id"], private=target.cohort, public=name)
        plans.append((public_label(name), "public", name, None,
                      (np.asarray(pub.embeddings.image_features, dtype=np.float32),
                       np.asarray(pub.embeddings.text_features, dtype=np.float32),
                       pub.items["patient_id"].astype(str).to_numpy()), held))
    for fraction in config.known_fractions:
        known = held & known_mask(patients, fraction)
        if not known.any():
            log.warning("adaptive: %g of %d held-out pairs is no patient; skipped", fraction,
                        int(held.sum()))
            continue
        # only the known rows are read for fitting; the evaluated rows are the other held-out
        plans.append((known_label(fraction), "known", None, float(fraction),
                      (image_f[known], text_f[known], patients[known]), held & ~known))

    out = []
    for label, source, pub_name, fraction, (fit_img, fit_txt, fit_pat), eval_mask in plans:
        started = time.perf_counter()
        with training_threads():
            img_head, txt_head = fit_heads(fit_img, fit_txt, fit_pat, image_head=heads.image,
                                           text_head=heads.text, logit_scale=heads.logit_scale,
                                           config=config, loss=loss,
                                           logit_bias=heads.logit_bias)
        fit_seconds = time.perf_counter() - started
        fp = state_fingerprint(img_head, txt_head)
        heads_id = trained_heads_id(label, target.cohort, fp)
        eval_items = items.loc[eval_mask].reset_index(drop=True)
        image_emb = project(image_f[eval_mask], img_head)
        text_emb = project(text_f[eval_mask], txt_head)
        provenance = {"adaptive": {"source": source, "public_cohort": pub_name,
                                   "known_fraction": fraction, "seed": config.seed,
                                   "training": asdict(config.training)}}
        attack_run, reused = run_attack(
            db, model=target.model, cohort=target.cohort, items=eval_items,
            image_embeddings=image_emb, text_embeddings=text_emb, heads=label,
            heads_cohort=target.cohort, heads_id=heads_id, provenance=provenance,
            cohort_fingerprint=target.cohort_fingerprint,
            source_fingerprint=target.cohort_fingerprint, config=attack_config)
        seconds = time.perf_counter() - started
        row = dict(model=target.model, cohort=target.cohort, heads=label, heads_id=heads_id,
                   source=source, public_cohort=pub_name, known_fraction=fraction,
                   n_fit_pairs=int(len(fit_pat)), n_eval_pairs=int(eval_mask.sum()),
                   seed=config.seed, epochs=config.training.epochs, fit_seconds=fit_seconds,
                   seconds=seconds, attack_run_id=attack_run)
        run = Run("adaptive", target.model, target.cohort,
                  {k: row[k] for k in ("heads", "source", "public_cohort", "known_fraction",
                                       "seed", "epochs")} | {"attack_run_id": attack_run},
                  heads=label, heads_cohort=target.cohort,
                  cohort_fingerprint=target.cohort_fingerprint)
        with store.connect_write(db) as con, store.transaction(con):
            store.replace_rows(con, "adaptive_runs",
                               pd.DataFrame([{"run_id": run.run_id, **row}]),
                               model=target.model, cohort=target.cohort, heads=label)
            run.record(con, status="done", n_rows=1, message=json.dumps(
                {"fit_seconds": round(fit_seconds, 2)}))
        out.append(Attacker(label, source, pub_name, fraction, int(len(fit_pat)),
                            int(eval_mask.sum()), seconds, attack_run, reused))
        if echo is not None:
            echo(f"  {label}: fitted on {len(fit_pat)} pairs in {fit_seconds:.1f} s, attacked "
                 f"{int(eval_mask.sum())} held-out pairs")
    return out
