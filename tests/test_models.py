"""Model loading from specs, offline errors, the registry, and the backbone / head split."""

from __future__ import annotations

import json
import os
import shutil

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import _tiny_clip as tiny
from engine.cli import main
from engine.errors import ModelLoadError
from engine.models.loading import load_model, parse_spec, spec_fingerprint
from engine.models.registry import read_registry, resolve_model, storage_key
from engine.models.split import build_head, describe_head, split_towers


def _native(tmp_path, **kw):
    folder = tmp_path / "native"
    tiny.write_local_dir(folder, tiny.native_cfg(**kw))
    return f"local-dir:{folder}", torch.randn(3, 3, 32, 32), torch.randint(1, 49000, (3, 16))


def _biomed(tmp_path, timm_proj="linear", hf_proj="mlp"):
    bert = tiny.write_bert_config(tmp_path / "bert")
    folder = tmp_path / "biomed"
    tiny.write_local_dir(folder, tiny.biomedclip_cfg(bert, timm_proj=timm_proj, hf_proj=hf_proj))
    tokens = torch.randint(1, 64, (3, 32))
    tokens[:, -5:] = 0  # padding, as the HF tokenizer would produce
    return f"local-dir:{folder}", torch.randn(3, 3, 160, 160), tokens


TOWERS = {
    "native-vit + native-text (parameter projections)": (
        lambda p: _native(p), ("native-vit", "native-text"), (nn.Linear, nn.Linear)),
    "native text with a Linear projection": (
        lambda p: _native(p, text_linear=True), ("native-vit", "native-text"),
        (nn.Linear, nn.Linear)),
    "CustomTextCLIP with a native text tower": (
        lambda p: _native(p, custom_text=True), ("native-vit", "native-text"),
        (nn.Linear, nn.Linear)),
    "BiomedCLIP-shaped: timm ViT + HF BERT with MLP head": (
        lambda p: _biomed(p), ("timm-linear", "hf-text"), (nn.Linear, nn.Sequential)),
    "timm MLP head + HF linear head": (
        lambda p: _biomed(p, "mlp", "linear"), ("timm-mlp", "hf-text"), (nn.Sequential, nn.Linear)),
    "timm without projection (SigLIP-style) + HF linear head": (
        lambda p: _biomed(p, "none", "linear"), ("timm-none", "hf-text"), (nn.Linear, nn.Linear)),
}


@pytest.mark.parametrize("case", list(TOWERS))
def test_split_reproduces_encode(tmp_path, case):
    build, kinds, head_types = TOWERS[case]
    spec, images, tokens = build(tmp_path)
    reference = load_model(spec).model
    with torch.no_grad():
        want_img = reference.encode_image(images, normalize=True)
        want_txt = reference.encode_text(tokens, normalize=True)

    towers = split_towers(load_model(spec).model)
    assert (towers.towers["image"], towers.towers["text"]) == kinds
    assert isinstance(towers.image_head, head_types[0])
    assert isinstance(towers.text_head, head_types[1])
    with torch.no_grad():
        img_feat, txt_feat = towers.image_backbone(images), towers.text_backbone(tokens)
        assert img_feat.shape == (3, towers.image_width)
        assert txt_feat.shape == (3, towers.text_width)
        got_img = F.normalize(towers.image_head(img_feat), dim=-1)
        got_txt = F.normalize(towers.text_head(txt_feat), dim=-1)
        assert (got_img - want_img).abs().max() < 1e-5
        assert (got_txt - want_txt).abs().max() < 1e-5
        # the stored form of a head (JSON structure + state dict) rebuilds the same module
        for head, feats, want in ((towers.image_head, img_feat, want_img),
                                  (towers.text_head, txt_feat, want_txt)):
            rebuilt = build_head(json.loads(json.dumps(describe_head(head))))
            rebuilt.load_state_dict(head.state_dict())
            assert (F.normalize(rebuilt(feats), dim=-1) - want).abs().max() < 1e-5
    assert towers.logit_scale == pytest.approx(float(reference.logit_scale))


def test_parameter_projection_becomes_linear_with_transposed_weight(tmp_path):
    spec, _, _ = _native(tmp_path)
    model = load_model(spec).model
    proj = model.visual.proj.detach().clone()
    towers = split_towers(model)
    assert towers.image_head.bias is None
    assert torch.equal(towers.image_head.weight, proj.T)
    assert model.visual.proj is None and model.text_projection is None


