"""Audit report (DESIGN §3.7.6): the engine's HTML / PDF / JSON report, to read and download."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import data, ui

MIME = {"html": "text/html", "pdf": "application/pdf", "json": "application/json"}

ctx = ui.context()
st.title("Audit report")
ui.require_results(ctx)
ui.caption(ctx)
files = data.reports(ctx.db, ctx.token, ctx.cohort, ctx.model)
command = (f"`python -m engine report --model {ctx.model} --cohort {ctx.cohort} "
           "--format html,pdf,json`")
if files.empty:
    ui.empty(f"No audit report for this model and cohort yet. {command} writes one (`make demo` "
             "writes one for every model of the demo).")
    st.stop()

st.caption("The same figures as the other pages, with method, parameters and caveats, for a "
           f"compliance file. Written {files['written_at'].max():%Y-%m-%d %H:%M}; {command} "
           "rewrites it from the current results.")
columns = st.columns(len(files))
present = {}
for column, row in zip(columns, files.itertuples()):
    path = Path(row.path)
    with column:
        if path.exists():
            present[row.format] = path
            st.download_button(f"Download {row.format.upper()}", path.read_bytes(),
                               file_name=path.name, mime=MIME.get(row.format),
                               key=f"download-{row.format}", use_container_width=True)
        else:
            st.warning(f"{row.format.upper()} listed but missing on disk: `{path}`")
if "html" in present:
    # The report is self-contained (inline CSS and SVG figures, no scripts, every database
    # string escaped by the engine), so it is shown as it will be read.
    st.iframe(present["html"].read_text(encoding="utf-8"), height=900)
