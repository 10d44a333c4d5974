"""Naming models (`models add`), listing them with unregistered ones, and which models form the
specialisation ladder of the paper's claims. No torch: these run on specs and tables only."""

from __future__ import annotations

import pandas as pd

from engine import store
from engine.cli import main
from engine.core.claims import (
    NOT_MEASURABLE,
    REPRODUCES,
    ordered_ladder,
    strongest_model,
    summarize_claims,
)
from engine.models.registry import ModelEntry, register_models


def test_models_add_then_list_with_an_unregistered_model(tmp_path, capsys):
    db, cache = tmp_path / "r.duckdb", tmp_path / "cache"
    g = ["--db", str(db), "--cache", str(cache)]
    ckpt = tmp_path / "ft.pt"
    ckpt.write_bytes(b"x")
    assert main([*g, "models", "add", "cxr-ft", f"ViT-B-32-quickgelu@{ckpt}",
                 "--description", "our fine-tune", "--specialization", "2"]) == 0
    assert "use --model cxr-ft" in capsys.readouterr().out
    row = store.read_df(db, "SELECT * FROM models WHERE model = 'cxr-ft'").iloc[0]
    assert row["spec"] == f"ViT-B-32-quickgelu@{ckpt}" and row["specialization"] == 2
    # a model used by its raw spec is stored with a NULL specialization (pandas NA)
    register_models(db, [ModelEntry("ViT-S-32:random", "ViT-S-32:random")])
    assert main([*g, "models", "list"]) == 0
    out = capsys.readouterr().out
    assert "cxr-ft" in out and "our fine-tune" in out and "ViT-S-32:random" in out
    assert "ready" in out  # the checkpoint file is there


def test_models_add_refuses_bad_names_and_specs(tmp_path, capsys):
    g = ["--db", str(tmp_path / "r.duckdb"), "--cache", str(tmp_path / "cache")]
    assert main([*g, "models", "add", "phantom-r0", "ViT-S-32:random"]) == 2
    assert "taken by the package registry" in capsys.readouterr().err
    assert main([*g, "models", "add", "x", "ViT-B-32@"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "expected ARCH@CHECKPOINT_FILE" in err


def _row(model, n, recall, low, high):
    return dict(model=model, split="test", direction="image_to_report", negatives="random",
                heads="original", pool_size=n, k=1, recall=recall, chance=1 / n, lift=recall * n,
                ci_low=low, ci_high=high, n_queries=500, n_excluded=0)


def test_only_models_with_an_order_form_the_ladder():
    # three unrelated models, falling lift: no ladder, so claim 1 is not measured at all
    metrics = pd.DataFrame([_row("zeta", 100, 0.10, 0.08, 0.12), _row("beta", 100, 0.05, 0.04,
                            0.06), _row("alpha", 100, 0.02, 0.01, 0.03)])
    ladder = ["zeta", "beta", "alpha"]
    unordered = {"zeta": None, "beta": pd.NA, "alpha": float("nan")}
    first = summarize_claims(metrics, None, ladder=ladder, orders=unordered)[0]
    assert first.verdict == NOT_MEASURABLE
    assert "specialisation order" in first.why
    # two of them ordered (0 then 1), the third not: a two-rung ladder, rising
    orders = {"zeta": 1, "beta": None, "alpha": 0}
    assert ordered_ladder(ladder, orders) == ["alpha", "zeta"]
    assert strongest_model(ladder, orders) == "zeta"
    assert strongest_model(ladder, unordered) == "alpha"  # the last listed
    first = summarize_claims(metrics, None, ladder=ladder, orders=orders)[0]
    assert first.verdict == REPRODUCES
    assert ordered_ladder(ladder, None) == ladder  # without orders: as before
