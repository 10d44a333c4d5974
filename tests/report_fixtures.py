"""Variants of the seeded database for the report's tests and its documentation screenshots.

The seeded database (tests/seed_db.py) writes DP results as placeholders: one run per epsilon,
no training config, no membership signal, no backbone line. `as_dp_stage` rewrites them in the
layout the real dp stage writes (engine/dp/stage.py: one run for the sweep, its config with the
`DPConfig` fields, the membership signal as JSON in ``runs.message``, ``heads`` and
``target_epsilon`` columns, a ``backbone`` utility line). `add_transfer_cohort`, `drop_dp` and
`rename_cohort` make the other cases the report must handle. `build_showcase` is the richer
database behind docs/report_*.png (``python tests/report_fixtures.py OUT_DIR``).

Everything here is synthetic and torch-free.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from engine import store
from engine.dp.training import DPConfig

DP_RUN = "dp-0123456789ab"


def copy_db(db: Path, folder: Path) -> Path:
    """A private copy of a database (tests must not change the session's seeded one)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "results.duckdb"
    shutil.copyfile(db, target)
    return target


def as_dp_stage(db: Path, *, model: str, cohort: str, delta: float = 1e-4) -> None:
    """Rewrite the placeholder DP rows of (model, cohort) in the real dp stage's layout."""
    with store.connect_write(db) as con, store.transaction(con):
        dp = con.execute("SELECT * FROM dp_runs WHERE model = ? AND cohort = ?",
                         [model, cohort]).df()
        # sweeps from another start (``1+original``) keep their labels and join the stage's run
        other = dp["heads"].astype(str).str.contains("+", regex=False)
        kept, dp = dp[other], dp[~other]
        old_runs = list(dp["run_id"].unique()) + list(kept["run_id"].unique())
        kept = kept.assign(run_id=DP_RUN)
        labels = ["inf" if math.isinf(e) else f"{e:g}" for e in dp["epsilon"]]
        rows = []
        for label, eps in zip(labels, dp["epsilon"]):
            finite = math.isfinite(eps)
            rows.append(dict(
                run_id=DP_RUN, model=model, cohort=cohort, epsilon=eps if finite else math.inf,
                delta=delta if finite else None,
                patient_epsilon=2 * eps if finite else math.inf,
                patient_delta=(1 + math.exp(eps)) * delta if finite else None,
                noise_multiplier=_sigma(eps), max_grad_norm=1.0 if finite else math.inf,
                sample_rate=0.08, steps=120, accountant="prv" if finite else None,
                privacy_unit="group", heads=label, target_epsilon=eps,
                grad_sample_mode="ghost" if finite else None, n_units=52, n_pairs_dropped=3,
                final_loss=2.1, seconds=4.2))
        sweep = sorted(labels, key=lambda h: math.inf if h == "inf" else float(h))
        config = {"sweep": sweep, "train_split": "train", "eval_split": "test",
                  "training": asdict(DPConfig(delta=delta)), "inputs": "0123456789abcdef"}
        membership = {}
        for label in ["original", *labels]:
            strength = {"original": 0.12, "inf": 0.14}.get(label)
            if strength is None:
                strength = 0.1 * (1 - math.exp(-float(label) / 2))
            membership[label] = dict(auroc=0.5 + strength, tpr_at_fpr=0.01 + strength / 3,
                                     fpr=0.01, n_members=400, n_nonmembers=400)
        util = con.execute("SELECT * FROM utility WHERE model = ? AND cohort = ? "
                           "AND heads = 'original'", [model, cohort]).df()
        backbone = util.assign(run_id=DP_RUN, heads="backbone",
                               auroc=np.clip(util["auroc"] - 0.004, 0, 1))
        frame = pd.DataFrame(rows)
        if len(kept):
            frame = pd.concat([frame, kept.loc[:, [c for c in kept.columns
                                                   if c in frame.columns or c == "start"]]],
                              ignore_index=True)
        store.replace_rows(con, "dp_runs", frame, model=model, cohort=cohort)
        store.replace_rows(con, "utility", backbone, model=model, cohort=cohort, heads="backbone")
        con.execute("UPDATE utility SET run_id = ? WHERE model = ? AND cohort = ? "
                    "AND heads NOT IN ('original', 'backbone')", [DP_RUN, model, cohort])
        for run in old_runs:
            con.execute("DELETE FROM runs WHERE run_id = ?", [run])
        con.execute(
            "INSERT INTO runs (run_id, stage, model, cohort, config_json, config_hash, "
            "code_version, status, started_at, finished_at, seconds, n_rows, n_skipped, message) "
            "VALUES (?, 'dp', ?, ?, ?, 'fixture', 'test', 'done', current_timestamp, "
            "current_timestamp, 30.0, ?, 0, ?)",
            [DP_RUN, model, cohort, json.dumps(config, sort_keys=True), len(rows),
             json.dumps(membership)])


def _sigma(eps: float) -> float:
    return 0.0 if math.isinf(eps) else round(0.9 + 1.6 / eps, 3)


def add_transfer_cohort(db: Path, *, model: str, source: str, name: str = "phantom-site-b",
                        own_dp: bool = False) -> None:
    """Register cohort `name` with the attack results of `model` on `source` copied over (heads
    included, Recall@1 scaled down), as if the source's heads had been applied unchanged."""
    with store.connect_write(db) as con, store.transaction(con):
        meta = con.execute("SELECT * FROM cohorts WHERE cohort = ?", [source]).df()
        store.replace_rows(con, "cohorts", meta.assign(cohort=name, site="B",
                                                       format="chexpert-plus"), cohort=name)
        # the released heads of the default start only: an attacker's refitted heads are never
        # transferred, and the `study` run transfers the random-start sweep
        metrics = con.execute("SELECT * FROM relink_metrics WHERE model = ? AND cohort = ? "
                              "AND heads NOT LIKE '%+%'", [model, source]).df()
        scale = 0.8
        metrics = metrics.assign(cohort=name, recall=metrics["recall"] * scale,
                                 ci_low=metrics["ci_low"] * scale,
                                 ci_high=metrics["ci_high"] * scale,
                                 lift=metrics["lift"] * scale)
        # heads_cohort says where the copied heads were trained: the source, or (own_dp) here
        metrics.loc[metrics["heads"] != "original", "heads_cohort"] = name if own_dp else source
        store.replace_rows(con, "relink_metrics", metrics, model=model, cohort=name)
        if own_dp:
            dp = con.execute("SELECT * FROM dp_runs WHERE model = ? AND cohort = ?",
                             [model, source]).df()
            store.replace_rows(con, "dp_runs", dp.assign(cohort=name, heads_cohort=name),
                               model=model, cohort=name)


def drop_dp(db: Path, *, model: str, cohort: str) -> None:
    """Remove every DP result of (model, cohort): dp rows, DP utility and DP-heads attacks."""
    with store.connect_write(db) as con, store.transaction(con):
        con.execute("DELETE FROM dp_runs WHERE model = ? AND cohort = ?", [model, cohort])
        con.execute("DELETE FROM runs WHERE stage = 'dp' AND model = ? AND cohort = ?",
                    [model, cohort])
        con.execute("DELETE FROM utility WHERE model = ? AND cohort = ? AND heads <> 'original'",
                    [model, cohort])
        for table in ("relink_metrics", "relink_ranks", "relink_summary", "relink_topk"):
            con.execute(f"DELETE FROM {table} WHERE model = ? AND cohort = ? "
                        "AND heads <> 'original'", [model, cohort])


def rename_cohort(db: Path, old: str, new: str) -> None:
    """Rename a cohort in every table (to test the rules that look at the name)."""
    with store.connect_write(db) as con, store.transaction(con):
        tables = [t for (t,) in con.execute(
            "SELECT DISTINCT table_name FROM duckdb_columns() WHERE column_name = 'cohort' "
            "AND table_name IN (SELECT table_name FROM duckdb_tables())"
        ).fetchall()]
        for table in tables:
            con.execute(f'UPDATE "{table}" SET cohort = ? WHERE cohort = ?', [new, old])


def build_showcase(folder: Path):
    """A richer seeded database: 900 studies, N up to 100, a six-epsilon DP grid in the dp
    stage's layout, and a transfer cohort (for the documentation screenshots)."""
    import seed_db

    grid = (("0.34", 0.34, 3.2), ("1", 1.0, 2.2), ("2", 2.0, 1.6), ("4", 4.0, 1.25),
            ("8", 8.0, 1.0), ("inf", math.inf, 0.8))
    saved = seed_db.DP_HEADS
    seed_db.DP_HEADS = grid
    try:
        seeded = seed_db.build(Path(folder), n_patients=300, studies_per_patient=3,
                               pool_sizes=(10, 30, 100), n_boot=200, images=False,
                               laterals=False)
    finally:
        seed_db.DP_HEADS = saved
    with store.connect_write(seeded.db) as con, store.transaction(con):
        # The placeholder utility of the seed moves only the two heads it knows; give the rest
        # of the grid a plausible, slowly falling utility.
        for label, eps, _ in grid:
            drop = 0.0015 if math.isinf(eps) else 0.012 / math.sqrt(eps)
            con.execute("UPDATE utility SET auroc = u.auroc - ? FROM (SELECT label, auroc FROM "
                        "utility WHERE model = ? AND cohort = ? AND heads = 'original') u "
                        "WHERE utility.label = u.label AND utility.model = ? AND "
                        "utility.cohort = ? AND utility.heads = ?",
                        [drop, seeded.specialist, seeded.cohort, seeded.specialist,
                         seeded.cohort, label])
    as_dp_stage(seeded.db, model=seeded.specialist, cohort=seeded.cohort)
    add_transfer_cohort(seeded.db, model=seeded.specialist, source=seeded.cohort)
    return seeded


if __name__ == "__main__":  # python tests/report_fixtures.py OUT_DIR
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    print(build_showcase(Path(sys.argv[1] if len(sys.argv) > 1 else "cache/showcase")))
