"""How numbers read wherever a person sees them (dashboard, report, README tables).

Every function takes a plain number (or None) and returns a string; a missing or non-finite value
reads ``n/a``, so a gap in the results never turns into an exception, ``nan`` or ``None``.
"""

from __future__ import annotations

import math

NA = "n/a"


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
    # two significant digits below 10%
    digits = max(0, 1 - int(math.floor(math.log10(abs(pct)))))
    return f"{pct:.{digits}f}%"


def percent_range(low, high) -> str:
    """An interval of probabilities: ``50–73%`` (``n/a`` when either end is missing)."""
    if not (finite(low) and finite(high)):
        return NA
    return f"{percent(low)[:-1]}–{percent(high)}"


def points(value) -> str:
    """A difference of probabilities in percentage points: ``+4.2 pp``."""
    if not finite(value):
        return NA
    return f"{100.0 * float(value):+.1f} pp".replace("-", "−")


def times(value) -> str:
    """A lift over chance: ``14×``, ``2.3×``."""
    if not finite(value):
        return NA
    v = float(value)
    return f"{v:.0f}×" if abs(v) >= 10 else f"{v:.1f}×"


def times_range(low, high) -> str:
    """An interval of lifts: ``9.5–14×``."""
    if not (finite(low) and finite(high)):
        return NA
    return f"{times(low)[:-1]}–{times(high)}"


def auroc(value) -> str:
    """An AUROC as the reference paper reports it, two decimals of a percent: ``79.63%``."""
    if not finite(value):
        return NA
    return f"{100.0 * float(value):.2f}%"


def reduction(value) -> str:
    """A relative reduction: ``62% lower`` / ``5% higher`` / ``no change``."""
    if not finite(value):
        return NA
    v = 100.0 * float(value)
    if abs(v) < 0.5:
        return "no change"
    return f"{abs(v):.0f}% {'lower' if v > 0 else 'higher'}"


def relative_reduction(value, reference) -> float:
    """``(reference - value) / reference``: 0.62 means 62% lower than `reference` (NaN if none)."""
    if not (finite(value) and finite(reference)) or float(reference) == 0:
        return float("nan")
    return (float(reference) - float(value)) / float(reference)


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
    """A count with thousands separators: ``43,793``."""
    if not finite(value):
        return NA
    return f"{int(value):,}"


# Lift thresholds of the verbal scale; the paper's specialist sits at 15x (N = 100): "high".
RISK_LEVELS: tuple[tuple[float, str], ...] = (
    (1.5, "near chance"),
    (5.0, "elevated"),
    (20.0, "high"),
)


def risk_level(lift) -> str:
    """A coarse verbal scale of the lift over chance: near chance, elevated, high, very high."""
    if not finite(lift):
        return "unknown"
    v = float(lift)
    for bound, name in RISK_LEVELS:
        if v < bound:
            return name
    return "very high"
