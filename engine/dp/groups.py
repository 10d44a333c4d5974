"""Data-independent patient grouping for group-as-unit DP training (docs/dp.md).

One training example of the default DP recipe is one *group*: a fixed-capacity stack of pairs in
which every pair of a patient lives, the contrastive loss being computed inside the group only.
For the privacy argument to hold, the group of a patient must not depend on anyone's data:

* A patient's group is ``blake2b(patient_id, key) mod n_groups``: a function of the patient's own
  id, a fixed key and the number of groups only. The key is not secret; what matters is that it is
  fixed before training and does not look at features, labels or reports.
* ``n_groups = ceil(n_pairs / (capacity * fill))``. Like the dataset size from which Opacus derives
  its sampling rate, the number of pairs is treated as public; with it fixed, adding or removing
  one patient changes exactly one group (one group substitution, hence the patient-level
  guarantee of `engine.dp.accounting.patient_level`). Groups left empty are kept (all padding),
  so the number of privacy units is ``n_groups`` whatever the hash does.
* Capacity: a group holds at most ``capacity`` pairs. When the patients hashed to one group hold
  more, pairs are kept in a fixed keyed-hash order (patients by the hash of their id, then each
  patient's pairs by the hash of the pair id) and the rest are *dropped* from training. A patient
  with more than ``capacity`` pairs therefore keeps a deterministic subset of ``capacity`` pairs.
  Dropping only ever touches the overflowing group, so the one-patient-one-group argument is
  unchanged; the number of dropped pairs is reported.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_KEY = "relink-audit/dp-groups/v1"


@dataclass(frozen=True)
class GroupAssignment:
    """Pairs packed into fixed-capacity groups.

    Attributes:
        index: [n_groups, capacity] int64 row numbers into the pair arrays; -1 marks padding.
        mask: [n_groups, capacity] bool, True for real pairs.
        group_of_pair: [n_pairs] int64, the group of each pair, or -1 when the pair was dropped
            (its group was full).
        n_dropped: Pairs left out because their group was full.
        n_capped_patients: Patients who lost at least one pair to a full group.
    """

    index: np.ndarray
    mask: np.ndarray
    group_of_pair: np.ndarray
    n_dropped: int
    n_capped_patients: int

    @property
    def n_groups(self) -> int:
        return int(self.index.shape[0])

    @property
    def capacity(self) -> int:
        return int(self.index.shape[1])


def keyed_hash(values: Sequence[object], key: str = DEFAULT_KEY) -> np.ndarray:
    """64-bit keyed blake2b hash of each value's string form, as uint64 [n]."""
    k = key.encode("utf-8")[:64]
    out = np.empty(len(values), dtype=np.uint64)
    for i, v in enumerate(values):
        digest = hashlib.blake2b(str(v).encode("utf-8"), key=k, digest_size=8).digest()
        out[i] = int.from_bytes(digest, "little")
    return out


def number_of_groups(n_pairs: int, capacity: int, fill: float) -> int:
    """``ceil(n_pairs / (capacity * fill))``, at least 1: a function of public counts only."""
    if capacity < 1:
        raise ValueError(f"group capacity must be >= 1, got {capacity}")
    if not 0.0 < fill <= 1.0:
        raise ValueError(f"group fill must be in (0, 1], got {fill}")
    return max(1, math.ceil(n_pairs / (capacity * fill)))


def assign_groups(
    patient_ids: Sequence[object],
    *,
    capacity: int = 8,
    fill: float = 0.5,
    key: str = DEFAULT_KEY,
    pair_ids: Sequence[object] | None = None,
    n_groups: int | None = None,
) -> GroupAssignment:
    """Assign every pair to the keyed-hash group of its patient.

    Args:
        patient_ids: [n] patient id of each pair.
        capacity: Pairs per group (g); padding fills the rest.
        fill: Target mean load per group as a fraction of `capacity`; sets `n_groups`.
        key: Key of the hash (fixed; need not be secret).
        pair_ids: [n] stable pair ids (e.g. image ids) used to order a patient's pairs when a
            group overflows; defaults to the row number.
        n_groups: Override the number of groups (otherwise `number_of_groups`).

    Returns:
        The assignment; see `GroupAssignment`.
    """
    n = len(patient_ids)
    if pair_ids is not None and len(pair_ids) != n:
        raise ValueError(f"pair_ids has {len(pair_ids)} entries, patient_ids {n}")
    groups = n_groups if n_groups is not None else number_of_groups(n, capacity, fill)
    pid = np.asarray([str(p) for p in patient_ids], dtype=object)
    uniq, inverse = np.unique(pid, return_inverse=True) if n else (np.array([], dtype=object),
                                                                  np.zeros(0, dtype=np.int64))
    patient_hash = keyed_hash(list(uniq), key)
    pair_hash = keyed_hash(list(pair_ids) if pair_ids is not None else list(range(n)),
                           key + "/pairs")
    group = (patient_hash % np.uint64(groups)).astype(np.int64)[inverse]
    # Fixed order inside a group: patient hash (ties: patient id), then pair hash (ties: row).
    order = np.lexsort((np.arange(n), pair_hash, inverse, patient_hash[inverse], group))
    g_sorted = group[order]
    start = np.searchsorted(g_sorted, g_sorted, side="left")
    slot = np.arange(n) - start
    keep = slot < capacity
    index = np.full((groups, capacity), -1, dtype=np.int64)
    index[g_sorted[keep], slot[keep]] = order[keep]
    group_of_pair = np.full(n, -1, dtype=np.int64)
    group_of_pair[order[keep]] = g_sorted[keep]
    dropped = order[~keep]
    return GroupAssignment(
        index=index,
        mask=index >= 0,
        group_of_pair=group_of_pair,
        n_dropped=int(len(dropped)),
        n_capped_patients=int(len(np.unique(inverse[dropped]))),
    )
