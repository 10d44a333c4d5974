"""The `embed` stage: frozen backbones -> pre-projection features, original heads, embeddings.

The audit embeds the selected items (one image per study, every split) of a cohort. Work is done
in chunks of `EmbedOptions.chunk_size` items, each written to its own file with an atomic rename,
so an interrupted run recomputes only the chunks that are missing. When every chunk is there the
matrices are assembled, the original heads applied, and ``manifest.json`` written last; the
folder is keyed by the embedding config (model weights fingerprint, preprocessing, the cohort's
registered content fingerprint, chunking), so rerunning the same config finds the manifest and
does nothing. Later stages find the embedding of the *current* inputs with `find_embedding` (by
those fingerprints, never by names alone), so two results databases sharing one cache, or a
cohort re-registered with other files, never pick up each other's features.

Images are read by `engine.images` (contained in the cohort root, high bit depths windowed to
8 bits, tiny images refused), then go through the model's own eval transform (as RGB);
reports through the model's tokenizer, truncated to its context length. An image that cannot be
read is skipped, counted and named (``skipped.json`` and the run's message); its pair is left out.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine import distributed
from engine.cohort.registry import read_cohort
from engine.embed.reader import CURRENT, MANIFEST, pair_dir
from engine.errors import CohortError, ConfigError
from engine.files import replacing
from engine.models.registry import ModelEntry, ensure_models, resolve_model
from engine.runs import Run

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# --precision: autocast dtype names (torch attributes, looked up once torch is imported).
PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@dataclass(frozen=True)
class EmbedOptions:
    """How to embed (`chunk_size` and `precision` key the results; the rest is speed).

    Attributes:
        chunk_size: Items per chunk file (the unit of resumption).
        precision: ``fp32`` (default), or ``bf16`` / ``fp16`` autocast for the backbones (the
            features are stored as float32 either way; docs/scaling.md gives the tolerance).
        batch_size: Items per forward pass; default 64 on CPU, 256 on GPU.
        device: ``cpu`` or ``cuda``; default the GPU when there is one.
        num_workers: Image-decoding worker processes; default 0 on CPU, up to 8 on GPU.
    """

    chunk_size: int = 512
    batch_size: int | None = None
    device: str | None = None
    num_workers: int | None = None
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision {self.precision}: expected fp32, bf16 or fp16")
        if self.chunk_size < 1:
            raise ConfigError(f"chunk_size {self.chunk_size}: expected at least 1")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size}: expected at least 1")


@dataclass
class EmbedResult:
    """What `embed_cohort` did.

    Attributes:
        folder: Where the arrays are.
        reused: True when a complete embedding with the same config was already there.
        n_items: Rows stored (items whose image could be read).
        skipped: Unreadable images: ``image_id, file, error``.
        chunks_total / chunks_computed / chunks_reused: Chunk accounting (resumption).
        seconds: Wall time of this call.
    """

    folder: Path
    model: str
    cohort: str
    run_id: str
    reused: bool
    n_items: int
    skipped: list[dict] = field(default_factory=list)
    chunks_total: int = 0
    chunks_computed: int = 0
    chunks_reused: int = 0
    seconds: float = 0.0
    device: str = "cpu"


def cohort_fingerprint(items: pd.DataFrame) -> str:
    """Content hash of the items an embedding covers (ids, image paths and report texts)."""
    digest = hashlib.sha256()
    for row in items.loc[:, ["image_id", "image_path", "report_text"]].itertuples(index=False):
        for value in row:
            digest.update(str(value).encode("utf-8", "surrogatepass"))
            digest.update(b"\x00")
    return digest.hexdigest()[:16]


def embed_config(entry: ModelEntry, cohort: str, items: pd.DataFrame, chunk_size: int,
                 content: str | None = None, precision: str = "fp32") -> dict:
    """The configuration that keys an embedding folder."""
    # Reduced precision keys its own folder; fp32 adds no key, so fp32 folders keep their names.
    return {**({"precision": precision} if precision != "fp32" else {}),
        "stage": "embed",
        "format_version": FORMAT_VERSION,
        "model": entry.name,
        "spec": entry.spec,
        "model_fingerprint": model_fingerprint(entry.spec),
        "cohort": cohort,
        "cohort_fingerprint": cohort_fingerprint(items),
        "cohort_content": content,
        "n_items": int(len(items)),
        "chunk_size": int(chunk_size),
        "image_mode": "RGB",
        # 2: high-bit-depth images windowed to 8 bits, paths contained (engine.images).
        "image_reader": 2,
    }


_MODEL_FINGERPRINTS: dict[tuple, str] = {}


def model_fingerprint(spec: str) -> str:
    """The spec family's fingerprint (`engine.models.families`), remembered while the files stay.

    Hashing a large weights file takes seconds; the memo key includes the folder's or
    checkpoint's size and mtime.
    """
    from engine.models import families

    stamp = None
    try:
        found = families.files(spec)
        stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in found) or None
    except OSError:
        stamp = None
    key = (spec, stamp)
    if stamp is None or key not in _MODEL_FINGERPRINTS:
        _MODEL_FINGERPRINTS[key] = families.fingerprint(spec)
    return _MODEL_FINGERPRINTS[key]


IDENTITY_KEYS = ("format_version", "model_fingerprint", "cohort_fingerprint", "cohort_content",
                 "n_items", "image_mode", "image_reader")


def find_embedding(db: Path, cache: Path, model: str, cohort: str) -> Path:
    """The complete embedding folder of the cohort's current content by the model's weights.

    Looks under the (model, cohort) cache folder for a manifest with the model's weights
    fingerprint and the cohort's registered content fingerprint (`IDENTITY_KEYS`; any chunk
    size); the newest such folder wins.

    Raises:
        NotEmbeddedError: nothing complete matches (the message says which command fills it).
    """
    from engine.embed.reader import NotEmbeddedError

    entry = resolve_model(model, cache=cache, db=db)
    meta, items = read_cohort(db, cohort)
    want = embed_config(entry, cohort, items.reset_index(drop=True), 0, meta.get("fingerprint"))
    best = None
    for manifest_path in pair_dir(cache, entry.name, cohort).glob(f"*/{MANIFEST}"):
        try:
            got = json.loads(manifest_path.read_text(encoding="utf-8")).get("config", {})
        except (OSError, ValueError):
            continue
        if all(got.get(k) == want[k] for k in IDENTITY_KEYS):
            stamp = manifest_path.stat().st_mtime_ns
            if best is None or stamp > best[0]:
                best = (stamp, manifest_path.parent)
    if best is None:
        raise NotEmbeddedError(
            f"model {entry.name!r} has no embedding of the current content of cohort {cohort!r} "
            f"under {Path(cache) / 'features'}; run `python -m engine embed --model {model} "
            f"--cohort {cohort}`")
    return best[1]


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def embed_cohort(
    db: Path,
    cache: Path,
    model: str,
    cohort: str,
    *,
    options: EmbedOptions = EmbedOptions(),
    progress: Any = None,
    on_chunk: Callable[[int], None] | None = None,
) -> EmbedResult:
    """Embed the selected items of a registered cohort with a model (idempotent, resumable).

    Args:
        db: The DuckDB results file (cohort items are read from it, the run recorded in it).
        cache: The cache folder; results go to ``<cache>/features/<model>/<cohort>/<hash>/``.
        model: A registered model name or a spec (`engine.models.loading`).
        cohort: A registered cohort name.
        options: Chunking, batch size, device.
        progress: Optional object with ``update(n)`` (e.g. tqdm), advanced per item; its
            ``total`` is set to the number of items still to embed when it has that attribute.
        on_chunk: Called with the chunk index after each chunk is safely on disk (tests use it
            to interrupt a run).

    Returns:
        An `EmbedResult`; the arrays are read back with `engine.embed.load_embeddings`.

    Raises:
        CohortError: unknown cohort, no items, or no readable image at all.
        ModelLoadError: the model cannot be loaded.
    """
    start = time.perf_counter()
    entry = resolve_model(model, cache=cache, db=db)
    meta, items = read_cohort(db, cohort)
    if items.empty:
        raise CohortError(f"cohort {cohort!r} has no selected items to embed")
    items = items.reset_index(drop=True)
    config = embed_config(entry, cohort, items, options.chunk_size, meta.get("fingerprint"),
                          options.precision)
    digest = config_hash(config)
    base = pair_dir(cache, entry.name, cohort)
    folder = base / digest
    run = Run("embed", entry.name, cohort, config, cohort_fingerprint=meta.get("fingerprint"))
    n_chunks = (len(items) + options.chunk_size - 1) // options.chunk_size
    # Under torchrun the ranks share the chunks; rank 0 alone writes the database and
    # assembles (`engine.distributed`). Every rank has read what it needs before rank 0 writes.
    world = distributed.current()
    distributed.barrier("reading the cohort")

    if (folder / MANIFEST).exists():
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if world.is_main:
            _write_atomic_text(base / CURRENT, json.dumps({"config_hash": digest}))
        if world.is_main and not run.reuse(db):
            _record(db, run, entry, status="done", manifest=manifest, manifest_folder=folder)
        return EmbedResult(
            folder=folder, model=entry.name, cohort=cohort, run_id=run.run_id, reused=True,
            n_items=int(manifest["n_items"]), skipped=manifest.get("skipped", []),
            chunks_total=n_chunks, chunks_reused=n_chunks,
            seconds=time.perf_counter() - start, device="none",
        )

    import torch

    from engine.models import families
    from engine.models.split import describe_head

    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"--device {device}: torch sees no CUDA GPU on this machine (torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}); use --device cpu "
            "or leave --device out"
        )
    if world.size > 1 and device.startswith("cuda"):
        device = f"cuda:{world.local_rank}"  # one GPU per rank
    batch_size = options.batch_size or (256 if device.startswith("cuda") else 64)
    workers = options.num_workers
    if workers is None:
        # The node's cores are shared by the ranks on it.
        cores = (os.cpu_count() or 1) // max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
        workers = min(8, max(cores - 1, 0)) if device.startswith("cuda") else 0

    loaded = towers = families.load(entry.spec, device=device)
    chunk_dir = folder / "chunks"
    chunk_dir.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    done = {i for i in range(n_chunks) if _chunk_path(chunk_dir, i).exists()}
    # Every rank must share out the same list: none may write a chunk before all have listed
    # the finished ones (a chunk listed as done by one rank and as todo by another is lost).
    distributed.barrier("listing the finished chunks")
    todo = world.share([i for i in range(n_chunks) if i not in done])
    if progress is not None and hasattr(progress, "total"):
        progress.total = sum(
            min(options.chunk_size, len(items) - i * options.chunk_size) for i in todo
        )
        if hasattr(progress, "refresh"):
            progress.refresh()
    if world.is_main:
        _record(db, run, entry, status="running",
                message=f"{len(done)} of {n_chunks} chunks already on disk")
    root = Path(meta["root"])
    try:
        for index in todo:
            chunk = items.iloc[index * options.chunk_size:(index + 1) * options.chunk_size]
            _embed_chunk(
                chunk, root, loaded, towers, _chunk_path(chunk_dir, index),
                batch_size=batch_size, workers=workers, device=device, progress=progress,
                precision=options.precision,
            )
            if on_chunk is not None:
                on_chunk(index)
        distributed.barrier("embedding the chunks")
        if not world.is_main:
            distributed.barrier("assembling the embedding")
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
            return EmbedResult(
                folder=folder, model=entry.name, cohort=cohort, run_id=run.run_id, reused=False,
                n_items=int(manifest["n_items"]), skipped=manifest["skipped"],
                chunks_total=n_chunks, chunks_computed=len(todo), chunks_reused=len(done),
                seconds=time.perf_counter() - start, device=device)
        manifest = _assemble(folder, chunk_dir, items, n_chunks, towers, loaded, config, digest,
                             device=device, describe=describe_head, torch=torch)
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        try:
            if world.is_main:
                _record(db, run, entry, status=status, message=f"{type(exc).__name__}: {exc}"[:500])
        except Exception:  # noqa: BLE001 - never hide the original error
            log.exception("could not record the %s run", status)
        raise
    seconds = time.perf_counter() - start
    manifest["seconds"] = seconds
    _write_atomic_text(folder / MANIFEST, json.dumps(manifest, indent=2))
    _write_atomic_text(base / CURRENT, json.dumps({"config_hash": digest}))
    shutil.rmtree(chunk_dir, ignore_errors=True)
    _record(db, run, entry, status="done", manifest=manifest, manifest_folder=folder)
    distributed.barrier("assembling the embedding")
    return EmbedResult(
        folder=folder, model=entry.name, cohort=cohort, run_id=run.run_id, reused=False,
        n_items=int(manifest["n_items"]), skipped=manifest["skipped"], chunks_total=n_chunks,
        chunks_computed=len(todo), chunks_reused=len(done), seconds=seconds, device=device,
    )


def _chunk_path(chunk_dir: Path, index: int) -> Path:
    return chunk_dir / f"chunk-{index:05d}.npz"


class _ImageSet:
    """Decodes and preprocesses one chunk's images; failures come back as messages, not raises."""

    def __init__(self, root: Path, paths: list[str], preprocess: Callable) -> None:
        self.root = root
        self.paths = paths
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from engine import images

        try:
            # Containment, size and bit-depth windowing: the one image reader (engine.images).
            return i, self.preprocess(images.load_item_image(self.root, self.paths[i])), ""
        except (images.ImagePathError, images.ImageReadError) as exc:
            return i, None, str(exc)
        except Exception as exc:  # noqa: BLE001 - a bad file is skipped and named, never fatal
            return i, None, f"{type(exc).__name__}: {exc}".splitlines()[0]


