"""The audit of one model on one cohort: stored embeddings -> attack, DP sweep, transfer, map.

The stage modules (`engine.attack.stage`, `engine.dp.stage`, `engine.jointspace`) work on arrays;
this module feeds them: it reads the cohort's audited items and the model's stored embeddings,
aligns them row by row, projects features through retrained heads, and calls each stage with the
right keys. The CLI and the demo call these functions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from engine.attack.stage import AttackConfig, run_attack
from engine.cohort.registry import read_cohort
from engine.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class AuditInputs:
    """A cohort's audited items aligned with a model's stored embedding of them.

    Attributes:
        model: Model name (registry name, or the raw spec when unregistered).
        cohort: Cohort name.
        items: Items (one image per study) that have an embedding, in embedding row order.
        embeddings: The stored `engine.embed.reader.Embeddings` (rows = `items`).
    """

    model: str
    cohort: str
    items: pd.DataFrame
    embeddings: object


def load_inputs(db: Path, cache: Path, model: str, cohort: str) -> AuditInputs:
    """Read items and embeddings and align them (items without an embedding are left out)."""
    from engine.embed.reader import load_embeddings
    from engine.models.registry import resolve_model

    name = resolve_model(model, cache=cache, db=db).name
    _, items = read_cohort(db, cohort)
    emb = load_embeddings(cache, name, cohort)
    index = {image_id: i for i, image_id in enumerate(emb.ids.tolist())}
    keep = items["image_id"].map(index)
    missing = int(keep.isna().sum())
    if missing:
        log.warning("%d items of %s have no embedding by %s (skipped at embed time)",
                    missing, cohort, name)
    items = items.loc[keep.notna()].assign(_row=keep.dropna().astype(int))
    items = items.sort_values("_row").drop(columns="_row").reset_index(drop=True)
    order = np.array([index[i] for i in items["image_id"]], dtype=np.int64)
    if not np.array_equal(order, np.arange(len(order))):
        emb.ids = emb.ids[order]
        for field in ("image_features", "text_features", "image_embeddings", "text_embeddings"):
            setattr(emb, field, np.asarray(getattr(emb, field))[order])
    return AuditInputs(name, cohort, items, emb)


def evaluation_items(items: pd.DataFrame, *, external: bool) -> pd.DataFrame:
    """Items with the split the attack evaluates them in.

    An external cohort was never seen by the model or the heads, so every pair is held-out and is
    evaluated as ``test`` whatever its own split says.
    """
    return items.assign(split="test") if external else items


def attack(db: Path, inputs: AuditInputs, *, config: AttackConfig = AttackConfig(),
           external: bool = False, progress=None) -> tuple[str, bool]:
    """The attack with the model's original heads."""
    emb = inputs.embeddings
    return run_attack(
        db, model=inputs.model, cohort=inputs.cohort,
        items=evaluation_items(inputs.items, external=external),
        image_embeddings=np.asarray(emb.image_embeddings, dtype=np.float32),
        text_embeddings=np.asarray(emb.text_embeddings, dtype=np.float32),
        config=config, progress=progress,
    )


def heads_dir(cache: Path, model: str, cohort: str) -> Path:
    from engine.models.registry import storage_key

    return Path(cache) / "heads" / storage_key(model) / storage_key(cohort)


def retrained_embeddings(inputs: AuditInputs, folders: dict[str, Path]) -> dict[str, tuple]:
    """heads label -> (image, text) embeddings of `inputs` projected by those heads."""
    from engine.dp.stage import project
    from engine.embed.reader import load_heads

    emb = inputs.embeddings
    out = {}
    for label, folder in folders.items():
        heads = load_heads(folder)
        out[label] = (project(np.asarray(emb.image_features), heads.image),
                      project(np.asarray(emb.text_features), heads.text))
    return out


