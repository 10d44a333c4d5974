"""Shared pieces of the screen: the page context, empty states, downloadable tables, text.

The entry point (`app.py`) builds the `Context` from the sidebar once per run; pages read it with
`context()` and call `require_results` before anything else, so every page has the same honest
empty state when nothing has been computed yet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from dashboard import data

UPDATING = ("Results are being updated by the engine right now. This page will show them as "
            "soon as the engine has finished writing; reload in a moment.")


@dataclass(frozen=True)
class Context:
    """What the sidebar chose, shared by every page.

    Attributes:
        db: Results database path.
        token: Cache token of the database (changes whenever the file does).
        exists: Whether the database file exists.
        cohort: Chosen cohort, or None when none is registered.
        model: Chosen model, or None when the cohort has no attack results.
        heads: Chosen heads (``original`` or an epsilon label) for the per-heads pages.
    """

    db: str
    token: str
    exists: bool
    cohort: str | None = None
    model: str | None = None
    heads: str = "original"


def context() -> Context:
    ctx = st.session_state.get("ctx")
    if ctx is None:  # a page run on its own (never in the app): read the default database
        state = data.db_state()
        ctx = Context(state.path, state.token, state.exists)
    return ctx


def empty(message: str) -> None:
    """An explicit empty state: what is missing and the command that fills it."""
    st.info(message, icon="ℹ️")


def require_results(ctx: Context, *, what: str = "attack") -> None:
    """Stop the page with an empty state unless a database, a cohort and a model exist."""
    if not ctx.exists:
        empty(f"No results database at `{ctx.db}` yet. Run `make demo` (or "
              "`python -m engine demo --no-serve`) to build the phantom cohorts and fill it, "
              "or point `RELINK_DB` at an existing results file, then reload this page.")
        st.stop()
    if ctx.cohort is None:
        empty("The database holds no cohorts yet. Register one with `python -m engine cohort add "
              "--name NAME --format mimic-cxr-jpg --root DIR`, or run `make demo`.")
        st.stop()
    if ctx.model is None and what == "attack":
        empty(f"No re-linkage results for cohort `{ctx.cohort}` yet: the attack stage has not run. "
              f"Run `python -m engine attack --model MODEL --cohort {ctx.cohort}` "
              "(or `make demo`).")
        st.stop()


def caption(ctx: Context, *, heads: bool = False) -> None:
    """One line saying which cohort, model (and heads) the page shows."""
    parts = [f"cohort **{ctx.cohort}**"]
    if ctx.model:
        parts.append(f"model **{ctx.model}**")
    if heads:
        parts.append(f"heads **{ctx.heads}**")
    st.caption(" · ".join(parts))


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "table"


def table(frame: pd.DataFrame, name: str, *, key: str | None = None, select: bool = False,
          height: int | str = "auto", column_config: dict | None = None, **kwargs):
    """A dataframe with a CSV download button under it.

    Args:
        frame: What to show (and download).
        name: File name stem of the download; also the default widget key.
        select: Single-row selection that reruns the page; returns the event.
        height: ``"auto"`` fits a short table to its rows and scrolls a long one.
    """
    key = key or _slug(name)
    if height == "auto" and len(frame) <= 25:
        height = "content"
    if select:
        kwargs.update(key=key, on_select="rerun", selection_mode="single-row")
    event = st.dataframe(frame, hide_index=True, width="stretch", height=height,
                         column_config=column_config, **kwargs)
    st.download_button(
        f"Download {name} (CSV)", frame.to_csv(index=False).encode("utf-8"),
        file_name=f"{_slug(name)}.csv", mime="text/csv", key=f"download-{key}",
        icon=":material/download:",
    )
    return event


def report_text(text: str | None, *, height: int | None = None) -> None:
    """A report, always as plain text (never Markdown or HTML)."""
    st.code(text or "(empty report)", language=None, wrap_lines=True, height=height)
