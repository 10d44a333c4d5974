"""Loading an open_clip model from a spec, offline and weights-only (docs/models.md).

Spec syntax (what ``--model`` takes when it is not a registered name):

``local-dir:DIR``
    A folder holding ``open_clip_config.json`` (``model_cfg`` and ``preprocess_cfg``) and a weights
    file (``open_clip_model.safetensors``, ``open_clip_pytorch_model.bin``, ...). The phantom ladder
    is saved this way.
``hf-hub:ORG/REPO``
    An open_clip model on the Hugging Face hub, e.g.
    ``hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``. Read from the local HF
    cache only (``$HF_HOME/hub``, or ``$HF_HUB_CACHE``); a model with an HF text tower also needs
    that tower's repo (config and tokenizer) in the cache.
``ARCH:TAG``
    A built-in open_clip architecture with a pretrained tag, e.g. ``ViT-B-16:openai``; the weights
    must already be in the HF cache (or in ``~/.cache/clip`` for URL-only tags).
    ``ARCH:random`` builds the architecture with random weights (seeded; for benchmarks and tests).
``ARCH@FILE``
    A checkpoint file (``.pt``, ``.pth``, ``.bin``, ``.safetensors``; an ``open_clip_train``
    checkpoint with a ``state_dict`` key works) loaded into ``ARCH``, which is a built-in
    architecture name (``ViT-B-16@/ckpt/epoch_10.pt``) or a ``local-dir:DIR`` whose config and
    preprocessing are used (``local-dir:/models/base@/ckpt/epoch_3.safetensors``). Everything
    before the first ``@`` is the architecture (for ``local-dir:`` the first ``@`` after an
    existing folder).

Nothing here reaches a model hub: the HF libraries are put in offline mode before open_clip is
imported, and every file is checked in the local caches first, so a missing one gives a single
`ModelLoadError` that says what to place where. Weights are always loaded with
``torch.load(weights_only=True)`` or safetensors.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ModelLoadError

log = logging.getLogger(__name__)

LOCAL_DIR = "local-dir:"
HF_HUB = "hf-hub:"
RANDOM_TAG = "random"
CONFIG_NAME = "open_clip_config.json"
# Keys of a CLIP state dict in OpenAI's layout (the `openai:` family reads such files).
LAYOUT_KEYS = ("visual.conv1.weight", "visual.proj", "token_embedding.weight",
               "positional_embedding", "text_projection", "ln_final.weight")
# open_clip's own preference order for a weights file inside a folder.
WEIGHT_NAMES: tuple[str, ...] = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)
# Text-tower repos of well-known hf-hub models, named in the message when even their
# open_clip_config.json is missing (otherwise they are read from that config).
KNOWN_TEXT_REPOS: dict[str, tuple[str, ...]] = {
    "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224": (
        "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
    ),
}


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec.

    Attributes:
        text: The spec as given.
        kind: ``local-dir``, ``hf-hub``, ``pretrained`` (ARCH:TAG), ``random`` or ``checkpoint``.
        arch: Built-in architecture name, ``local-dir:DIR`` (checkpoint kind) or the hub id.
        tag: Pretrained tag (``pretrained`` kind).
        path: The folder (``local-dir``) or checkpoint file (``checkpoint``).
    """

    text: str
    kind: str
    arch: str = ""
    tag: str | None = None
    path: Path | None = None


