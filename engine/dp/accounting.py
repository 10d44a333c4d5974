"""Epsilon / delta bookkeeping: recomputation, budget check, fallback, patient-level conversion.

Pure functions over ``(noise_multiplier, sample_rate, steps, delta)``; the stateful training lives
in `engine.dp.training`. Opacus's own accountants do the maths; this module adds three things:

* **Fallback.** The PRV accountant (Opacus's default, tightest) can fail numerically for some
  parameters (opacus issues #601, #604); every computation here tries the requested accountant
  and falls back to RDP, and says which one produced the number.
* **A bounded budget check.** Opacus's noise search doubles sigma until it reaches the target or
  passes 1e6, which can take minutes with PRV. `check_budget` evaluates epsilon once at a
  configurable ceiling and raises `PrivacyBudgetError` straight away when even that much noise
  does not reach the target.
* **An epsilon ceiling.** Finite targets above `MAX_EPSILON` are refused in one line
  (`check_epsilon`, called by `check_budget` and by the command line's option check): the noise
  search for them ends at a vanishing sigma where the accountants take minutes per evaluation,
  and such a guarantee protects nothing anyway (``e^64`` bounds no odds). ``inf`` (no noise,
  no clipping) stays the way to train without privacy.
* **Patient-level conversion** by group privacy (`group_privacy`, `patient_level`).
"""

from __future__ import annotations

import logging
import math
import warnings

from engine.errors import EngineError

log = logging.getLogger(__name__)

ACCOUNTANTS = ("prv", "rdp")
# The largest finite target epsilon a run may ask for (see the module docstring). The noise
# search for 64 was timed at 9 s (issue 26); 1000 did not end in minutes.
MAX_EPSILON = 64.0


class PrivacyBudgetError(EngineError):
    """The requested epsilon cannot be reached with the given delta, sampling rate and steps."""


class AccountantError(EngineError):
    """No accountant could compute epsilon for these parameters."""


def _accountant(name: str):
    from opacus.accountants import PRVAccountant, RDPAccountant

    try:
        return {"prv": PRVAccountant, "rdp": RDPAccountant}[name]()
    except KeyError:
        raise ValueError(f"accountant={name!r}: expected one of {ACCOUNTANTS}") from None


def _chain(accountant: str) -> tuple[str, ...]:
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant={accountant!r}: expected one of {ACCOUNTANTS}")
    return (accountant,) if accountant == "rdp" else (accountant, "rdp")


def epsilon_for(
    noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str
) -> float:
    """Epsilon of ``steps`` Poisson-subsampled Gaussian steps, by one named Opacus accountant.

    This is exactly what Opacus reports after training: the accountant's history is
    ``[(noise_multiplier, sample_rate, steps)]`` and ``get_epsilon(delta)`` is called with its
    defaults.
    """
    if steps <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    acc = _accountant(accountant)
    acc.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    with warnings.catch_warnings(), _numpy_quiet():
        warnings.simplefilter("ignore")
        eps = float(acc.get_epsilon(delta=float(delta)))
    if not math.isfinite(eps) or eps < 0:
        raise FloatingPointError(f"{accountant} accountant returned epsilon={eps}")
    return eps


def compute_epsilon(
    noise_multiplier: float, sample_rate: float, steps: int, delta: float,
    accountant: str = "prv",
) -> tuple[float, str]:
    """Like `epsilon_for`, falling back from PRV to RDP on failure.

    Returns:
        (epsilon, the accountant that produced it).

    Raises:
        AccountantError: every accountant failed.
    """
    errors = []
    for name in _chain(accountant):
        try:
            return epsilon_for(noise_multiplier, sample_rate, steps, delta, name), name
        except Exception as exc:  # noqa: BLE001 - numerical failures come in many types
            log.warning("%s accountant failed (sigma=%s, q=%s, steps=%s, delta=%s): %s; "
                        "trying the next", name, noise_multiplier, sample_rate, steps, delta, exc)
            errors.append(f"{name}: {exc}")
    raise AccountantError("no accountant could compute epsilon: " + "; ".join(errors))


def check_epsilon(target_epsilon: float) -> float:
    """`target_epsilon` if it is positive and at most `MAX_EPSILON` (or inf); else raise.

    Raises:
        PrivacyBudgetError: one line saying what is allowed.
    """
    value = float(target_epsilon)
    if not value > 0:
        raise PrivacyBudgetError(f"epsilon={target_epsilon}: must be positive (or inf)")
    if math.isfinite(value) and value > MAX_EPSILON:
        raise PrivacyBudgetError(
            f"epsilon={target_epsilon:g} is above the ceiling of {MAX_EPSILON:g}: the noise "
            "search for it does not end in useful time and the guarantee means nothing; use "
            f"an epsilon up to {MAX_EPSILON:g}, or inf for training without privacy")
    return value


def check_budget(
    target_epsilon: float,
    *,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str,
    max_noise_multiplier: float,
) -> None:
    """Raise `PrivacyBudgetError` unless ``max_noise_multiplier`` reaches ``target_epsilon``.

    One accountant evaluation, so it answers in well under a second where Opacus's own search
    would double sigma up to 1e6 first. A target above `MAX_EPSILON` is refused first
    (`check_epsilon`).
    """
    check_epsilon(target_epsilon)
    eps = epsilon_for(max_noise_multiplier, sample_rate, steps, delta, accountant)
    if eps > target_epsilon:
        raise PrivacyBudgetError(
            f"epsilon={target_epsilon:g} cannot be reached at delta={delta:.3g} with sample rate "
            f"{sample_rate:.4g} over {steps} steps: even noise multiplier "
            f"{max_noise_multiplier:g} gives epsilon {eps:.4g} ({accountant} accountant). "
            "Use a larger epsilon, fewer epochs, a larger delta or more training data."
        )


def group_privacy(epsilon: float, delta: float, k: int) -> tuple[float, float]:
    """(epsilon, delta)-DP for one unit -> guarantee for k units changing together.

    ``(k * eps, delta * sum_{i<k} e^{i * eps})``, the standard group-privacy bound (its looser
    textbook form is ``k e^{(k-1) eps} delta``). k=1 is the identity; k=2 gives
    ``(2 eps, (1 + e^eps) delta)``.
    """
    if k < 1:
        raise ValueError(f"group size k must be >= 1, got {k}")
    if math.isinf(epsilon):
        return math.inf, (delta if k == 1 or delta == 0 else math.inf)
    return k * epsilon, delta * sum(math.exp(i * epsilon) for i in range(k))


def patient_level(
    epsilon: float, delta: float, *, privacy_unit: str, max_pairs_per_patient: int = 1
) -> tuple[float, float]:
    """Patient-level (epsilon, delta) from the unit-level guarantee Opacus reports.

    * ``group``: one patient lives in one group, and adding or removing the patient changes that
      group (a substitution = one removal and one addition): ``group_privacy(eps, delta, 2)``
      = ``(2 eps, (1 + e^eps) delta)``.
    * ``pair``: a patient with k pairs is k units: ``group_privacy(eps, delta, k)`` with k the
      largest number of training pairs of one patient.
    """
    if privacy_unit == "group":
        return group_privacy(epsilon, delta, 2)
    if privacy_unit == "pair":
        return group_privacy(epsilon, delta, max(1, int(max_pairs_per_patient)))
    raise ValueError(f"privacy_unit={privacy_unit!r}: expected group or pair")


def _numpy_quiet():
    import numpy as np

    return np.errstate(all="ignore")
