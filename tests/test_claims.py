"""The paper's four claims on hand-built metric rows: each verdict follows from the figures."""

from __future__ import annotations

import pandas as pd

from engine.core.claims import (
    NOT_MEASURABLE,
    NOT_REPRODUCED,
    PARTLY,
    REPRODUCES,
    format_claims,
    summarize_claims,
)

LADDER = ["r0", "r1", "r2"]


def _row(model, n, recall, low, high, *, heads="original", negatives="random", queries=500,
         excluded=0):
    return dict(model=model, split="test", direction="image_to_report", negatives=negatives,
                heads=heads, pool_size=n, k=1, recall=recall, chance=1 / n, lift=recall * n,
                ci_low=low, ci_high=high, n_queries=queries, n_excluded=excluded)


def _metrics(*, matched=(0.05, 0.03, 0.07, 400, 100), dp=0.5, inf=1.0, sizes=(100, 1000)):
    """Three rungs at lift 2x, 8x, 20x; DP and inf heads at `dp` / `inf` x the original."""
    rows = []
    for model, r in zip(LADDER, (0.01, 0.04, 0.10)):
        for n in sizes:
            scale = 100 / n
            rows.append(_row(model, n, r * scale * 2, r * scale * 1.5, r * scale * 2.5))
    rows[0].update(recall=0.01, lift=1.0, ci_low=0.005, ci_high=0.015)  # r0, N=100: 1x
    rec, low, high, q, ex = matched
    rows.append(_row("r2", 100, rec, low, high, negatives="matched", queries=q, excluded=ex))
    n = sizes[-1]
    base = next(x for x in rows if x["model"] == "r2" and x["pool_size"] == n)["recall"]
    rows.append(_row("r2", n, dp * base, dp * base * 0.8, dp * base * 1.2, heads="0.34"))
    rows.append(_row("r2", n, inf * base, inf * base * 0.9, inf * base * 1.1, heads="inf"))
    return pd.DataFrame(rows)


def _utility(a0=0.80, a1=0.798):
    return pd.DataFrame([dict(heads="original", label="macro", auroc=a0),
                         dict(heads="0.34", label="macro", auroc=a1),
                         dict(heads="backbone", label="macro", auroc=0.79)])


def test_all_four_reproduce_when_figures_say_so():
    results = summarize_claims(_metrics(sizes=(100, 1000, 10_000)), _utility(), ladder=LADDER)
    assert [r.verdict for r in results] == [REPRODUCES] * 4
    text = format_claims(results)
    assert "N=10,000" in text and "15x" in text.replace("×", "x")
    assert "matched lift at N=100" in results[2].measured and "400 of 500" in results[2].measured


def test_missing_large_pool_is_partly_and_says_why():
    results = summarize_claims(_metrics(sizes=(100, 1000)), _utility(), ladder=LADDER)
    assert results[1].verdict == PARTLY
    assert "N=10,000 not measurable" in results[1].measured


def test_matched_interval_reaching_one_does_not_reproduce():
    results = summarize_claims(_metrics(matched=(0.012, 0.008, 0.02, 400, 100)), _utility(),
                               ladder=LADDER)
    assert results[2].verdict == NOT_REPRODUCED


def test_matched_for_few_queries_is_partly():
    results = summarize_claims(_metrics(matched=(0.05, 0.03, 0.07, 100, 400)), _utility(),
                               ladder=LADDER)
    assert results[2].verdict == PARTLY


def test_dp_cut_explained_by_inf_is_not_a_dp_effect():
    results = summarize_claims(_metrics(dp=0.5, inf=0.4), _utility(), ladder=LADDER)
    assert results[3].verdict == NOT_REPRODUCED
    assert "eps=inf" in results[3].why


def test_dp_heads_that_do_not_move_say_retraining_does_not_move_re_linkage():
    # DP and inf heads both within the original's interval (0.8x-1.2x of its Recall@1)
    results = summarize_claims(_metrics(dp=0.98, inf=1.05), _utility(), ladder=LADDER)
    assert results[3].verdict == NOT_REPRODUCED
    assert "also stay within the original heads' interval" in results[3].why
    # an inf row outside the interval: only the plain statement
    results = summarize_claims(_metrics(dp=0.98, inf=1.6), _utility(), ladder=LADDER)
    assert results[3].verdict == NOT_REPRODUCED
    assert "stay within" not in results[3].why


