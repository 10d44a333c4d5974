"""OpenAI-layout CLIP state dicts (CheXzero's format): ``openai:FILE`` (docs/models.md).

``FILE`` is a state dict saved from OpenAI's ``clip`` package (``torch.save(model.state_dict())``,
``.pt`` / ``.pth`` / ``.bin`` read weights-only, or ``.safetensors``), optionally wrapped in
``{"state_dict": ...}`` with ``module.`` prefixes. Its keys (``visual.conv1.weight``,
``visual.transformer.resblocks.*``, ``transformer.resblocks.*``, ``token_embedding.weight``,
``text_projection``, ...) are open_clip's native names, so the file is loaded, strictly, into an
open_clip ``CLIP`` whose sizes are read off the tensors' shapes (any ViT width, depth, patch,
image and context size) and whose activation is **QuickGELU**, as OpenAI trained it. Preprocessing
is OpenAI's (resize the short side, centre crop, OpenAI mean and std), the tokenizer open_clip's
copy of OpenAI's BPE. TorchScript archives (OpenAI's own downloads) are refused with a line saying
how to turn one into a state dict.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from engine.errors import ModelLoadError
from engine.models.families import FamilyModel, strip_prefix
from engine.models.loading import LAYOUT_KEYS, is_openai_layout


def file_of(spec: str) -> Path:
    text = strip_prefix(spec).strip()
    if not text:
        raise ModelLoadError(f"--model {spec!r}: expected openai:FILE (an OpenAI CLIP state dict)")
    path = Path(text).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"checkpoint file not found: {path} (from --model {spec!r})")
    return path


def read_state_dict(path: Path) -> dict:
    """The file's tensors, weights-only; wrappers (``state_dict``) and ``module.`` removed."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes one line
        text = str(exc)
        if "TorchScript" in text or "constants.pkl" in text:
            raise ModelLoadError(
                f"{path}: a TorchScript archive, not a state dict; save one with "
                "torch.save(torch.jit.load(FILE).state_dict(), OUT) and give openai:OUT") from exc
        raise ModelLoadError(f"{path}: not a weights-only state dict "
                             f"({_first_line(exc)})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ModelLoadError(f"{path}: not a state dict (a mapping of parameter names to tensors)")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def model_cfg(state: dict, path: Path) -> dict:
    """open_clip ``model_cfg`` (QuickGELU) read off the tensors' shapes."""
    if not is_openai_layout(state):
        missing = [k for k in LAYOUT_KEYS if k not in state]
        raise ModelLoadError(
            f"{path}: not an OpenAI-layout ViT CLIP state dict (missing "
            f"{', '.join(missing) or 'transformer.resblocks.*'}); ResNet CLIPs are not supported")
    conv = state["visual.conv1.weight"]
    width, patch = int(conv.shape[0]), int(conv.shape[-1])
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = int(state["ln_final.weight"].shape[0])

    def depth(prefix: str) -> int:
        return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})

    return {
        "embed_dim": int(state["text_projection"].shape[1]),
        "quick_gelu": True,
        "vision_cfg": {"image_size": patch * grid, "layers": depth("visual.transformer.resblocks."),
                       "width": width, "patch_size": patch, "head_width": 64},
        "text_cfg": {"context_length": int(state["positional_embedding"].shape[0]),
                     "vocab_size": int(state["token_embedding.weight"].shape[0]),
                     "width": text_width, "heads": max(text_width // 64, 1),
                     "layers": depth("transformer.resblocks.")},
    }


def load(spec: str, *, device: str = "cpu", seed: int = 0) -> FamilyModel:
    from engine.models.loading import force_offline

    path = file_of(spec)
    force_offline()
    import open_clip
    import torch
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from engine.models.families.open_clip import from_open_clip
    from engine.models.loading import LoadedModel, ModelSpec, load_strict

    state = read_state_dict(path)
    cfg = model_cfg(state, path)
    for key in ("input_resolution", "context_length", "vocab_size"):
        state.pop(key, None)
    torch.manual_seed(seed)
    try:
        model = open_clip.model.CLIP(cfg["embed_dim"], vision_cfg=cfg["vision_cfg"],
                                     text_cfg=cfg["text_cfg"], quick_gelu=True)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{path}: cannot build the architecture its shapes describe "
                             f"({_first_line(exc)})") from exc
    load_strict(model, {k: v.float() for k, v in state.items()}, path)
    model = model.float().to(device).eval()
    model.requires_grad_(False)
    pp = {"size": cfg["vision_cfg"]["image_size"], "mode": "RGB",
          "mean": list(OPENAI_DATASET_MEAN), "std": list(OPENAI_DATASET_STD),
          "interpolation": "bicubic", "resize_mode": "shortest"}
    context = cfg["text_cfg"]["context_length"]
    loaded = LoadedModel(
        spec=ModelSpec(text=spec, kind="openai", path=path), model=model,
        preprocess=image_transform_v2(PreprocessCfg(**pp), is_train=False), preprocess_cfg=pp,
        model_cfg=cfg, context_length=context, weights=path, device=device,
        _tokenizer=open_clip.tokenizer.SimpleTokenizer(context_length=context),
    )
    return from_open_clip(loaded, family="openai")


def files(spec: str) -> list[Path]:
    return [file_of(spec)]


def fingerprint(spec: str) -> str:
    """sha256 of the open_clip version (the code that runs the weights) and the file."""
    from importlib.metadata import version

    from engine.models.loading import file_sha256

    text = f"openai-layout|quickgelu|open_clip {version('open_clip_torch')}|"
    return hashlib.sha256((text + file_sha256(file_of(spec))).encode()).hexdigest()[:16]


def available(spec: str) -> str:
    return "ready" if Path(strip_prefix(spec)).expanduser().is_file() else "missing"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
