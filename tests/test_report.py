"""The audit report (engine/report): HTML, PDF and JSON on the seeded database."""

from __future__ import annotations

import base64
import copy
import html
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest

import report_fixtures as rf
from engine.errors import ConfigError, EngineError
from engine.report import SCHEMA_VERSION, report_stem, write_report
from engine.report.content import build_document, clean, headline_pool_size, synthetic_flag
from engine.report.schema import ReportSchemaError, load_schema, validate_document

FORBIDDEN = ("torch", "open_clip", "opacus", "faiss", "umap")


@pytest.fixture(scope="module")
def written(seeded, tmp_path_factory):
    """All three formats for the seeded specialist."""
    out = tmp_path_factory.mktemp("report")
    paths = write_report(seeded.db, model=seeded.specialist, cohort=seeded.cohort, out=out)
    return paths, json.loads(paths["json"].read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def dp_stage_db(seeded, tmp_path_factory):
    """The seeded database with DP results in the real dp stage's layout."""
    db = rf.copy_db(seeded.db, tmp_path_factory.mktemp("dpstage"))
    rf.as_dp_stage(db, model=seeded.specialist, cohort=seeded.cohort)
    return db


def _metric(db, **where) -> float:
    sql = "SELECT recall FROM relink_metrics WHERE " + " AND ".join(f"{k} = ?" for k in where)
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, list(where.values())).fetchall()[0][0]
    finally:
        con.close()


