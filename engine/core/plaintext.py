"""Invisible characters made visible wherever a stored string is shown to a person.

Reports and ids are data from a cohort's files. Two kinds of characters in them would change
what a reader sees without being seen themselves:

* **Control characters** (C0 and C1, NUL included, but not tab, line feed or carriage return):
  a NUL reaches an HTML file raw and makes matplotlib warn; others move the cursor in a
  terminal.
* **Bidirectional controls** (U+202A-U+202E embeddings and overrides, U+2066-U+2069 isolates,
  U+200E/U+200F marks, U+061C): a right-to-left override shows ``evif si sisylana`` as
  ``analysis is five``.

`visible` replaces each with a visible marker such as ``⟦U+202E⟧``, so the text reads in its
stored order and the reader can see that something was there. The dashboard (every Markdown
text, report box and table) and the report's HTML and PDF apply it; the stored data and the
report's JSON keep the exact characters (JSON escapes them).

Standard library only.
"""

from __future__ import annotations

import re

_HIDDEN = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _marker(match: re.Match) -> str:
    return f"⟦U+{ord(match.group(0)):04X}⟧"


def visible(value):
    """`value` with control and bidi characters replaced by markers; non-strings unchanged."""
    if isinstance(value, str) and _HIDDEN.search(value):
        return _HIDDEN.sub(_marker, value)
    return value


def has_hidden(text: str) -> bool:
    """True when `text` holds a character `visible` would replace."""
    return isinstance(text, str) and _HIDDEN.search(text) is not None


def visible_tree(value):
    """`visible` over every string in nested dicts and lists (keys included)."""
    if isinstance(value, dict):
        return {visible_tree(k): visible_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [visible_tree(v) for v in value]
    if isinstance(value, tuple):
        return tuple(visible_tree(v) for v in value)
    return visible(value)


def visible_frame(frame):
    """A copy of a pandas DataFrame with `visible` applied to its text cells and column names
    (the frame is returned as is when it holds nothing to replace)."""
    columns = [c for c in frame.columns
               if getattr(frame[c].dtype, "kind", "O") in ("O", "U", "S")
               or str(frame[c].dtype) in ("string", "str")]
    hit = any(frame[c].map(has_hidden).any() for c in columns) or \
        any(has_hidden(c) for c in frame.columns if isinstance(c, str))
    if not hit:
        return frame
    out = frame.copy()
    for col in columns:
        out[col] = out[col].map(visible)
    out.columns = [visible(c) for c in out.columns]
    return out
