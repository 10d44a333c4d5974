"""The `dp` stage: an epsilon sweep of retrained heads, their utility, into DuckDB and cache/.

For one model and cohort, `run_dp` retrains the heads at every epsilon of the sweep (infinity
always included: the same loop without clipping or noise) on the train split
(`engine.dp.training.train_heads`), saves each set of heads under ``heads_dir`` in the embed
stage's format (``heads.pt`` + ``heads.json``, loadable with `engine.embed.reader.load_heads`),
measures utility with the 14-label probe (`engine.utility.probe_auroc`) for the original heads,
every epsilon, and the frozen backbone features (the sanity line, ``heads="backbone"``), and the
membership signal of each set of heads. It then writes ``dp_runs`` (one row per epsilon) and
``utility`` rows in one transaction, keyed by (model, cohort), with its run record.

Idempotent like every stage: the run id is a function of the sweep, the training config and a
fingerprint of the inputs; a finished run is reused. Heads already trained for an epsilon with
the same config and inputs are reloaded from ``heads_dir`` instead of retrained, so adding one
epsilon to a sweep trains only that one. The attack on each epsilon's heads is a separate call
(`engine.attack.stage.run_attack` with ``heads=label`` and `project` applied to all items).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from engine import store
from engine.dp.training import DPConfig
from engine.errors import ConfigError
from engine.labels import CHEXPERT_LABELS
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
        training: Hyper-parameters of every run of the sweep.
    """

    epsilons: tuple[float, ...] = DEFAULT_EPSILONS
    train_split: str = "train"
    eval_split: str = "test"
    training: DPConfig = field(default_factory=DPConfig)

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


def epsilon_label(epsilon: float) -> str:
    """The ``heads`` label of an epsilon: ``inf``, ``0.34``, ``1``, ``8``."""
    return "inf" if math.isinf(epsilon) else f"{epsilon:g}"