def _pdf_pages(data: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", data))


# ------------------------------------------------------------------------------ all formats


def test_writes_all_three_formats(seeded, written):
    paths, doc = written
    assert set(paths) == {"html", "pdf", "json"}
    stem = report_stem(seeded.specialist, seeded.cohort)
    assert all(p.name == f"{stem}.{fmt}" for fmt, p in paths.items())
    assert not list(paths["json"].parent.glob(".*.tmp"))
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["model"]["name"] == seeded.specialist and doc["cohort"]["name"] == seeded.cohort


def test_json_validates_and_has_no_nan(written):
    paths, doc = written
    validate_document(doc)

    def refuse(constant):
        raise AssertionError(f"non-JSON constant {constant} in the document")

    json.loads(paths["json"].read_text(encoding="utf-8"), parse_constant=refuse)
    # The seeded matched pools at N=10 have no queries: their recall is NaN in DuckDB, null here.
    empty = [r for r in doc["lift_vs_n"]["rows"] if r["n_queries"] == 0]
    assert empty and all(r["recall"] is None and r["lift"] is None for r in empty)


@pytest.mark.parametrize("breakage", [
    lambda d: d.pop("caveats"),
    lambda d: d["headline"].__setitem__("recall", "33%"),
    lambda d: d["headline"].__setitem__("recall", 1.7),
    lambda d: d.__setitem__("schema_version", "2.0"),
    lambda d: d["lift_vs_n"]["rows"][0].__setitem__("direction", "sideways"),
    lambda d: d.__setitem__("surprise", True),
])
def test_a_broken_document_fails_validation(written, breakage):
    doc = copy.deepcopy(written[1])
    breakage(doc)
    with pytest.raises(ReportSchemaError, match="report.schema.json"):
        validate_document(doc)


def test_schema_is_versioned():
    schema = load_schema()
    assert re.fullmatch(schema["properties"]["schema_version"]["pattern"], SCHEMA_VERSION)
    assert "schema_version" in schema["required"]


def test_headline_matches_the_stored_metric(seeded, written):
    doc = written[1]
    h = doc["headline"]
    sizes = [r["pool_size"] for r in doc["lift_vs_n"]["rows"]
             if r["direction"] == "image_to_report" and r["negatives"] == "random"]
    assert h["pool_size"] == headline_pool_size(sizes) == max(sizes)  # no N=100 in a tiny cohort
    expected = _metric(seeded.db, model=seeded.specialist, cohort=seeded.cohort, heads="original",
                       split="test", direction="image_to_report", negatives="random", k=1,
                       pool_size=h["pool_size"])
    assert h["recall"] == pytest.approx(expected)
    assert h["lift"] == pytest.approx(expected * h["pool_size"])
    assert f"{round(100 * expected)}%" in h["sentence"]
    assert h["sentence"].startswith(f"An attacker holding {seeded.specialist} and ")
    assert headline_pool_size([10, 100, 1000]) == 100


# ------------------------------------------------------------------------------ HTML


def test_html_is_self_contained(written):
    text = written[0]["html"].read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", text, flags=re.I)
    assert refs and all(r.startswith("data:") for r in refs), refs
    assert "http" not in text.lower()
    assert "<script" not in text.lower() and "<link" not in text.lower()
    assert "@import" not in text and "url(" not in text


def test_html_has_the_headline_and_the_figures(written):
    paths, doc = written
    text = paths["html"].read_text(encoding="utf-8")
    assert html.escape(doc["headline"]["sentence"]) in text
    images = re.findall(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 3  # lift vs N, members vs held-out, privacy / utility
    for data in images:
        svg = base64.b64decode(data).decode("utf-8")
        assert "<svg" in svg and "<path" in svg
    for key in ("lift", "members", "privacy"):
        assert f'id="figure-{key}"' in text
    for caveat in doc["caveats"]:
        assert html.escape(caveat["title"]) in text


def test_html_escapes_text_from_the_database(seeded, tmp_path):
    db = rf.copy_db(seeded.db, tmp_path)
    con = duckdb.connect(str(db))
    con.execute("UPDATE items SET report_text = '<script>alert(1)</script> ' || report_text "
                "WHERE cohort = ?", [seeded.cohort])
    con.execute("UPDATE models SET description = '<img src=x onerror=alert(2)>' WHERE model = ?",
                [seeded.specialist])
    con.close()
    paths = write_report(db, model=seeded.specialist, cohort=seeded.cohort,
                         formats=("html", "json"), out=tmp_path / "out")
    doc = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert doc["examples"]["included"] and doc["examples"]["rows"]
    assert doc["examples"]["rows"][0]["true_report"].startswith("<script>")
    text = paths["html"].read_text(encoding="utf-8")
    assert "<script" not in text.lower() and "<img src=x" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=alert(2)&gt;" in text


def test_examples_are_not_quoted_for_a_real_cohort(seeded, tmp_path):
    db = rf.copy_db(seeded.db, tmp_path)
    rf.rename_cohort(db, seeded.cohort, "hospital-a")
    paths = write_report(db, model=seeded.specialist, cohort="hospital-a",
                         formats=("html", "json"), out=tmp_path / "out")
    doc = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert doc["cohort"]["synthetic"] is False  # readable root, no phantom README, neutral name
    assert not doc["examples"]["included"] and not doc["examples"]["rows"]
    assert "Synthetic cohort" not in [c["title"] for c in doc["caveats"]]
    text = paths["html"].read_text(encoding="utf-8")
    assert "IMPRESSION" not in text and "FINDINGS" not in text


# ------------------------------------------------------------------------------ PDF


def test_pdf_has_several_pages(written):
    data = written[0]["pdf"].read_bytes()
    assert data.startswith(b"%PDF")
    assert _pdf_pages(data) >= 2


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="pdftotext (poppler) not installed")
def test_pdf_carries_the_same_text(written):
    paths, doc = written
    text = subprocess.run(["pdftotext", "-layout", str(paths["pdf"]), "-"], check=True,
                          capture_output=True, text=True).stdout
    flat = " ".join(text.split())
    assert " ".join(doc["headline"]["sentence"].split()[:8]) in flat
    for heading in ("Summary", "Differential privacy", "Caveats", "Provenance"):
        assert heading in flat
    for figure in ("Figure 1.", "Figure 2.", "Figure 3."):
        assert figure in flat


# ------------------------------------------------------------------------------ missing parts


def test_without_dp_results_the_report_says_so(seeded, tmp_path):
    db = rf.copy_db(seeded.db, tmp_path)
    rf.drop_dp(db, model=seeded.specialist, cohort=seeded.cohort)
    paths = write_report(db, model=seeded.specialist, cohort=seeded.cohort, out=tmp_path / "out")
    doc = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert doc["privacy"]["available"] is False and doc["privacy"]["rows"] == []
    assert doc["method"]["dp"] is None
    assert any(m.startswith("Differential privacy results") for m in doc["missing"])
    assert [r["heads"] for r in doc["members"]["rows"]] == ["original"]
    titles = [c["title"] for c in doc["caveats"]]
    assert "No mitigation evaluated" in titles and "What the DP guarantee covers" not in titles
    text = paths["html"].read_text(encoding="utf-8")
    assert "No differential privacy results" in text
    assert 'id="figure-privacy"' not in text
    assert _pdf_pages(paths["pdf"].read_bytes()) >= 2


def test_without_attack_results_the_report_says_so(seeded, tmp_path):
    db = rf.copy_db(seeded.db, tmp_path)
    con = duckdb.connect(str(db))
    for table in ("relink_metrics", "relink_summary", "relink_topk", "relink_ranks"):
        con.execute(f"DELETE FROM {table}")
    con.close()
    paths = write_report(db, model=seeded.specialist, cohort=seeded.cohort,
                         formats=("html", "json"), out=tmp_path / "out")
    doc = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert doc["headline"]["available"] is False
    assert "could not be measured" in doc["headline"]["sentence"]
    assert not doc["lift_vs_n"]["available"] and not doc["linkage"]["available"]
    text = paths["html"].read_text(encoding="utf-8")
    assert 'id="figure-lift"' not in text and 'id="figure-members"' not in text
    assert "No attack results" in text


def test_unknown_model_or_cohort_is_named(seeded, tmp_path):
    with pytest.raises(EngineError, match="'no-such-model'.*known: .*ladder-2-specialist"):
        write_report(seeded.db, model="no-such-model", cohort=seeded.cohort, out=tmp_path)
    with pytest.raises(EngineError, match=f"'no-such-cohort'.*known: {seeded.cohort}"):
        write_report(seeded.db, model=seeded.specialist, cohort="no-such-cohort", out=tmp_path)
    with pytest.raises(ConfigError, match="--format docx"):
        write_report(seeded.db, model=seeded.specialist, cohort=seeded.cohort,
                     formats=("html", "docx"), out=tmp_path)
    assert not list(tmp_path.iterdir())


def test_formats_as_a_comma_separated_string(seeded, tmp_path):
    paths = write_report(seeded.db, model=seeded.specialist, cohort=seeded.cohort,
                         formats="json, html", out=tmp_path)
    assert set(paths) == {"json", "html"} and all(p.exists() for p in paths.values())


def test_model_can_be_given_by_its_spec(seeded):
    doc = build_document(seeded.db, model=f"local-dir:cache/models/{seeded.specialist}",
                         cohort=seeded.cohort)
    assert doc["model"]["name"] == seeded.specialist
    assert doc["model"]["requested_as"].startswith("local-dir:")


# ------------------------------------------------------------------------------ DP and transfer


def test_dp_grid_against_the_stored_rows(seeded, dp_stage_db):
    doc = build_document(dp_stage_db, model=seeded.specialist, cohort=seeded.cohort)
    validate_document(doc)
    p = doc["privacy"]
    heads = [r["heads"] for r in p["rows"]]
    # the random-start sweep first; the sweep from the original heads after it; no attacker
    assert heads[:3] == ["original", "inf", "1"]
    assert sorted(heads[3:]) == ["1+original", "inf+original"]
    n = p["pool_size"]
    assert n == seeded.n_test
    naive = {h: _metric(dp_stage_db, model=seeded.specialist, cohort=seeded.cohort, heads=h,
                        split="test", direction="image_to_report", negatives="random", k=1,
                        pool_size=n) for h in ("original", "inf", "1")}
    one = next(r for r in p["rows"] if r["heads"] == "1")
    assert one["recall"] == pytest.approx(naive["1"])
    assert one["reduction_vs_original"] == pytest.approx(1 - naive["1"] / naive["original"])
    assert one["reduction_vs_inf"] == pytest.approx(1 - naive["1"] / naive["inf"])
    assert one["epsilon"] == 1.0 and one["patient_epsilon"] == 2.0
    assert one["patient_delta"] == pytest.approx((1 + math.e) * one["delta"])
    inf = next(r for r in p["rows"] if r["heads"] == "inf")
    assert inf["epsilon"] is None and inf["max_grad_norm"] is None  # infinite -> null
    assert p["backbone_macro_auroc"] is not None
    assert doc["method"]["dp"]["config"]["training"]["privacy_unit"] == "group"
    assert [m["heads"] for m in doc["members"]["membership"]] == ["original", "inf", "1"]
    assert not any("Backbone" in m for m in doc["missing"])


def test_transfer_rule(seeded, dp_stage_db, tmp_path):
    db = rf.copy_db(dp_stage_db, tmp_path / "a")
    rf.add_transfer_cohort(db, model=seeded.specialist, source=seeded.cohort, name="site-b")
    doc = build_document(db, model=seeded.specialist, cohort=seeded.cohort)
    t = doc["transfer"]
    assert t["available"]
    assert {r["cohort"] for r in t["rows"]} == {"site-b"}
    heads = [r["heads"] for r in t["rows"]]
    assert heads[:3] == ["original", "inf", "1"] and not [h for h in heads if "adaptive" in h]
    # The external cohort's own report shows no transfer (its heads came from elsewhere).
    assert not build_document(db, model=seeded.specialist, cohort="site-b")["transfer"]["available"]
    # A cohort with DP runs of its own trained its own heads: not a transfer.
    db2 = rf.copy_db(dp_stage_db, tmp_path / "b")
    rf.add_transfer_cohort(db2, model=seeded.specialist, source=seeded.cohort, name="site-b",
                           own_dp=True)
    assert not build_document(db2, model=seeded.specialist,
                              cohort=seeded.cohort)["transfer"]["available"]


# ------------------------------------------------------------------------------ rules


def test_synthetic_flag(tmp_path):
    phantom = tmp_path / "phantom"
    phantom.mkdir()
    (phantom / "README.txt").write_text("SYNTHETIC (PHANTOM) DATA - NOT REAL PATIENTS\n...")
    flag, why = synthetic_flag({"cohort": "site-a", "site": "A", "root": str(phantom)})
    assert flag is True and "README.txt" in why
    real = tmp_path / "real"
    real.mkdir()
    (real / "README.txt").write_text("MIMIC-CXR-JPG v2.0.0\n")
    assert synthetic_flag({"cohort": "mimic", "site": "A", "root": str(real)})[0] is False
    assert synthetic_flag({"cohort": "mimic", "site": None, "root": str(tmp_path)})[0] is False
    assert synthetic_flag({"cohort": "my-phantom", "site": "A", "root": str(real)})[0] is True
    flag, why = synthetic_flag({"cohort": "mimic", "site": "A", "root": str(tmp_path / "gone")})
    assert flag is None and "could not be checked" in why


def test_clean_makes_plain_json():
    out = clean({"a": float("nan"), "b": math.inf, "c": np.int64(3), "d": np.float32(0.5),
                 "e": [np.bool_(True), None], 1: "x"})
    assert out == {"a": None, "b": None, "c": 3, "d": 0.5, "e": [True, None], "1": "x"}
    json.dumps(out, allow_nan=False)


def test_report_modules_stay_light():
    code = ("import sys; from engine.report import write_report; import engine.report.html, "
            "engine.report.pdf, engine.report.figures; "
            f"print([m for m in {FORBIDDEN!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    assert out == "[]"


def test_dp_at_the_paper_pool_size_beside_the_paper_figure(seeded, dp_stage_db):
    """At N = 10,000 the report shows both changes with intervals, membership and AUROC."""
    import pandas as pd

    from engine.core import decompose
    from engine.report import outline
    from engine.report.html import render_html

    doc = build_document(dp_stage_db, model=seeded.specialist, cohort=seeded.cohort)
    # the seeded database stores no N = 10,000: no such table
    assert not any("paper's pool size" in b.caption
                   for b in outline.blocks_of(doc) if isinstance(b, outline.Table))
    # hand-made rows at N = 10,000: original 1.0%, inf 1.3%, eps 1 0.975% (0.90-1.05%)
    metrics = pd.DataFrame([
        {"heads": h, "split": "test", "direction": "image_to_report", "negatives": "random",
         "k": 1, "pool_size": 10_000, "recall": r, "ci_low": lo, "ci_high": hi, "chance": 1e-4}
        for h, r, lo, hi in (("original", 0.01, 0.009, 0.011), ("inf", 0.013, 0.012, 0.014),
                             ("1", 0.00975, 0.009, 0.0105))])
    membership = pd.DataFrame([{"heads": "1", "auroc": 0.505, "tpr_at_fpr": 0.011}])
    utility = pd.DataFrame([{"heads": h, "label": "macro", "auroc": a}
                            for h, a in (("original", 0.80), ("inf", 0.80), ("1", 0.79))])
    rows = decompose.decompose(metrics, membership=membership, utility=utility)
    doc["privacy"]["decomposition"] = clean(rows.to_dict("records"))
    tables = [b for b in outline.blocks_of(doc) if isinstance(b, outline.Table)
              and "paper's pool size, N = 10,000" in b.caption]
    assert len(tables) == 1
    t = tables[0]
    assert "61.8% lower at ε = 0.34" in t.caption and "79.63% -> 79.43%" in t.caption
    original, inf, eps = t.rows  # in heads order: original, inf, then epsilon descending
    assert eps[2] == "−2.5% (−10% to +5%)"  # vs original: 0.975 / 1.0, interval 0.90-1.05
    assert eps[3] == "−25.0% (−31% to −19%)"  # vs inf: 0.975 / 1.3, interval 0.90-1.05
    assert eps[4] == "50.50%" and eps[5] == "79.00%"
    assert original[2] == "reference" and inf[3] == "reference" and original[3] == "—"
    assert "At the paper&#x27;s pool size, N = 10,000" in render_html(doc)


# ------------------------------------------------------------------------------ decision (#25)


def test_the_report_opens_on_the_decision(written):
    paths, doc = written
    dec = doc["decision"]
    assert dec["available"] and len(dec["threat_model"]) == 3
    assert dec["threat_model"][0].startswith("The attacker holds the released model")
    assert dec["risk_level"] in ("near chance", "elevated", "high", "very high")
    assert "lower end" in dec["risk"] and dec["recommendation"]
    assert "not against an attacker who refits them" in dec["adaptive"]
    text = html.unescape(re.sub(r"<[^>]+>", " ", paths["html"].read_text(encoding="utf-8")))
    assert text.index("1. Decision") < text.index("2. Summary")
    assert "Threat model" in text and "Recommendation" in text and "Glossary" in text
    assert dec["recommendation"] in re.sub(r"\s+", " ", text)


def test_the_report_shows_released_heads_and_adaptive_attackers_side_by_side(written):
    paths, doc = written
    side = doc["decision"]["side_by_side"]
    kinds = {r["heads"]: r["kind"] for r in side}
    assert kinds["original"] == "released" and kinds["1"] == "released"
    assert kinds["inf+original"] == "released"  # every DP epsilon of every start
    assert {h for h, k in kinds.items() if k == "adaptive"} == {"adaptive+public-phantom-b",
                                                                "adaptive+known-5pct"}
    original = next(r for r in side if r["heads"] == "original")
    assert original["share_of_original"] == pytest.approx(1.0)
    public = next(r for r in side if r["heads"] == "adaptive+public-phantom-b")
    assert public["fit_pairs"] == 865 and public["ci_low"] <= public["recall"] <= public["ci_high"]
    text = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ",
                                                       paths["html"].read_text(encoding="utf-8"))))
    assert "The released heads and the attacker who adapts" in text
    assert "adaptive attacker (" in text and "865 pairs" in text