def test_dp_below_inf_but_not_below_original_names_both_effects():
    # retraining raises Recall@1 by 30%; the noise takes 25% of that back: net -2.5%
    results = summarize_claims(_metrics(dp=0.975, inf=1.3), _utility(), ladder=LADDER)
    assert results[3].verdict == NOT_REPRODUCED
    why = results[3].why
    assert "against the eps=inf heads it is -25.0%" in why and "+30.0%" in why


def test_dp_below_inf_only_by_its_point_estimate_is_partly():
    # DP at 0.5x the original, inf at 0.55x: the DP interval (0.4x-0.6x) holds inf's point, so
    # the cut against retraining alone is no measurable change, whatever the point says
    results = summarize_claims(_metrics(dp=0.5, inf=0.55), _utility(), ladder=LADDER)
    assert results[3].verdict == PARTLY
    assert "against the eps=inf heads of the same start it is no measurable change" in \
        results[3].why


def test_dp_cut_with_lost_utility_is_partly():
    results = summarize_claims(_metrics(), _utility(a1=0.75), ladder=LADDER)
    assert results[3].verdict == PARTLY


def test_falling_ladder_does_not_reproduce():
    m = _metrics()
    m.loc[m["model"] == "r2", "recall"] = 0.01
    m.loc[m["model"] == "r2", ["ci_low", "ci_high"]] = [0.005, 0.015]
    m = m[~((m["model"] == "r2") & (m["heads"] != "original"))]
    results = summarize_claims(m, _utility(), ladder=LADDER)
    assert results[0].verdict == NOT_REPRODUCED
    assert results[3].verdict == NOT_MEASURABLE


def test_empty_inputs_are_not_measurable():
    empty = pd.DataFrame(columns=list(_row("x", 100, 0, 0, 0)))
    results = summarize_claims(empty, pd.DataFrame(columns=["heads", "label", "auroc"]),
                               ladder=LADDER)
    assert [r.verdict for r in results] == [NOT_MEASURABLE] * 4
    assert len(summarize_claims(empty, None, ladder=[])) == 4


