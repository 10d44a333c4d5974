"""A quick re-linkage gauge for the ladder: exact Recall@1 and lift at pool size N.

This is the ladder's calibration, not the audit (that is `engine.attack`: both directions,
matched negatives, intervals). For query image i with true report t, G_i counts the held-out
reports scoring strictly higher than t and E_i those tying with it; a random pool of size N holds
t and N-1 of the M = n-1 distractors. Identical reports (the many near-identical normal ones)
give identical embeddings, i.e. exact ties, broken uniformly at random. Recall@1(N) is then the
attack's own exact formula (`engine.core.pools.recall_at_k`, see docs/metrics.md), averaged over
queries; chance is 1/N and lift = Recall@1(N) * N, so the ladder reports the numbers the audit
will report.
"""

from __future__ import annotations

import numpy as np

from engine.core.pools import recall_at_k


def count_higher(
    image_embeddings: np.ndarray, text_embeddings: np.ndarray, *, block: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """(G, E) per query: reports scoring strictly above the true one, and tying with it.

    The scores are formed ``block`` queries at a time (a block x n tile), so memory stays
    ``block * n`` floats whatever n is: at the study's 49,904 held-out pairs the whole n x n
    matrix and its comparison masks took about 17 GB; a tile of 2,048 rows takes 0.4 GB.
    Each tile's true scores are its own rows' diagonal entries, so the counts equal those of
    the whole matrix.

    Args:
        image_embeddings: [n, e] float32, L2-normalised; row i pairs with report i.
        text_embeddings: [n, e] float32, L2-normalised.
        block: Query rows per tile.

    Returns:
        Two [n] int64 arrays.
    """
    n = len(image_embeddings)
    greater = np.zeros(n, dtype=np.int64)
    tied = np.zeros(n, dtype=np.int64)
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        scores = image_embeddings[lo:hi] @ text_embeddings.T
        true = scores[np.arange(hi - lo), np.arange(lo, hi)][:, None]
        greater[lo:hi] = (scores > true).sum(axis=1)
        tied[lo:hi] = (scores == true).sum(axis=1) - 1  # minus the true report itself
    return greater, tied


def relink_lift(
    image_embeddings: np.ndarray, text_embeddings: np.ndarray, pool_size: int = 100
) -> tuple[float, float, int]:
    """Mean image->report Recall@1 at pool size N and its lift over chance (ties broken at random).

    N is capped at the number of pairs. Returns (recall, lift, N used).
    """
    n = len(image_embeddings)
    if n < 2:
        return float("nan"), float("nan"), n
    size = min(pool_size, n)
    greater, tied = count_higher(image_embeddings, text_embeddings)
    recall = float(recall_at_k(np.full(n, n - 1), greater, tied, size, 1).mean())
    return recall, recall * size, size
