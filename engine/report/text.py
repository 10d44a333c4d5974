"""How numbers and labels read in the report (shared by the document, HTML and PDF).

Every function takes a plain number (or None) and returns a string; a missing or non-finite
value reads ``n/a`` so a gap in the results never turns into an exception or a ``nan``.
"""

from __future__ import annotations

import math

NA = "n/a"

DIRECTION_NAMES = {"image_to_report": "image → report", "report_to_image": "report → image"}
SPLIT_NAMES = {"test": "held-out", "train": "members", "validate": "validation"}


def finite(value) -> bool:
    """True for a real, finite number."""
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def percent(value) -> str:
    """A probability as a percentage with sensible precision: 14%, 2.3%, 0.041%."""
    if not finite(value):
        return NA
    pct = 100.0 * float(value)
    if pct == 0:
        return "0%"
    if abs(pct) >= 10:
        return f"{pct:.0f}%"
    digits = max(0, 1 - int(math.floor(math.log10(abs(pct)))))
    return f"{pct:.{digits}f}%"


def percent_range(low, high) -> str:
    """An interval of probabilities: ``50–73%`` (``n/a`` when either end is missing)."""
    if not (finite(low) and finite(high)):
        return NA
    a, b = percent(low), percent(high)
    return f"{a[:-1]}–{b}"


def points(value) -> str:
    """A difference of probabilities in percentage points: ``+4.2 pp``."""
    if not finite(value):
        return NA
    return f"{100.0 * float(value):+.1f} pp".replace("-", "−")


def times(value) -> str:
    """A lift: ``14×``, ``2.3×``."""
    if not finite(value):
        return NA
    v = float(value)
    return f"{v:.0f}×" if v >= 10 else f"{v:.1f}×"


def times_range(low, high) -> str:
    """An interval of lifts: ``9.5–14×``."""
    if not (finite(low) and finite(high)):
        return NA
    return f"{times(low)[:-1]}–{times(high)}"


def auroc(value) -> str:
    """An AUROC as the study reports it: ``79.63%``."""
    if not finite(value):
        return NA
    return f"{100.0 * float(value):.2f}%"


def reduction(value) -> str:
    """A relative reduction: ``62% lower`` / ``5% higher``."""
    if not finite(value):
        return NA
    v = 100.0 * float(value)
    if abs(v) < 0.5:
        return "no change"
    return f"{abs(v):.0f}% {'lower' if v > 0 else 'higher'}"


def general(value, digits: int = 3) -> str:
    """A parameter value with `digits` significant digits; ``∞`` for infinity."""
    if value is None:
        return NA
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return NA
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    return f"{v:.{digits}g}"


def scientific(value) -> str:
    """A small probability such as delta: ``6.0e-06``."""
    if not finite(value):
        return NA
    return f"{float(value):.1e}"


def integer(value) -> str:
    """A count with thousands separators."""
    if not finite(value):
        return NA
    return f"{int(value):,}"


def heads_name(heads: str) -> str:
    """How a heads label reads: original heads, retrained without DP, DP heads at epsilon."""
    if heads == "original":
        return "original heads"
    if heads == "inf":
        return "retrained, no DP (ε = ∞)"
    if heads == "backbone":
        return "frozen backbone features"
    return f"DP heads, ε = {heads}"


def heads_short(heads: str) -> str:
    """A short heads label for axes and table columns: original, ε=∞, ε=1."""
    if heads == "original":
        return "original"
    if heads == "backbone":
        return "backbone"
    return "ε=∞" if heads == "inf" else f"ε={heads}"


def risk_level(lift) -> str:
    """A coarse verbal scale of the lift over chance."""
    if not finite(lift):
        return "unknown"
    v = float(lift)
    if v < 1.5:
        return "near chance"
    if v < 5:
        return "elevated"
    if v < 20:
        return "high"
    return "very high"