def project(features: np.ndarray, head, *, batch_size: int = 65536) -> np.ndarray:
    """``normalize(head(features))``: [n, d] float32 -> [n, e] float32, L2-normalised rows."""
    import torch
    import torch.nn.functional as F

    out = []
    head = head.eval()
    with torch.no_grad():
        for start in range(0, len(features), batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(features[start:start + batch_size],
                                                          dtype=np.float32))
            out.append(F.normalize(head(chunk), dim=-1).numpy())
    if not out:
        return np.zeros((0, _out_features(head)), dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


def trained_heads_folders(heads_dir: Path) -> dict[str, Path]:
    """The newest finished heads folder per heads label under `heads_dir` (empty if none)."""
    newest: dict[str, tuple[float, Path]] = {}
    for marker in Path(heads_dir).glob("eps-*/dp.json"):
        folder = marker.parent
        label = folder.name.split("-")[1]
        stamp = marker.stat().st_mtime
        if label not in newest or stamp > newest[label][0]:
            newest[label] = (stamp, folder)
    return {label: folder for label, (_, folder) in sorted(newest.items())}


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
    progress=None,
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
        logit_bias: Stored with the heads for completeness (the InfoNCE loss does not use it).
        sweep: Epsilons, splits and training config.
        public_image_features: Public negative pool for ``privacy_unit="pair"``.
        public_text_features: Likewise.
        progress: Optional ``update(n)`` object, advanced once per optimizer step.
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
    config = {"sweep": [epsilon_label(e) for e in sweep.sweep()],
              "train_split": sweep.train_split, "eval_split": sweep.eval_split,
              "training": asdict(sweep.training), "inputs": inputs}
    run = Run("dp", model, cohort, config)
    folders = {epsilon_label(e): Path(heads_dir) / _heads_key(epsilon_label(e), config)
               for e in sweep.sweep()}
    if run.is_done(db) and all((f / "dp.json").exists() for f in folders.values()):
        return DPStageResult(run.run_id, True, folders)

    pair_ids = items["image_id"].astype(str).to_numpy()[train]
    patients = items["patient_id"].astype(str).to_numpy()[train]
    heads = {"original": (image_head, text_head)}
    dp_rows: dict[str, dict] = {}
    for eps in sweep.sweep():
        label = epsilon_label(eps)
        folder = folders[label]
        if (folder / "dp.json").exists():
            log.info("dp %s/%s epsilon=%s: reusing heads in %s", model, cohort, label, folder)
            heads[label], dp_rows[label] = _load(folder)
            if progress is not None:
                from engine.dp.training import planned_steps

                progress.update(planned_steps(int(train.sum()), sweep.training))
            continue
        result = train_heads(
            image_features[train], text_features[train], patients,
            image_head=image_head, text_head=text_head, logit_scale=logit_scale, epsilon=eps,
            config=sweep.training, pair_ids=pair_ids,
            public_image_features=public_image_features,
            public_text_features=public_text_features, progress=progress,
        )
        log.info("dp %s/%s epsilon=%s: sigma=%.4g, spent epsilon=%.4g (%s), patient epsilon=%.4g,"
                 " %d steps, %.1f s, %d pairs dropped", model, cohort, label,
                 result.noise_multiplier, result.epsilon, result.accountant,
                 result.patient_epsilon, result.steps, result.seconds, result.n_pairs_dropped)
        row = {**result.dp_row(), "target_epsilon": eps, "heads": label,
               "seconds": result.seconds, "n_units": result.n_units,
               "n_pairs_dropped": result.n_pairs_dropped, "final_loss": result.final_loss,
               "grad_sample_mode": result.grad_sample_mode}
        _save(folder, result.image_head, result.text_head, logit_scale, logit_bias, row)
        heads[label], dp_rows[label] = (result.image_head, result.text_head), row

    labels = label_matrix(items, CHEXPERT_LABELS)
    utility = {"backbone": probe_auroc(image_features[train], labels[train],
                                       image_features[held], labels[held])}
    membership = {}
    for label, (ih, th) in heads.items():
        img = project(image_features, ih)
        utility[label] = probe_auroc(img[train], labels[train], img[held], labels[held])
        txt = project(text_features, th)
        sims = pair_similarity(img, txt)
        membership[label] = membership_signal(sims[train], sims[held])

    keys = dict(run_id=run.run_id, model=model, cohort=cohort)
    dp_frame = pd.DataFrame([{**keys, **row} for row in dp_rows.values()])
    util_frame = pd.DataFrame([{**keys, "heads": label, **r}
                               for label, probe in utility.items() for r in probe.rows()])
    with store.connect_write(db) as con, store.transaction(con):
        dp_frame = _known_columns(con, "dp_runs", dp_frame)
        store.replace_rows(con, "dp_runs", dp_frame, model=model, cohort=cohort)
        store.replace_rows(con, "utility", util_frame, model=model, cohort=cohort)
        member_frame = pd.DataFrame([{**keys, "heads": label, **asdict(signal)}
                                     for label, signal in membership.items()])
        store.replace_rows(con, "membership", _known_columns(con, "membership", member_frame),
                           model=model, cohort=cohort)
        run.record(con, status="done", n_rows=len(dp_frame) + len(util_frame),
                   message=json.dumps({k: asdict(v) for k, v in membership.items()}))
    return DPStageResult(run.run_id, False, folders, dp_rows, utility, membership)


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
                          "train_split": config["train_split"], "inputs": config["inputs"]},
                         sort_keys=True, default=str)
    return f"eps-{label}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def _save(folder: Path, image_head, text_head, logit_scale, logit_bias, row: dict) -> None:
    """Write heads.pt, heads.json and dp.json into a temp folder, then rename it into place."""
    import torch

    from engine.models.split import describe_head

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save({"image": image_head.state_dict(), "text": text_head.state_dict()},
               tmp / "heads.pt")
    (tmp / "heads.json").write_text(json.dumps({
        "image": describe_head(image_head), "text": describe_head(text_head),
        "logit_scale": logit_scale, "logit_bias": logit_bias,
    }, indent=2), encoding="utf-8")
    (tmp / "dp.json").write_text(json.dumps(row, indent=2, default=str), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def _load(folder: Path):
    from engine.embed.reader import load_heads

    heads = load_heads(folder)
    row = json.loads((Path(folder) / "dp.json").read_text(encoding="utf-8"))
    return (heads.image, heads.text), row


def _out_features(head) -> int:
    from engine.models.split import head_out_features

    return head_out_features(head)
