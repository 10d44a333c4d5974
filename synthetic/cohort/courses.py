"""Clinical courses: who a phantom patient is and how their findings evolve across studies.

Each patient follows one course (healthy outpatient, cardiac, intensive care, pneumonia,
oncology, trauma, pleural disease). The course sets the first study's findings, how they change
from one study to the next (lines placed and removed, effusions growing or resolving, pneumonia
clearing, nodules growing, fractures healing), the gaps between studies and the projection
(portable AP for the sick, PA for outpatients). Chronic findings (cardiomegaly, pacemakers,
sternotomy wires, plaques, old fractures, nodules) persist, which is what lets a patient be
recognised across studies.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from synthetic.cohort.anatomy import Anatomy
from synthetic.cohort.findings import Finding

COURSES: dict[str, float] = {  # relative weights
    "healthy": 0.66,
    "cardiac": 0.11,
    "icu": 0.08,
    "pneumonia": 0.065,
    "oncology": 0.045,
    "trauma": 0.025,
    "pleural": 0.02,
}
_STUDY_COUNTS = {  # probabilities of 1..5 studies
    "healthy": (0.46, 0.24, 0.14, 0.10, 0.06),
    "default": (0.18, 0.24, 0.22, 0.19, 0.17),
}
_AP = {
    "healthy": 0.12,
    "cardiac": 0.45,
    "icu": 0.95,
    "pneumonia": 0.45,
    "oncology": 0.25,
    "trauma": 0.7,
    "pleural": 0.15,
}
INDICATIONS: dict[str, tuple[str, ...]] = {
    "healthy": (
        "cough",
        "chest pain",
        "preoperative evaluation",
        "shortness of breath",
        "fever",
        "evaluate for pneumonia",
        "routine screening",
        "palpitations",
    ),
    "cardiac": (
        "shortness of breath",
        "CHF exacerbation",
        "dyspnea on exertion",
        "evaluate for fluid overload",
        "leg swelling and dyspnea",
        "chest pain",
    ),
    "icu": (
        "intubated patient",
        "line placement",
        "evaluate ET tube position",
        "hypoxia",
        "sepsis",
        "respiratory failure",
        "post-op check",
    ),
    "pneumonia": (
        "fever and cough",
        "evaluate for pneumonia",
        "productive cough",
        "follow-up pneumonia",
        "hypoxia and fever",
    ),
    "oncology": (
        "history of lung cancer",
        "restaging",
        "port placement",
        "shortness of breath, known malignancy",
        "follow-up nodule",
    ),
    "trauma": (
        "fall",
        "motor vehicle collision",
        "chest wall pain after fall",
        "trauma, evaluate for pneumothorax",
        "rib pain",
    ),
    "pleural": ("asbestos exposure", "dyspnea", "follow-up pleural disease", "cough"),
}


@dataclass(frozen=True)
class StudyPlan:
    """One study of a patient: when, how it was taken, what it truly shows.

    Attributes:
        index: Order within the patient (0 = first).
        day: Days since the patient's first study.
        view: Frontal projection, ``PA`` or ``AP``.
        supine: Lying down (portable films).
        lateral: Whether a lateral image was also taken.
        extra_frontal: Whether a second frontal image was taken (repeat exposure).
        inspiration: Depth of inspiration, about -1 (poor) .. 1 (deep).
        findings: The hidden truth, including devices.
        indication: Clinical question written in the report.
    """

    index: int
    day: int
    view: str
    supine: bool
    lateral: bool
    extra_frontal: bool
    inspiration: float
    findings: tuple[Finding, ...]
    indication: str


def choose_course(rng: np.random.Generator) -> str:
    names = list(COURSES)
    return str(rng.choice(names, p=np.array(list(COURSES.values())) / sum(COURSES.values())))


def choose_study_count(rng: np.random.Generator, course: str) -> int:
    p = np.array(_STUDY_COUNTS.get(course, _STUDY_COUNTS["default"]))
    return int(rng.choice(np.arange(1, 6), p=p / p.sum()))


def sample_demographics(rng: np.random.Generator, course: str) -> tuple[str, int, float]:
    """``(sex, age, habitus)`` of a patient on ``course``."""
    sex = "F" if rng.random() < 0.5 else "M"
    mean_age = {"healthy": 48, "trauma": 45, "pneumonia": 60}.get(course, 66)
    age = int(np.clip(rng.normal(mean_age, 15), 18, 95))
    habitus = float(np.clip(rng.normal(0.0, 0.5), -1, 1))
    return sex, age, habitus


# --------------------------------------------------------------------------- helpers


def _side(rng, p_right: float = 0.55) -> str:
    return "right" if rng.random() < p_right else "left"


def _lobe(rng, side: str) -> str:
    r = rng.random()
    if r < 0.55:
        return "lower"
    if r < 0.78:
        return "upper"
    return "middle" if side == "right" else "lingula"


def _sev(rng, p=(0.5, 0.35, 0.15)) -> int:
    return int(rng.choice([1, 2, 3], p=np.array(p) / sum(p)))


def _lesion(rng, anat: Anatomy, kind: str) -> Finding:
    side = _side(rng, 0.55)
    lobe = (
        "upper"
        if rng.random() < 0.55
        else ("lower" if rng.random() < 0.7 else ("middle" if side == "right" else "lingula"))
    )
    sg = -1 if side == "right" else 1
    lw = anat.lung_w[0 if side == "right" else 1]
    hilum_y = anat.carina_y + 0.12
    if lobe == "upper":
        x, y = sg * rng.uniform(0.3, lw - 0.14), rng.uniform(anat.apex_y + 0.2, hilum_y - 0.05)
    elif lobe == "lower":
        x, y = (
            sg * rng.uniform(0.35, lw - 0.14),
            rng.uniform(hilum_y + 0.12, anat.cp_y[0] - anat.dome_h - 0.06),
        )
    else:
        x, y = sg * rng.uniform(0.3, 0.42), rng.uniform(hilum_y + 0.08, hilum_y + 0.28)
    size = rng.uniform(0.8, 2.6) if kind == "nodule" else rng.uniform(3.2, 6.0)
    return Finding(
        kind,
        side,
        1 if kind == "nodule" else 2,
        lobe,
        (
            round(float(x), 3),
            round(float(y), 3),
            round(float(size), 1),
            int(rng.integers(0, 2**31 - 1)),
        ),
    )


def _fractures(rng, side: str, healed: bool, n: int) -> list[Finding]:
    first = int(rng.integers(4, 9))
    s = float(rng.uniform(0.5, 0.66))
    return [
        Finding(
            "rib_fracture",
            side,
            1,
            "lateral" if s > 0.58 else "posterior",
            (first + i, round(s + 0.02 * i, 3), healed),
        )
        for i in range(n)
    ]


def _line(rng, kind: str) -> Finding:
    side = "right" if rng.random() < (0.75 if kind != "picc" else 0.6) else "left"
    tip = str(rng.choice(["svc", "cavoatrial", "right_atrium"], p=[0.55, 0.3, 0.15]))
    vein = "internal jugular" if rng.random() < 0.8 else "subclavian"
    return Finding(kind, side, 1, tip, (vein,) if kind == "central_line" else ())


def _ett(rng) -> Finding:
    tip = float(np.clip(rng.normal(4.2, 1.4), 0.8, 8.0))
    return Finding("ett", "", 1, "", (round(tip * 2) / 2,))


def _enteric(rng) -> Finding:
    zone = str(rng.choice(["stomach", "esophagus", "duodenum"], p=[0.86, 0.09, 0.05]))
    return Finding("enteric_tube", "", 1, zone)


def _pacemaker(rng) -> Finding:
    side = "left" if rng.random() < 0.9 else "right"
    leads = 2 if rng.random() < 0.7 else 1
    return Finding("pacemaker", side, 1, "", (leads, bool(rng.random() < 0.3)))


def _bump(rng, sev: int, p_down: float, p_up: float) -> int:
    r = rng.random()
    if r < p_down:
        return sev - 1
    if r < p_down + p_up:
        return min(3, sev + 1)
    return sev


class _State:
    """Mutable findings of a patient between studies, keyed by `Finding.key`."""

    def __init__(self) -> None:
        self.items: dict[tuple, Finding] = {}

    def add(self, f: Finding) -> None:
        self.items[f.key] = f

    def drop(self, kind: str, side: str | None = None) -> None:
        for k in [
            k for k, f in self.items.items() if f.kind == kind and (side is None or f.side == side)
        ]:
            del self.items[k]

    def has(self, kind: str) -> bool:
        return any(f.kind == kind for f in self.items.values())

    def of(self, kind: str) -> list[Finding]:
        return [f for f in self.items.values() if f.kind == kind]

    def evolve_severity(self, kind: str, rng, p_down: float, p_up: float) -> None:
        for f in self.of(kind):
            sev = _bump(rng, f.severity, p_down, p_up)
            del self.items[f.key]
            if sev > 0:
                self.add(replace(f, severity=sev))

    def snapshot(self) -> tuple[Finding, ...]:
        return tuple(
            sorted(self.items.values(), key=lambda f: (f.kind, f.side, f.zone, str(f.detail)))
        )


# --------------------------------------------------------------------------- courses


def _init(course: str, st: _State, rng, anat: Anatomy, age: int) -> None:
    r = rng.random
    if r() < 0.03 + 0.03 * (age > 65):
        for f in _fractures(rng, _side(rng), True, int(rng.integers(1, 3))):
            st.add(f)
    if r() < 0.025:
        st.add(_lesion(rng, anat, "nodule"))
    if course == "healthy":
        if r() < 0.04:
            st.add(Finding("atelectasis", _side(rng, 0.4), 1, "base"))
        if r() < 0.03 and age > 60:
            st.add(Finding("cardiomegaly", "", 1))
        if r() < 0.02:
            st.add(Finding("pleural_thickening", _side(rng), 1, "apex"))
    elif course == "cardiac":
        st.add(Finding("cardiomegaly", "", _sev(rng)))
        if r() < 0.22:
            st.add(Finding("widened_mediastinum", "", 1))
        if r() < 0.3:
            st.add(
                Finding(
                    "sternotomy",
                    "",
                    1,
                    "",
                    (int(rng.integers(5, 8)), int(rng.integers(0, 2**31 - 1))),
                )
            )
        if r() < 0.35:
            st.add(_pacemaker(rng))
        if r() < 0.25:
            st.add(Finding("edema", "", _sev(rng)))
        for side, p in (("right", 0.2), ("left", 0.12)):
            if r() < p:
                st.add(Finding("effusion", side, _sev(rng, (0.55, 0.35, 0.1))))
        if st.has("effusion") and r() < 0.3:
            st.add(
                Finding(
                    "atelectasis",
                    "bilateral" if len(st.of("effusion")) == 2 else st.of("effusion")[0].side,
                    1,
                    "base",
                )
            )
    elif course == "icu":
        if r() < 0.75:
            st.add(_ett(rng))
            if r() < 0.8:
                st.add(_enteric(rng))
        elif r() < 0.2:
            st.add(_enteric(rng))
        if r() < 0.6:
            st.add(_line(rng, "central_line"))
        elif r() < 0.4:
            st.add(_line(rng, "picc"))
        for side in ("right", "left"):
            if r() < 0.25:
                st.add(Finding("effusion", side, _sev(rng, (0.6, 0.3, 0.1))))
        if r() < 0.35:
            kind = rng.random()
            if kind < 0.4:
                st.add(Finding("atelectasis", "bilateral", _sev(rng, (0.5, 0.5, 0)), "base"))
            elif kind < 0.7:
                st.add(Finding("atelectasis", "left", 1, "retrocardiac"))
            else:
                st.add(Finding("atelectasis", _side(rng), _sev(rng, (0.5, 0.5, 0)), "base"))
        if r() < 0.3:
            st.add(Finding("edema", "", _sev(rng)))
        if r() < 0.2:
            side = _side(rng)
            st.add(
                Finding(
                    "consolidation",
                    side,
                    _sev(rng, (0.3, 0.5, 0.2)),
                    "lower",
                    ("bronchograms",) if r() < 0.5 else (),
                )
            )
        if r() < 0.15:
            st.add(Finding("opacity", _side(rng), _sev(rng), _lobe(rng, "right")))
        if r() < 0.14:
            st.add(
                Finding(
                    "pneumothorax",
                    _side(rng),
                    _sev(rng, (0.6, 0.3, 0.1)),
                    "apex" if r() < 0.6 else "lateral",
                )
            )
    elif course == "pneumonia":
        side = _side(rng, 0.6)
        lobe = _lobe(rng, side)
        sev = _sev(rng, (0.2, 0.5, 0.3))
        st.add(Finding("pneumonia", side, sev, lobe))
        if r() < 0.5:
            st.add(
                Finding("consolidation", side, sev, lobe, ("bronchograms",) if r() < 0.5 else ())
            )
        if r() < 0.22:
            st.add(Finding("effusion", side, 1))
        if r() < 0.12:
            other = "left" if side == "right" else "right"
            st.add(Finding("opacity", other, 1, "lower"))
    elif course == "oncology":
        if r() < 0.45:
            st.add(_lesion(rng, anat, "mass"))
        else:
            for _ in range(int(rng.integers(1, 4))):
                st.add(_lesion(rng, anat, "nodule"))
        if r() < 0.45:
            st.add(
                Finding(
                    "port",
                    "right" if r() < 0.8 else "left",
                    1,
                    str(rng.choice(["svc", "cavoatrial"])),
                )
            )
        elif r() < 0.15:
            st.add(_line(rng, "picc"))
        if r() < 0.3:
            st.add(Finding("effusion", _side(rng), _sev(rng)))
        if r() < 0.2:
            st.add(Finding("widened_mediastinum", "", _sev(rng, (0.6, 0.4, 0))))
        if r() < 0.06:
            st.add(Finding("pleural_thickening", _side(rng), 1, "lateral"))
    elif course == "trauma":
        side = _side(rng, 0.5)
        for f in _fractures(rng, side, False, int(rng.integers(1, 4))):
            st.add(f)
        if r() < 0.6:
            st.add(
                Finding(
                    "pneumothorax",
                    side,
                    _sev(rng, (0.5, 0.35, 0.15)),
                    "apex" if r() < 0.5 else "lateral",
                )
            )
            if r() < 0.4:
                st.add(Finding("chest_tube", side, 1, "apex"))
        if r() < 0.3:
            st.add(Finding("effusion", side, _sev(rng, (0.6, 0.3, 0.1))))
        if r() < 0.35:
            st.add(Finding("opacity", side, _sev(rng), "lower" if r() < 0.6 else "upper"))
        if r() < 0.2:
            st.add(Finding("atelectasis", side, 1, "base"))
    elif course == "pleural":
        if r() < 0.6:
            st.add(
                Finding(
                    "pleural_plaques",
                    "bilateral" if r() < 0.6 else _side(rng),
                    _sev(rng),
                    "",
                    (int(rng.integers(0, 2**31 - 1)),),
                )
            )
        else:
            st.add(
                Finding(
                    "pleural_thickening",
                    _side(rng),
                    _sev(rng, (0.5, 0.5, 0)),
                    "apex" if r() < 0.4 else "lateral",
                )
            )
        if r() < 0.15:
            st.add(Finding("effusion", _side(rng), 1))
        if r() < 0.1:
            for f in _fractures(rng, _side(rng), True, 1):
                st.add(f)


def _evolve(course: str, st: _State, rng, anat: Anatomy, gap: int) -> None:
    r = rng.random
    # acute fractures heal after a few weeks
    for f in st.of("rib_fracture"):
        if not f.detail[2] and gap > 30:
            st.add(replace(f, detail=(f.detail[0], f.detail[1], True)))
    if course == "healthy":
        st.drop("opacity")
        if st.has("atelectasis") and r() < 0.7:
            st.drop("atelectasis")
        elif r() < 0.04:
            st.add(Finding("atelectasis", _side(rng, 0.4), 1, "base"))
        if r() < 0.02:
            st.add(Finding("opacity", _side(rng), 1, "lower"))
    elif course == "cardiac":
        st.evolve_severity("cardiomegaly", rng, 0.05, 0.08)
        if not st.has("cardiomegaly"):
            st.add(Finding("cardiomegaly", "", 1))
        if st.has("edema"):
            st.evolve_severity("edema", rng, 0.45, 0.2)
        elif r() < 0.25:
            st.add(Finding("edema", "", _sev(rng)))
        _evolve_effusions(st, rng, p_down=0.35, p_up=0.25, p_new=0.15)
        if not st.has("pacemaker") and r() < 0.08:
            st.add(_pacemaker(rng))
        if not st.has("effusion"):
            st.drop("atelectasis")
    elif course == "icu":
        if st.has("ett") and r() < 0.3:
            st.drop("ett")
        elif st.has("ett") and r() < 0.25:
            st.drop("ett")
            st.add(_ett(rng))  # repositioned
        elif not st.has("ett") and r() < 0.06:
            st.add(_ett(rng))
        if st.has("enteric_tube") and not st.has("ett") and r() < 0.6:
            st.drop("enteric_tube")
        elif st.has("enteric_tube") and st.of("enteric_tube")[0].zone == "esophagus" and r() < 0.7:
            st.drop("enteric_tube")
            st.add(Finding("enteric_tube", "", 1, "stomach"))
        for kind in ("central_line", "picc"):
            if st.has(kind):
                if r() < 0.15:
                    st.drop(kind)
                elif r() < 0.15:
                    old = st.of(kind)[0]
                    st.drop(kind)
                    st.add(
                        replace(old, zone=str(rng.choice(["svc", "cavoatrial", "right_atrium"])))
                    )
        if not st.has("central_line") and not st.has("picc") and r() < 0.12:
            st.add(_line(rng, "picc"))
        for ptx in st.of("pneumothorax"):
            if not st.has("chest_tube") and r() < 0.7:
                st.add(Finding("chest_tube", ptx.side, 1, "apex"))
            st.drop("pneumothorax")
            sev = ptx.severity - 1 - (r() < 0.4)
            if sev > 0:
                st.add(replace(ptx, severity=int(sev)))
        if st.has("chest_tube") and not st.has("pneumothorax") and r() < 0.5:
            st.drop("chest_tube")
        _evolve_effusions(st, rng, p_down=0.3, p_up=0.25, p_new=0.15)
        if st.has("atelectasis"):
            st.evolve_severity("atelectasis", rng, 0.3, 0.15)
        elif r() < 0.25:
            st.add(Finding("atelectasis", "bilateral", 1, "base"))
        if st.has("edema"):
            st.evolve_severity("edema", rng, 0.4, 0.2)
        elif r() < 0.12:
            st.add(Finding("edema", "", 1))
        if st.has("consolidation"):
            st.evolve_severity("consolidation", rng, 0.3, 0.15)
        elif r() < 0.06:
            st.add(Finding("consolidation", _side(rng), 2, "lower"))
        if not st.has("pneumothorax") and r() < 0.05:
            st.add(Finding("pneumothorax", _side(rng), 1, "apex"))
    elif course == "pneumonia":
        had = st.has("pneumonia")
        st.evolve_severity("pneumonia", rng, 0.6, 0.1)
        for f in st.of("consolidation"):
            if not st.has("pneumonia") or r() < 0.5:
                st.drop("consolidation")
                if st.has("pneumonia") and f.severity > 1:
                    st.add(replace(f, severity=f.severity - 1))
        if had and not st.has("pneumonia") and r() < 0.3:
            st.add(Finding("atelectasis", _side(rng), 1, "base"))
        elif not had and st.has("atelectasis") and r() < 0.6:
            st.drop("atelectasis")
        st.evolve_severity("effusion", rng, 0.5, 0.1)
        st.drop("opacity")
        if not st.has("pneumonia") and r() < 0.1:
            side = _side(rng)
            st.add(Finding("pneumonia", side, 2, _lobe(rng, side)))
    elif course == "oncology":
        for f in st.of("nodule") + st.of("mass"):
            x, y, size, seed = f.detail
            size = round(float(np.clip(size * rng.uniform(0.9, 1.3), 0.6, 8.0)), 1)
            del st.items[f.key]
            kind = "mass" if size >= 3.0 else "nodule"
            st.add(Finding(kind, f.side, 2 if kind == "mass" else 1, f.zone, (x, y, size, seed)))
        if r() < 0.08:
            st.add(_lesion(rng, anat, "nodule"))
        _evolve_effusions(st, rng, p_down=0.25, p_up=0.35, p_new=0.08)
        if not st.has("port") and not st.has("picc") and r() < 0.15:
            st.add(Finding("port", "right", 1, "svc"))
        if st.has("picc") and r() < 0.4:
            st.drop("picc")
    elif course == "trauma":
        for ptx in st.of("pneumothorax"):
            st.drop("pneumothorax")
            sev = ptx.severity - 1 - (st.has("chest_tube") and r() < 0.6)
            if sev > 0:
                st.add(replace(ptx, severity=int(sev)))
                if not st.has("chest_tube") and r() < 0.5:
                    st.add(Finding("chest_tube", ptx.side, 1, "apex"))
        if st.has("chest_tube") and not st.has("pneumothorax") and r() < 0.6:
            st.drop("chest_tube")
        st.evolve_severity("opacity", rng, 0.6, 0.05)
        st.evolve_severity("effusion", rng, 0.4, 0.15)
        st.evolve_severity("atelectasis", rng, 0.5, 0.1)
    elif course == "pleural":
        st.evolve_severity("effusion", rng, 0.4, 0.2)
        if not st.has("effusion") and r() < 0.08:
            st.add(Finding("effusion", _side(rng), 1))


def _evolve_effusions(st: _State, rng, *, p_down: float, p_up: float, p_new: float) -> None:
    """Each side's effusion grows, shrinks or resolves; a new small one may appear."""
    for side in ("right", "left"):
        cur = [f for f in st.of("effusion") if f.side == side]
        if cur:
            sev = _bump(rng, cur[0].severity, p_down, p_up)
            st.drop("effusion", side)
            if sev > 0:
                st.add(replace(cur[0], severity=sev))
        elif rng.random() < p_new:
            st.add(Finding("effusion", side, 1))


