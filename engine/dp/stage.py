"""The `dp` stage: an epsilon sweep of retrained heads, their utility, into DuckDB and cache/.

For one model and cohort, `run_dp` retrains the heads at every epsilon of the sweep (infinity
always included: the same loop without clipping or noise) on the train split
(`engine.dp.training.train_heads`), saves each set of heads under ``heads_dir`` with its identity
(`engine.heads`: ``heads.pt``, ``heads.json``, ``identity.json``, ``dp.json``),
measures utility with the 14-label probe (`engine.utility.probe_auroc`) for the original heads,
every epsilon, and the frozen backbone features (the sanity line, ``heads="backbone"``), and the
membership signal of each set of heads. It then writes ``dp_runs`` (one row per epsilon) and
``utility`` rows in one transaction, keyed by its run id, with its run record; the trained heads
are listed in the ``heads`` table and each ``dp_runs`` row names its heads (``heads_id``,
``heads_path``, ``heads_fingerprint``, ``heads_cohort`` = the training cohort).

With ``DPSweep.selection`` set, each epsilon's hyper-parameters are chosen on a validation split
of the training patients (`engine.dp.selection`); every candidate is written to ``dp_selection``
and the ``dp_runs`` row carries the choice and the epsilon composed over all candidates.

Idempotent like every stage: the run id is a function of the sweep, the training config and a
fingerprint of the inputs (features, original heads, the cohort's content fingerprint); a finished
run whose rows are all present is reused and becomes the one shown. Heads already trained for an
epsilon with the same config and inputs are reloaded from ``heads_dir`` instead of retrained, so
adding one epsilon to a sweep trains only that one. The attack on each epsilon's heads is a
separate call (`engine.attack.stage.run_attack` with ``heads=label`` and `engine.heads.project`
applied to all items).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from engine import heads as heads_store
from engine import store
from engine.core.labels import CHEXPERT_LABELS
from engine.core.names import epsilon_label
from engine.dp.selection import Selection
from engine.dp.start import Start, check_disjoint, random_heads
from engine.dp.training import DPConfig
from engine.errors import ConfigError
from engine.runs import Run

log = logging.getLogger(__name__)

DEFAULT_EPSILONS = (0.34, 1.0, 2.0, 4.0, 8.0, math.inf)


@dataclass(frozen=True)
class DPSweep:
    """What the dp stage computes.

    Attributes:
        epsilons: Target epsilons (per privacy unit); ``inf`` is always added.
        train_split: Split the heads (and the probe) are trained on: the members.
        eval_split: Split the probe is scored on: the non-members.
        training: Hyper-parameters of every run of the sweep (the base of the candidates when
            `selection` is set).
        selection: Per-epsilon hyper-parameter selection on a validation split carved from the
            training split (`engine.dp.selection`); None trains `training` as it is. Its
            default candidates follow the start (`Selection.for_start`).
        start: Where every epsilon's training starts (`engine.dp.start`): seeded random heads
            (the default), heads fitted on a patient-disjoint public cohort, or the model's own.
    """

    epsilons: tuple[float, ...] = DEFAULT_EPSILONS
    train_split: str = "train"
    eval_split: str = "test"
    training: DPConfig = field(default_factory=DPConfig)
    selection: Selection | None = None
    start: Start = field(default_factory=Start)

    def __post_init__(self) -> None:
        for eps in self.epsilons:
            if not (isinstance(eps, (int, float)) and eps > 0):
                raise ConfigError(f"--epsilons: {eps!r} is not a positive number or inf")

    def sweep(self) -> tuple[float, ...]:
        """The epsilons in increasing order, inf included, duplicates removed."""
        return tuple(sorted(set(float(e) for e in self.epsilons) | {math.inf}))


@dataclass
class DPStageResult:
    """What `run_dp` did.

    Attributes:
        run_id: The stage's run id.
        reused: True when the finished run was found and nothing was recomputed.
        heads: Heads label (``inf``, ``0.34``, ...) -> folder holding ``heads.pt``/``heads.json``.
        dp_rows: Heads label -> its ``dp_runs`` values (empty when reused).
        utility: Heads label (also ``original`` and ``backbone``) -> probe result (empty when
            reused).
        membership: Heads label (also ``original``) -> membership signal of true-pair
            similarity, train vs eval split (empty when reused).
    """

    run_id: str
    reused: bool
    heads: dict[str, Path]
    dp_rows: dict[str, dict] = field(default_factory=dict)
    utility: dict = field(default_factory=dict)
    membership: dict = field(default_factory=dict)


def run_dp(
    db,
    *,
    model: str,
    cohort: str,
    items: pd.DataFrame,
    image_features: np.ndarray,
    text_features: np.ndarray,
    image_head,
    text_head,
    logit_scale: float,
    heads_dir: Path,
    logit_bias: float | None = None,
    sweep: DPSweep = DPSweep(),
    public_image_features: np.ndarray | None = None,
    public_text_features: np.ndarray | None = None,
    cohort_fingerprint: str | None = None,
    original_heads_id: str | None = None,
    public_start: tuple[np.ndarray, np.ndarray, np.ndarray, str | None] | None = None,
    progress=None,
    loss: str = "infonce",
) -> DPStageResult:
    """Run the epsilon sweep and store it; see the module docstring.

    Args:
        db: The DuckDB file.
        model: Model name (``models`` table).
        cohort: Cohort name.
        items: The audited items, aligned row by row with the features; needs ``image_id,
            patient_id, split`` and the 14 label columns.
        image_features: [n, d_img] float32 pre-projection image features.
        text_features: [n, d_txt] float32 pre-projection report features.
        image_head: The model's original image head (not modified).
        text_head: The model's original text head (not modified).
        logit_scale: The model's log logit scale (fixed during training).
        heads_dir: Folder for the trained heads of this model and cohort (e.g.
            ``cache/heads/<model>/<cohort>``).
        logit_bias: The model's bias: the sigmoid loss uses it (fixed), InfoNCE does not.
        sweep: Epsilons, splits and training config.
        public_image_features: Public negative pool for ``privacy_unit="pair"``.
        public_text_features: Likewise.
        cohort_fingerprint: The cohort's registered content fingerprint (part of the run's
            identity; the run is no longer shown once the cohort is re-registered).
        original_heads_id: Identity of the original heads (`engine.heads.original_heads_id`).
        public_start: For ``sweep.start`` ``public:COHORT``: that cohort's (image features,
            text features, patient ids, content fingerprint), all its pairs.
        progress: Optional ``update(n)`` object, advanced once per optimizer step.
        loss: The family's loss, ``infonce`` (CLIP) or ``sigmoid`` (SigLIP; docs/dp.md).
    """
    from engine.dp.training import train_heads
    from engine.utility import label_matrix, membership_signal, pair_similarity, probe_auroc

    n = len(items)
    if len(image_features) != n or len(text_features) != n:
        raise ValueError("items and features must be aligned row by row")
    train = (items["split"] == sweep.train_split).to_numpy()
    held = (items["split"] == sweep.eval_split).to_numpy()
    if not train.any():
        raise ConfigError(f"cohort {cohort!r} has no {sweep.train_split!r} items to train on")
    inputs = _fingerprint(image_features, text_features,
                          items["patient_id"].astype(str).to_numpy(), train, held,
                          _state_bytes(image_head), _state_bytes(text_head),
                          np.array([logit_scale], dtype=np.float64))
    start = sweep.start
    selection = None if sweep.selection is None else sweep.selection.for_start(start.kind)
    config = {"sweep": [epsilon_label(e) for e in sweep.sweep()],
              "train_split": sweep.train_split, "eval_split": sweep.eval_split,
              "training": asdict(sweep.training), "inputs": inputs, **start.config()}
    if start.kind == "public":
        if public_start is None:
            raise ConfigError(f"--start {start.describe()}: the public cohort's features are "
                              "needed (embed it with this model first)")
        check_disjoint(items["patient_id"], public_start[2], private=cohort,
                       public=str(start.cohort))
        config["start_inputs"] = _fingerprint(public_start[0], public_start[1],
                                              np.asarray(public_start[2], dtype=object))
    if selection is not None:  # only then: runs without selection keep their ids
        config["selection"] = selection.describe()
    if loss != "infonce":  # likewise: InfoNCE runs keep their ids
        config["loss"] = {"loss": loss, "logit_bias": logit_bias}
    run = Run("dp", model, cohort, config, heads_cohort=cohort,
              cohort_fingerprint=cohort_fingerprint, source_fingerprint=cohort_fingerprint)
    labels_of = {start.label(epsilon_label(e)): e for e in sweep.sweep()}
    folders = {label: Path(heads_dir) / _heads_key(label, config) for label in labels_of}
    if all((f / "dp.json").exists() for f in folders.values()) and run.reuse(db):
        return DPStageResult(run.run_id, True, folders)

    pair_ids = items["image_id"].astype(str).to_numpy()[train]
    patients = items["patient_id"].astype(str).to_numpy()[train]
    heads = {"original": (image_head, text_head)}
    dp_rows: dict[str, dict] = {}
    start_image, start_text = None, None
    for label, eps in labels_of.items():
        folder = folders[label]
        if (folder / "dp.json").exists():
            log.info("dp %s/%s epsilon=%s: reusing heads in %s", model, cohort, label, folder)
            heads[label], dp_rows[label] = _load(folder)
            if progress is not None:
                from engine.dp.training import planned_steps

                progress.update(planned_steps(int(train.sum()), sweep.training))
            continue
        if start_image is None:
            start_image, start_text = starting_heads(
                start, image_head, text_head, logit_scale=logit_scale, config=sweep.training,
                public_start=public_start, loss=loss, logit_bias=logit_bias)
        picked = None
        if selection is not None:
            from engine.dp.selection import select_for_split

            picked = select_for_split(
                items, image_features, text_features, train_split=sweep.train_split,
                epsilon=eps, base=sweep.training, selection=selection,
                image_head=start_image, text_head=start_text, logit_scale=logit_scale,
                public_image_features=public_image_features,
                public_text_features=public_text_features, progress=progress,
                loss=loss, logit_bias=logit_bias)
            result = picked.result
        else:
            result = train_heads(
                image_features[train], text_features[train], patients,
                image_head=start_image, text_head=start_text, logit_scale=logit_scale,
                epsilon=eps, config=sweep.training, pair_ids=pair_ids,
                public_image_features=public_image_features,
                public_text_features=public_text_features, progress=progress,
                loss=loss, logit_bias=logit_bias,
            )
        log.info("dp %s/%s epsilon=%s: sigma=%.4g, spent epsilon=%.4g (%s), patient epsilon=%.4g,"
                 " %d steps, %.1f s, %d pairs dropped", model, cohort, label,
                 result.noise_multiplier, result.epsilon, result.accountant,
                 result.patient_epsilon, result.steps, result.seconds, result.n_pairs_dropped)
        row = {**result.dp_row(), "target_epsilon": eps, "heads": label,
               "seconds": result.seconds, "n_units": result.n_units,
               "n_pairs_dropped": result.n_pairs_dropped, "final_loss": result.final_loss,
               "grad_sample_mode": result.grad_sample_mode, "start": start.describe(),
               "covers_start": start.covers_start}
        if picked is not None:
            row.update(picked.summary(), selection=picked.rows())
        fp = heads_store.state_fingerprint(result.image_head, result.text_head)
        identity = {"heads_id": heads_store.trained_heads_id(label, cohort, fp), "heads": label,
                    "model": model, "heads_cohort": cohort, "epsilon": eps, "fingerprint": fp,
                    "start": start.describe()}
        heads_store.save_heads(folder, result.image_head, result.text_head,
                               logit_scale=logit_scale, logit_bias=logit_bias,
                               identity=identity, extra={"dp.json": row})
        heads[label], dp_rows[label] = (result.image_head, result.text_head), row

    labels = label_matrix(items, CHEXPERT_LABELS)
    utility = {"backbone": probe_auroc(image_features[train], labels[train],
                                       image_features[held], labels[held])}
    membership = {}
    for label, (ih, th) in heads.items():
        img = heads_store.project(image_features, ih)
        utility[label] = probe_auroc(img[train], labels[train], img[held], labels[held])
        txt = heads_store.project(text_features, th)
        sims = pair_similarity(img, txt)
        membership[label] = membership_signal(sims[train], sims[held])

    keys = dict(run_id=run.run_id, model=model, cohort=cohort)
    ids = {label: _identity(folders[label], label, cohort) for label in dp_rows}
    ident = {label: dict(heads_id=i["heads_id"], heads_cohort=cohort)
             for label, i in ids.items()}
    ident["original"] = dict(heads_id=original_heads_id, heads_cohort=None)
    ident["backbone"] = dict(heads_id=None, heads_cohort=None)
    dp_frame = pd.DataFrame([{**keys, **row, **ident[label], "heads_path": str(folders[label]),
                              "heads_fingerprint": ids[label]["fingerprint"]}
                             for label, row in dp_rows.items()])
    util_frame = pd.DataFrame([{**keys, "heads": label, **ident[label], **r}
                               for label, probe in utility.items() for r in probe.rows()])
    selection_frame = pd.DataFrame([{**keys, "heads": label, **ident[label],
                                     "target_epsilon": row.get("target_epsilon"), **r}
                                    for label, row in dp_rows.items()
                                    for r in row.get("selection") or []])
    member_frame = pd.DataFrame([{**keys, "heads": label, **ident[label], **asdict(signal)}
                                 for label, signal in membership.items()])
    with store.connect_write(db) as con, store.transaction(con):
        store.replace_rows(con, "dp_runs", _known_columns(con, "dp_runs", dp_frame),
                           run_id=run.run_id)
        store.replace_rows(con, "utility", util_frame, run_id=run.run_id)
        store.replace_rows(con, "membership", _known_columns(con, "membership", member_frame),
                           run_id=run.run_id)
        store.replace_rows(con, "dp_selection",
                           _known_columns(con, "dp_selection", selection_frame),
                           run_id=run.run_id)
        heads_store.register(con, [dict(heads_id=i["heads_id"], model=model, heads=label,
                                        heads_cohort=cohort, epsilon=dp_rows[label].get(
                                            "target_epsilon"), fingerprint=i["fingerprint"],
                                        start=start.describe(),
                                        path=str(folders[label]), run_id=run.run_id)
                                   for label, i in ids.items()])
        run.record(con, status="done", n_rows=len(dp_frame) + len(util_frame),
                   message=json.dumps({k: asdict(v) for k, v in membership.items()}))
    return DPStageResult(run.run_id, False, folders, dp_rows, utility, membership)


def starting_heads(start: Start, image_head, text_head, *, logit_scale: float, config: DPConfig,
                   public_start=None, loss: str = "infonce", logit_bias: float | None = None):
    """The heads every epsilon of a sweep starts from (`engine.dp.start`).

    ``random``: `random_heads` of the model's heads' shapes. ``original``: the model's heads.
    ``public``: random heads fitted without privacy (epsilon = inf, `config`'s schedule) on
    every pair of the public cohort (``public_start``: image features, text features, patients).
    """
    if start.kind == "original":
        return image_head, text_head
    image, text = random_heads(image_head, text_head, start.seed)
    if start.kind == "random":
        return image, text
    from engine.dp.training import train_heads

    pub_image, pub_text, pub_patients = public_start[0], public_start[1], public_start[2]
    fitted = train_heads(np.asarray(pub_image, dtype=np.float32),
                         np.asarray(pub_text, dtype=np.float32), list(map(str, pub_patients)),
                         image_head=image, text_head=text, logit_scale=logit_scale,
                         epsilon=math.inf, config=config, loss=loss, logit_bias=logit_bias)
    log.info("dp start public:%s: heads fitted on %d public pairs in %.1f s", start.cohort,
             len(pub_patients), fitted.seconds)
    return fitted.image_head, fitted.text_head


def _known_columns(con, table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Keep the frame's columns that the table has (extra result fields are optional columns)."""
    cols = {name for (name,) in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE table_name = ?", [table]).fetchall()}
    return frame.loc[:, [c for c in frame.columns if c in cols]]


def _fingerprint(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.asarray(a)
        if a.dtype == object:
            h.update("\x1f".join(map(str, a.tolist())).encode())
        else:
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(b"\x1e")
    return h.hexdigest()[:16]


def _state_bytes(head) -> np.ndarray:
    parts = [v.detach().float().reshape(-1).numpy() for v in head.state_dict().values()]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def _heads_key(label: str, config: dict) -> str:
    payload = json.dumps({"epsilon": label, "training": config["training"],
                          "train_split": config["train_split"], "inputs": config["inputs"],
                          "start": config.get("start"), "start_seed": config.get("start_seed"),
                          "start_inputs": config.get("start_inputs"),
                          "selection": config.get("selection"),
                          **({"loss": config["loss"]} if "loss" in config else {})},
                         sort_keys=True, default=str)
    return f"eps-{label}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def _load(folder: Path):
    loaded = heads_store.load_heads(folder)
    row = heads_store.read_json(folder, "dp.json")
    return (loaded.image, loaded.text), row


def _identity(folder: Path, label: str, cohort: str) -> dict:
    """The heads folder's identity (computed for folders written before identities existed)."""
    identity = heads_store.read_json(folder, heads_store.IDENTITY)
    if identity is None:
        loaded = heads_store.load_heads(folder)
        fp = heads_store.state_fingerprint(loaded.image, loaded.text)
        identity = {"heads_id": heads_store.trained_heads_id(label, cohort, fp),
                    "fingerprint": fp}
    return identity