def _collate(batch):
    return batch


def _embed_chunk(chunk, root, loaded, towers, path, *, batch_size, workers, device, progress,
                 precision="fp32"):
    import contextlib

    import torch
    from torch.utils.data import DataLoader

    paths = chunk["image_path"].astype(str).tolist()
    texts = chunk["report_text"].fillna("").astype(str).tolist()
    loader = DataLoader(_ImageSet(root, paths, loaded.preprocess), batch_size=batch_size,
                        num_workers=workers, collate_fn=_collate,
                        pin_memory=device.startswith("cuda"))
    ok = np.zeros(len(chunk), dtype=bool)
    errors: list[str] = [""] * len(chunk)
    image_parts, text_parts = [], []
    dtype = getattr(torch, PRECISIONS[precision])
    autocast = (torch.autocast(device_type=device.split(":")[0], dtype=dtype)
                if precision != "fp32" else contextlib.nullcontext())
    with torch.inference_mode(), autocast:
        for batch in loader:
            good = [(i, t) for i, t, _ in batch if t is not None]
            for i, _, err in batch:
                if err:
                    errors[i] = err
            if good:
                idx = [i for i, _ in good]
                ok[idx] = True
                pixels = torch.stack([t for _, t in good]).to(device, non_blocking=True)
                image_parts.append(towers.image_backbone(pixels).float().cpu().numpy())
                ids, mask = loaded.tokenize([texts[i] for i in idx])
                text_parts.append(towers.text_backbone(ids.to(device), mask.to(device))
                                  .float().cpu().numpy())
            if progress is not None:
                progress.update(len(batch))
    image_features = (np.concatenate(image_parts) if image_parts
                      else np.zeros((0, towers.image_width), np.float32))
    text_features = (np.concatenate(text_parts) if text_parts
                     else np.zeros((0, towers.text_width), np.float32))
    with replacing(path, tmp=path.with_suffix(".tmp")) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, image_features=image_features.astype(np.float32),
                 text_features=text_features.astype(np.float32), ok=ok,
                 errors=np.array(json.dumps(errors)))


