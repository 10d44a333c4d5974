"""Embeddings from anywhere: `import-embeddings` stores vectors exported by a model's own code.

Models that load only with their own code (BioViL-T / CXR-BERT, MedImageInsight, CXR-CLIP,
MedCLIP, GLoRIA) cannot be plugged in; a hospital can still export, per image id, either

* **features** (kind ``features``): the pre-projection image and report features plus the two
  projection heads' weights (safetensors, or ``.pt`` read weights-only; a Linear per tower, or a
  small MLP described in a JSON file): every stage runs (attack, DP, transfer, umap, report); or
* **final embeddings** (kind ``final``): the attack, umap and report run; `dp` and the adaptive
  attacker refuse in one line, since they fit heads.

Vectors come as one Parquet file (``image_id`` plus list columns ``image`` and ``text``) or two
``.npy`` matrices plus an ids file (``.txt`` one id a line, ``.json`` list, or ``.csv`` with an
``image_id`` column). The ids must be exactly the registered cohort's audited items (missing,
extra and duplicated ids are named), every value finite. The result is the embed stage's folder
layout (`engine.embed.reader`), keyed the same way, with the model registered under
``imported:<digest>`` (`engine.models.families.imported`), so later stages cannot tell an import
from an embedding run except by the manifest's ``import_kind``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from engine.cohort.registry import read_cohort
from engine.errors import ConfigError

KINDS = ("features", "final")
MAX_NAMED = 5
# CLIP's initial temperature, used when neither --logit-scale nor the heads' JSON gives one.
DEFAULT_LOGIT_SCALE = math.log(100.0)


class ImportError_(ConfigError):  # noqa: N801 - not the builtin ImportError
    """A file given to `import-embeddings` is not what it should be (one line naming it)."""


@dataclass
class ImportResult:
    folder: Path
    model: str
    spec: str
    cohort: str
    kind: str
    n_items: int
    image_width: int
    text_width: int
    embed_dim: int
    reused: bool


def read_vectors(*, table: Path | None = None, image: Path | None = None,
                 text: Path | None = None, ids: Path | None = None
                 ) -> tuple[list[str], np.ndarray, np.ndarray, str]:
    """(ids, image matrix, text matrix, where) from a Parquet table or two .npy files + ids."""
    if table is not None:
        if image is not None or text is not None or ids is not None:
            raise ConfigError("give either --table FILE.parquet or --image/--text/--ids, not both")
        return _read_table(Path(table))
    if image is None or text is None or ids is None:
        raise ConfigError("give --table FILE.parquet, or all of --image FILE.npy --text FILE.npy "
                          "--ids FILE")
    image_m = _read_npy(Path(image))
    text_m = _read_npy(Path(text))
    id_list = _read_ids(Path(ids))
    for path, matrix in ((Path(image), image_m), (Path(text), text_m)):
        if len(matrix) != len(id_list):
            raise ImportError_(f"{path}: {len(matrix)} rows but {ids} has {len(id_list)} ids; "
                               "row i must be the vector of id i")
    _check_finite(Path(image), image_m, id_list)
    _check_finite(Path(text), text_m, id_list)
    return id_list, image_m, text_m, f"{image}, {text}"


def _read_table(path: Path):
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes one line
        raise ImportError_(f"{path}: not a readable Parquet file ({_first_line(exc)})") from exc
    missing = [c for c in ("image_id", "image", "text") if c not in frame.columns]
    if missing:
        raise ImportError_(f"{path}: no column {', '.join(missing)} (expected image_id and the "
                           "list columns image and text)")
    if frame["image_id"].isna().any():
        row = int(np.flatnonzero(frame["image_id"].isna().to_numpy())[0])
        raise ImportError_(f"{path}: row {row + 2}: image_id is empty")
    ids = frame["image_id"].astype(str).tolist()
    matrices = []
    for column in ("image", "text"):
        rows, width = [], None
        for i, value in enumerate(frame[column].tolist()):
            where = f"{path}: row {i + 2} (image_id {ids[i]!r}), column {column}"
            try:
                vector = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError):
                raise ImportError_(f"{where}: not a list of numbers") from None
            if vector.ndim != 1 or vector.size == 0:
                raise ImportError_(f"{where}: not a list of numbers")
            if width is None:
                width = vector.size
            elif vector.size != width:
                raise ImportError_(f"{where}: {vector.size} values, the first row has {width}")
            rows.append(vector)
        if not rows:
            raise ImportError_(f"{path}: no rows")
        matrix = np.stack(rows)
        _check_finite(path, matrix, ids, column=column, header=True)
        matrices.append(matrix.astype(np.float32))
    return ids, matrices[0], matrices[1], str(path)


def _read_npy(path: Path) -> np.ndarray:
    try:
        matrix = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001
        raise ImportError_(f"{path}: not a readable .npy matrix ({_first_line(exc)})") from exc
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ImportError_(f"{path}: shape {tuple(matrix.shape)}; expected [items, width]")
    if not np.issubdtype(matrix.dtype, np.number) or np.iscomplexobj(matrix):
        raise ImportError_(f"{path}: dtype {matrix.dtype}; expected real numbers")
    return matrix.astype(np.float32)


def _read_ids(path: Path) -> list[str]:
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, list) or not all(isinstance(v, (str, int)) for v in data):
                raise ImportError_(f"{path}: expected a JSON list of image ids")
            return [str(v) for v in data]
        if path.suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            if "image_id" not in frame.columns:
                raise ImportError_(f"{path}: no image_id column")
            return frame["image_id"].tolist()
        lines = path.read_text(encoding="utf-8").splitlines()
    except ImportError_:
        raise
    except (OSError, ValueError) as exc:
        raise ImportError_(f"{path}: cannot read the ids ({_first_line(exc)})") from exc
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.strip() for line in lines]


def _check_finite(path: Path, matrix: np.ndarray, ids: list[str], *, column: str = "",
                  header: bool = False) -> None:
    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if bad.size:
        row = int(bad[0])
        what = f", column {column}" if column else ""
        raise ImportError_(
            f"{path}: row {row + (2 if header else 1)} (image_id {ids[row]!r}){what} has NaN or "
            f"infinite values ({bad.size} such row{'s' if bad.size != 1 else ''})")


def check_ids(ids: list[str], cohort_ids: list[str], where: str, cohort: str) -> None:
    """The ids must be the cohort's audited items, each once (missing / extra / repeated named)."""
    seen: dict[str, int] = {}
    for i in ids:
        seen[i] = seen.get(i, 0) + 1
    repeated = [i for i, n in seen.items() if n > 1]
    if repeated:
        raise ImportError_(f"{where}: {len(repeated)} image ids appear more than once "
                           f"({_names(repeated)})")
    want = set(cohort_ids)
    missing = [i for i in cohort_ids if i not in seen]
    extra = [i for i in ids if i not in want]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of the cohort's image ids are missing "
                         f"({_names(missing)})")
        if extra:
            parts.append(f"{len(extra)} ids are not in the cohort ({_names(extra)})")
        raise ImportError_(f"{where}: {'; '.join(parts)}; the vectors must cover exactly the "
                           f"audited items of cohort {cohort!r} ({len(cohort_ids)} image ids)")


