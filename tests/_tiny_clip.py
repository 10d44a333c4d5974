"""Tiny open_clip models of every tower type the engine supports, built offline for tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

TINY_NATIVE = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TINY_PREPROCESS = {"size": 32, "mode": "RGB", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
                   "interpolation": "bicubic", "resize_mode": "shortest"}


def native_cfg(*, text_linear: bool = False, custom_text: bool = False) -> dict:
    """Native ViT + native text; `text_linear` gives a Linear text projection (proj_bias)."""
    cfg = json.loads(json.dumps(TINY_NATIVE))
    if text_linear:
        cfg["text_cfg"]["proj_bias"] = True
    if custom_text:
        cfg["custom_text"] = True
    return cfg


def write_bert_config(folder: Path) -> Path:
    """A tiny BertConfig folder (no weights, no tokenizer): the HF text tower's `hf_model_name`."""
    from transformers import BertConfig

    folder.mkdir(parents=True, exist_ok=True)
    BertConfig(vocab_size=64, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=32, max_position_embeddings=32,
               pad_token_id=0).save_pretrained(folder)
    return folder


def biomedclip_cfg(bert_dir: Path, *, timm_proj: str = "linear", hf_proj: str = "mlp") -> dict:
    """BiomedCLIP's shape at toy size: timm ViT + HF BERT text tower with an MLP projection."""
    # timm_proj "none" (SigLIP-style): the pooled trunk output (test_vit: 64 wide) is the embedding
    none = timm_proj == "none"
    return {
        "embed_dim": 64 if none else 16,
        "vision_cfg": {"timm_model_name": "test_vit", "timm_model_pretrained": False,
                       "timm_pool": "avg" if none else "", "timm_proj": timm_proj,
                       "image_size": 160},
        "text_cfg": {"hf_model_name": str(bert_dir), "hf_tokenizer_name": str(bert_dir),
                     "hf_proj_type": hf_proj, "hf_pooler_type": "cls_last_hidden_state_pooler",
                     "context_length": 32},
    }


def write_local_dir(folder: Path, model_cfg: dict, preprocess_cfg: dict | None = None,
                    *, weights: bool = True, seed: int = 0):
    """Write an open_clip `local-dir:` folder; returns the (random-init) model it holds."""
    import open_clip
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    pp = dict(preprocess_cfg or TINY_PREPROCESS)
    pp["size"] = model_cfg["vision_cfg"].get("image_size", pp["size"])
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": pp})
    )
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{folder}", pretrained_text=False,
                                   pretrained_image=False)
    if weights:
        from safetensors.torch import save_file

        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(folder / "open_clip_model.safetensors"))
    return model.eval()


REPORTS = (
    "FINDINGS: The lungs are clear. No pleural effusion or pneumothorax. IMPRESSION: Normal.",
    "FINDINGS: Small left pleural effusion with basilar atelectasis. IMPRESSION: Effusion.",
    "FINDINGS: Enlarged cardiac silhouette. Mild pulmonary edema. IMPRESSION: Cardiomegaly.",
    "FINDINGS: Right upper lobe consolidation. IMPRESSION: Pneumonia is possible.",
    "FINDINGS: Endotracheal tube 4 cm above the carina. No pneumothorax. IMPRESSION: Lines.",
)


def make_cohort(db: Path, root: Path, *, n: int = 10, name: str = "tiny", bad: tuple[int, ...] = (),
                size: int = 48, seed: int = 0):
    """Register a tiny cohort of `n` one-image studies (grayscale PNG/JPG) in `db`.

    Items in `bad` get a corrupt image file. Returns the registered items.
    """
    import numpy as np
    import pandas as pd
    from PIL import Image

    from engine.cohort.registry import register_cohort
    from engine.cohort.table import CohortLoad, conform

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        suffix = "png" if i % 2 else "jpg"
        rel = f"files/p{i // 2}/s{i}/img{i}.{suffix}"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if i in bad:
            path.write_bytes(b"not an image")
        else:
            pixels = (rng.random((size, size)) * 255).astype("uint8")
            Image.fromarray(pixels, mode="L").save(path)
        rows.append({
            "image_id": f"img{i:03d}", "study_id": f"s{i:03d}", "patient_id": f"p{i // 2:03d}",
            "split": ("train", "validate", "test")[i % 3], "view": "PA", "image_path": rel,
            "report_text": REPORTS[i % len(REPORTS)] + f" Study {i}.",
            "Pleural Effusion": float(i % 2),
        })
    load = CohortLoad(items=conform(pd.DataFrame(rows)))
    return register_cohort(db, name, fmt="csv", root=root, load=load)


# --- other model families, built offline from configs (nothing downloaded) --------------------

TINY_WORDS = sorted({w.strip(".:,").lower() for r in REPORTS for w in r.split()} | {"study"})


def write_hf_tokenizer(folder: Path, context: int = 16):
    """A tiny word-level fast tokenizer (every word of `REPORTS`), saved with save_pretrained."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[EOS]", *TINY_WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   eos_token="[EOS]", model_max_length=context)
    fast.save_pretrained(folder)
    return len(vocab)


def write_hf_model(folder: Path, kind: str = "clip", *, seed: int = 0):
    """A tiny random HF `CLIPModel` or `SiglipModel` folder (model, processor, tokenizer).

    Returns the model (eval mode).
    """
    import torch
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    n_vocab = write_hf_tokenizer(folder)
    text = dict(vocab_size=n_vocab, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=16, pad_token_id=0,
                bos_token_id=1, eos_token_id=2)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                  num_attention_heads=2, image_size=32, patch_size=8)
    if kind == "clip":
        config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
        processor = transformers.CLIPImageProcessor(size={"shortest_edge": 32},
                                                    crop_size={"height": 32, "width": 32})
        cls = transformers.CLIPModel
    else:
        config = transformers.SiglipConfig(text_config=text, vision_config=vision)
        processor = transformers.SiglipImageProcessor(size={"height": 32, "width": 32})
        cls = transformers.SiglipModel
    torch.manual_seed(seed)
    model = cls(config).eval()
    if kind != "clip":
        with torch.no_grad():
            model.logit_scale.fill_(2.3)
            model.logit_bias.fill_(-1.5)
    transformers.utils.logging.disable_progress_bar()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model


def write_openai_state_dict(path: Path, *, seed: int = 0, suffix_wrap: bool = False):
    """A tiny OpenAI-layout CLIP state dict (QuickGELU ViT, widths of 64 as OpenAI's heads need).

    Written from a random open_clip `CLIP(quick_gelu=True)`, whose key names are OpenAI's; returns
    that model (eval mode).
    """
    import open_clip
    import torch

    torch.manual_seed(seed)
    model = open_clip.model.CLIP(
        16, vision_cfg={"image_size": 32, "layers": 1, "width": 64, "patch_size": 8,
                        "head_width": 64},
        text_cfg={"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 1,
                  "layers": 1},
        quick_gelu=True).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model