def test_the_report_keeps_attackers_out_of_the_dp_grid_and_starts_apart(written):
    paths, doc = written
    heads = [r["heads"] for r in doc["privacy"]["rows"]]
    assert not [h for h in heads if h.startswith("adaptive")]
    start = next(r for r in doc["privacy"]["rows"] if r["heads"] == "1+original")
    assert start["reference_inf"] == "inf+original"
    assert "ε does not cover the starting heads" in start["epsilon_scope"]
    plain = next(r for r in doc["privacy"]["rows"] if r["heads"] == "1")
    change = plain["change_vs_original"]
    assert change["text"].startswith("no measurable change" if not change["measurable"]
                                     else ("−", "+"))
    assert change["low"] <= change["point"] <= change["high"]
    # the key finding quotes the change with its interval, never a bare percentage
    text = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ",
                                                      paths["html"].read_text(encoding="utf-8"))))
    assert f"against the original heads {change['text']}" in text


def test_heads_names_never_overlap_and_stay_inside_the_figure():
    """The DP grid with both starts and the adaptive attackers: every heads name has its own row,
    no two overlap, and each lies inside the figure alone (HTML) and in a PDF page region."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    from engine.report import figures

    heads = ["original", "0.34", "0.34+original", "1", "2", "4", "8", "inf", "inf+original",
             "adaptive+known-5pct"]
    doc = {"privacy": {"pool_size": 1000, "backbone_macro_auroc": 0.8, "available": True,
                       "rows": [{"heads": h, "recall": 0.01 * (i + 1), "ci_low": 0.005 * (i + 1),
                                 "ci_high": 0.015 * (i + 1), "macro_auroc": 0.78 + 0.001 * i}
                                for i, h in enumerate(heads)]},
           "members": {"pool_size": 100, "rows": [
               {"heads": h, "held_out": {"recall": 0.05, "ci_low": 0.04, "ci_high": 0.06},
                "members": {"recall": 0.07, "ci_low": 0.06, "ci_high": 0.08}}
               for h in heads]}}
    for draw, base in ((figures.draw_privacy, 2.55), (figures.draw_members, 2.35)):
        height = figures.heads_height(len(heads), base)
        assert height > base  # ten rows need more than the default height
        with rc_context(figures.STYLE):
            alone = Figure(figsize=(figures.WIDTH_IN, height))
            page = Figure(figsize=(8.27, 11.69))
            region = page.add_subfigure(page.add_gridspec(3, 1, height_ratios=[4, height, 4])[1])
            for fig in (alone, region):
                draw(fig, doc)
                fig.get_figure(root=True).draw_without_rendering()
                frame = fig.bbox
                ax = fig.axes[0]
                names = [t for t in ax.get_yticklabels() if t.get_text()]
                assert len(names) == len(heads), draw.__name__
                boxes = sorted((t.get_window_extent() for t in names), key=lambda b: b.y0)
                assert all(b.y0 >= a.y1 - 0.5 for a, b in zip(boxes, boxes[1:])), draw.__name__
                for b in [*boxes, *(a.xaxis.label.get_window_extent() for a in fig.axes)]:
                    assert frame.x0 - 1 <= b.x0 and b.x1 <= frame.x1 + 1, draw.__name__
                    assert frame.y0 - 1 <= b.y0 and b.y1 <= frame.y1 + 1, draw.__name__
                assert all(a.get_xlabel() for a in fig.axes)
