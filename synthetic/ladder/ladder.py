"""The phantom model ladder: specialisation emulated by in-domain training budget (docs/phantom.md).

One small open_clip architecture (a native ViT image tower and a native text transformer) is
trained with the CLIP contrastive loss on the train split of a cohort. The rungs are snapshots of
**one** training run taken after ``LadderConfig.rung_epochs`` epochs (rung 0 = the random
initialisation, 0 epochs), so every rung continues from the previous one and the whole ladder
costs as much as its longest rung. The learning-rate schedule (linear warm-up, cosine decay)
spans the longest rung, so earlier rungs are snapshots taken mid-schedule.

Each rung is saved as a ``local-dir:`` folder (``open_clip_config.json`` with ``model_cfg`` and
``preprocess_cfg``, ``open_clip_model.safetensors``, and ``ladder.json`` with the config hash,
the held-out calibration and timings) under ``<cache>/models/``, loads through the same spec path
as any real model, and is registered in the ``models`` table. Rerunning with the same config and
cohort finds the folders and does nothing.

Images are decoded and preprocessed once (through the rung's own eval transform) into a float16
``.npy`` file under ``<cache>/models/.inputs/`` and read back a batch at a time (`PixelFile`),
so the ladder's memory does not grow with the cohort. Training adds a small random shift
(augmentation), seeded, so the run is deterministic for a given seed and thread count.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine.cohort.registry import read_cohort
from engine.errors import CohortError, ConfigError
from engine.images import load_item_image
from engine.memory import release
from engine.models.registry import ModelEntry, read_registry, register_models
from engine.numerics import settings as numerics_settings
from engine.numerics import training_threads
from synthetic.ladder.calibration import relink_lift

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
RUNG_PREFIX = "phantom-r"


@dataclass(frozen=True)
class LadderConfig:
    """Architecture and training budget of the phantom ladder.

    Attributes:
        rung_epochs: Epochs of in-domain training at each rung, increasing; 0 = untrained.
        embed_dim: Joint embedding width.
        image_size / patch_size / vision_width / vision_layers: The ViT image tower.
        text_width / text_layers / context_length: The text transformer (open_clip BPE tokens).
        heads: Attention heads in both towers.
        batch_size / lr / weight_decay / warmup_fraction: Optimisation (AdamW, cosine schedule).
        shift: Random translation of training images, in pixels (augmentation).
        jitter: Random brightness/contrast change of training images (fraction; augmentation).
        sentence_keep: Probability of keeping each sentence of a training report (at least one
            is kept); 1.0 trains on whole reports. Sampling sentences stops the text tower from
            memorising whole reports and ties single findings to the image.
        seed: Initialisation, shuffling and augmentation seed.
        pool_size: N of the held-out calibration (Recall@1 and lift at N).
        max_train_items: Use at most this many training pairs (tests); None = all.
    """

    rung_epochs: tuple[int, ...] = (0, 12, 24, 36)
    embed_dim: int = 128
    image_size: int = 64
    patch_size: int = 8
    vision_width: int = 96
    vision_layers: int = 3
    text_width: int = 96
    text_layers: int = 3
    context_length: int = 64
    heads: int = 4
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.2
    warmup_fraction: float = 0.05
    shift: int = 4
    jitter: float = 0.1
    sentence_keep: float = 0.6
    seed: int = 0
    pool_size: int = 100
    max_train_items: int | None = None

    def __post_init__(self) -> None:
        epochs = self.rung_epochs
        if len(epochs) < 2 or epochs[0] != 0 or any(b <= a for a, b in zip(epochs, epochs[1:])):
            raise ConfigError(f"rung_epochs {epochs}: expected 0 then strictly increasing")
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"image_size {self.image_size} is not a multiple of {self.patch_size}"
            )

    @classmethod
    def from_toml(cls, path: Path, **overrides: Any) -> LadderConfig:
        """Read a config from a TOML file (keys as the attributes, top level or under [ladder]).

        Raises:
            ConfigError: unreadable file, unknown key, or a bad value.
        """
        import tomllib

        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the ladder config ({exc})") from exc
        data = dict(data.get("ladder", data))
        known = set(cls.__dataclass_fields__)
        for key in data:
            if key not in known:
                known_keys = ", ".join(sorted(known))
                raise ConfigError(f"{path}: unknown ladder key {key!r} (known: {known_keys})")
        data.update({k: v for k, v in overrides.items() if v is not None})
        if "rung_epochs" in data:
            data["rung_epochs"] = tuple(int(e) for e in data["rung_epochs"])
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    def model_cfg(self) -> dict[str, Any]:
        """The open_clip ``model_cfg`` of every rung."""
        return {
            "embed_dim": self.embed_dim,
            "vision_cfg": {
                "image_size": self.image_size,
                "layers": self.vision_layers,
                "width": self.vision_width,
                "patch_size": self.patch_size,
                "head_width": self.vision_width // self.heads,
            },
            "text_cfg": {
                "context_length": self.context_length,
                "vocab_size": 49408,
                "width": self.text_width,
                "heads": self.heads,
                "layers": self.text_layers,
            },
        }

    def preprocess_cfg(self) -> dict[str, Any]:
        """The open_clip ``preprocess_cfg``: grey radiographs, one mean and std for all channels."""
        return {
            "size": self.image_size,
            "mode": "RGB",
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        }


@dataclass
class Rung:
    """One trained rung: where it is and how it re-links held-out pairs."""

    name: str
    epochs: int
    folder: Path
    recall: float
    lift: float
    loss: float | None = None


@dataclass
class LadderResult:
    """What `train_ladder` did (times in seconds: preprocessing, training, and in all)."""

    rungs: list[Rung]
    reused: bool
    folder: Path
    n_train: int
    n_eval: int
    pool_size: int
    train_seconds: float = 0.0
    preprocess_seconds: float = 0.0
    seconds: float = 0.0


def ladder_entries(cache: Path, n_rungs: int) -> list[ModelEntry]:
    """The registry rows of the first `n_rungs` rungs (``phantom-r0`` ...)."""
    registered = {e.name: e for e in read_registry(cache)}
    entries = []
    for i in range(n_rungs):
        name = f"{RUNG_PREFIX}{i}"
        if name not in registered:
            raise ConfigError(f"engine/models/registry.toml has no [[model]] named {name!r}")
        entry = registered[name]
        if not entry.spec.startswith("local-dir:"):
            raise ConfigError(
                f"registry entry {name!r}: spec must be local-dir:..., not {entry.spec!r}"
            )
        entries.append(entry)
    return entries


def _ladder_key(config: LadderConfig, cohort: str, train: pd.DataFrame, held: pd.DataFrame) -> str:
    from importlib.metadata import version

    from engine.embed.stage import cohort_fingerprint

    payload = {
        "format": FORMAT_VERSION,
        "config": asdict(config),
        "cohort": cohort,
        "train": cohort_fingerprint(train),
        "held_out": cohort_fingerprint(held),
        "open_clip": version("open_clip_torch"),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def train_ladder(
    db: Path,
    cache: Path,
    cohort: str,
    *,
    config: LadderConfig = LadderConfig(),
    progress: Any = None,
) -> LadderResult:
    """Train (or reuse) the ladder on a cohort's train split and register its rungs.

    Args:
        db: The results database (the cohort is read from it; rungs are registered in it).
        cache: The cache folder; rungs go to ``<cache>/models/phantom-r<i>/``.
        cohort: A registered cohort with ``train`` and ``test`` items.
        config: Architecture and budget.
        progress: Optional ``update(n)`` object (tqdm), advanced per image and per step.

    Returns:
        The rungs with their held-out Recall@1 and lift at ``config.pool_size``.
    """
    entries = ladder_entries(cache, len(config.rung_epochs))
    folders = [Path(e.spec[len("local-dir:"):]) for e in entries]
    meta, items = read_cohort(db, cohort)
    train = items[items["split"] == "train"].reset_index(drop=True)
    held = items[items["split"] == "test"].reset_index(drop=True)
    if config.max_train_items is not None:
        train = train.iloc[: config.max_train_items]
    if len(train) < 2 or len(held) < 2:
        raise CohortError(
            f"cohort {cohort!r}: the ladder needs at least 2 train and 2 test items "
            f"(has {len(train)} and {len(held)})"
        )
    key = _ladder_key(config, cohort, train, held)
    stored = [_read_rung_meta(f) for f in folders]
    if all(m is not None and m.get("ladder_key") == key for m in stored):
        rungs = [Rung(e.name, m["epochs"], f, m["held_out_recall"], m["held_out_lift"],
                      m.get("loss"))
                 for e, m, f in zip(entries, stored, folders)]
        register_models(db, _described(entries, config, cohort))
        _record_run(db, cohort, key, config, rungs, meta)
        return LadderResult(rungs=rungs, reused=True, folder=folders[0].parent,
                            n_train=len(train), n_eval=len(held), pool_size=stored[0]["pool_size"],
                            train_seconds=float(stored[-1].get("train_seconds", 0.0)),
                            preprocess_seconds=float(stored[-1].get("preprocess_seconds", 0.0)),
                            seconds=float(stored[-1].get("seconds", 0.0)))

    from engine.models.loading import force_offline

    force_offline()
    with training_threads() as threads:
        return _train(db, cache, cohort, config, progress, entries, folders, meta, train, held,
                      key, threads)


def _train(db, cache, cohort, config, progress, entries, folders, meta, train, held, key,
           threads) -> LadderResult:
    """The training run of `train_ladder` (at the pinned thread count)."""
    import open_clip
    import torch
    import torch.nn.functional as F
    from open_clip.transform import PreprocessCfg, image_transform_v2

    started = time.perf_counter()
    total_epochs = config.rung_epochs[-1]
    steps_per_epoch = len(train) // config.batch_size or 1
    total_steps = total_epochs * steps_per_epoch
    if progress is not None and hasattr(progress, "total"):
        progress.total = len(train) + len(held) + total_steps

    preprocess = image_transform_v2(PreprocessCfg(**config.preprocess_cfg()), is_train=False)
    root = Path(meta["root"])
    inputs_dir = Path(cache) / "models" / ".inputs"
    train_px = _pixels(train, root, preprocess, config, inputs_dir, progress)
    held_px = _pixels(held, root, preprocess, config, inputs_dir, progress)
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=config.context_length)
    train_texts = train["report_text"].fillna("").astype(str).tolist()
    train_tok = tokenizer(train_texts)
    train_sentences = [split_sentences(t) for t in train_texts]
    held_tok = tokenizer(held["report_text"].fillna("").astype(str).tolist())
    preprocess_seconds = time.perf_counter() - started

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = open_clip.CLIP(**config.model_cfg())
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr,
                                  betas=(0.9, 0.98), eps=1e-6)
    warmup = max(1, int(config.warmup_fraction * total_steps))

    def lr_at(step: int) -> float:
        if step < warmup:
            return config.lr * (step + 1) / warmup
        progress_frac = (step - warmup) / max(1, total_steps - warmup)
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress_frac))

    rungs: list[Rung] = []
    train_start = time.perf_counter()
    train_seconds = 0.0
    step, last_loss = 0, None
    pending = list(zip(entries, folders, config.rung_epochs))
    for epoch in range(total_epochs + 1):
        if epoch > 0:
            model.train()
            order = torch.randperm(len(train), generator=generator)
            losses = []
            for b in range(steps_per_epoch):
                batch = order[b * config.batch_size:(b + 1) * config.batch_size]
                images = _augment(train_px[batch].float(), config, generator)
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step)
                img = F.normalize(model.encode_image(images), dim=-1)
                if config.sentence_keep < 1.0:
                    tokens = tokenizer([_sample_sentences(train_sentences[i], config.sentence_keep,
                                                          generator) for i in batch.tolist()])
                else:
                    tokens = train_tok[batch]
                txt = F.normalize(model.encode_text(tokens), dim=-1)
                logits = model.logit_scale.exp() * img @ txt.T
                labels = torch.arange(len(batch))
                loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(0, math.log(100))
                losses.append(float(loss.detach()))
                step += 1
                if progress is not None:
                    progress.update(1)
            last_loss = float(np.mean(losses))
            release()  # the epoch's freed batches go back to the system
            log.info("ladder epoch %d: loss %.4f", epoch, last_loss)
        train_seconds = time.perf_counter() - train_start
        while pending and pending[0][2] == epoch:
            entry, folder, epochs = pending.pop(0)
            recall, lift, size = _calibrate(model, held_px, held_tok, config.pool_size)
            rung_meta = {
                "ladder_key": key, "name": entry.name, "epochs": epochs, "cohort": cohort,
                "config": asdict(config), "n_train": len(train), "n_held_out": len(held),
                "held_out_recall": recall, "held_out_lift": lift, "pool_size": size,
                "loss": last_loss, "train_seconds": train_seconds,
                "preprocess_seconds": preprocess_seconds,
                "seconds": time.perf_counter() - started, "steps": step,
                "numerics": numerics_settings(), "threads": threads,
            }
            _save_rung(model, config, folder, rung_meta)
            rungs.append(Rung(entry.name, epochs, folder, recall, lift, last_loss))
    register_models(db, _described(entries, config, cohort))
    _record_run(db, cohort, key, config, rungs, meta)
    return LadderResult(rungs=rungs, reused=False, folder=folders[0].parent, n_train=len(train),
                        n_eval=len(held), pool_size=min(config.pool_size, len(held)),
                        train_seconds=train_seconds, preprocess_seconds=preprocess_seconds,
                        seconds=time.perf_counter() - started)


def _record_run(db: Path, cohort: str, key: str, config: LadderConfig, rungs: list[Rung],
                meta: dict) -> None:
    """The ladder's run record (reused: the earlier record is shown again)."""
    from engine.runs import Run, record_run

    run = Run("ladder", None, cohort, {"ladder_key": key, "config": asdict(config),
                                      "rungs": [r.name for r in rungs]},
              cohort_fingerprint=meta.get("fingerprint"))
    if not run.reuse(db):
        record_run(db, run, n_rows=len(rungs), message="; ".join(
            f"{r.name}: {r.epochs} epochs, held-out lift {r.lift:.2f}" for r in rungs))


