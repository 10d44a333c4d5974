"""Cells a spreadsheet would run as formulas, made inert in every CSV the project writes.

A spreadsheet program reads a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a formula
(``=HYPERLINK(...)``, ``-2+3+cmd|' /C calc'!A0``), and tab or carriage return can hide such a
start. Following OWASP's advice on CSV injection, such a text cell gets a leading apostrophe,
which spreadsheets show as text and do not evaluate: ``'=HYPERLINK(...)``. A cell that is a
plain number (``-1``, ``+0.5``, ``-2e-3``) is left alone, and so are numeric columns, so values
read back unchanged.

Used by the dashboard's downloads (`dashboard.ui.download`) and the engine's CSV files
(`engine.study`). Standard library only (frames are handled through their own methods), so the
dashboard imports it without loading torch.
"""

from __future__ import annotations

import re

# First characters that make a spreadsheet treat a cell as a formula (OWASP, CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def neutralise_cell(value):
    """`value` with a leading ``'`` when it is text a spreadsheet would run; else unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_START) \
            and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def neutralise_frame(frame):
    """A copy of a pandas DataFrame whose text cells and column names are `neutralise_cell`-ed.

    Only object and string columns are touched; numbers, booleans and dates stay as they are.
    """
    out = frame.copy()
    for col in out.columns:
        kind = getattr(out[col].dtype, "kind", "O")
        if kind in ("O", "U", "S") or str(out[col].dtype) in ("string", "str"):
            out[col] = out[col].map(neutralise_cell)
    out.columns = [neutralise_cell(str(c)) if isinstance(c, str) else c for c in out.columns]
    return out


def safe_csv(frame, path_or_buffer=None, **kwargs):
    """``frame.to_csv(...)`` of `neutralise_frame(frame)`: the one way the project writes CSV.

    Returns the text when `path_or_buffer` is None, as pandas does.
    """
    kwargs.setdefault("index", False)
    return neutralise_frame(frame).to_csv(path_or_buffer, **kwargs)
