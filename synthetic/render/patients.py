"""A rendered patient: stable anatomy from the release's patient id, age and sex.

The anatomy of a patient is drawn once from a seed of the render seed, the source and the
patient id, so every study of that patient shows the same body, lungs, heart, ribs and vessel
tree whatever order (or process) the studies are rendered in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthetic.cohort.anatomy import Anatomy, sample_anatomy
from synthetic.render.vocabulary import stable_seed


@dataclass(frozen=True)
class Patient:
    """One patient of a release.

    Attributes:
        patient_id: The release's id.
        sex: ``F`` or ``M`` (from the release; drawn from the seed when not recorded).
        age: Age in years at the patient's first rendered study.
        seed: The patient's seed (anatomy, lesion positions).
        anatomy: The stable anatomy.
    """

    patient_id: str
    sex: str
    age: int
    seed: int
    anatomy: Anatomy


def make_patient(source: str, patient_id: str, *, seed: int, sex: str | None,
                 age: int | None) -> Patient:
    """The patient's stable anatomy; ``sex``/``age`` from the release when known."""
    pseed = stable_seed(seed, source, patient_id)
    rng = np.random.default_rng(pseed)
    sex = sex if sex in ("F", "M") else ("F" if rng.random() < 0.5 else "M")
    age = int(np.clip(age, 1, 105)) if age is not None else int(np.clip(rng.normal(62, 16), 18, 95))
    habitus = float(np.clip(rng.normal(0.0, 0.5), -1, 1))
    return Patient(patient_id, sex, age, pseed, sample_anatomy(rng, sex, max(age, 18), habitus))