def parse_spec(spec: str) -> ModelSpec:
    """Parse a model spec (see the module docstring for the syntax).

    Raises:
        ModelLoadError: the spec matches none of the forms.
    """
    spec = spec.strip()
    if not spec:
        raise ModelLoadError("--model is empty: give a registered name or an open_clip spec")
    if spec.startswith(HF_HUB):
        repo = spec[len(HF_HUB):].strip("/")
        if repo.count("/") != 1:
            raise ModelLoadError(f"--model {spec!r}: expected hf-hub:ORG/REPO")
        return ModelSpec(text=spec, kind="hf-hub", arch=repo)
    if spec.startswith(LOCAL_DIR):
        rest = spec[len(LOCAL_DIR):]
        folder = Path(rest).expanduser()
        if "@" in rest and not folder.is_dir():
            # local-dir:DIR@FILE: split at the first '@' that follows an existing folder
            for i, ch in enumerate(rest):
                if ch == "@" and Path(rest[:i]).expanduser().is_dir():
                    return ModelSpec(
                        text=spec, kind="checkpoint", arch=LOCAL_DIR + rest[:i],
                        path=Path(rest[i + 1:]).expanduser(),
                    )
        if not rest:
            raise ModelLoadError(f"--model {spec!r}: expected local-dir:DIR")
        return ModelSpec(text=spec, kind="local-dir", path=folder)
    if "@" in spec:
        arch, _, file = spec.partition("@")
        if not arch or not file:
            raise ModelLoadError(f"--model {spec!r}: expected ARCH@CHECKPOINT_FILE")
        return ModelSpec(text=spec, kind="checkpoint", arch=arch, path=Path(file).expanduser())
    if ":" in spec:
        arch, _, tag = spec.partition(":")
        kind = "random" if tag == RANDOM_TAG else "pretrained"
        return ModelSpec(text=spec, kind=kind, arch=arch, tag=tag)
    raise ModelLoadError(
        f"--model {spec!r} is neither a registered model (see `python -m engine models list`) nor "
        "a spec: local-dir:DIR, hf-hub:ORG/REPO, ARCH:TAG (e.g. ViT-B-16:openai) or ARCH@FILE"
    )


@dataclass
class LoadedModel:
    """An open_clip model ready for inference (eval mode, float32).

    Attributes:
        spec: The parsed spec.
        model: The open_clip ``CLIP`` / ``CustomTextCLIP`` module, in eval mode on `device`.
        preprocess: PIL image -> float tensor [3, H, W] (the model's own eval transform).
        preprocess_cfg: The preprocessing settings (size, mean, std, interpolation, resize_mode).
        model_cfg: The architecture config (open_clip ``model_cfg``).
        context_length: Token length reports are truncated to.
        weights: The weights file that was loaded, or None (random weights).
        device: Where the model lives.
    """

    spec: ModelSpec
    model: Any
    preprocess: Callable[[Any], Any]
    preprocess_cfg: dict[str, Any]
    model_cfg: dict[str, Any]
    context_length: int
    weights: Path | None
    device: str = "cpu"
    _tokenizer_name: str = ""
    _tokenizer: Any = field(default=None, repr=False)

    @property
    def tokenizer(self) -> Callable[[list[str]], Any]:
        """The model's tokenizer: list of texts -> token ids [B, context_length] (truncating).

        Built on first use: HF tokenizers need their files in the HF cache (or model folder).
        """
        if self._tokenizer is None:
            import open_clip

            try:
                self._tokenizer = open_clip.get_tokenizer(
                    self._tokenizer_name, context_length=self.context_length
                )
            except Exception as exc:  # noqa: BLE001 - any library failure becomes one line
                raise ModelLoadError(
                    f"{self.spec.text}: cannot build the tokenizer ({_first_line(exc)}); an HF "
                    "text tower needs its tokenizer files in the HF cache or the model folder"
                ) from exc
        return self._tokenizer

    def fingerprint(self) -> str:
        """`spec_fingerprint` of this model's spec."""
        return spec_fingerprint(self.spec)


