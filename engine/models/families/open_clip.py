"""The open_clip family (the default): specs without a prefix (`engine.models.loading`).

``open_clip:SPEC`` names the family explicitly; for ``open_clip:ARCH@FILE`` it also says that a
bare state dict in OpenAI's key layout was trained by open_clip with the architecture's own
activation (without the prefix such a file is refused for a GELU architecture, since OpenAI's
CLIP and its fine-tunes use QuickGELU: `engine.models.loading._check_activation`).
"""

from __future__ import annotations

from pathlib import Path

from engine.models.families import FamilyModel

EXPLICIT = "open_clip:"


def _plain(spec: str) -> tuple[str, bool]:
    """(the open_clip spec, whether the family was named explicitly)."""
    text = spec.strip()
    return (text[len(EXPLICIT):], True) if text.startswith(EXPLICIT) else (text, False)


def load(spec: str, *, device: str = "cpu", seed: int = 0) -> FamilyModel:
    from engine.models.loading import load_model

    plain, explicit = _plain(spec)
    loaded = load_model(plain, device=device, seed=seed, layout_check=not explicit)
    return from_open_clip(loaded, family="open_clip")


def from_open_clip(loaded, *, family: str) -> FamilyModel:
    """Split a `LoadedModel` (an open_clip module) into a `FamilyModel`."""
    from engine.models.split import split_towers

    reference = loaded.model
    towers = split_towers(reference)

    def tokenize(texts: list[str]):
        ids = loaded.tokenizer(texts)
        inner = getattr(loaded.tokenizer, "tokenizer", None)
        pad = getattr(inner, "pad_token_id", None)
        return ids, ids != (0 if pad is None else pad)

    def text_backbone(ids, mask=None):  # open_clip towers find the padding themselves
        return towers.text_backbone(ids)

    return FamilyModel(
        spec=loaded.spec.text, family=family,
        image_backbone=towers.image_backbone, text_backbone=text_backbone,
        image_head=towers.image_head, text_head=towers.text_head,
        preprocess=loaded.preprocess, preprocess_cfg=loaded.preprocess_cfg, tokenize=tokenize,
        context_length=loaded.context_length, logit_scale=towers.logit_scale,
        logit_bias=towers.logit_bias,
        loss="sigmoid" if towers.logit_bias is not None else "infonce",
        towers=towers.towers, weights=loaded.weights, model=reference,
    )


def fingerprint(spec: str) -> str:
    from engine.models.loading import spec_fingerprint

    return spec_fingerprint(_plain(spec)[0])


def files(spec: str) -> list[Path]:
    from engine.models.loading import parse_spec

    path = parse_spec(_plain(spec)[0]).path
    if path is None:
        return []
    path = Path(path)
    return [path] if path.is_file() else sorted(path.iterdir()) if path.is_dir() else []


def available(spec: str) -> str:
    """Cheap local check: is a local-dir / checkpoint spec on disk? (hub caches: 'cache')."""
    spec = _plain(spec)[0]
    if spec.startswith("local-dir:"):
        folder = Path(spec[len("local-dir:"):].split("@")[0])
        return "ready" if (folder / "open_clip_config.json").exists() else "not built"
    if "@" in spec and not spec.startswith("hf-hub:"):
        return "ready" if Path(spec.split("@", 1)[1]).expanduser().is_file() else "missing"
    return "cache"