def test_local_dir_loads_weights_and_preprocessing(tmp_path):
    folder = tmp_path / "m"
    saved = tiny.write_local_dir(folder, tiny.native_cfg(), seed=3)
    loaded = load_model(f"local-dir:{folder}")
    for key, value in saved.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    assert loaded.preprocess_cfg["size"] in (32, [32, 32])
    assert loaded.preprocess_cfg["mean"] == [0.5, 0.5, 0.5]
    assert loaded.context_length == 16
    assert loaded.tokenizer(["a report"]).shape == (1, 16)
    from PIL import Image

    pixels = loaded.preprocess(Image.new("RGB", (64, 48), (128, 128, 128)))
    assert pixels.shape == (3, 32, 32)


def test_checkpoint_file_with_local_dir_architecture(tmp_path):
    folder = tmp_path / "arch"
    tiny.write_local_dir(folder, tiny.native_cfg(), seed=0)
    trained = tiny.write_local_dir(tmp_path / "other", tiny.native_cfg(), seed=7)
    ckpt = tmp_path / "epoch_3.pt"
    state = {f"module.{k}": v for k, v in trained.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state}, ckpt)
    loaded = load_model(f"local-dir:{folder}@{ckpt}")
    assert loaded.spec.kind == "checkpoint" and loaded.weights == ckpt
    for key, value in trained.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


def test_spec_forms_parse():
    assert parse_spec("ViT-B-16:openai").kind == "pretrained"
    assert parse_spec("ViT-B-16:random").kind == "random"
    spec = parse_spec("ViT-B-16@/ckpt/epoch_10.pt")
    assert (spec.kind, spec.arch, str(spec.path)) == ("checkpoint", "ViT-B-16", "/ckpt/epoch_10.pt")
    assert parse_spec("hf-hub:microsoft/BiomedCLIP-x").arch == "microsoft/BiomedCLIP-x"
    with pytest.raises(ModelLoadError, match="neither a registered model"):
        parse_spec("ViT-B-16")


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_bad_checkpoint_path_is_one_line_naming_it(tmp_path):
    missing = tmp_path / "nope" / "epoch_1.pt"
    with pytest.raises(ModelLoadError) as exc:
        load_model(f"ViT-B-32@{missing}")
    assert str(missing) in _one_line(exc)


def test_corrupt_checkpoint_is_one_line_naming_it(tmp_path):
    folder = tmp_path / "arch"
    tiny.write_local_dir(folder, tiny.native_cfg())
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(ModelLoadError) as exc:
        load_model(f"local-dir:{folder}@{bad}")
    assert str(bad) in _one_line(exc)


def test_missing_hf_cache_says_what_to_place_where(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelLoadError) as exc:
        load_model("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")
    text = _one_line(exc)
    assert "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224" in text
    assert "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract" in text
    assert str(tmp_path / "hub") in text and "HF_HUB_OFFLINE=1" in text and "HF_HOME" in text
    with pytest.raises(ModelLoadError) as exc:
        load_model("ViT-B-16:openai")
    assert "timm/vit_base_patch16_clip_224.openai" in _one_line(exc)


def test_hf_hub_model_loads_from_a_populated_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    source = tmp_path / "src"
    saved = tiny.write_local_dir(source, tiny.native_cfg(), seed=5)
    repo = tmp_path / "hub" / "models--org--tiny-clip"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    for name in ("open_clip_config.json", "open_clip_model.safetensors"):
        shutil.copy(source / name, snapshot / name)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    loaded = load_model("hf-hub:org/tiny-clip")
    for key, value in saved.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


def test_fingerprint_follows_weights_not_location(tmp_path):
    tiny.write_local_dir(tmp_path / "a", tiny.native_cfg(), seed=1)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    tiny.write_local_dir(tmp_path / "c", tiny.native_cfg(), seed=2)
    fa, fb, fc = (spec_fingerprint(f"local-dir:{tmp_path / x}") for x in "abc")
    assert fa == fb != fc