def file_sha256(path: Path, *, block: int = 1 << 22) -> str:
    """Streaming sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def spec_fingerprint(spec: str | ModelSpec) -> str:
    """A content identity of what a spec loads, without building the model.

    Covers the config file (local-dir), the architecture and tag, the weights file's sha256 and the
    open_clip version (which defines the preprocessing code), but not where the files live, so a
    moved cache keeps its keys.

    Raises:
        ModelLoadError: as `load_model` does for missing files.
    """
    parsed = spec if isinstance(spec, ModelSpec) else parse_spec(spec)
    force_offline()
    from importlib.metadata import version

    name, _, weights, _ = _resolve(parsed)
    digest = hashlib.sha256()
    digest.update(f"open_clip {version('open_clip_torch')}|{parsed.kind}|{parsed.tag}|".encode())
    if name.startswith(LOCAL_DIR):
        digest.update((Path(name[len(LOCAL_DIR):]) / CONFIG_NAME).read_bytes())
    else:
        digest.update(name.encode())
    digest.update(b"|" + (file_sha256(weights) if weights is not None else "random").encode())
    return digest.hexdigest()[:16]


def force_offline() -> None:
    """Put the Hugging Face libraries in offline mode, even if already imported."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True


def load_model(spec: str | ModelSpec, *, device: str = "cpu", seed: int = 0,
               layout_check: bool = True) -> LoadedModel:
    """Load a model from a spec, offline, weights-only, in eval mode.

    Args:
        spec: A spec string (module docstring) or a parsed `ModelSpec`.
        device: ``cpu`` or ``cuda``.
        seed: Seed for random initialisation (``ARCH:random``, and towers the weights overwrite).
        layout_check: Refuse a bare OpenAI-layout state dict given to a GELU architecture
            (``ARCH@FILE``; `_check_activation`). ``open_clip:ARCH@FILE`` turns it off.

    Raises:
        ModelLoadError: one line naming the spec and what is missing or broken.
    """
    parsed = spec if isinstance(spec, ModelSpec) else parse_spec(spec)
    force_offline()
    import open_clip
    import torch

    torch.manual_seed(seed)
    name, kwargs, weights, tokenizer_name = _resolve(parsed)
    if parsed.kind == "checkpoint" and layout_check and not name.startswith(LOCAL_DIR):
        _check_activation(name, weights, parsed.text)
    try:
        with _quiet_random_init(parsed.kind == "checkpoint"):
            model = open_clip.create_model(name, device="cpu", weights_only=True, **kwargs)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - library errors become one line naming the input
        where = (Path(name[len(LOCAL_DIR):]) / CONFIG_NAME if name.startswith(LOCAL_DIR)
                 else weights if parsed.kind == "pretrained" else parsed.text)
        raise ModelLoadError(f"{where}: cannot build {parsed.text!r} ({_first_line(exc)})") \
            from exc
    if parsed.kind == "checkpoint":
        assert weights is not None
        load_checkpoint_file(model, weights)
    model = model.float().to(device).eval()
    model.requires_grad_(False)
    pp_cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    from open_clip.transform import PreprocessCfg, image_transform_v2

    preprocess = image_transform_v2(PreprocessCfg(**pp_cfg), is_train=False)
    model_cfg = _model_cfg(parsed, name)
    context_length = int(getattr(model, "context_length", 0) or
                         model_cfg.get("text_cfg", {}).get("context_length", 77))
    return LoadedModel(
        spec=parsed,
        model=model,
        preprocess=preprocess,
        preprocess_cfg=_jsonable(pp_cfg),
        model_cfg=model_cfg,
        context_length=context_length,
        weights=weights,
        device=device,
        _tokenizer_name=tokenizer_name,
    )


class _DropRandomInitNotice(logging.Filter):
    """open_clip says "No pretrained weights loaded ... initialized randomly" (and, for a
    ``local-dir:`` architecture, that the folder holds no weights) before the checkpoint's
    weights are loaded into the model: true of that moment only, so not shown."""

    NOTICES = ("No pretrained weights loaded", "Local config loaded, but no CLIP weights")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOTICES)


@contextmanager
def _quiet_random_init(active: bool):
    root = logging.getLogger()
    notice = _DropRandomInitNotice()
    if active:
        root.addFilter(notice)
    try:
        yield
    finally:
        root.removeFilter(notice)


