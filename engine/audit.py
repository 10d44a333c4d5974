"""The audit of one model on one cohort: stored embeddings -> attack, DP sweep, transfer, map.

The stage modules (`engine.attack.stage`, `engine.dp.stage`, `engine.jointspace`) work on arrays;
this module feeds them: it reads the cohort's audited items and the model's stored embeddings,
aligns them row by row, projects features through retrained heads, and calls each stage with the
identity of its inputs: the cohort's content fingerprint, the model's weights fingerprint (through
the embedding found for them, `engine.embed.stage.find_embedding`) and the heads' identity
(`engine.heads`). The CLI and the demo call these functions.
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
from engine.heads import family_loss

log = logging.getLogger(__name__)


@dataclass
class AuditInputs:
    """A cohort's audited items aligned with a model's stored embedding of them.

    Attributes:
        model: Model name (registry name, or the raw spec when unregistered).
        cohort: Cohort name.
        items: Items (one image per study) that have an embedding, in embedding row order.
        embeddings: The stored `engine.embed.reader.Embeddings` (rows = `items`).
        cohort_fingerprint: The cohort's registered content fingerprint.
        original_heads_id: Identity of the model's own heads.
    """

    model: str
    cohort: str
    items: pd.DataFrame
    embeddings: object
    cohort_fingerprint: str | None = None
    original_heads_id: str | None = None


def load_inputs(db: Path, cache: Path, model: str, cohort: str) -> AuditInputs:
    """Read items and embeddings and align them (items without an embedding are left out)."""
    from engine.embed.reader import load_embeddings
    from engine.embed.stage import find_embedding
    from engine.heads import original_heads_id
    from engine.models.registry import resolve_model

    name = resolve_model(model, cache=cache, db=db).name
    meta, items = read_cohort(db, cohort)
    folder = find_embedding(db, cache, name, cohort)
    emb = load_embeddings(cache, name, cohort, config_hash=folder.name)
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
    fingerprint = emb.manifest.get("config", {}).get("model_fingerprint")
    return AuditInputs(name, cohort, items, emb, meta.get("fingerprint"),
                       original_heads_id(fingerprint) if fingerprint else None)


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
        config=config, heads_id=inputs.original_heads_id,
        cohort_fingerprint=inputs.cohort_fingerprint, progress=progress,
    )


def heads_dir(cache: Path, model: str, cohort: str) -> Path:
    from engine.models.registry import storage_key

    return Path(cache) / "heads" / storage_key(model) / storage_key(cohort)


def retrained_embeddings(inputs: AuditInputs, folders: dict[str, Path]) -> dict[str, tuple]:
    """heads label -> (image, text) embeddings of `inputs` projected by those heads."""
    from engine.heads import load_heads, project

    emb = inputs.embeddings
    out = {}
    for label, folder in folders.items():
        heads = load_heads(folder)
        out[label] = (project(np.asarray(emb.image_features), heads.image),
                      project(np.asarray(emb.text_features), heads.text))
    return out


def dp(db: Path, cache: Path, inputs: AuditInputs, *, epsilons: tuple[float, ...],
       attack_config: AttackConfig = AttackConfig(), progress=None, training=None,
       selection=None, start=None):
    """The DP sweep on the training split, then the attack with every epsilon's heads.

    ``training`` is the sweep's `engine.dp.training.DPConfig` (None: its defaults);
    ``selection`` an `engine.dp.selection.Selection` (per-epsilon hyper-parameter choice on a
    validation split of the training patients; None: ``training`` as it is); ``start`` an
    `engine.dp.start.Start` (None: seeded random heads). A ``public:COHORT`` start reads that
    cohort's embeddings with this model (embed it first).
    """
    from engine.dp.stage import DPSweep, run_dp
    from engine.dp.start import Start

    start = start or Start()
    public_start = None
    if start.kind == "public":
        if start.cohort == inputs.cohort:
            raise ConfigError(f"--start public:{start.cohort}: the public cohort must not be "
                              "the private cohort itself")
        public = load_inputs(db, cache, inputs.model, start.cohort)
        public_start = (np.asarray(public.embeddings.image_features, dtype=np.float32),
                        np.asarray(public.embeddings.text_features, dtype=np.float32),
                        public.items["patient_id"].astype(str).to_numpy(),
                        public.cohort_fingerprint)
    emb = inputs.embeddings
    require_heads(inputs, "dp retrains the projection heads")
    original = emb.heads
    result = run_dp(
        db, model=inputs.model, cohort=inputs.cohort, items=inputs.items,
        image_features=np.asarray(emb.image_features, dtype=np.float32),
        text_features=np.asarray(emb.text_features, dtype=np.float32),
        image_head=original.image, text_head=original.text,
        logit_scale=original.logit_scale, logit_bias=original.logit_bias,
        heads_dir=heads_dir(cache, inputs.model, inputs.cohort),
        sweep=DPSweep(epsilons=epsilons, selection=selection, start=start,
                      **({} if training is None else {"training": training})),
        cohort_fingerprint=inputs.cohort_fingerprint,
        original_heads_id=inputs.original_heads_id, public_start=public_start,
        progress=progress, loss=family_loss(emb.manifest, original.logit_bias),
    )
    from engine.heads import IDENTITY, read_json

    for label, (image, text) in retrained_embeddings(inputs, result.heads).items():
        identity = read_json(result.heads[label], IDENTITY) or {}
        run_attack(db, model=inputs.model, cohort=inputs.cohort, items=inputs.items,
                   image_embeddings=image, text_embeddings=text, heads=label,
                   heads_cohort=inputs.cohort, heads_id=identity.get("heads_id"),
                   cohort_fingerprint=inputs.cohort_fingerprint,
                   source_fingerprint=inputs.cohort_fingerprint, config=attack_config)
    return result


def require_heads(inputs: AuditInputs, why: str) -> None:
    """Refuse, in one line, a stage that needs heads on embeddings imported without them."""
    if inputs.embeddings.manifest.get("import_kind") == "final":
        raise ConfigError(
            f"model {inputs.model!r}: its embeddings of cohort {inputs.cohort!r} were imported as "
            f"final embeddings only; {why}, so it needs the pre-projection features and the "
            "heads' weights: import those with `import-embeddings --heads` (docs/models.md)")


def adaptive(db: Path, cache: Path, target: AuditInputs, *, config=None,
             attack_config: AttackConfig = AttackConfig(), echo=None):
    """The adaptive attackers of `config` (`engine.adaptive`) on `target`'s held-out pairs."""
    from engine.adaptive import AdaptiveConfig, run_adaptive

    require_heads(target, "the adaptive attacker refits the projection heads")

    config = config or AdaptiveConfig()
    public = {name: load_inputs(db, cache, target.model, name) for name in config.public}
    return run_adaptive(db, target, public=public, config=config, attack_config=attack_config,
                        echo=echo)