def _described(entries: list[ModelEntry], config: LadderConfig, cohort: str) -> list[ModelEntry]:
    return [
        ModelEntry(e.name, e.spec, e.specialization,
                   f"{e.description} [{epochs} epoch{'' if epochs == 1 else 's'} "
                   f"on cohort {cohort}]")
        for e, epochs in zip(entries, config.rung_epochs)
    ]


def _param_groups(model, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.ndim < 2 or "embedding" in name or "logit_scale" in name or "ln" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def split_sentences(text: str) -> list[str]:
    """Sentences of a report (split after . ! ? and at line breaks), empty ones dropped."""
    return [part.strip() for part in _SENTENCE_END.split(text) if part.strip()]


def _sample_sentences(sentences: list[str], keep: float, generator) -> str:
    """A random non-empty subset of the sentences, in their order."""
    import torch

    if len(sentences) <= 1:
        return " ".join(sentences)
    mask = torch.rand(len(sentences), generator=generator) < keep
    if not mask.any():
        mask[torch.randint(0, len(sentences), (1,), generator=generator)] = True
    return " ".join(s for s, m in zip(sentences, mask.tolist()) if m)


def _augment(images, config: LadderConfig, generator):
    """Random shift and brightness/contrast jitter of a normalised batch, seeded."""
    import torch

    images = _shift(images, config.shift, generator)
    if config.jitter > 0:
        n = images.shape[0]
        scale = 1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * config.jitter
        offset = (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * config.jitter * 4
        images = images * scale + offset  # offset in normalised units (std 0.25 -> x4)
    return images


def _shift(images, shift: int, generator):
    """Translate each image by up to `shift` pixels (zero-padded crop), seeded."""
    import torch

    if shift <= 0:
        return images
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (shift, shift, shift, shift))
    offsets = torch.randint(0, 2 * shift + 1, (n, 2), generator=generator)
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w]
                        for i, (dy, dx) in enumerate(offsets.tolist())])


