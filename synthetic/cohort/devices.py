"""Support devices drawn as thin, very bright (metal and contrast-striped) lines and shapes.

Each device is a `findings.Finding` whose kind is in `findings.DEVICE_KINDS`; its path is laid out
on the patient's anatomy for the study (`anatomy.Chest`): the endotracheal tube tip sits a given
number of centimetres above the carina, a central line's tip in the SVC, at the cavoatrial
junction or in the right atrium, the enteric tube runs down the oesophagus into the stomach under
the left hemidiaphragm, and so on. `render_devices` returns the added density, ``float32 (S, S)``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from synthetic.cohort.anatomy import CM, SIDE_SIGN, Chest, to_px
from synthetic.cohort.findings import DEVICE_KINDS, Finding

_SS = 2  # supersampling factor for anti-aliased lines


def _spline(points: list[tuple[float, float]], per: int = 10) -> list[tuple[float, float]]:
    """Catmull-Rom curve through ``points`` (normalised coordinates)."""
    if len(points) < 3:
        return points
    p = [points[0], *points, points[-1]]
    out: list[tuple[float, float]] = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = (np.asarray(p[j], dtype=np.float64) for j in (i - 1, i, i + 1, i + 2))
        for t in np.linspace(0, 1, per, endpoint=False):
            t2, t3 = t * t, t * t * t
            q = 0.5 * (
                (2 * p1)
                + (-p0 + p2) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                + (-p0 + 3 * p1 - 3 * p2 + p3) * t3
            )
            out.append((float(q[0]), float(q[1])))
    out.append(points[-1])
    return out


class _Canvas:
    """Two supersampled layers: faint tube walls and bright radiopaque metal / stripes."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.big = size * _SS
        self.wall = Image.new("L", (self.big, self.big), 0)
        self.metal = Image.new("L", (self.big, self.big), 0)
        self.dw = ImageDraw.Draw(self.wall)
        self.dm = ImageDraw.Draw(self.metal)

    def px(self, pts):
        return [to_px(self.big, x, y) for x, y in pts]

    def width(self, norm: float) -> int:
        return max(1, int(round(norm * self.big / 2)))

    def tube(self, pts, *, wall: float, stripe: float, gaps=()) -> None:
        """A tube: a faint wall of width ``wall`` and a bright stripe of width ``stripe``."""
        path = self.px(_spline(pts))
        if wall > 0:
            self.dw.line(path, fill=150, width=self.width(wall), joint="curve")
        self.dm.line(path, fill=255, width=self.width(stripe), joint="curve")
        for g in gaps:  # side holes interrupt the radiopaque stripe
            cx, cy = to_px(self.big, *g)
            r = self.width(0.012)
            self.dm.ellipse([cx - r, cy - r, cx + r, cy + r], fill=0)

    def wire(self, pts, *, width: float, fill: int = 255) -> None:
        self.dm.line(self.px(_spline(pts)), fill=fill, width=self.width(width), joint="curve")

    def density(self) -> np.ndarray:
        wall = self.wall.resize((self.size, self.size), Image.Resampling.BOX)
        metal = self.metal.resize((self.size, self.size), Image.Resampling.BOX)
        w = np.asarray(wall, dtype=np.float32) / 255.0
        m = np.asarray(metal, dtype=np.float32) / 255.0
        return 0.35 * w + 1.6 * m


def _landmarks(ch: Chest) -> dict[str, tuple[float, float]]:
    """Key positions (normalised) for laying out devices on this study's anatomy."""
    a = ch.anat
    right_border, left_border, bottom = ch.heart_extent()
    top = ch.heart_params[1]
    svc_x = -(a.med_w * ch.pose.mediastinum_scale) + 0.045
    return {
        "carina": (a.trachea_x, a.carina_y),
        "svc_top": (svc_x, a.clav_y + 0.14),
        "svc": (svc_x + 0.005, a.carina_y + 0.05),
        "cavoatrial": (svc_x + 0.01, top + 0.06),
        "right_atrium": (right_border + 0.09, top + 0.17),
        "rv_apex": (left_border - 0.10, bottom - 0.08),
        "stomach": (0.30, ch.cp_y["left"] - a.dome_h * 0.55 + 0.11),
        "gej": (0.07, ch.cp_y["left"] - a.dome_h * 0.85),
    }