def transfer(db: Path, cache: Path, source: AuditInputs, target: AuditInputs, *,
             attack_config: AttackConfig = AttackConfig()) -> list[str]:
    """Apply heads trained on `source` unchanged to the external cohort `target`.

    For every set of heads trained on the source (each epsilon), the target is attacked (every
    pair held-out) and probed (on the target's own train / held-out splits).

    Returns:
        The heads labels transferred.
    """
    from engine.heads import require_trained

    if source.model != target.model:
        raise ConfigError(f"transfer needs one model, got {source.model!r} and {target.model!r}")
    refs = require_trained(db, source.model, source.cohort)
    projected = retrained_embeddings(target, {label: r.folder for label, r in refs.items()})
    items = evaluation_items(target.items, external=True)
    for label, (image, text) in projected.items():
        run_attack(db, model=target.model, cohort=target.cohort, items=items,
                   image_embeddings=image, text_embeddings=text, heads=label,
                   heads_cohort=source.cohort, heads_id=refs[label].heads_id,
                   cohort_fingerprint=target.cohort_fingerprint,
                   source_fingerprint=source.cohort_fingerprint, config=attack_config)
    probe_transfer(db, target, projected, source_cohort=source.cohort,
                   heads_ids={label: r.heads_id for label, r in refs.items()},
                   source_fingerprint=source.cohort_fingerprint)
    return sorted(projected)


def probe_transfer(db: Path, target: AuditInputs, projected: dict[str, tuple], *,
                   source_cohort: str, heads_ids: dict[str, str] | None = None,
                   source_fingerprint: str | None = None) -> None:
    """The 14-label probe on the external cohort for the original, backbone and each heads.

    Its rows carry ``heads_cohort = source_cohort`` for the transferred heads, so they sit next
    to the external cohort's own DP results instead of replacing them.
    """
    from engine import store
    from engine.core.labels import CHEXPERT_LABELS
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
    heads_ids = dict(heads_ids or {})
    run = Run("transfer", target.model, target.cohort,
              {"source": source_cohort, "heads": sorted(sets), "held_out": held_name,
               "heads_ids": heads_ids},
              inputs={"embeddings": target.embeddings.config_hash},
              heads_cohort=source_cohort, cohort_fingerprint=target.cohort_fingerprint,
              source_fingerprint=source_fingerprint)
    if run.reuse(db):
        return
    rows = []
    for label, features in sets.items():
        probe = probe_auroc(features[train], labels[train], features[held], labels[held])
        trained = label not in ("backbone", "original")
        rows += [{"run_id": run.run_id, "model": target.model, "cohort": target.cohort,
                  "heads": label, "heads_cohort": source_cohort if trained else None,
                  "heads_id": heads_ids.get(label) if trained else (
                      target.original_heads_id if label == "original" else None),
                  **r} for r in probe.rows()]
    with store.connect_write(db) as con, store.transaction(con):
        store.replace_rows(con, "utility", pd.DataFrame(rows), run_id=run.run_id)
        run.record(con, status="done", n_rows=len(rows))


def umap(db: Path, cache: Path, inputs: AuditInputs, *, config=None, external: bool = False,
         heads_cohort: str | None = None, progress=None):
    """Maps for the original heads and every retrained set of heads.

    `heads_cohort` names the cohort the heads were trained on (default: this one; the source
    cohort for an external one).
    """
    from engine.heads import list_trained
    from engine.jointspace import UmapConfig, run_umap
    from engine.runs import cohort_fingerprint

    emb = inputs.embeddings
    source = heads_cohort or inputs.cohort
    refs = list_trained(db, inputs.model, source)
    embeddings = {"original": (np.asarray(emb.image_embeddings), np.asarray(emb.text_embeddings))}
    embeddings.update(retrained_embeddings(inputs, {h: r.folder for h, r in refs.items()}))
    ids = {h: r.heads_id for h, r in refs.items()}
    if inputs.original_heads_id:
        ids["original"] = inputs.original_heads_id
    return run_umap(db, model=inputs.model, cohort=inputs.cohort,
                    items=evaluation_items(inputs.items, external=external),
                    embeddings=embeddings, config=config or UmapConfig(), heads_cohort=source,
                    heads_ids=ids, cohort_fingerprint=inputs.cohort_fingerprint,
                    source_fingerprint=(inputs.cohort_fingerprint if source == inputs.cohort
                                        else cohort_fingerprint(db, source)),
                    progress=progress)
