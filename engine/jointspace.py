"""The `umap` stage: images and reports of the evaluation split in one 2-D map per set of heads.

One map per (model, cohort, heads). The map of the original heads is fitted first; the map of
every other set of heads (each epsilon) starts from the original coordinates of the same items
and is then Procrustes-aligned (rotation, reflection, scale, shift) onto the original map, so an
epsilon slider in the dashboard shows points moving, not a new random layout.

UMAP is slow to import (numba compiles) and to fit, so it runs here in the engine, never in a
dashboard request; the coordinates go to ``umap_points``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from engine import store
from engine.runs import Run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UmapConfig:
    """Map settings.

    Attributes:
        max_points: At most this many points (images + reports) per map; items are sampled with
            `seed` and the same items are used for every set of heads.
        split: The split drawn (the held-out pairs by default).
        n_neighbors: UMAP neighbourhood size.
        min_dist: UMAP minimum distance.
        n_epochs: UMAP optimisation epochs (None: UMAP's default for the size).
        aligned_epochs: Epochs of the maps that start from the original map's coordinates (every
            set of heads but the original); None: `n_epochs`. Such a map starts from a converged
            layout of nearly the same neighbourhood graph, so it needs far fewer epochs.
        seed: Seeds the item sample and UMAP itself (single-threaded, reproducible).
    """

    max_points: int = 20000
    split: str = "test"
    n_neighbors: int = 15
    min_dist: float = 0.1
    n_epochs: int | None = None
    aligned_epochs: int | None = None
    seed: int = 0


def sample_items(items: pd.DataFrame, config: UmapConfig) -> np.ndarray:
    """Row positions of the items drawn into the map (sorted, reproducible)."""
    rows = np.flatnonzero((items["split"] == config.split).to_numpy())
    limit = config.max_points // 2
    if len(rows) > limit:
        rows = np.sort(np.random.default_rng(config.seed).choice(rows, size=limit, replace=False))
    return rows


def align_to(reference: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """Similarity transform of `moving` [n, 2] that best matches `reference` (least squares)."""
    from scipy.linalg import orthogonal_procrustes

    ref_mean, mov_mean = reference.mean(axis=0), moving.mean(axis=0)
    ref_c, mov_c = reference - ref_mean, moving - mov_mean
    rotation, _ = orthogonal_procrustes(mov_c, ref_c)
    rotated = mov_c @ rotation
    scale = float((rotated * ref_c).sum() / max((rotated * rotated).sum(), 1e-12))
    return rotated * scale + ref_mean


def fit_map(points: np.ndarray, config: UmapConfig, init: np.ndarray | None = None) -> np.ndarray:
    """UMAP of `points` [n, e] (cosine metric) to [n, 2] float32."""
    import umap

    n = len(points)
    epochs = config.n_epochs
    if init is not None and config.aligned_epochs is not None:
        epochs = config.aligned_epochs
    reducer = umap.UMAP(
        n_neighbors=min(config.n_neighbors, max(n - 1, 2)),
        min_dist=config.min_dist,
        metric="cosine",
        n_epochs=epochs,
        random_state=config.seed,
        init=init if init is not None else ("spectral" if n > config.n_neighbors + 1 else "random"),
        n_jobs=1,
    )
    return reducer.fit_transform(points).astype(np.float32)


def run_umap(
    db,
    *,
    model: str,
    cohort: str,
    items: pd.DataFrame,
    embeddings: dict[str, tuple[np.ndarray, np.ndarray]],
    config: UmapConfig = UmapConfig(),
    heads_cohort: str | None = None,
    heads_ids: dict[str, str] | None = None,
    cohort_fingerprint: str | None = None,
    source_fingerprint: str | None = None,
    progress=None,
) -> tuple[str, bool]:
    """Fit one map per set of heads and store the coordinates; returns (run_id, reused).

    Args:
        items: Audited items (one per study), aligned with the embeddings row by row.
        embeddings: heads label -> (image embeddings [n, e], text embeddings [n, e]), both
            L2-normalised; must contain ``original``.
        heads_cohort: The cohort the non-original heads were trained on (default: `cohort`).
        heads_ids: heads label -> identity (`engine.heads`), recorded on the rows.
        cohort_fingerprint: Content fingerprint of `cohort`.
        source_fingerprint: Content fingerprint of `heads_cohort`.
    """
    from engine.attack.stage import fingerprint

    if "original" not in embeddings:
        raise ValueError("embeddings must include the original heads")
    rows = sample_items(items, config)
    heads_cohort = heads_cohort or cohort
    heads_ids = dict(heads_ids or {})
    run = Run("umap", model, cohort, {**asdict(config), "heads_ids": heads_ids}, inputs={
        "heads": {h: fingerprint(i[rows], t[rows]) for h, (i, t) in sorted(embeddings.items())},
    }, heads_cohort=heads_cohort, cohort_fingerprint=cohort_fingerprint,
        source_fingerprint=source_fingerprint if heads_cohort != cohort else cohort_fingerprint)
    if run.reuse(db):
        return run.run_id, True
    ids = items["image_id"].to_numpy()[rows]
    frames = []
    reference = None
    order = ["original"] + sorted(h for h in embeddings if h != "original")
    for heads in order:
        image, text = embeddings[heads]
        points = np.concatenate([image[rows], text[rows]])
        if len(points) < 4:
            log.warning("umap %s/%s: %d points, too few for a map", model, cohort, len(points))
            break
        coords = fit_map(points, config, init=reference)
        if reference is None:
            reference = coords
        else:
            coords = align_to(reference, coords)
        n = len(rows)
        frames.append(pd.DataFrame({
            "heads": heads,
            "heads_cohort": None if heads == "original" else heads_cohort,
            "heads_id": heads_ids.get(heads),
            "item_id": np.concatenate([ids, ids]),
            "modality": np.repeat(["image", "report"], n),
            "x": coords[:, 0].astype(np.float64),
            "y": coords[:, 1].astype(np.float64),
        }))
        if progress is not None:
            progress.update(1)
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    with store.connect_write(db) as con, store.transaction(con):
        if len(frame):
            frame = frame.assign(run_id=run.run_id, model=model, cohort=cohort)
        store.replace_rows(con, "umap_points", frame, run_id=run.run_id)
        run.record(con, status="done", n_rows=len(frame))
    return run.run_id, False
