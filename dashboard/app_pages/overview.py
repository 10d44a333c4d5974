"""Risk overview. For now: what the results database holds, with an honest empty state."""

from __future__ import annotations

import streamlit as st

from dashboard import data

st.title("Re-linkage risk overview")
path = st.session_state.get("db") or str(data.default_db())
state = data.db_state(path)

if not state.exists:
    st.info(
        "No results yet. Run `make demo` (or `python -m engine demo --no-serve`) to build the "
        "phantom cohorts and fill the results database, then reload this page."
    )
    st.stop()

try:
    counts = data.table_counts(path)
    cohorts = data.cohorts(path)
except data.ResultsUpdating:
    st.warning("Results are being updated by the engine; this page refreshes in a moment.")
    st.stop()

if cohorts.empty:
    st.info("The database holds no cohorts yet. Run `python -m engine cohort add ...` or `make demo`.")
else:
    st.subheader("Cohorts")
    st.dataframe(cohorts, hide_index=True)
metrics = counts.set_index("table")["rows"].to_dict() if not counts.empty else {}
if not metrics.get("relink_metrics"):
    st.info(
        "No re-linkage results yet: the attack stage has not run on this database "
        "(`python -m engine attack --model MODEL --cohort COHORT`)."
    )
st.subheader("Stored rows per table")
st.dataframe(counts, hide_index=True)
