"""Shared pieces of the screen: the page context, empty states, downloadable tables, text.

The entry point (`app.py`) builds the `Context` from the sidebar once per run; pages read it with
`context()` and call `require_results` before anything else, so every page has the same honest
empty state when nothing has been computed yet.

Database strings are data. This module is the one place where they reach the page: `esc` turns
any value into literal Markdown text (no links, emphasis, HTML, maths or Streamlit directives),
`command` puts one into a code span, and `report_text` shows long text with `st.text`; all
three, and `table`, show control and bidirectional characters as visible markers. Pages
interpolate values into Markdown-rendering calls (`st.markdown`, `st.caption`, `st.info`, widget
labels, ...) only through these or through number formatting; `tests/test_dashboard.py` reads
every page's source and fails on anything else.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from dashboard import data
from engine.core.plaintext import visible, visible_frame

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


# Characters with a meaning anywhere in a line of (GitHub-flavoured) Markdown or in Streamlit's
# extensions (:colour[...] directives, :material/icons:, $maths$); a backslash makes each literal.
_INLINE = re.compile(r"([\\`*_\[\]<>$~|:@&])")
# What Streamlit's Markdown turns into a link whatever the escaping (GFM autolink literals): a
# URL, a www. name, an e-mail address. Only such words become code spans; "Recall@1" stays prose.
_LINKABLE = re.compile(r"(?i)(\S*://\S*|\bwww\.\S+|\S*mailto:\S*"
                       r"|[^\s@]*@[^\s@]*[a-z0-9-]\.[a-z0-9]\S*)")
# What starts a block only at the beginning of a line (headings, lists, quotes, tables).
_LEADING = re.compile(r"^(\s*)([#+=>-]|\d+(?=[.)]))")


def esc(value) -> str:
    """Any value as literal Markdown text, on one line.

    Line breaks become spaces (a value never starts a block of its own), Markdown and Streamlit
    syntax characters are backslash-escaped; a word that is a URL, a ``www.`` name or an e-mail
    address becomes a code span (Streamlit links those even when escaped); any other ``@`` (as in
    "Recall@1") is an escaped character of prose. ``None`` reads as an empty string. Control and
    bidirectional characters are shown as markers (`engine.core.plaintext.visible`). Use it for
    every database string shown in a Markdown-rendering element.
    """
    text = "" if value is None else visible(str(value))
    text = re.sub(r"\s+", " ", text)
    if _LINKABLE.search(text):
        # Streamlit links URLs, www. names and e-mail addresses even when escaped; a code span
        # is never linked, so each such word is shown as code and the rest as escaped text.
        parts = _LINKABLE.split(text)
        return "".join(command(p) if i % 2 else _plain(p, first=i == 0)
                       for i, p in enumerate(parts) if p)
    return _plain(text, first=True)


def _plain(text: str, *, first: bool) -> str:
    """Escaped prose; `first`: the text starts the value, so a block marker is escaped too."""
    text = _INLINE.sub(r"\\\1", text)
    if not first:
        return text
    match = _LEADING.match(text)
    if match:
        if match.group(2)[0].isdigit():  # "1." / "1)" starts an ordered list
            end = match.end()
            text = text[:end] + "\\" + text[end:]
        else:
            text = text[:match.start(2)] + "\\" + text[match.start(2):]
    return text


def command(text: str) -> str:
    """A code span (e.g. a command to run) holding `text` literally, whatever it contains."""
    text = re.sub(r"\s+", " ", visible(str(text)))
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or longest else ""
    return f"{fence}{pad}{text}{pad}{fence}"


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
    if not ctx.exists and bad_database_notice(ctx.db):
        st.stop()
    if not ctx.exists:
        empty(f"No results database at {command(ctx.db)} yet. Run `make demo` (or "
              "`python -m engine demo --no-serve`) to build the phantom cohorts and fill it, "
              "or point `RELINK_DB` at an existing results file, then reload this page.")
        st.stop()
    if ctx.cohort is None:
        empty("The database holds no cohorts yet. Register one with `python -m engine cohort add "
              "--name NAME --format mimic-cxr-jpg --root DIR`, or run `make demo`.")
        st.stop()
    if ctx.model is None and what == "attack":
        empty(f"No re-linkage results for cohort {command(ctx.cohort)} yet: the attack stage has "
              "not run. Run "
              f"{command(engine_command('attack', 'MODEL', ctx.cohort))} (or `make demo`).")
        st.stop()


# A Content-Security-Policy that lets a document load nothing from anywhere: only its own inline
# styles and data: images and fonts (the engine's HTML report has its figures as data: URIs).
NO_LOADS_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; "
                "base-uri 'none'; form-action 'none'")
_DOCTYPE = re.compile(r"^\ufeff?\s*<!doctype[^>]*>", re.IGNORECASE)


def csp_meta() -> str:
    """The `NO_LOADS_CSP` as a ``<meta http-equiv>`` element."""
    return f'<meta http-equiv="Content-Security-Policy" content="{NO_LOADS_CSP}">'


def with_csp(document: str) -> str:
    """`document` with `csp_meta` as its first element (after the doctype, if any).

    A policy in a meta element covers only what comes after it, so nothing in the document can
    come before this one; a policy of the document's own can only narrow it further.
    """
    match = _DOCTYPE.match(document)
    end = match.end() if match else 0
    return document[:end] + csp_meta() + document[end:]


def bad_database_notice(path: str) -> bool:
    """Show why the results file at `path` cannot be read, if it cannot; True when shown."""
    problem = data.db_state(path).problem
    if not problem:
        return False
    st.error(esc(problem), icon="⚠️")
    return True


def engine_command(stage: str, model: str | None, cohort: str | None, *extra: str) -> str:
    """``python -m engine STAGE --model M --cohort C ...`` with each value shell-quoted."""
    parts = ["python", "-m", "engine", stage]
    if model is not None:
        parts += ["--model", model if model == "MODEL" else shlex.quote(model)]
    if cohort is not None:
        parts += ["--cohort", shlex.quote(cohort)]
    return " ".join(parts + list(extra))


def caption(ctx: Context, *, heads: bool = False) -> None:
    """One line saying which cohort, model (and heads) the page shows."""
    parts = [f"cohort **{esc(ctx.cohort)}**"]
    if ctx.model:
        parts.append(f"model **{esc(ctx.model)}**")
    if heads:
        parts.append(f"heads **{esc(ctx.heads)}**")
    st.caption(" · ".join(parts))


def picked(key: str, ids) -> int | None:
    """Position in `ids` of the item picked in the selectable table `key`, followed by id.

    A table's selection is a row *position*; after a search, a filter or a heads change the same
    position holds another item. So the pick is remembered as an id: a new tick by the user is
    read against the ids listed when it was made, and before the table is drawn again its tick
    is moved to wherever that id now is (or to the first row when it is no longer listed). The
    tick and the detail below the table therefore always show the same item.

    Call it before drawing the table with ``table(..., key=key, select=True)``.

    Returns:
        The row to show (None when `ids` is empty).
    """
    ids = [str(i) for i in ids]
    memo_key = f"{key}__picked"
    memo = st.session_state.get(memo_key) or {"ids": [], "row": None, "id": None}
    row = _selected_row(st.session_state.get(key))
    chosen = memo["id"]
    if row is not None and row != memo["row"] and row < len(memo["ids"]):
        chosen = memo["ids"][row]  # the user ticked a row of the list as it was drawn
    if not ids:
        st.session_state[memo_key] = {"ids": [], "row": None, "id": chosen}
        return None
    position = ids.index(chosen) if chosen in ids else 0
    if row != position:
        st.session_state[key] = {"selection": {"rows": [position], "columns": [], "cells": []}}
    st.session_state[memo_key] = {"ids": ids, "row": position, "id": ids[position]}
    return position


def _selected_row(state) -> int | None:
    try:
        rows = state["selection"]["rows"]
        return int(rows[0]) if rows else None
    except (KeyError, TypeError, IndexError, ValueError):
        return None


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "table"


def table(frame: pd.DataFrame, name: str, *, key: str | None = None, select: bool = False,
          height: int | str = "auto", column_config: dict | None = None, **kwargs):
    """A dataframe with a CSV download button under it.

    Args:
        frame: What to show (and download).
        name: File name stem of the download; also the default widget key.
        select: Single-row selection that reruns the page; returns the event. ``"required"``
            keeps one row always ticked (use with `picked`).
        height: ``"auto"`` fits a short table to its rows and scrolls a long one.
    """
    key = key or _slug(name)
    if height == "auto" and len(frame) <= 25:
        height = "content"
    if select:
        kwargs.update(key=key, on_select="rerun",
                      selection_mode="single-row-required" if select == "required"
                      else "single-row")
    kwargs.setdefault("placeholder", "—")  # a missing value reads as a dash, not "None"
    event = st.dataframe(visible_frame(frame), hide_index=True, width="stretch", height=height,
                         column_config=column_config, **kwargs)
    download(frame, name, key=key)
    return event


def download(frame: pd.DataFrame, name: str, *, key: str | None = None) -> None:
    """A button that downloads `frame` as ``<name>.csv``.

    The CSV is written when the button is clicked, not on every run (a table of thousands of
    rows took a third of a second per rerun to serialise). Text cells a spreadsheet would run as
    formulas are neutralised (`engine.core.spreadsheet`).
    """
    from engine.core.spreadsheet import safe_csv

    key = key or _slug(name)
    st.download_button(
        f"Download {esc(name)} (CSV)", lambda: safe_csv(frame).encode("utf-8"),
        file_name=f"{_slug(name)}.csv", mime="text/csv", key=f"download-{key}",
        icon=":material/download:",
    )


def _cell(value, fmt=None) -> str:
    """One cell of a static table as literal Markdown text: `fmt` for a number, "—" for none."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return "—"
    if fmt is not None and not isinstance(value, str):
        value = fmt(value)
    text = esc(value)
    # a pipe ends a table cell, even inside a code span, unless escaped (GFM tables)
    return re.sub(r"(?<!\\)\|", r"\\|", text)


