"""Streamlit entry point: owns the frame (title, sidebar, navigation) and the shared state.

Run with `streamlit run dashboard/app.py` (or `make demo`). The sidebar picks the cohort and the
model once (and the heads on the pages that show one set of heads); the choice reaches the pages
as `ui.Context` in ``st.session_state["ctx"]``. Pages live in `app_pages/` and stay thin; every
read goes through `data.py`. A read that meets the engine's write lock ends the run with a
friendly notice instead of a traceback.
"""

from __future__ import annotations

import streamlit as st

try:
    # installed (`pip install .`), or on the path: `engine demo` puts the folder holding the
    # packages on PYTHONPATH, and `python -m streamlit` run in a checkout has it on sys.path
    from dashboard import data, logic, ui
except ModuleNotFoundError:  # `streamlit run dashboard/app.py` in a checkout, not installed
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from dashboard import data, logic, ui

st.set_page_config(page_title="Re-linkage audit", page_icon="🩻", layout="wide")

def _to_overview() -> None:
    """``/overview``: the default page is served at ``/``, so its own path would be "not found"."""
    st.switch_page(PAGES[0])


PAGES = [
    # The default page's url_path is never shown (it lives at "/"); "/overview" is the alias
    # page below.
    st.Page("app_pages/overview.py", title="Risk overview", icon=":material/shield:",
            url_path="risk-overview", default=True),
    st.Page("app_pages/explorer.py", title="Re-linkage explorer", icon=":material/search:",
            url_path="explorer"),
    st.Page("app_pages/joint_space.py", title="Joint space", icon=":material/scatter_plot:",
            url_path="joint-space"),
    st.Page("app_pages/privacy.py", title="Privacy / utility", icon=":material/tune:",
            url_path="privacy"),
    st.Page("app_pages/hard_negatives.py", title="Hard negatives", icon=":material/filter_alt:",
            url_path="hard-negatives"),
    st.Page("app_pages/per_record.py", title="Per-record risk", icon=":material/person_search:",
            url_path="per-record"),
    st.Page("app_pages/report.py", title="Audit report", icon=":material/description:",
            url_path="report"),
    st.Page("app_pages/runs.py", title="Runs", icon=":material/history:", url_path="runs"),
    st.Page(_to_overview, title="Risk overview", url_path="overview", visibility="hidden"),
]
# Pages that show one set of heads get the sidebar's heads picker.
HEADS_PAGES = {"explorer", "joint-space", "hard-negatives", "per-record"}


def sidebar(state: data.DbState, page_path: str) -> ui.Context:
    """Cohort, model (and heads) pickers; returns what they chose."""
    ctx = ui.Context(state.path, state.token, state.exists)
    if not state.exists:
        st.caption("Results file unreadable" if state.problem else "No results database yet")
        return ctx
    cohorts = data.cohorts(state.path, state.token)
    if cohorts.empty:
        st.caption(f"Results: {ui.command(state.path)} (no cohorts yet)")
        return ctx
    url = st.query_params  # a shared link (?cohort=...&model=...&heads=...) opens that view
    names = list(cohorts["cohort"])
    _from_url("cohort", names, url)
    cohort = st.selectbox("Cohort", names, key="cohort")
    models = data.models(state.path, state.token, cohort)
    if models.empty:
        st.caption(f"Results: {ui.command(state.path)}")
        return ui.Context(state.path, state.token, True, cohort)
    # Default: the most specialised model (listed last), the one whose risk matters most.
    listed = list(models["model"])
    if st.session_state.get("model") not in listed:
        st.session_state.pop("model", None)
    if not _from_url("model", listed, url) and "model" not in st.session_state:
        st.session_state["model"] = listed[-1]
    model = st.selectbox("Model", listed, key="model")
    about = models.set_index("model").loc[model]
    st.caption(ui.esc(logic.model_about(about.get("specialization"), about.get("description"))))
    if url.get("heads") and "heads_choice" not in st.session_state:
        st.session_state["heads_choice"] = url.get("heads")
    heads = st.session_state.get("heads_choice", "original")
    if page_path in HEADS_PAGES:
        options = logic.epsilon_grid([], data.heads(state.path, state.token, cohort, model))
        # The picker is not drawn on every page, so its widget state would be dropped in between;
        # the choice is kept under another key and handed back when the picker reappears.
        if st.session_state.get("heads") not in options:
            st.session_state["heads"] = heads if heads in options else "original"
        heads = st.selectbox("Heads", options, key="heads", format_func=logic.heads_name,
                             help="Which projection heads produced the embeddings: the model's "
                                  "own, or heads retrained with DP at that epsilon.")
        st.session_state["heads_choice"] = heads
    st.caption(f"Results: {ui.command(state.path)}")
    # the choice in the address bar, so a reload or a shared link opens the same view
    st.query_params.update({"cohort": cohort, "model": model, "heads": heads})
    return ui.Context(state.path, state.token, True, cohort, model, heads)


def _from_url(key: str, options: list[str], url) -> bool:
    """On a session's first run, take the widget's value from the URL when it is an option."""
    seen = f"{key}__from_url"
    if st.session_state.get(seen):
        return False
    st.session_state[seen] = True
    value = url.get(key)
    if value in options:
        st.session_state[key] = value
        return True
    return False


page = st.navigation(PAGES)
notice = st.empty()
try:
    with st.sidebar:
        st.session_state["ctx"] = sidebar(data.db_state(), page.url_path)
    page.run()
except data.ResultsUpdating:
    notice.warning(ui.UPDATING, icon="⏳")
    st.button("Reload", key="reload-after-update")
