"""Where DP training of the heads starts (engine/dp/start.py) and what its epsilon covers."""

import math

import numpy as np
import pytest
import torch
from paired_fixtures import D_IMG, D_TXT, EMB, paired_features
from torch import nn

from engine.core.decision import split_label
from engine.dp import stage
from engine.dp.start import Start, coverage, random_heads
from engine.dp.training import DPConfig
from engine.errors import ConfigError

SCALE = math.log(20.0)
FAST = DPConfig(epochs=1, group_size=8, accountant="rdp", batch_size=1, min_steps_per_epoch=1)


def _heads(seed=0, mlp=False):
    torch.manual_seed(seed)
    image = (nn.Sequential(nn.Linear(D_IMG, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, EMB))
             if mlp else nn.Linear(D_IMG, EMB, bias=False))
    return image, nn.Linear(D_TXT, EMB)


def _cohort(n=120, seed=0, prefix="p"):
    return paired_features(n, seed=seed, prefix=prefix, per_patient=3,
                           held_out=lambda i: i % 4 == 0)


def _state(head):
    return torch.cat([v.reshape(-1) for v in head.state_dict().values()])


@pytest.mark.parametrize("mlp", [False, True])
def test_random_start_depends_on_seed_and_shapes_only(mlp):
    a_img, a_txt = _heads(seed=1, mlp=mlp)  # two different trained models of the same shapes
    b_img, b_txt = _heads(seed=2, mlp=mlp)
    with torch.no_grad():
        b_img.apply(lambda m: m.weight.add_(1.0) if isinstance(m, nn.Linear) else None)
    ra = random_heads(a_img, a_txt, seed=0)
    rb = random_heads(b_img, b_txt, seed=0)
    assert torch.equal(_state(ra[0]), _state(rb[0])) and torch.equal(_state(ra[1]), _state(rb[1]))
    assert not torch.equal(_state(ra[0]), _state(a_img))  # not the model's heads
    other = random_heads(a_img, a_txt, seed=1)
    assert not torch.equal(_state(other[0]), _state(ra[0]))
    # the caller's RNG is left alone, the given heads are not modified
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    random_heads(a_img, a_txt, seed=0)
    assert torch.equal(torch.rand(3), before)


def test_random_start_is_identical_for_two_training_sets(tmp_path):
    """Two different private cohorts, same seed: the same starting heads (nothing is read)."""
    captured = []
    real = stage.random_heads

    def spy(image_head, text_head, seed):
        out = real(image_head, text_head, seed)
        captured.append(torch.cat([_state(out[0]), _state(out[1])]))
        return out

    ih, th = _heads()
    for k, seed in enumerate((0, 7)):
        items, image, text = _cohort(seed=seed)
        stage.random_heads = spy
        try:
            stage.run_dp(tmp_path / f"r{k}.duckdb", model="m", cohort="c", items=items,
                         image_features=image, text_features=text, image_head=ih, text_head=th,
                         logit_scale=SCALE, heads_dir=tmp_path / f"h{k}",
                         sweep=stage.DPSweep(epsilons=(math.inf,), training=FAST))
        finally:
            stage.random_heads = real
    assert len(captured) == 2 and torch.equal(captured[0], captured[1])


def test_starts_never_share_an_identity_folder_or_row(tmp_path):
    from engine import store

    items, image, text = _cohort()
    ih, th = _heads()
    db = tmp_path / "r.duckdb"
    kwargs = dict(model="m", cohort="c", items=items, image_features=image, text_features=text,
                  image_head=ih, text_head=th, logit_scale=SCALE, heads_dir=tmp_path / "heads")
    runs = {}
    for start in ("random", "original"):
        runs[start] = stage.run_dp(db, sweep=stage.DPSweep(
            epsilons=(2.0,), training=FAST, start=Start(start)), **kwargs)
    assert set(runs["random"].heads) == {"2", "inf"}
    assert set(runs["original"].heads) == {"2+original", "inf+original"}
    assert runs["random"].run_id != runs["original"].run_id
    folders = [*runs["random"].heads.values(), *runs["original"].heads.values()]
    assert len(set(folders)) == 4
    con = store.connect_read(db)
    dp = con.execute("SELECT heads, start, covers_start, heads_id FROM shown_dp_runs "
                     "ORDER BY heads").fetchall()
    heads = con.execute("SELECT heads, start FROM heads ORDER BY heads").fetchall()
    con.close()
    assert [(h, s, c) for h, s, c, _ in dp] == [
        ("2", "random", True), ("2+original", "original", False), ("inf", "random", True),
        ("inf+original", "original", False)]
    assert len({i for *_, i in dp}) == 4
    assert heads == [("2", "random"), ("2+original", "original"), ("inf", "random"),
                     ("inf+original", "original")]
    # the original start trains from the model's heads: without noise, one epoch stays closer
    # to them than the random start does
    from engine.heads import load_heads

    dist = {s: float((load_heads(runs[s].heads[f"inf{'' if s == 'random' else '+original'}"])
                      .text.weight - th.weight).norm().detach()) for s in runs}
    assert dist["original"] < dist["random"]


