"""The list values that command-line flags and TOML configuration files share, parsed once.

Each kind of value has one parser taking either the flag's text (``0.34,1,inf``) or a TOML array,
and returning a tuple; an already parsed tuple goes through unchanged. `engine.cli.options`
wraps them as argparse types and the ``--config`` loader calls them directly, so a flag and a
file accept the same values and refuse the same ones with the same reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from engine.errors import ConfigError


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}" if where else message)


def _items(value: str | Sequence) -> list[str]:
    """The parts of ``a,b,c`` or of a list (a TOML array, or a value parsed already)."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    return [str(p).strip() for p in parts]


def epsilons(value: str | Sequence, where: str = "--epsilons") -> tuple[float, ...]:
    """Positive epsilons (``inf`` allowed) from ``0.34,1,8,inf`` or a list of numbers / "inf".

    The one parser of an epsilon grid: the ``--epsilons`` option's type
    (`engine.cli.options.epsilon_list`) and the ``--config`` TOML loader both call it, so a flag
    and a file accept the same values.

    Raises:
        ConfigError: naming `where` and the offending value.
    """
    from engine.dp.accounting import PrivacyBudgetError, check_epsilon

    parts = _items(value)
    if not any(parts):
        raise _fail(where, "expected comma-separated epsilons such as 0.34,1,8,inf")
    out = []
    for part in parts:
        if part.lower() in ("inf", "infinity"):
            out.append(math.inf)
            continue
        try:
            eps = float(part)
        except ValueError:
            raise _fail(where, f"{part!r} is not a number or inf (expected e.g. 0.34,1,8,inf)"
                        ) from None
        if not math.isfinite(eps) or eps <= 0:
            raise _fail(where, f"{part} is not a positive epsilon (expected numbers > 0, or inf)")
        try:
            out.append(check_epsilon(eps))
        except PrivacyBudgetError as exc:
            raise _fail(where, str(exc)) from None
    return tuple(out)


def ints(value: str | Sequence, where: str, minimum: int | None = None,
         what: str = "") -> tuple[int, ...]:
    """Integers (each >= `minimum` when given) from ``10,100,1000`` or a list; `what` says why.

    Raises:
        ConfigError: naming `where` and the offending value.
    """
    why = f" ({what})" if what else ""
    parts = [p for p in _items(value) if p]
    if not parts:
        raise _fail(where, f"expected comma-separated integers such as 10,100,1000{why}")
    out = []
    for part in parts:
        try:
            number = int(part)
        except ValueError:
            raise _fail(where, f"{part!r} is not an integer{why}") from None
        if minimum is not None and number < minimum:
            raise _fail(where, f"{number} is too small: expected at least {minimum}{why}")
        out.append(number)
    return tuple(out)


def fractions(value: str | Sequence, where: str = "--known") -> tuple[float, ...]:
    """Fractions from ``0.01,0.05`` or a list; ``none`` (or an empty list) gives none.

    Raises:
        ConfigError: naming `where` and the offending value.
    """
    if isinstance(value, str) and value.strip().lower() == "none":
        return ()
    out = []
    for part in (p for p in _items(value) if p):
        try:
            out.append(float(part))
        except ValueError:
            raise _fail(where, f"{part!r} is not a number (expected fractions such as "
                               "0.01,0.05, or none)") from None
    return tuple(out)