def _gap(rng, course: str, index: int) -> int:
    if course == "icu":
        return int(rng.integers(1, 4))
    if course == "trauma":
        return int(rng.integers(1, 6)) if index < 2 else int(rng.integers(30, 400))
    if course == "pneumonia":
        return int(rng.integers(3, 45))
    return int(rng.integers(20, 700))


def plan_studies(
    rng: np.random.Generator,
    course: str,
    n_studies: int,
    anat: Anatomy,
    age: int,
    *,
    site: str,
    lateral_fraction: float,
) -> tuple[StudyPlan, ...]:
    """The patient's studies in time order, with their true findings and acquisition."""
    st = _State()
    _init(course, st, rng, anat, age)
    plans: list[StudyPlan] = []
    day = 0
    p_ap = _AP[course] if site == "A" else min(0.97, _AP[course] + 0.25)
    for i in range(n_studies):
        if i > 0:
            gap = _gap(rng, course, i)
            day += gap
            _evolve(course, st, rng, anat, gap)
        findings = st.snapshot()
        intubated = any(f.kind in ("ett", "chest_tube") for f in findings)
        ap = intubated or rng.random() < p_ap
        supine = ap and rng.random() < (0.6 if course in ("icu", "trauma") else 0.15)
        if ap:
            lateral = rng.random() < lateral_fraction * 0.25 and not intubated
        else:
            lateral = rng.random() < min(1.0, lateral_fraction * 1.5)
        plans.append(
            StudyPlan(
                index=i,
                day=day,
                view="AP" if ap else "PA",
                supine=bool(supine),
                lateral=bool(lateral),
                extra_frontal=bool(site == "A" and rng.random() < 0.03),
                inspiration=float(np.clip(rng.normal(-0.4 if ap else 0.2, 0.5), -1, 1)),
                findings=findings,
                indication=str(rng.choice(INDICATIONS[course])),
            )
        )
    return tuple(plans)
