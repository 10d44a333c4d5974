"""The embed stage: stored arrays match the model, reruns are no-ops, interrupted runs resume."""

from __future__ import annotations

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest

import _tiny_clip as tiny
from engine import store
from engine.cli import main
from engine.embed import NotEmbeddedError, load_embeddings
from engine.embed.stage import EmbedOptions, embed_cohort

BAD = (4,)


@pytest.fixture
def setup(tmp_path):
    db, cache = tmp_path / "r.duckdb", tmp_path / "cache"
    items = tiny.make_cohort(db, tmp_path / "cohort", n=11, bad=BAD)
    folder = tmp_path / "model"
    tiny.write_local_dir(folder, tiny.native_cfg(), seed=1)
    return db, cache, f"local-dir:{folder}", items


def _runs(db):
    con = store.connect_read(db)
    try:
        return con.execute("SELECT * FROM runs WHERE stage = 'embed' ORDER BY started_at").df()
    finally:
        con.close()


def test_embed_stores_features_heads_and_matching_embeddings(setup):
    import torch
    from PIL import Image

    from engine.models.loading import load_model

    db, cache, spec, items = setup
    result = embed_cohort(db, cache, spec, "tiny", options=EmbedOptions(chunk_size=4))
    assert not result.reused and result.chunks_total == 3 and result.chunks_computed == 3
    assert [s["image_id"] for s in result.skipped] == ["img004"]
    assert "img4.jpg" in result.skipped[0]["file"] and result.skipped[0]["error"]

    emb = load_embeddings(cache, spec, "tiny")
    selected = items[items["selected"]].sort_values("image_id")
    expected_ids = [i for i in selected["image_id"] if i != "img004"]
    assert emb.ids.tolist() == expected_ids
    n = len(expected_ids)
    assert emb.image_features.shape == (n, 32) and emb.text_features.shape == (n, 32)
    assert emb.image_embeddings.shape == (n, 16) and emb.text_embeddings.shape == (n, 16)
    for array in (emb.image_features, emb.text_features, emb.image_embeddings, emb.text_embeddings):
        assert array.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb.image_embeddings, axis=1), 1, atol=1e-5)

    # the stored embeddings are what the unsplit model gives, through its own preprocess/tokenizer
    loaded = load_model(spec)
    rows = selected.set_index("image_id").loc[expected_ids]
    root = tiny.Path(store.connect_read(db).execute(
        "SELECT root FROM cohorts WHERE cohort='tiny'").fetchall()[0][0])
    with torch.no_grad():
        pixels = torch.stack([loaded.preprocess(Image.open(root / p).convert("RGB"))
                              for p in rows["image_path"]])
        want_img = loaded.model.encode_image(pixels, normalize=True).numpy()
        want_txt = loaded.model.encode_text(loaded.tokenizer(rows["report_text"].tolist()),
                                            normalize=True).numpy()
    assert np.abs(emb.image_embeddings - want_img).max() < 1e-5
    assert np.abs(emb.text_embeddings - want_txt).max() < 1e-5

    # the stored heads reproduce the stored embeddings from the stored features
    heads = emb.heads
    with torch.no_grad():
        projected = heads.image(torch.from_numpy(emb.image_features))
        again = torch.nn.functional.normalize(projected, dim=-1)
    assert np.abs(again.numpy() - emb.image_embeddings).max() < 1e-6
    assert heads.logit_scale == pytest.approx(float(loaded.model.logit_scale))
    assert isinstance(heads.image, torch.nn.Linear) and isinstance(heads.text, torch.nn.Linear)

    runs = _runs(db)
    assert len(runs) == 1 and runs.loc[0, "status"] == "done"
    assert runs.loc[0, "n_rows"] == n and runs.loc[0, "n_skipped"] == 1
    assert "img4.jpg" in runs.loc[0, "message"]
    assert json.loads(runs.loc[0, "config_json"])["cohort"] == "tiny"
    con = store.connect_read(db)
    assert con.execute("SELECT count(*) FROM models WHERE model = ?", [spec]).fetchall()[0][0] == 1
    con.close()


def test_rerun_with_same_config_computes_nothing(setup):
    db, cache, spec, _ = setup
    first = embed_cohort(db, cache, spec, "tiny", options=EmbedOptions(chunk_size=4))
    stamp = (first.folder / "manifest.json").stat().st_mtime_ns
    calls = []
    second = embed_cohort(db, cache, spec, "tiny", options=EmbedOptions(chunk_size=4),
                          on_chunk=calls.append)
    assert second.reused and second.chunks_computed == 0 and calls == []
    assert second.folder == first.folder
    assert (first.folder / "manifest.json").stat().st_mtime_ns == stamp
    assert len(_runs(db)) == 1


def test_interrupted_run_recomputes_only_missing_chunks(setup, tmp_path):
    db, cache, spec, _ = setup
    options = EmbedOptions(chunk_size=3)  # 11 items -> 4 chunks

    def stop_after_two(index):
        if index == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_cohort(db, cache, spec, "tiny", options=options, on_chunk=stop_after_two)
    assert _runs(db).loc[0, "status"] == "interrupted"
    with pytest.raises(NotEmbeddedError):
        load_embeddings(cache, spec, "tiny")  # nothing half-written is visible

    computed = []
    resumed = embed_cohort(db, cache, spec, "tiny", options=options, on_chunk=computed.append)
    assert computed == [2, 3]
    assert resumed.chunks_reused == 2 and resumed.chunks_computed == 2
    assert not (resumed.folder / "chunks").exists()
    assert _runs(db).loc[0, "status"] == "done"

    # identical to an uninterrupted run
    db2 = tmp_path / "fresh.duckdb"
    tiny.make_cohort(db2, tmp_path / "cohort", n=11, bad=BAD)
    embed_cohort(db2, tmp_path / "cache2", spec, "tiny", options=options)
    a = load_embeddings(cache, spec, "tiny")
    b = load_embeddings(tmp_path / "cache2", spec, "tiny")
    assert a.ids.tolist() == b.ids.tolist()
    assert np.array_equal(a.image_features, b.image_features)
    assert np.array_equal(a.text_embeddings, b.text_embeddings)


def test_embed_cli(setup, capsys):
    db, cache, spec, _ = setup
    argv = ["--db", str(db), "--cache", str(cache), "embed", "--model", spec, "--cohort", "tiny"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "embedded 10 items" in out and str(cache) in out and "img4.jpg" in out
    assert main(argv) == 0
    assert "already embedded" in capsys.readouterr().out
    assert main(["--db", str(db), "--cache", str(cache), "embed", "--model", spec,
                 "--cohort", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "nope" in err


def test_models_list_cli(setup, capsys):
    db, cache, spec, _ = setup
    assert main(["--db", str(db), "--cache", str(cache), "models", "list"]) == 0
    out = capsys.readouterr().out
    assert "phantom-r0" in out and "not built" in out
