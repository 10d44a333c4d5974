"""Benchmark: the attack at the study's scale on this machine.

43,793 queries against 43,793 reports, 512-d L2-normalised random vectors (images correlated with
their reports so ranks are spread out), one direction, every pool size N in {10, 100, 1000, 10000,
full}, k in {1, 5, 10}, random and matched negatives, with bootstrap intervals: exactly what the
attack stage computes per split and direction.

For comparison, a naive implementation samples R pools per query and N, ranks the true item in
each pool with a faiss IndexFlatIP over the pool, and averages. It runs on a subsample of queries
and the time is extrapolated to all queries (and it is still only an estimate, with sampling
error, where the fast path is exact).

Run: .venv/bin/python bench/attack_scale.py [--queries 43793] [--naive-queries 200] [--repeats 10]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.attack.ranks import count_ranks  # noqa: E402
from engine.attack.stage import AttackConfig, pool_metrics  # noqa: E402


def make_data(q: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    reports = rng.normal(size=(q, d)).astype(np.float32)
    images = reports + rng.normal(scale=12.0, size=(q, d)).astype(np.float32)
    reports /= np.linalg.norm(reports, axis=1, keepdims=True)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    keys = (rng.zipf(1.6, q) % 400).astype(str)  # skewed label-vector frequencies, like CXR labels
    patients = rng.integers(0, q // 3, q).astype(str)
    return images, reports, keys, patients


def naive(images, reports, sizes, repeats, n_queries, seed=0):
    import faiss

    rng = np.random.default_rng(seed)
    q = len(images)
    chosen = rng.choice(q, size=n_queries, replace=False)
    start = time.perf_counter()
    for i in chosen:
        others = np.delete(np.arange(q), i)
        for n in sizes:
            for _ in range(repeats):
                pool = np.concatenate([[i], rng.choice(others, size=n - 1, replace=False)])
                index = faiss.IndexFlatIP(reports.shape[1])
                index.add(reports[pool])
                _, order = index.search(images[i : i + 1], min(10, n))
                _ = order
    return time.perf_counter() - start, n_queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=43793)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--naive-queries", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=10, help="pools per query and N (naive)")
    args = parser.parse_args()

    images, reports, keys, patients = make_data(args.queries, args.dim)
    config = AttackConfig()
    t0 = time.perf_counter()
    counts = count_ranks(images, reports, label_keys=keys, patients=patients)
    t1 = time.perf_counter()
    rows = pool_metrics(counts, patients.astype(object), config)
    t2 = time.perf_counter()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"queries x reports: {args.queries} x {args.queries}, d={args.dim}")
    print(f"rank counting (random + matched, one direction): {t1 - t0:.1f} s")
    print(f"exact metrics for every N, k, both negative modes, bootstrap {config.n_boot}: "
          f"{t2 - t1:.1f} s ({len(rows)} metric rows)")
    print(f"total: {t2 - t0:.1f} s; peak resident memory: {peak_mb:.0f} MB")
    for row in rows:
        if row["k"] == 1 and row["pool_size"] in (100, 10000):
            print(f"  {row['negatives']:8s} N={row['pool_size']:6d} R@1={row['recall']:.4f} "
                  f"lift={row['lift']:.1f} excluded={row['n_excluded']}")

    sizes = [n for n in (10, 100, 1000, 10000) if n < args.queries]
    seconds, done = naive(images, reports, sizes, args.repeats, args.naive_queries)
    per_query = seconds / done
    projected = per_query * args.queries
    print(f"naive sampled pools + faiss (random negatives only, {args.repeats} pools per N, "
          f"N in {sizes}): {seconds:.1f} s for {done} queries -> extrapolated {projected:.0f} s "
          f"for {args.queries} queries")
    print(f"speed-up of the exact path over the naive one: {projected / (t2 - t0):.0f}x "
          "(the naive one also covers fewer settings and carries sampling error)")


if __name__ == "__main__":
    main()