def test_registry_lists_the_ladder_and_resolves_names(tmp_path):
    entries = read_registry(tmp_path)
    ladder = [e for e in entries if e.name.startswith("phantom-r")]
    assert [e.specialization for e in ladder] == list(range(len(ladder))) and len(ladder) >= 4
    assert ladder[0].spec == f"local-dir:{tmp_path.resolve()}/models/phantom-r0"
    assert all(e.description for e in entries)
    assert resolve_model("phantom-r2", cache=tmp_path).spec.endswith("/models/phantom-r2")
    raw = resolve_model("hf-hub:org/x", cache=tmp_path)
    assert raw.name == raw.spec == "hf-hub:org/x"
    assert storage_key("phantom-r1") == "phantom-r1"
    assert "/" not in storage_key("hf-hub:org/x") and storage_key("a/b") != storage_key("a:b")


# --- the phantom ladder (synthetic.ladder) and its calibration ---------------------------------

TINY_LADDER = dict(rung_epochs=(0, 1, 2), embed_dim=16, image_size=32, patch_size=8,
                   vision_width=32, vision_layers=1, text_width=32, text_layers=1,
                   context_length=32, heads=2, batch_size=4, shift=2)


def test_ladder_trains_saves_registers_and_reuses(tmp_path):
    import numpy as np

    from engine import store
    from synthetic.ladder.ladder import LadderConfig, train_ladder

    db, cache = tmp_path / "r.duckdb", tmp_path / "cache"
    tiny.make_cohort(db, tmp_path / "cohort", n=15)
    config = LadderConfig(**TINY_LADDER)
    result = train_ladder(db, cache, "tiny", config=config)
    assert not result.reused and [r.epochs for r in result.rungs] == [0, 1, 2]
    assert [r.name for r in result.rungs] == ["phantom-r0", "phantom-r1", "phantom-r2"]
    assert result.pool_size == 5 and all(0 <= r.recall <= 1 for r in result.rungs)
    assert all(r.lift == pytest.approx(r.recall * 5) for r in result.rungs)

    # each rung loads through the ordinary spec path, by its registered name
    weights = []
    for rung in result.rungs:
        entry = resolve_model(rung.name, cache=cache, db=db)
        loaded = load_model(entry.spec)
        assert loaded.preprocess_cfg["mean"] == [0.5, 0.5, 0.5] and loaded.context_length == 32
        weights.append(loaded.model.visual.proj.detach().clone())
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])
    con = store.connect_read(db)
    rows = con.execute(
        "SELECT model, specialization, description FROM models ORDER BY 2").fetchall()
    con.close()
    assert [(m, s) for m, s, _ in rows] == [("phantom-r0", 0), ("phantom-r1", 1), ("phantom-r2", 2)]
    assert "2 epochs on cohort tiny" in rows[2][2]

    stamp = (result.rungs[-1].folder / "open_clip_model.safetensors").stat().st_mtime_ns
    again = train_ladder(db, cache, "tiny", config=config)
    assert again.reused
    assert [r.lift for r in again.rungs] == [r.lift for r in result.rungs]
    assert (result.rungs[-1].folder / "open_clip_model.safetensors").stat().st_mtime_ns == stamp
    ladder_runs = store.read_df(db, "SELECT status, n_rows, torch_version, threads FROM runs "
                                    "WHERE stage = 'ladder' AND cohort = 'tiny'")
    assert ladder_runs.values.tolist()[0][:2] == ["done", 3] and len(ladder_runs) == 1
    assert ladder_runs["torch_version"].iloc[0] and ladder_runs["threads"].iloc[0] >= 1

    # deterministic: the same seed gives the same weights in a fresh cache
    other = train_ladder(db, tmp_path / "cache2", "tiny", config=config)
    a = load_model(f"local-dir:{result.rungs[-1].folder}").model.state_dict()
    b = load_model(f"local-dir:{other.rungs[-1].folder}").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert np.isfinite(result.rungs[-1].loss)