def test_overview_page_shows_the_four_claims_from_the_database(seeded, monkeypatch):
    """The overview's panel: four rows computed from the seeded database's own rows."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from engine import store

    monkeypatch.setenv("RELINK_DB", str(seeded.db))
    app = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
    at = AppTest.from_file(app, default_timeout=180).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(h.value == "The reference paper's four claims on this cohort" for h in at.subheader)
    # a static Markdown table (ui.static_table): header, rule, one row per claim, each cell
    # escaped with ui.esc
    from dashboard.ui import esc

    table = next(m.value for m in at.markdown if m.value.startswith("| ") and "verdict" in m.value)
    header, _, *rows = table.splitlines()
    columns = [c.strip() for c in header.strip("|").split(" | ")]
    cells = [[c.strip() for c in row.strip("|").split(" | ")] for row in rows]
    shown = {name: [r[i] for r in cells] for i, name in enumerate(columns)}
    assert [f[:3] for f in shown["claim"]] == ["1\\.", "2\\.", "3\\.", "4\\."]
    # the same verdicts as computed directly from the stored rows
    metrics = store.read_df(seeded.db, "SELECT * FROM relink_metrics WHERE cohort = ? AND k = 1",
                            [seeded.cohort])
    utility = store.read_df(seeded.db, "SELECT * FROM utility WHERE cohort = ? AND model = ?",
                            [seeded.cohort, seeded.specialist])
    # claim 3 names its label groups (at N = 100), claim 4 reads the paired changes of the
    # same heads on the same queries
    from dashboard import data
    from engine.core import decision as dec
    from engine.core.claims import dp_heads_label, matched_groups

    tok = data.db_state(seeded.db).token
    label = dp_heads_label(metrics[metrics["model"] == seeded.specialist], seeded.specialist)
    ranks = {h: data.query_ranks(str(seeded.db), tok, seeded.cohort, seeded.specialist, h)
             for h in ("original", "inf", label)}
    n = int(metrics.loc[(metrics["model"] == seeded.specialist) & (metrics["heads"] == label)
                        & (metrics["split"] == "test"), "pool_size"].max())
    changes = {(ref, label, n): dec.heads_change(ranks, ref, label, n)
               for ref in ("original", "inf")}
    direct = summarize_claims(metrics, utility, ladder=list(seeded.models),
                              matched_groups=matched_groups(ranks["original"], 100),
                              dp_changes=changes)
    assert shown["verdict"] == [esc(r.verdict) for r in direct]
    assert "95% CI" in shown["measured"][3]
    assert direct[0].verdict != NOT_MEASURABLE


# ------------------------------------------------------------------------------ decision


def test_split_label_and_scope_follow_the_start():
    from engine.core import decision as dec

    assert dec.split_label("0.34") == ("0.34", "random")
    assert dec.split_label("0.34+original") == ("0.34", "original")
    assert dec.split_label("inf+public-site-b") == ("inf", "public:site-b")
    assert dec.split_label("original") == ("original", None)
    assert dec.split_label("1@site-a") == ("1@site-a", "random")
    assert dec.is_adaptive("adaptive+known-5pct") and not dec.is_adaptive("0.34")
    assert dec.inf_of("original") == "inf+original" and dec.inf_of("random") == "inf"
    assert dec.sweep(["original", "0.34", "inf", "0.34+original", "adaptive+known-1pct"]) == [
        "0.34", "inf"]
    scope = dec.epsilon_scope("0.34+original", "site-a")
    assert "does not cover the frozen backbones" in scope
    assert "ε does not cover the starting heads" in scope
    assert "starting heads" not in dec.epsilon_scope("0.34")
    assert dec.epsilon_scope("original") == "" and dec.epsilon_scope("adaptive+known-1pct") == ""


def test_paired_change_says_no_measurable_change_when_the_interval_holds_zero():
    import numpy as np

    from engine.core import decision as dec

    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(300), 3)
    base = (rng.random(900) < 0.05).astype(float)
    # the same queries, five hits lost and five gained: no real change
    noisy = base.copy()
    flip = np.concatenate([np.flatnonzero(base == 1)[:5], np.flatnonzero(base == 0)[:5]])
    noisy[flip] = 1 - noisy[flip]
    same = dec.paired_change(base, noisy, patients, n_boot=400)
    assert same.low < 0 < same.high and not same.measurable
    assert dec.change_text(same).startswith("no measurable change (95% CI −")
    # every hit removed: a measurable drop, said as a percentage with its interval
    gone = dec.paired_change(base, np.zeros(900), patients, n_boot=400)
    assert gone.measurable and gone.point == -1.0
    assert dec.change_text(gone).startswith("−100% (95% CI −100% to −100%)")
    assert dec.expected_count(0.00496, 1471) == "about 7.3 of 1,471"
    assert dec.rate_with_count(0.00496, 1471) == "0.50% (about 7.3 of 1,471 images)"
    assert dec.rate_with_count(0.5, 1471) == "50%"


def test_the_decision_reads_the_scale_on_the_lower_bound_and_names_the_threat():
    from engine.core import decision as dec

    # lift 5.0x but its interval starts at 2.6x: "elevated", not "high"
    head = dec.Point(0.05, 0.026, 0.08, 0.01, 1471)
    d = dec.decide("m", head, 100)
    assert d.risk == "elevated" and "lower end, 2.6×" in d.risk_text
    assert "released model (m)" in d.threat[0] and "pool of 100" in d.threat[2]
    assert d.recommendation.startswith("Do not release m") and "no mitigation" in d.recommendation
    no_change = dec.Change(-0.02, -0.4, 0.3, 1471)
    mit = dec.Mitigation("0.34", dec.Point(0.049, 0.02, 0.07, 0.01, 1471), no_change)
    d = dec.decide("m", head, 100, mitigation=mit)
    assert "no measurable change (95% CI −40% to +30%)" in d.mitigation
    assert "do not bring it down to chance" in d.recommendation
    # a mitigation down to chance, but an attacker who refits the heads gets it back
    drop = dec.Change(-0.9, -0.95, -0.8, 1471)
    good = dec.Mitigation("0.34", dec.Point(0.005, 0.002, 0.012, 0.01, 1471), drop)
    back = dec.Adaptive("adaptive+public-site-b", dec.Point(0.04, 0.03, 0.05, 0.01, 1471), 865,
                        0.8)
    d = dec.decide("m", head, 100, mitigation=good, adaptive=back)
    assert "865 pairs" in d.adaptive and "80% of the original model's rate" in d.adaptive
    assert "not against an attacker who refits them" in d.adaptive
    assert "refits the heads gets it back" in d.recommendation
    assert dec.decide("m", head, 100, mitigation=good).recommendation.startswith(
        "Release m only with the DP heads at ε = 0.34")
    # an interval reaching below 1.5x: near chance, the audit does not block
    assert dec.decide("m", dec.Point(0.02, 0.012, 0.03, 0.01, 9), 100).risk == "near chance"


def test_claim_three_names_the_one_label_group_it_rests_on():
    from engine.core.claims import groups_text

    assert groups_text([("No Finding", 801, 801), ("Edema", 0, 40)]) == (
        "rests on 1 label group: No Finding (801 of 801 queries eligible)")
    assert groups_text([]) == ""
