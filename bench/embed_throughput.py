"""Benchmark: embedding throughput on this machine (the embed stage's inner loop).

For the phantom ladder's architecture and for a ViT-B/16-shaped CLIP (``ViT-B-16:random``, random
weights: nothing is downloaded), measures

- images/s through the image backbone (pre-projection features) on preprocessed tensors,
- images/s end to end: decode a 256 px grayscale PNG, the model's own preprocess, backbone,
- reports/s through the tokenizer and the text backbone (MIMIC-style reports),

over a few batches after one warm-up batch, in float32, on the GPU when there is one (``--device``).

Run: .venv/bin/python bench/embed_throughput.py [--batches 3] [--batch-size 32] [--device cpu]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

REPORT = (
    "FINDINGS: Heart size is mildly enlarged. There is a small right pleural effusion with "
    "adjacent basilar atelectasis. No pneumothorax. Endotracheal tube terminates 4 cm above the "
    "carina. IMPRESSION: Small right effusion. Mild cardiomegaly, unchanged from prior."
)


def _ladder_model(folder: Path) -> str:
    import json

    import open_clip
    import torch
    from safetensors.torch import save_file

    from synthetic.ladder.ladder import LadderConfig

    config = LadderConfig()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": config.model_cfg(), "preprocess_cfg": config.preprocess_cfg()}))
    torch.manual_seed(0)
    model = open_clip.CLIP(**config.model_cfg())
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(folder / "open_clip_model.safetensors"))
    return f"local-dir:{folder}"


def measure(spec: str, *, batches: int, batch_size: int, device: str) -> dict:
    import torch
    from PIL import Image

    from engine.models.loading import load_model
    from engine.models.split import split_towers

    loaded = load_model(spec, device=device)
    towers = split_towers(loaded.model)
    rng = np.random.default_rng(0)
    png = io.BytesIO()
    Image.fromarray((rng.random((256, 256)) * 255).astype("uint8"), mode="L").save(png, "PNG")
    raw = png.getvalue()
    texts = [REPORT] * batch_size

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def images_end_to_end():
        pixels = torch.stack([loaded.preprocess(Image.open(io.BytesIO(raw)).convert("RGB"))
                              for _ in range(batch_size)])
        towers.image_backbone(pixels.to(device))

    pixels = torch.stack([loaded.preprocess(Image.open(io.BytesIO(raw)).convert("RGB"))
                          for _ in range(batch_size)]).to(device)
    results = {"model": spec.split("/")[-1] if spec.startswith("local-dir:") else spec,
               "params_M": sum(p.numel() for p in loaded.model.parameters()) / 1e6}
    with torch.inference_mode():
        for name, fn in (
            ("image_backbone", lambda: towers.image_backbone(pixels)),
            ("image_end_to_end", images_end_to_end),
            ("text", lambda: towers.text_backbone(loaded.tokenizer(texts).to(device))),
        ):
            fn()
            sync()
            start = time.perf_counter()
            for _ in range(batches):
                fn()
            sync()
            results[name] = batches * batch_size / (time.perf_counter() - start)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default 64 for the ladder, 8 for ViT-B/16 (keeps the run short)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    args = parser.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device {device}, torch threads {torch.get_num_threads()}, "
          f"{args.batches} timed batches after one warm-up batch")
    with tempfile.TemporaryDirectory() as tmp:
        specs = [(_ladder_model(Path(tmp) / "phantom-ladder"), 64), ("ViT-B-16:random", 8)]
        rows = [measure(s, batches=args.batches, batch_size=args.batch_size or size, device=device)
                | {"batch": args.batch_size or size} for s, size in specs]
    print(f"{'model':<18} {'params':>8} {'batch':>5} {'img/s backbone':>15} "
          f"{'img/s end-to-end':>17} {'reports/s':>10}")
    for r in rows:
        print(f"{r['model']:<18} {r['params_M']:>7.1f}M {r['batch']:>5} "
              f"{r['image_backbone']:>15.1f} {r['image_end_to_end']:>17.1f} {r['text']:>10.1f}")


if __name__ == "__main__":
    main()
