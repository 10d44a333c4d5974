"""Per-patient chest anatomy and the density maps of a frontal and a lateral radiograph.

Coordinates are normalised: ``x`` runs from -1 (image left, the patient's right) to +1 (image
right, the patient's left), ``y`` from -1 (top) to +1 (bottom). A *side* is ``"right"`` or
``"left"`` in the patient's sense; `SIDE_SIGN` maps it to the sign of ``x``.

Images are built in *density* units (projected attenuation, dimensionless): soft tissue through
the chest centre is about 1, aerated lung removes up to about 0.7, bone adds 0.1-0.4, metal adds
1.5 or more. `synthetic.cohort.acquisition` turns density into pixels. Every array here is
``float32`` of shape ``(S, S)`` with ``S`` the image side.

A patient's `Anatomy` is fixed for life (body and lung shape, heart size and position, rib spacing,
clavicle angle, mediastinal width, vessel tree); each study's `Chest` adds what varies (view,
inspiration, the heart's AP magnification, volume loss) and renders the anatomy for the findings
and devices to change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

SIDE_SIGN: dict[str, int] = {"right": -1, "left": 1}
SIDES: tuple[str, str] = ("right", "left")
CM = 0.055
"""One centimetre in normalised units (an adult chest is about 30 cm wide, about 1.65 units)."""


@lru_cache(maxsize=4)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(X, Y)``, each ``float32 (S, S)`` in [-1, 1]."""
    axis = ((np.arange(size, dtype=np.float32) + 0.5) / size) * 2.0 - 1.0
    return np.meshgrid(axis, axis)


def to_px(size: int, x: float, y: float) -> tuple[float, float]:
    """Normalised ``(x, y)`` to pixel ``(col, row)`` coordinates (PIL's convention)."""
    return ((x + 1.0) * 0.5 * size, (y + 1.0) * 0.5 * size)


