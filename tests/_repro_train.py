"""Trains the tiny ladder in a fresh process and prints its weights' digest (test_numerics.py).

Usage: python tests/_repro_train.py WORKDIR [--pin]. ``--pin`` calls the CLI's `pin_numerics`
before torch is imported (what every `python -m engine` command does); without it the process
runs with whatever instruction-set variables its environment holds.
"""

import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

if "--pin" in sys.argv:
    from engine.numerics import pin_numerics

    pin_numerics()

from _tiny_clip import make_cohort  # noqa: E402
from synthetic.ladder.ladder import LadderConfig, train_ladder  # noqa: E402

work = Path(sys.argv[1])
db, cache = work / "r.duckdb", work / "cache"
make_cohort(db, work / "cohort", n=24)
config = LadderConfig(rung_epochs=(0, 2), embed_dim=32, image_size=32, patch_size=8,
                      vision_width=64, vision_layers=2, text_width=64, text_layers=2,
                      context_length=32, heads=4, batch_size=8, shift=2)
result = train_ladder(db, cache, "tiny", config=config)
weights = (result.rungs[-1].folder / "open_clip_model.safetensors").read_bytes()
import torch  # noqa: E402

print("capability", torch.backends.cpu.get_cpu_capability())
print("digest", hashlib.sha256(weights).hexdigest())