class PixelFile:
    """Preprocessed images [n, 3, S, S] float16 in a ``.npy`` file, read a batch at a time.

    Rows are read with ``os.pread`` (no memory map), so the process holds only the batch it
    asked for: at the study's scale the two arrays are 2.6 GB, and mapped or loaded whole they
    counted in full towards the ladder's resident memory. ``pixels[index]`` takes a slice or a
    1-D tensor / sequence of row numbers and returns a float16 tensor in that order.
    """

    def __init__(self, path: Path) -> None:
        try:
            header = np.load(path, mmap_mode="r")  # header only: no row is touched
        except (ValueError, OSError) as exc:
            raise ConfigError(f"{path}: unreadable or truncated pixel file ({exc})") from exc
        shape, dtype, self.offset = header.shape, header.dtype, header.offset
        fortran = not header.flags.c_contiguous
        del header
        if fortran or dtype != np.float16 or len(shape) != 4:
            raise ConfigError(f"{path}: not a C-ordered float16 [n, 3, S, S] pixel array")
        self.path, self.shape, self.dtype = Path(path), tuple(shape), dtype
        self.row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
        self._fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    def _read(self, start: int, count: int) -> bytes:
        want = count * self.row_bytes
        data = os.pread(self._fd, want, self.offset + start * self.row_bytes)
        if len(data) != want:
            raise ConfigError(f"{self.path}: truncated pixel file (rows {start}..{start + count})")
        return data

    def __getitem__(self, index):
        import torch

        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise IndexError("PixelFile slices take no step")
            rows = np.frombuffer(self._read(start, max(0, stop - start)), dtype=self.dtype)
            return torch.from_numpy(rows.reshape(-1, *self.shape[1:]).copy())
        ids = index.tolist() if hasattr(index, "tolist") else list(index)
        out = np.empty((len(ids), *self.shape[1:]), dtype=self.dtype)
        for k, i in enumerate(ids):
            if not 0 <= i < len(self):
                raise IndexError(f"row {i} outside 0..{len(self) - 1}")
            out[k] = np.frombuffer(self._read(i, 1), dtype=self.dtype).reshape(self.shape[1:])
        return torch.from_numpy(out)


