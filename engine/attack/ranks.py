"""Per-query rank counts (docs/metrics.md) from embeddings: candidates, higher, tied; matched.

The counting runs on torch, on CPU threads or on CUDA, at close to the speed of the matrix product
that produces the scores (how and why: docs/scaling.md). In short:

- **Deduplication.** Candidates with byte-identical embeddings become one score column with a
  multiplicity (identical report texts, typically normal reports). Ties between them are exact by
  construction, never by floating-point luck, and the products are smaller.
- **Counting by sums, not by masks.** Per score tile, ``sign(s - s_true)`` is formed in place and
  the weighted counts come from two matrix-vector products with the multiplicities:
  ``A = sum w * sign`` and ``B = sum w * |sign|``, so ``greater = (A + B) / 2`` and
  ``equal = total - B``. The values are integers, so float32 sums are exact below 2**24 items;
  ``s - t == 0`` exactly when ``s == t`` (IEEE subtraction never rounds distinct floats to zero).
- **The true score from the same product as its column.** Queries are ordered by the column of
  their true item, so a chunk's true columns are one contiguous range, scored first (tile 0);
  the other tiles cover the remaining columns, so every column is counted once.
- **Matched negatives as column ranges.** Columns are ordered by label key, so a query's matched
  distractors are one range: one product per run of rows with a wide range, one gather for all
  narrow ones. Identical embeddings under different label keys (rare) are explicit corrections.
- **Top-1 patient linkage** keeps per tile the row maximum (block-wise), its column and any
  exact ties at it.

Chunks are fixed by the inputs alone (never by the number of processes), so a row is always
computed in the same matrix product; `engine.distributed` deals chunks to torchrun ranks and the
result is byte-identical to one process. `count_ranks_naive` is the reference.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

FIELDS = ("n_greater", "n_tied", "n_matched", "n_matched_greater", "n_matched_tied")
# Float32 sums of integer weights are exact while every partial sum stays below 2**24.
_EXACT_FLOAT32 = 2 ** 24
# Below this many scores (q * q) one CPU thread is faster than several.
_SMALL = 2 ** 24
# Columns per block of the two-step row maximum.
_BLOCK = 64
# Matched ranges up to this many columns are summed by one gather instead of one product each.
_NARROW = 256


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


def _row_codes(x: np.ndarray) -> np.ndarray:
    """Integer code per row, equal exactly when the rows are byte-identical."""
    x = np.ascontiguousarray(x)
    raw = x.view(np.uint8).reshape(len(x), -1)
    pad = (-raw.shape[1]) % 8
    if pad:
        raw = np.concatenate([raw, np.zeros((len(x), pad), np.uint8)], axis=1)
    words = np.ascontiguousarray(raw).view(np.uint64)
    mults = np.random.default_rng(12345).integers(1, 2 ** 63, size=words.shape[1], dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = (words * (mults | np.uint64(1))).sum(axis=1, dtype=np.uint64)
        h ^= (words ^ mults).sum(axis=1, dtype=np.uint64) >> np.uint64(17)
    codes = pd.factorize(h)[0]
    first = np.unique(codes, return_index=True)[1]
    if not np.array_equal(raw, raw[first[codes]]):
        # A hash collision (never seen in practice): fall back to exact byte comparison.
        codes = np.unique(raw.view(np.dtype((np.void, raw.shape[1]))).ravel(),
                          return_inverse=True)[1].ravel()
    return codes.astype(np.int64)


class RankCounter:
    """Plans the rank counting of one (queries, candidates) pair and counts chunk by chunk.

    Args:
        queries: [q, d] float32, L2-normalised query embeddings; query i's true candidate is
            candidate i.
        candidates: [q, d] float32, L2-normalised candidate embeddings.
        label_keys: [q] hashable label-vector key of each candidate (row i is also the true
            item's key for query i); matched distractors share the true item's key.
        patients: [q] patient id of each row (query i and candidate i share a patient).
        chunk: Queries per chunk (default 1024 on CPU, 8192 on CUDA).
        tile: Score columns per product (default: about 256 MB of scores on CPU, 2 GB on CUDA).
        device: ``cpu``, ``cuda`` or ``cuda:N``; default the GPU when there is one.
    """

    def __init__(self, queries, candidates, *, label_keys, patients, chunk=None, tile=None,
                 device=None) -> None:
        import torch

        queries = np.ascontiguousarray(queries, dtype=np.float32)
        candidates = np.ascontiguousarray(candidates, dtype=np.float32)
        if candidates.shape != queries.shape:
            raise ValueError(f"queries {queries.shape} and candidates {candidates.shape} differ")
        self.torch = torch
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        on_gpu = self.device.type == "cuda"
        q = self.q = len(queries)
        key_codes = pd.factorize(pd.Series(label_keys, dtype="object"))[0].astype(np.int64)
        patient_codes = pd.factorize(pd.Series(patients, dtype="object"))[0].astype(np.int64)
        self.n_keys = int(key_codes.max()) + 1 if q else 0
        self.n_patients = int(patient_codes.max()) + 1 if q else 0
        self.key_codes, self.patient_codes = key_codes, patient_codes

        # Unique embeddings, ordered by the label key of their first item (their primary key).
        emb = _row_codes(candidates)
        n_emb = int(emb.max()) + 1 if q else 0
        first = np.unique(emb, return_index=True)[1]
        primary = key_codes[first]
        order = np.lexsort((np.arange(n_emb), primary))  # columns: by primary key, stable
        col_of_emb = np.empty(n_emb, np.int64)
        col_of_emb[order] = np.arange(n_emb)
        self.col_of_item = col_of_emb[emb]  # [q] column of item i's embedding
        self.n_cols = n_emb
        self.col_primary = primary[order]
        mult = np.bincount(self.col_of_item, minlength=n_emb).astype(np.float64)
        self.mult = mult
        self.key_start = np.searchsorted(self.col_primary, np.arange(self.n_keys), "left")
        self.key_stop = np.searchsorted(self.col_primary, np.arange(self.n_keys), "right")
        self.key_count = np.bincount(key_codes, minlength=self.n_keys)
        # (column, key) pairs with counts; those whose key is not the column's primary one are
        # the corrections of the matched rectangles.
        pair = self.col_of_item * max(self.n_keys, 1) + key_codes
        pairs, pair_n = np.unique(pair, return_counts=True)
        p_col, p_key = pairs // max(self.n_keys, 1), pairs % max(self.n_keys, 1)
        extra = p_key != self.col_primary[p_col]
        self.extra_col, self.extra_key, self.extra_n = p_col[extra], p_key[extra], pair_n[extra]
        # Weight of each column for the rows of its primary key (its whole multiplicity unless
        # some of its items carry another key).
        primary_n = mult.copy()
        np.subtract.at(primary_n, self.extra_col, self.extra_n.astype(np.float64))
        # (column, patient) pair counts for the top-1 patient linkage.
        self.cp_codes, self.cp_n = np.unique(
            self.col_of_item * max(self.n_patients, 1) + patient_codes, return_counts=True)

        # Queries in the order of their true item's column (so by label key): fixed chunks.
        self.query_order = np.argsort(self.col_of_item, kind="stable")
        self.chunk = int(chunk or (8192 if on_gpu else 1024))
        budget = (2 << 30) if on_gpu else (256 << 20)
        self.tile = int(tile or max(1024, budget // (4 * self.chunk)))
        self.n_chunks = (q + self.chunk - 1) // self.chunk
        self.exact_float32 = q < _EXACT_FLOAT32

        # Beyond 2**24 items the weighted sums need float64 (slower, still exact).
        dtype = torch.float32 if self.exact_float32 else torch.float64
        self.dtype = dtype
        self.Q = torch.from_numpy(queries).to(self.device)
        self.U = torch.from_numpy(np.ascontiguousarray(candidates[first[order]])).to(self.device)
        self.w = torch.from_numpy(mult).to(self.device, dtype)
        self.wp = torch.from_numpy(primary_n).to(self.device, dtype)

    # ------------------------------------------------------------------------------------------
    def count_chunk(self, index: int) -> dict[str, np.ndarray]:
        """Counts for the queries of chunk `index` (``rows`` gives their original indices)."""
        torch = self.torch
        rows = self.query_order[index * self.chunk:(index + 1) * self.chunk]
        b = len(rows)
        dev = self.device
        acc = torch.float64
        row_keys = self.key_codes[rows]
        # Queries are ordered by the column of their true item and every column is some item's,
        # so this chunk's true columns are exactly the columns lo..hi-1: tile 0.
        lo, hi = int(self.col_of_item[rows[0]]), int(self.col_of_item[rows[-1]]) + 1
        qb = self.Q[torch.from_numpy(rows).to(dev)]
        A = torch.zeros(b, dtype=acc, device=dev)
        B = torch.zeros_like(A)
        Am = torch.zeros_like(A)
        Bm = torch.zeros_like(A)
        tops: list[tuple] = []

        # Tile 0: the true scores come from the same product as their columns.
        x = qb @ self.U[lo:hi].T
        pos = torch.from_numpy(self.col_of_item[rows] - lo).to(dev)
        true_score = x[torch.arange(b, device=dev), pos].clone()
        w0 = self.w[lo:hi]
        key_t = torch.from_numpy(row_keys).to(dev)
        primary_t = torch.from_numpy(self.col_primary[lo:hi]).to(dev)
        wm0 = (key_t[:, None] == primary_t[None, :]) * self.wp[lo:hi]
        sel = (self.extra_col >= lo) & (self.extra_col < hi)
        for c, k, n in zip(self.extra_col[sel], self.extra_key[sel], self.extra_n[sel]):
            # Identical embeddings filed under another key: their count for that key's rows.
            r = np.flatnonzero(row_keys == k)
            if len(r):
                wm0[torch.from_numpy(r).to(dev), int(c) - lo] += float(n)
        self._top(x, lo, tops)
        x.sub_(true_score[:, None]).sign_()
        A += (self._cast(x) @ w0).to(acc)
        Am += (self._cast(x) * wm0).sum(1).to(acc)
        x.abs_()
        B += (self._cast(x) @ w0).to(acc)
        Bm += (self._cast(x) * wm0).sum(1).to(acc)
        del x, wm0

        # Each row's matched columns (its key's range), split per tile into wide ranges (one
        # product per run of rows sharing the key) and narrow ones (one gather for all rows).
        row_k0, row_k1 = self.key_start[row_keys], self.key_stop[row_keys]
        cut = np.flatnonzero(np.diff(row_keys)) + 1
        r_start, r_stop = np.r_[0, cut], np.r_[cut, b]
        extra_rows = self._extra_pairs(row_keys)

        spans = [(c0, min(c0 + self.tile, lo)) for c0 in range(0, lo, self.tile)]
        spans += [(c0, min(c0 + self.tile, self.n_cols))
                  for c0 in range(hi, self.n_cols, self.tile)]
        for c0, c1 in spans:
            x = qb @ self.U[c0:c1].T
            self._top(x, c0, tops)
            x.sub_(true_score[:, None]).sign_()
            w, wp = self.w[c0:c1], self.wp[c0:c1]
            k0, k1 = np.clip(row_k0, c0, c1) - c0, np.clip(row_k1, c0, c1) - c0
            span = k1 - k0
            wide = [(s0, s1) for s0, s1 in zip(r_start, r_stop) if span[s0] > _NARROW]
            narrow = self._narrow_index(k0, span, c1 - c0, wp)
            for phase in (0, 1):
                if phase:
                    x.abs_()
                total = (self._cast(x) @ w).to(acc)
                matched = torch.zeros(b, dtype=acc, device=dev)
                for s0, s1 in wide:
                    a0, a1 = int(k0[s0]), int(k1[s0])
                    matched[s0:s1] += (self._cast(x[s0:s1, a0:a1]) @ wp[a0:a1]).to(acc)
                if narrow is not None:
                    n_rows, flat, weights = narrow
                    vals = self._cast(x.reshape(-1)[flat]) * weights
                    matched.index_add_(0, n_rows, vals.sum(1).to(acc))
                if extra_rows is not None:
                    r_ix, c_ix, n = extra_rows
                    inside = (c_ix >= c0) & (c_ix < c1)
                    if inside.any():
                        ri = torch.from_numpy(r_ix[inside]).to(dev)
                        vals = x[ri, torch.from_numpy(c_ix[inside] - c0).to(dev)].to(acc)
                        matched.index_add_(0, ri, vals * torch.from_numpy(
                            n[inside].astype(np.float64)).to(dev))
                if phase:
                    B += total
                    Bm += matched
                else:
                    A += total
                    Am += matched
            del x

        A, B, Am, Bm = (t.cpu().numpy() for t in (A, B, Am, Bm))
        n_greater = np.rint((A + B) / 2).astype(np.int64)
        n_tied = np.rint(self.q - B).astype(np.int64) - 1
        n_matched = self.key_count[row_keys].astype(np.int64) - 1
        n_m_greater = np.rint((Am + Bm) / 2).astype(np.int64)
        n_m_tied = np.rint(self.key_count[row_keys] - Bm).astype(np.int64) - 1
        return dict(rows=rows, n_greater=n_greater, n_tied=n_tied, n_matched=n_matched,
                    n_matched_greater=n_m_greater, n_matched_tied=n_m_tied,
                    top1_same_patient=self._top1(rows, tops))

    def _narrow_index(self, k0, span, width, wp):
        """Flat indices into a [b, width] tile, and weights, of the rows' narrow key ranges."""
        torch = self.torch
        rows = np.flatnonzero((span > 0) & (span <= _NARROW))
        if not len(rows):
            return None
        dev = self.device
        most = int(span[rows].max())
        j = np.arange(most)
        valid = j[None, :] < span[rows, None]
        cols = np.where(valid, k0[rows, None] + j[None, :], 0)
        flat = torch.from_numpy(rows[:, None] * width + cols).to(dev)
        weights = wp[torch.from_numpy(cols).to(dev)] * torch.from_numpy(valid).to(dev)
        return torch.from_numpy(rows).to(dev), flat, weights

    def _cast(self, x):
        """The sign matrix in the dtype of the weights (a copy only past 2**24 items)."""
        return x if x.dtype == self.dtype else x.to(self.dtype)

    def _extra_pairs(self, row_keys):
        """(row, column, count) triples of the matched corrections for this chunk's rows."""
        if not len(self.extra_col):
            return None
        r_all, c_all, n_all = [], [], []
        for c, k, n in zip(self.extra_col, self.extra_key, self.extra_n):
            r = np.flatnonzero(row_keys == k)
            if len(r):
                r_all.append(r)
                c_all.append(np.full(len(r), c))
                n_all.append(np.full(len(r), n))
        if not r_all:
            return None
        return np.concatenate(r_all), np.concatenate(c_all), np.concatenate(n_all)

    def _top(self, x, offset: int, tops) -> None:
        """Record each row's maximum in this tile, its column, and every column tying it.

        The maximum is found per block of `_BLOCK` columns first (a plain max reduction, much
        cheaper than a max with indices over the whole row), then inside the winning block.
        """
        torch = self.torch
        b, width = x.shape
        if width == 0:
            return
        nb = width // _BLOCK
        r = torch.arange(b, device=x.device)
        if nb:
            blocks = x[:, :nb * _BLOCK].reshape(b, nb, _BLOCK).amax(2)  # a view, no copy
            v, blk = blocks.max(1)
            n_at = (blocks == v[:, None]).sum(1)
            inside = x.gather(1, blk[:, None] * _BLOCK + torch.arange(_BLOCK, device=x.device))
            col = blk * _BLOCK + inside.argmax(1)
            count = torch.where(n_at > 1, 2, (inside == v[:, None]).sum(1))
        if width % _BLOCK:
            tail = x[:, nb * _BLOCK:]
            tv, ti = tail.max(1)
            tn = (tail == tv[:, None]).sum(1)
            if nb:
                better, same = tv > v, tv == v
                col = torch.where(better, ti + nb * _BLOCK, col)
                count = torch.where(better, tn, torch.where(same, count + tn, count))
                v = torch.maximum(v, tv)
            else:
                v, col, count = tv, ti, tn
        tied = count > 1
        rr, jj = r[~tied], col[~tied]
        if tied.any():
            tr = torch.nonzero(tied).squeeze(1)
            hit = torch.nonzero(x[tr] == v[tr, None])
            rr = torch.cat([rr, tr[hit[:, 0]]])
            jj = torch.cat([jj, hit[:, 1]])
        tops.append((rr.cpu().numpy(), (jj + offset).cpu().numpy(), v[rr].cpu().numpy()))

    def _top1(self, rows, tops) -> np.ndarray:
        """P(top-ranked candidate belongs to the query's patient), ties broken uniformly."""
        r = np.concatenate([t[0] for t in tops])
        c = np.concatenate([t[1] for t in tops])
        v = np.concatenate([t[2] for t in tops])
        best = np.full(len(rows), -np.inf, dtype=np.float32)
        np.maximum.at(best, r, v)
        keep = v == best[r]
        r, c = r[keep], c[keep]
        code = c * max(self.n_patients, 1) + self.patient_codes[rows][r]
        at = np.searchsorted(self.cp_codes, code)
        at = np.minimum(at, len(self.cp_codes) - 1)
        same = np.where(self.cp_codes[at] == code, self.cp_n[at], 0).astype(np.float64)
        num = np.bincount(r, weights=same, minlength=len(rows))
        den = np.bincount(r, weights=self.mult[c], minlength=len(rows))
        return num / den

    def assemble(self, parts: list[dict[str, np.ndarray]]) -> RankCounts:
        """`RankCounts` in the original query order from the parts of every chunk."""
        rows = np.concatenate([p["rows"] for p in parts]) if parts else np.zeros(0, np.int64)
        if len(rows) != self.q or len(np.unique(rows)) != self.q:
            raise ValueError(f"parts cover {len(np.unique(rows))} of {self.q} queries")
        out = {}
        for name in (*FIELDS, "top1_same_patient"):
            values = np.concatenate([p[name] for p in parts])
            full = np.zeros(self.q, dtype=values.dtype)
            full[rows] = values
            out[name] = full
        return RankCounts(n_candidates=np.full(self.q, self.q - 1, dtype=np.int64), **out)


def count_ranks(
    queries: np.ndarray,
    candidates: np.ndarray,
    *,
    label_keys: np.ndarray,
    patients: np.ndarray,
    chunk: int | None = None,
    progress=None,
    device: str | None = None,
    tile: int | None = None,
    threads: int | None = None,
) -> RankCounts:
    """Rank each query's true candidate (same row index) among all candidates.

    Under torchrun (`engine.distributed`), the chunks are shared between the ranks and every rank
    gets the whole result; otherwise this process counts every chunk.

    Args:
        queries: [q, d] float32, L2-normalised query embeddings; query i's true candidate is
            candidate i.
        candidates: [q, d] float32, L2-normalised candidate embeddings.
        label_keys: [q] hashable label-vector key of each candidate (row i is also the true
            item's key for query i); matched distractors share the true item's key.
        patients: [q] patient id of each row (query i and candidate i share a patient).
        chunk: Queries per chunk; memory is about chunk * tile * 4 bytes.
        progress: Optional object with ``update(n)``.
        device: ``cpu`` or ``cuda[:N]``; default the GPU when there is one (the rank's own GPU
            under torchrun).
        tile: Score columns per matrix product.
        threads: CPU threads for torch (default: one below 2**24 scores, else as many as torch
            uses already).

    Returns:
        `RankCounts` for the q queries.
    """
    import torch

    from engine import distributed

    world = distributed.current()
    if device is None and world.size > 1:
        device = world.device
    previous = torch.get_num_threads()
    if threads is None and len(queries) ** 2 < _SMALL:
        # Small problems: thread start-up and barriers cost more than they save, and far more
        # on a busy machine, where every parallel op waits for a second core.
        threads = 1
    if threads:
        torch.set_num_threads(int(threads))
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # scores must be full float32
    try:
        counter = RankCounter(queries, candidates, label_keys=label_keys, patients=patients,
                              chunk=chunk, tile=tile, device=device)
        mine = list(range(world.rank, counter.n_chunks, world.size))
        parts = []
        for index in mine:
            parts.append(counter.count_chunk(index))
            if progress is not None:
                progress.update(len(parts[-1]["rows"]) * world.size)
        if world.size > 1:
            parts = [p for rank_parts in distributed.all_gather(parts) for p in rank_parts]
        return counter.assemble(parts)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        if threads:
            torch.set_num_threads(previous)


def count_ranks_naive(queries, candidates, *, label_keys, patients) -> RankCounts:
    """Reference: the full score matrix, one query at a time, no deduplication."""
    scores = np.asarray(queries, np.float64) @ np.asarray(candidates, np.float64).T
    q = len(scores)
    keys = np.asarray(pd.factorize(pd.Series(label_keys, dtype="object"))[0])
    pats = np.asarray(patients, dtype=object)
    res = {n: np.zeros(q, dtype=np.int64) for n in FIELDS}
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

