"""Linear probe and membership signal against naive computations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("sklearn")

from engine.core.labels import CHEXPERT_LABELS  # noqa: E402
from engine.utility import (  # noqa: E402
    label_matrix,
    membership_signal,
    pair_similarity,
    probe_auroc,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: thread hand-offs cost more than they save on a shared 2-core machine."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def _problem(n=400, d=16, n_labels=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=(d, n_labels))
    labels = (x @ w > 0).astype(np.float64)
    return x, labels


def _split(x, y, n_train):
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def test_probe_separates_a_separable_problem_and_not_shuffled_labels():
    x, y = _problem()
    names = ("A", "B", "C")
    good = probe_auroc(*_split(x, y, 300), labels=names)
    assert good.macro_auroc > 0.95 and good.labels_used == names
    rng = np.random.default_rng(1)
    shuffled = y[rng.permutation(len(y))]
    bad = probe_auroc(*_split(x, shuffled, 300), labels=names)
    assert abs(bad.macro_auroc - 0.5) < 0.12
    assert [r["label"] for r in good.rows()] == ["A", "B", "C", "macro"]


def test_labels_with_one_class_are_left_out_of_the_macro():
    x, y = _problem(n_labels=4)
    y[:, 1] = 0.0  # one class everywhere
    y[300:, 2] = np.nan  # eval split: only negatives (missing counts as negative)
    y[:300, 3] = -1.0  # train split: every row uncertain, so nothing to fit
    names = ("A", "B", "C", "D")
    result = probe_auroc(*_split(x, y, 300), labels=names)
    assert result.labels_used == ("A",)
    assert all(math.isnan(result.per_label[k]) for k in "BCD")
    assert result.macro_auroc == pytest.approx(result.per_label["A"])
    empty = probe_auroc(*_split(x, np.zeros_like(y), 300), labels=names)
    assert math.isnan(empty.macro_auroc) and empty.labels_used == ()


def test_label_policy_uncertain_excluded_missing_negative():
    x, y = _problem(n_labels=1)
    rng = np.random.default_rng(2)
    policy = y.copy()
    uncertain = rng.random(len(y)) < 0.2
    missing = (~uncertain) & (y[:, 0] == 0) & (rng.random(len(y)) < 0.5)
    policy[uncertain, 0] = -1.0
    policy[missing, 0] = np.nan
    got = probe_auroc(*_split(x, policy, 300), labels=("A",))
    keep_tr, keep_ev = ~uncertain[:300], ~uncertain[300:]
    # naive reference: unit rows, standardised on all train rows, fit / scored on kept rows only,
    # with missing read as negative
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    mu, sd = unit[:300].mean(axis=0), unit[:300].std(axis=0)
    z = (unit - mu) / sd
    clf = LogisticRegression(C=0.1, max_iter=1000).fit(z[:300][keep_tr], y[:300, 0][keep_tr])
    expected = roc_auc_score(y[300:, 0][keep_ev], clf.decision_function(z[300:][keep_ev]))
    assert got.per_label["A"] == pytest.approx(expected, abs=1e-6)
    assert got.n_train["A"] == keep_tr.sum() and got.n_eval["A"] == keep_ev.sum()


def test_probe_reads_the_14_labels_from_a_frame():
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(rng.choice([1.0, 0.0, -1.0, np.nan], size=(50, 14)),
                         columns=list(CHEXPERT_LABELS))
    m = label_matrix(frame)
    assert m.shape == (50, 14) and np.isnan(m).any()
    x = rng.normal(size=(50, 8)).astype(np.float32)
    result = probe_auroc(x[:30], m[:30], x[30:], m[30:])
    assert set(result.per_label) == set(CHEXPERT_LABELS) and len(result.rows()) == 15


def _naive_membership(members, non, fpr=0.01):
    wins = sum((m > n) + 0.5 * (m == n) for m in members for n in non)
    auroc = wins / (len(members) * len(non))
    best = 0.0
    for t in sorted(set(members) | set(non) | {math.inf}):
        f = np.mean(np.asarray(non) >= t)
        if f <= fpr:
            best = max(best, float(np.mean(np.asarray(members) >= t)))
    return auroc, best


@pytest.mark.parametrize("seed", [0, 1])
def test_membership_signal_matches_naive_computation(seed):
    rng = np.random.default_rng(seed)
    members = np.round(rng.normal(0.3, 1.0, size=150), 1)  # rounding makes ties
    non = np.round(rng.normal(0.0, 1.0, size=250), 1)
    got = membership_signal(members, non)
    auroc, tpr = _naive_membership(list(members), list(non))
    assert got.auroc == pytest.approx(auroc, abs=1e-12)
    assert got.tpr_at_fpr == pytest.approx(tpr, abs=1e-12)
    assert (got.n_members, got.n_nonmembers, got.fpr) == (150, 250, 0.01)


def test_membership_signal_extremes_and_pair_similarity():
    assert membership_signal(np.ones(10), np.zeros(200)).tpr_at_fpr == 1.0
    same = membership_signal(np.zeros(10), np.zeros(200))
    assert same.auroc == 0.5 and same.tpr_at_fpr == 0.0
    assert math.isnan(membership_signal(np.ones(3), np.array([])).auroc)
    img = np.array([[3.0, 0.0], [1.0, 1.0]])
    txt = np.array([[2.0, 0.0], [-1.0, 1.0]])
    assert np.allclose(pair_similarity(img, txt), [1.0, 0.0])
