"""Hugging Face transformers dual encoders: ``hf:DIR`` or ``transformers:DIR`` (docs/models.md).

``DIR`` is a local folder written by ``save_pretrained``: ``config.json``, the weights
(``model.safetensors``, ``pytorch_model.bin`` or their sharded index), the image processor's
``preprocessor_config.json`` and the tokenizer files. Nothing is downloaded. Two model classes
are supported, by the config's ``model_type``:

* ``clip`` (`CLIPModel`): the heads are ``visual_projection`` and ``text_projection``; the
  backbones are the towers' pooled outputs (what `get_image_features` / `get_text_features`
  project).
* ``siglip`` (`SiglipModel`, e.g. MedSigLIP): the text head is the text tower's ``head`` Linear
  after the last-token pooling; the image backbone is the vision tower's pooled output (its
  attention-pooling head included: it is not a linear layer), so its head is an identity-initialised
  ``nn.Linear``, as for open_clip's SigLIP towers. The family's loss is the sigmoid loss with the
  model's bias.

In both, ``head(backbone(x))`` equals the model's own ``get_*_features(x)`` (tested to 1e-5).
transformers is imported only when a model is loaded.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

from engine.errors import ModelLoadError
from engine.models.families import FamilyModel, strip_prefix

SUPPORTED = {"clip": "CLIPModel", "siglip": "SiglipModel"}
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
           "pytorch_model.bin.index.json")
PROCESSOR = "preprocessor_config.json"


def folder_of(spec: str) -> Path:
    """The spec's folder, checked: it exists and holds a config and weights."""
    text = strip_prefix(spec).strip()
    if not text:
        raise ModelLoadError(f"--model {spec!r}: expected hf:DIR (a save_pretrained folder)")
    folder = Path(text).expanduser()
    if not folder.is_dir():
        raise ModelLoadError(f"model folder not found: {folder} (from --model {spec!r})")
    config = folder / "config.json"
    if not config.is_file():
        raise ModelLoadError(f"{config}: missing; an hf: model folder is what save_pretrained "
                             "writes (config.json, weights, preprocessor and tokenizer files)")
    if not any((folder / name).is_file() for name in WEIGHTS):
        raise ModelLoadError(f"{folder}: no weights file ({', '.join(WEIGHTS[::2])}) for "
                             f"--model {spec!r}")
    return folder.resolve()


def _model_type(folder: Path) -> str:
    config = folder / "config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{config}: not valid JSON ({_first_line(exc)})") from exc
    kind = str(data.get("model_type", "")) if isinstance(data, dict) else ""
    if kind not in SUPPORTED:
        raise ModelLoadError(
            f"{config}: model_type {kind!r} is not a supported dual encoder (hf: loads "
            f"{', '.join(f'{k} ({v})' for k, v in SUPPORTED.items())}); export embeddings "
            "instead (docs/models.md, `import-embeddings`)")
    return kind


def load(spec: str, *, device: str = "cpu", seed: int = 0) -> FamilyModel:
    from engine.models.loading import force_offline

    folder = folder_of(spec)
    kind = _model_type(folder)
    if not (folder / PROCESSOR).is_file():
        raise ModelLoadError(
            f"{folder / PROCESSOR}: missing; save the model's image processor beside it "
            "(processor.save_pretrained(DIR)): the audit uses the model's own preprocessing")
    force_offline()
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    verbosity = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_error()
    torch.manual_seed(seed)
    try:
        cls = getattr(transformers, SUPPORTED[kind])
        model = cls.from_pretrained(str(folder), local_files_only=True)
        processor = transformers.AutoImageProcessor.from_pretrained(str(folder),
                                                                    local_files_only=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - library errors become one line naming the folder
        raise ModelLoadError(f"{folder}: cannot load --model {spec!r} ({_first_line(exc)})") \
            from exc
    finally:
        transformers.utils.logging.set_verbosity(verbosity)
    model = model.float().to(device).eval()
    model.requires_grad_(False)
    context = int(model.config.text_config.max_position_embeddings)
    use_mask = "attention_mask" in getattr(tokenizer, "model_input_names", ["attention_mask"])

    def tokenize(texts: list[str]):
        enc = tokenizer(list(texts), padding="max_length", max_length=context, truncation=True,
                        return_tensors="pt")
        ids = enc["input_ids"]
        mask = enc.get("attention_mask")
        return ids, (torch.ones_like(ids) if mask is None else mask)

    def preprocess(image):
        return processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"][0]

    if kind == "clip":
        image_head = copy.deepcopy(model.visual_projection)
        text_head = copy.deepcopy(model.text_projection)
        towers = {"image": "hf-clip-vision", "text": "hf-clip-text"}
        bias = None
    else:
        if not getattr(model.config.vision_config, "vision_use_head", True):
            raise ModelLoadError(f"{folder}: a SigLIP vision tower without its pooling head "
                                 "(vision_use_head false) has no pooled output to audit")
        from engine.models.split import _identity_linear

        image_head = _identity_linear(int(model.config.vision_config.hidden_size))
        text_head = copy.deepcopy(model.text_model.head)
        model.text_model.head = torch.nn.Identity()
        towers = {"image": "hf-siglip-vision", "text": "hf-siglip-text"}
        bias = float(model.logit_bias.detach().float().reshape(-1)[0])
    for head in (image_head, text_head):
        head.float().eval().requires_grad_(False)

    def image_backbone(pixels):
        return model.vision_model(pixel_values=pixels).pooler_output.float()

    def text_backbone(ids, mask=None):
        out = model.text_model(input_ids=ids, attention_mask=mask if use_mask else None)
        return out.pooler_output.float()

    weights = next(folder / n for n in WEIGHTS if (folder / n).is_file())
    return FamilyModel(
        spec=spec, family="hf", image_backbone=image_backbone, text_backbone=text_backbone,
        image_head=image_head, text_head=text_head, preprocess=preprocess,
        preprocess_cfg=_processor_cfg(processor), tokenize=tokenize, context_length=context,
        logit_scale=float(model.logit_scale.detach().float().reshape(-1)[0]), logit_bias=bias,
        loss="infonce" if kind == "clip" else "sigmoid", towers=towers, weights=weights,
        model=model,
    )


def _processor_cfg(processor) -> dict:
    keep = ("image_processor_type", "size", "crop_size", "do_center_crop", "do_resize",
            "resample", "image_mean", "image_std", "do_normalize", "rescale_factor")
    data = processor.to_dict()
    return json.loads(json.dumps({k: data[k] for k in keep if k in data}, default=str))


def files(spec: str) -> list[Path]:
    folder = folder_of(spec)
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def fingerprint(spec: str) -> str:
    """sha256 over the transformers version and every file of the folder (name and content)."""
    from importlib.metadata import version

    from engine.models.loading import file_sha256

    digest = hashlib.sha256(f"transformers {version('transformers')}|".encode())
    for path in files(spec):
        digest.update(f"{path.name}|{file_sha256(path)}|".encode())
    return digest.hexdigest()[:16]


def available(spec: str) -> str:
    try:
        folder_of(spec)
    except ModelLoadError:
        return "missing"
    return "ready"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
