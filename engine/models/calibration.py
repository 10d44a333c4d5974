"""A quick re-linkage check for the ladder: exact Recall@1 and lift at pool size N.

This is the ladder's calibration gauge, not the audit (that is `engine.attack`: both directions,
matched negatives, intervals). For query image i with true report t, G_i counts the held-out
reports scoring strictly higher than t; a random pool of size N holds t and N-1 of the M = n-1
distractors, so without ties t ranks first with probability

    P_i = C(M - G_i, N - 1) / C(M, N - 1)

(no higher-scoring distractor drawn; `recall_at_1`). Identical reports (the many near-identical
normal ones) give identical embeddings, i.e. exact ties, which that formula would count as wins;
`relink_lift` therefore breaks ties uniformly at random with the attack's exact formula
(`engine.attack.pools.recall_at_k`, which reduces to `recall_at_1` when there are no ties), so the
ladder's numbers are the ones the audit will report. Recall@1(N) is the mean over queries, chance
is 1/N, and lift = Recall@1(N) * N.
"""

from __future__ import annotations

import math

import numpy as np


def count_higher(
    image_embeddings: np.ndarray, text_embeddings: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(G, E) per query: reports scoring strictly above the true one, and tying with it.

    Args:
        image_embeddings: [n, e] float32, L2-normalised; row i pairs with report i.
        text_embeddings: [n, e] float32, L2-normalised.

    Returns:
        Two [n] int64 arrays.
    """
    scores = image_embeddings @ text_embeddings.T
    true = np.diag(scores)[:, None]
    greater = (scores > true).sum(axis=1)
    tied = (scores == true).sum(axis=1) - 1  # minus the true report itself
    return greater.astype(np.int64), tied.astype(np.int64)


def _log_comb(a: np.ndarray, b: int) -> np.ndarray:
    lg = np.vectorize(math.lgamma, otypes=[float])
    return lg(a + 1.0) - math.lgamma(b + 1.0) - lg(a - b + 1.0)


def recall_at_1(n_greater: np.ndarray, n_distractors: int, pool_size: int) -> np.ndarray:
    """Exact per-query probability that the true item ranks first in a random pool.

    Args:
        n_greater: [q] distractors scoring above the true item (G).
        n_distractors: M, distractors available to each query.
        pool_size: N (true item included), at most M + 1.

    Returns:
        [q] float64 probabilities.
    """
    if not 1 <= pool_size <= n_distractors + 1:
        raise ValueError(f"pool_size {pool_size} must be in 1..{n_distractors + 1}")
    draws = pool_size - 1
    g = np.asarray(n_greater, dtype=np.float64)
    free = n_distractors - g
    out = np.zeros_like(g)
    ok = free >= draws
    out[ok] = np.exp(_log_comb(free[ok], draws) - _log_comb(np.array([float(n_distractors)]), draws))
    return out


def relink_lift(
    image_embeddings: np.ndarray, text_embeddings: np.ndarray, pool_size: int = 100
) -> tuple[float, float, int]:
    """Mean image->report Recall@1 at pool size N and its lift over chance (ties broken at random).

    N is capped at the number of pairs. Returns (recall, lift, N used).
    """
    n = len(image_embeddings)
    if n < 2:
        return float("nan"), float("nan"), n
    from engine.attack.pools import recall_at_k

    size = min(pool_size, n)
    greater, tied = count_higher(image_embeddings, text_embeddings)
    recall = float(recall_at_k(np.full(n, n - 1), greater, tied, size, 1).mean())
    return recall, recall * size, size