def test_public_start_refuses_a_cohort_sharing_a_patient(tmp_path):
    items, image, text = _cohort()
    pub_items, pub_image, pub_text = _cohort(n=60, seed=3, prefix="q")
    ih, th = _heads()
    kwargs = dict(model="m", cohort="c", items=items, image_features=image, text_features=text,
                  image_head=ih, text_head=th, logit_scale=SCALE, heads_dir=tmp_path / "heads")
    sweep = stage.DPSweep(epsilons=(2.0,), training=FAST, start=Start.parse("public:ext"))
    shared = pub_items["patient_id"].tolist()
    shared[5] = items["patient_id"].iloc[0]
    with pytest.raises(ConfigError, match=r"public:ext: 1 patient\(s\) of 'ext' are also in 'c'"):
        stage.run_dp(tmp_path / "r.duckdb", sweep=sweep,
                     public_start=(pub_image, pub_text, np.array(shared), None), **kwargs)
    ok = stage.run_dp(tmp_path / "r.duckdb", sweep=sweep, public_start=(
        pub_image, pub_text, pub_items["patient_id"].to_numpy(), None), **kwargs)
    assert set(ok.heads) == {"2+public-ext", "inf+public-ext"}
    assert ok.dp_rows["2+public-ext"]["start"] == "public:ext"


def test_labels_and_coverage():
    assert split_label("0.34") == ("0.34", "random")
    assert split_label("0.34+original") == ("0.34", "original")
    assert split_label("inf+public-site-b") == ("inf", "public:site-b")
    assert split_label("original") == ("original", None)
    assert split_label("adaptive+known-1pct") == ("adaptive", "known-1pct")
    assert Start.parse("public:site-b").label("1") == "1+public-site-b"
    assert coverage("original")["caveat"].startswith("epsilon does not cover the starting heads")
    assert coverage("random")["caveat"] is None
    assert "frozen" in coverage("random")["not_covered"]
    with pytest.raises(ConfigError, match="--start 'warm'"):
        Start.parse("warm")
    with pytest.raises(ConfigError, match="needs a cohort"):
        Start.parse("public:")


def test_version_2_databases_relabel_their_dp_heads_as_original_start(tmp_path):
    """Older engines started every DP sweep from the model's heads: a migrated file says so."""
    from engine import store

    db = tmp_path / "old.duckdb"
    with store.connect_write(db) as con:
        _old_rows(con)
    with store.connect_write(db) as con:
        con.execute("DELETE FROM schema_version")
        con.execute("INSERT INTO schema_version (version) VALUES (2)")
        con.execute("DELETE FROM schema_views")
    with store.connect_write(db) as con:
        dp = con.execute("SELECT heads, start FROM dp_runs ORDER BY heads").fetchall()
        util = con.execute("SELECT heads FROM utility ORDER BY heads").fetchall()
    assert dp == [("0.34+original", "original"), ("inf+original", "original")]
    assert util == [("0.34+original",), ("original",)]


def _old_rows(con):
    con.execute("INSERT INTO dp_runs (run_id, model, cohort, heads, heads_cohort) VALUES "
                "('dp-1', 'm', 'c', '0.34', 'c'), ('dp-1', 'm', 'c', 'inf', 'c')")
    con.execute("INSERT INTO utility (run_id, model, cohort, heads, heads_cohort, label) VALUES "
                "('dp-1', 'm', 'c', 'original', NULL, 'macro'), "
                "('dp-1', 'm', 'c', '0.34', 'c', 'macro')")
