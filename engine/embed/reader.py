"""Reading stored embeddings: the interface later stages (attack, dp, umap) use.

Layout under the cache folder (one folder per model, cohort and embedding config)::

    features/<model_key>/<cohort_key>/
        current.json                 -> {"config_hash": ...}: the latest complete embedding
                                     written here (a convenience for `load_embeddings`
                                     without a hash; the audit stages find the embedding of
                                     the current inputs by fingerprint instead,
                                     `engine.embed.stage.find_embedding`, since this pointer
                                     is shared by every database using the cache)
        <config_hash>/
            manifest.json            config, counts, shapes, timings (written last: its presence
                                     marks the folder complete)
            ids.json                 image_id of each row, in row order
            image_features.npy       [n, d_img] float32, pre-projection (backbone output)
            text_features.npy        [n, d_txt] float32, pre-projection
            image_embeddings.npy     [n, e] float32, projected by the original head, L2-normalised
            text_embeddings.npy      [n, e] float32, likewise
            heads.pt                 {"image": state_dict, "text": state_dict}
            heads.json               structure of both heads, logit_scale, logit_bias, tower types
            skipped.json             images that could not be read: image_id, file, error

Row i of every matrix is the item ``ids[i]`` (its image and its study's report). This module needs
only numpy; `Embeddings.heads` imports torch when first used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import EngineError
from engine.heads import Heads, load_heads  # noqa: F401 - the one owner of heads files

FEATURES_DIR = "features"
MANIFEST = "manifest.json"
CURRENT = "current.json"


class NotEmbeddedError(EngineError):
    """The requested model / cohort has no complete embedding in the cache."""


def pair_dir(cache: Path, model: str, cohort: str) -> Path:
    """``<cache>/features/<model_key>/<cohort_key>``: all embeddings of one model and cohort."""
    from engine.models.registry import storage_key

    return Path(cache) / FEATURES_DIR / storage_key(model) / storage_key(cohort)


@dataclass
class Embeddings:
    """One stored embedding of a cohort by a model.

    Attributes:
        folder: The hash folder the arrays come from.
        model: Model name (registered name, or the raw spec).
        cohort: Cohort name.
        ids: [n] image ids (str), the row order of every matrix.
        image_features: [n, d_img] float32, pre-projection image features.
        text_features: [n, d_txt] float32, pre-projection report features.
        image_embeddings: [n, e] float32, original image head applied, L2-normalised.
        text_embeddings: [n, e] float32, original text head applied, L2-normalised.
        manifest: The folder's manifest (config, counts, shapes, timings).
    """

    folder: Path
    model: str
    cohort: str
    ids: np.ndarray
    image_features: np.ndarray
    text_features: np.ndarray
    image_embeddings: np.ndarray
    text_embeddings: np.ndarray
    manifest: dict
    _heads: Heads | None = field(default=None, repr=False)

    @property
    def config_hash(self) -> str:
        return str(self.manifest["config_hash"])

    @property
    def logit_scale(self) -> float:
        """The model's log temperature (no torch needed)."""
        return float(self.manifest["logit_scale"])

    @property
    def heads(self) -> Heads:
        """The original heads as torch modules (imports torch on first use)."""
        if self._heads is None:
            self._heads = load_heads(self.folder)
        return self._heads

    def skipped(self) -> list[dict]:
        """Images left out because they could not be read: ``image_id, file, error``."""
        path = self.folder / "skipped.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else []


def current_folder(cache: Path, model: str, cohort: str, config_hash: str | None = None) -> Path:
    """The complete embedding folder for (model, cohort): `config_hash`, else the latest.

    Raises:
        NotEmbeddedError: nothing complete is stored for that model and cohort.
    """
    base = pair_dir(cache, model, cohort)
    if config_hash is None:
        pointer = base / CURRENT
        if pointer.exists():
            config_hash = json.loads(pointer.read_text(encoding="utf-8"))["config_hash"]
    folder = base / str(config_hash) if config_hash else None
    if folder is None or not (folder / MANIFEST).exists():
        raise NotEmbeddedError(
            f"model {model!r} has no complete embedding of cohort {cohort!r} under "
            f"{Path(cache) / FEATURES_DIR}; run `python -m engine embed --model {model} "
            f"--cohort {cohort}`"
        )
    return folder


def load_embeddings(
    cache: Path, model: str, cohort: str, *, config_hash: str | None = None, mmap: bool = False
) -> Embeddings:
    """Load the stored embedding of `cohort` by `model` (the latest, or a given config hash).

    Args:
        cache: The cache folder (``--cache``).
        model: Registered model name or raw spec, as given to ``embed --model``.
        cohort: Cohort name.
        config_hash: A specific embedding config; default: the latest complete one.
        mmap: Memory-map the matrices instead of reading them (read-only arrays).

    Raises:
        NotEmbeddedError: nothing complete is stored for that model and cohort.
    """
    folder = current_folder(cache, model, cohort, config_hash)
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    mode = "r" if mmap else None

    def arr(name: str) -> np.ndarray:
        return np.load(folder / f"{name}.npy", mmap_mode=mode, allow_pickle=False)

    ids = np.array(json.loads((folder / "ids.json").read_text(encoding="utf-8")), dtype=object)
    return Embeddings(
        folder=folder,
        model=model,
        cohort=cohort,
        ids=ids,
        image_features=arr("image_features"),
        text_features=arr("text_features"),
        image_embeddings=arr("image_embeddings"),
        text_embeddings=arr("text_embeddings"),
        manifest=manifest,
    )
