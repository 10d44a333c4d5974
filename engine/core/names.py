"""How heads, epsilons, directions and splits are labelled and ordered.

A set of heads is labelled ``original`` (the model's own projection heads), ``backbone`` (no
heads: the frozen pre-projection features, the probe's sanity line), ``inf`` (retrained with the
DP code path but no clipping or noise) or an epsilon label such as ``0.34`` or ``8`` (retrained
with DP-SGD at that group-level epsilon). The same label is what the results tables store in
their ``heads`` column.
"""

from __future__ import annotations

import math

ORIGINAL = "original"
BACKBONE = "backbone"
NO_DP = "inf"

DIRECTION_NAMES = {"image_to_report": "image → report", "report_to_image": "report → image"}
SPLIT_NAMES = {"test": "held-out", "train": "members", "validate": "validation"}


def epsilon_label(epsilon: float | None) -> str:
    """The heads label of an epsilon: ``inf``, ``0.34``, ``1``, ``8`` (``unknown`` when missing).

    Args:
        epsilon: A group-level epsilon; infinity for retraining without DP.
    """
    if epsilon is None:
        return "unknown"
    value = float(epsilon)
    if math.isnan(value):
        return "unknown"
    return NO_DP if math.isinf(value) else f"{value:g}"


def heads_epsilon(heads: str) -> float | None:
    """The epsilon a heads label stands for (infinity for ``inf``); None for original/backbone."""
    heads = str(heads).partition("@")[0]  # a transferred heads key: the epsilon it was trained at
    if heads.startswith("adaptive+"):
        return None  # an attacker's heads (engine/adaptive.py), never a DP release
    heads = heads.partition("+")[0]  # the start's suffix (engine/dp/start.py): 0.34+original
    if heads == NO_DP:
        return math.inf
    try:
        value = float(heads)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def heads_sort_key(heads: str, *, descending: bool = False) -> tuple:
    """Order of heads in tables and sliders: backbone, original, epsilon ascending, inf, others.

    With `descending`, epsilons run from inf down to the smallest (least private first, as the
    audit report lists them).
    """
    if heads == BACKBONE:
        return (0, 0.0, "")
    if heads == ORIGINAL:
        return (1, 0.0, "")
    epsilon = heads_epsilon(heads)
    if epsilon is None:
        return (3, 0.0, str(heads))
    # one start's sweep after the other (the default start first), own heads before
    # transferred ones of the same epsilon
    start = str(heads).partition("@")[0].partition("+")[2]
    rank = 0 if not start else 1 if start.startswith("public-") else 2
    return (2, float(rank), -epsilon if descending else epsilon,
            str(heads).partition("@")[2])


def sort_heads(heads, *, descending: bool = False) -> list[str]:
    """Distinct heads labels in display order (`heads_sort_key`)."""
    return sorted({str(h) for h in heads}, key=lambda h: heads_sort_key(h, descending=descending))


def split_heads_key(heads: str) -> tuple[str, str | None]:
    """``(label, training cohort)`` of a shown-views ``heads_key``: ``1@site-a`` -> ("1", "site-a").

    Heads trained on another cohort (a transfer) carry ``@<cohort>``; the rest have None.
    """
    label, sep, cohort = str(heads).partition("@")
    return (label, cohort) if sep else (str(heads), None)


def heads_name(heads: str) -> str:
    """How a heads label reads in prose: original heads, retrained without DP, DP heads at ε."""
    label, source = split_heads_key(heads)
    if source is not None:
        return f"{heads_name(label)}, trained on {source}"
    if heads == ORIGINAL:
        return "original heads"
    if heads == NO_DP:
        return "retrained, no DP (ε = ∞)"
    if heads == BACKBONE:
        return "frozen backbone features"
    base, sep, start = str(heads).partition("+")
    if base == "adaptive":
        return f"adaptive attacker's heads ({_attacker(start)})"
    if sep:
        what = "retrained, no DP (ε = ∞)" if base == NO_DP else f"DP heads, ε = {base}"
        return f"{what}, {_start_words(start)}"
    return f"DP heads, ε = {heads}"


def _start_words(start: str) -> str:
    if start == "original":
        return "started from the model's own heads"
    if start.startswith("public-"):
        return f"started from heads fitted on {start[len('public-'):]}"
    return f"start {start}"


def _attacker(what: str) -> str:
    if what.startswith("public-"):
        return f"fitted on {what[len('public-'):]}"
    if what.startswith("known-") and what.endswith("pct"):
        return f"fitted on {what[len('known-'):-3]}% known held-out patients"
    return what


def heads_short(heads: str) -> str:
    """A short heads label for axes and table columns: original, ε=∞, ε=1 (ε=1 from A)."""
    label, source = split_heads_key(heads)
    if source is not None:
        return f"{heads_short(label)} from {source}"
    if heads in (ORIGINAL, BACKBONE):
        return heads
    base, sep, start = str(heads).partition("+")
    if base == "adaptive":
        return f"attacker {_attacker(start)}"
    short = "ε=∞" if base == NO_DP else f"ε={base}"
    if sep:
        return f"{short} ({'original' if start == 'original' else start} start)"
    return short