def dp(db: Path, cache: Path, inputs: AuditInputs, *, epsilons: tuple[float, ...],
       attack_config: AttackConfig = AttackConfig(), progress=None, training=None):
    """The DP sweep on the training split, then the attack with every epsilon's heads.

    ``training`` is the sweep's `engine.dp.training.DPConfig` (None: its defaults).
    """
    from engine.dp.stage import DPSweep, run_dp

    emb = inputs.embeddings
    original = emb.heads
    result = run_dp(
        db, model=inputs.model, cohort=inputs.cohort, items=inputs.items,
        image_features=np.asarray(emb.image_features, dtype=np.float32),
        text_features=np.asarray(emb.text_features, dtype=np.float32),
        image_head=original.image, text_head=original.text,
        logit_scale=original.logit_scale, logit_bias=original.logit_bias,
        heads_dir=heads_dir(cache, inputs.model, inputs.cohort),
        sweep=(DPSweep(epsilons=epsilons) if training is None
               else DPSweep(epsilons=epsilons, training=training)),
        progress=progress,
    )
    for label, (image, text) in retrained_embeddings(inputs, result.heads).items():
        run_attack(db, model=inputs.model, cohort=inputs.cohort, items=inputs.items,
                   image_embeddings=image, text_embeddings=text, heads=label,
                   config=attack_config)
    return result


def transfer(db: Path, cache: Path, source: AuditInputs, target: AuditInputs, *,
             attack_config: AttackConfig = AttackConfig()) -> list[str]:
    """Apply heads trained on `source` unchanged to the external cohort `target`.

    For every set of heads trained on the source (each epsilon), the target is attacked (every
    pair held-out) and probed (on the target's own train / held-out splits).

    Returns:
        The heads labels transferred.
    """
    from engine.dp.stage import trained_heads_folders

    if source.model != target.model:
        raise ConfigError(f"transfer needs one model, got {source.model!r} and {target.model!r}")
    folders = trained_heads_folders(heads_dir(cache, source.model, source.cohort))
    if not folders:
        raise ConfigError(f"no DP heads of {source.model!r} on {source.cohort!r}; run `dp` first")
    projected = retrained_embeddings(target, folders)
    items = evaluation_items(target.items, external=True)
    for label, (image, text) in projected.items():
        run_attack(db, model=target.model, cohort=target.cohort, items=items,
                   image_embeddings=image, text_embeddings=text, heads=label,
                   config=attack_config, provenance={"heads_cohort": source.cohort})
    probe_transfer(db, target, projected, source_cohort=source.cohort)
    return sorted(projected)


def probe_transfer(db: Path, target: AuditInputs, projected: dict[str, tuple], *,
                   source_cohort: str) -> None:
    """The 14-label probe on the external cohort for the original, backbone and each heads."""
    from engine import store
    from engine.labels import CHEXPERT_LABELS
    from engine.runs import Run
    from engine.utility import label_matrix, probe_auroc

    items, emb = target.items, target.embeddings
    splits = set(items["split"])
    held_name = "test" if "test" in splits else "validate"
    train = (items["split"] == "train").to_numpy()
    held = (items["split"] == held_name).to_numpy()
    if not train.any() or not held.any():
        log.warning("transfer probe on %s skipped: needs train and %s items", target.cohort,
                    held_name)
        return
    labels = label_matrix(items, CHEXPERT_LABELS)
    sets = {"backbone": np.asarray(emb.image_features),
            "original": np.asarray(emb.image_embeddings),
            **{label: image for label, (image, _) in projected.items()}}
    run = Run("transfer", target.model, target.cohort,
              {"source": source_cohort, "heads": sorted(sets), "held_out": held_name})
    rows = []
    for label, features in sets.items():
        probe = probe_auroc(features[train], labels[train], features[held], labels[held])
        rows += [{"run_id": run.run_id, "model": target.model, "cohort": target.cohort,
                  "heads": label, **r} for r in probe.rows()]
    with store.connect_write(db) as con, store.transaction(con):
        store.replace_rows(con, "utility", pd.DataFrame(rows), model=target.model,
                           cohort=target.cohort)
        run.record(con, status="done", n_rows=len(rows))


def umap(db: Path, cache: Path, inputs: AuditInputs, *, config=None, external: bool = False,
         heads_cohort: str | None = None, progress=None):
    """Maps for the original heads and every retrained set of heads.

    `heads_cohort` names the cohort the heads were trained on (default: this one; the source
    cohort for an external one).
    """
    from engine.dp.stage import trained_heads_folders
    from engine.jointspace import UmapConfig, run_umap

    emb = inputs.embeddings
    embeddings = {"original": (np.asarray(emb.image_embeddings), np.asarray(emb.text_embeddings))}
    embeddings.update(retrained_embeddings(
        inputs, trained_heads_folders(heads_dir(cache, inputs.model,
                                                heads_cohort or inputs.cohort))))
    return run_umap(db, model=inputs.model, cohort=inputs.cohort,
                    items=evaluation_items(inputs.items, external=external),
                    embeddings=embeddings, config=config or UmapConfig(), progress=progress)
