"""Paired image / report features with a shared latent signal, for the heads-training tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from engine.core.labels import CHEXPERT_LABELS

D_IMG, D_TXT, EMB = 12, 10, 8


def paired_features(n: int, *, seed: int = 0, prefix: str = "p", per_patient: int = 2,
                    held_out=lambda i: (i // 2) % 2 == 1):
    """``(items, image features, text features)``: n pairs, `per_patient` pairs a patient,
    ``split = test`` where ``held_out(i)``, 14 random labels; both towers see one latent."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 6))
    image = (z @ rng.normal(size=(6, D_IMG)) + 0.3 * rng.normal(size=(n, D_IMG))).astype(
        np.float32)
    text = (z @ rng.normal(size=(6, D_TXT)) + 0.3 * rng.normal(size=(n, D_TXT))).astype(
        np.float32)
    items = pd.DataFrame({"image_id": [f"{prefix}i{k}" for k in range(n)],
                          "study_id": [f"{prefix}s{k}" for k in range(n)],
                          "patient_id": [f"{prefix}{i // per_patient:04d}" for i in range(n)],
                          "split": ["test" if held_out(i) else "train" for i in range(n)]})
    for name in CHEXPERT_LABELS:
        items[name] = rng.choice([1.0, 0.0], size=n)
    return items, image, text
