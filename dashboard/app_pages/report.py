"""Audit report (docs/dashboard.md): the engine's HTML / PDF / JSON report, to read and download.

A path in the ``reports`` table is data: a file is offered only when `data.report_file` finds it
inside the engine's report folder. The HTML is shown in a frame sandboxed with no permissions at
all (no scripts, no same-origin access, no forms, popups or navigation of the page) and a
Content-Security-Policy that allows no load from the network: the engine's report needs none,
and a file put in its place could not use any.
"""

from __future__ import annotations

import html

import streamlit as st

from dashboard import data, ui

MIME = {"html": "text/html", "pdf": "application/pdf", "json": "application/json"}
HEIGHT = 900


def sandboxed(document: str, height: int = HEIGHT) -> str:
    """A page holding `document` in an ``<iframe sandbox="">`` (its markup attribute-escaped).

    Streamlit's own frame allows scripts and same-origin access; the inner frame's empty sandbox
    takes every permission away from the report inside it, and `ui.NO_LOADS_CSP` (set on the
    wrapper, which the ``srcdoc`` frame inherits, and again as the first element of the report
    itself) stops every load from the network: images, stylesheets, fonts, frames, media.
    """
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"{ui.csp_meta()}<style>html,body{{margin:0;"
            "height:100%}iframe{border:0;width:100%;height:100%}</style></head><body>"
            f'<iframe sandbox="" referrerpolicy="no-referrer" title="Audit report" '
            f'srcdoc="{html.escape(ui.with_csp(document), quote=True)}"></iframe></body></html>')


ctx = ui.context()
st.title("Audit report")
ui.require_results(ctx)
ui.caption(ctx)
files = data.reports(ctx.db, ctx.token, ctx.cohort, ctx.model)
command = ui.command(ui.engine_command("report", ctx.model, ctx.cohort, "--format html,pdf,json"))
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
    fmt = str(row.format).lower()
    path, why = data.report_file(ctx.db, row.path, fmt)
    with column:
        if path is not None:
            present[fmt] = path
            st.download_button(f"Download {ui.esc(fmt.upper())}", path.read_bytes(),
                               file_name=path.name, mime=MIME.get(fmt),
                               key=f"download-{fmt}", width="stretch")
        else:
            st.warning(f"{ui.esc(fmt.upper())} report not shown: {ui.esc(why)}. Stored path: "
                       f"{ui.command(row.path)}")
if "html" in present:
    st.iframe(sandboxed(present["html"].read_text(encoding="utf-8", errors="replace")),
              height=HEIGHT)
