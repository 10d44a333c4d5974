"""Reduced-precision embedding (bf16 autocast, testable on CPU) against float32: cosine >= 0.999."""

from __future__ import annotations

import numpy as np
import pytest

import _tiny_clip as tiny
from engine.embed.stage import EmbedOptions, embed_cohort
from engine.errors import ConfigError


def test_bf16_embeddings_stay_within_tolerance_of_fp32_and_key_their_own_folder(tmp_path):
    db, cache = tmp_path / "r.duckdb", tmp_path / "cache"
    tiny.make_cohort(db, tmp_path / "cohort", n=12)
    folder = tmp_path / "model"
    tiny.write_local_dir(folder, tiny.native_cfg(), seed=4)
    spec = f"local-dir:{folder}"
    full = embed_cohort(db, cache, spec, "tiny", options=EmbedOptions(chunk_size=5))
    half = embed_cohort(db, cache, spec, "tiny",
                        options=EmbedOptions(chunk_size=5, precision="bf16"))
    assert half.folder != full.folder and not half.reused
    for name in ("image_embeddings", "text_embeddings"):
        a = np.load(full.folder / f"{name}.npy")
        b = np.load(half.folder / f"{name}.npy")
        assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
        cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cosine.min() >= 0.999, (name, cosine.min())
        assert not np.array_equal(a, b)  # bf16 really ran
    again = embed_cohort(db, cache, spec, "tiny", options=EmbedOptions(chunk_size=5))
    assert again.reused and again.folder == full.folder  # fp32 keeps its folder


def test_unknown_precision_is_one_clear_error():
    with pytest.raises(ConfigError, match="--precision int8"):
        EmbedOptions(precision="int8")