def _assemble(folder, chunk_dir, items, n_chunks, towers, loaded, config, digest, *, device,
              describe, torch) -> dict:
    """Concatenate the chunks, apply the original heads, write every array; returns the manifest."""
    import torch.nn.functional as F

    image_parts, text_parts, ok_parts, errors = [], [], [], []
    for index in range(n_chunks):
        with np.load(_chunk_path(chunk_dir, index), allow_pickle=False) as data:
            image_parts.append(data["image_features"])
            text_parts.append(data["text_features"])
            ok_parts.append(data["ok"])
            errors.extend(json.loads(str(data["errors"])))
    ok = np.concatenate(ok_parts)
    image_features = np.concatenate(image_parts).astype(np.float32)
    text_features = np.concatenate(text_parts).astype(np.float32)
    skipped = [
        {"image_id": str(row.image_id), "file": str(row.image_path), "error": errors[i]}
        for i, row in enumerate(items.itertuples(index=False)) if not ok[i]
    ]
    if not ok.any():
        first = skipped[0]
        raise CohortError(
            f"cohort {config['cohort']!r}: no image could be read ({len(skipped)} tried; first: "
            f"{first['file']}: {first['error']})"
        )
    ids = items.loc[ok, "image_id"].astype(str).tolist()
    heads = {"image": towers.image_head.cpu(), "text": towers.text_head.cpu()}
    embeddings = {}
    with torch.inference_mode():
        for name, feats in (("image", image_features), ("text", text_features)):
            parts = [F.normalize(heads[name](torch.from_numpy(feats[i:i + 4096])), dim=-1)
                     for i in range(0, len(feats), 4096)]
            embeddings[name] = torch.cat(parts).numpy().astype(np.float32)
    for name, array in (("image_features", image_features), ("text_features", text_features),
                        ("image_embeddings", embeddings["image"]),
                        ("text_embeddings", embeddings["text"])):
        with replacing(folder / f"{name}.npy", tmp=folder / f"{name}.tmp.npy") as tmp:
            np.save(tmp, np.ascontiguousarray(array))
    _write_atomic_text(folder / "ids.json", json.dumps(ids))
    _write_atomic_text(folder / "skipped.json", json.dumps(skipped, indent=1))
    from engine.heads import save_into

    save_into(folder, heads["image"], heads["text"], logit_scale=towers.logit_scale,
              logit_bias=towers.logit_bias, towers=towers.towers)
    return {
        "config_hash": digest,
        "config": config,
        "n_items": len(ids),
        "n_skipped": len(skipped),
        "skipped": skipped[:1000],
        "image_width": int(image_features.shape[1]),
        "text_width": int(text_features.shape[1]),
        "embed_dim": int(embeddings["image"].shape[1]),
        "logit_scale": towers.logit_scale,
        "logit_bias": towers.logit_bias,
        "loss": towers.loss,
        "family": towers.family,
        "towers": towers.towers,
        "preprocess_cfg": loaded.preprocess_cfg,
        "context_length": loaded.context_length,
        "device": device,
    }


def _record(db: Path, run: Run, entry: ModelEntry, *, status: str, manifest: dict | None = None,
            message: str = "", manifest_folder: Path | None = None) -> None:
    """Write the run row (and the model's ``models`` row if missing) in one transaction."""
    from engine import store

    n_rows = int(manifest["n_items"]) if manifest else 0
    n_skipped = int(manifest["n_skipped"]) if manifest else 0
    if manifest and not message:
        names = ", ".join(s["file"] for s in manifest.get("skipped", [])[:5])
        message = f"skipped {n_skipped} unreadable images: {names}" if n_skipped else ""
    from engine.heads import original_heads_id, register

    with store.connect_write(db) as con, store.transaction(con):
        ensure_models(con, [entry])
        if status == "done":
            fp = run.config["model_fingerprint"]
            register(con, [dict(heads_id=original_heads_id(fp), model=entry.name,
                                heads="original", heads_cohort=None, epsilon=None,
                                fingerprint=fp, path=str(manifest_folder or ""),
                                run_id=run.run_id)])
        run.record(con, status=status, n_rows=n_rows, n_skipped=n_skipped, message=message)


def _write_atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
