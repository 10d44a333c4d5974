"""The claims docs/results.md and the demo print are the dashboard overview's claims."""

from __future__ import annotations

from dashboard import data, views
from engine.core.claims import claims_rows
from engine.verdicts import measure_claims


def test_engine_claims_equal_the_dashboards(seeded):
    db = seeded.db
    engine_rows = claims_rows(measure_claims(db, seeded.cohort))
    dashboard_rows = views.claims(str(db), data.db_state(db).token, seeded.cohort)
    assert engine_rows == dashboard_rows.to_dict("records")
    # the seeded database has DP heads: claim 4 is measured with paired changes, not n/a
    assert engine_rows[3]["measured"] != "n/a"
    assert "vs original" in engine_rows[3]["measured"]
