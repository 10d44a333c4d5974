"""`python -m engine readme`: the README's results tables written from a results database."""

from __future__ import annotations

import pytest

from engine import store
from engine.cli import main
from engine.readme import BEGIN, END, replace_block, results_markdown

README = f"# Title\n\nBefore the results.\n\n{BEGIN}\nold figures\n{END}\n\nAfter them.\n"


def _run(seeded, path, *extra):
    return main(["--db", str(seeded.db), "readme", "--readme", str(path), "--cohort",
                 seeded.cohort, "--external", "", *extra])


def test_replace_block_keeps_the_text_around_the_markers():
    out = replace_block(README, "new\n")
    assert out == README.replace("old figures", "new")
    with pytest.raises(Exception, match="expected one"):
        replace_block("no markers here", "x")
    with pytest.raises(Exception, match="expected one"):
        replace_block(f"{END}\n{BEGIN}\n", "x")


def test_tables_carry_the_databases_figures(seeded):
    text = results_markdown(seeded.db, cohort=seeded.cohort, external=None)
    rows = store.read_df(seeded.db, (
        "SELECT model, pool_size, lift, ci_low / chance AS lo, ci_high / chance AS hi "
        "FROM relink_metrics WHERE cohort = ? AND heads = 'original' AND split = 'test' "
        "AND direction = 'image_to_report' AND negatives = 'random' AND k = 1"),
        [seeded.cohort])
    for r in rows.itertuples():
        assert f"{r.lift:.1f} ({r.lo:.1f}–{r.hi:.1f})" in text, (r.model, r.pool_size)
    # every model has its row, the most specialised last; the DP grid has original, 1 and inf
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    ladder = [line.split(" | ")[0][2:] for line in lines if line.split(" | ")[0][2:]
              in seeded.models]
    assert ladder == list(seeded.models)
    assert any(line.startswith("| ε=1 |") for line in lines)
    assert any(line.startswith("| ε=∞ |") for line in lines)
    assert "runs finished" in text and "engine `" in text
    # the paper's four claims come first, one row each, with a verdict
    claims = text.split("**The ladder**", 1)[0]
    assert claims.startswith("**The reference paper's four claims**")
    assert [line.split(" | ")[0][2:4] for line in claims.splitlines()
            if line.startswith("| ")][1:] == ["1.", "2.", "3.", "4."]


def test_readme_is_rewritten_once_then_checked(seeded, tmp_path, capsys):
    path = tmp_path / "README.md"
    path.write_text(README, encoding="utf-8")
    assert _run(seeded, path, "--check") == 1  # the placeholder differs from the database
    assert path.read_text(encoding="utf-8") == README  # --check writes nothing
    assert _run(seeded, path) == 0
    first = path.read_text(encoding="utf-8")
    assert first.startswith("# Title\n\nBefore the results.\n\n")
    assert first.endswith("After them.\n")
    assert "old figures" not in first and "| model | epochs |" in first
    assert _run(seeded, path) == 0  # idempotent: same database, same bytes
    assert path.read_text(encoding="utf-8") == first
    assert "already up to date" in capsys.readouterr().out
    assert _run(seeded, path, "--check") == 0
    path.write_text(first.replace("| ε=1 |", "| ε=2 |"), encoding="utf-8")
    assert _run(seeded, path, "--check") == 1
    # the provenance line (engine, dates, CPU, numerics) is left out of the check: a database
    # made on another machine, another day, is checked on its figures alone
    line = next(x for x in first.splitlines() if x.startswith("_Written by"))
    assert "runs finished" in line and " on " in line
    path.write_text(first.replace(line, line.replace(" on ", " on another CPU, ")),
                    encoding="utf-8")
    assert _run(seeded, path, "--check") == 0


def test_readme_errors_are_one_line(seeded, tmp_path, capsys):
    path = tmp_path / "README.md"
    path.write_text("no markers\n", encoding="utf-8")
    assert _run(seeded, path) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "results:begin" in err and err.count("\n") == 1
    assert main(["--db", str(tmp_path / "none.duckdb"), "readme", "--readme", str(path)]) == 2
    assert "no results database" in capsys.readouterr().err
    path.write_text(README, encoding="utf-8")
    assert main(["--db", str(seeded.db), "readme", "--readme", str(path), "--cohort",
                 "nowhere"]) == 2
    assert "no attack results for cohort 'nowhere'" in capsys.readouterr().err


def test_transfer_table_lists_the_heads_applied_to_the_external_cohort(seeded, tmp_path):
    from report_fixtures import add_transfer_cohort, copy_db

    db = copy_db(seeded.db, tmp_path)
    add_transfer_cohort(db, model=seeded.specialist, source=seeded.cohort, name="site-ext")
    text = results_markdown(db, cohort=seeded.cohort, external="site-ext")
    assert f"**Transfer**: the heads of `{seeded.specialist}` trained on `{seeded.cohort}`" in text
    table = text.split("**Transfer**", 1)[1]
    rows = store.read_df(db, (
        "SELECT heads, pool_size, lift, ci_low / chance AS lo, ci_high / chance AS hi "
        "FROM relink_metrics WHERE cohort = 'site-ext' AND model = ? AND split = 'test' "
        "AND direction = 'image_to_report' AND negatives = 'random' AND k = 1 "
        "AND pool_size = (SELECT max(pool_size) FROM relink_metrics WHERE cohort = 'site-ext')"),
        [seeded.specialist])
    assert sorted(rows["heads"]) == ["1", "inf", "original"]
    for r in rows.itertuples():
        short = {"original": "original", "inf": "ε=∞"}.get(r.heads, f"ε={r.heads}")
        assert f"| {short} |" in table and f"{r.lift:.1f} ({r.lo:.1f}–{r.hi:.1f})" in table
    # without an external cohort (or with one that has no results) there is no transfer table
    assert "**Transfer**" not in results_markdown(db, cohort=seeded.cohort, external="nowhere")