def static_table(frame: pd.DataFrame, name: str, *, formats: dict | None = None,
                 key: str | None = None) -> None:
    """A short table drawn as one block of static text, with a CSV download of its values.

    A Markdown table: the browser draws it in a fraction of the time `st.dataframe`'s grid
    takes to load, and as one element rather than one per cell as `st.table` does
    (docs/dashboard.md, "Latency"). Every header and cell goes through `esc` (after `formats`,
    a column -> number formatter mapping), so a value is text, never Markdown; a missing value
    reads as a dash.
    """
    formats = formats or {}
    header = [_cell(c) for c in frame.columns]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for values in frame.itertuples(index=False):
        rows.append("| " + " | ".join(_cell(v, formats.get(c))
                                      for c, v in zip(frame.columns, values)) + " |")
    st.markdown("\n".join(rows))
    download(frame, name, key=key)


def report_text(text: str | None, *, height: int | None = None) -> None:
    """A report, always as plain text (`st.text`: no Markdown, no HTML), in a bordered box that
    scrolls past `height` pixels.

    Not `st.code`: its syntax highlighter is a 1.5 MB script the browser loads and runs the first
    time a page shows one (0.3 s of a box selection's 1.3 s on the reference machine).
    """
    box = st.container(height=height, border=True) if height else st.container(border=True)
    box.text(visible(text) or "(empty report)", width="stretch")