def load_checkpoint_file(model: Any, weights: Path) -> None:
    """Load a checkpoint file into `model` (open_clip's conversions), naming what does not fit.

    Raises:
        ModelLoadError: one line: the file, the missing and unexpected keys (the first few and
            their counts) or the tensors whose shapes differ.
    """
    import open_clip

    try:
        result = open_clip.load_checkpoint(model, str(weights), strict=False, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - library errors become one line naming the file
        raise ModelLoadError(f"{weights}: cannot load into {_model_name(model)} "
                             f"({_mismatch_summary(exc)})") from exc
    load_report(result, weights, model)


def load_strict(model: Any, state: dict, path: Path) -> None:
    """``model.load_state_dict(state)`` with a one-line error naming the keys that do not fit."""
    try:
        result = model.load_state_dict(state, strict=False)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{path}: cannot load into {_model_name(model)} "
                             f"({_mismatch_summary(exc)})") from exc
    load_report(result, path, model)


def load_report(result: Any, path: Path, model: Any) -> None:
    """Raise naming the missing and unexpected keys of a non-strict load, if there are any."""
    missing = list(getattr(result, "missing_keys", []) or [])
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if missing or unexpected:
        parts = [f"{len(keys)} {what} key{'s' if len(keys) != 1 else ''} "
                 f"({_few(keys)})" for what, keys in (("missing", missing),
                                                      ("unexpected", unexpected)) if keys]
        raise ModelLoadError(f"{path}: does not fit {_model_name(model)}: {'; '.join(parts)}")


def _few(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def _model_name(model: Any) -> str:
    return type(model).__name__


def _mismatch_summary(exc: BaseException) -> str:
    """torch's multi-line load error as one clause (size mismatches named, first few)."""
    text = str(exc)
    sizes = [line.strip().split(":")[0].replace("size mismatch for ", "")
             for line in text.splitlines() if "size mismatch for" in line]
    if sizes:
        return f"{len(sizes)} tensor shape mismatch{'es' if len(sizes) != 1 else ''}: {_few(sizes)}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines[:2]) if lines else type(exc).__name__


def _check_activation(arch: str, weights: Path | None, spec: str) -> None:
    """Refuse a bare OpenAI-layout state dict given to a GELU architecture (``ARCH@FILE``).

    OpenAI's CLIP and its fine-tunes (CheXzero) use QuickGELU; open_clip's plain ``ViT-B-32``
    uses GELU with the same key names, so such a file would load silently into a different model.
    A training checkpoint (``{"state_dict": ...}``) is open_clip's own and passes.
    """
    import open_clip

    cfg = open_clip.get_model_config(arch) or {}
    if cfg.get("quick_gelu") or weights is None or "text_cfg" not in cfg:
        return
    if cfg.get("custom_text") or "timm_model_name" in cfg.get("vision_cfg", {}):
        return
    state = _peek_state(weights)
    if state is None or not is_openai_layout(state):
        return
    quick = f"{arch}-quickgelu"
    use = (f"--model {quick}@{weights} (or openai:{weights})"
           if open_clip.get_model_config(quick) is not None else f"--model openai:{weights}")
    raise ModelLoadError(
        f"{weights}: a bare CLIP state dict in OpenAI's layout, which OpenAI CLIP and its "
        f"fine-tunes (CheXzero) run with QuickGELU, but {arch} uses GELU: give {use}; for "
        f"weights trained with GELU by open_clip give open_clip:{arch}@{weights}")


def is_openai_layout(state: dict) -> bool:
    """True for a CLIP state dict with OpenAI's (and open_clip's native) ViT key names."""
    return all(k in state for k in LAYOUT_KEYS) and any(
        k.startswith("transformer.resblocks.") for k in state)


def _peek_state(weights: Path) -> dict | None:
    """The file's top-level mapping when it is a bare state dict (else None)."""
    try:
        if weights.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(weights), framework="pt") as handle:
                return dict.fromkeys(handle.keys())
        import torch

        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - unreadable files are reported by the load itself
        return None
    if not isinstance(state, dict) or "state_dict" in state:
        return None
    return state


