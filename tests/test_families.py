"""Model families beyond open_clip: HF CLIPModel / SiglipModel folders and OpenAI-layout state
dicts, built offline from configs, split into backbones and heads that reproduce the models."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch
from PIL import Image

import _tiny_clip as tiny
from engine.errors import ModelLoadError
from engine.models import families


def _image(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((40, 48)) * 255).astype("uint8"), mode="L")


TEXTS = ["The lungs are clear.", tiny.REPORTS[2] + " Study 7.", "no words known here"]


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_hf_split_equals_the_models_own_features(tmp_path, kind):
    folder = tmp_path / kind
    reference = tiny.write_hf_model(folder, kind)
    fm = families.load(f"hf:{folder}")
    assert fm.family == "hf"
    assert fm.loss == ("infonce" if kind == "clip" else "sigmoid")
    assert (fm.logit_bias is None) == (kind == "clip")
    pixels = torch.stack([fm.preprocess(_image(i)) for i in range(3)])
    assert pixels.shape == (3, 3, 32, 32)
    ids, mask = fm.tokenize(TEXTS)
    assert ids.shape == mask.shape == (3, fm.context_length)
    assert int(mask[0].sum()) < fm.context_length  # padding is masked
    with torch.no_grad():
        want_img = reference.get_image_features(pixel_values=pixels).pooler_output
        want_txt = reference.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        got_img = fm.image_head(fm.image_backbone(pixels))
        got_txt = fm.text_head(fm.text_backbone(ids, mask))
    assert got_img.shape == want_img.shape and got_txt.shape == want_txt.shape
    torch.testing.assert_close(got_img, want_img, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_txt, want_txt, atol=1e-5, rtol=0)
    if kind == "siglip":
        assert fm.logit_bias == pytest.approx(-1.5) and fm.logit_scale == pytest.approx(2.3)
        # pre-projection text features: the pooled state before the text tower's head; the
        # image head is an identity over the attention-pooled output
        assert fm.text_width == 32 and fm.image_width == fm.embed_dim == 32


def test_hf_fingerprint_follows_the_files(tmp_path):
    folder = tmp_path / "clip"
    tiny.write_hf_model(folder, "clip", seed=1)
    first = families.fingerprint(f"hf:{folder}")
    assert families.fingerprint(f"transformers:{folder}") == first
    tiny.write_hf_model(folder, "clip", seed=2)
    assert families.fingerprint(f"hf:{folder}") != first


def test_hf_bad_folders_are_one_line(tmp_path):
    with pytest.raises(ModelLoadError, match="model folder not found"):
        families.load(f"hf:{tmp_path / 'nope'}")
    folder = tmp_path / "clip"
    tiny.write_hf_model(folder, "clip")
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(ModelLoadError, match="preprocessor_config.json: missing"):
        families.load(f"hf:{folder}")
    (folder / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ModelLoadError, match="model_type 'bert' is not a supported") as err:
        families.load(f"hf:{folder}")
    assert "\n" not in str(err.value)


def test_openai_state_dict_loads_with_quickgelu_and_splits(tmp_path):
    path = tmp_path / "chexzero.pt"
    reference = tiny.write_openai_state_dict(path, seed=4)
    fm = families.load(f"openai:{path}")
    assert fm.family == "openai" and fm.loss == "infonce"
    assert fm.model.visual.transformer.resblocks[0].mlp.gelu.__class__.__name__ == "QuickGELU"
    # every tensor of the file landed in the model under its own name
    want = torch.load(path, weights_only=True)
    got = fm.model.state_dict()
    for key, value in want.items():
        if key in ("visual.proj", "text_projection"):
            continue  # moved into the heads
        torch.testing.assert_close(got[key], value, atol=0, rtol=0)
    pixels = torch.stack([fm.preprocess(_image(i)) for i in range(2)])
    ids, mask = fm.tokenize(TEXTS[:2])
    with torch.no_grad():
        want_img = reference.encode_image(pixels)
        want_txt = reference.encode_text(ids)
        torch.testing.assert_close(fm.image_head(fm.image_backbone(pixels)), want_img,
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(fm.text_head(fm.text_backbone(ids, mask)), want_txt,
                                   atol=1e-5, rtol=0)


def test_openai_layout_into_a_gelu_architecture_is_refused(tmp_path):
    """`ViT-B-32@FILE` with a bare OpenAI-layout file names the -quickgelu architecture."""
    path = tmp_path / "sd.pt"
    tiny.write_openai_state_dict(path)
    with pytest.raises(ModelLoadError) as err:
        families.load(f"ViT-B-32@{path}")
    text = str(err.value)
    assert "\n" not in text and "ViT-B-32-quickgelu@" in text and "QuickGELU" in text
    # the -quickgelu architecture is chosen: the file's (tiny) tensors do not fit ViT-B/32, and
    # the error names the mismatching tensors instead of ending at a colon
    with pytest.raises(ModelLoadError) as err:
        families.load(f"ViT-B-32-quickgelu@{path}")
    text = str(err.value)
    assert "\n" not in text and "sd.pt: cannot load into CLIP (" in text


def test_state_dict_keys_that_do_not_fit_are_named_with_counts(tmp_path):
    import open_clip

    path = tmp_path / "sd.pt"
    model = tiny.write_openai_state_dict(path)
    state = model.state_dict()
    del state["ln_final.weight"], state["ln_final.bias"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    target = open_clip.model.CLIP(16, vision_cfg={
        "image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 64},
        text_cfg={"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 1,
                  "layers": 1}, quick_gelu=True)
    from engine.models.loading import load_checkpoint_file

    with pytest.raises(ModelLoadError) as err:
        load_checkpoint_file(target, path)
    text = str(err.value)
    assert "\n" not in text
    assert "2 missing keys (ln_final.weight, ln_final.bias)" in text
    assert "1 unexpected key (extra.weight)" in text


def test_openai_bad_files_are_one_line(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="not a weights-only state dict"):
        families.load(f"openai:{bad}")
    other = tmp_path / "other.pt"
    torch.save({"a.weight": torch.zeros(2)}, other)
    with pytest.raises(ModelLoadError, match="not an OpenAI-layout ViT CLIP state dict"):
        families.load(f"openai:{other}")


def test_family_registry_picks_by_prefix():
    assert families.family_name("hf:/x") == families.family_name("transformers:/x") == "hf"
    assert families.family_name("openai:/x.pt") == "openai"
    assert families.family_name("ViT-B-32:random") == "open_clip"
    assert families.family_name("local-dir:/m") == "open_clip"
    assert families.family_name("open_clip:ViT-B-32@/f.pt") == "open_clip"
    assert families.family_name("imported:0123456789abcdef") == "imported"


def test_checkpoint_load_does_not_say_random_init(tmp_path, caplog):
    """open_clip's "No pretrained weights loaded ... initialized randomly" precedes the checkpoint's
    own weights being loaded: it is not shown for a checkpoint spec."""
    import logging

    folder = tmp_path / "arch"
    model = tiny.write_local_dir(folder, tiny.native_cfg(), seed=2)
    ckpt = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in
                                           model.state_dict().items()}}, ckpt)
    (folder / "open_clip_model.safetensors").unlink()  # the folder gives the architecture only
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        fm = families.load(f"local-dir:{folder}@{ckpt}")
    assert not [r.getMessage() for r in caplog.records]
    assert fm.weights == ckpt
    with caplog.at_level(logging.WARNING):
        families.load("ViT-S-32:random")  # true there: random weights are what was asked for
    assert [r for r in caplog.records if "initialized randomly" in r.getMessage()]


def test_a_bad_size_in_a_model_config_names_the_field_not_the_weights(tmp_path):
    import json

    folder = tmp_path / "m"
    tiny.write_local_dir(folder, tiny.native_cfg())
    config = folder / "open_clip_config.json"
    data = json.loads(config.read_text())
    data["model_cfg"]["embed_dim"] = "big"
    config.write_text(json.dumps(data))
    with pytest.raises(ModelLoadError) as err:
        families.load(f"local-dir:{folder}")
    text = str(err.value)
    assert text == f"{config}: model_cfg.embed_dim is 'big'; expected a positive integer"
    data["model_cfg"]["embed_dim"] = 16
    data["model_cfg"]["vision_cfg"]["layers"] = 0
    config.write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match=r"model_cfg\.vision_cfg\.layers is 0"):
        families.load(f"local-dir:{folder}")
