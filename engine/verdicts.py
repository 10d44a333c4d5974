"""The reference paper's four claims on one results database, measured as the dashboard does.

`measure_claims` reads a cohort's shown pool metrics, its ladder (models with a specialisation
order), the strongest model's utility, and the per-query rank counts that claim 3 (the label
groups the matched figure rests on) and claim 4 (paired patient-bootstrap changes of the DP
heads against the original and the eps = inf heads) need, and passes them to
`engine.core.claims.summarize_claims`. The claims table of docs/results.md, the demo's summary
and the seed spread (`engine.cli.seeds`) all use it, so they give the verdict the dashboard's
overview gives (a test compares the two).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from engine import store
from engine.core import decision as dec
from engine.core.claims import (
    PAPER_DP_POOL,
    ClaimResult,
    dp_heads_label,
    matched_groups,
    strongest_model,
    summarize_claims,
)
from engine.core.labels import CHEXPERT_LABELS

MATCHED_POOL = 100  # claim 3's pool size, as on the overview


def _read(con, sql: str, params: list) -> pd.DataFrame:
    return con.execute(sql, params).df()


def _metrics(con, cohort: str) -> pd.DataFrame:
    return _read(
        con,
        "SELECT model, split, direction, negatives, heads_key AS heads, pool_size, k, recall, "
        "chance, lift, ci_low, ci_high, n_queries, n_excluded, run_id FROM shown_relink_metrics "
        "WHERE cohort = ? AND k = 1 ORDER BY model, split, direction, negatives, heads, pool_size",
        [cohort])


def held_out_ranks(con, cohort: str, model: str, heads: str) -> pd.DataFrame:
    """Held-out image -> report rank counts of the shown run of (model, heads), with the query's
    patient and its 14 labels."""
    labels = ", ".join(f'i."{name}"' for name in CHEXPERT_LABELS)
    return _read(
        con,
        "SELECT r.query_id, i.patient_id, r.n_candidates, r.n_greater, r.n_tied, r.n_matched, "
        f"r.n_matched_greater, r.n_matched_tied, {labels} "
        "FROM relink_ranks r LEFT JOIN items i "
        "ON i.cohort = r.cohort AND i.selected AND i.image_id = r.query_id "
        "WHERE r.run_id IN (SELECT DISTINCT run_id FROM shown_relink_metrics WHERE cohort = ? "
        "AND model = ? AND heads_key = ?) AND r.cohort = ? AND r.model = ? AND r.split = 'test' "
        "AND r.direction = 'image_to_report' ORDER BY r.query_id",
        [cohort, model, heads, cohort, model])


def measure_claims(db: Path, cohort: str, *, external: str | None = None
                   ) -> list[ClaimResult]:
    """The four claims on `cohort` (and the transfer to `external` when given)."""
    con = store.connect_read(db)
    try:
        return claims_of(con, cohort, external=external)
    finally:
        con.close()


def claims_of(con, cohort: str, *, external: str | None = None) -> list[ClaimResult]:
    """`measure_claims` on an open (read) connection."""
    metrics = _metrics(con, cohort)
    models = _read(con, "SELECT model, specialization FROM models WHERE model IN "
                               "(SELECT DISTINCT model FROM shown_relink_metrics WHERE cohort = ?) "
                               "ORDER BY specialization NULLS FIRST, model", [cohort])
    ladder = list(models["model"])
    orders = dict(zip(models["model"], models["specialization"]))
    top = strongest_model(ladder, orders)
    groups, changes, utility = None, None, None
    if top:
        utility = _read(con, "SELECT heads_key AS heads, label, auroc FROM shown_utility "
                                    "WHERE cohort = ? AND model = ? ORDER BY heads, label, auroc",
                        [cohort, top])
        groups = matched_groups(held_out_ranks(con, cohort, top, "original"), MATCHED_POOL)
        label = dp_heads_label(metrics, top)
        if label is not None:
            held = metrics[(metrics["model"] == top) & (metrics["split"] == "test")
                           & (metrics["direction"] == "image_to_report")
                           & (metrics["negatives"] == "random")]
            sizes = set(held.loc[held["heads"] == label, "pool_size"].astype(int))
            if sizes:
                n = PAPER_DP_POOL if PAPER_DP_POOL in sizes else max(sizes)
                ranks = {h: r for h in dict.fromkeys(("original", "inf", label))
                         if len(r := held_out_ranks(con, cohort, top, h))}
                changes = {(ref, label, n): dec.heads_change(ranks, ref, label, n)
                           for ref in ("original", "inf")}
                changes = {k: v for k, v in changes.items() if v.point == v.point}
    outside = None
    if external:
        outside = _metrics(con, external)
        outside = None if outside.empty else outside
    return summarize_claims(metrics, utility, ladder=ladder, orders=orders,
                            matched_groups=groups, dp_changes=changes, external=outside,
                            external_cohort=external if outside is not None else None)