def _resolve(spec: ModelSpec) -> tuple[str, dict[str, Any], Path | None, str]:
    """(open_clip model name, create_model kwargs, weights file, tokenizer name), all offline."""
    if spec.kind == "local-dir":
        folder = _check_local_dir(spec.path, spec.text)
        return f"{LOCAL_DIR}{folder}", {}, _weights_in(folder, spec.text, required=True), \
            f"{LOCAL_DIR}{folder}"
    if spec.kind == "hf-hub":
        weights = _check_hf_hub(spec.arch, spec.text)
        return spec.text, {}, weights, spec.text
    if spec.kind == "checkpoint":
        path = spec.path
        if path is None or not path.is_file():
            raise ModelLoadError(f"checkpoint file not found: {path} (from --model {spec.text!r})")
        if spec.arch.startswith(LOCAL_DIR):
            folder = _check_local_dir(Path(spec.arch[len(LOCAL_DIR):]), spec.text)
            arch = f"{LOCAL_DIR}{folder}"
            return arch, {"load_weights": False, "pretrained_text": False,
                          "pretrained_image": False}, path, arch
        _check_builtin(spec.arch, spec.text)
        return spec.arch, {"pretrained_text": False, "pretrained_image": False}, path, spec.arch
    if spec.kind == "random":
        _check_builtin(spec.arch, spec.text)
        return spec.arch, {"pretrained_text": False, "pretrained_image": False}, None, spec.arch
    # ARCH:TAG
    _check_builtin(spec.arch, spec.text)
    weights, tag_cfg = _check_pretrained_tag(spec.arch, spec.tag or "", spec.text)
    keys = ("mean", "std", "interpolation", "resize_mode")
    force_pp = {k: tag_cfg[k] for k in keys if k in tag_cfg}
    kwargs = {"pretrained": str(weights), "force_preprocess_cfg": force_pp,
              "force_quick_gelu": bool(tag_cfg.get("quick_gelu", False))}
    return spec.arch, kwargs, weights, spec.arch


def _check_local_dir(folder: Path | None, spec: str) -> Path:
    if folder is None or not folder.is_dir():
        raise ModelLoadError(f"model folder not found: {folder} (from --model {spec!r})")
    config = folder / CONFIG_NAME
    if not config.is_file():
        raise ModelLoadError(f"{config}: missing; a local-dir model needs {CONFIG_NAME} + weights")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{config}: not valid JSON ({_first_line(exc)})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("model_cfg"), dict):
        raise ModelLoadError(f"{config}: no 'model_cfg' key (open_clip local-dir format)")
    _check_sizes(data["model_cfg"], config)
    return folder.resolve()


# Size fields of an open_clip model_cfg that must be positive integers when present.
_SIZE_FIELDS = {"": ("embed_dim",),
                "vision_cfg": ("layers", "width", "patch_size", "head_width"),
                "text_cfg": ("context_length", "vocab_size", "width", "heads", "layers")}


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_sizes(model_cfg: dict, config: Path) -> None:
    """One line naming a size field that is not a positive integer (before open_clip sees it)."""
    for section, names in _SIZE_FIELDS.items():
        block = model_cfg.get(section, {}) if section else model_cfg
        if not isinstance(block, dict):
            raise ModelLoadError(f"{config}: model_cfg.{section} is not an object")
        for name in names:
            if name not in block:
                continue
            value = block[name]
            if name == "layers" and isinstance(value, list) and value and all(
                    _positive_int(v) for v in value):
                continue  # a ResNet tower's blocks per stage
            if not _positive_int(value):
                where = f"model_cfg.{section + '.' if section else ''}{name}"
                raise ModelLoadError(
                    f"{config}: {where} is {value!r}; expected a positive integer")


def _weights_in(folder: Path, spec: str, *, required: bool) -> Path | None:
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    if required:
        raise ModelLoadError(
            f"{folder}: no weights file ({', '.join(WEIGHT_NAMES[:3])}) for --model {spec!r}"
        )
    return None