def _draw_ett(c: _Canvas, ch: Chest, f: Finding) -> None:
    a = ch.anat
    tip_cm = f.detail[0] if f.detail else 4.0
    tip_y = a.carina_y - tip_cm * CM
    x = a.trachea_x
    pts = [(x + 0.02, -1.05), (x + 0.005, -0.8), (x, tip_y)]
    c.tube(pts, wall=0.045, stripe=0.009)


def _draw_enteric(c: _Canvas, ch: Chest, f: Finding) -> None:
    lm = _landmarks(ch)
    a = ch.anat
    x0 = a.trachea_x + 0.035
    pts = [(x0, -1.05), (x0 + 0.005, -0.6), (0.03, a.carina_y + 0.1), (0.045, 0.15)]
    if f.zone == "esophagus":
        pts.append((0.055, lm["gej"][1] - 0.12))
    else:
        gx, gy = lm["gej"]
        sx, sy = lm["stomach"]
        pts += [(gx, gy + 0.02), (sx - 0.05, sy - 0.03), (sx + 0.04, sy + 0.02)]
        if f.zone == "duodenum":
            pts += [(sx, sy + 0.1), (sx - 0.15, sy + 0.12)]
    c.tube(pts, wall=0.02, stripe=0.006)


def _venous_path(ch: Chest, kind: str, side: str, vein: str) -> list[tuple[float, float]]:
    """Access vein -> superior vena cava: the path of a central line before its tip."""
    a = ch.anat
    lm = _landmarks(ch)
    sg = SIDE_SIGN[side]
    svc_top = lm["svc_top"]
    if kind == "picc":
        arm = [
            (sg * 1.05, a.clav_y + 0.14),
            (sg * 0.8, a.clav_y + 0.06),
            (sg * 0.5, a.clav_y + 0.04),
            (sg * 0.22, a.clav_y + 0.10),
        ]
    elif kind == "port":
        arm = [
            (sg * 0.38, a.clav_y + 0.22),
            (sg * 0.30, a.clav_y + 0.03),
            (sg * 0.18, a.clav_y + 0.02),
        ]
    elif vein == "subclavian":
        arm = [(sg * 0.42, a.clav_y + 0.09), (sg * 0.25, a.clav_y + 0.06)]
    else:  # internal jugular
        arm = [(sg * 0.2, -1.05), (sg * 0.16, -0.82), (sg * 0.11, a.clav_y + 0.05)]
    if side == "left":
        # across the left brachiocephalic vein to the SVC
        arm += [(0.03, a.clav_y + 0.09)]
    return arm + [svc_top]


def _draw_line(c: _Canvas, ch: Chest, f: Finding) -> None:
    lm = _landmarks(ch)
    vein = f.detail[0] if f.detail else "internal jugular"
    pts = _venous_path(ch, f.kind, f.side, vein)
    tip = lm.get(f.zone, lm["svc"])
    if f.zone in ("cavoatrial", "right_atrium"):
        pts.append(lm["svc"])
    pts.append(tip)
    if f.kind == "port":
        x, y = pts[0]
        cx, cy = to_px(c.big, x, y)
        r = c.width(0.04)
        c.dm.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        r2 = c.width(0.022)
        c.dm.ellipse([cx - r2, cy - r2, cx + r2, cy + r2], fill=150)
    c.tube(pts, wall=0.0, stripe=0.007 if f.kind != "central_line" else 0.009)


