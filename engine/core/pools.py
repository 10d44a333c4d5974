"""Exact re-linkage metrics over random candidate pools (docs/metrics.md).

Notation, per query: the true item t has M candidate distractors, G of which score strictly higher
than t and E of which tie with it. A pool of size N holds t plus N-1 distractors drawn uniformly
without replacement; ties inside the pool are broken uniformly at random.

Uniform tie-breaking is the same as placing t uniformly among its E ties in the full ranking, so
with V uniform on {0..E} the number of distractors above t is K = G + V and

    Recall@k(N) = mean_{v=0..E} P[Hyp(M, G+v, N-1) <= k-1].

Summing that over v one term at a time costs O(E) per query, and identical normal reports make
E large. Instead let Y be the position (1..M) in the full ranking of the k-th best distractor that
lands in the pool; t ranks <= k exactly when Y > K, so

    sum_{K=G}^{G+E} P[Y > K] = E[clip(Y - G, 0, E + 1)],

and both the distribution function of Y and its partial first moment are hypergeometric tails
(the moment uses y*C(y-1, k-1) = k*C(y, k), which shifts (M, n, k) to (M+1, n+1, k+1)). Each query
then costs a handful of log-binomials, whatever E is. `recall_at_k_by_ties` is the direct sum,
kept as the test reference.

This is the one implementation of exact Recall@k: the attack, the ladder's calibration and the
dashboard all call it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.special import digamma, gammaln


def _log_comb(n: np.ndarray, k: np.ndarray) -> np.ndarray:
    return gammaln(n + 1.0) - gammaln(k + 1.0) - gammaln(n - k + 1.0)


def hypergeom_cdf(x: int, M, K, n) -> np.ndarray:
    """P[X <= x] for X ~ Hypergeometric(population M, successes K, draws n), vectorised.

    Fast for small x (a sum of x + 1 probability terms); arguments broadcast.
    """
    M, K, n = (np.asarray(a, dtype=np.float64) for a in (M, K, n))
    M, K, n = np.broadcast_arrays(M, K, n)
    total = np.zeros(M.shape, dtype=np.float64)
    log_norm = _log_comb(M, n)
    for j in range(int(x) + 1):
        valid = (j <= K) & (j <= n) & (n - j <= M - K)
        with np.errstate(invalid="ignore"):
            logp = _log_comb(K, np.float64(j)) + _log_comb(M - K, n - j) - log_norm
        total += np.where(valid, np.exp(np.where(valid, logp, -np.inf)), 0.0)
    return np.minimum(total, 1.0)


def _order_stat_cdf(k: int, M, n, a) -> np.ndarray:
    """P[Y_k <= a]: Y_k the k-th smallest of n distinct positions drawn from 1..M."""
    return 1.0 - hypergeom_cdf(k - 1, M, a, n)


def recall_at_k(n_distractors, n_greater, n_tied, pool_size: int, k: int) -> np.ndarray:
    """Exact expected Recall@k for random pools of `pool_size`, per query.

    Args:
        n_distractors: M per query, shape [q].
        n_greater: G per query, shape [q].
        n_tied: E per query, shape [q].
        pool_size: N (true item included); must satisfy N - 1 <= M for every query.
        k: Rank cut-off.

    Returns:
        float64 array [q] of probabilities that the true item ranks <= k.
    """
    M = np.asarray(n_distractors, dtype=np.float64)
    G = np.asarray(n_greater, dtype=np.float64)
    E = np.asarray(n_tied, dtype=np.float64)
    n = float(pool_size - 1)
    if np.any(n > M):
        raise ValueError(f"pool size {pool_size} exceeds 1 + the distractors of some query")
    if n < k:  # the pool holds at most k items: the true one always ranks <= k
        return np.ones_like(M)

    def cdf(a):  # P[Y <= a]
        return _order_stat_cdf(k, M, n, a)

    def partial_mean(a):  # sum_{y <= a} y P[Y = y]
        return k * (M + 1.0) / (n + 1.0) * _order_stat_cdf(k + 1, M + 1.0, n + 1.0, a + 1.0)

    hi = G + E + 1.0
    inside = partial_mean(hi) - partial_mean(G) - G * (cdf(hi) - cdf(G))
    tail = (E + 1.0) * (1.0 - cdf(hi))
    return np.clip((inside + tail) / (E + 1.0), 0.0, 1.0)


def recall_where_eligible(
    n_distractors, n_greater, n_tied, pool_size: int, k: int = 1
) -> np.ndarray:
    """`recall_at_k` per query, NaN for queries with fewer than N-1 distractors.

    The matched-negative pools leave such queries out of that N; this keeps them in place (as NaN)
    so per-query tables stay aligned.
    """
    M = np.atleast_1d(np.asarray(n_distractors, dtype=np.float64))
    G = np.broadcast_to(np.asarray(n_greater, dtype=np.float64), M.shape)
    E = np.broadcast_to(np.asarray(n_tied, dtype=np.float64), M.shape)
    out = np.full(M.shape, np.nan)
    ok = M >= pool_size - 1
    if ok.any():
        out[ok] = recall_at_k(M[ok], G[ok], E[ok], pool_size, k)
    return out


def recall_at_k_full(n_greater, n_tied, k: int) -> np.ndarray:
    """Recall@k when the pool is every distractor (no sampling, only tie-breaking).

    The true item's rank is uniform on G+1..G+E+1, so P[rank <= k] = clip(k - G, 0, E+1) / (E+1).
    Used where the full pool size differs per query (matched negatives at full database).
    """
    G = np.asarray(n_greater, dtype=np.float64)
    E = np.asarray(n_tied, dtype=np.float64)
    return np.clip(k - G, 0.0, E + 1.0) / (E + 1.0)


def recall_at_k_by_ties(n_distractors, n_greater, n_tied, pool_size: int, k: int) -> np.ndarray:
    """Reference: the direct mean over v = 0..E of the hypergeometric CDF (slow for large E)."""
    out = []
    n = pool_size - 1
    triples = zip(np.atleast_1d(n_distractors), np.atleast_1d(n_greater), np.atleast_1d(n_tied))
    for M, G, E in triples:
        K = np.arange(G, G + E + 1)
        out.append(float(np.mean(hypergeom_cdf(k - 1, M, K, n))) if n >= k else 1.0)
    return np.asarray(out)


def reciprocal_rank(n_greater, n_tied) -> np.ndarray:
    """Expected 1/rank at full database with uniform tie-breaking: mean of 1/r, r = G+1..G+E+1."""
    G = np.asarray(n_greater, dtype=np.float64)
    E = np.asarray(n_tied, dtype=np.float64)
    # sum_{r=G+1}^{G+E+1} 1/r = H(G+E+1) - H(G) = digamma(G+E+2) - digamma(G+1)
    return (digamma(G + E + 2.0) - digamma(G + 1.0)) / (E + 1.0)


def expected_rank(n_greater, n_tied) -> np.ndarray:
    """Expected rank at full database: 1 + G + E/2."""
    greater = np.asarray(n_greater, dtype=np.float64)
    return 1.0 + greater + np.asarray(n_tied, dtype=np.float64) / 2.0


def bootstrap_mean_ci(
    values: np.ndarray,
    clusters: np.ndarray,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of the mean of each column of `values`, resampling clusters (patients).

    Args:
        values: [q, c] per-query values (c metrics computed on the same queries).
        clusters: [q] cluster id per query (e.g. patient id); clusters are resampled with
            replacement and carry all their queries.
        n_boot: Number of bootstrap replicates.
        level: Coverage of the interval.
        seed: Seed of the resampling.

    Returns:
        (low, high), each [c].
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    _, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    n_clusters = int(inverse.max()) + 1 if len(inverse) else 0
    if n_clusters == 0:
        nan = np.full(values.shape[1], np.nan)
        return nan, nan
    means = cluster_replicate_means(values, inverse.ravel(), n_clusters, n_boot=n_boot,
                                    seed=seed)
    alpha = (1.0 - level) / 2.0
    return np.quantile(means, alpha, axis=0), np.quantile(means, 1.0 - alpha, axis=0)


@lru_cache(maxsize=2)
def resample_counts(n_clusters: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n_clusters]: how often each cluster is drawn in each bootstrap replicate.

    Multinomial counts are the same as drawing `n_clusters` clusters with replacement. They
    depend on the number of clusters and the seed alone, so they are drawn once and shared by
    every interval over the same queries (a dashboard page compares several sets of heads on
    one held-out set; 1,000 x 20,000 draws cost about a second). Stored in the smallest integer
    type that holds them, read-only.
    """
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=n_boot)
    small = np.uint8 if counts.size == 0 or counts.max() <= np.iinfo(np.uint8).max else np.int32
    counts = counts.astype(small)
    counts.flags.writeable = False
    return counts


def cluster_replicate_means(values: np.ndarray, inverse: np.ndarray, n_clusters: int, *,
                            n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, c] means of the columns of `values` [q, c] over cluster-bootstrap resamples.

    `inverse` [q] is each query's cluster index (0..n_clusters-1). Every column shares one
    resample per replicate, so differences between columns are paired. The counts are summed
    in one product (summing them in blocks would change the last bit of some means).
    """
    sums = np.zeros((n_clusters, values.shape[1]))
    np.add.at(sums, inverse, values)
    per_cluster = np.bincount(inverse, minlength=n_clusters).astype(np.float64)
    weights = resample_counts(n_clusters, n_boot, seed).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ sums) / (weights @ per_cluster)[:, None]