def _pixels(items: pd.DataFrame, root: Path, preprocess, config: LadderConfig, inputs_dir: Path,
            progress) -> PixelFile:
    """Preprocessed images as a `PixelFile`, made once and cached by content and preprocessing.

    The file is written row by row (``os.pwrite`` after a preallocated header), so making it
    never holds the array either.
    """
    from engine.embed.stage import cohort_fingerprint

    digest = hashlib.sha256(json.dumps(
        [cohort_fingerprint(items), str(root), config.preprocess_cfg()], sort_keys=True
    ).encode()).hexdigest()[:16]
    path = inputs_dir / f"{digest}.npy"
    if path.exists():
        if progress is not None:
            progress.update(len(items))
        return PixelFile(path)
    inputs_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npy")
    shape = (len(items), 3, config.image_size, config.image_size)
    header = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
    offset = header.offset
    del header  # the file now has its header and zeroed rows; rows are written without a map
    row_bytes = int(np.prod(shape[1:])) * 2
    fd = os.open(tmp, os.O_WRONLY)
    try:
        for i, rel in enumerate(items["image_path"]):
            try:
                # The one image reader: contained in the root, windowed to 8 bits, size checked.
                image = load_item_image(root, rel)
                row = preprocess(image).numpy().astype(np.float16)
                os.pwrite(fd, np.ascontiguousarray(row).tobytes(), offset + i * row_bytes)
            except Exception as exc:  # noqa: BLE001 - a bad image trains as blank, and is logged
                log.warning("%s: unreadable image used as blank in ladder training (%s)", rel, exc)
            if progress is not None:
                progress.update(1)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return PixelFile(path)


def _calibrate(model, pixels, tokens, pool_size: int) -> tuple[float, float, int]:
    import torch
    import torch.nn.functional as F

    model.eval()
    img, txt = [], []
    with torch.inference_mode():
        for i in range(0, len(pixels), 256):
            img.append(F.normalize(model.encode_image(pixels[i:i + 256].float()), dim=-1))
            txt.append(F.normalize(model.encode_text(tokens[i:i + 256]), dim=-1))
    return relink_lift(torch.cat(img).numpy(), torch.cat(txt).numpy(), pool_size)


def _save_rung(model, config: LadderConfig, folder: Path, meta: dict) -> None:
    """Write a local-dir folder atomically (temporary sibling, then rename)."""
    from safetensors.torch import save_file

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    (tmp / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": config.model_cfg(), "preprocess_cfg": config.preprocess_cfg()}, indent=2
    ))
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / "open_clip_model.safetensors"))
    (tmp / "ladder.json").write_text(json.dumps(meta, indent=2, default=str))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def _read_rung_meta(folder: Path) -> dict | None:
    path = folder / "ladder.json"
    if not (path.exists() and (folder / "open_clip_model.safetensors").exists()):
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
