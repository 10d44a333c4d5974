"""The previous numpy rank counter, kept as a second reference for the torch one.

It deduplicates by (embedding, label key) and takes every score from one numpy product, one
core for the element-wise work. Identical embeddings under different label keys land in separate
columns that BLAS may round differently, so there it can miss exact ties (the torch counter
deduplicates by embedding alone); everywhere else the two must agree exactly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def count_ranks_numpy(queries, candidates, *, label_keys, patients, chunk=1024):
    """Counts as a dict of arrays (same fields as `engine.attack.ranks.RankCounts`)."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    candidates = np.ascontiguousarray(candidates, dtype=np.float32)
    q = len(queries)
    keys = pd.factorize(pd.Series(label_keys, dtype="object"))[0]
    pats = pd.factorize(pd.Series(patients, dtype="object"))[0]
    rows = candidates.view(np.dtype((np.void, candidates.dtype.itemsize * candidates.shape[1])))
    frame = pd.DataFrame({"row": rows.ravel(), "key": keys})
    group = frame.groupby(["row", "key"], sort=False, observed=True).ngroup().to_numpy()
    first = np.unique(group, return_index=True)[1]
    mult = np.bincount(group).astype(np.float64)
    unique, unique_key = candidates[first], keys[first]
    per_group_patient = pd.DataFrame({"g": group, "p": pats}).groupby(["g", "p"]).size()
    out = {n: np.zeros(q, np.int64) for n in ("n_greater", "n_tied", "n_matched",
                                             "n_matched_greater", "n_matched_tied")}
    top1 = np.zeros(q)
    m32 = mult.astype(np.float32)
    for start in range(0, q, chunk):
        stop = min(start + chunk, q)
        scores = queries[start:stop] @ unique.T
        s_true = scores[np.arange(stop - start), group[start:stop]][:, None]
        greater, tied = scores > s_true, scores == s_true
        matched = unique_key[None, :] == keys[start:stop, None]
        out["n_greater"][start:stop] = np.rint(greater @ m32)
        out["n_tied"][start:stop] = np.rint(tied @ m32) - 1
        out["n_matched"][start:stop] = np.rint(matched @ m32) - 1
        out["n_matched_greater"][start:stop] = np.rint((greater & matched) @ m32)
        out["n_matched_tied"][start:stop] = np.rint((tied & matched) @ m32) - 1
        at_top = scores == scores.max(axis=1, keepdims=True)
        n_top = at_top @ mult
        for i in range(stop - start):
            same = sum(per_group_patient.get((g, pats[start + i]), 0)
                       for g in np.flatnonzero(at_top[i]))
            top1[start + i] = same / n_top[i]
    out["n_candidates"] = np.full(q, q - 1, np.int64)
    out["top1_same_patient"] = top1
    return out
