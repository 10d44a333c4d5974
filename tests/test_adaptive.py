"""The attacker who refits the heads on the released backbones (engine/adaptive.py)."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from paired_fixtures import D_IMG, D_TXT, EMB, paired_features
from torch import nn

from engine import store
from engine.adaptive import AdaptiveConfig, is_adaptive, known_label, known_mask, run_adaptive
from engine.attack.stage import AttackConfig
from engine.dp.training import DPConfig
from engine.errors import ConfigError
from engine.heads import Heads

FAST = AdaptiveConfig(known_fractions=(0.25,), training=DPConfig(
    epochs=2, group_size=8, batch_size=4, min_steps_per_epoch=2, lr=3e-3))
ATTACK = AttackConfig(pool_sizes=(10,), n_boot=20, top_k=3)


def _inputs(n=160, seed=0, prefix="p", cohort="target"):
    items, image, text = paired_features(n, seed=seed, prefix=prefix)
    torch.manual_seed(seed)
    heads = Heads(nn.Linear(D_IMG, EMB), nn.Linear(D_TXT, EMB), math.log(20.0), None, {})
    emb = SimpleNamespace(image_features=image, text_features=text, heads=heads)
    return SimpleNamespace(model="m", cohort=cohort, items=items, embeddings=emb,
                           cohort_fingerprint=None, original_heads_id=None)


def _stored(db):
    with store.connect_write(db) as con:
        return con.execute("SELECT heads, heads_id, source, n_fit_pairs, n_eval_pairs "
                           "FROM adaptive_runs ORDER BY heads").fetchall()


def test_the_attackers_heads_never_see_the_pairs_they_are_scored_on(tmp_path):
    target = _inputs()
    first = run_adaptive(tmp_path / "a.duckdb", target, config=FAST, attack_config=ATTACK)
    assert [a.label for a in first] == [known_label(0.25)] == ["adaptive+known-25pct"]
    held = (target.items["split"] == "test").to_numpy()
    known = held & known_mask(target.items["patient_id"], 0.25)
    evaluated = held & ~known
    assert known.any() and evaluated.any() and first[0].n_eval_pairs == evaluated.sum()
    # the known pairs are whole patients: no patient is both fitted on and scored
    assert not (set(target.items["patient_id"][known])
                & set(target.items["patient_id"][evaluated]))
    # poison every pair the attacker is scored on (and the training split): same fitted heads
    poisoned = _inputs()
    rng = np.random.default_rng(9)
    for name in ("image_features", "text_features"):
        arr = getattr(poisoned.embeddings, name)
        arr[~known] = rng.normal(size=arr[~known].shape) * 50
    second = run_adaptive(tmp_path / "b.duckdb", poisoned, config=FAST, attack_config=ATTACK)
    a, b = _stored(tmp_path / "a.duckdb"), _stored(tmp_path / "b.duckdb")
    assert a[0][1] == b[0][1]  # heads id: a fingerprint of the fitted weights
    # ...while poisoning a known pair changes them
    third = _inputs()
    third.embeddings.image_features[np.flatnonzero(known)[0]] += 5.0
    run_adaptive(tmp_path / "c.duckdb", third, config=FAST, attack_config=ATTACK)
    assert _stored(tmp_path / "c.duckdb")[0][1] != a[0][1]
    assert second[0].n_fit_pairs == int(known.sum())


def test_public_attacker_refuses_a_cohort_sharing_a_patient_and_is_stored_apart(tmp_path):
    target = _inputs()
    public = _inputs(n=80, seed=4, prefix="q", cohort="pub")
    shared = _inputs(n=80, seed=4, prefix="q", cohort="pub")
    shared.items.loc[3, "patient_id"] = target.items["patient_id"].iloc[0]
    config = AdaptiveConfig(public=("pub",), known_fractions=(), training=FAST.training)
    with pytest.raises(ConfigError, match="patient"):
        run_adaptive(tmp_path / "x.duckdb", target, public={"pub": shared}, config=config,
                     attack_config=ATTACK)
    db = tmp_path / "r.duckdb"
    found = run_adaptive(db, target, public={"pub": public}, config=config,
                         attack_config=ATTACK)
    assert [a.label for a in found] == ["adaptive+public-pub"] and found[0].n_fit_pairs == 80
    assert found[0].n_eval_pairs == int((target.items["split"] == "test").sum())
    with store.connect_write(db) as con:
        heads = {h for (h,) in con.execute("SELECT DISTINCT heads FROM relink_metrics")
                 .fetchall()}
        splits = {s for (s,) in con.execute("SELECT DISTINCT split FROM relink_metrics")
                  .fetchall()}
        dp = con.execute("SELECT count(*) FROM shown_dp_runs").fetchall()[0][0]
    assert heads == {"adaptive+public-pub"} and splits == {"test"}
    # never a released set of heads: not a DP row, so transfer and the maps never list it
    assert dp == 0 and all(is_adaptive(h) for h in heads)
    from engine.heads import list_trained

    assert list_trained(db, "m", "target") == {}


def test_known_fractions_are_checked():
    with pytest.raises(ConfigError, match="--known 1.5"):
        AdaptiveConfig(known_fractions=(1.5,))


@pytest.mark.parametrize("bias, loss", [(None, "infonce"), (-10.0, "sigmoid")])
def test_the_attacker_refits_with_the_model_familys_loss(tmp_path, monkeypatch, bias, loss):
    """A SigLIP model's attacker trains with the sigmoid loss and the model's bias, as the DP
    stage does; a CLIP model's with InfoNCE."""
    from engine.dp import training

    seen = []
    real = training.train_heads

    def spy(*args, **kwargs):
        seen.append((kwargs["loss"], kwargs["logit_bias"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train_heads", spy)
    target = _inputs()
    old = target.embeddings.heads
    target.embeddings.heads = Heads(old.image, old.text, old.logit_scale, bias, {})
    run_adaptive(tmp_path / "a.duckdb", target, config=FAST, attack_config=ATTACK)
    assert seen == [(loss, bias)]