def test_named_block_leaves_the_other_blocks_alone(seeded, tmp_path):
    path = tmp_path / "README.md"
    text = README + "\n<!-- study-results:begin -->\nstudy figures\n<!-- study-results:end -->\n"
    path.write_text(text, encoding="utf-8")
    assert _run(seeded, path, "--block", "study-results") == 0
    out = path.read_text(encoding="utf-8")
    assert "old figures" in out and "study figures" not in out and "| model | epochs |" in out
    assert _run(seeded, path, "--block", "study-results", "--check") == 0
    assert _run(seeded, path, "--block", "Bad Name") == 2


def test_dp_table_is_at_the_papers_pool_size_when_stored(seeded, monkeypatch):
    import engine.readme as readme

    text = results_markdown(seeded.db, cohort=seeded.cohort, external=None)
    assert "N = 10,000 is not stored" in text and "61.8% lower" in text
    sizes = store.read_df(seeded.db, "SELECT DISTINCT pool_size FROM relink_metrics "
                                     "WHERE cohort = ? ORDER BY 1", [seeded.cohort])["pool_size"]
    n = int(sizes.iloc[0])  # the smallest stored N stands in for 10,000
    monkeypatch.setattr(readme, "DP_N", n)
    text = results_markdown(seeded.db, cohort=seeded.cohort, external=None)
    assert f"k = 1) at N = {n:,}" in text and f"R@1 N={n:,} (95% CI)" in text
    r = store.read_df(seeded.db, (
        "SELECT heads, recall, ci_low, ci_high FROM relink_metrics WHERE cohort = ? AND "
        "model = ? AND split = 'test' AND direction = 'image_to_report' AND negatives = 'random' "
        "AND k = 1 AND pool_size = ?"), [seeded.cohort, seeded.specialist, n]).set_index("heads")
    ref = r.loc["original", "recall"]
    cut = (ref - r.loc["1", "recall"]) / ref
    row = next(line for line in text.splitlines() if line.startswith("| ε=1 |"))
    # the change is the paired one (both heads resampled together over patients) at that N
    from engine.core import decision
    from engine.verdicts import held_out_ranks

    con = store.connect_read(seeded.db)
    try:
        ranks = {h: held_out_ranks(con, seeded.cohort, seeded.specialist, h)
                 for h in ("original", "1")}
    finally:
        con.close()
    change = decision.heads_change(ranks, "original", "1", n)
    assert change.point == pytest.approx(-cut, abs=1e-9)  # the same queries as the table's rows
    assert change.low <= change.point <= change.high
    assert decision.change_text(change) in row


def test_study_stage_timings_come_from_the_study_runs(seeded, tmp_path):
    import json

    from engine.runs import Run, record_run
    from report_fixtures import copy_db

    db = copy_db(seeded.db, tmp_path)
    assert "Stages of the study run" not in results_markdown(db, cohort=seeded.cohort,
                                                             external=None)
    old = {"max_patients": 10}
    new = {"max_patients": None}
    for settings, stages in ((old, [("render", 5.0)]),
                             (new, [("render", 574.3), ("ladder", 1773.9)])):
        for name, seconds in stages:
            record_run(db, Run("study", None, seeded.cohort, {"study_stage": name,
                                                              "settings": settings}),
                       message=json.dumps({"seconds": seconds, "cpu_seconds": seconds * 1.5,
                                           "peak_mb": 1886.0, "what": f"{name} done"}))
    text = results_markdown(db, cohort=seeded.cohort, external=None)
    table = text.split("**Stages of the study run**", 1)[1]
    assert "| render | render done | 574 | 861 | 1,886 |" in table
    assert "| ladder | ladder done | 1,774 | 2,661 | 1,886 |" in table
    assert "| **all** | 2 stages | 2,348 | 3,522 | 1,886 |" in table  # the latest settings only


def test_the_repositorys_readme_has_each_block_once():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "results.md").read_text(
        encoding="utf-8")
    for block in ("results", "seed-spread", "study-results"):
        assert "new figures" in replace_block(text, "new figures", name=block)


def test_the_tables_do_not_depend_on_the_order_duckdb_returns_rows_in(seeded):
    """Rows of a query without ORDER BY come back in any order; the README must not follow it."""
    import engine.readme as readme

    want = results_markdown(seeded.db, cohort=seeded.cohort, external=None)
    con = store.connect_read(seeded.db)
    try:
        frame = readme._frame(con, "SELECT heads, epsilon FROM dp_runs", [])
        backwards = readme._frame(con, "SELECT heads, epsilon FROM dp_runs ORDER BY heads DESC", [])
    finally:
        con.close()
    assert list(frame["heads"]) == sorted(frame["heads"].astype(str))  # sorted when unordered
    assert list(backwards["heads"]) == sorted(backwards["heads"].astype(str), reverse=True)
    assert results_markdown(seeded.db, cohort=seeded.cohort, external=None) == want


def test_seed_figures_are_listed_with_numbers_read_as_numbers():
    from engine.readme import _natural

    keys = ["lift N=1,471", "lift N=100", "lift N=1,000", "lift N=10"]
    assert sorted(keys, key=_natural) == ["lift N=10", "lift N=100", "lift N=1,000",
                                          "lift N=1,471"]
