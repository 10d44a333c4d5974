"""Per-epsilon hyper-parameter selection: validation split, held-out blindness, composed epsilon."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("opacus")

from engine.core.labels import CHEXPERT_LABELS  # noqa: E402
from engine.dp import selection as sel  # noqa: E402
from engine.dp.training import DPConfig  # noqa: E402
from engine.errors import ConfigError  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore:Full backward hook:UserWarning"),
              pytest.mark.filterwarnings("ignore:Secure RNG turned off:UserWarning")]

D_IMG, D_TXT, EMB = 12, 10, 8
SCALE = math.log(20.0)
BASE = DPConfig(epochs=1, group_size=8, batch_size=2, min_steps_per_epoch=1, accountant="rdp")
SMALL = sel.Selection(candidates=({"lr": 1e-3}, {"lr": 2e-2, "epochs": 2},
                                  {"optimizer": "sgd", "lr": 1.0, "group_size": 4}),
                      validation_fraction=0.3, validation_group_size=8)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cohort(n=240, per_patient=3, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 6))
    image = (z @ rng.normal(size=(6, D_IMG)) + 0.3 * rng.normal(size=(n, D_IMG)))
    text = (z @ rng.normal(size=(6, D_TXT)) + 0.3 * rng.normal(size=(n, D_TXT)))
    patients = [f"p{i // per_patient:04d}" for i in range(n)]
    items = pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "patient_id": patients,
                          "split": ["test" if int(p[1:]) % 4 == 0 else "train"
                                    for p in patients]})
    for name in CHEXPERT_LABELS:
        items[name] = rng.choice([1.0, 0.0], size=n)
    return items, image.astype(np.float32), text.astype(np.float32)


def _heads():
    from torch import nn

    torch.manual_seed(0)
    return nn.Linear(D_IMG, EMB, bias=False), nn.Linear(D_TXT, EMB)


def _select(items, image, text, epsilon):
    ih, th = _heads()
    return sel.select_for_split(items, image, text, train_split="train", epsilon=epsilon,
                                base=BASE, selection=SMALL, image_head=ih, text_head=th,
                                logit_scale=SCALE)


def test_validation_split_is_patient_disjoint_keyed_and_stable():
    patients = np.repeat([f"q{i}" for i in range(2000)], 3)
    mask = sel.validation_mask(patients, fraction=0.2)
    by_patient = pd.Series(mask).groupby(patients).nunique()
    assert (by_patient == 1).all()  # a patient is all validation or all fit
    assert 0.17 < mask.mean() < 0.23
    # a function of the patient id and the key only: order and other patients do not matter
    perm = np.random.default_rng(1).permutation(len(patients))
    assert np.array_equal(sel.validation_mask(patients[perm], fraction=0.2), mask[perm])
    assert np.array_equal(sel.validation_mask(patients[:30], fraction=0.2), mask[:30])
    other = sel.validation_mask(patients, fraction=0.2, key="another key")
    assert not np.array_equal(other, mask)


@pytest.mark.parametrize("epsilon", [2.0, math.inf])
def test_selection_never_reads_the_held_out_split(epsilon):
    items, image, text = _cohort()
    clean = _select(items, image, text, epsilon)
    held = (items["split"] == "test").to_numpy()
    assert held.any()
    poisoned_image, poisoned_text = image.copy(), text.copy()
    poisoned_image[held] = np.nan
    poisoned_text[held] = 1e30
    items_poisoned = items.copy()
    items_poisoned.loc[held, CHEXPERT_LABELS] = np.nan
    items_poisoned.loc[held, "image_id"] = "garbage"
    dirty = _select(items_poisoned, poisoned_image, poisoned_text, epsilon)
    assert dirty.chosen == clean.chosen
    assert [t["val_loss"] for t in dirty.trials] == [t["val_loss"] for t in clean.trials]
    for a, b in ((clean.result.image_head, dirty.result.image_head),
                 (clean.result.text_head, dirty.result.text_head)):
        for pa, pb in zip(a.parameters(), b.parameters()):
            assert torch.equal(pa, pb)
    # the choice is the lowest validation loss, and the validation patients were not trained on
    scores = [t["val_loss"] for t in clean.trials]
    assert clean.chosen == int(np.argmin(scores)) and len(set(scores)) == len(scores)
    train_pairs = int((items["split"] == "train").sum())
    assert clean.n_fit_pairs + clean.n_validation_pairs == train_pairs
    assert clean.result.n_pairs == clean.n_fit_pairs


def test_validation_loss_is_the_mean_in_group_loss_of_the_fixed_groups():
    from engine.dp.groups import assign_groups

    items, image, text = _cohort()
    ih, th = _heads()
    val = (items["split"] == "train").to_numpy()
    patients = items["patient_id"][val].tolist()
    args = (image[val], text[val], patients)
    before = sel.validation_loss(ih, th, *args, logit_scale=SCALE, selection=SMALL)
    for head in (ih, th):  # constant embeddings: every logit equal, loss log(m) per group
        torch.nn.init.zeros_(head.weight)
    with torch.no_grad():
        th.bias.fill_(1.0)
    ih2 = torch.nn.Linear(D_IMG, EMB)
    torch.nn.init.zeros_(ih2.weight)
    with torch.no_grad():
        ih2.bias.fill_(1.0)
    flat = sel.validation_loss(ih2, th, *args, logit_scale=SCALE, selection=SMALL)
    groups = assign_groups(patients, capacity=8, fill=SMALL.validation_group_fill,
                           key=SMALL.validation_key + "/groups")
    sizes = groups.mask.sum(axis=1)
    assert flat == pytest.approx(np.log(sizes[sizes >= 2]).mean(), rel=1e-5)
    assert before != pytest.approx(flat)


def test_composed_epsilon_matches_direct_rdp_composition():
    from opacus.accountants.analysis import rdp as rdp_analysis
    from opacus.accountants.rdp import RDPAccountant

    from engine.dp.accounting import epsilon_for

    histories = [(1.1, 0.02, 500), (0.8, 0.05, 120), (2.0, 0.01, 1000)]
    delta = 1e-5
    orders = RDPAccountant.DEFAULT_ALPHAS
    total = sum(np.asarray(rdp_analysis.compute_rdp(q=q, noise_multiplier=s, steps=t,
                                                    orders=orders)) for s, q, t in histories)
    direct, _ = rdp_analysis.get_privacy_spent(orders=orders, rdp=total, delta=delta)
    composed = sel.compose_epsilon(histories, delta)
    assert composed == pytest.approx(float(direct), rel=1e-12)
    singles = [epsilon_for(s, q, t, delta, "rdp") for s, q, t in histories]
    assert max(singles) < composed < sum(singles)  # more than any run, tighter than the sum
    assert sel.compose_epsilon([(0.0, 0.1, 10), (1.0, 0.1, 10)], delta) == math.inf


def test_selection_result_accounts_every_candidate():
    items, image, text = _cohort()
    picked = _select(items, image, text, 2.0)
    assert len(picked.trials) == len(SMALL.candidates)
    direct = sel.compose_epsilon([(t["noise_multiplier"], t["sample_rate"], t["steps"])
                                  for t in picked.trials], picked.composed_delta)
    assert picked.composed_epsilon == pytest.approx(direct)
    assert picked.composed_epsilon > max(t["epsilon"] for t in picked.trials)
    assert picked.composed_patient_epsilon == pytest.approx(2 * picked.composed_epsilon)
    rows = picked.rows()
    assert [r["chosen"] for r in rows].count(True) == 1
    assert {r["group_size"] for r in rows} == {8, 4} and {r["optimizer"] for r in rows} == {
        "adam", "sgd"}


def test_selection_options_fail_with_one_clear_line():
    with pytest.raises(ConfigError, match="cannot be tuned"):
        sel.Selection(candidates=({"seed": 3},))
    with pytest.raises(ConfigError, match="validation_fraction"):
        sel.Selection(validation_fraction=1.5)
    with pytest.raises(ConfigError, match="optimizer"):
        sel.Selection(candidates=({"optimizer": "lbfgs"},)).configs(BASE)


def test_run_dp_with_selection_stores_candidates_and_composed_epsilon(tmp_path):
    from engine import store
    from engine.dp import stage

    items, image, text = _cohort()
    ih, th = _heads()
    sweep = stage.DPSweep(epsilons=(2.0,), training=BASE, selection=SMALL)
    kwargs = dict(model="m", cohort="c", items=items, image_features=image, text_features=text,
                  image_head=ih, text_head=th, logit_scale=SCALE, heads_dir=tmp_path / "heads")
    db = tmp_path / "r.duckdb"
    first = stage.run_dp(db, sweep=sweep, **kwargs)
    con = store.connect_read(db)
    rows = con.execute("SELECT heads, candidate, chosen, val_loss, epsilon, composed_epsilon "
                       "FROM shown_dp_selection ORDER BY heads, candidate").df()
    dp = con.execute("SELECT heads, epsilon, selection_epsilon, selection_chosen, "
                     "n_fit_pairs, n_validation_pairs FROM shown_dp_runs ORDER BY heads").df()
    config = con.execute("SELECT config_json FROM runs WHERE run_id = ?",
                         [first.run_id]).fetchall()[0][0]
    con.close()
    assert len(rows) == 2 * len(SMALL.candidates)
    assert rows.groupby("heads")["chosen"].sum().to_dict() == {"2": 1, "inf": 1}
    two = dp.set_index("heads").loc["2"]
    assert two["selection_epsilon"] > two["epsilon"]
    chosen = rows[(rows["heads"] == "2") & rows["chosen"]].iloc[0]
    assert chosen["candidate"] == two["selection_chosen"]
    assert chosen["val_loss"] == rows[rows["heads"] == "2"]["val_loss"].min()
    assert two["n_fit_pairs"] + two["n_validation_pairs"] == int((items["split"] == "train").sum())
    assert '"selection"' in config and '"candidates"' in config
    again = stage.run_dp(db, sweep=sweep, **kwargs)  # reused, rows kept
    assert again.reused and again.run_id == first.run_id


# --- the decomposition of the drop (engine/core/decompose.py), on hand-made numbers -----------

def _metric_rows(recalls: dict, pools=(100, 10000, 20000), cohort_suffix=""):
    rows = []
    for heads, by_pool in recalls.items():
        for pool, recall in zip(pools, by_pool):
            rows.append(dict(heads=heads + (cohort_suffix if heads != "original" else ""),
                             split="test", direction="image_to_report", negatives="random",
                             pool_size=pool, k=1, recall=recall, ci_low=recall - 0.01,
                             ci_high=recall + 0.01, chance=1 / pool, lift=recall * pool))
    # rows that must be ignored: matched negatives, members, k = 5
    rows.append({**rows[0], "negatives": "matched", "recall": 0.99})
    rows.append({**rows[0], "split": "train", "recall": 0.99})
    rows.append({**rows[0], "k": 5, "recall": 0.99})
    return pd.DataFrame(rows)


def test_decomposition_on_hand_made_numbers():
    from engine.core import decompose as dec

    metrics = _metric_rows({"original": (0.50, 0.20, 0.10), "inf": (0.45, 0.15, 0.08),
                            "0.34": (0.40, 0.05, 0.02), "8": (0.44, 0.14, 0.07)})
    membership = pd.DataFrame({"heads": ["original", "inf", "0.34"], "auroc": [0.6, 0.58, 0.51],
                               "tpr_at_fpr": [0.05, 0.04, 0.011], "fpr": [0.01] * 3})
    utility = pd.DataFrame({"heads": ["backbone", "original", "inf", "0.34", "0.34"],
                            "label": ["macro", "macro", "macro", "macro", "Edema"],
                            "auroc": [0.80, 0.7963, 0.7950, 0.7943, 0.1]})
    out = dec.decompose(metrics, membership=membership, utility=utility)
    assert list(out.columns) == dec.COLUMNS
    assert out[out["pool"] == "full"]["pool_size"].unique().tolist() == [20000]
    assert out[out["pool"] == "100"]["heads"].tolist() == ["original", "inf", "8", "0.34"]
    r = out[(out["heads"] == "0.34") & (out["pool"] == "10,000")].iloc[0]
    assert r["drop_vs_original"] == pytest.approx(75.0)  # (0.20 - 0.05) / 0.20
    assert r["retraining_points"] == pytest.approx(25.0)  # (0.20 - 0.15) / 0.20
    assert r["privacy_points"] == pytest.approx(50.0)  # (0.15 - 0.05) / 0.20
    assert r["drop_vs_inf"] == pytest.approx(100 * 0.10 / 0.15)
    assert r["drop_low"] == pytest.approx(70.0) and r["drop_high"] == pytest.approx(80.0)
    assert r["lift"] == pytest.approx(500.0) and r["lift_low"] == pytest.approx(400.0)
    assert r["membership_auroc"] == 0.51 and r["membership_tpr"] == 0.011
    assert r["macro_auroc"] == 0.7943 and r["backbone_auroc"] == 0.80
    assert r["macro_change_vs_original"] == pytest.approx(-0.20)
    inf = out[(out["heads"] == "inf") & (out["pool"] == "10,000")].iloc[0]
    assert inf["privacy_points"] == pytest.approx(0.0) and math.isnan(inf["drop_vs_inf"])
    orig = out[(out["heads"] == "original") & (out["pool"] == "full")].iloc[0]
    assert math.isnan(orig["drop_vs_original"]) and orig["recall"] == 0.10
    s = dec.drop_sentence(out, "0.34", 10000)
    assert s.startswith("Recall@1 at N = 10,000, DP heads, ε = 0.34 against the original heads: "
                        "−75% (95% CI −80% to −70%) (the heads' own interval); in points of the "
                        "original Recall@1, retraining (ε = ∞ vs original) −25.0 points, privacy "
                        "(ε = 0.34 vs ε = ∞) −50.0 points. ε = 0.34 covers")
    assert "does not cover the frozen backbones" in s
    assert dec.sentences(out) == [s]
    # a rise: said as such
    up = dec.decompose(_metric_rows({"original": (0.5, 0.2, 0.1), "inf": (0.6, 0.3, 0.2),
                                     "1": (0.55, 0.25, 0.15)}))
    assert dec.drop_sentence(up, "1", None).startswith(
        "Recall@1 at N = 20,000 (the whole held-out set), DP heads, ε = 1 against the original "
        "heads: +50% (95% CI +40% to +60%)")
    assert dec.drop_sentence(up, "2", 100) is None


def test_decomposition_of_transferred_heads():
    from engine.core import decompose as dec

    metrics = _metric_rows({"original": (0.30, 0.10, 0.05), "inf": (0.27, 0.09, 0.04),
                            "1": (0.24, 0.06, 0.03)}, pools=(100, 1000, 1500),
                           cohort_suffix="@site-a")
    own = _metric_rows({"inf": (0.9, 0.9, 0.9)}, pools=(100, 1000, 1500))  # not transferred
    both = pd.concat([metrics, own[own["k"] == 1].iloc[:3]])
    out = dec.decompose(both, source="site-a", pools=(100, None))
    assert set(out["heads"]) == {"original", "inf", "1"}
    r = out[(out["heads"] == "1") & (out["pool"] == "full")].iloc[0]
    assert r["pool_size"] == 1500 and r["recall"] == 0.03
    assert r["retraining_points"] == pytest.approx(20.0)
    assert r["privacy_points"] == pytest.approx(20.0)
    assert math.isnan(r["membership_auroc"])
    assert dec.decompose(pd.DataFrame()).empty


def test_privacy_page_shows_the_decomposition_and_the_selection(seeded, tmp_path, monkeypatch):
    import shutil

    from streamlit.testing.v1 import AppTest

    from engine import store

    db = tmp_path / "copy.duckdb"
    shutil.copy(seeded.db, db)
    with store.connect_write(db) as con:
        run_id, model, cohort = con.execute(
            "SELECT run_id, model, cohort FROM shown_dp_runs WHERE heads = '1'").fetchall()[0]
        rows = pd.DataFrame([dict(run_id=run_id, model=model, cohort=cohort, heads="1",
                                  target_epsilon=1.0, candidate=c, chosen=c == 1,
                                  optimizer="adam", lr=lr, epochs=5, batch_size=64,
                                  max_grad_norm=1.0, group_size=32, val_loss=loss, epsilon=0.99,
                                  composed_epsilon=1.7, composed_patient_epsilon=3.4)
                             for c, (lr, loss) in enumerate([(1e-3, 2.1), (3e-3, 1.9)])])
        store.replace_rows(con, "dp_selection", rows, run_id=run_id)
    monkeypatch.setenv("RELINK_DB", str(db))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py"),
                           default_timeout=60).run()
    at = at.switch_page("app_pages/privacy.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "How much of the drop is privacy" in [h.value for h in at.subheader]
    text = "\n".join(m.value for m in at.markdown)
    assert "retraining (ε = ∞ vs original)" in text and "privacy (ε = 1 vs ε = ∞)" in text
    assert "Hyper-parameter selection" in [h.value for h in at.subheader]
    frames = [f.value for f in at.dataframe]
    sel_frame = next(f for f in frames if "val_loss" in f.columns)
    assert sel_frame["chosen"].tolist() == [False, True]
    parts = next(f for f in frames if "privacy_points" in f.columns)
    assert {"original", "inf", "1"} <= set(parts["heads"])