def smoothstep(e0: float, e1: float, v: np.ndarray) -> np.ndarray:
    """Hermite step from 0 at ``e0`` to 1 at ``e1`` (either order)."""
    t = np.clip((v - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def blob(
    X: np.ndarray, Y: np.ndarray, cx: float, cy: float, rx: float, ry: float, angle: float = 0.0
) -> np.ndarray:
    """Dome profile ``sqrt(1 - r^2)`` of a rotated ellipse, 0 outside; ``float32 (S, S)``.

    ``X``, ``Y`` must be a `grid`; only the ellipse's bounding box is computed.
    """
    size = X.shape[0]
    out = np.zeros(X.shape, dtype=np.float32)
    r = max(rx, ry)
    c0, c1 = _span(cx - r, cx + r, size)
    r0, r1 = _span(cy - r, cy + r, size)
    if c0 >= c1 or r0 >= r1:
        return out
    ca, sa = math.cos(angle), math.sin(angle)
    dx, dy = X[r0:r1, c0:c1] - cx, Y[r0:r1, c0:c1] - cy
    u = (dx * ca + dy * sa) / rx
    v = (-dx * sa + dy * ca) / ry
    out[r0:r1, c0:c1] = np.sqrt(np.clip(1.0 - u * u - v * v, 0.0, 1.0))
    return out


def gauss(X: np.ndarray, Y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    """Axis-aligned Gaussian bump (peak 1), computed within 3 sigma; ``float32 (S, S)``."""
    size = X.shape[0]
    out = np.zeros(X.shape, dtype=np.float32)
    c0, c1 = _span(cx - 3 * sx, cx + 3 * sx, size)
    r0, r1 = _span(cy - 3 * sy, cy + 3 * sy, size)
    if c0 < c1 and r0 < r1:
        dx = (X[r0:r1, c0:c1] - cx) / sx
        dy = (Y[r0:r1, c0:c1] - cy) / sy
        out[r0:r1, c0:c1] = np.exp(-0.5 * (dx * dx + dy * dy))
    return out


def _span(lo: float, hi: float, size: int) -> tuple[int, int]:
    """Pixel index range covering normalised ``[lo, hi]``, clipped to the image."""
    a = int(math.floor((lo + 1.0) * 0.5 * size)) - 1
    b = int(math.ceil((hi + 1.0) * 0.5 * size)) + 1
    return max(0, a), min(size, b)


def resize(arr: np.ndarray, shape: tuple[int, int], *, smooth: bool = True) -> np.ndarray:
    """Resample a ``float32`` array to ``shape`` ``(rows, cols)``.

    Bicubic, or box when shrinking.
    """
    img = Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32))
    method = Image.Resampling.BICUBIC if smooth else Image.Resampling.BOX
    return np.asarray(img.resize((shape[1], shape[0]), method), dtype=np.float32)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field in about [-1, 1] with ``cells`` features across; ``float32 (S, S)``."""
    coarse = rng.standard_normal((cells + 2, cells + 2)).astype(np.float32)
    big = int(round(size * (cells + 2) / cells))
    fine = resize(coarse, (big, big))
    off = (big - size) // 2
    return fine[off : off + size, off : off + size] / 1.2


@dataclass(frozen=True)
class Anatomy:
    """A patient's stable anatomy, in normalised units (see the module docstring).

    Attributes:
        sex: ``F`` or ``M``.
        age: Age in years at the first study.
        body_w: Half-width of the torso.
        soft: Soft-tissue density scale (body habitus).
        lung_w: Lateral extent of each lung (``right``, ``left``), as a distance from the midline.
        apex_y: Height of the lung apices.
        cp_y: Costophrenic angle heights (``right``, ``left``); the left sits lower.
        dome_h: Height of the diaphragm domes above the costophrenic angles.
        med_w: Half-width of the upper mediastinum.
        heart: ``(cx, top, a_right, a_left, bottom, tilt)``: the heart's axis, top, its extent to
            the patient's right and left, its lower border and the apex lean.
        carina_y: Height of the carina.
        trachea_x: Horizontal position of the trachea.
        rib_spacing: Vertical distance between posterior ribs near the apex.
        rib_y0: Height of the first posterior rib at the spine.
        rib_arc: Curvature of the posterior ribs.
        clav_y: Height of the clavicles' medial ends.
        clav_angle: Upward tilt of the clavicles (radians).
        breast: Breast shadow density (0 for men).
        vessel_seed: Seed of the patient's pulmonary vessel tree.
    """

    sex: str
    age: int
    body_w: float
    soft: float
    lung_w: tuple[float, float]
    apex_y: float
    cp_y: tuple[float, float]
    dome_h: float
    med_w: float
    heart: tuple[float, float, float, float, float, float]
    carina_y: float
    trachea_x: float
    rib_spacing: float
    rib_y0: float
    rib_arc: float
    clav_y: float
    clav_angle: float
    breast: float
    vessel_seed: int

    def side(self, pair: tuple[float, float], side: str) -> float:
        return pair[0] if side == "right" else pair[1]


def sample_anatomy(rng: np.random.Generator, sex: str, age: int, habitus: float) -> Anatomy:
    """Draw a patient's anatomy; ``habitus`` in about [-1, 1] (thin .. large)."""
    u = rng.uniform
    lung_w = u(0.64, 0.74) + 0.03 * habitus
    cp = u(0.50, 0.60)
    return Anatomy(
        sex=sex,
        age=age,
        body_w=float(np.clip(u(0.84, 0.95) + 0.05 * habitus, 0.8, 1.02)),
        soft=float(u(0.92, 1.05) + 0.12 * habitus),
        lung_w=(float(lung_w + u(-0.02, 0.02)), float(lung_w + u(-0.02, 0.02))),
        apex_y=float(u(-0.80, -0.70)),
        cp_y=(float(cp), float(cp + u(0.03, 0.07))),
        dome_h=float(u(0.13, 0.20)),
        med_w=float(u(0.115, 0.145)),
        heart=(
            float(u(0.0, 0.04)),
            float(u(-0.10, -0.04)),
            float(u(0.22, 0.27)),
            float(u(0.31, 0.37)),
            float(cp + u(0.0, 0.04)),
            float(u(0.1, 0.4)),
        ),
        carina_y=float(u(-0.30, -0.22)),
        trachea_x=float(u(-0.03, 0.0)),
        rib_spacing=float(u(0.105, 0.13)),
        rib_y0=float(u(-0.86, -0.80)),
        rib_arc=float(u(0.8, 1.2)),
        clav_y=float(u(-0.66, -0.58)),
        clav_angle=float(u(0.08, 0.32)),
        breast=float(u(0.03, 0.07)) if sex == "F" else 0.0,
        vessel_seed=int(rng.integers(0, 2**31 - 1)),
    )


# --------------------------------------------------------------------------- static layers


def _vessel_segments(anat: Anatomy) -> list[tuple[float, float, float, float, float, int]]:
    """The patient's pulmonary vessel tree: ``(x0, y0, x1, y1, width_norm, generation)``."""
    rng = np.random.default_rng(anat.vessel_seed)
    segments: list[tuple[float, float, float, float, float, int]] = []
    for side in SIDES:
        sg = SIDE_SIGN[side]
        hx = sg * (anat.med_w + 0.07)
        hy = anat.carina_y + (0.14 if side == "right" else 0.10)
        # trunks: up, up-lateral, lateral, down-lateral, down (angles from +x lateral, y down)
        for base_angle in (-1.3, -0.8, -0.25, 0.3, 0.85, 1.35):
            stack = [
                (hx, hy, base_angle + rng.uniform(-0.12, 0.12), rng.uniform(0.10, 0.15), 0.02, 0)
            ]
            while stack:
                x, y, ang, length, width, gen = stack.pop()
                # two slightly bent pieces per branch
                xm = x + sg * math.cos(ang) * length * 0.5
                ym = y + math.sin(ang) * length * 0.5
                ang2 = ang + rng.uniform(-0.25, 0.25)
                x1 = xm + sg * math.cos(ang2) * length * 0.5
                y1 = ym + math.sin(ang2) * length * 0.5
                segments.append((x, y, xm, ym, width, gen))
                segments.append((xm, ym, x1, y1, width * 0.9, gen))
                if gen < 4:
                    for turn in (-1, 1):
                        if gen >= 2 and rng.random() < 0.25:
                            continue
                        stack.append(
                            (
                                x1,
                                y1,
                                ang2 + turn * rng.uniform(0.15, 0.5),
                                length * rng.uniform(0.6, 0.8),
                                width * 0.7,
                                gen + 1,
                            )
                        )
    return segments


def render_vessels(anat: Anatomy, size: int) -> np.ndarray:
    """Branching vessel markings (unmasked) that thin and fade outward; ``float32 (S, S)``."""
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    for x0, y0, x1, y1, width, gen in _vessel_segments(anat):
        w_px = max(1, int(round(width * size / 2)))
        fill = int(255 * (0.82**gen))
        draw.line([to_px(size, x0, y0), to_px(size, x1, y1)], fill=fill, width=w_px)
    out = np.asarray(img, dtype=np.float32) / 255.0
    return ndimage.gaussian_filter(out, 0.6 * size / 256)


_PROFILE_N = 256
_f = np.linspace(0.0, 1.0, _PROFILE_N, dtype=np.float64)
# a rib band across one rib period; cortical margins are a little brighter than the centre
_RIB_PROFILE = (
    0.75 * np.exp(-(((_f - 0.28) / 0.16) ** 4))
    + 0.35 * (np.exp(-(((_f - 0.13) / 0.05) ** 2)) + np.exp(-(((_f - 0.43) / 0.05) ** 2)))
).astype(np.float32)
_ANTERIOR_PROFILE = np.exp(-(((_f - 0.3) / 0.18) ** 2)).astype(np.float32)


def render_ribs(anat: Anatomy, size: int, *, fractures: tuple = ()) -> np.ndarray:
    """Posterior and anterior ribs as faint curved bands; ``float32 (S, S)`` in [0, 1].

    ``fractures`` holds ``(side, rib, s, healed)`` tuples: rib ``rib`` (1-based) on ``side`` gets
    a gap and a step at lateral distance ``s`` from the spine (healed ones a bright callus).
    """
    X, Y = grid(size)
    s = np.abs(X)
    # posterior ribs rise a little from the spine, then curve down laterally
    curve = -0.28 * s + anat.rib_arc * 1.05 * s * s
    z = Y - curve - anat.rib_y0
    # spacing widens downward: phase = z / spacing * (1 + growth)^-1
    phase = np.where(z > 0, z / (anat.rib_spacing * (1.0 + 0.35 * np.clip(z, 0, 2))), -1.0)
    for side, rib, s0, healed in fractures:
        on_side = (X * SIDE_SIGN[side]) > 0
        near = on_side & (np.abs(phase - (rib - 0.75)) < 0.9)
        step = 0.0 if healed else 0.5
        phase = np.where(near & (s > s0), phase + step, phase)
    n = np.floor(phase)
    frac = phase - n
    band = _RIB_PROFILE[(frac * (_PROFILE_N - 1)).astype(np.int32)]
    valid = (n >= 0) & (n < 10)
    lateral = 1.0 - smoothstep(0.62, 0.90, s)
    medial = smoothstep(0.02, 0.12, s)
    post = band * valid * lateral * medial
    # anterior ribs: fainter, sloping down toward the midline, only laterally
    za = Y + 0.55 * (0.85 - s) - anat.rib_y0 - 0.25
    pa = za / (anat.rib_spacing * 1.25)
    fa = pa - np.floor(pa)
    ant = (
        _ANTERIOR_PROFILE[(fa * (_PROFILE_N - 1)).astype(np.int32)]
        * ((pa >= 0) & (pa < 6))
        * smoothstep(0.25, 0.5, s)
    )
    ant *= 1.0 - smoothstep(0.75, 0.9, s)
    out = post + 0.35 * ant
    for side, rib, s0, healed in fractures:
        sg = SIDE_SIGN[side]
        on_rib = ((X * sg) > 0) & (n == rib - 1)
        gap = np.exp(-(((s - s0) / 0.02) ** 4))
        if healed:
            callus = blob(X, Y, sg * s0, 0, 0.035, 10.0) * on_rib
            out = out + 1.2 * callus
        else:
            in_band = on_rib & (frac < 0.5)
            out = out * (1.0 - 0.95 * gap * on_rib) - 0.6 * gap * in_band
    return out.astype(np.float32)


def render_clavicles(anat: Anatomy, size: int, *, ap: bool) -> np.ndarray:
    """Both clavicles, bright curved bands near the top; ``float32 (S, S)``."""
    X, Y = grid(size)
    s = np.abs(X)
    y0 = anat.clav_y - (0.07 if ap else 0.0)
    angle = anat.clav_angle * (0.45 if ap else 1.0)
    centre = y0 - math.tan(angle) * (s - 0.07) + 0.10 * np.sin((s - 0.07) * 5.5) * 0.35
    d = np.abs(Y - centre)
    thick = 0.04
    band = np.clip(1.0 - (d / thick) ** 2, 0.0, 1.0) ** 0.5
    extent = smoothstep(0.05, 0.08, s) * (1.0 - smoothstep(0.58, 0.64, s))
    return (band * extent).astype(np.float32)


def render_spine(anat: Anatomy, size: int) -> np.ndarray:
    """Thoracic spine: vertebral bodies with disc spaces and pedicles; ``float32 (S, S)``."""
    X, Y = grid(size)
    out = np.zeros((size, size), dtype=np.float32)
    # only the central columns are non-zero
    c0, c1 = int(size * 0.45), int(size * 0.55) + 1
    x, y = X[:, c0:c1], Y[:, c0:c1]
    body = np.clip(1.0 - (x / 0.06) ** 4, 0.0, 1.0)
    level = (y + 1.0) / 0.105
    discs = 0.75 + 0.25 * (np.cos(2 * np.pi * level) > -0.6)
    pedicles = np.exp(-(((np.abs(x) - 0.045) / 0.012) ** 2)) * (
        np.cos(2 * np.pi * (level + 0.25)) > 0.3
    )
    out[:, c0:c1] = body * discs * 0.8 + 0.5 * pedicles
    return out


@dataclass
class PatientLayers:
    """Layers computed once per patient and reused for each study (cached by key)."""

    anat: Anatomy
    size: int
    cache: dict = field(default_factory=dict)

    def get(self, key, make):
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def vessels(self) -> np.ndarray:
        return self.get("vessels", lambda: render_vessels(self.anat, self.size))

    def ribs(self, fractures: tuple) -> np.ndarray:
        return self.get(
            ("ribs", fractures), lambda: render_ribs(self.anat, self.size, fractures=fractures)
        )

    def clavicles(self, ap: bool) -> np.ndarray:
        return self.get(("clav", ap), lambda: render_clavicles(self.anat, self.size, ap=ap))

    def texture(self) -> np.ndarray:
        """Faint parenchymal mottling (multiplies the lung air), stable for the patient."""

        def make() -> np.ndarray:
            rng = np.random.default_rng(self.anat.vessel_seed + 1)
            return (1.0 + 0.05 * smooth_noise(rng, self.size, 24)).astype(np.float32)

        return self.get("texture", make)

    def spine(self) -> np.ndarray:
        return self.get("spine", lambda: render_spine(self.anat, self.size))

    def vertical(self) -> np.ndarray:
        """Lungs are thicker toward the bases (multiplies the air depth)."""

        def make() -> np.ndarray:
            _, Y = grid(self.size)
            return (0.78 + 0.30 * smoothstep(self.anat.apex_y, 0.3, Y)).astype(np.float32)

        return self.get("vertical", make)

    def hila(self) -> np.ndarray:
        def make() -> np.ndarray:
            X, Y = grid(self.size)
            a = self.anat
            out = np.zeros_like(X)
            for side in SIDES:
                hx = SIDE_SIGN[side] * (a.med_w + 0.07)
                hy = a.carina_y + (0.14 if side == "right" else 0.10)
                out += blob(X, Y, hx, hy, 0.06, 0.11)
            return out

        return self.get("hila", make)

    def vessel_map(self) -> np.ndarray:
        """Vessel markings fading toward the periphery (to be scaled by the lung depth)."""

        def make() -> np.ndarray:
            X, _ = grid(self.size)
            return (0.16 * self.vessels() * np.exp(-np.abs(X) * 0.6)).astype(np.float32)

        return self.get("vessel_map", make)

    def airways(self) -> np.ndarray:
        """Air in the trachea and main bronchi (added to the lung air)."""

        def make() -> np.ndarray:
            X, Y = grid(self.size)
            a = self.anat
            tx = a.trachea_x
            trachea = np.clip(1 - ((X - tx) / 0.042) ** 2, 0, 1)
            trachea *= (1 - smoothstep(a.carina_y - 0.02, a.carina_y + 0.02, Y)) * smoothstep(
                -1.0, -0.85, Y
            )
            out = 0.22 * trachea
            for side in SIDES:
                hx = SIDE_SIGN[side] * (a.med_w + 0.07)
                hy = a.carina_y + (0.14 if side == "right" else 0.10)
                ang = math.atan2(hy - a.carina_y, hx - tx)
                bronchus = blob(
                    X,
                    Y,
                    (tx + hx) / 2,
                    (a.carina_y + hy) / 2,
                    math.hypot(hx - tx, hy - a.carina_y) / 2,
                    0.022,
                    ang,
                )
                out += 0.08 * np.clip(bronchus * 3, 0, 1)
            return out.astype(np.float32)

        return self.get("airways", make)

    def lung_weighted(self, fractures: tuple) -> np.ndarray:
        """What shows differently inside the lungs: ribs and hila more, the spine less."""

        def make() -> np.ndarray:
            return (0.045 * self.ribs(fractures) - 0.06 * self.spine() + 0.08 * self.hila()).astype(
                np.float32
            )

        return self.get(("lung_weighted", fractures), make)

    def static(self, ap: bool, supine: bool, fractures: tuple) -> np.ndarray:
        """Everything outside the lungs' influence: body, bones, breasts, scapulae, hila."""

        def make() -> np.ndarray:
            X, Y = grid(self.size)
            a = self.anat
            out = self.body() + 0.08 * self.hila() + 0.10 * self.spine()
            out = out + 0.055 * self.ribs(fractures) + 0.20 * self.clavicles(ap)
            if a.breast > 0:
                # breast shadows: density builds up toward a sharp, curved lower margin
                cy, cx, rx, ry = 0.36 - (0.05 if supine else 0.0), 0.45, 0.36, 0.26
                t = (np.abs(X) - cx) / rx
                margin = cy + ry * np.sqrt(np.clip(1.0 - t * t, 0.0, 1.0))
                shadow = smoothstep(margin - 0.3, margin - 0.02, Y) * (
                    1.0 - smoothstep(margin - 0.01, margin + 0.01, Y)
                )
                out = out + a.breast * shadow * np.clip(1.0 - t**4, 0.0, 1.0)
            if ap:
                # scapulae project over the upper lateral lungs on AP films
                for sg in (-1, 1):
                    out = out + 0.035 * np.clip(
                        blob(X, Y, sg * 0.74, -0.42, 0.13, 0.34, sg * 0.25) * 3, 0, 1
                    )
            return out.astype(np.float32)

        return self.get(("static", ap, supine, fractures), make)

    def body(self) -> np.ndarray:
        def make() -> np.ndarray:
            X, Y = grid(self.size)
            a = self.anat
            neck = 0.30
            half = neck + (a.body_w - neck) * smoothstep(-1.0, -0.72, Y)
            t = np.sqrt(np.clip(1.0 - (X / half) ** 2, 0.0, 1.0))
            trunk = a.soft * (0.55 * t + 0.45 * np.sqrt(t))
            # arms alongside the trunk (a dark axillary gap between), humeral heads on top
            arm_x = np.abs(X) - (a.body_w + 0.19)
            arms = np.sqrt(np.clip(1.0 - (arm_x / 0.15) ** 2, 0, 1)) * smoothstep(-0.95, -0.75, Y)
            arms = arms * (1.0 - smoothstep(0.2, 0.6, Y)) * 0.55
            heads = sum(blob(X, Y, sg * (a.body_w + 0.12), -0.78, 0.11, 0.12) for sg in (-1, 1))
            return (trunk + arms + 0.22 * np.clip(heads * 2, 0, 1)).astype(np.float32)

        return self.get("body", make)


# --------------------------------------------------------------------------- per study


@dataclass(frozen=True)
class Pose:
    """What varies between a patient's frontal studies (besides the findings).

    Attributes:
        ap: AP projection (portable, heart magnified, clavicles higher) rather than PA.
        supine: Lying down (effusions layer, lower volumes).
        inspiration: Diaphragm shift; positive = deeper breath (domes lower).
        volume_loss: Extra elevation of each hemidiaphragm (``right``, ``left``).
        heart_scale: Enlargement factor of the heart (cardiomegaly), before AP magnification.
        mediastinum_scale: Widening factor of the upper mediastinum.
    """

    ap: bool = False
    supine: bool = False
    inspiration: float = 0.0
    volume_loss: tuple[float, float] = (0.0, 0.0)
    heart_scale: float = 1.0
    mediastinum_scale: float = 1.0


class Chest:
    """One study's frontal anatomy: lung masks, heart, zones, and the base density map."""

    def __init__(self, layers: PatientLayers, pose: Pose) -> None:
        self.layers = layers
        self.anat = layers.anat
        self.pose = pose
        self.size = layers.size
        self.X, self.Y = grid(self.size)
        a = self.anat
        mag = 1.12 if pose.ap else 1.0
        cx, top, ar, al, bottom, tilt = a.heart
        hs = pose.heart_scale
        top = top - 0.08 * (hs - 1) - (0.03 if pose.ap else 0.0)
        self.heart_params = (
            cx + 0.05 * (hs - 1),
            top,
            ar * (1 + 0.8 * (hs - 1)) * mag,
            al * hs * mag,
            bottom + 0.04 * (hs - 1),
            tilt,
        )
        self.cp_y = {
            side: a.side(a.cp_y, side)
            - 0.05 * pose.inspiration * -1.0
            - (0.06 if pose.supine else 0.0)
            - a.side(pose.volume_loss, side)
            for side in SIDES
        }
        self.lung_mask = {side: self._lung_mask(side) for side in SIDES}
        self._dist: dict[str, np.ndarray] = {}

    # geometry -------------------------------------------------------------
    def med_halfwidth(self, y: float, side: str) -> float:
        """Half-width of the mediastinum at height ``y`` on ``side`` (normalised)."""
        a = self.anat
        w = a.med_w * self.pose.mediastinum_scale * (1.08 if self.pose.ap else 1.0)
        neck = 0.07 + (w - 0.07) * min(1.0, max(0.0, (y - a.apex_y) / 0.3))
        # below the hila the heart forms the border; the lung reaches behind it
        low = min(1.0, max(0.0, (y - a.carina_y - 0.12) / 0.25))
        neck = neck - (neck - 0.06) * low
        if side == "left":
            knob = 0.05 * math.exp(-(((y - (a.carina_y - 0.07)) / 0.055) ** 2))
            pa = -0.012 * math.exp(-(((y - (a.carina_y + 0.08)) / 0.05) ** 2))
            return neck + (knob + pa) * self.pose.mediastinum_scale
        # right: the SVC / ascending aorta bulge gently above the heart
        return neck + 0.02 * math.exp(-(((y - (a.carina_y + 0.02)) / 0.12) ** 2))

    def lung_outline(self, side: str) -> list[tuple[float, float]]:
        """Lung polygon in normalised coordinates: apex arc, lateral wall, dome, medial border."""
        a = self.anat
        sg = SIDE_SIGN[side]
        lw = a.side(a.lung_w, side)
        cp = self.cp_y[side]
        dome = a.dome_h * (1.1 if side == "right" else 0.9)
        r_ap = 0.16
        ax, ay = 0.34, a.apex_y + r_ap
        pts: list[tuple[float, float]] = []
        # apex arc from the medial side over the top to the lateral side
        for t in np.linspace(math.pi, 2 * math.pi, 10):
            pts.append((ax + r_ap * math.cos(t) * 1.05, ay + r_ap * math.sin(t)))
        # lateral wall down to the costophrenic angle
        s_top = ax + r_ap * 1.05
        for t in np.linspace(0.0, 1.0, 14)[1:]:
            pts.append((s_top + (lw - s_top) * (1 - (1 - t) ** 2.4), ay + (cp - ay) * t))
        # diaphragm dome from the costophrenic angle to the cardiophrenic angle
        s_med = 0.05
        for t in np.linspace(0.0, 1.0, 14)[1:]:
            rise = math.sin(min(t / 0.6, 1.0) * math.pi / 2) ** 0.55
            fall = 0.3 * max(0.0, (t - 0.6) / 0.4) ** 2
            pts.append((lw - (lw - s_med) * t, cp - dome * (rise - fall)))
        # medial border up along the mediastinum
        y_low = pts[-1][1]
        for y in np.linspace(y_low, ay, 12)[1:]:
            pts.append((self.med_halfwidth(float(y), side) + 0.01, float(y)))
        return [(sg * s, y) for s, y in pts]

    def _lung_mask(self, side: str) -> np.ndarray:
        """Anti-aliased lung mask, 0..1."""
        return _polygon_mask(self.size, self.lung_outline(side))

    def wall_distance(self, side: str) -> np.ndarray:
        """Distance (normalised) from each point inside a lung to its border; 0 outside."""
        if side not in self._dist:
            d = ndimage.distance_transform_edt(self.lung_mask[side] > 0.5)
            self._dist[side] = (d * (2.0 / self.size)).astype(np.float32)
        return self._dist[side]

    def lateral_fraction(self, side: str) -> np.ndarray:
        """0 at the medial lung border, 1 at the lateral wall (clipped), ``float32 (S, S)``."""
        lw = self.anat.side(self.anat.lung_w, side)
        s = self.X * SIDE_SIGN[side]
        return np.clip((s - self.anat.med_w) / (lw - self.anat.med_w), 0.0, 1.0)

    def hilum(self, side: str) -> tuple[float, float]:
        a = self.anat
        return (
            SIDE_SIGN[side] * (a.med_w + 0.07),
            a.carina_y + (0.14 if side == "right" else 0.10),
        )

    def zone(self, side: str, lobe: str) -> np.ndarray:
        """Soft weight (0..1) of a lobe's region in projection, inside the lung of ``side``.

        ``lobe``: ``upper``, ``middle`` (right) / ``lingula`` (left), ``lower``, ``base``
        (costophrenic region), ``apex``, ``perihilar``, ``retrocardiac`` (left).
        """
        Y = self.Y
        q = self.lateral_fraction(side)
        a = self.anat
        hy = self.hilum(side)[1]
        cp = self.cp_y[side]
        if lobe == "upper":
            # the right upper lobe ends at the horizontal fissure; the left one fades out
            w = 1.0 - (
                smoothstep(hy - 0.05, hy + 0.03, Y)
                if side == "right"
                else smoothstep(hy - 0.2, hy + 0.15, Y)
            )
        elif lobe == "apex":
            w = 1.0 - smoothstep(a.apex_y + 0.18, a.apex_y + 0.32, Y)
        elif lobe in ("middle", "lingula"):
            # abuts the heart border (silhouette sign), bounded above by the fissure
            # medial, between the hilum and the diaphragm, against the heart border
            top = (
                smoothstep(hy - 0.02, hy + 0.05, Y)
                if side == "right"
                else smoothstep(hy - 0.08, hy + 0.12, Y)
            )
            w = top * (1.0 - smoothstep(0.2, 0.8, q))
        elif lobe == "lower":
            w = smoothstep(hy, hy + 0.4, Y) * (0.5 + 0.5 * smoothstep(0.1, 0.7, q))
        elif lobe == "base":
            w = smoothstep(cp - 0.35, cp - 0.2, Y)
        elif lobe == "perihilar":
            hx, hy2 = self.hilum(side)
            w = blob(self.X, Y, hx + SIDE_SIGN[side] * 0.1, hy2 + 0.05, 0.26, 0.32)
        elif lobe == "retrocardiac":
            w = smoothstep(hy + 0.05, hy + 0.2, Y) * (1.0 - smoothstep(0.2, 0.45, q))
        else:
            raise ValueError(f"unknown lobe {lobe!r}")
        return (w * self.lung_mask[side]).astype(np.float32)

    def heart_profile(self) -> np.ndarray:
        """The heart's dome profile (0..1), extending further to the patient's left.

        The right border bulges most at mid-height; the left border reaches furthest low down,
        at the apex, which is rounded onto the left hemidiaphragm.
        """
        cx, top, ar, al, bottom, tilt = self.heart_params
        # the borders depend on the row only: compute them per row, then broadcast
        X = self.X
        t = ((self.Y[:, :1] - top) / (bottom - top)).astype(np.float32)
        tc = np.clip(t, 0.0, 1.0)
        right = ar * np.clip(np.sin(np.pi * np.clip(0.15 + 0.85 * tc, 0, 1) ** 0.9), 0, 1) ** 0.55
        grow = np.sin(np.pi / 2 * np.clip(tc / 0.72, 0, 1)) ** 0.8
        apex = np.sqrt(np.clip(1.0 - ((tc - 0.72) / 0.34) ** 2, 0, 1))
        left = al * (0.35 + 0.65 * np.where(tc < 0.72, grow, apex))
        # the apex leans to the left as the heart is tilted
        shift = tilt * 0.25 * tc
        mid = cx + shift + (left - right) / 2
        half = (left + right) / 2
        inside = np.clip(1.0 - ((X - mid) / half) ** 2, 0.0, 1.0)
        vert = smoothstep(-0.05, 0.08, t) * (1.0 - smoothstep(1.0, 1.15, t))
        return (np.sqrt(inside) * vert).astype(np.float32)

    def heart_extent(self) -> tuple[float, float, float]:
        """Approximate (right border x, left border x, lower border y) of the heart."""
        cx, top, ar, al, bottom, tilt = self.heart_params
        return cx - ar, cx + al + tilt * 0.2, bottom

    # density ---------------------------------------------------------------
    def base_density(self, *, fractures: tuple = ()) -> tuple[np.ndarray, np.ndarray]:
        """The normal chest: returns ``(tissue, air)`` density maps.

        ``tissue`` is everything that adds density (soft tissue, bone, heart); ``air`` is the
        aerated lung to be subtracted. Findings edit both before they are combined. Layers that
        do not depend on the study's lungs are cached per patient (`PatientLayers.static`).
        """
        L, a, Y = self.layers, self.anat, self.Y
        lungs = self.lung_mask["right"] + self.lung_mask["left"]
        # lung air thickness: blurred mask inside the mask -> sharp edge, deeper centre
        small = self.size // 4
        coarse = resize(lungs, (small, small), smooth=False)
        deep = resize(ndimage.gaussian_filter(coarse, 0.06 * small), (self.size, self.size))
        depth = lungs * (0.25 + 0.75 * np.clip(deep * 1.6, 0, 1) ** 1.3) * L.vertical()
        heart = self.heart_profile()
        self.depth = depth
        air = 0.47 * depth * (1.0 - 0.88 * np.clip(heart * 3.0, 0, 1)) * L.texture() + L.airways()
        self.vessel_term = depth * L.vessel_map()
        tissue = (
            L.static(self.pose.ap, self.pose.supine, fractures) + 0.08 * heart + self.vessel_term
        )
        tissue += lungs * L.lung_weighted(fractures)
        # gastric bubble under the left hemidiaphragm
        cp_l = self.cp_y["left"]
        air += (
            0.30
            * blob(self.X, Y, 0.32, cp_l - a.dome_h * 0.6 + 0.09, 0.11, 0.05)
            * (Y > cp_l - a.dome_h * 0.8 + 0.06)
        )
        return tissue, air


# --------------------------------------------------------------------------- lateral view


def _chaikin(points: list[tuple[float, float]], rounds: int = 3) -> list[tuple[float, float]]:
    """Round a closed polygon's corners by Chaikin corner cutting."""
    pts = np.asarray(points, dtype=np.float64)
    for _ in range(rounds):
        nxt = np.roll(pts, -1, axis=0)
        pts = np.stack([0.75 * pts + 0.25 * nxt, 0.25 * pts + 0.75 * nxt], axis=1).reshape(-1, 2)
    return [(float(x), float(y)) for x, y in pts]


def _polygon_mask(size: int, points: list[tuple[float, float]]) -> np.ndarray:
    """Anti-aliased filled polygon (normalised coordinates), ``float32 (S, S)`` in [0, 1]."""
    big = size * 2
    img = Image.new("L", (big, big), 0)
    ImageDraw.Draw(img).polygon([to_px(big, x, y) for x, y in points], fill=255)
    return np.asarray(img.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0


def _lateral_base(anat: Anatomy, size: int) -> dict:
    """The parts of a lateral view that do not change between studies (cached per patient)."""
    X, Y = grid(size)
    a = anat
    front, back = -0.70 - 0.05 * (a.body_w - 0.9) * 4, 0.86
    cx, half = (front + back) / 2, (back - front) / 2
    t = np.sqrt(np.clip(1.0 - ((X - cx) / half) ** 2, 0, 1))
    body = a.soft * (0.6 * t + 0.5 * np.sqrt(t))
    # shoulders and raised arms over the upper chest
    body = body + 0.25 * gauss(X, Y, 0.05, -1.0, 0.45, 0.18)
    cp_post = max(a.cp_y) + 0.10
    apex = a.apex_y - 0.02
    outline = [(-0.02, apex - 0.02), (0.14, apex + 0.03), (0.32, apex + 0.15)]
    outline += [
        (0.50, -0.40),
        (0.56, 0.0),
        (0.60, cp_post - 0.1),
        (0.63, cp_post + 0.02),
    ]  # posterior
    # diaphragm: from the posterior sulcus, domed, up to the anterior costophrenic angle
    for u in np.linspace(0.0, 1.0, 12)[1:]:
        x = 0.62 - u * (0.62 + 0.60)
        y = cp_post - 0.30 * math.sin(min(u / 0.75, 1.0) * math.pi / 2) - 0.05 * u
        outline.append((x, y))
    outline += [(-0.62, -0.1), (-0.55, -0.42), (-0.38, apex + 0.2), (-0.2, apex + 0.04)]  # anterior
    lung = _polygon_mask(size, _chaikin(outline))
    small = size // 4
    deep = resize(
        ndimage.gaussian_filter(resize(lung, (small, small), smooth=False), 0.08 * small),
        (size, size),
    )
    depth = lung * (0.3 + 0.7 * np.clip(deep * 1.5, 0, 1))
    # trachea: down and back to the carina
    tx = 0.02 + 0.12 * (Y + 1.0)
    trachea = (
        np.clip(1 - ((X - tx) / 0.035) ** 2, 0, 1) * (Y < a.carina_y) * smoothstep(-1.0, -0.85, Y)
    )
    # vertebral bodies with disc spaces, posterior
    spine_x = 0.66 + 0.05 * Y
    spine = np.clip(1.0 - ((X - spine_x) / 0.09) ** 4, 0, 1) * (
        0.8 + 0.2 * (np.cos(2 * np.pi * (Y + 1) / 0.11) > -0.6)
    )
    sternum = (
        np.clip(1.0 - ((X - (front + 0.07)) / 0.02) ** 2, 0, 1)
        * smoothstep(-0.6, -0.5, Y)
        * (1 - smoothstep(0.2, 0.3, Y))
    )
    return {
        "tissue": (body + 0.22 * spine + 0.18 * sternum).astype(np.float32),
        "lung": lung,
        "depth": depth.astype(np.float32),
        "trachea": (0.25 * trachea).astype(np.float32),
        "tx": tx,
        "front": front,
        "cp_post": cp_post,
        "fluid_x": (X > -0.2) * lung,
        "surface_dx": 0.25 * np.clip(X - 0.1, 0, 1),
    }


def lateral_density(
    layers: PatientLayers, *, heart_scale: float, effusion: tuple[int, int], devices: list[str]
) -> np.ndarray:
    """A simpler lateral radiograph, anterior to the image left; ``float32 (S, S)`` density.

    Lungs between the sternum and the spine, the heart anterior and low, both hemidiaphragms
    sloping down to the deep posterior costophrenic sulci, the trachea running down and back,
    vertebral bodies with disc spaces; effusions fill the posterior sulci with a meniscus.
    """
    a, size = layers.anat, layers.size
    base = layers.get("lateral", lambda: _lateral_base(a, size))
    X, Y = grid(size)
    heart = blob(X, Y, -0.26, 0.22, 0.34 * heart_scale, 0.27 * heart_scale, -0.45)
    air = 0.55 * base["depth"] * (1.0 - 0.62 * np.clip(heart * 1.6, 0, 1)) + base["trachea"]
    cp_post, front, tx = base["cp_post"], base["front"], base["tx"]
    fluid = np.zeros_like(X)
    for n in effusion:
        if n:
            # fluid layers in the posterior sulcus, climbing the back wall
            level = cp_post - 0.06 - 0.13 * n
            surface = level - base["surface_dx"]
            fluid = np.maximum(
                fluid, smoothstep(surface - 0.01, surface + 0.04, Y) * base["fluid_x"]
            )
    air = air * (1.0 - 0.95 * fluid)
    dens = base["tissue"] + 0.04 * heart - air
    for dev in devices:
        if dev == "ett":
            dens = dens + 1.4 * (np.abs(X - tx) < 0.007) * (Y < a.carina_y - 0.15)
        elif dev == "ng":
            dens = dens + 1.4 * (np.abs(X - (tx + 0.12)) < 0.006) * (Y < cp_post + 0.1)
        elif dev == "pacer":
            dens = dens + 1.8 * np.clip(blob(X, Y, front + 0.1, -0.5, 0.09, 0.05) * 3, 0, 1)
        elif dev == "wires":
            for k in range(5):
                dens = dens + 1.6 * np.clip(
                    blob(X, Y, front + 0.07, -0.42 + 0.13 * k, 0.015, 0.025) * 2, 0, 1
                )
    return dens.astype(np.float32)
