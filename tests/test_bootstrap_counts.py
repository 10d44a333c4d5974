"""The shared patient-bootstrap counts: drawn once, read-only, and the means they give equal
a resample done by hand."""

from __future__ import annotations

import numpy as np
import pytest

from engine.core import decision as dec
from engine.core import pools


def test_resample_counts_are_drawn_once_and_read_only():
    a = pools.resample_counts(37, 200, 5)
    assert pools.resample_counts(37, 200, 5) is a
    assert not a.flags.writeable
    assert (a.sum(axis=1) == 37).all()  # each replicate draws every cluster's worth once


def test_replicate_means_equal_a_resample_by_hand():
    rng = np.random.default_rng(0)
    values = rng.random((60, 2))
    clusters = np.array([f"p{i}" for i in rng.integers(0, 25, 60)])
    got = dec.replicate_means(values, clusters, n_boot=50, seed=3)
    names, inverse = np.unique(clusters, return_inverse=True)
    counts = pools.resample_counts(len(names), 50, 3)
    for b in range(50):
        rows = np.concatenate([np.flatnonzero(inverse == c).repeat(1)
                               for c in range(len(names)) for _ in range(counts[b, c])])
        assert got[b] == pytest.approx(values[rows].mean(axis=0), abs=1e-12)