def _draw_pacemaker(c: _Canvas, ch: Chest, f: Finding) -> None:
    a = ch.anat
    lm = _landmarks(ch)
    sg = SIDE_SIGN[f.side or "left"]
    n_leads, icd = (f.detail + (2, False))[:2] if f.detail else (2, False)
    gx, gy = sg * 0.44, a.clav_y + 0.19
    w, h = (0.085, 0.06) if not icd else (0.10, 0.075)
    box = [to_px(c.big, gx - w, gy - h), to_px(c.big, gx + w, gy + h)]
    c.dm.rounded_rectangle([box[0], box[1]], radius=c.width(0.03), fill=235)
    # the header block where the leads connect
    c.dm.rectangle(
        [to_px(c.big, gx - w * 0.6, gy - h - 0.02), to_px(c.big, gx + w * 0.2, gy - h)], fill=200
    )
    venous = [(gx - sg * 0.02, gy - h), (sg * 0.28, a.clav_y + 0.06), (sg * 0.12, a.clav_y + 0.11)]
    if f.side != "right":
        venous += [(0.02, a.clav_y + 0.14)]
    venous += [lm["svc_top"], lm["svc"], lm["cavoatrial"]]
    ra_x, ra_y = lm["right_atrium"]
    # right atrial lead: a J curving up into the appendage
    if n_leads >= 2:
        c.wire(venous + [(ra_x, ra_y + 0.04), (ra_x + 0.06, ra_y - 0.03)], width=0.006)
    rv = venous + [(ra_x + 0.03, ra_y + 0.06), (0.0, lm["rv_apex"][1] - 0.08), lm["rv_apex"]]
    c.wire(rv, width=0.007)
    if icd:
        c.wire([(0.0, lm["rv_apex"][1] - 0.08), lm["rv_apex"]], width=0.02)


def _draw_sternotomy(c: _Canvas, ch: Chest, f: Finding) -> None:
    a = ch.anat
    n = f.detail[0] if f.detail else 6
    rng = np.random.default_rng(int(f.detail[1]) if len(f.detail) > 1 else 0)
    y0 = a.clav_y + 0.14
    y1 = ch.heart_params[1] + 0.28
    for y in np.linspace(y0, y1, n):
        x = 0.01 + rng.uniform(-0.015, 0.015)
        rx, ry = rng.uniform(0.022, 0.032), rng.uniform(0.010, 0.016)
        bb = [to_px(c.big, x - rx, y - ry), to_px(c.big, x + rx, y + ry)]
        c.dm.ellipse(bb, outline=255, width=c.width(0.006))
        # twisted knot
        c.wire(
            [(x + rx * 0.9, y), (x + rx * 1.4, y + ry * 1.5), (x + rx * 1.2, y + ry * 2.4)],
            width=0.006,
        )


def _draw_chest_tube(c: _Canvas, ch: Chest, f: Finding) -> None:
    a = ch.anat
    sg = SIDE_SIGN[f.side or "right"]
    lw = a.side(a.lung_w, f.side or "right")
    cp = ch.cp_y[f.side or "right"]
    entry = (sg * (lw + 0.12), cp - 0.08)
    if f.zone == "base":
        pts = [
            entry,
            (sg * (lw - 0.05), cp - 0.16),
            (sg * (lw - 0.3), cp - 0.22),
            (sg * 0.3, cp - 0.3),
        ]
    else:
        pts = [
            entry,
            (sg * (lw - 0.04), cp - 0.2),
            (sg * (lw - 0.12), -0.1),
            (sg * 0.45, a.apex_y + 0.3),
            (sg * 0.36, a.apex_y + 0.2),
        ]
    hole = ((pts[1][0] + pts[2][0]) / 2, (pts[1][1] + pts[2][1]) / 2)
    c.tube(pts, wall=0.05, stripe=0.01, gaps=(hole,))


_DRAWERS = {
    "ett": _draw_ett,
    "enteric_tube": _draw_enteric,
    "central_line": _draw_line,
    "picc": _draw_line,
    "port": _draw_line,
    "pacemaker": _draw_pacemaker,
    "sternotomy": _draw_sternotomy,
    "chest_tube": _draw_chest_tube,
}


def render_devices(ch: Chest, findings: tuple[Finding, ...]) -> np.ndarray | None:
    """Added density of every device in ``findings``; None when there are none."""
    devices = [f for f in findings if f.kind in DEVICE_KINDS]
    if not devices:
        return None
    canvas = _Canvas(ch.size)
    # external, permanent devices first so lines and tubes draw over them
    for f in sorted(devices, key=lambda d: d.kind not in ("pacemaker", "sternotomy", "port")):
        _DRAWERS[f.kind](canvas, ch, f)
    return canvas.density()