def _names(values: list[str]) -> str:
    shown = ", ".join(repr(v) for v in values[:MAX_NAMED])
    return shown + (", ..." if len(values) > MAX_NAMED else "")


def read_heads(path: Path, config: Path | None, image_width: int, text_width: int):
    """(image head, text head, settings) from a weights file and an optional JSON description.

    The weights are either nested (``{"image": state_dict, "text": state_dict}``) or flat with
    ``image.`` / ``text.`` prefixes. Without a description each head is a Linear whose sizes are
    read off ``image.weight`` (and ``image.bias`` when present). The description is
    ``{"image": HEAD, "text": HEAD, "logit_scale": ..., "logit_bias": ...}`` with HEAD as in
    `engine.models.split.describe_head` (``Linear`` / ``Sequential`` of Linear and activations).
    """
    from engine.errors import ModelLoadError
    from engine.models.split import build_head, head_in_features, head_out_features

    state = _read_weights(Path(path))
    settings: dict = {}
    if config is not None:
        try:
            settings = json.loads(Path(config).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ImportError_(f"{config}: not valid JSON ({_first_line(exc)})") from exc
        if not isinstance(settings, dict):
            raise ImportError_(f"{config}: expected a JSON object with image and text heads")
    heads = []
    for tower, width in (("image", image_width), ("text", text_width)):
        part = state.get(tower)
        if not isinstance(part, dict):
            part = {k[len(tower) + 1:]: v for k, v in state.items()
                    if isinstance(k, str) and k.startswith(tower + ".")}
        if not part:
            raise ImportError_(f"{path}: no {tower} head weights (keys {tower}.weight, ... or a "
                               f"nested {tower!r} state dict)")
        if tower in settings:
            try:
                head = build_head(settings[tower])
            except (KeyError, TypeError, ModelLoadError) as exc:
                raise ImportError_(f"{config}: the {tower} head description is not valid "
                                   f"({_first_line(exc)})") from exc
        else:
            weight = part.get("weight")
            if weight is None or getattr(weight, "ndim", 0) != 2:
                raise ImportError_(f"{path}: the {tower} head is not one Linear ({tower}.weight "
                                   "[out, in]); describe an MLP with --heads-config")
            import torch

            head = torch.nn.Linear(int(weight.shape[1]), int(weight.shape[0]),
                                   bias="bias" in part)
        from engine.models.loading import _mismatch_summary

        try:
            result = head.load_state_dict(part, strict=False)
        except Exception as exc:  # noqa: BLE001
            raise ImportError_(f"{path}: the {tower} head's weights do not fit "
                               f"({_mismatch_summary(exc)})") from exc
        if result.missing_keys or result.unexpected_keys:
            raise ImportError_(f"{path}: the {tower} head's weights do not fit: missing "
                               f"{_names(result.missing_keys) or 'none'}, unexpected "
                               f"{_names(result.unexpected_keys) or 'none'}")
        if head_in_features(head) != width:
            raise ImportError_(f"{path}: the {tower} head takes {head_in_features(head)} "
                               f"features but the {tower} vectors have {width}")
        head.float().eval().requires_grad_(False)
        heads.append(head)
    if head_out_features(heads[0]) != head_out_features(heads[1]):
        raise ImportError_(f"{path}: the image head gives {head_out_features(heads[0])} values "
                           f"and the text head {head_out_features(heads[1])}; they must share "
                           "one embedding space")
    return heads[0], heads[1], settings


def _read_weights(path: Path) -> dict:
    if not path.is_file():
        raise ImportError_(f"heads file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path)))
        import torch

        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a pickle with code, a corrupt file: one line
        text = _first_line(exc)
        if "Weights only load failed" in text or "weights_only" in str(exc):
            raise ImportError_(
                f"{path}: not a weights-only file (it holds Python objects besides tensors, "
                "which are never unpickled here); save the heads' state_dict() or use "
                "safetensors") from exc
        raise ImportError_(f"{path}: not a readable weights file ({text})") from exc
    if not isinstance(state, dict):
        raise ImportError_(f"{path}: not a state dict (a mapping of names to tensors)")
    return state


def import_embeddings(db: Path, cache: Path, *, model: str, cohort: str,
                      table: Path | None = None, image: Path | None = None,
                      text: Path | None = None, ids: Path | None = None,
                      heads: Path | None = None, heads_config: Path | None = None,
                      logit_scale: float | None = None, logit_bias: float | None = None,
                      description: str = "") -> ImportResult:
    """Check and store imported vectors as the embedding of `cohort` by `model`.

    Raises:
        ConfigError: a file, shape, id or value that is not what it should be (one line).
    """
    import torch
    import torch.nn.functional as F

    from engine.embed import stage
    from engine.embed.reader import CURRENT, MANIFEST, pair_dir
    from engine.heads import save_into
    from engine.models.families.imported import spec_for
    from engine.models.registry import ModelEntry, read_registry
    from engine.runs import Run

    if any(e.name == model for e in read_registry(cache)):
        raise ConfigError(f"--model {model!r} is a model of the package registry; choose another "
                          "name for imported embeddings")
    if heads_config is not None and heads is None:
        raise ConfigError("--heads-config describes the heads given with --heads; give both")
    meta, items = read_cohort(db, cohort)
    if items.empty:
        raise ConfigError(f"cohort {cohort!r} has no selected items")
    items = items.reset_index(drop=True)
    id_list, image_m, text_m, where = read_vectors(table=table, image=image, text=text, ids=ids)
    check_ids(id_list, items["image_id"].astype(str).tolist(), where, cohort)
    order = {i: r for r, i in enumerate(id_list)}
    rows = np.array([order[i] for i in items["image_id"].astype(str)], dtype=np.int64)
    image_m, text_m = image_m[rows], text_m[rows]
    kind = "features" if heads is not None else "final"
    digest = hashlib.sha256(f"import|{kind}|".encode())
    if kind == "features":
        image_head, text_head, settings = read_heads(Path(heads), heads_config,
                                                     image_m.shape[1], text_m.shape[1])
        scale = logit_scale if logit_scale is not None else settings.get(
            "logit_scale", DEFAULT_LOGIT_SCALE)
        bias = logit_bias if logit_bias is not None else settings.get("logit_bias")
        with torch.no_grad():
            image_e = F.normalize(image_head(torch.from_numpy(image_m)), dim=-1).numpy()
            text_e = F.normalize(text_head(torch.from_numpy(text_m)), dim=-1).numpy()
        for head in (image_head, text_head):
            for key, value in sorted(head.state_dict().items()):
                digest.update(key.encode() + value.float().numpy().tobytes())
    else:
        if image_m.shape[1] != text_m.shape[1]:
            raise ImportError_(f"{where}: final image embeddings have {image_m.shape[1]} values "
                               f"and text embeddings {text_m.shape[1]}; final embeddings share "
                               "one space (give pre-projection features with --heads instead)")
        scale = logit_scale if logit_scale is not None else DEFAULT_LOGIT_SCALE
        bias = logit_bias
        image_e = image_m / np.maximum(np.linalg.norm(image_m, axis=1, keepdims=True), 1e-12)
        text_e = text_m / np.maximum(np.linalg.norm(text_m, axis=1, keepdims=True), 1e-12)
    for part in (np.asarray(id_list, dtype=object).astype(str), image_m, text_m):
        digest.update(np.ascontiguousarray(part).tobytes())
    digest.update(json.dumps([scale, bias]).encode())
    loss = "sigmoid" if bias is not None else "infonce"
    entry = ModelEntry(name=model, spec=spec_for(digest.hexdigest()[:16]),
                       description=description or f"embeddings imported ({kind})")
    config = stage.embed_config(entry, cohort, items, 0, meta.get("fingerprint"))
    config["import_kind"] = kind
    config_hash = stage.config_hash(config)
    base = pair_dir(cache, entry.name, cohort)
    folder = base / config_hash
    run = Run("embed", entry.name, cohort, config, cohort_fingerprint=meta.get("fingerprint"))
    reused = (folder / MANIFEST).exists()
    if not reused:
        folder.mkdir(parents=True, exist_ok=True)
        for name, array in (("image_features", image_m), ("text_features", text_m),
                            ("image_embeddings", image_e), ("text_embeddings", text_e)):
            np.save(folder / f"{name}.npy", np.ascontiguousarray(array, dtype=np.float32))
        (folder / "ids.json").write_text(json.dumps(items["image_id"].astype(str).tolist()))
        (folder / "skipped.json").write_text("[]")
        towers = {"image": f"imported-{kind}", "text": f"imported-{kind}"}
        if kind == "features":
            save_into(folder, image_head, text_head, logit_scale=float(scale),
                      logit_bias=None if bias is None else float(bias), towers=towers)
        manifest = {
            "config_hash": config_hash, "config": config, "n_items": len(items),
            "n_skipped": 0, "skipped": [], "image_width": int(image_m.shape[1]),
            "text_width": int(text_m.shape[1]), "embed_dim": int(image_e.shape[1]),
            "logit_scale": float(scale), "logit_bias": None if bias is None else float(bias),
            "loss": loss, "family": "imported", "import_kind": kind, "towers": towers,
            "source": where, "seconds": 0.0,
        }
        stage._write_atomic_text(folder / MANIFEST, json.dumps(manifest, indent=2))
    else:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    stage._write_atomic_text(base / CURRENT, json.dumps({"config_hash": config_hash}))
    from engine.models.registry import register_models

    register_models(db, [entry])
    if not run.reuse(db):
        stage._record(db, run, entry, status="done", manifest=manifest, manifest_folder=folder)
    return ImportResult(folder=folder, model=entry.name, spec=entry.spec, cohort=cohort,
                        kind=kind, n_items=len(items), image_width=int(image_m.shape[1]),
                        text_width=int(text_m.shape[1]), embed_dim=int(image_e.shape[1]),
                        reused=reused)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