def _check_builtin(arch: str, spec: str) -> None:
    import open_clip

    if open_clip.get_model_config(arch) is None:
        raise ModelLoadError(
            f"--model {spec!r}: {arch!r} is not a built-in open_clip architecture "
            "(see open_clip.list_models())"
        )


def _hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _cached(repo: str, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename)
    return Path(found) if isinstance(found, str) else None


def _offline_help(spec: str, missing: list[str]) -> ModelLoadError:
    return ModelLoadError(
        f"--model {spec!r}: not in the local Hugging Face cache and nothing is downloaded here; "
        f"place {'; '.join(missing)} in the HF cache at {_hf_cache_dir()} (set HF_HOME or "
        "HF_HUB_CACHE to use another folder; fill it with `hf download REPO` on a machine with "
        "access and copy it over) and run with HF_HUB_OFFLINE=1"
    )


def _check_hf_hub(repo: str, spec: str) -> Path:
    """Return the cached weights of an hf-hub model, or raise naming every missing repo."""
    missing: list[str] = []
    config_path = _cached(repo, CONFIG_NAME)
    weights = _cached(repo, "open_clip_model.safetensors") or _cached(
        repo, "open_clip_pytorch_model.bin"
    )
    files = [n for n, p in ((CONFIG_NAME, config_path),
                            ("open_clip_pytorch_model.bin", weights)) if p is None]
    if files:
        missing.append(f"repo {repo} ({', '.join(files)})")
    text_repos: list[str] = list(KNOWN_TEXT_REPOS.get(repo, ()))
    if config_path is not None:
        try:
            cfg = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{config_path}: not valid JSON ({_first_line(exc)})") from exc
        text_cfg = cfg.get("model_cfg", cfg).get("text_cfg", {})
        text_repos = [
            r for r in dict.fromkeys((text_cfg.get("hf_model_name"),
                                      text_cfg.get("hf_tokenizer_name")))
            if r and not Path(r).is_dir()
        ]
    for text_repo in text_repos:
        need = []
        if _cached(text_repo, "config.json") is None:
            need.append("config.json")
        if all(_cached(text_repo, f) is None for f in
               ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
            need.append("tokenizer files")
        if need:
            missing.append(f"text-tower repo {text_repo} ({', '.join(need)})")
    if missing:
        raise _offline_help(spec, missing)
    assert weights is not None
    return weights


def _check_pretrained_tag(arch: str, tag: str, spec: str) -> tuple[Path, dict[str, Any]]:
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    cfg = get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = list_pretrained_tags_by_model(arch)
        raise ModelLoadError(
            f"--model {spec!r}: unknown pretrained tag {tag!r} for {arch} "
            f"(known: {', '.join(tags) or 'none'}; or use {arch}:{RANDOM_TAG} or {arch}@FILE)"
        )
    hub = cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors",
                                             "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        for name in names:
            found = _cached(repo, name)
            if found is not None:
                return found, cfg
    url = cfg.get("url", "")
    if url:
        local = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if local.is_file():
            return local, cfg
    where = []
    if hub:
        repo, name = os.path.split(hub)
        where = [f"repo {repo} ({name or 'open_clip_pytorch_model.bin'})"]
    if url and not hub:
        raise ModelLoadError(
            f"--model {spec!r}: weights not found at "
            f"{Path('~/.cache/clip') / os.path.basename(url)}; "
            "nothing is downloaded here: place the file there"
        )
    raise _offline_help(spec, where)


def _model_cfg(spec: ModelSpec, name: str) -> dict[str, Any]:
    import open_clip

    if name.startswith(LOCAL_DIR):
        data = json.loads((Path(name[len(LOCAL_DIR):]) / CONFIG_NAME).read_text(encoding="utf-8"))
        return data["model_cfg"]
    cfg = open_clip.get_model_config(name)
    return dict(cfg or {})


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(
        value, default=lambda v: list(v) if isinstance(v, tuple) else str(v)))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
