"""Rank counting against a naive full-matrix reference, with exact ties from identical reports."""

from __future__ import annotations

import numpy as np
import pytest

from engine.attack import pools
from engine.attack.ranks import count_ranks, count_ranks_naive


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


def test_counts_match_naive_full_matrix():
    images, reports, keys, patients = _cohort()
    fast = count_ranks(images, reports, label_keys=keys, patients=patients, chunk=64)
    slow = count_ranks_naive(images, reports, label_keys=keys, patients=patients)
    for field in ("n_candidates", "n_greater", "n_tied", "n_matched", "n_matched_greater",
                  "n_matched_tied"):
        np.testing.assert_array_equal(getattr(fast, field), getattr(slow, field), err_msg=field)
    np.testing.assert_allclose(fast.top1_same_patient, slow.top1_same_patient)
    # Identical reports really produce ties.
    assert fast.n_tied.max() > 50


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


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ"):
        count_ranks(np.zeros((3, 2), np.float32), np.zeros((4, 2), np.float32),
                    label_keys=np.zeros(3), patients=np.zeros(3))
