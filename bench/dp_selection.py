"""What per-epsilon hyper-parameter selection picks and costs, on synthetic pairs (docs/dp.md).

6,000 synthetic pairs of 64-d features (3 per patient, a fifth of the patients held out), heads
64 -> 32, the default candidates of `engine.dp.selection`; for each epsilon prints the chosen
candidate, every candidate's validation loss and per-run epsilon, the epsilon composed over all
candidates (RDP) and the wall time.

    .venv/bin/python bench/dp_selection.py [--epsilons 0.34,8,inf]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilons", default="0.34,8,inf")
    args = parser.parse_args(argv)

    import numpy as np
    import pandas as pd
    import torch
    from torch import nn

    from engine.dp import selection as sel
    from engine.dp.training import DPConfig

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n, d, e = 6000, 64, 32
    z = rng.normal(size=(n, 16))
    image = (z @ rng.normal(size=(16, d)) + rng.normal(size=(n, d))).astype(np.float32)
    text = (z @ rng.normal(size=(16, d)) + rng.normal(size=(n, d))).astype(np.float32)
    patients = [f"p{i // 3}" for i in range(n)]
    items = pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "patient_id": patients,
                          "split": ["test" if (i // 3) % 5 == 0 else "train" for i in range(n)]})
    torch.manual_seed(0)
    ih, th = nn.Linear(d, e, bias=False), nn.Linear(d, e, bias=False)
    for eps in (float(x) for x in args.epsilons.split(",")):
        started = time.perf_counter()
        r = sel.select_for_split(items, image, text, train_split="train", epsilon=eps,
                                 base=DPConfig(), selection=sel.Selection(), image_head=ih,
                                 text_head=th, logit_scale=math.log(30))
        print(f"epsilon {eps:g}: chosen candidate {r.chosen}; validation losses "
              f"{[round(t['val_loss'], 4) for t in r.trials]}; per-run epsilon "
              f"{[round(t['epsilon'], 3) for t in r.trials]}; composed {r.composed_epsilon:.3f}"
              f" (patient {r.composed_patient_epsilon:.3f}); fit {r.n_fit_pairs} / validation "
              f"{r.n_validation_pairs} pairs; {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
