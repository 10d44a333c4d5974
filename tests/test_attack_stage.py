"""The attack stage end to end on synthetic embeddings: rows, exclusions, idempotence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine import store
from engine.attack.stage import AttackConfig, label_keys, run_attack
from engine.core import pools
from engine.core.labels import CHEXPERT_LABELS


def _items_and_embeddings(n=240, d=24, seed=0):
    rng = np.random.default_rng(seed)
    items = pd.DataFrame({
        "image_id": [f"img{i:04d}" for i in range(n)],
        "study_id": [f"s{i:04d}" for i in range(n)],
        "patient_id": [f"p{i // 3:03d}" for i in range(n)],
        "split": np.where(np.arange(n) // 3 % 4 == 0, "test", "train"),
    })
    labels = rng.choice([np.nan, 0.0, 1.0, -1.0], p=[0.7, 0.1, 0.15, 0.05], size=(n, 14))
    labels[:, :10] = np.nan  # keep the number of distinct label vectors small
    for j, name in enumerate(CHEXPERT_LABELS):
        items[name] = labels[:, j]
    text = rng.normal(size=(n, d))
    image = text + rng.normal(scale=1.0, size=(n, d))
    norm = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return items, norm(image), norm(text)


@pytest.fixture()
def attacked(tmp_path):
    items, img, txt = _items_and_embeddings()
    db = tmp_path / "r.duckdb"
    config = AttackConfig(pool_sizes=(10, 50, 1000), n_boot=200)
    run_id, reused = run_attack(db, model="m", cohort="c", items=items, image_embeddings=img,
                                text_embeddings=txt, config=config)
    assert not reused
    return db, items, img, txt, config, run_id


def test_metrics_rows_cover_sizes_directions_and_splits(attacked):
    db, items, *_ = attacked
    m = store.read_df(db, "SELECT * FROM relink_metrics")
    n_test = int((items["split"] == "test").sum())
    n_train = int((items["split"] == "train").sum())
    assert set(m["direction"]) == {"image_to_report", "report_to_image"}
    assert set(m["split"]) == {"test", "train"}
    test_sizes = set(m.query("split == 'test' and negatives == 'random'")["pool_size"])
    assert test_sizes == {10, 50, n_test}  # 1000 > split size: skipped; full database added
    assert n_train in set(m.query("split == 'train'")["pool_size"])
    assert set(m["k"]) == {1, 5, 10}
    row = m.query("split=='test' and negatives=='random' and pool_size==50 and k==1 "
                  "and direction=='image_to_report'").iloc[0]
    assert row["chance"] == pytest.approx(1 / 50)
    assert row["lift"] == pytest.approx(row["recall"] * 50)
    assert row["ci_low"] <= row["recall"] <= row["ci_high"]


def test_full_database_recall_equals_recall_from_stored_ranks(attacked):
    db, items, *_ = attacked
    ranks = store.read_df(
        db, "SELECT * FROM relink_ranks WHERE split='test' AND direction='image_to_report'")
    n = len(ranks)
    expected = pools.recall_at_k_full(ranks["n_greater"], ranks["n_tied"], 5).mean()
    got = store.read_df(db, "SELECT recall FROM relink_metrics "
                        "WHERE split='test' AND negatives='random' "
                  "AND direction='image_to_report' AND k=5 AND pool_size=?", [n])["recall"][0]
    assert got == pytest.approx(expected)


def test_matched_pools_exclude_and_count_queries_with_too_few_distractors(attacked):
    db, *_ = attacked
    ranks = store.read_df(db, "SELECT n_matched FROM relink_ranks WHERE split='test' "
                    "AND direction='image_to_report'")
    m = store.read_df(db, "SELECT * FROM relink_metrics WHERE split='test' AND negatives='matched' "
                "AND direction='image_to_report' AND k=1 AND pool_size=50")
    too_few = int((ranks["n_matched"] < 49).sum())
    assert too_few > 0
    assert m["n_excluded"][0] == too_few
    assert m["n_queries"][0] == len(ranks) - too_few


def test_rerun_is_reused_and_other_heads_are_kept_apart(attacked):
    db, items, img, txt, config, run_id = attacked
    again, reused = run_attack(db, model="m", cohort="c", items=items, image_embeddings=img,
                               text_embeddings=txt, config=config)
    assert reused and again == run_id
    run_attack(db, model="m", cohort="c", items=items, image_embeddings=txt, text_embeddings=img,
               heads="inf", config=config)
    counts = store.read_df(
        db, "SELECT heads, count(*) AS n FROM relink_metrics GROUP BY heads ORDER BY 1")
    assert list(counts["heads"]) == ["inf", "original"]
    assert counts["n"].nunique() == 1
    status = store.read_df(db, "SELECT status FROM runs WHERE stage = 'attack'")
    assert list(status["status"]) == ["done", "done"]


def test_topk_lists_are_sorted_and_flag_true_and_matched(attacked):
    db, items, *_ = attacked
    top = store.read_df(db, "SELECT * FROM relink_topk "
                        "WHERE split='test' AND direction='image_to_report' "
                  "ORDER BY query_id, rank")
    assert top.groupby("query_id")["rank"].max().eq(20).all()
    assert (top.groupby("query_id")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()
    ranks = store.read_df(db, "SELECT query_id, n_greater FROM relink_ranks WHERE split='test' "
                    "AND direction='image_to_report'").set_index("query_id")
    hit1 = top.query("rank == 1").set_index("query_id")["is_true"]
    assert (hit1[hit1].index.isin(ranks.index[ranks["n_greater"] == 0])).all()
    assert top["is_matched"].any()


def test_label_key_policies():
    items = pd.DataFrame({name: [np.nan] for name in CHEXPERT_LABELS})
    other = items.copy()
    other["Edema"] = -1.0
    base = label_keys(items)[0]
    assert label_keys(other)[0] != base
    assert label_keys(other, "negative")[0] == base
    assert label_keys(other, "positive")[0] != base


def test_alternating_configs_keep_their_own_rows_and_is_done_checks_them(attacked):
    db, items, img, txt, config, run_id = attacked
    other = AttackConfig(pool_sizes=(20,), n_boot=200)
    shown = lambda: set(store.read_df(  # noqa: E731
        db, "SELECT DISTINCT pool_size FROM shown_relink_metrics "
            "WHERE split = 'test'")["pool_size"])
    n_test = int((items["split"] == "test").sum())
    second, reused = run_attack(db, model="m", cohort="c", items=items, image_embeddings=img,
                                text_embeddings=txt, config=other)
    assert not reused and second != run_id and shown() == {20, n_test}
    again, reused = run_attack(db, model="m", cohort="c", items=items, image_embeddings=img,
                               text_embeddings=txt, config=config)
    assert reused and again == run_id and shown() == {10, 50, n_test}
    per_run = store.read_df(db, "SELECT run_id, count(*) AS n FROM relink_metrics GROUP BY 1")
    assert set(per_run["run_id"]) == {run_id, second}
    with store.connect_write(db) as con:  # lose one row of the first run: no longer done
        con.execute("DELETE FROM relink_ranks WHERE rowid = (SELECT min(rowid) FROM relink_ranks "
                    "WHERE run_id = ?)", [run_id])
    _, reused = run_attack(db, model="m", cohort="c", items=items, image_embeddings=img,
                           text_embeddings=txt, config=config)
    assert not reused
