"""Runs: provenance of every stored figure (docs/dashboard.md)."""

from __future__ import annotations

import json

import streamlit as st

from dashboard import data, logic, ui

ctx = ui.context()
st.title("Runs")
if not ctx.exists:
    ui.require_results(ctx)

st.subheader("Stage runs")
runs = data.runs(ctx.db, ctx.token)
if runs.empty:
    ui.empty("No stage has run on this database yet. `make demo` runs every stage; or start with "
             "`python -m engine cohort add ...` and `python -m engine attack ...`.")
else:
    st.caption("Every computation is a stored run with its configuration and code version; a "
               "rerun with the same configuration reuses it. Select a run to see its "
               "configuration.")
    ui.table(runs.drop(columns=["config_json"]), "runs", key="runs_pick", select=True, height=300,
             column_config={"seconds": st.column_config.NumberColumn(format="%.1f")})
    row = logic.selected_row(st.session_state.get("runs_pick"))
    if row is not None and row < len(runs):
        chosen = runs.iloc[row]
        st.markdown(f"**Configuration of {ui.command(chosen['run_id'])}**")
        try:
            st.json(json.loads(chosen["config_json"]))
        except (TypeError, ValueError):
            st.code(str(chosen["config_json"]), language=None)

st.subheader("Cohorts")
cohorts = data.cohorts(ctx.db, ctx.token)
if cohorts.empty:
    ui.empty("No cohorts registered: `python -m engine cohort add --name NAME --format FORMAT "
             "--root DIR` (or `make demo`).")
else:
    ui.table(cohorts.drop(columns=["problems_json"]), "cohorts")
    name = st.selectbox("Skipped inputs of cohort", list(cohorts["cohort"]), key="runs_cohort")
    problems = logic.problems_table(cohorts.set_index("cohort").loc[name, "problems_json"])
    if problems.empty:
        st.caption(f"Cohort {ui.command(name)} was registered without problems.")
    else:
        ui.table(problems, f"problems {name}")

st.subheader("Stored rows per table")
ui.table(data.table_counts(ctx.db, ctx.token), "row counts")
