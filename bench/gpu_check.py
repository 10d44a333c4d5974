"""The checks bench/gpu_check.sh runs besides the benchmarks; each appends one JSON line.

``ranks``: the torch counter on the device against the float64 reference on fixtures with exact
ties (dyadic grid, duplicate rows, one text under several label keys), and against the CPU counter
on continuous data (rows may differ only by float32 rounding at near-ties; counted).
``precision``: a ViT-B/16-shaped open_clip model with random weights, image and text embeddings
in float32 and under bf16 / fp16 autocast: the lowest cosine between the two (goal >= 0.999).

Run: python bench/gpu_check.py ranks|precision [--device cuda] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _normalise(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _fixture(q, d, seed):
    rng = np.random.default_rng(seed)
    reports = rng.normal(size=(q, d))
    reports[rng.random(q) < 0.3] = reports[0]
    images = reports + rng.normal(scale=1.2, size=(q, d))
    images[::9] = images[1]
    keys = rng.choice(["a", "b", "c", "n"], size=q).astype(object)
    patients = rng.integers(0, q // 3, q).astype(str)
    grid = lambda x: (np.round(_normalise(x) * 4) / 4).astype(np.float32)  # noqa: E731
    return grid(images), grid(reports), keys, patients


def check_ranks(device: str) -> dict:
    from engine.attack.ranks import FIELDS, count_ranks, count_ranks_naive

    failures = []
    for seed, (q, d, chunk, tile) in enumerate([(600, 16, 128, None), (600, 16, 77, 100),
                                                 (1500, 32, 4096, None)]):
        images, reports, keys, patients = _fixture(q, d, seed)
        for queries, cands in ((images, reports), (reports, images)):
            fast = count_ranks(queries, cands, label_keys=keys, patients=patients, chunk=chunk,
                               tile=tile, device=device)
            ref = count_ranks_naive(queries, cands, label_keys=keys, patients=patients)
            for f in FIELDS:
                if not np.array_equal(getattr(fast, f), getattr(ref, f)):
                    failures.append(f"fixture {seed} {f}")
            if not np.allclose(fast.top1_same_patient, ref.top1_same_patient, atol=1e-12):
                failures.append(f"fixture {seed} top1")
    rng = np.random.default_rng(9)
    q = 20000
    reports = _normalise(rng.normal(size=(q, 512)))
    images = _normalise(reports + rng.normal(scale=8.0, size=(q, 512)))
    keys = (rng.zipf(1.6, q) % 400).astype(str)
    patients = rng.integers(0, q // 3, q).astype(str)
    t0 = time.perf_counter()
    gpu = count_ranks(images, reports, label_keys=keys, patients=patients, device=device)
    t1 = time.perf_counter()
    cpu = count_ranks(images, reports, label_keys=keys, patients=patients, device="cpu")
    t2 = time.perf_counter()
    differ = int(sum((getattr(gpu, f) != getattr(cpu, f)).any() for f in FIELDS))
    rows = int(np.any([getattr(gpu, f) != getattr(cpu, f) for f in FIELDS], axis=0).sum())
    return dict(check="ranks", device=device, fixture_failures=failures,
                fixtures_exact=not failures, continuous_rows_differing=rows,
                continuous_fields_differing=differ, continuous_queries=q,
                device_s=round(t1 - t0, 2), cpu_s=round(t2 - t1, 2))


def check_precision(device: str) -> dict:
    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16", pretrained=None).to(device).eval()
    tok = open_clip.get_tokenizer("ViT-B-16")
    images = torch.rand(32, 3, 224, 224, device=device)
    texts = tok(["Small right pleural effusion with basilar atelectasis. No pneumothorax.",
                 "Heart size normal. Lungs clear."] * 16).to(device)
    out = {"check": "precision", "device": device, "model": "ViT-B-16 (random weights)"}
    with torch.inference_mode():
        ref_i = model.encode_image(images, normalize=True).float()
        ref_t = model.encode_text(texts, normalize=True).float()
        for dtype in (torch.bfloat16, torch.float16):
            name = str(dtype).split(".")[-1]
            if device == "cpu" and dtype == torch.float16:
                continue
            with torch.autocast(device_type=device.split(":")[0], dtype=dtype):
                low_i = model.encode_image(images, normalize=True).float()
                low_t = model.encode_text(texts, normalize=True).float()
            out[f"{name}_image_min_cos"] = round(float((low_i * ref_i).sum(1).min()), 6)
            out[f"{name}_text_min_cos"] = round(float((low_t * ref_t).sum(1).min()), 6)
    out["ok"] = all(v >= 0.999 for k, v in out.items() if k.endswith("_min_cos"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("check", choices=("ranks", "precision"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = (check_ranks if args.check == "ranks" else check_precision)(args.device)
    print(json.dumps(result))
    if args.json:
        with open(args.json, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
