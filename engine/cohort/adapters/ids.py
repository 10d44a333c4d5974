"""Ids and splits: empty and duplicate ids, split spellings, the deterministic hash split."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pandas as pd

from engine.cohort.adapters.loadlog import LoadLog

# Split spellings of the real releases (MIMIC train/validate/test, CheXpert train/valid).
SPLIT_NAMES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "valid": "validate",
    "validate": "validate",
    "validation": "validate",
    "val": "validate",
    "dev": "validate",
    "test": "test",
    "testing": "test",
}

# Share of patients a hash split puts in `test` (the rest is `train`).
HASH_TEST_FRACTION = 0.25


def drop_blank(frame: pd.DataFrame, columns: Sequence[str], log: LoadLog) -> pd.DataFrame:
    """Skip rows where any of `columns` (ids) is empty, one problem per row."""
    blank = (frame[list(columns)] == "").any(axis=1)
    for _, r in frame.loc[blank].iterrows():
        cols = [c for c in columns if r[c] == ""]
        log.add(r["_file"], r["_row"], "missing_id", f"empty {', '.join(cols)}; row skipped")
    log.stats["rows_missing_id"] += int(blank.sum())
    return frame.loc[~blank]


def drop_duplicates(
    frame: pd.DataFrame, key: str | Sequence[str], log: LoadLog, *, what: str
) -> pd.DataFrame:
    """Keep the first row of each `key`; skip the others, naming both rows."""
    cols = [key] if isinstance(key, str) else list(key)
    dup = frame.duplicated(cols, keep="first")
    if not dup.any():
        return frame
    first = frame.groupby(cols, sort=False)["_row"].transform("first")
    for idx in frame.index[dup]:
        value = "/".join(str(frame.at[idx, c]) for c in cols)
        log.add(
            frame.at[idx, "_file"],
            frame.at[idx, "_row"],
            "duplicate_id",
            f"duplicate {what} {value!r}: first listed in row {first[idx]}, which is kept; "
            "this row skipped",
        )
    log.stats["duplicate_ids"] += int(dup.sum())
    return frame.loc[~dup]


def normalise_splits(frame: pd.DataFrame, log: LoadLog, column: str = "split") -> pd.DataFrame:
    """Map split spellings to train/validate/test (`SPLIT_NAMES`); skip rows with other values."""
    mapped = frame[column].str.lower().map(SPLIT_NAMES)
    bad = mapped.isna()
    for idx in frame.index[bad]:
        log.add(
            frame.at[idx, "_file"],
            frame.at[idx, "_row"],
            "bad_split",
            f"split {frame.at[idx, column]!r} is not one of train, validate (valid), test; "
            "row skipped",
        )
    log.stats["rows_bad_split"] += int(bad.sum())
    out = frame.loc[~bad].copy()
    out["split"] = mapped[~bad]
    return out


def hash_split(key: str) -> str:
    """Deterministic split of a patient id: ``test`` for 25% of ids, ``train`` for the rest.

    The same id gets the same split on every machine and run (SHA-256, not Python's hash), so
    splits made this way are patient-disjoint by construction.
    """
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2.0**64 < HASH_TEST_FRACTION else "train"


def keyed_hash_split(keys: pd.Series, *, test_fraction: float, seed: int) -> pd.Series:
    """Patient-disjoint split by a keyed hash: ``test`` for about `test_fraction` of the keys.

    Each key (a patient id) is hashed with BLAKE2b keyed by `seed`, so the assignment depends
    only on the id and the seed: the same on every machine and run, different for another seed,
    and independent of row order or of which other patients are present.

    Args:
        keys: Patient ids (strings), any number of rows per id.
        test_fraction: Share of ids put in ``test``, in [0, 1].
        seed: Any integer; recorded by the caller next to the split.

    Returns:
        ``train``/``test`` per row of `keys`, same index.
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must lie in [0, 1], got {test_fraction}")
    secret = f"relink-split:{int(seed)}".encode()
    unique = pd.unique(keys.to_numpy())

    def draw(key: str) -> str:
        digest = hashlib.blake2b(str(key).encode("utf-8"), key=secret, digest_size=8).digest()
        return "test" if int.from_bytes(digest, "big") / 2.0**64 < test_fraction else "train"

    table = {key: draw(key) for key in unique}
    return keys.map(table)
