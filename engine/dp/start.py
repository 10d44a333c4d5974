"""Where DP retraining of the heads starts, and what the epsilon therefore covers (docs/dp.md).

DP-SGD bounds what the *training steps* reveal about the private patients, given the point they
start from. The start is therefore part of what is released:

* ``random`` (the default): seeded random heads, a function of the seed and the heads' shapes
  only (`random_heads`). Nothing in them depends on any data, so the epsilon covers everything
  the released heads learned from the private cohort.
* ``public:COHORT``: heads first fitted *without* privacy on another registered cohort whose
  patients are disjoint from the private cohort's (an external site, a public release). They
  depend on that cohort only; the epsilon covers the private cohort. Refused with one line when
  a patient id occurs in both.
* ``original``: the model's own heads. These were fitted without privacy, usually on the same
  patients (the phantom ladder and a CXR model trained on MIMIC-CXR both were), so the released
  heads carry that fit and the epsilon bounds nothing about it. Kept for comparison only; every
  output that shows its epsilon says so.

The frozen backbones are never covered by any start.

Heads labels carry the start (`label`): the default start keeps the bare epsilon label
(``0.34``, ``inf``), the others add a suffix (``0.34+original``, ``inf+public-site-b``);
`engine.core.decision.split_label` reads a label back. The model's own heads keep the label
``original``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from engine.errors import ConfigError

RANDOM, ORIGINAL, PUBLIC = "random", "original", "public"
DEFAULT = RANDOM
SEP = "+"


@dataclass(frozen=True)
class Start:
    """A start of DP retraining.

    Attributes:
        kind: ``random``, ``original`` or ``public``.
        cohort: The public cohort (``public`` only).
        seed: Seed of the random heads (``random``, and the random start of the public fit).
    """

    kind: str = DEFAULT
    cohort: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in (RANDOM, ORIGINAL, PUBLIC):
            raise ConfigError(f"--start {self.kind!r}: expected random, original or "
                              "public:COHORT")
        if (self.kind == PUBLIC) != bool(self.cohort):
            raise ConfigError("--start public:COHORT needs a cohort name (and only public does)")

    @classmethod
    def parse(cls, text: str, *, seed: int = 0) -> Start:
        """``random``, ``original`` or ``public:COHORT`` (the form `--start` takes)."""
        text = str(text).strip()
        if text.startswith(PUBLIC + ":"):
            return cls(PUBLIC, text[len(PUBLIC) + 1:].strip(), seed)
        return cls(text, None, seed)

    def describe(self) -> str:
        """``random``, ``original`` or ``public:COHORT`` (stored in ``dp_runs.start``)."""
        return f"{PUBLIC}:{self.cohort}" if self.kind == PUBLIC else self.kind

    def suffix(self) -> str:
        """What the start adds to a heads label: nothing for the default start."""
        if self.kind == DEFAULT:
            return ""
        return SEP + (f"{PUBLIC}-{self.cohort}" if self.kind == PUBLIC else self.kind)

    def label(self, epsilon_label: str) -> str:
        """The heads label of an epsilon trained from this start (``0.34+original``)."""
        return epsilon_label + self.suffix()

    @property
    def covers_start(self) -> bool:
        """True when the starting heads owe nothing to the private cohort."""
        return self.kind != ORIGINAL

    def config(self) -> dict:
        """Part of the run's and the heads' identity."""
        return {"start": self.describe(), "start_seed": self.seed}


def coverage(start: str | None) -> dict:
    """What an epsilon of heads trained from `start` covers, and what it does not (plain words).

    Returns ``{"covers": str, "not_covered": str, "caveat": str | None}``; ``caveat`` is the
    sentence every output shows beside an epsilon of ``original``-start heads.
    """
    not_covered = "the frozen image and text backbones (never retrained)"
    if start == ORIGINAL:
        return {
            "covers": "these training steps on the training patients",
            "not_covered": not_covered + "; the starting heads, the model's own, which were "
                           "fitted without privacy",
            "caveat": "epsilon does not cover the starting heads: they are the model's own, "
                      "fitted without privacy (shown for comparison, not for release)",
        }
    origin = ("seeded random heads that depend on no data" if start in (None, RANDOM) else
              f"heads fitted without privacy on the patient-disjoint cohort "
              f"{str(start).partition(':')[2]}")
    return {"covers": f"these training steps on the training patients, from {origin}",
            "not_covered": not_covered, "caveat": None}


def random_heads(image_head, text_head, seed: int):
    """Copies of the heads with every parameter drawn afresh: a function of seed and shapes only.

    Each layer with ``reset_parameters`` (``nn.Linear``: PyTorch's default uniform init;
    ``nn.LayerNorm``: ones and zeros) is reset in module order under a generator seeded by the
    seed and the head's shape signature, inside a forked RNG (the caller's random state is left
    alone). Returns ``(image_head, text_head)``, both in eval mode.
    """
    import copy

    import torch

    out = []
    for which, head in (("image", image_head), ("text", text_head)):
        fresh = copy.deepcopy(head)
        shapes = ";".join(f"{k}:{tuple(v.shape)}" for k, v in fresh.state_dict().items())
        digest = hashlib.sha256(f"relink-audit/random-heads/v1|{seed}|{which}|{shapes}"
                                .encode()).digest()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int.from_bytes(digest[:8], "little") % (2**63))
            resettable = [m for m in fresh.modules() if hasattr(m, "reset_parameters")]
            if not resettable:
                raise ConfigError(f"the {which} head has no layer with reset_parameters: "
                                  "use --start original or public:COHORT")
            for module in resettable:
                module.reset_parameters()
        fresh.eval()
        out.append(fresh)
    return out[0], out[1]


def check_disjoint(private_patients, public_patients, *, private: str, public: str) -> None:
    """Refuse a public cohort that shares a patient id with the private cohort (one line)."""
    shared = set(map(str, private_patients)) & set(map(str, public_patients))
    if shared:
        example = sorted(shared)[0]
        raise ConfigError(
            f"--start public:{public}: {len(shared)} patient(s) of {public!r} are also in "
            f"{private!r} (e.g. patient {example!r}); a public start must share no patient "
            "with the private cohort")