def test_ladder_cli_prints_lift_per_rung(tmp_path, capsys):
    db, cache = tmp_path / "r.duckdb", tmp_path / "cache"
    tiny.make_cohort(db, tmp_path / "cohort", n=15)
    config = tmp_path / "ladder.toml"
    config.write_text("[ladder]\n" + "".join(
        f"{k} = {list(v) if isinstance(v, tuple) else v}\n" for k, v in TINY_LADDER.items()))
    argv = ["--db", str(db), "--cache", str(cache), "models", "train-ladder", "--cohort", "tiny",
            "--config", str(config), "--epochs", "0,1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "phantom-r1" in out and "phantom-r2" not in out and "lift" in out
    assert main(["--db", str(db), "--cache", str(cache), "models", "list"]) == 0
    listing = capsys.readouterr().out
    assert "1 epoch on cohort tiny" in listing and "ready" in listing
    config.write_text("[ladder]\nepochz = [0, 1]\n")
    assert main(argv) == 2
    assert "epochz" in capsys.readouterr().err


def test_ladder_calibration_uses_the_exact_pool_maths():
    """The gauge is the audit's formula (enumerated against every pool in tests/test_core.py)."""
    import math

    import numpy as np

    from engine.core.pools import recall_at_k
    from synthetic.ladder.calibration import count_higher, relink_lift

    rng = np.random.default_rng(1)
    a = rng.normal(size=(30, 8)).astype(np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b = rng.normal(size=(30, 8)).astype(np.float32)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    greater, tied = count_higher(a, b)
    scores = a @ b.T
    assert list(greater) == [int((scores[i] > scores[i, i]).sum()) for i in range(30)]
    want = recall_at_k(np.full(30, 29), greater, tied, 10, 1).mean()
    assert relink_lift(a, b, 10) == pytest.approx((want, want * 10, 10))
    # random embeddings sit near chance; identical ones are perfect
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = rng.normal(size=(400, 32)).astype(np.float32)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    recall, lift, size = relink_lift(x, y, 100)
    assert size == 100 and 0.5 < lift < 1.6 and not math.isnan(recall)
    assert relink_lift(x, x, 100)[1] == pytest.approx(100.0)
    # a duplicated pair ties: its twin is in the pool with probability 99/399, then wins half
    y2 = x.copy()
    y2[1] = y2[0]
    x2 = x.copy()
    x2[1] = x2[0]
    want = 100.0 * (398 + 2 * (1 - 0.5 * 99 / 399)) / 400
    assert relink_lift(x2, y2, 100)[1] == pytest.approx(want)


def test_ladder_calibration_counts_by_tiles_equal_the_whole_matrix():
    """The tiled count (bounded memory at the study's scale) equals a naive whole-matrix count,
    ties included (duplicated reports give exact ties)."""
    import numpy as np

    from synthetic.ladder.calibration import count_higher

    rng = np.random.default_rng(3)
    a = rng.normal(size=(37, 6)).astype(np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b = rng.normal(size=(37, 6)).astype(np.float32)
    b[5:9] = b[4]  # four duplicated reports: exact ties
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    scores = a.astype(np.float64) @ b.T.astype(np.float64)
    naive_g = [int((scores[i] > scores[i, i]).sum()) for i in range(37)]
    naive_e = [int((scores[i] == scores[i, i]).sum()) - 1 for i in range(37)]
    for block in (1, 5, 37, 100):
        g, e = count_higher(a, b, block=block)
        assert list(g) == naive_g and list(e) == naive_e
    assert max(naive_e) >= 3  # the fixture does exercise ties


def test_pixel_file_reads_the_rows_asked_for_in_their_order(tmp_path):
    """The ladder reads its preprocessed images a batch at a time; rows equal the whole array's."""
    import numpy as np

    from synthetic.ladder.ladder import PixelFile

    rng = np.random.default_rng(0)
    whole = rng.standard_normal((37, 3, 8, 8)).astype(np.float16)
    np.save(tmp_path / "px.npy", whole)
    pixels = PixelFile(tmp_path / "px.npy")
    assert len(pixels) == 37
    order = torch.tensor([36, 0, 5, 5, 17])
    assert np.array_equal(pixels[order].numpy(), whole[order.numpy()])
    assert pixels[order].dtype == torch.float16
    assert np.array_equal(pixels[30:100].numpy(), whole[30:])
    assert np.array_equal(pixels[0:0].numpy(), whole[0:0])
    with pytest.raises(IndexError):
        pixels[[37]]
    # A file cut short is named, not read as zeros.
    raw = (tmp_path / "px.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[:-100])
    with pytest.raises(Exception, match="truncated"):
        PixelFile(tmp_path / "cut.npy")[30:37]
