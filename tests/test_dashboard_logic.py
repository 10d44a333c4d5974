"""The dashboard's plain functions (logic.py) and its data module, without a Streamlit run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dashboard import data, logic
from engine.core import pools
from engine.core.labels import CHEXPERT_LABELS


def test_labels_are_the_engines():
    assert logic.LABELS == CHEXPERT_LABELS


@pytest.mark.parametrize("value, text", [(0.14, "14%"), (0.023, "2.3%"), (0.00041, "0.041%"),
                                         (1.0, "100%"), (0.0, "0%"), (float("nan"), "n/a")])
def test_percent(value, text):
    assert logic.percent(value) == text


def test_times_and_auroc():
    assert logic.times(14.2) == "14×" and logic.times(2.34) == "2.3×"
    assert logic.auroc(0.7963) == "79.63%"


def _metrics_row(**kw):
    row = dict(split="test", direction="image_to_report", negatives="random", pool_size=100, k=1,
               recall=0.14, chance=0.01, ci_low=0.12, ci_high=0.16, n_queries=500, n_excluded=0,
               heads="original", model="m", lift=14.0)
    row.update(kw)
    return row


def test_headline_lift_interval_is_recall_interval_over_chance():
    h = logic.headline(pd.DataFrame([_metrics_row()]), 100)
    assert h.lift == pytest.approx(14.0)
    assert (h.lift_low, h.lift_high) == pytest.approx((12.0, 16.0))
    assert logic.headline(pd.DataFrame([_metrics_row()]), 10) is None


def test_risk_sentence_reads_like_the_brief():
    h = logic.headline(pd.DataFrame([_metrics_row()]), 100)
    text = logic.risk_sentence("BiomedCLIP", h)
    assert text.startswith("An attacker holding BiomedCLIP and a pool of 100 reports finds an "
                           "image's own report 14% of the time, 14× chance (95% CI 12% to 16%, "
                           "12× to 16×)")
    assert "own image" in logic.risk_sentence("m", h, direction="report_to_image")


def test_default_pool_size():
    assert logic.default_pool_size([10, 100, 1000]) == 100
    assert logic.default_pool_size([10, 50]) == 50
    assert logic.default_pool_size([]) is None


def test_relative_reduction():
    assert logic.relative_reduction(0.382, 1.0) == pytest.approx(0.618)
    assert np.isnan(logic.relative_reduction(0.1, 0.0))


def test_lift_curves_drop_the_variable_size_matched_full_row():
    rows = [_metrics_row(pool_size=n, negatives=neg) for n in (10, 100, 500)
            for neg in ("random", "matched")]
    curves = logic.lift_curves(pd.DataFrame(rows))
    assert len(curves) == 5
    assert not ((curves["negatives"] == "matched") & (curves["pool_size"] == 500)).any()


@pytest.mark.parametrize("n", [2, 5, 17, 40])
def test_recall_at_1_matches_the_engine(n):
    rng = np.random.default_rng(n)
    m = rng.integers(n - 1, 60, 200)
    g = (rng.random(200) * m * 0.5).astype(int)
    e = np.minimum((rng.random(200) * 6).astype(int), m - g)
    got = logic.recall_at_1(m, g, e, n)
    want = pools.recall_at_k(m, g, e, n, 1)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_recall_at_1_is_nan_without_enough_distractors():
    got = logic.recall_at_1([3, 10], [0, 0], [0, 0], 6)
    assert np.isnan(got[0]) and got[1] == pytest.approx(1.0)


def test_label_group_and_main_label():
    row = {"No Finding": np.nan, "Pleural Effusion": 1.0, "Support Devices": 1.0, "Edema": -1.0}
    assert logic.label_group(row) == "Pleural Effusion + Support Devices + Edema?"
    assert logic.label_group({"No Finding": 1.0}) == "No Finding"
    assert logic.label_group({}) == "No Finding"
    assert logic.main_label(row) == "Pleural Effusion"


def test_compare_findings_shared_and_different():
    a = {"Pleural Effusion": 1.0, "Edema": -1.0, "Cardiomegaly": np.nan}
    b = {"Pleural Effusion": 1.0, "Edema": 1.0, "Cardiomegaly": 0.0}
    out = logic.compare_findings(a, b).set_index("finding")
    assert out.loc["Pleural Effusion", "agreement"] == "shared"
    assert out.loc["Edema", "agreement"] == "differs"
    assert "Cardiomegaly" not in out.index  # missing == 0: both not mentioned


def test_word_diff():
    only_a, only_b = logic.word_diff("Small left effusion. Right IJ line.",
                                     "Small right effusion, stable.")
    assert only_a == ["left", "ij", "line"]
    assert only_b == ["stable"]
    assert logic.word_diff(None, "") == ([], [])


def test_selections():
    assert logic.selected_row({"selection": {"rows": [3], "columns": []}}) == 3
    assert logic.selected_row({"selection": {"rows": []}}) is None
    assert logic.selected_row(None) is None
    # a Vega-Lite point selection over the field "row", as Streamlit passes it back
    state = {"selection": {"pick": [{"row": 4}, {"row": "2"}, {"x": 1}, "junk", {"row": 4},
                                    {"row": None}]}}
    assert logic.selected_points(state) == [4, 2]
    assert logic.selected_points({}) == [] and logic.selected_points(None) == []
    assert logic.selected_points({"selection": {"pick": {}}}) == []


def test_a_box_selects_every_point_of_the_full_map_inside_it():
    rng = np.random.default_rng(3)
    points = pd.DataFrame({"x": rng.uniform(-5, 5, 3000), "y": rng.uniform(-5, 5, 3000)},
                          index=rng.permutation(3000) + 10)
    # what the browser sends for a drag: the interval's bounds, in the order dragged
    state = {"selection": {"box": {"x": [1.5, -1.0], "y": [-2.0, 0.5]},
                           "pick": [{"row": 11}]}}  # a click before: ignored beside a box
    assert logic.selection_box(state) == (-1.0, 1.5, -2.0, 0.5)
    expected = [i for i, x, y in zip(points.index, points["x"], points["y"])
                if -1.0 <= x <= 1.5 and -2.0 <= y <= 0.5]  # one point at a time
    assert sorted(logic.selected_rows(points, state)) == sorted(expected)
    assert 100 < len(expected) < 3000
    # edges are inside
    edge = pd.DataFrame({"x": [0.0, 1.0, 1.0 + 1e-9], "y": [0.0, 1.0, 0.5]})
    assert logic.selected_rows(edge, {"selection": {"box": {"x": [0, 1], "y": [0, 1]}}}) == [0, 1]
    # a cleared box: the clicked points that exist in the map, as sent
    click = {"selection": {"box": {}, "pick": [{"row": 11}, {"row": 99_999}]}}
    assert logic.selected_rows(points, click) == [11]
    # malformed boxes are no box, not an error
    for bad in ({"x": ["a", 1], "y": [0, 1]}, {"y": [1, 2]}, {"x": [0, 1], "y": [0, "nan"]},
                {"x": [0], "y": [0, 1]}, "junk", None, []):
        assert logic.selection_box({"selection": {"box": bad}}) is None, bad
    assert logic.selection_box(None) is None


def test_pairs_of_selected_points():
    points = pd.DataFrame({
        "item_id": ["a", "a", "b", "b"], "modality": ["image", "report"] * 2,
        "x": [0.0, 3.0, 1.0, 1.0], "y": [0.0, 4.0, 1.0, 2.0], "image_id": ["a", "a", "b", "b"],
        "study_id": ["sa", "sa", "sb", "sb"], "split": ["test"] * 4,
        "expected_rank": [1.0, 1.0, 7.5, 7.5], "Edema": [1.0, 1.0, np.nan, np.nan]})
    pairs = logic.pairs_of(points, [1, 0, 3])
    assert list(pairs["image_id"]) == ["a", "b"]
    assert list(pairs["gap"]) == pytest.approx([5.0, 1.0])
    assert pairs["label group"].tolist() == ["Edema", "No Finding"]
    assert logic.pairs_of(points, []).empty


def test_epsilon_grid_orders_privacy_from_strongest():
    assert logic.epsilon_grid(["inf", "8", "0.34", "1"], ["original", "2"]) == [
        "original", "0.34", "1", "2", "8", "inf"]


def test_frontier_and_dp_table():
    metrics = pd.DataFrame([_metrics_row(heads=h, recall=r) for h, r in
                            (("original", 0.5), ("1", 0.2), ("inf", 0.45), ("8", 0.4))])
    utility = pd.DataFrame({"heads": ["original", "1", "inf", "original"],
                            "label": ["macro", "macro", "macro", "Edema"],
                            "auroc": [0.80, 0.79, 0.80, 0.7]})
    f = logic.frontier(metrics, utility, pool_size=100)
    assert list(f["heads"]) == ["original", "1", "inf"]  # "8" has no utility
    assert list(f["auroc"]) == [0.80, 0.79, 0.80]
    runs = pd.DataFrame({"heads": ["1"], "epsilon": [1.0], "patient_epsilon": [2.0],
                         "delta": [1e-5],
                         "accountant": ["prv"], "privacy_unit": ["group"]})
    assert list(logic.dp_table(runs).columns) == [
        "heads", "ε (group)", "δ (group)", "ε (patient)", "accountant", "unit"]


def test_problems_table():
    assert logic.problems_table(None).empty
    assert logic.problems_table("not json").empty
    t = logic.problems_table('[{"file": "a.csv", "row": 3, "kind": "bad", "message": "m", '
                             '"skipped": true}]')
    assert t.iloc[0].to_dict() == {"file": "a.csv", "row": 3, "kind": "bad", "message": "m",
                                   "skipped": True}


def test_group_table_and_survivors():
    frame = pd.DataFrame({
        "query_id": list("abcd"), "image_id": list("abcd"),
        "n_matched": [9, 9, 2, 9], "n_matched_greater": [0, 3, 0, 0],
        "n_matched_tied": [0, 0, 0, 4],
        "expected_rank": [1, 4, 1, 3], "Edema": [1.0, 1.0, np.nan, np.nan]})
    groups = logic.group_table(frame, 5).set_index("label group")
    assert groups.loc["Edema", "queries"] == 2 and groups.loc["Edema", "eligible"] == 2
    assert groups.loc["No Finding", "eligible"] == 1
    survivors = logic.still_relinking(frame, 5)
    # strict winners only: "d" ties with 4 matched distractors and is not listed
    assert list(survivors["query_id"]) == ["a"]
    assert survivors["matched_recall"].iloc[0] == pytest.approx(1.0)
    assert survivors["matched_beaten"].tolist() == [9]
    assert logic.tied_winners(frame, 5) == 1
    assert logic.matched_beaten(frame).tolist() == [9, 6, 2, 5]


def test_random_vs_matched_keeps_the_full_database_row():
    rows = []
    for negatives, n, recall in (("random", 10, 0.3), ("random", 50, 0.1), ("matched", 10, 0.2),
                                 ("matched", 50, 0.05)):
        rows.append(dict(model="m", split="test", heads="original", direction="image_to_report",
                         k=1, negatives=negatives, pool_size=n, recall=recall, chance=1 / n,
                         lift=recall * n, n_queries=40, n_excluded=0, ci_low=0, ci_high=1))
    metrics = pd.DataFrame(rows)
    curves = logic.lift_curves(metrics)
    assert set(curves.loc[curves["negatives"] == "matched", "pool_size"]) == {10}
    table = logic.random_vs_matched(curves, logic.matched_full(metrics))
    full = table[table["N"] == 50].iloc[0]
    assert full["matched Recall@1"] == pytest.approx(0.05)  # not None: the row is kept
    assert full["pool"].startswith("full held-out set")
    assert table[table["N"] == 10].iloc[0]["pool"] == "10"


def test_candidate_flags_never_call_the_true_report_a_matched_negative():
    cands = pd.DataFrame({"rank": [1, 2, 3], "is_true": [True, False, None],
                          "is_matched": [True, True, None]})
    flags = logic.candidate_flags(cands)
    assert flags["is_matched"].tolist() == [False, True, False]
    assert flags["is_true"].tolist() == [True, False, False]


@pytest.mark.parametrize("typed, text, hit", [
    ("effusion", "Small left pleural effusion.", True),
    ("effusion", "Small left pleural effusions.", False),  # whole words
    ("Pleural  Effusion", "small PLEURAL effusion", True),  # a phrase, any case or spacing
    ("pleural effusion", "effusion, pleural", False),
    ("50%", "about 50% of the lung", True),
    ("%", "any text", None),  # no word typed: no pattern, never a wildcard
    ("a_b", "a b", True),  # "_" separates words like any other punctuation
    ("a_b", "axb", False),
])
def test_search_pattern_matches_words_not_wildcards(typed, text, hit):
    import re

    pattern = logic.search_pattern(typed)
    if hit is None:
        assert pattern is None
    else:
        assert bool(re.search(pattern, text)) is hit


@pytest.mark.parametrize("text, affirmed", [
    ("No pleural effusion.", False),
    ("No focal consolidation, effusion or pneumothorax.", False),
    ("Effusion has resolved.", False),
    ("The effusion is not seen on this study.", False),
    ("Small left pleural effusion.", True),
    ("No pneumothorax, but a small left effusion.", True),
    ("No pneumothorax. Small effusion.", True),
    ("No effusion. Comparison: new right effusion.", True),
    ("Without change.\nLarge effusion.", True),
])
def test_negated_mentions(text, affirmed):
    assert logic.affirmed(text, logic.search_pattern("effusion")) is affirmed


def test_dp_table_reads_as_text_and_flags_weak_patient_delta():
    runs = pd.DataFrame([
        dict(heads="inf", epsilon=float("inf"), delta=None, patient_epsilon=float("inf"),
             patient_delta=None, noise_multiplier=0.0, max_grad_norm=float("inf"),
             sample_rate=0.1, steps=55, accountant=None, privacy_unit="group"),
        dict(heads="8", epsilon=7.997, delta=6e-6, patient_epsilon=15.99, patient_delta=0.018,
             noise_multiplier=0.8, max_grad_norm=1.0, sample_rate=0.1, steps=55,
             accountant="prv", privacy_unit="group"),
        dict(heads="0.34", epsilon=0.336, delta=6e-6, patient_epsilon=0.67,
             patient_delta=1.4e-5, noise_multiplier=7.5, max_grad_norm=1.0, sample_rate=0.1,
             steps=55, accountant="prv", privacy_unit="group"),
    ])
    table = logic.dp_table(runs)
    assert table["heads"].tolist() == ["0.34", "8", "inf"]  # epsilon order, inf last
    inf = table.iloc[-1]
    assert inf["ε (group)"] == "∞" and inf["δ (group)"] == "—" and inf["accountant"] == "—"
    assert table.iloc[1]["δ (patient)"] == "1.8e-02" and table.iloc[1]["steps"] == "55"
    assert not {"None", "nan", "inf", "Infinity"} & set(table.drop(columns="heads")
                                                        .to_numpy().ravel())
    weak = logic.weak_patient_delta(runs)
    assert weak["heads"].tolist() == ["8"]


def test_epsilon_grid_reads_original_then_epsilons_then_inf():
    assert logic.epsilon_grid(["inf", "8", "0.34", "1"], ["original", "backbone"]) == [
        "original", "0.34", "1", "8", "inf"]


def test_percent_ticks_never_repeat_a_label():
    from dashboard import charts

    for low, high in ((0.8398, 0.8411), (0.8400, 0.8409), (0.0109, 0.0223), (0.5, 0.95),
                      (0.83, 0.85)):
        values, text = charts.percent_ticks(low, high)
        assert len(values) >= 2 and len(set(text)) == len(text), (low, high, text)
        assert all(low - 1e-12 <= v <= high + 1e-12 for v in values)
    log_text = [f"{100 * v:.6g}%" for v in charts.LOG_TICKS]
    assert len(set(log_text)) == len(log_text)


def _d3(value: float, fmt: str) -> str:
    """A tick label as Vega's d3-format prints it, for the formats the charts use."""
    if fmt == "~%":  # 100 v with up to 6 decimals, trailing zeros trimmed
        return f"{100 * value:.6f}".rstrip("0").rstrip(".") + "%"
    if fmt.endswith("%"):
        return f"{100 * value:{fmt[:-1]}f}%"
    return f"{value:{fmt}}"


