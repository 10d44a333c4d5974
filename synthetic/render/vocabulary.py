"""What a real report's structured findings look like on a synthetic radiograph.

Two tables translate a source's own annotations into the phantom generator's `Finding` objects:

- PadChest: each of the 174 finding labels (``Labels``; ``LabelsLocalizationsBySentence`` ties
  them to their localizations) maps to a drawable kind or to nothing; its ``loc ...`` entries
  give laterality and zone.
- OpenI: each MeSH major tag ``Term/part/part/...`` maps by its term; the parts give location,
  laterality and severity (``Opacity/lung/base/left/mild``).

Labels no painter draws are returned as *undrawn* so that the renderer can count them per label.
A few labels change the study's pose instead of adding a painted finding (hyperinflation, poor
inspiration). Positions of lesions, fractures and device layouts come from a seed of the patient
and the finding, so they stay put across a patient's studies.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from synthetic.cohort.anatomy import Anatomy
from synthetic.cohort.findings import Finding

# PadChest annotations that are not findings (study quality, comparison, the normal label)
PADCHEST_NOT_FINDINGS: frozenset[str] = frozenset(
    {"", "normal", "unchanged", "exclude", "suboptimal study"}
)

# PadChest label -> (kind, default zone). Kinds are `synthetic.cohort.findings.LABEL_OF` keys;
# the pose kinds ``hyperinflation`` / ``hypoinflation`` set the study's depth of inspiration.
PADCHEST_KINDS: dict[str, tuple[str, str]] = {
    "pleural effusion": ("effusion", ""),
    "loculated pleural effusion": ("effusion", ""),
    "loculated fissural effusion": ("effusion", ""),
    "costophrenic angle blunting": ("effusion", "blunting"),
    "empyema": ("effusion", ""),
    "hydropneumothorax": ("hydropneumothorax", "lateral"),
    "pneumothorax": ("pneumothorax", "apex"),
    "consolidation": ("consolidation", "lower"),
    "alveolar pattern": ("consolidation", "lower"),
    "air bronchogram": ("consolidation", "bronchograms"),
    "pneumonia": ("pneumonia", "lower"),
    "atypical pneumonia": ("pneumonia", "perihilar"),
    "abscess": ("pneumonia", "lower"),
    "infiltrates": ("opacity", "lower"),
    "increased density": ("opacity", "lower"),
    "ground glass pattern": ("opacity", "lower"),
    "interstitial pattern": ("opacity", "perihilar"),
    "reticular interstitial pattern": ("opacity", "lower"),
    "reticulonodular interstitial pattern": ("opacity", "lower"),
    "miliary opacities": ("opacity", "upper"),
    "lymphangitis carcinomatosa": ("opacity", "perihilar"),
    "pulmonary fibrosis": ("opacity", "base"),
    "pulmonary edema": ("edema", ""),
    "heart insufficiency": ("edema", ""),
    "kerley lines": ("edema", "kerley"),
    "vascular redistribution": ("edema", "mild"),
    "central vascular redistribution": ("edema", "mild"),
    "hilar congestion": ("edema", "mild"),
    "atelectasis": ("atelectasis", "base"),
    "laminar atelectasis": ("atelectasis", "base"),
    "lobar atelectasis": ("atelectasis", "base"),
    "segmental atelectasis": ("atelectasis", "base"),
    "atelectasis basal": ("atelectasis", "base"),
    "total atelectasis": ("atelectasis", "base"),
    "round atelectasis": ("atelectasis", "base"),
    "fibrotic band": ("atelectasis", "base"),
    "nodule": ("nodule", ""),
    "multiple nodules": ("nodules", ""),
    "lung metastasis": ("nodules", ""),
    "granuloma": ("nodule", ""),
    "calcified granuloma": ("nodule", ""),
    "pseudonodule": ("nodule", ""),
    "pulmonary mass": ("mass", ""),
    "mass": ("mass", ""),
    "lepidic adenocarcinoma": ("mass", ""),
    "cardiomegaly": ("cardiomegaly", ""),
    "pericardial effusion": ("cardiomegaly", ""),
    "mediastinal enlargement": ("widened_mediastinum", ""),
    "superior mediastinal enlargement": ("widened_mediastinum", ""),
    "mediastinal mass": ("widened_mediastinum", ""),
    "aortic elongation": ("widened_mediastinum", "mild"),
    "supra aortic elongation": ("widened_mediastinum", "mild"),
    "descendent aortic elongation": ("widened_mediastinum", "mild"),
    "ascendent aortic elongation": ("widened_mediastinum", "mild"),
    "aortic button enlargement": ("widened_mediastinum", "mild"),
    "aortic aneurysm": ("widened_mediastinum", ""),
    "pleural thickening": ("pleural_thickening", "lateral"),
    "apical pleural thickening": ("pleural_thickening", "apex"),
    "calcified pleural thickening": ("pleural_thickening", "lateral"),
    "calcified pleural plaques": ("pleural_plaques", ""),
    "pleural plaques": ("pleural_plaques", ""),
    "asbestosis signs": ("pleural_plaques", ""),
    "rib fracture": ("rib_fracture", "acute"),
    "callus rib fracture": ("rib_fracture", "healed"),
    "NSG tube": ("enteric_tube", "stomach"),
    "endotracheal tube": ("ett", ""),
    "tracheostomy tube": ("ett", "tracheostomy"),
    "central venous catheter": ("central_line", "svc"),
    "central venous catheter via jugular vein": ("central_line", "svc"),
    "central venous catheter via subclavian vein": ("central_line", "svc"),
    "catheter": ("central_line", "svc"),
    "reservoir central venous catheter": ("port", "svc"),
    "pacemaker": ("pacemaker", ""),
    "dual chamber device": ("pacemaker", "dual"),
    "single chamber device": ("pacemaker", "single"),
    "electrical device": ("pacemaker", ""),
    "dai": ("pacemaker", "icd"),
    "sternotomy": ("sternotomy", ""),
    "chest drain tube": ("chest_tube", "base"),
    "COPD signs": ("hyperinflation", ""),
    "air trapping": ("hyperinflation", ""),
    "emphysema": ("hyperinflation", ""),
    "hyperinflated lung": ("hyperinflation", ""),
    "flattened diaphragm": ("hyperinflation", ""),
    "hypoexpansion": ("hypoinflation", ""),
    "hypoexpansion basal": ("hypoinflation", ""),
    "volume loss": ("hypoinflation", ""),
}

# OpenI MeSH major term -> (kind, default zone)
OPENI_KINDS: dict[str, tuple[str, str]] = {
    "Opacity": ("opacity", "lower"),
    "Density": ("opacity", "lower"),
    "Infiltrate": ("opacity", "lower"),
    "Airspace Disease": ("consolidation", "lower"),
    "Consolidation": ("consolidation", "lower"),
    "Pneumonia": ("pneumonia", "lower"),
    "Lung Diseases, Interstitial": ("opacity", "perihilar"),
    "Pulmonary Fibrosis": ("opacity", "base"),
    "Cardiomegaly": ("cardiomegaly", ""),
    "Pericardial Effusion": ("cardiomegaly", ""),
    "Pulmonary Atelectasis": ("atelectasis", "base"),
    "Cicatrix": ("atelectasis", "base"),
    "Volume Loss": ("hypoinflation", ""),
    "Calcified Granuloma": ("nodule", ""),
    "Granuloma": ("nodule", ""),
    "Granulomatous Disease": ("nodules", ""),
    "Nodule": ("nodule", ""),
    "Mass": ("mass", ""),
    "Pleural Effusion": ("effusion", ""),
    "Costophrenic Angle": ("effusion", "blunting"),
    "Pulmonary Congestion": ("edema", "mild"),
    "Pulmonary Edema": ("edema", ""),
    "Heart Failure": ("edema", ""),
    "Pneumothorax": ("pneumothorax", "apex"),
    "Thickening": ("pleural_thickening", "lateral"),
    "Emphysema": ("hyperinflation", ""),
    "Pulmonary Emphysema": ("hyperinflation", ""),
    "Pulmonary Disease, Chronic Obstructive": ("hyperinflation", ""),
    "Lung, Hyperlucent": ("hyperinflation", ""),
    "Mediastinum": ("widened_mediastinum", ""),
    "Catheters, Indwelling": ("central_line", "svc"),
    "Implanted Medical Device": ("pacemaker", ""),
    "Tube, Inserted": ("enteric_tube", "stomach"),
    "Fractures, Bone": ("rib_fracture", "healed"),
}
OPENI_NOT_FINDINGS: frozenset[str] = frozenset(
    {"normal", "No Indexing", "Technical Quality of Image Unsatisfactory"}
)

# stemmed Spanish (PadChest) and English (OpenI) severity words
_SEVERITY_WORDS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (3, ("important", "sever", "grand", "masiv", "extens", "large", "severe", "marked")),
    (2, ("moderad", "moderate")),
    (1, ("pequen", "minim", "discret", "leve", "liger", "small", "mild", "minimal", "tiny")),
)
_NO_SIDE = frozenset(
    {
        "cardiomegaly",
        "widened_mediastinum",
        "edema",
        "ett",
        "enteric_tube",
        "sternotomy",
        "hyperinflation",
        "hypoinflation",
    }
)


@dataclass
class StudyDrawing:
    """What to draw for one study.

    Attributes:
        findings: Findings for `synthetic.cohort.radiograph.render_frontal`.
        inspiration: Depth of inspiration (-1 poor .. 1 deep), or None for the default.
        drawn: Source labels that were drawn (kept for counting).
        undrawn: Source labels that no painter draws (one entry per occurrence).
    """

    findings: tuple[Finding, ...] = ()
    inspiration: float | None = None
    drawn: list[str] = field(default_factory=list)
    undrawn: list[str] = field(default_factory=list)


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from any values (stable across processes and Python versions)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def severity_in(text: str) -> int | None:
    """The strongest severity word in a (stemmed) sentence: 1 mild .. 3 severe, None if absent."""
    words = text.lower().replace(",", " ").split()
    for level, stems in _SEVERITY_WORDS:
        if any(w.startswith(s) for w in words for s in stems):
            return level
    return None


# --------------------------------------------------------------------------- localizations


def padchest_place(locs: tuple[str, ...]) -> tuple[str, str]:
    """``(side, zone)`` from PadChest ``loc ...`` entries ("" when not stated)."""
    sides: set[str] = set()
    zone = ""
    for loc in locs:
        text = loc.strip().lower().removeprefix("loc ").strip()
        if "bilateral" in text:
            sides.update(("right", "left"))
        elif text.startswith("right") or text == "middle lobe":
            sides.add("right")
        elif text.startswith("left") or text == "lingula":
            sides.add("left")
        if "upper lobe" in text or text == "upper lung field" or text == "suprahilar":
            zone = zone or "upper"
        elif text == "middle lobe":
            zone = zone or "middle"
        elif text == "lingula":
            zone = zone or "lingula"
        elif "lower lobe" in text:
            zone = zone or "lower"
        elif text in ("apical",):
            zone = zone or "apex"
        elif (
            "basal" in text
            or "costophrenic" in text
            or text in ("lower lung field", "infrahilar", "cardiophrenic angle")
        ):
            zone = zone or "base"
        elif "hilar" in text or text in ("middle lung field", "peribronchi", "bronchi"):
            zone = zone or "perihilar"
        elif text in ("retrocardiac", "paracardiac"):
            zone = zone or "retrocardiac"
        elif text in ("esophageal",):
            zone = zone or "esophagus"
        elif text in ("superior cave vein",):
            zone = zone or "svc"
    side = "bilateral" if len(sides) == 2 else (sides.pop() if sides else "")
    return side, zone


def openi_place(parts: list[str]) -> tuple[str, str, int | None]:
    """``(side, zone, severity)`` from the parts of a MeSH major tag after its term."""
    side, zone, severity = "", "", None
    sides: set[str] = set()
    for part in (p.strip().lower() for p in parts):
        if part == "bilateral":
            sides.update(("right", "left"))
        elif part in ("right", "left"):
            sides.add(part)
        elif part in ("upper lobe", "apex"):
            zone = zone or ("apex" if part == "apex" else "upper")
        elif part == "middle lobe":
            zone, sides = zone or "middle", sides | {"right"}
        elif part == "lingula":
            zone, sides = zone or "lingula", sides | {"left"}
        elif part in ("lower lobe",):
            zone = zone or "lower"
        elif part in ("base", "costophrenic angle"):
            zone = zone or "base"
        elif part in ("hilum", "hilar"):
            zone = zone or "perihilar"
        elif part == "retrocardiac":
            zone = zone or "retrocardiac"
        level = severity_in(part)
        if level is not None:
            severity = max(severity or 0, level)
    side = "bilateral" if len(sides) == 2 else (sides.pop() if sides else side)
    return side, zone, severity


# --------------------------------------------------------------------------- findings


def _lesion_position(
    rng: np.random.Generator, anat: Anatomy, side: str, zone: str
) -> tuple[float, float]:
    sg = -1 if side == "right" else 1
    lw = anat.lung_w[0 if side == "right" else 1]
    hilum_y = anat.carina_y + 0.12
    cp = anat.cp_y[0 if side == "right" else 1]
    if zone in ("upper", "apex"):
        return sg * rng.uniform(0.3, lw - 0.14), rng.uniform(anat.apex_y + 0.2, hilum_y - 0.05)
    if zone in ("middle", "lingula", "perihilar", "retrocardiac"):
        return sg * rng.uniform(0.3, 0.42), rng.uniform(hilum_y + 0.08, hilum_y + 0.28)
    if zone in ("lower", "base"):
        return sg * rng.uniform(0.35, lw - 0.14), rng.uniform(
            hilum_y + 0.12, cp - anat.dome_h - 0.06
        )
    return sg * rng.uniform(0.3, lw - 0.14), rng.uniform(
        anat.apex_y + 0.25, cp - anat.dome_h - 0.08
    )


TWEAKS: frozenset[str] = frozenset(
    {
        "blunting",
        "bronchograms",
        "mild",
        "kerley",
        "healed",
        "acute",
        "tracheostomy",
        "dual",
        "single",
        "icd",
    }
)


def build_findings(
    kind: str,
    side: str,
    zone: str,
    severity: int,
    *,
    default: str,
    label: str,
    seed: int,
    anat: Anatomy,
) -> tuple[list[Finding], float | None]:
    """The `Finding` objects (and any inspiration override) of one source label.

    Args:
        kind: A kind of `PADCHEST_KINDS` / `OPENI_KINDS`.
        side, zone: From the localizations ("" = not stated; a stable default is drawn).
        severity: 1..3.
        default: The table's second column: a default zone, or a tweak of `TWEAKS` (``dual``
            pacemaker, ``healed`` fracture, ``mild`` edema, ...).
        label: The source label.
        seed: Seed of the patient: positions stay put across a patient's studies.
        anat: The patient's anatomy (lesions are placed inside its lungs).
    """
    tweak = default if default in TWEAKS else ""
    zone = zone or ("" if tweak else default)
    rng = np.random.default_rng(stable_seed(seed, label, kind, side, zone))
    if kind == "hyperinflation":
        return [], 0.95
    if kind == "hypoinflation":
        return [], -0.95
    if kind in _NO_SIDE:
        side = ""
    elif not side:
        side = "left" if kind == "pacemaker" else ("right" if rng.random() < 0.55 else "left")
    sev = int(np.clip(severity, 1, 3))
    if kind == "effusion":
        if tweak == "blunting":
            sev = 1
        return [Finding("effusion", s, sev) for s in _sides(side)], None
    if kind == "hydropneumothorax":
        return [Finding("pneumothorax", s, sev, "lateral") for s in _sides(side)] + [
            Finding("effusion", s, 1) for s in _sides(side)
        ], None
    if kind == "pneumothorax":
        return [
            Finding("pneumothorax", s, sev, "apex" if zone in ("apex", "upper", "") else "lateral")
            for s in _sides(side)
        ], None
    if kind in ("consolidation", "pneumonia", "opacity"):
        detail = ("bronchograms",) if tweak == "bronchograms" else ()
        zone = _lung_zone(zone, "lower")
        return [Finding(kind, side, sev, zone, detail)], None
    if kind == "edema":
        if tweak == "mild":
            sev = 1
        elif tweak == "kerley":
            sev = max(2, sev)
        return [Finding("edema", "", sev)], None
    if kind == "atelectasis":
        zone = "retrocardiac" if zone == "retrocardiac" else "base"
        return [Finding("atelectasis", side, sev, zone)], None
    if kind in ("nodule", "nodules", "mass"):
        count = 3 if kind == "nodules" else 1
        out = []
        for _ in range(count):
            for s in _sides(side):
                x, y = _lesion_position(rng, anat, s, zone)
                size = rng.uniform(0.8, 2.4) if kind != "mass" else rng.uniform(3.2, 6.0)
                out.append(
                    Finding(
                        "mass" if kind == "mass" else "nodule",
                        s,
                        2 if kind == "mass" else 1,
                        zone or "upper",
                        (
                            round(float(x), 3),
                            round(float(y), 3),
                            round(float(size), 1),
                            int(rng.integers(0, 2**31 - 1)),
                        ),
                    )
                )
        return out, None
    if kind == "cardiomegaly":
        return [Finding("cardiomegaly", "", sev)], None
    if kind == "widened_mediastinum":
        return [Finding("widened_mediastinum", "", 1 if tweak == "mild" else min(sev, 2))], None
    if kind == "pleural_thickening":
        return [
            Finding("pleural_thickening", s, min(sev, 2), "apex" if zone == "apex" else "lateral")
            for s in _sides(side)
        ], None
    if kind == "pleural_plaques":
        return [Finding("pleural_plaques", side, sev, "", (int(rng.integers(0, 2**31 - 1)),))], None
    if kind == "rib_fracture":
        healed = tweak == "healed"
        first = int(rng.integers(4, 9))
        lateral = float(rng.uniform(0.5, 0.66))
        return [
            Finding(
                "rib_fracture",
                s,
                1,
                "lateral" if lateral > 0.58 else "posterior",
                (first, round(lateral, 3), healed),
            )
            for s in _sides(side)
        ], None
    if kind == "ett":
        tip = 7.0 if tweak == "tracheostomy" else float(np.round(rng.uniform(2.5, 6.0) * 2) / 2)
        return [Finding("ett", "", 1, "", (tip,))], None
    if kind == "enteric_tube":
        return [
            Finding("enteric_tube", "", 1, "esophagus" if zone == "esophagus" else "stomach")
        ], None
    if kind in ("central_line", "port"):
        vein = "subclavian" if "subclavian" in label else "internal jugular"
        tip = (
            zone
            if zone in ("svc", "cavoatrial", "right_atrium")
            else str(rng.choice(["svc", "cavoatrial", "right_atrium"], p=[0.55, 0.3, 0.15]))
        )
        side = side if side in ("right", "left") else "right"
        return [Finding(kind, side, 1, tip, (vein,) if kind == "central_line" else ())], None
    if kind == "pacemaker":
        leads = 1 if tweak == "single" else 2
        side = side if side in ("right", "left") else "left"
        return [Finding("pacemaker", side, 1, "", (leads, tweak == "icd"))], None
    if kind == "sternotomy":
        return [
            Finding(
                "sternotomy", "", 1, "", (int(rng.integers(5, 8)), int(rng.integers(0, 2**31 - 1)))
            )
        ], None
    if kind == "chest_tube":
        side = side if side in ("right", "left") else "right"
        return [
            Finding("chest_tube", side, 1, "apex" if zone in ("apex", "upper") else "base")
        ], None
    raise ValueError(f"no drawing for kind {kind!r}")


def _sides(side: str) -> tuple[str, ...]:
    return ("right", "left") if side == "bilateral" else (side,)


def _lung_zone(zone: str, default: str) -> str:
    lobes = ("upper", "middle", "lingula", "lower", "base", "apex", "perihilar", "retrocardiac")
    if zone in lobes:
        return zone
    return default if default in lobes else "lower"


def _merge(findings: list[Finding]) -> tuple[Finding, ...]:
    """One finding per identity (the most severe), in a stable order."""
    best: dict[tuple, Finding] = {}
    for f in findings:
        if f.zone == "middle" and f.side == "left":
            f = Finding(f.kind, f.side, f.severity, "lingula", f.detail)
        if f.zone == "lingula" and f.side == "right":
            f = Finding(f.kind, f.side, f.severity, "middle", f.detail)
        key = f.key
        if key not in best or f.severity > best[key].severity:
            best[key] = f
    return tuple(sorted(best.values(), key=lambda f: (f.kind, f.side, f.zone, str(f.detail))))


def padchest_groups(entries: list[str] | list[list[str]]) -> list[tuple[str, tuple[str, ...]]]:
    """Labels with the localizations that follow them.

    ``LabelsLocalizationsBySentence`` is a list per sentence (physician-labelled rows) or one flat
    list (RNN-labelled rows); in both, a run of labels is followed by the ``loc ...`` entries
    that localise them.
    """
    sentences = entries if entries and isinstance(entries[0], list) else [entries]
    out: list[tuple[str, tuple[str, ...]]] = []
    for sentence in sentences:
        labels: list[str] = []
        locs: list[str] = []
        for raw in sentence:
            text = str(raw).strip()
            if text.startswith("loc "):
                locs.append(text)
                continue
            if locs:
                out += [(lab, tuple(locs)) for lab in labels]
                labels, locs = [], []
            labels.append(text)
        out += [(lab, tuple(locs)) for lab in labels]
    return out


def padchest_drawing(
    groups: list[tuple[str, tuple[str, ...]]], report: str, *, seed: int, anat: Anatomy
) -> StudyDrawing:
    """What one PadChest study shows, from its labels, localizations and report words."""
    sentences = [s for s in report.split(" . ") if s.strip()]
    study_severity = max((severity_in(s) or 0 for s in sentences), default=0) or None
    drawing = StudyDrawing()
    findings: list[Finding] = []
    for label, locs in groups:
        if label in PADCHEST_NOT_FINDINGS:
            continue
        if label not in PADCHEST_KINDS:
            drawing.undrawn.append(label)
            continue
        kind, tweak = PADCHEST_KINDS[label]
        side, zone = padchest_place(locs)
        severity = study_severity or (1 + stable_seed(seed, label, "severity") % 2)
        made, inspiration = build_findings(
            kind, side, zone, severity, default=tweak, label=label, seed=seed, anat=anat
        )
        findings += made
        if inspiration is not None:
            drawing.inspiration = inspiration
        drawing.drawn.append(label)
    drawing.findings = _merge(findings)
    return drawing


def openi_drawing(major: list[str], *, seed: int, anat: Anatomy) -> StudyDrawing:
    """What one OpenI study shows, from its MeSH major tags."""
    drawing = StudyDrawing()
    findings: list[Finding] = []
    for tag in major:
        parts = [p.strip() for p in str(tag).split("/")]
        term = parts[0]
        if term in OPENI_NOT_FINDINGS or not term:
            continue
        if term not in OPENI_KINDS:
            drawing.undrawn.append(term)
            continue
        kind, tweak = OPENI_KINDS[term]
        side, zone, severity = openi_place(parts[1:])
        made, inspiration = build_findings(
            kind, side, zone, severity or 1, default=tweak, label=term, seed=seed, anat=anat
        )
        findings += made
        if inspiration is not None:
            drawing.inspiration = inspiration
        drawing.drawn.append(term)
    drawing.findings = _merge(findings)
    return drawing
