"""Rank counting on torch against a naive full-matrix reference and the previous numpy counter."""

from __future__ import annotations

import numpy as np
import pytest
from _ranks_numpy import count_ranks_numpy

from engine.attack.ranks import FIELDS, RankCounter, count_ranks, count_ranks_naive
from engine.core import pools


def _normalise(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _cohort(q=300, d=16, seed=0):
    """Images near their report; a third of the reports are one identical 'normal' text."""
    rng = np.random.default_rng(seed)
    reports = rng.normal(size=(q, d))
    normal = rng.normal(size=d)
    is_normal = rng.random(q) < 0.33
    reports[is_normal] = normal
    images = reports + rng.normal(scale=1.2, size=(q, d))
    keys = np.where(is_normal, "normal", rng.choice(["a", "b", "c"], size=q))
    keys = np.asarray(keys, dtype=object)
    patients = rng.integers(0, q // 3, size=q).astype(str)
    # Entries on a dyadic grid make every dot product exact in float32 and float64 alike, so the
    # chunked path and the reference must agree exactly, and distinct texts can tie too.
    grid = lambda x: (np.round(_normalise(x) * 4) / 4).astype(np.float32)  # noqa: E731
    return grid(images), grid(reports), keys, patients


def _assert_same(fast, slow):
    get = (lambda c, f: c[f]) if isinstance(slow, dict) else getattr
    for field in ("n_candidates", *FIELDS):
        np.testing.assert_array_equal(getattr(fast, field), get(slow, field), err_msg=field)
        assert getattr(fast, field).dtype == np.int64, field
    np.testing.assert_allclose(fast.top1_same_patient, get(slow, "top1_same_patient"),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("q, chunk, tile", [(300, 64, None), (300, 50, 37), (90, 7, 11),
                                           (300, 1000, 1024), (300, 64, 130)])
def test_counts_match_naive_full_matrix_for_any_chunking(q, chunk, tile):
    images, reports, keys, patients = _cohort(q=q)
    fast = count_ranks(images, reports, label_keys=keys, patients=patients, chunk=chunk, tile=tile)
    _assert_same(fast, count_ranks_naive(images, reports, label_keys=keys, patients=patients))
    # Identical reports really produce ties, and distinct grid vectors tie too.
    assert fast.n_tied.max() > q // 6
    assert (fast.top1_same_patient > 0).any() and (fast.top1_same_patient < 1).any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_counts_match_the_previous_numpy_counter(seed):
    images, reports, keys, patients = _cohort(q=240, seed=seed)
    for queries, cands in ((images, reports), (reports, images)):
        fast = count_ranks(queries, cands, label_keys=keys, patients=patients, chunk=32, tile=40)
        _assert_same(fast, count_ranks_numpy(queries, cands, label_keys=keys, patients=patients,
                                             chunk=64))


def test_identical_embeddings_under_different_label_keys_tie_exactly():
    """One report text filed under several label vectors: every copy ties, matched counts split.

    The previous numpy counter kept such copies as separate columns and could lose ties to BLAS
    rounding; the torch counter scores each distinct embedding once.
    """
    rng = np.random.default_rng(4)
    q, d = 400, 24
    reports = _normalise(rng.normal(size=(q, d)))
    reports[::3] = reports[0]  # 134 copies of one text ...
    images = _normalise(reports + rng.normal(scale=1.0, size=(q, d)))
    images[::7] = images[0]  # ... and duplicate images for the other direction
    keys = rng.choice(["a", "b", "c", "d"], size=q).astype(object)  # ... under four keys
    patients = rng.integers(0, q // 4, size=q).astype(str)
    for queries, cands in ((images, reports), (reports, images)):
        for chunk, tile in ((64, None), (33, 50)):
            fast = count_ranks(queries, cands, label_keys=keys, patients=patients, chunk=chunk,
                               tile=tile)
            _assert_same(fast, count_ranks_naive(queries, cands, label_keys=keys,
                                                 patients=patients))
    copies = np.arange(0, q, 3)
    fast = count_ranks(images, reports, label_keys=keys, patients=patients)
    np.testing.assert_array_equal(fast.n_tied[copies], len(copies) - 1)


def test_random_continuous_embeddings_match_float64_reference_up_to_float32_rounding():
    """Continuous scores: exact wherever no distractor lies within float32 rounding of the true
    score; there, a BLAS may round either way (the previous numpy code differs from torch on a
    few queries in 10,000 for that reason), so only the bracket is asserted."""
    rng = np.random.default_rng(7)
    q, d = 1500, 48
    reports = _normalise(rng.normal(size=(q, d)))
    reports[::5] = reports[1]
    images = _normalise(reports + rng.normal(scale=0.9, size=(q, d)))
    keys = (rng.zipf(1.6, q) % 30).astype(str)
    patients = rng.integers(0, q // 3, q).astype(str)
    fast = count_ranks(images, reports, label_keys=keys, patients=patients, chunk=256, tile=500)
    scores = images.astype(np.float64) @ reports.astype(np.float64).T
    true = np.diag(scores)[:, None]
    identical = (reports[None, :, :] == reports[:, None, :]).all(-1)  # exact ties by design
    eps = 1e-6
    above = ((scores > true + eps) & ~identical).sum(1)
    near = ((np.abs(scores - true) <= eps) & ~identical).sum(1)
    ties = identical.sum(1) - 1
    assert np.all(fast.n_greater >= above) and np.all(fast.n_greater <= above + near)
    at_least = fast.n_greater + fast.n_tied
    assert np.all(at_least >= above + ties) and np.all(at_least <= above + near + ties)
    assert np.all(fast.n_tied >= ties)
    exact = near == 0
    assert exact.mean() > 0.95
    slow = count_ranks_naive(images, reports, label_keys=keys, patients=patients)
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(fast, field)[exact], getattr(slow, field)[exact])
    copies = (reports == reports[1]).all(1)  # rows 0, 5, 10, ... and row 1
    np.testing.assert_array_equal(fast.n_tied[copies], copies.sum() - 1)


def test_chunks_cover_every_query_once_and_parts_assemble_in_any_order():
    images, reports, keys, patients = _cohort(q=130, seed=5)
    counter = RankCounter(images, reports, label_keys=keys, patients=patients, chunk=16, tile=30)
    assert counter.n_chunks == 9
    parts = [counter.count_chunk(i) for i in range(counter.n_chunks)]
    rows = np.concatenate([p["rows"] for p in parts])
    assert sorted(rows) == list(range(130))
    shuffled = counter.assemble(parts[::-1])
    _assert_same(shuffled, count_ranks_naive(images, reports, label_keys=keys, patients=patients))
    with pytest.raises(ValueError, match="cover"):
        counter.assemble(parts[1:])


def test_full_database_recall_matches_argsort_with_random_tie_breaks():
    images, reports, keys, patients = _cohort(q=120, seed=3)
    counts = count_ranks(images, reports, label_keys=keys, patients=patients)
    exact = pools.recall_at_k(counts.n_candidates, counts.n_greater, counts.n_tied, 120, 5)
    # Naive: argsort of the full score matrix with random jitter as tie-breaker, many repeats.
    rng = np.random.default_rng(0)
    scores = images.astype(np.float64) @ reports.astype(np.float64).T
    hits = np.zeros(len(scores))
    repeats = 400
    for _ in range(repeats):
        order = np.lexsort((rng.random(scores.shape), -scores), axis=1)
        rank = np.argmax(order == np.arange(len(scores))[:, None], axis=1) + 1
        hits += rank <= 5
    se = np.sqrt(0.25 / repeats)
    assert np.all(np.abs(hits / repeats - exact) < 5 * se)


def test_threads_option_is_restored():
    import torch

    before = torch.get_num_threads()
    images, reports, keys, patients = _cohort(q=50, seed=6)
    count_ranks(images, reports, label_keys=keys, patients=patients, threads=1)
    assert torch.get_num_threads() == before


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ"):
        count_ranks(np.zeros((3, 2), np.float32), np.zeros((4, 2), np.float32),
                    label_keys=np.zeros(3), patients=np.zeros(3))
