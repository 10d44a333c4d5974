"""The seed spread: verdict rows per seed; the README table says how many seeds agree."""

from __future__ import annotations

import json
from dataclasses import replace

from engine import store
from engine.cli import seeds
from engine.core.claims import NOT_REPRODUCED, REPRODUCES
from engine.readme import seed_markdown
from engine.verdicts import measure_claims
from report_fixtures import copy_db


def test_claims_carry_their_key_figures(seeded):
    results = measure_claims(seeded.db, seeded.cohort)
    assert [r.number for r in results] == [1, 2, 3, 4]
    dp = results[3].figures
    assert any(k.startswith("R@1 change vs original") for k in dp)
    assert "AUROC change (points)" in dp
    assert all(k.startswith("lift ") for k in results[0].figures)


def test_spread_table_counts_the_seeds_behind_each_verdict(seeded, tmp_path):
    db = copy_db(seeded.db, tmp_path)
    results = measure_claims(db, seeded.cohort)
    cohort = seeded.cohort  # the seeded database's cohort stands for site A
    seeds.record(db, 0, results, cohort=cohort)
    flipped = [replace(r, verdict=NOT_REPRODUCED if r.number == 4 else REPRODUCES,
                       figures={k: (v + 0.5 if v == v else v) for k, v in r.figures.items()})
               for r in results]
    seeds.record(db, 1, flipped, cohort=cohort)
    seeds.record(db, 1, flipped, cohort=cohort)  # a rerun replaces the seed's rows
    rows = seeds.spread_rows(db, cohort)
    assert len(rows) == 8 and sorted(set(rows["seed"])) == [0, 1]
    stored = json.loads(rows.loc[(rows["seed"] == 0) & (rows["claim"] == 4),
                                 "figures_json"].iloc[0])
    assert stored.keys() == results[3].figures.keys()
    text = seed_markdown(db, cohort=seeded.cohort)
    assert "The paper's claims over 2 training seeds" in text
    same = [r.number for r in results if r.verdict == flipped[r.number - 1].verdict]
    differ = [r.number for r in results if r.number not in same]
    assert differ  # the fixture does make seeds disagree
    for number in same:
        assert f"{results[number - 1].verdict} in all 2 seeds" in text
    assert text.count("**differs between seeds**") == len(differ)
    assert "to" in text and "seed 1" in text


def test_seed_rows_keep_the_engine_version_and_numerics(seeded, tmp_path):
    db = copy_db(seeded.db, tmp_path)
    seeds.record(db, 3, measure_claims(db, seeded.cohort), cohort=seeded.cohort)
    got = store.read_df(db, "SELECT code_version, numerics_json FROM seed_verdicts", [])
    assert len(got) == 4
    assert got["code_version"].notna().all()
    assert "numerics" in json.loads(got["numerics_json"].iloc[0])