def _axes(node):
    """Every axis with fixed tick values in a Vega-Lite spec."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "axis" and isinstance(v, dict) and "values" in v:
                yield v
            else:
                yield from _axes(v)
    elif isinstance(node, list):
        for v in node:
            yield from _axes(v)


def _specs(hostile: str = "m"):
    """One spec of every chart of the dashboard, `hostile` wherever a database string goes."""
    from dashboard import charts

    curves = pd.DataFrame([dict(model=hostile, split=s, negatives=neg, pool_size=n,
                                recall=r, ci_low=r * 0.8, ci_high=r * 1.2, lift=r * n,
                                n_queries=10, n_excluded=0)
                           for s in ("test", "train") for neg in ("random", f"matched:{hostile}")
                           for n, r in ((10, 0.3), (100, 0.05), (611, 0.02))])
    front = pd.DataFrame({"heads": ["original", "1", hostile],
                          "recall": [0.0213, 0.0151, 0.0086], "lift": [13.0, 9.3, 5.2],
                          "auroc": [0.8409, 0.8400, 0.8403]})
    util = pd.DataFrame({"heads": ["original", hostile] * 2, "label": ["Edema"] * 2 + ["macro"] * 2,
                         "auroc": [0.8, 0.7, 0.81, 0.71]})
    points = pd.DataFrame({
        "item_id": [hostile, hostile, "b", "b"], "image_id": [hostile, hostile, "b", "b"],
        "modality": ["image", "report"] * 2, "x": [0.0, 1.0, 2.0, 3.0], "y": [0.0, 1.0, 0.5, 2.0],
        "split": ["test", "test", hostile, hostile], "study_id": ["s"] * 4,
        "expected_rank": [1.0, 1.0, 40.0, 40.0], "Edema": [1.0, 1.0, 0.0, 0.0]})
    test = curves[(curves["split"] == "test")]
    yield "lift_vs_n", charts.lift_vs_n(test, highlight=hostile)
    rnd = curves[curves["negatives"] == "random"]
    yield "members_vs_heldout", charts.members_vs_heldout(  # a third, hostile split name
        pd.concat([rnd, rnd[rnd["split"] == "train"].assign(split=hostile)]))
    yield "random_vs_matched", charts.random_vs_matched(test)
    for x in ("recall", "lift"):
        yield f"frontier_plot {x}", charts.frontier_plot(front, x=x, chosen=hostile)
    yield "per_label_auroc", charts.per_label_auroc(util, ["original", hostile])
    for colour in charts.COLOUR_BY:
        yield f"umap_scatter {colour}", charts.umap_scatter(points, colour)


def test_every_chart_has_distinct_tick_labels():
    checked = 0
    for name, chart in _specs():
        for axis in _axes(chart.to_dict()):  # to_dict validates against Vega-Lite's schema
            values = axis["values"]
            labels = [_d3(v, axis.get("format", ",.0f")) for v in values]
            assert len(set(values)) == len(values) >= 2, (name, values)
            assert len(set(labels)) == len(labels), (name, labels)
            checked += 1
    assert checked >= 8
    # the frontier's percent axes over a 0.1-point range: no "84.0%" five times
    front = pd.DataFrame({"heads": ["original", "1", "inf"], "recall": [0.0213, 0.0151, 0.0086],
                          "lift": [13.0, 9.3, 5.2], "auroc": [0.8409, 0.8400, 0.8403]})
    from dashboard import charts

    y = charts.frontier_plot(front).to_dict()["layer"][0]["encoding"]["y"]["axis"]
    labels = [_d3(v, y["format"]) for v in y["values"]]
    assert len(set(labels)) == len(labels) >= 2 and labels[0].startswith("84.0"), labels


def test_chart_text_escapes_database_strings():
    hostile = '<a href="http://x">m</a>'

    def places(node, path=()):
        """Where the hostile string occurs in the Vega-Lite spec (dict keys joined by dots)."""
        if isinstance(node, dict):
            for k, v in node.items():
                yield from places(v, path + (k,))
        elif isinstance(node, list):
            for v in node:
                yield from places(v, path)
        elif isinstance(node, str) and "<a" in node:
            yield ".".join(p for p in path)

    for name, chart in _specs(hostile):
        found = set(places(chart.to_dict()))
        # only as a data value, a scale domain or a sort order entry (lists of values): never in
        # an expression, a title or a format, where Vega would interpret it
        assert found and all(p.startswith("datasets.") or p.endswith(("scale.domain", ".sort"))
                             for p in found), (name, found)


def test_best_wrong():
    cands = pd.DataFrame({"rank": [1, 2, 3], "is_true": [True, False, False],
                          "is_matched": [True, False, True]})
    assert logic.best_wrong(cands)["rank"] == 2
    assert logic.best_wrong(cands, matched_only=True)["rank"] == 3
    assert logic.best_wrong(cands.iloc[:1]) is None


# ------------------------------------------------------------------------------ data module


def test_data_functions_on_the_seeded_database(seeded):
    db, tok = str(seeded.db), data.db_state(seeded.db).token
    assert set(data.cohorts(db, tok)["cohort"]) == {seeded.cohort}
    assert list(data.models(db, tok, seeded.cohort)["model"]) == list(seeded.models)
    assert set(data.heads(db, tok, seeded.cohort, seeded.specialist)) == {
        "original", "1", "inf", "1+original", "inf+original", "adaptive+public-phantom-b",
        "adaptive+known-5pct"}
    ranks = data.query_ranks(db, tok, seeded.cohort, seeded.specialist, "original")
    assert len(ranks) == seeded.n_test and ranks["image_id"].notna().all()
    assert ranks["expected_rank"].is_monotonic_increasing
    back = data.query_ranks(db, tok, seeded.cohort, seeded.specialist, "original", "test",
                            "report_to_image")
    assert (back["query_id"] == back["study_id"]).all()
    cands = data.candidates(db, tok, seeded.cohort, seeded.specialist, "original", "test",
                            "image_to_report", ranks["query_id"][0])
    assert cands["report_text"].notna().all() and cands["is_true"].sum() == 1
    points = data.umap_points(db, tok, seeded.cohort, seeded.specialist, "1")
    assert points["image_id"].notna().all() and set(points["modality"]) == {"image", "report"}
    assert points["expected_rank"].notna().all()
    assert set(data.dp_runs(db, tok, seeded.cohort, seeded.specialist)["heads"]) == {
        "1", "inf", "1+original", "inf+original"}
    runs = data.adaptive_runs(db, tok, seeded.cohort, seeded.specialist)
    assert set(runs["heads"]) == {"adaptive+public-phantom-b", "adaptive+known-5pct"}
    assert data.item(db, tok, seeded.cohort, "nope") is None
    assert data.search_reports(db, tok, seeded.cohort, "effusion")
    assert data.search_reports(db, tok, seeded.cohort, "%' OR 1=1 --") == []


def test_search_reports_whole_words_literal_percent_and_negation(seeded):
    from engine import store

    db, tok = str(seeded.db), data.db_state(seeded.db).token
    items = store.read_df(seeded.db, "SELECT image_id, report_text, \"Pleural Effusion\" AS pe "
                                     "FROM items WHERE cohort = ? AND selected", [seeded.cohort])
    every = set(data.search_reports(db, tok, seeded.cohort, "effusion", skip_negated=False))
    affirmed = set(data.search_reports(db, tok, seeded.cohort, "effusion"))
    mentions = set(items.loc[items["report_text"].str.contains(r"(?i)\beffusion\b"), "image_id"])
    assert every == mentions
    # "No focal consolidation, effusion or pneumothorax." is a negated mention
    assert affirmed and affirmed < every
    assert set(items.loc[items["image_id"].isin(affirmed), "pe"]) == {1.0}
    assert data.search_reports(db, tok, seeded.cohort, "%") == []  # never a wildcard
    assert data.search_reports(db, tok, seeded.cohort, "effus") == []  # words, not substrings
    one = items["image_id"].iloc[0]
    assert data.search_reports(db, tok, seeded.cohort, one.upper()) == [one]  # ids exactly


def test_report_file_only_inside_the_report_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("RELINK_REPORTS", raising=False)
    db = tmp_path / "results.duckdb"
    folder = tmp_path / "reports"
    folder.mkdir()
    good = folder / "m__c.html"
    good.write_text("<p>report</p>")
    outside = tmp_path / "secret.html"
    outside.write_text("<script>alert(1)</script>")
    (folder / "link.html").symlink_to(outside)
    path, why = data.report_file(db, str(good), "html")
    assert path == good.resolve() and why == ""
    for stored in (str(outside), str(folder / ".." / "secret.html"), str(folder / "link.html"),
                   "/etc/passwd"):
        path, why = data.report_file(db, stored, "html")
        assert path is None and "outside the report folder" in why, stored
    assert data.report_file(db, str(good), "pdf")[1] == "the stored path is not a .pdf file"
    assert data.report_file(db, str(folder / "gone.html"), "html")[0] is None
    assert data.report_file(db, None, "html")[0] is None
    monkeypatch.setenv("RELINK_REPORTS", str(tmp_path))
    assert data.report_file(db, str(outside), "html")[0] == outside.resolve()


def test_data_token_changes_with_the_file(seeded, tmp_path):
    import shutil
    import time

    from engine import store

    db = tmp_path / "t.duckdb"
    shutil.copy(seeded.db, db)
    before = data.db_state(db).token
    time.sleep(0.01)
    with store.connect_write(db) as con:
        con.execute("DELETE FROM dp_runs")
    assert data.db_state(db).token != before
    assert data.dp_runs(str(db), data.db_state(db).token, seeded.cohort, seeded.specialist).empty


def test_thumbnail_of_a_missing_or_broken_file(tmp_path):
    broken = tmp_path / "x.png"
    broken.write_bytes(b"not an image")
    assert data.thumbnail(str(broken), 0) is None
    assert data.thumbnail(str(tmp_path / "absent.png"), 0) is None


def test_random_vs_matched_table():
    curves = pd.DataFrame([_metrics_row(pool_size=n, negatives=neg, recall=r, lift=r * n,
                                        n_queries=q, n_excluded=500 - q)
                           for n, neg, r, q in ((10, "random", 0.5, 500), (10, "matched", 0.3, 450),
                                                (100, "random", 0.2, 500))])
    t = logic.random_vs_matched(curves)
    assert list(t["N"]) == [10, 100]
    assert t["matched Recall@1"].iloc[0] == 0.3 and np.isnan(t["matched Recall@1"].iloc[1])
    assert t["left out"].iloc[0] == 50


def test_vectorised_label_functions_match_the_row_by_row_ones():
    rng = np.random.default_rng(3)
    values = rng.choice([np.nan, 0.0, 1.0, -1.0], p=[0.6, 0.2, 0.15, 0.05], size=(300, 14))
    frame = pd.DataFrame(values, columns=list(logic.LABELS))
    rows = frame.to_dict("records")
    assert logic.label_groups(frame).tolist() == [logic.label_group(r) for r in rows]
    assert logic.main_labels(frame).tolist() == [logic.main_label(r) for r in rows]


def test_sample_items_keeps_both_points_of_each_item():
    points = pd.DataFrame({"item_id": np.repeat([f"i{k}" for k in range(50)], 2),
                           "image_id": np.repeat([f"i{k}" for k in range(50)], 2),
                           "modality": ["image", "report"] * 50})
    drawn = logic.sample_items(points, 10)
    assert drawn["image_id"].nunique() == 10 and len(drawn) == 20
    assert logic.sample_items(points, 10).equals(drawn)  # a fixed sample
    assert logic.sample_items(points, 100) is points


def test_reads_release_the_file_at_once_and_take_turns_across_threads(seeded, tmp_path):
    import shutil
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    db = tmp_path / "t.duckdb"
    shutil.copy(seeded.db, db)
    sql = "SELECT count(*) AS n FROM relink_ranks WHERE model = ? AND heads = 'original'"
    with ThreadPoolExecutor(4) as pool:
        counts = list(pool.map(lambda m: int(data.query(db, sql, [m])["n"][0]), seeded.models * 4))
    assert len(set(counts)) == 1 and counts[0] > 0
    # Nothing stays attached: the engine can open the file for writing right away.
    writer = subprocess.run([sys.executable, "-c", "import duckdb, sys; "
                             "duckdb.connect(sys.argv[1]).close(); print('ok')", str(db)],
                            capture_output=True, text=True, timeout=60)
    assert writer.stdout.strip() == "ok", writer.stderr
    assert len(data.query(db, "SELECT * FROM cohorts")) == 1  # and reads go on afterwards


def test_server_drawn_charts_are_svg_with_database_strings_as_escaped_text():
    from dashboard import charts

    hostile = '<a href="http://x">m</a><script>alert(1)</script>'
    curves = pd.DataFrame([dict(model=hostile, negatives="random", pool_size=n, lift=n / 4,
                                recall=0.25, n_queries=5, n_excluded=0) for n in (10, 100)])
    svg = charts.svg(charts.lift_vs_n(curves, highlight=hostile), width=charts.HALF_WIDTH)
    assert svg.startswith("<svg ") and svg.rstrip().endswith("</svg>")
    assert 'width="' in svg and "<script" not in svg and "<a " not in svg
    assert "&lt;a href=" in svg  # the name is there, as text
    assert ">100<" in svg  # a pool-size tick


def test_still_relinking_within_k_and_sorted_by_the_rank_among_all():
    frame = pd.DataFrame({
        "query_id": list("abcd"), "image_id": list("abcd"),
        "n_matched": [9, 9, 9, 9], "n_matched_greater": [0, 1, 0, 4],
        "n_matched_tied": [0, 0, 2, 0], "expected_rank": [40, 4, 2, 1]})
    assert list(logic.still_relinking(frame, 5)["query_id"]) == ["a"]
    within3 = logic.still_relinking(frame, 5, k=3)
    # "c" ranks 2.0 among matched (tied with two), "b" 2.0, "a" 1.0; "d" 5.0 is out
    assert list(within3["query_id"]) == ["c", "b", "a"]  # by the rank among all reports
    assert within3["matched_rank"].tolist() == [2.0, 2.0, 1.0]


def test_evidence_ignores_negated_mentions_and_stop_words():
    true = "No pneumothorax. Small left pleural effusion with a right IJ line."
    rival = "Small right pleural effusion. No pneumothorax or consolidation."
    assert logic.content_words("No pneumothorax.") == []
    only_true, only_rival = logic.evidence_diff(true, rival)
    assert "pneumothorax" not in only_true + only_rival
    assert "consolidation" not in only_rival  # negated in the rival ("No ... or consolidation")
    assert only_true == ["left", "ij", "line"] and only_rival == []


def test_groups_sentence_names_the_group_a_matched_figure_rests_on():
    groups = pd.DataFrame({"label group": ["No Finding", "Edema"], "queries": [801, 40],
                           "eligible": [801, 0]})
    assert logic.groups_sentence(groups, 100) == (
        "The matched figure at N = 100 rests on 1 label group: No Finding (801 of 801 queries "
        "eligible).")


def test_epsilon_grid_keeps_starts_apart_and_adaptive_heads_out():
    labels = ["original", "inf", "0.34", "1", "inf+original", "0.34+original",
              "adaptive+public-site-b", "adaptive+known-5pct"]
    assert logic.epsilon_grid(labels, start="random") == ["original", "0.34", "1", "inf"]
    assert logic.epsilon_grid(labels) == ["original", "0.34", "1", "inf", "0.34+original",
                                          "inf+original"]
    assert logic.heads_name("0.34+original") == (
        "DP heads, ε = 0.34, started from the model's original heads")
    assert logic.strongest(labels) == "0.34"
    assert logic.strongest(labels, "original") == "0.34+original"


def test_decision_on_the_seeded_database(seeded):
    """The overview's decision from stored rows: exact per-query recall matches the stored
    metric, the mitigation is the random-start sweep's, the attacker is quoted with its pairs."""
    from engine.core import decision as dec

    db, tok = str(seeded.db), data.db_state(seeded.db).token
    metrics = data.pool_metrics(db, tok, seeded.cohort, seeded.specialist, None, 1)
    held = metrics[(metrics["split"] == "test") & (metrics["direction"] == "image_to_report")
                   & (metrics["negatives"] == "random")]
    ranks = {h: data.query_ranks(db, tok, seeded.cohort, seeded.specialist, h)
             for h in ("original", "1")}
    stored = logic.point(held, "original", 5)
    assert np.nanmean(dec.per_query_recall(ranks["original"], 5)) == pytest.approx(
        stored.recall, abs=1e-9)
    d = logic.decision_for(seeded.specialist, seeded.cohort, held, ranks,
                           data.adaptive_runs(db, tok, seeded.cohort, seeded.specialist), 5,
                           n_boot=200)
    assert d.risk == dec.risk_of(stored.lift_low)
    assert "DP heads, ε = 1:" in d.mitigation and "started from" not in d.mitigation
    assert "does not cover the frozen backbones" in d.mitigation
    assert "An attacker who refits the heads" in d.adaptive
    assert d.recommendation and d.threat[2].startswith("The attacker holds a pool of 5")
