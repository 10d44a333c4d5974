"""Streamlit entry point: owns the frame (title, sidebar, navigation) and the shared state.

Run with `streamlit run dashboard/app.py` (or `make demo`). Pages live in `app_pages/` and stay
thin; every read goes through `data.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dashboard import data  # noqa: E402

st.set_page_config(page_title="Re-linkage audit", page_icon="🩻", layout="wide")

PAGES = [
    st.Page("app_pages/overview.py", title="Risk overview", url_path="overview", default=True),
]

state = data.db_state()
st.session_state["db"] = state.path
with st.sidebar:
    st.caption(f"Results: `{state.path}`" if state.exists else "No results database yet")

st.navigation(PAGES).run()
