"""The pairing ROC (per-record risk) against an enumeration of every pair and tie order."""

from __future__ import annotations

import numpy as np
import pytest

from engine.core import decision as dec


def _enumerated(M, G, E, r):
    """TPR and FPR at threshold r by listing, for every query and every equally likely place of
    the true report among its ties, which pairs the decision accepts."""
    true_acc = wrong_acc = 0.0
    for m, g, e in zip(M, G, E):
        places = range(g + 1, g + e + 2)  # the true report's rank, uniform over the tied block
        for rank in places:
            accepted = min(r, m + 1)  # the top-r of the query's m + 1 candidates
            hit = 1.0 if rank <= r else 0.0
            true_acc += hit / len(places)
            wrong_acc += (accepted - hit) / len(places)
    return wrong_acc / sum(M), true_acc / len(M)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pairing_roc_matches_enumeration(seed):
    rng = np.random.default_rng(seed)
    M = rng.integers(1, 60, 25)
    G = np.array([rng.integers(0, m + 1) for m in M])
    E = np.array([rng.integers(0, m - g + 1) if rng.random() < 0.4 else 0 for m, g in zip(M, G)])
    fpr, tpr = dec.pairing_roc(M, G, E)
    assert fpr[-1] == tpr[-1] == 1.0
    for r in range(0, int(M.max()) + 2):
        want_fpr, want_tpr = _enumerated(M, G, E, r)
        assert fpr[r] == pytest.approx(want_fpr, abs=1e-12)
        assert tpr[r] == pytest.approx(want_tpr, abs=1e-12)


def test_pairing_roc_points_above_two_thousand_are_log_spaced_and_exact():
    rng = np.random.default_rng(3)
    M = np.full(40, 9_999)
    G = rng.integers(0, 9_999, 40)
    E = np.where(rng.random(40) < 0.5, 1, 0)
    fpr, tpr = dec.pairing_roc(M, G, E)
    assert 2_000 < len(fpr) < 2_500  # every r up to 2,000, then ~400 log-spaced
    assert np.all(np.diff(fpr[:-1]) >= 0) and np.all(np.diff(tpr[:-1]) >= -1e-15)
    assert fpr[-2] == pytest.approx(1.0) and tpr[-2] == pytest.approx(1.0)  # r = M + 1: all
    assert dec.auc(fpr, tpr) == pytest.approx(
        1 - (G + 0.5 * E).mean() / 9_999, abs=2e-3)  # AUROC = 1 - mean normalised rank


def test_per_record_charts_draw_a_cohort_of_fifty_thousand_images():
    """Altair refuses a chart with more than 5,000 data rows; the page's two charts ship bins
    and ROC points, whatever the cohort's size (the study has 49,904 held-out images)."""
    import pandas as pd

    from dashboard import charts

    rng = np.random.default_rng(4)
    q = 50_000
    ranks = pd.DataFrame({"query_id": np.arange(q), "n_candidates": q - 1,
                          "n_greater": rng.integers(0, q - 1, q), "n_tied": 0})
    records = dec.per_record(ranks, 100)
    spec = charts.risk_histogram(records, 100).to_dict()
    rows = next(v for k, v in spec["datasets"].items() if len(v) == 40)
    assert sum(r["images"] for r in rows) == q
    fpr, tpr = dec.pairing_roc(ranks["n_candidates"], ranks["n_greater"], ranks["n_tied"])
    assert max(len(v) for v in charts.roc_curve(fpr, tpr).to_dict()["datasets"].values()) < 5_000
