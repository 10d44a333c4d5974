"""The `attack` stage: counts per query, exact pool metrics and top-k lists, into DuckDB.

For each evaluated split (``test`` = held-out, ``train`` = members) and both directions, every
query's true item is ranked among all other items of that split (`ranks.count_ranks`), and from
those counts the exact expected Recall@k over random pools follows (`pools.recall_at_k`), for
random and for pathology-matched distractors. Results are keyed by the run id, a hash of the
config, the embeddings and the identity of the heads and the cohort content: a rerun with the same
inputs reuses its own rows (and becomes the one shown), a different config writes rows of its own
next to them, in one transaction.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from engine import distributed, store
from engine.attack.ranks import RankCounts, count_ranks
from engine.core import pools
from engine.core.labels import CHEXPERT_LABELS
from engine.errors import ConfigError
from engine.runs import Run

log = logging.getLogger(__name__)

DIRECTIONS = ("image_to_report", "report_to_image")
# Matched-negative policies: the 14-label vector, or a release's own finer sets (PadChest's item
# columns ``findings`` and ``localizations``), each stored under its own ``negatives`` name.
MATCH_POLICIES = ("labels", "findings", "findings+localizations")


@dataclass(frozen=True)
class AttackConfig:
    """What the attack computes.

    Attributes:
        pool_sizes: Candidate pool sizes N (true item included); sizes above the split's size
            are skipped, and the full database (the split's size) is always added.
        ks: Recall cut-offs.
        splits: Splits evaluated; ``train`` gives the members, ``test`` the held-out pairs.
        uncertain: Label-key policy for matched negatives: ``own`` (uncertain is its own value),
            ``positive`` or ``negative``. Missing labels always count as 0.
        match: What a matched distractor shares with the true report: ``labels`` (the 14-label
            vector, stored as ``negatives = 'matched'``), ``findings`` (the source's full
            finding set) or ``findings+localizations`` (both sets), stored as
            ``matched:<policy>``. A run with a finer policy stores only those matched rows of
            ``relink_metrics``: its random negatives, rank counts and top-k lists are the ones
            of the ``labels`` run on the same embeddings.
        n_boot: Bootstrap replicates (resampling patients) for the 95% intervals.
        top_k: Length of the stored candidate lists.
        seed: Seed of the bootstrap.
    """

    pool_sizes: tuple[int, ...] = (10, 100, 1000, 10000)
    ks: tuple[int, ...] = (1, 5, 10)
    splits: tuple[str, ...] = ("test", "train")
    uncertain: str = "own"
    match: str = "labels"
    n_boot: int = 1000
    top_k: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if self.uncertain not in ("own", "positive", "negative"):
            raise ConfigError(f"uncertain={self.uncertain!r}: expected own, positive or negative")
        if self.match not in MATCH_POLICIES:
            raise ConfigError(f"match={self.match!r}: expected {', '.join(MATCH_POLICIES)}")

    @property
    def matched_name(self) -> str:
        """The ``negatives`` value of this policy's matched rows."""
        return "matched" if self.match == "labels" else f"matched:{self.match}"

    def identity(self) -> dict:
        """The config as recorded in the run (``match`` only when not the default, so the
        default's run ids are those of runs recorded before the option existed)."""
        out = asdict(self)
        if out["match"] == "labels":
            del out["match"]
        return out


def label_keys(items: pd.DataFrame, uncertain: str = "own") -> np.ndarray:
    """One string key per item from its 14 labels (missing -> 0; uncertain per the policy)."""
    labels = items.loc[:, list(CHEXPERT_LABELS)].to_numpy(dtype=np.float64, na_value=np.nan)
    labels = np.nan_to_num(labels, nan=0.0)
    if uncertain != "own":
        labels[labels == -1.0] = 1.0 if uncertain == "positive" else 0.0
    codes = (labels.astype(np.int8) + 1).astype(np.uint8)  # -1,0,1 -> 0,1,2
    return np.array([row.tobytes().hex() for row in codes], dtype=object)


def match_keys(items: pd.DataFrame, config: AttackConfig, *, cohort: str = "") -> np.ndarray:
    """One key per item for the matched negatives of `config.match` (see `AttackConfig`).

    Raises:
        ConfigError: a finer policy on a cohort without the source's finding sets.
    """
    if config.match == "labels":
        return label_keys(items, config.uncertain)
    columns = config.match.split("+")
    missing = [c for c in columns if c not in items or items[c].isna().all()]
    if missing:
        raise ConfigError(
            f"--match {config.match}: cohort {cohort or '?'} has no {'/'.join(missing)} column "
            "(only the padchest format keeps the source's finding sets); use --match labels")
    # A missing value on some rows (not expected from one adapter) is its own empty set.
    parts = [items[c].fillna("").astype(str).to_numpy(dtype=object) for c in columns]
    if len(parts) == 1:
        return parts[0]
    return np.array([f"{a}|{b}" for a, b in zip(*parts)], dtype=object)


def pool_metrics(
    counts: RankCounts, patients: np.ndarray, config: AttackConfig
) -> list[dict]:
    """`relink_metrics` rows (without the run keys) for random and matched negatives.

    The matched rows are named by `AttackConfig.matched_name`; a finer policy gets only those.
    """
    random = config.match == "labels"
    q = len(counts.n_greater)
    sizes = sorted({n for n in config.pool_sizes if n < q} | {q})
    rows: list[dict] = []

    def add(negatives, size, recalls, chance, include, *, full_matched=False):
        n_inc = int(include.sum())
        values = np.stack(recalls, axis=1)[include] if n_inc else np.empty((0, len(config.ks)))
        if n_inc:
            low, high = pools.bootstrap_mean_ci(
                values, patients[include], n_boot=config.n_boot, seed=config.seed
            )
        for j, k in enumerate(config.ks):
            recall = float(values[:, j].mean()) if n_inc else float("nan")
            if full_matched:
                # Per-query chance k / N_q; with no query left there is no pool and no chance.
                ch = float(np.mean(chance[j][include])) if n_inc else float("nan")
            else:
                ch = float(chance[j])
            rows.append(dict(
                negatives=negatives, pool_size=int(size), k=int(k), recall=recall,
                chance=ch, lift=recall / ch if n_inc and ch > 0 else float("nan"),
                ci_low=float(low[j]) if n_inc else float("nan"),
                ci_high=float(high[j]) if n_inc else float("nan"),
                n_queries=n_inc, n_excluded=q - n_inc,
            ))

    everyone = np.ones(q, dtype=bool)
    for size in sizes:
        if random:
            recalls = [pools.recall_at_k(counts.n_candidates, counts.n_greater, counts.n_tied,
                                         size, k) for k in config.ks]
            add("random", size, recalls, [min(k / size, 1.0) for k in config.ks], everyone)
        if size < q:
            include = counts.n_matched >= size - 1
            m, g, e = (np.where(include, a, size - 1) for a in
                       (counts.n_matched, counts.n_matched_greater, counts.n_matched_tied))
            g, e = np.where(include, g, 0), np.where(include, e, 0)
            recalls = [pools.recall_at_k(m, g, e, size, k) for k in config.ks]
            add(config.matched_name, size, recalls, [min(k / size, 1.0) for k in config.ks],
                include)
    # Matched at full database: every matched distractor, so the pool size varies per query and
    # chance is the mean of k / N_q. Queries with no matched distractor are left out.
    include = counts.n_matched >= 1
    m = np.maximum(counts.n_matched, 1)
    recalls = [pools.recall_at_k_full(counts.n_matched_greater, counts.n_matched_tied, k)
               for k in config.ks]
    chance = [np.minimum(k / (m + 1.0), 1.0) for k in config.ks]
    add(config.matched_name, q, recalls, chance, include, full_matched=True)
    return rows


def summary_metrics(counts: RankCounts, patients: np.ndarray, config: AttackConfig) -> list[dict]:
    """Full-database MRR, median expected rank and top-1 patient linkage (random negatives)."""
    rr = pools.reciprocal_rank(counts.n_greater, counts.n_tied)
    expected = pools.expected_rank(counts.n_greater, counts.n_tied)
    values = np.stack([rr, counts.top1_same_patient], axis=1)
    low, high = pools.bootstrap_mean_ci(values, patients, n_boot=config.n_boot, seed=config.seed)
    q = len(rr)
    return [
        dict(metric="mrr", value=float(rr.mean()), ci_low=float(low[0]), ci_high=float(high[0]),
             n_queries=q),
        dict(metric="patient_top1", value=float(values[:, 1].mean()), ci_low=float(low[1]),
             ci_high=float(high[1]), n_queries=q),
        dict(metric="median_rank", value=float(np.median(expected)), ci_low=None, ci_high=None,
             n_queries=q),
        dict(metric="chance_top1", value=1.0 / q, ci_low=None, ci_high=None, n_queries=q),
    ]


def top_candidates(queries: np.ndarray, candidates: np.ndarray,
                   k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product with faiss ``IndexFlatIP`` (inputs L2-normalised)."""
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    index = faiss.IndexFlatIP(candidates.shape[1])
    index.add(np.ascontiguousarray(candidates, dtype=np.float32))
    scores, idx = index.search(np.ascontiguousarray(queries, dtype=np.float32),
                               min(k, len(candidates)))
    return scores, idx


def fingerprint(*arrays: np.ndarray) -> str:
    """Content hash of the embeddings, so new embeddings are never mistaken for old results."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def run_attack(
    db,
    *,
    model: str,
    cohort: str,
    items: pd.DataFrame,
    image_embeddings: np.ndarray,
    text_embeddings: np.ndarray,
    heads: str = "original",
    config: AttackConfig = AttackConfig(),
    provenance: dict | None = None,
    heads_cohort: str | None = None,
    heads_id: str | None = None,
    cohort_fingerprint: str | None = None,
    source_fingerprint: str | None = None,
    progress=None,
) -> tuple[str, bool]:
    """Run the attack and store it; returns (run_id, reused).

    Args:
        items: The audited items (one image per study), aligned row by row with the embeddings;
            needs ``image_id, study_id, patient_id, split`` and the 14 label columns.
        image_embeddings: [n, e] float32, L2-normalised.
        text_embeddings: [n, e] float32, L2-normalised (row i is item i's report).
        heads: ``original`` or the epsilon label of the heads that produced the embeddings.
        provenance: Extra facts recorded in the run's config (a ``heads_cohort`` key here is
            taken as the `heads_cohort` argument).
        heads_cohort: The cohort the heads were trained on (None for the original heads; another
            cohort for a transfer).
        heads_id: The heads' identity (`engine.heads`).
        cohort_fingerprint: Content fingerprint of `cohort` (`engine.cohort.registry`).
        source_fingerprint: Content fingerprint of `heads_cohort`.
    """
    if len(items) != len(image_embeddings) or len(items) != len(text_embeddings):
        raise ValueError("items and embeddings must be aligned row by row")
    provenance = dict(provenance or {})
    heads_cohort = heads_cohort or provenance.get("heads_cohort")
    if heads != "original" and heads_cohort is None:
        heads_cohort = cohort  # retrained heads without a source were trained here
    run = Run("attack", model, cohort, {
        **config.identity(), "heads": heads, "heads_id": heads_id,
        **provenance, **({"heads_cohort": heads_cohort} if heads_cohort else {}),
    }, inputs={"embeddings": fingerprint(image_embeddings, text_embeddings)},
        heads=heads, heads_cohort=heads_cohort, cohort_fingerprint=cohort_fingerprint,
        source_fingerprint=source_fingerprint if heads_cohort != cohort else cohort_fingerprint)
    # Under torchrun every rank counts its share of the queries; rank 0 alone reads the
    # reuse decision, computes the metrics and writes (`engine.distributed`).
    world = distributed.current()
    if distributed.broadcast(run.reuse(db) if world.is_main else None):
        return run.run_id, True
    keys = match_keys(items, config, cohort=cohort)
    finer = config.match != "labels"
    ranks, metrics, summary, topk = [], [], [], []
    for split in config.splits:
        mask = (items["split"] == split).to_numpy()
        if mask.sum() < 2:
            log.warning("split %s of %s has %d items; skipped", split, cohort, int(mask.sum()))
            continue
        sub = items.loc[mask].reset_index(drop=True)
        patients = sub["patient_id"].to_numpy(dtype=object)
        img, txt, k_sub = image_embeddings[mask], text_embeddings[mask], keys[mask]
        for direction in DIRECTIONS:
            if direction == "image_to_report":
                queries, cands = img, txt
                query_ids, cand_ids = sub["image_id"].to_numpy(), sub["study_id"].to_numpy()
            else:
                queries, cands = txt, img
                query_ids, cand_ids = sub["study_id"].to_numpy(), sub["image_id"].to_numpy()
            counts = count_ranks(queries, cands, label_keys=k_sub, patients=patients,
                                 progress=progress)
            if not world.is_main:
                continue
            tag = dict(split=split, direction=direction)
            metrics += [{**tag, **row} for row in pool_metrics(counts, patients, config)]
            if finer:
                continue  # the labels run on these embeddings holds the rest, identical
            ranks.append(pd.DataFrame(dict(
                **tag, query_id=query_ids, true_id=cand_ids,
                n_candidates=counts.n_candidates, n_greater=counts.n_greater,
                n_tied=counts.n_tied, n_matched=counts.n_matched,
                n_matched_greater=counts.n_matched_greater, n_matched_tied=counts.n_matched_tied,
                top1_same_patient=counts.top1_same_patient,
            )))
            summary += [{**tag, **row} for row in summary_metrics(counts, patients, config)]
            scores, idx = top_candidates(queries, cands, config.top_k)
            q, kk = idx.shape
            topk.append(pd.DataFrame(dict(
                **tag, query_id=np.repeat(query_ids, kk), rank=np.tile(np.arange(1, kk + 1), q),
                candidate_id=cand_ids[idx.ravel()], score=scores.ravel().astype(np.float64),
                is_true=(idx == np.arange(q)[:, None]).ravel(),
                is_matched=(k_sub[idx] == k_sub[:, None]).ravel(),
            )))
    if not world.is_main:
        distributed.barrier("the attack's write")
        return run.run_id, False
    keys_cols = dict(run_id=run.run_id, model=model, cohort=cohort, heads=heads,
                     heads_cohort=heads_cohort, heads_id=heads_id)
    frames = {
        "relink_ranks": pd.concat(ranks, ignore_index=True) if ranks else pd.DataFrame(),
        "relink_metrics": pd.DataFrame(metrics),
        "relink_summary": pd.DataFrame(summary),
        "relink_topk": pd.concat(topk, ignore_index=True) if topk else pd.DataFrame(),
    }
    with store.connect_write(db) as con, store.transaction(con):
        for table, frame in frames.items():
            store.replace_rows(con, table, frame.assign(**keys_cols) if len(frame) else frame,
                               run_id=run.run_id)
        run.record(con, status="done", n_rows=int(sum(len(f) for f in frames.values())),
                   message=leak_message(leaked_patients(items, config.splits)))
    distributed.barrier("the attack's write")
    return run.run_id, False


def pool_size_note(items: pd.DataFrame, config: AttackConfig) -> str:
    """Which requested pool sizes a run left out and why ("" when none was).

    A pool of N candidates needs N reports in the split; sizes above a split's number of pairs
    are skipped there, and the split's full size is always stored (`pool_metrics`).
    """
    notes = []
    for split in config.splits:
        n = int((items["split"] == split).sum())
        if n == 0:
            continue
        skipped = sorted({size for size in config.pool_sizes if size > n})
        if skipped:
            notes.append(f"{', '.join(f'{size:,}' for size in skipped)} in {split} "
                         f"({n:,} pairs; its full pool N={n:,} is stored)")
    if not notes:
        return ""
    return ("pool sizes skipped, larger than the split's number of pairs: "
            + "; ".join(notes))


def leaked_patients(items: pd.DataFrame, splits=("test", "train")) -> int:
    """Patients with pairs in more than one of `splits` (members leaking into held-out)."""
    part = items.loc[items["split"].isin(list(splits))]
    return int((part.groupby("patient_id")["split"].nunique() > 1).sum())


def leak_message(n_leaked: int) -> str:
    """The run's note about patients in several splits ("" when there are none)."""
    if not n_leaked:
        return ""
    return (f"{n_leaked} patients have pairs in both members and held-out: the split is not "
            "patient-disjoint, so held-out results are optimistic")
