"""Exact pool metrics against references: scipy, the direct tie sum, and Monte Carlo pools."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import hypergeom

from engine.core import pools


def test_hypergeom_cdf_matches_scipy():
    rng = np.random.default_rng(0)
    M = rng.integers(1, 5000, 400)
    K = (rng.random(400) * (M + 1)).astype(int)
    n = (rng.random(400) * (M + 1)).astype(int)
    for x in (0, 1, 4, 9, 10):
        np.testing.assert_allclose(pools.hypergeom_cdf(x, M, K, n), hypergeom.cdf(x, M, K, n),
                                   rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("k", [1, 5, 10])
@pytest.mark.parametrize("pool_size", [2, 10, 100, 301])
def test_closed_form_equals_direct_tie_sum(k, pool_size):
    rng = np.random.default_rng(k * 1000 + pool_size)
    M = rng.integers(pool_size - 1, 400, 300)
    G = (rng.random(300) * (M + 1)).astype(int)
    E = np.minimum((rng.random(300) ** 3 * 120).astype(int), M - G)
    fast = pools.recall_at_k(M, G, E, pool_size, k)
    slow = pools.recall_at_k_by_ties(M, G, E, pool_size, k)
    np.testing.assert_allclose(fast, slow, atol=1e-9)


def test_full_database_is_deterministic_rank():
    # Full pool: no sampling, only tie-breaking. G=3, E=4 -> rank uniform on 4..8.
    M, G, E = 50, 3, 4
    for k, expected in ((1, 0.0), (4, 1 / 5), (5, 2 / 5), (8, 1.0), (10, 1.0)):
        got = pools.recall_at_k([M], [G], [E], M + 1, k)[0]
        assert got == pytest.approx(expected, abs=1e-12)


def _monte_carlo(M, G, E, N, k, draws, rng):
    """Sample pools and tie-breaks literally: labels 0=higher, 1=tied, 2=lower."""
    kinds = np.repeat([0, 1, 2], [G, E, M - G - E])
    hits = 0
    for _ in range(draws):
        pool = rng.choice(kinds, size=N - 1, replace=False)
        higher = int((pool == 0).sum())
        tied = int((pool == 1).sum())
        rank = 1 + higher + rng.integers(0, tied + 1)
        hits += rank <= k
    return hits / draws


@pytest.mark.parametrize("M,G,E,N,k", [(500, 20, 0, 100, 1), (500, 5, 40, 100, 5),
                                      (2000, 300, 150, 10, 1), (800, 0, 700, 50, 10),
                                      (999, 60, 3, 1000, 10)])
def test_exact_agrees_with_monte_carlo_pools(M, G, E, N, k):
    rng = np.random.default_rng(M + G + E + N + k)
    draws = 20000
    mc = _monte_carlo(M, G, E, N, k, draws, rng)
    exact = pools.recall_at_k([M], [G], [E], N, k)[0]
    se = np.sqrt(max(exact * (1 - exact), 1e-4) / draws)
    assert abs(mc - exact) < 4 * se + 1e-9


def test_pool_larger_than_candidates_is_an_error():
    with pytest.raises(ValueError, match="pool size"):
        pools.recall_at_k([10], [0], [0], 12, 1)


def test_reciprocal_rank_with_ties():
    np.testing.assert_allclose(pools.reciprocal_rank([0, 2, 0], [0, 0, 2]),
                               [1.0, 1 / 3, (1 + 1 / 2 + 1 / 3) / 3])
    np.testing.assert_allclose(pools.expected_rank([0, 2, 0], [0, 0, 2]), [1, 3, 2])


def test_cluster_bootstrap_covers_the_mean_and_respects_clusters():
    rng = np.random.default_rng(1)
    values = rng.random(600)
    clusters = np.repeat(np.arange(200), 3)
    low, high = pools.bootstrap_mean_ci(values, clusters, n_boot=500)
    assert low[0] < values.mean() < high[0]
    # Perfectly correlated queries within a cluster widen the interval vs independent queries.
    shared = np.repeat(rng.random(200), 3)
    lo_c, hi_c = pools.bootstrap_mean_ci(shared, clusters, n_boot=500)
    lo_i, hi_i = pools.bootstrap_mean_ci(shared, np.arange(600), n_boot=500)
    assert (hi_c - lo_c)[0] > 1.3 * (hi_i - lo_i)[0]


def test_full_pool_shortcut_equals_general_formula():
    rng = np.random.default_rng(7)
    M = rng.integers(1, 300, 200)
    G = (rng.random(200) * (M + 1)).astype(int)
    E = np.minimum(rng.integers(0, 30, 200), M - G)
    for k in (1, 5, 10):
        general = np.array([pools.recall_at_k([m], [g], [e], m + 1, k)[0]
                            for m, g, e in zip(M, G, E)])
        np.testing.assert_allclose(pools.recall_at_k_full(G, E, k), general, atol=1e-9)
