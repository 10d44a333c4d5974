"""Projection heads as artefacts with an identity: save, load, list, project.

A set of heads is an image head and a text head (`nn.Linear` or the model's MLP) plus the
model's fixed temperature. Every set has an identity, recorded in the ``heads`` table:

* ``heads``: the label, ``original`` or the epsilon label of DP-retrained heads (``inf``,
  ``0.34``, ``1``, ...);
* ``heads_cohort``: the cohort the heads were trained on (None for the model's own heads);
* ``model`` and ``epsilon``;
* ``fingerprint``: a content hash of the weights (DP heads) or, for the original heads, the
  model's weights fingerprint (they are part of the model);
* ``heads_id``: ``original-<model fingerprint>`` or ``<label>@<cohort>-<fingerprint>``.

Layout of a heads folder (the embed stage writes the original heads into the embedding folder,
the dp stage one folder per epsilon under ``cache/heads/<model>/<cohort>/``)::

    heads.pt      {"image": state_dict, "text": state_dict}
    heads.json    structure of both heads, logit_scale, logit_bias (tower types for originals)
    identity.json the identity above (DP heads)
    dp.json       the dp_runs values of the training run (DP heads)

Which heads the transfer and the map use is never guessed from file times: it is read from the
``shown_dp_runs`` view (`list_trained`). torch, pandas and the store are imported only by the
functions that need them, so readers of embeddings (`engine.embed.reader`) stay numpy-only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ConfigError
from engine.files import replacing, write_failure

log = logging.getLogger(__name__)

IDENTITY = "identity.json"


@dataclass
class Heads:
    """A set of projection heads rebuilt as torch modules.

    Attributes:
        image: ``nn.Linear`` or ``nn.Sequential``: [B, d_img] -> [B, e].
        text: likewise [B, d_txt] -> [B, e].
        logit_scale: Log temperature of the model (fixed during DP retraining).
        logit_bias: SigLIP's bias, or None.
        description: The JSON structure the modules were rebuilt from.
    """

    image: Any
    text: Any
    logit_scale: float
    logit_bias: float | None
    description: dict


@dataclass(frozen=True)
class HeadsRef:
    """Where a stored set of heads is and who it is (a row of ``shown_dp_runs``)."""

    heads_id: str
    heads: str
    heads_cohort: str
    folder: Path
    fingerprint: str | None


def family_loss(manifest: dict, logit_bias: float | None) -> str:
    """The loss the model's family trained its heads with (the embedding's manifest says; an
    embedding written before families were recorded: sigmoid when the model has a bias)."""
    loss = manifest.get("loss")
    if loss in ("infonce", "sigmoid"):
        return loss
    return "sigmoid" if logit_bias is not None else "infonce"


def original_heads_id(model_fingerprint: str) -> str:
    """Identity of a model's own heads: they are part of the model's weights."""
    return f"original-{model_fingerprint[:12]}"


def trained_heads_id(label: str, heads_cohort: str, fingerprint: str) -> str:
    """Identity of retrained heads: label, training cohort and weights."""
    return f"{label}@{heads_cohort}-{fingerprint[:12]}"


def state_fingerprint(image_head, text_head) -> str:
    """sha256 (16 hex) of both heads' parameters, key by key (float32 bytes)."""
    digest = hashlib.sha256()
    for tower, head in (("image", image_head), ("text", text_head)):
        for key, value in sorted(head.state_dict().items()):
            digest.update(f"{tower}.{key}{tuple(value.shape)}".encode())
            digest.update(value.detach().float().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def save_heads(folder: Path, image_head, text_head, *, logit_scale: float,
               logit_bias: float | None, identity: dict | None = None,
               extra: dict[str, dict] | None = None, towers: dict | None = None) -> None:
    """Write a heads folder atomically (temp folder, then rename into place).

    Args:
        folder: The heads folder (replaced if present).
        identity: Written as ``identity.json`` (heads_id, label, cohort, epsilon, fingerprint).
        extra: More JSON files, name -> content (the dp stage's ``dp.json``).
        towers: Tower types, recorded in ``heads.json`` (original heads).
    """
    import torch

    from engine.models.split import describe_head

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        torch.save({"image": image_head.state_dict(), "text": text_head.state_dict()},
                   tmp / "heads.pt")
        description = {"image": describe_head(image_head), "text": describe_head(text_head),
                       "logit_scale": logit_scale, "logit_bias": logit_bias}
        if towers is not None:
            description["towers"] = towers
        (tmp / "heads.json").write_text(json.dumps(description, indent=2), encoding="utf-8")
        for name, content in {**({IDENTITY: identity} if identity else {}),
                              **(extra or {})}.items():
            (tmp / name).write_text(json.dumps(content, indent=2, default=str),
                                    encoding="utf-8")
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk leaves no partial folder
        failure = write_failure(tmp / "heads.pt", exc)
        if failure is None:
            raise
        raise failure from None
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def save_into(folder: Path, image_head, text_head, *, logit_scale: float,
              logit_bias: float | None, towers: dict | None = None) -> None:
    """Write ``heads.pt`` and ``heads.json`` into an existing folder (the embedding folder)."""
    import torch

    from engine.models.split import describe_head

    folder = Path(folder)
    with replacing(folder / "heads.pt") as tmp:
        torch.save({"image": image_head.state_dict(), "text": text_head.state_dict()}, tmp)
    description = {"image": describe_head(image_head), "text": describe_head(text_head),
                   "logit_scale": logit_scale, "logit_bias": logit_bias}
    if towers is not None:
        description["towers"] = towers
    with replacing(folder / "heads.json") as tmp:
        tmp.write_text(json.dumps(description, indent=2), encoding="utf-8")


def load_heads(folder: Path) -> Heads:
    """Rebuild the heads stored in a folder (``heads.pt`` + ``heads.json``)."""
    import torch

    from engine.models.split import build_head

    description = json.loads((Path(folder) / "heads.json").read_text(encoding="utf-8"))
    state = torch.load(Path(folder) / "heads.pt", map_location="cpu", weights_only=True)
    modules = {}
    for tower in ("image", "text"):
        module = build_head(description[tower])
        module.load_state_dict(state[tower])
        modules[tower] = module.eval()
    return Heads(image=modules["image"], text=modules["text"],
                 logit_scale=float(description["logit_scale"]),
                 logit_bias=description.get("logit_bias"), description=description)


def read_json(folder: Path, name: str) -> dict | None:
    """One JSON file of a heads folder, or None when absent."""
    path = Path(folder) / name
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def list_trained(db: Path, model: str, cohort: str) -> dict[str, HeadsRef]:
    """The DP heads shown for (model, trained on cohort): label -> `HeadsRef`, by epsilon label.

    Read from ``shown_dp_runs``, so these are exactly the heads whose dp rows the dashboard and
    the report show. A folder that is gone is left out with a warning.
    """
    from engine import store

    if not Path(db).exists():
        return {}
    frame = store.read_df(
        db, "SELECT heads, heads_id, heads_path, heads_fingerprint FROM shown_dp_runs "
            "WHERE model = ? AND cohort = ? AND heads_path IS NOT NULL ORDER BY heads",
        [model, cohort])
    out = {}
    for row in frame.itertuples(index=False):
        folder = Path(row.heads_path)
        if not (folder / "heads.pt").exists():
            log.warning("heads %s of %s on %s: folder %s is gone; skipped", row.heads, model,
                        cohort, folder)
            continue
        out[str(row.heads)] = HeadsRef(str(row.heads_id), str(row.heads), cohort, folder,
                                       row.heads_fingerprint)
    return out


def require_trained(db: Path, model: str, cohort: str) -> dict[str, HeadsRef]:
    """`list_trained`, raising a one-line error when there are none."""
    found = list_trained(db, model, cohort)
    if not found:
        raise ConfigError(f"no DP heads of {model!r} trained on {cohort!r}; run `python -m "
                          f"engine dp --model {model} --cohort {cohort}` first")
    return found


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
        from engine.models.split import head_out_features

        return np.zeros((0, head_out_features(head)), dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


def register(con, rows: list[dict]) -> None:
    """Upsert rows of the ``heads`` table on an open write connection (caller's transaction)."""
    import pandas as pd

    from engine import store

    for row in rows:
        store.replace_rows(con, "heads", pd.DataFrame([row]), heads_id=row["heads_id"])
