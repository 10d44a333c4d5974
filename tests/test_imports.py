"""`import-embeddings`: vectors exported by a model's own code, both kinds, and bad imports."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import _tiny_clip as tiny
from engine import store
from engine.cli import main


@pytest.fixture
def cohort(tmp_path):
    db, cache = tmp_path / "r.duckdb", tmp_path / "cache"
    items = tiny.make_cohort(db, tmp_path / "cohort", n=24)
    ids = items["image_id"].astype(str).tolist()
    return db, cache, ids, ["--db", str(db), "--cache", str(cache)]


def _features(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 12)).astype(np.float32),
            rng.normal(size=(n, 10)).astype(np.float32))


def _heads(path, *, seed: int = 0, mlp: bool = False):
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    image = (torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.GELU(), torch.nn.Linear(16, 8))
             if mlp else torch.nn.Linear(12, 8, bias=False))
    text = torch.nn.Linear(10, 8)
    state = {**{f"image.{k}": v for k, v in image.state_dict().items()},
             **{f"text.{k}": v for k, v in text.state_dict().items()}}
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return image, text


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_features_and_heads_import_runs_attack_and_dp(cohort, tmp_path, capsys):
    """Kind (a), as .npy + ids in a shuffled order, an MLP image head described in JSON."""
    db, cache, ids, g = cohort
    image, text = _features(len(ids))
    order = np.random.default_rng(1).permutation(len(ids))
    np.save(tmp_path / "img.npy", image[order])
    np.save(tmp_path / "txt.npy", text[order])
    (tmp_path / "ids.txt").write_text("\n".join(ids[i] for i in order) + "\n")
    image_head, text_head = _heads(tmp_path / "heads.safetensors", mlp=True)
    from engine.models.split import describe_head

    (tmp_path / "heads.json").write_text(json.dumps(
        {"image": describe_head(image_head), "text": describe_head(text_head),
         "logit_scale": 2.0}))
    argv = [*g, "import-embeddings", "--model", "biovil", "--cohort", "tiny",
            "--image", str(tmp_path / "img.npy"), "--text", str(tmp_path / "txt.npy"),
            "--ids", str(tmp_path / "ids.txt"), "--heads", str(tmp_path / "heads.safetensors"),
            "--heads-config", str(tmp_path / "heads.json")]
    assert main(argv) == 0
    assert "every stage can run" in capsys.readouterr().out
    from engine.audit import load_inputs

    inputs = load_inputs(db, cache, "biovil", "tiny")
    emb = inputs.embeddings
    assert emb.ids.tolist() == ids  # stored in the cohort's order
    with torch.no_grad():
        want = torch.nn.functional.normalize(image_head(torch.from_numpy(image)), dim=-1)
    np.testing.assert_allclose(emb.image_embeddings, want.numpy(), atol=1e-6)
    np.testing.assert_array_equal(emb.text_features, text)
    assert emb.heads.logit_scale == 2.0 and isinstance(emb.heads.image, torch.nn.Sequential)
    assert store.read_df(db, "SELECT spec FROM models WHERE model = 'biovil'")["spec"][0] \
        .startswith("imported:")
    assert main(argv) == 0 and "already imported" in capsys.readouterr().out
    m = ["--model", "biovil", "--cohort", "tiny"]
    assert main([*g, "attack", *m, "--pool-sizes", "2,5"]) == 0
    assert main([*g, "dp", *m, "--epsilons", "8"]) == 0
    heads = store.read_df(db, "SELECT DISTINCT heads FROM dp_runs WHERE model = 'biovil'")
    assert set(heads["heads"]) >= {"8", "inf"}
    # `embed` has nothing to run for an imported model: one line saying so
    capsys.readouterr()
    assert main([*g, "embed", *m]) == 2
    assert "its embeddings were imported" in _one_line(capsys)


def test_final_embeddings_import_attacks_and_dp_refuses(cohort, tmp_path, capsys):
    """Kind (b), as Parquet: attack, umap-free report path; dp refuses in one line."""
    db, cache, ids, g = cohort
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(len(ids), 2, 8))
    pd.DataFrame({"image_id": ids, "image": list(vectors[:, 0]), "text": list(vectors[:, 1])}) \
        .to_parquet(tmp_path / "emb.parquet")
    assert main([*g, "import-embeddings", "--model", "medimageinsight", "--cohort", "tiny",
                 "--table", str(tmp_path / "emb.parquet")]) == 0
    assert "dp cannot" in capsys.readouterr().out
    from engine.audit import load_inputs

    emb = load_inputs(db, cache, "medimageinsight", "tiny").embeddings
    want = vectors[:, 0] / np.linalg.norm(vectors[:, 0], axis=1, keepdims=True)
    np.testing.assert_allclose(emb.image_embeddings, want, atol=1e-6)
    m = ["--model", "medimageinsight", "--cohort", "tiny"]
    assert main([*g, "attack", *m, "--pool-sizes", "2,5"]) == 0
    capsys.readouterr()
    assert main([*g, "dp", *m, "--epsilons", "8"]) == 2
    line = _one_line(capsys)
    assert "final embeddings only" in line and "--heads" in line
    assert main([*g, "report", *m, "--format", "json"]) == 0
    assert list((cache / "reports").rglob("*.json"))  # under --cache, not ./cache


def _write_npy(tmp_path, ids, image, text):
    np.save(tmp_path / "i.npy", image)
    np.save(tmp_path / "t.npy", text)
    (tmp_path / "ids.json").write_text(json.dumps(ids))
    return ["--image", str(tmp_path / "i.npy"), "--text", str(tmp_path / "t.npy"),
            "--ids", str(tmp_path / "ids.json")]


class NotWeights:
    """A Python object in a heads file: weights-only unpickling must refuse it."""


def _pickled_object(path):
    torch.save({"image.weight": torch.zeros(8, 12), "hook": NotWeights()}, path)


BAD = {
    "wrong shape": (lambda p, ids, im, tx: _write_npy(p, ids, im[:, :, None], tx),
                    "i.npy: shape (24, 12, 1); expected [items, width]"),
    "rows and ids differ": (lambda p, ids, im, tx: _write_npy(p, ids[:-1], im, tx),
                            "i.npy: 24 rows but"),
    "missing id": (lambda p, ids, im, tx: _write_npy(p, ids[:-1], im[:-1], tx[:-1]),
                   "1 of the cohort's image ids are missing ('img023')"),
    "extra and duplicated": (lambda p, ids, im, tx: _write_npy(p, [*ids[:-1], ids[0]], im, tx),
                             "1 image ids appear more than once ('img000')"),
    "NaN row": (lambda p, ids, im, tx: _write_npy(
        p, ids, np.where(np.arange(len(ids))[:, None] == 5, np.nan, im), tx),
        "i.npy: row 6 (image_id 'img005') has NaN or infinite values"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_vectors_are_one_line(cohort, tmp_path, capsys, case):
    db, cache, ids, g = cohort
    make, needle = BAD[case]
    image, text = _features(len(ids))
    args = make(tmp_path, ids, image, text)
    assert main([*g, "import-embeddings", "--model", "x", "--cohort", "tiny", *args]) == 2
    line = _one_line(capsys)
    assert needle in line, line


def test_bad_heads_are_one_line(cohort, tmp_path, capsys):
    db, cache, ids, g = cohort
    image, text = _features(len(ids))
    args = [*g, "import-embeddings", "--model", "x", "--cohort", "tiny",
            *_write_npy(tmp_path, ids, image, text)]
    _pickled_object(tmp_path / "evil.pt")
    assert main([*args, "--heads", str(tmp_path / "evil.pt")]) == 2
    line = _one_line(capsys)
    assert "evil.pt: not a weights-only file" in line
    torch.save({"image.weight": torch.zeros(8, 7), "text.weight": torch.zeros(8, 10)},
               tmp_path / "narrow.pt")
    assert main([*args, "--heads", str(tmp_path / "narrow.pt")]) == 2
    assert "the image head takes 7 features but the image vectors have 12" in _one_line(capsys)
    pd.DataFrame({"image_id": ids, "image": [list(r) for r in image],
                  "text": [list(r) for r in text[:, :-1]] [:5] + [list(r) for r in text[5:]]}) \
        .to_parquet(tmp_path / "ragged.parquet")
    assert main([*g, "import-embeddings", "--model", "x", "--cohort", "tiny",
                 "--table", str(tmp_path / "ragged.parquet")]) == 2
    line = _one_line(capsys)
    assert "ragged.parquet: row 7 (image_id 'img005'), column text: 10 values, the first row " \
           "has 9" in line
