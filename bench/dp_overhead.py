"""Time per epoch of DP vs non-private head retraining (docs/dp.md).

100k random pairs of 768-d features, heads 768 -> 512 on both sides, the default group-as-unit
recipe; one epoch each of: non-private (epsilon = inf, same loop), DP with the engine's exact
Gram-trick clipping (``fast``, the default), Opacus's ghost clipping, optionally Opacus's hooks
(materialised per-sample gradients). The modes run interleaved ``--repeats`` times (default 3) and
the ratio is of the medians. Goal: DP (fast) at most 1.5x the non-private epoch. The machine's
load average is printed before and after, since shared machines vary.

    .venv/bin/python bench/dp_overhead.py [--pairs 100000] [--epochs 1] [--modes inf,fast,ghost]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--embed", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--epsilon", type=float, default=4.0)
    parser.add_argument("--modes", default="inf,fast,ghost")
    parser.add_argument("--repeats", type=int, default=3,
                        help="run the modes this many times, interleaved (shared machines vary)")
    args = parser.parse_args(argv)

    import statistics

    import numpy as np
    import torch
    from torch import nn

    from engine.dp.training import DPConfig, train_heads

    rng = np.random.default_rng(0)
    n, d, e = args.pairs, args.width, args.embed
    image = rng.standard_normal((n, d), dtype=np.float32)
    text = rng.standard_normal((n, d), dtype=np.float32)
    patients = np.array([f"p{i // 3}" for i in range(n)])  # 3 studies per patient
    torch.manual_seed(0)
    heads = nn.Linear(d, e, bias=False), nn.Linear(d, e, bias=False)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus; "
          f"{n} pairs, {d} -> {e} heads, {args.epochs} epoch(s); load average "
          f"{_load()} before")
    # Warm up (imports, first-call allocations) so that no mode pays them inside its timing.
    small = slice(0, 2000)
    for mode in args.modes.split(","):
        train_heads(image[small], text[small], patients[small], image_head=heads[0],
                    text_head=heads[1], logit_scale=math.log(100.0),
                    config=DPConfig(epochs=1, grad_sample_mode="auto" if mode == "inf" else mode),
                    **({"epsilon": math.inf} if mode == "inf" else {"noise_multiplier": 1.0}))
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    for mode in args.modes.split(",") * args.repeats:
        config = DPConfig(epochs=args.epochs,
                          grad_sample_mode="auto" if mode == "inf" else mode)
        eps = math.inf if mode == "inf" else args.epsilon
        steps = _StepClock()
        started = time.perf_counter()
        result = train_heads(image, text, patients, image_head=heads[0], text_head=heads[1],
                             logit_scale=math.log(100.0), epsilon=eps, config=config,
                             progress=steps)
        total = time.perf_counter() - started
        wall, used = steps.loop_seconds()
        times.setdefault(mode, []).append(wall / args.epochs)
        cpu.setdefault(mode, []).append(used / args.epochs)
        print(f"{mode:>6}: {wall / args.epochs:7.2f} s/epoch of training steps, "
              f"{used / args.epochs:7.2f} CPU s/epoch (call {total:.2f} s incl. calibration), "
              f"steps={result.steps}, q={result.sample_rate:.4g}, units={result.n_units}, "
              f"sigma={result.noise_multiplier:.3f}, eps={result.epsilon:.3f}, "
              f"accountant={result.accountant}, dropped={result.n_pairs_dropped}")
    print(f"load average {_load()} after")
    if "inf" in times:
        base, base_cpu = statistics.median(times["inf"]), statistics.median(cpu["inf"])
        for mode in times:
            if mode != "inf":
                print(f"{mode} / non-private (median of {len(times[mode])}): wall "
                      f"{statistics.median(times[mode]) / base:.2f}x, CPU "
                      f"{statistics.median(cpu[mode]) / base_cpu:.2f}x")
    return 0


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


class _StepClock:
    """Progress sink timing the training steps (first to last step, extrapolated by one)."""

    def __init__(self) -> None:
        self.stamps: list[tuple[float, float]] = []

    def update(self, n: int) -> None:
        self.stamps.append((time.perf_counter(), time.process_time()))

    def loop_seconds(self) -> tuple[float, float]:
        """(wall, CPU) seconds of all steps: first to last step, scaled by steps / (steps - 1)."""
        if len(self.stamps) < 2:
            return 0.0, 0.0
        scale = len(self.stamps) / (len(self.stamps) - 1)
        (w0, c0), (w1, c1) = self.stamps[0], self.stamps[-1]
        return (w1 - w0) * scale, (c1 - c0) * scale


if __name__ == "__main__":
    raise SystemExit(main())
