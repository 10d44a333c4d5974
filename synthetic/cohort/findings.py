"""Findings: what a study's image truly shows, and how each finding changes the chest.

A `Finding` is one visible abnormality or device with its laterality, size and location. The
hidden truth of a study is a tuple of findings; reports (`reports.py`) describe part of it and
the label files carry the labels of the report, never this truth.

Painting works on the two density maps of `anatomy.Chest.base_density`: ``tissue`` (added) and
``air`` (subtracted). Each painter takes the chest, both maps, the finding and a generator and
returns the new maps; all arrays ``float32 (S, S)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from synthetic.cohort.anatomy import (
    CM,
    SIDE_SIGN,
    SIDES,
    Chest,
    blob,
    gauss,
    smooth_noise,
    smoothstep,
)

# finding kind -> CheXpert label it truly is
LABEL_OF: dict[str, str] = {
    "cardiomegaly": "Cardiomegaly",
    "widened_mediastinum": "Enlarged Cardiomediastinum",
    "opacity": "Lung Opacity",
    "nodule": "Lung Lesion",
    "mass": "Lung Lesion",
    "edema": "Edema",
    "consolidation": "Consolidation",
    "pneumonia": "Pneumonia",
    "atelectasis": "Atelectasis",
    "pneumothorax": "Pneumothorax",
    "effusion": "Pleural Effusion",
    "pleural_thickening": "Pleural Other",
    "pleural_plaques": "Pleural Other",
    "rib_fracture": "Fracture",
    "ett": "Support Devices",
    "enteric_tube": "Support Devices",
    "central_line": "Support Devices",
    "picc": "Support Devices",
    "port": "Support Devices",
    "pacemaker": "Support Devices",
    "sternotomy": "Support Devices",
    "chest_tube": "Support Devices",
}
DEVICE_KINDS: frozenset[str] = frozenset(k for k, v in LABEL_OF.items() if v == "Support Devices")
SEVERITY_WORD: dict[int, str] = {1: "small", 2: "moderate", 3: "large"}


@dataclass(frozen=True)
class Finding:
    """One thing the image shows.

    Attributes:
        kind: A key of `LABEL_OF`.
        side: ``right``, ``left``, ``bilateral`` or ``""`` (midline / not lateralised).
        severity: 1 (small / mild) .. 3 (large / severe).
        zone: Where: a lobe (``upper``, ``middle``, ``lingula``, ``lower``), ``base``,
            ``apex``, ``lateral``, ``retrocardiac``; for devices the tip position
            (``svc``, ``cavoatrial``, ``right_atrium``, ``stomach``, ``esophagus``, ...).
        detail: Kind-specific extras, e.g. a nodule's ``(x, y, size_cm)``, a rib fracture's
            ``(rib, lateral_distance, healed)``, a tube tip's distance in cm, a line's access
            vein. Random layouts that must stay put between studies carry their own seed here.
    """

    kind: str
    side: str = ""
    severity: int = 1
    zone: str = ""
    detail: tuple = field(default=())

    @property
    def key(self) -> tuple[str, str, str]:
        """Identity across studies (what a comparison with the prior talks about)."""
        if self.kind in ("nodule", "mass", "rib_fracture"):
            return (self.kind, self.side, str(self.detail[:2]))
        return (self.kind, self.side, self.zone if self.kind not in DEVICE_KINDS else "")

    @property
    def label(self) -> str:
        return LABEL_OF[self.kind]


def sides_of(f: Finding) -> tuple[str, ...]:
    return SIDES if f.side == "bilateral" else ((f.side,) if f.side in SIDES else ())


# --------------------------------------------------------------------------- painters


def _effusion(ch: Chest, tissue, air, f: Finding, rng):
    for side in sides_of(f):
        sev = f.severity
        mask = ch.lung_mask[side]
        cp = ch.cp_y[side]
        Y = ch.Y
        if ch.pose.supine and sev >= 2:
            # a layering effusion: a veil that thickens toward the base, no meniscus
            veil = mask * smoothstep(ch.anat.apex_y + 0.2, cp - 0.05, Y) * (0.22 + 0.12 * sev)
            corner = mask * smoothstep(cp - 0.12, cp - 0.02, Y)
            fill = np.clip(veil + corner, 0, 0.95)
        else:
            q = ch.lateral_fraction(side)
            height = {1: 0.12, 2: 0.35, 3: 0.6}[sev] + rng.uniform(-0.02, 0.03)
            rise = {1: 0.10, 2: 0.22, 3: 0.28}[sev]
            # meniscus: the fluid climbs the lateral chest wall
            surface = cp - height + rise * (1.0 - q**3)
            fill = 0.95 * smoothstep(surface - 0.01, surface + 0.04, Y) * mask
        air = air * (1.0 - fill)
        tissue = tissue + 0.05 * fill
    return tissue, air


def _pneumothorax(ch: Chest, tissue, air, f: Finding, rng):
    side = f.side
    mask = ch.lung_mask[side]
    d = ch.wall_distance(side)
    gap = {1: 0.03, 2: 0.065, 3: 0.12}[f.severity]
    a = ch.anat
    if f.zone == "apex":
        region = 1.0 - smoothstep(a.apex_y + 0.25, a.apex_y + 0.55, ch.Y)
    else:
        q = ch.lateral_fraction(side)
        region = smoothstep(0.45, 0.7, q) * (
            1.0 - smoothstep(ch.cp_y[side] - 0.35, ch.cp_y[side] - 0.15, ch.Y)
        )
        region = np.maximum(region, 1.0 - smoothstep(a.apex_y + 0.2, a.apex_y + 0.4, ch.Y))
    space = mask * region * (1.0 - smoothstep(gap - 0.006, gap + 0.004, d))
    line = mask * region * np.exp(-(((d - gap) / 0.0045) ** 2))
    tissue = tissue - ch.vessel_term * space + 0.16 * line
    air = air + 0.12 * space
    # the edge of the collapsed lung is a little denser than the free air outside it
    rim = mask * region * np.exp(-(((d - gap - 0.02) / 0.02) ** 2))
    air = air * (1.0 - 0.2 * rim)
    if f.severity == 3:
        # the collapsed lung is denser
        air = air * (1.0 - 0.25 * mask * (1 - space))
    return tissue, air


def _consolidation(ch: Chest, tissue, air, f: Finding, rng):
    side_list = sides_of(f)
    for side in side_list:
        zone = ch.zone(side, f.zone)
        tex = smooth_noise(rng, ch.size, 7)
        core = smoothstep(0.1, 0.8, zone * (0.75 + 0.5 * tex)) * (0.72 + 0.08 * f.severity)
        air = air * (1.0 - core)
        tissue = tissue + 0.05 * core
        if "bronchograms" in f.detail:
            air = air + 0.35 * core * np.clip(ch.vessel_term * 6, 0, 1) * ch.lung_mask[side]
    return tissue, air


def _pneumonia(ch: Chest, tissue, air, f: Finding, rng):
    for side in sides_of(f):
        zone = ch.zone(side, f.zone)
        tex = smooth_noise(rng, ch.size, 14)
        tex2 = smooth_noise(rng, ch.size, 5)
        # the lobe is the envelope; fine and coarse mottling make it patchy
        mottling = smoothstep(-0.5, 0.6, 0.7 * tex + 0.45 * tex2)
        patch = np.clip(zone * 1.4, 0, 1) * (0.45 + 0.55 * mottling) * (0.72 + 0.08 * f.severity)
        air = air * (1.0 - patch)
        tissue = tissue + 0.03 * patch
    return tissue, air


def _opacity(ch: Chest, tissue, air, f: Finding, rng):
    for side in sides_of(f):
        zone = ch.zone(side, f.zone)
        tex = smooth_noise(rng, ch.size, 5)
        haze = np.clip(zone * (0.6 + 0.4 * tex), 0, 1) * (0.25 + 0.1 * f.severity)
        air = air * (1.0 - haze)
    return tissue, air


def _edema(ch: Chest, tissue, air, f: Finding, rng):
    sev = f.severity
    haze = np.zeros_like(air)
    for side in SIDES:
        hx, hy = ch.hilum(side)
        sg = SIDE_SIGN[side]
        r = 0.12 + 0.05 * sev
        w = gauss(ch.X, ch.Y, hx + sg * 0.1, hy + 0.08, r, r * 1.3)
        haze = haze + np.clip(w * 1.4, 0, 1) * ch.lung_mask[side]
    haze = haze * (0.3 + 0.17 * sev)
    tex = smooth_noise(rng, ch.size, 16)
    air = air * (1.0 - np.clip(haze * (0.85 + 0.3 * tex), 0, 0.9))
    # indistinct, engorged vessels
    tissue = tissue + 0.25 * ch.vessel_term * haze
    if sev >= 2:
        # Kerley B lines: short horizontal lines at the lateral bases
        for side in SIDES:
            sg = SIDE_SIGN[side]
            lw = ch.anat.side(ch.anat.lung_w, side)
            for _ in range(int(rng.integers(3, 6))):
                y = ch.cp_y[side] - rng.uniform(0.06, 0.28)
                x = sg * (lw - rng.uniform(0.02, 0.06))
                line = blob(ch.X, ch.Y, x, y, 0.05, 0.006)
                tissue = tissue + 0.08 * line * ch.lung_mask[side]
    return tissue, air


def _atelectasis(ch: Chest, tissue, air, f: Finding, rng):
    for side in sides_of(f):
        if f.zone == "retrocardiac":
            zone = ch.zone(side, "retrocardiac")
            air = air * (1.0 - 0.55 * zone)
            continue
        sg = SIDE_SIGN[side]
        lw = ch.anat.side(ch.anat.lung_w, side)
        top_of_dome = ch.cp_y[side] - ch.anat.dome_h
        n = 1 if f.severity == 1 else 2
        for _ in range(n):
            cx = sg * rng.uniform(0.3, lw - 0.15)
            cy = top_of_dome - rng.uniform(0.03, 0.15)
            length = rng.uniform(0.07, 0.14) * (1 + 0.25 * f.severity)
            thick = rng.uniform(0.012, 0.02) * (1 + 0.3 * (f.severity - 1))
            band = blob(ch.X, ch.Y, cx, cy, length, thick * 2.0, sg * rng.uniform(-0.3, 0.1)) ** 2
            band = band * ch.lung_mask[side]
            air = air * (1.0 - 0.4 * band)
        if f.severity >= 2:
            base = ch.zone(side, "base") * (1.0 - ch.lateral_fraction(side) * 0.5)
            air = air * (1.0 - 0.3 * base)
    return tissue, air


def _lesion(ch: Chest, tissue, air, f: Finding, rng):
    x, y, size_cm = f.detail[:3]
    r = size_cm * CM / 2
    prof = blob(ch.X, ch.Y, x, y, r, r)
    if f.kind == "mass":
        lob = np.random.default_rng(int(f.detail[3]))
        for _ in range(2):
            dx, dy = lob.uniform(-0.5, 0.5, 2) * r
            prof = np.maximum(prof, blob(ch.X, ch.Y, x + dx, y + dy, r * 0.7, r * 0.75))
    core = np.clip(prof * 1.4, 0, 1) ** 0.8
    air = air * (1.0 - 0.72 * core)
    tissue = tissue + 0.05 * prof
    return tissue, air


def _pleural_other(ch: Chest, tissue, air, f: Finding, rng):
    for side in sides_of(f):
        mask = ch.lung_mask[side]
        if f.kind == "pleural_thickening":
            d = ch.wall_distance(side)
            width = 0.015 + 0.01 * f.severity
            if f.zone == "apex":
                region = 1.0 - smoothstep(ch.anat.apex_y + 0.12, ch.anat.apex_y + 0.3, ch.Y)
            else:
                region = smoothstep(0.6, 0.8, ch.lateral_fraction(side))
            band = mask * region * (1.0 - smoothstep(width * 0.7, width * 1.2, d))
            air = air * (1.0 - 0.9 * band)
            tissue = tissue + 0.04 * band
        else:
            sg = SIDE_SIGN[side]
            lw = ch.anat.side(ch.anat.lung_w, side)
            # the plaques' layout is part of the finding (stable across studies)
            plq_rng = np.random.default_rng((int(f.detail[0]), SIDE_SIGN[side] + 1))
            for _ in range(2 + f.severity):
                y = plq_rng.uniform(-0.35, ch.cp_y[side] - 0.15)
                x = sg * (lw - plq_rng.uniform(0.0, 0.05))
                p = blob(ch.X, ch.Y, x, y, 0.018, plq_rng.uniform(0.05, 0.1), sg * 0.1)
                tissue = tissue + 0.28 * np.clip(p * 2, 0, 1) * (1 - 0.3 * plq_rng.random())
            # en-face plaques: irregular faint patches over the lung
            for _ in range(f.severity):
                x = sg * plq_rng.uniform(0.3, lw - 0.1)
                y = plq_rng.uniform(-0.2, ch.cp_y[side] - 0.25)
                p = blob(ch.X, ch.Y, x, y, plq_rng.uniform(0.04, 0.07), plq_rng.uniform(0.03, 0.05))
                tissue = tissue + 0.10 * np.clip(p * 3, 0, 1) * mask
    return tissue, air


PAINTERS = {
    "effusion": _effusion,
    "pneumothorax": _pneumothorax,
    "consolidation": _consolidation,
    "pneumonia": _pneumonia,
    "opacity": _opacity,
    "edema": _edema,
    "atelectasis": _atelectasis,
    "nodule": _lesion,
    "mass": _lesion,
    "pleural_thickening": _pleural_other,
    "pleural_plaques": _pleural_other,
}
# painted in this order so that fluid covers what lies under it and air overrides last
_ORDER = (
    "edema",
    "opacity",
    "pneumonia",
    "consolidation",
    "atelectasis",
    "nodule",
    "mass",
    "pleural_thickening",
    "pleural_plaques",
    "effusion",
    "pneumothorax",
)


def paint_findings(
    ch: Chest,
    tissue: np.ndarray,
    air: np.ndarray,
    findings: tuple[Finding, ...],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply every non-device finding to the density maps (see the module docstring)."""
    for kind in _ORDER:
        for f in findings:
            if f.kind == kind:
                tissue, air = PAINTERS[kind](ch, tissue, air, f, rng)
    return tissue, np.maximum(air, 0.0)


def fractures_of(findings: tuple[Finding, ...]) -> tuple:
    """Rib fractures in the form `anatomy.render_ribs` takes."""
    return tuple(
        (f.side, f.detail[0], f.detail[1], f.detail[2])
        for f in findings
        if f.kind == "rib_fracture"
    )


def severity_of(findings: tuple[Finding, ...], kind: str) -> int:
    return max((f.severity for f in findings if f.kind == kind), default=0)
