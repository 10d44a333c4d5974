"""Each model family end to end through the CLI on a small phantom cohort: embed -> attack ->
dp (with the family's loss) -> report. Models are tiny and random, built offline from configs."""

from __future__ import annotations

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest

import _tiny_clip as tiny
from engine import store
from engine.cli import main
from engine.config import SynthConfig
from synthetic.cohort import generate_cohort


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    base = tmp_path_factory.mktemp("families")
    db, cache = base / "r.duckdb", base / "cache"
    generate_cohort(SynthConfig(site="A", patients=24, seed=1), base / "siteA", workers=1)
    g = ["--db", str(db), "--cache", str(cache)]
    assert main([*g, "cohort", "add", "--name", "A", "--format", "mimic-cxr-jpg",
                 "--root", str(base / "siteA")]) == 0
    return base, db, cache, g


def _hf(base, kind):
    folder = base / f"hf-{kind}"
    tiny.write_hf_model(folder, kind, seed=5)
    return f"hf:{folder}"


def _openai(base):
    path = base / "chexzero-like.pt"
    tiny.write_openai_state_dict(path, seed=6)
    return f"openai:{path}"


FAMILIES = {
    "hf-clip": (lambda b: _hf(b, "clip"), "infonce"),
    "hf-siglip": (lambda b: _hf(b, "siglip"), "sigmoid"),
    "openai-layout": (_openai, "infonce"),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_runs_every_stage(phantom, family, capsys):
    base, db, cache, g = phantom
    build, loss = FAMILIES[family]
    spec = build(base)
    if family == "openai-layout":
        model = spec  # unregistered: the raw spec is its name
    else:
        model = f"tiny-{family}"
        assert main([*g, "models", "add", model, spec, "--description", f"tiny {family}"]) == 0
    m = ["--model", model, "--cohort", "A"]
    assert main([*g, "embed", *m]) == 0
    assert main([*g, "attack", *m, "--pool-sizes", "2,5"]) == 0
    assert main([*g, "dp", *m, "--epsilons", "8"]) == 0
    assert main([*g, "report", *m, "--format", "json"]) == 0
    name = store.read_df(db, "SELECT model FROM runs WHERE stage = 'embed' ORDER BY started_at "
                             "DESC LIMIT 1")["model"][0]
    assert name == model
    manifest = next((cache / "features").rglob("manifest.json"))
    assert manifest.exists()
    heads = store.read_df(db, "SELECT DISTINCT heads FROM dp_runs WHERE model = ?", [model])
    assert set(heads["heads"]) >= {"8", "inf"}
    config = json.loads(store.read_df(
        db, "SELECT config_json FROM runs WHERE stage = 'dp' AND model = ?", [model])
        ["config_json"][0])
    # SigLIP heads are retrained with the sigmoid loss and the model's bias; CLIP with InfoNCE
    assert config.get("loss", {}).get("loss", "infonce") == loss
    if loss == "sigmoid":
        assert config["loss"]["logit_bias"] == pytest.approx(-1.5)
    assert list((cache / "reports").rglob("*.json"))  # under --cache without --out
    capsys.readouterr()
    assert main([*g, "models", "list"]) == 0  # unregistered models (NULL order) list fine
    listed = capsys.readouterr().out
    if family != "openai-layout":
        assert f"tiny {family}" in listed
