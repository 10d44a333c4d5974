"""The findings the README and the demo print are the dashboard overview's findings."""

from __future__ import annotations

from dashboard import data, views
from engine.core.findings import findings_rows
from engine.verdicts import measure_findings


def test_engine_findings_equal_the_dashboards(seeded):
    db = seeded.db
    engine_rows = findings_rows(measure_findings(db, seeded.cohort))
    dashboard_rows = views.findings(str(db), data.db_state(db).token, seeded.cohort)
    assert engine_rows == dashboard_rows.to_dict("records")
    # the seeded database has DP heads: finding 4 is measured with paired changes, not n/a
    assert engine_rows[3]["measured"] != "n/a"
    assert "vs original" in engine_rows[3]["measured"]
