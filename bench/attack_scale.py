"""Benchmark: the attack at the reference paper's scale, against a bare matrix product of the
same shapes.

43,793 queries against 43,793 reports, 512-d L2-normalised random vectors (images correlated with
their reports so ranks are spread out), one direction: the rank counting (random and matched
negatives, top-1 patient linkage) on torch, timed next to the bare float32 product ``Q @ U.T`` in
the same chunks (the least any exact counting must do), measured in the same run so that a busy
machine slows both. Then the exact pool metrics for every N in {10, 100, 1000, 10000, full},
k in {1, 5, 10}, with bootstrap intervals, as the attack stage computes them.

Optional: ``--numpy`` also times the previous numpy counter (tests/_ranks_numpy.py);
``--naive-queries`` times sampled pools ranked with faiss on a subsample, extrapolated.
``--json FILE`` appends one JSON line with every figure (bench/gpu_check.sh collects them).

Run: .venv/bin/python bench/attack_scale.py [--queries 43793] [--device cpu|cuda] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.attack.ranks import RankCounter, count_ranks  # noqa: E402


def make_data(q: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    reports = rng.normal(size=(q, d)).astype(np.float32)
    images = reports + rng.normal(scale=12.0, size=(q, d)).astype(np.float32)
    reports /= np.linalg.norm(reports, axis=1, keepdims=True)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    keys = (rng.zipf(1.6, q) % 400).astype(str)  # skewed label-vector frequencies, like CXR labels
    patients = rng.integers(0, q // 3, q).astype(str)
    return images, reports, keys, patients


class Clock:
    """Wall and process CPU time of a block (CUDA synchronised at both ends)."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")

    def __enter__(self):
        self._sync()
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self._sync()
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()


def bare_matmul(images, reports, counter: RankCounter) -> None:
    """The bare product of the same shapes: every chunk of queries against every unique column."""
    for index in range(counter.n_chunks):
        rows = counter.query_order[index * counter.chunk:(index + 1) * counter.chunk]
        qb = counter.Q[rows]
        for c0 in range(0, counter.n_cols, counter.tile):
            _ = qb @ counter.U[c0:c0 + counter.tile].T


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
                index.search(images[i: i + 1], min(10, n))
    return time.perf_counter() - start, n_queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=43793)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: GPU if present)")
    parser.add_argument("--chunk", type=int, default=None, help="queries per chunk")
    parser.add_argument("--repeats", type=int, default=1, help="timed rounds (best one kept)")
    parser.add_argument("--numpy", action="store_true", help="also time the previous numpy code")
    parser.add_argument("--no-metrics", action="store_true", help="skip the pool metrics")
    parser.add_argument("--naive-queries", type=int, default=0,
                        help="queries for the sampled-pools + faiss comparison (0: skip)")
    parser.add_argument("--naive-repeats", type=int, default=10, help="pools per query and N")
    parser.add_argument("--json", type=Path, default=None, help="append the figures here")
    args = parser.parse_args()

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    images, reports, keys, patients = make_data(args.queries, args.dim)
    load = os.getloadavg()[0]
    with Clock(device) as prep:
        counter = RankCounter(images, reports, label_keys=keys, patients=patients,
                              chunk=args.chunk, device=device)
    best = None
    for _ in range(args.repeats):
        with Clock(device) as bare:
            bare_matmul(images, reports, counter)
        with Clock(device) as ranks:
            counts = count_ranks(images, reports, label_keys=keys, patients=patients,
                                 chunk=args.chunk, device=device)
        if best is None or ranks.wall / bare.wall < best[1].wall / best[0].wall:
            best = (bare, ranks)
    bare, ranks = best
    figures = dict(
        device=device, torch=torch.__version__, threads=torch.get_num_threads(),
        queries=args.queries, columns=counter.n_cols, dim=args.dim, chunk=counter.chunk,
        tile=counter.tile, load_avg_1min=round(load, 2), prep_s=round(prep.wall, 2),
        bare_matmul_s=round(bare.wall, 2), bare_matmul_cpu_s=round(bare.cpu, 2),
        ranks_s=round(ranks.wall, 2), ranks_cpu_s=round(ranks.cpu, 2),
        ratio_wall=round(ranks.wall / bare.wall, 3),
        ratio_cpu=round(ranks.cpu / bare.cpu, 3) if bare.cpu > 0 else None,
    )
    gflop = 2 * args.queries * counter.n_cols * args.dim / 1e9
    print(f"{args.queries} queries x {counter.n_cols} unique candidates x {args.dim} on {device} "
          f"({figures['threads']} threads, 1-min load {load:.1f}), chunk {counter.chunk} x tile "
          f"{counter.tile}")
    print(f"bare float32 matmul of the same shapes: {bare.wall:.1f} s wall, {bare.cpu:.1f} s CPU "
          f"({gflop / bare.wall:.0f} GFLOP/s)")
    print(f"rank counting (random + matched, top-1 patient): {ranks.wall:.1f} s wall, "
          f"{ranks.cpu:.1f} s CPU -> {figures['ratio_wall']:.2f}x the matmul (wall), "
          f"{figures['ratio_cpu']}x (CPU); planning {prep.wall:.1f} s")
    if device.startswith("cuda"):
        figures["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
        figures["gpu"] = torch.cuda.get_device_name()
        print(f"CUDA peak memory {figures['cuda_peak_mb']} MB on {figures['gpu']}")

    if args.numpy:
        sys.path.insert(0, str(ROOT / "tests"))
        from _ranks_numpy import count_ranks_numpy

        with Clock("cpu") as old:
            ref = count_ranks_numpy(images, reports, label_keys=keys, patients=patients)
        same = all(np.array_equal(getattr(counts, f), ref[f]) for f in
                   ("n_greater", "n_tied", "n_matched", "n_matched_greater", "n_matched_tied"))
        figures.update(numpy_s=round(old.wall, 2), numpy_cpu_s=round(old.cpu, 2),
                       numpy_equal=bool(same))
        print(f"previous numpy counter: {old.wall:.1f} s wall, {old.cpu:.1f} s CPU; counts "
              f"{'identical' if same else 'DIFFER'}")

    if not args.no_metrics:
        from engine.attack.stage import AttackConfig, pool_metrics

        config = AttackConfig()
        with Clock("cpu") as metrics:
            rows = pool_metrics(counts, patients.astype(object), config)
        figures["metrics_s"] = round(metrics.wall, 2)
        print(f"exact metrics for every N, k, both negative modes, bootstrap {config.n_boot}: "
              f"{metrics.wall:.1f} s ({len(rows)} metric rows)")
        for row in rows:
            if row["k"] == 1 and row["pool_size"] in (100, 10000):
                print(f"  {row['negatives']:8s} N={row['pool_size']:6d} R@1={row['recall']:.4f} "
                      f"lift={row['lift']:.1f} excluded={row['n_excluded']}")
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(f"peak resident memory: {figures['peak_rss_mb']} MB")

    if args.naive_queries:
        sizes = [n for n in (10, 100, 1000, 10000) if n < args.queries]
        seconds, done = naive(images, reports, sizes, args.naive_repeats, args.naive_queries)
        projected = seconds / done * args.queries
        print(f"naive sampled pools + faiss (random negatives only, {args.naive_repeats} pools "
              f"per N, N in {sizes}): {seconds:.1f} s for {done} queries -> extrapolated "
              f"{projected:.0f} s for {args.queries} queries")
    if args.json:
        with open(args.json, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"bench": "attack_scale", **figures}) + "\n")


if __name__ == "__main__":
    main()
