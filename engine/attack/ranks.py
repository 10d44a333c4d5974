"""Per-query counts of DESIGN §3.2 from embeddings: candidates, higher, tied; random and matched.

Candidates are deduplicated first: items with byte-identical embeddings and the same label key
(identical report texts, typically normal reports) become one row with a multiplicity. That makes
ties exact (identical texts score identically by construction, never by floating-point luck) and
the matrix products smaller. Scores are computed in query chunks so memory stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class RankCounts:
    """Counts per query, each an int64 array [q].

    Attributes:
        n_candidates: Distractors M (all candidates except the true one).
        n_greater: Distractors scoring strictly higher than the true item (G).
        n_tied: Distractors scoring exactly the same (E).
        n_matched: Distractors whose label key equals the true item's.
        n_matched_greater: Matched distractors scoring higher.
        n_matched_tied: Matched distractors tying.
        top1_same_patient: Probability (float64) that the top-ranked candidate, ties broken
            uniformly, belongs to the query's patient (any of their studies).
    """

    n_candidates: np.ndarray
    n_greater: np.ndarray
    n_tied: np.ndarray
    n_matched: np.ndarray
    n_matched_greater: np.ndarray
    n_matched_tied: np.ndarray
    top1_same_patient: np.ndarray


def _dedupe(cands: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique (embedding, key) rows: returns (unique index [u], inverse [c], multiplicity [u])."""
    rows = np.ascontiguousarray(cands).view(np.dtype((np.void, cands.dtype.itemsize * cands.shape[1])))
    frame = pd.DataFrame({"row": rows.ravel(), "key": keys})
    codes = frame.groupby(["row", "key"], sort=False, observed=True).ngroup().to_numpy()
    first = np.unique(codes, return_index=True)[1]
    mult = np.bincount(codes).astype(np.float64)
    return first, codes, mult


def count_ranks(
    queries: np.ndarray,
    candidates: np.ndarray,
    *,
    label_keys: np.ndarray,
    patients: np.ndarray,
    chunk: int = 1024,
    progress=None,
) -> RankCounts:
    """Rank each query's true candidate (same row index) among all candidates.

    Args:
        queries: [q, d] float32, L2-normalised query embeddings; query i's true candidate is
            candidate i.
        candidates: [q, d] float32, L2-normalised candidate embeddings.
        label_keys: [q] hashable label-vector key of each candidate (row i is also the true
            item's key for query i); matched distractors share the true item's key.
        patients: [q] patient id of each row (query i and candidate i share a patient).
        chunk: Queries per matrix product; memory is about chunk * unique candidates * 5 bytes.
        progress: Optional object with ``update(n)``.

    Returns:
        `RankCounts` for the q queries.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    candidates = np.ascontiguousarray(candidates, dtype=np.float32)
    q = len(queries)
    if candidates.shape != queries.shape:
        raise ValueError(f"queries {queries.shape} and candidates {candidates.shape} differ")
    key_codes = pd.factorize(pd.Series(label_keys, dtype="object"))[0]
    patient_codes = pd.factorize(pd.Series(patients, dtype="object"))[0]
    first, group_of, mult = _dedupe(candidates, key_codes)
    unique = candidates[first]  # [u, d]
    unique_key = key_codes[first]
    mult32 = mult.astype(np.float32)
    # Members of each group by patient, to resolve top-1 patient linkage when a group ties at max.
    members = pd.DataFrame({"group": group_of, "patient": patient_codes})
    per_group_patient = members.groupby(["group", "patient"]).size()

    out = {name: np.zeros(q, dtype=np.int64) for name in
           ("n_greater", "n_tied", "n_matched", "n_matched_greater", "n_matched_tied")}
    top1 = np.zeros(q, dtype=np.float64)
    for start in range(0, q, chunk):
        stop = min(start + chunk, q)
        scores = queries[start:stop] @ unique.T  # [b, u]
        rows = np.arange(stop - start)
        true_group = group_of[start:stop]
        s_true = scores[rows, true_group][:, None]
        greater = scores > s_true
        tied = scores == s_true
        matched = unique_key[None, :] == key_codes[start:stop, None]
        out["n_greater"][start:stop] = np.rint(greater @ mult32)
        out["n_tied"][start:stop] = np.rint(tied @ mult32) - 1
        out["n_matched"][start:stop] = np.rint(matched @ mult32) - 1
        out["n_matched_greater"][start:stop] = np.rint((greater & matched) @ mult32)
        out["n_matched_tied"][start:stop] = np.rint((tied & matched) @ mult32) - 1
        top = scores.max(axis=1, keepdims=True)
        at_top = scores == top
        n_top = at_top @ mult
        for i in range(stop - start):
            groups = np.flatnonzero(at_top[i])
            p = patient_codes[start + i]
            same = sum(per_group_patient.get((g, p), 0) for g in groups)
            top1[start + i] = same / n_top[i]
        if progress is not None:
            progress.update(stop - start)
    return RankCounts(
        n_candidates=np.full(q, q - 1, dtype=np.int64),
        top1_same_patient=top1,
        **out,
    )


def count_ranks_naive(queries, candidates, *, label_keys, patients) -> RankCounts:
    """Reference: the full score matrix, one query at a time, no deduplication."""
    scores = np.asarray(queries, np.float64) @ np.asarray(candidates, np.float64).T
    q = len(scores)
    keys = np.asarray(pd.factorize(pd.Series(label_keys, dtype="object"))[0])
    pats = np.asarray(patients, dtype=object)
    res = {n: np.zeros(q, dtype=np.int64) for n in
           ("n_greater", "n_tied", "n_matched", "n_matched_greater", "n_matched_tied")}
    top1 = np.zeros(q)
    for i in range(q):
        others = np.arange(q) != i
        s, t = scores[i], scores[i, i]
        match = others & (keys == keys[i])
        res["n_greater"][i] = np.sum(others & (s > t))
        res["n_tied"][i] = np.sum(others & (s == t))
        res["n_matched"][i] = np.sum(match)
        res["n_matched_greater"][i] = np.sum(match & (s > t))
        res["n_matched_tied"][i] = np.sum(match & (s == t))
        best = s == s.max()
        top1[i] = np.sum(best & (pats == pats[i])) / np.sum(best)
    return RankCounts(n_candidates=np.full(q, q - 1), top1_same_patient=top1, **res)
