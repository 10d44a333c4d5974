"""The demo: big enough for its own figures, the paper's claims, and a hand-over to the server."""

from __future__ import annotations

import collections
import os

from engine.cli import demo
from engine.config import SynthConfig
from engine.core.labels import CHEXPERT_LABELS
from synthetic.cohort import plan_reports


def _signature(labels: dict) -> tuple:
    # the matched-negative key: uncertain is its own value, missing counts as 0
    return tuple(0.0 if labels[name] is None else labels[name] for name in CHEXPERT_LABELS)


def test_demo_site_a_has_n_1000_and_matched_pools_at_n_100_for_most_queries():
    name, _, patients, seed, held_out = demo.DEMO_SITES["A"]
    studies = plan_reports(SynthConfig(site="A", patients=patients, seed=seed,
                                       held_out_fraction=held_out))
    test = [_signature(r.labels) for split, r in studies if split == "test"]
    assert len(test) >= 1_001  # N = 1,000 exists
    counts = collections.Counter(test)
    matched = sum(1 for s in test if counts[s] - 1 >= 99)  # 99 distractors with its labels
    assert matched / len(test) > 0.5
    # the strongest matched group is not everything: other signatures exist and are excluded
    assert len(counts) > 20


def test_serve_hands_the_process_over_to_the_warm_launcher_on_loopback(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(os, "execv", lambda path, argv: calls.append((path, argv)))
    monkeypatch.setattr(os, "chdir", lambda path: None)
    monkeypatch.delenv("STREAMLIT_SERVER_ADDRESS", raising=False)
    demo.serve(tmp_path / "r.duckdb")
    path, argv = calls[-1]
    assert argv[1:3] == ["-m", "dashboard.serve"]
    assert argv[-2:] == ["--server.address", "127.0.0.1"]
    assert os.environ["RELINK_DB"] == str((tmp_path / "r.duckdb").resolve())
    # a container sets its own address (all of its interfaces); the flag must not override it
    monkeypatch.setenv("STREAMLIT_SERVER_ADDRESS", "0.0.0.0")
    demo.serve(tmp_path / "r.duckdb")
    assert "--server.address" not in calls[-1][1]


def test_summary_of_a_results_database_names_the_four_claims(seeded, monkeypatch):
    import shutil

    from engine.core.claims import NOT_MEASURABLE

    db = seeded.db
    # the demo's cohort names; the seeded database has one cohort, renamed here on a copy
    copy = db.parent / "demo-copy.duckdb"
    shutil.copy(db, copy)
    import duckdb

    con = duckdb.connect(str(copy))
    for table in ("relink_metrics", "utility", "relink_ranks", "items"):
        con.execute(f"UPDATE {table} SET cohort = 'site-a' WHERE cohort = ?", [seeded.cohort])
    con.close()
    text = demo.summarize(copy)
    for number in ("1.", "2.", "3.", "4."):
        assert f"\n{number} " in f"\n{text}"
    assert text.count("paper:") == 4 and text.count("measured:") == 4
    assert "re-linkage rises with specialisation -- " in text
    verdicts = [line.rsplit(" -- ", 1)[1] for line in text.splitlines() if " -- " in line]
    assert len(verdicts) == 4 and NOT_MEASURABLE.upper() in verdicts  # no N >= 100 stored here
    assert "site-b N=" not in text  # site-b has no rows: no transfer figure
