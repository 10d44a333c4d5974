"""Acquisition: projection, positioning, exposure, blur, noise and burned-in markers.

Applied last, to the density map of a study (``float32 (S, S)``, see `anatomy`), it produces the
8-bit grayscale image. The two sites differ here on purpose (docs/phantom.md): site A is a
well-exposed, edge-enhanced department with mostly PA films and small laterality markers; site B
shoots more portable AP films, with a flatter, brighter and noisier look, larger rotations,
black collimation borders and large burned-in text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage


@dataclass(frozen=True)
class Acquisition:
    """How one image was taken.

    Attributes:
        view: ``PA``, ``AP`` or ``LATERAL``.
        supine: Patient lying down (portable AP films).
        rotation: In-plane rotation in degrees (positioning).
        shift: ``(dx, dy)`` offset of the patient in normalised units.
        zoom: Field-of-view scale (> 1 shows the patient larger).
        gain: Exposure: density-to-attenuation factor.
        window: ``(low, high)`` display window on attenuation in [0, 1].
        gamma: Display gamma.
        blur: Gaussian blur sigma in pixels at 256 px (scaled with the image size).
        sharpen: Unsharp-mask amount (0 for none).
        noise: Noise standard deviation (fraction of full scale).
        marker: Laterality marker letter (``L``/``R``) or empty.
        text: Burned-in annotation (e.g. ``PORTABLE``) or empty.
        border: Collimation borders in pixels at 256 px, ``(top, bottom, left, right)``.
        site: ``A`` or ``B``.
    """

    view: str
    supine: bool
    rotation: float
    shift: tuple[float, float]
    zoom: float
    gain: float
    window: tuple[float, float]
    gamma: float
    blur: float
    sharpen: float
    noise: float
    marker: str
    text: str
    border: tuple[int, int, int, int]
    site: str


def sample_acquisition(rng: np.random.Generator, site: str, view: str, supine: bool) -> Acquisition:
    """Draw the acquisition of one image in ``site``'s style."""
    u = rng.uniform
    ap = view == "AP"
    if site == "A":
        text = ""
        if ap:
            text = str(
                rng.choice(
                    ["PORTABLE", "PORTABLE", "AP PORTABLE", "SUPINE" if supine else "UPRIGHT"]
                )
            )
        return Acquisition(
            view=view,
            supine=supine,
            rotation=float(u(-4.0, 4.0) if ap else u(-2.0, 2.0)),
            shift=(float(u(-0.035, 0.035)), float(u(-0.03, 0.04))),
            zoom=float(u(0.95, 1.05) if not ap else u(0.93, 1.08)),
            gain=float(u(1.55, 1.85)),
            window=(float(u(0.12, 0.17)), float(u(0.97, 1.0))),
            gamma=float(u(1.1, 1.3)),
            blur=float(u(0.45, 0.7)),
            sharpen=float(u(0.5, 0.9)),
            noise=float(u(0.006, 0.012)),
            marker="L" if rng.random() < 0.8 else "R",
            text=text,
            border=(0, 0, 0, 0),
            site=site,
        )
    border = tuple(int(v) for v in rng.integers(0, 18, 4) * (rng.random(4) < 0.6))
    return Acquisition(
        view=view,
        supine=supine,
        rotation=float(u(-6.0, 6.0) if ap else u(-3.5, 3.5)),
        shift=(float(u(-0.06, 0.06)), float(u(-0.05, 0.06))),
        zoom=float(u(0.88, 1.02)),
        gain=float(u(1.25, 2.0)),
        window=(float(u(0.06, 0.11)), float(u(0.93, 0.99))),
        gamma=float(u(0.95, 1.1)),
        blur=float(u(0.9, 1.3)),
        sharpen=0.0,
        noise=float(u(0.02, 0.035)),
        marker="R",
        text=("AP PORTABLE" if ap else "PA") + (" SUPINE" if supine else ""),
        border=border,  # type: ignore[arg-type]
        site=site,
    )


@lru_cache(maxsize=8)
def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=px)
    except (TypeError, OSError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _warp(density: np.ndarray, acq: Acquisition) -> np.ndarray:
    """Rotate, shift and zoom the density map about the image centre (air fills the edges)."""
    size = density.shape[0]
    theta = math.radians(acq.rotation)
    c, s = math.cos(theta), math.sin(theta)
    # output (x, y) -> input (x, y): the inverse of "zoom, rotate, then shift" about the centre
    m = np.array([[c, -s], [s, c]], dtype=np.float64) / acq.zoom
    centre = np.array([size / 2, size / 2])
    shift_px = np.array(acq.shift) * size / 2
    offset = centre - m @ (centre + shift_px)
    img = Image.fromarray(np.ascontiguousarray(density, dtype=np.float32))
    out = img.transform(
        (size, size),
        Image.Transform.AFFINE,
        (m[0, 0], m[0, 1], offset[0], m[1, 0], m[1, 1], offset[1]),
        resample=Image.Resampling.BILINEAR,
        fillcolor=0.0,
    )
    return np.asarray(out, dtype=np.float32)


def _burn_in(img: Image.Image, acq: Acquisition) -> None:
    size = img.size[0]
    draw = ImageDraw.Draw(img)
    scale = size / 256
    if acq.marker:
        fpx = int(round((11 if acq.site == "A" else 15) * scale))
        font = _font(fpx)
        x = int(size * (0.86 if acq.marker == "L" else 0.07))
        y = int(size * 0.09)
        if acq.site == "B":
            pad = int(2 * scale)
            draw.rectangle([x - pad, y - pad, x + fpx * 0.8 + pad, y + fpx + pad], fill=235)
            draw.text((x, y), acq.marker, fill=20, font=font)
        else:
            draw.text((x, y), acq.marker, fill=250, font=font)
    if acq.text:
        fpx = int(round((8 if acq.site == "A" else 12) * scale))
        x = int(size * (0.04 if acq.site == "A" else 0.30))
        y = int(size * (0.02 if acq.site == "A" else 0.90))
        draw.text((x, y), acq.text, fill=235, font=_font(fpx))


_LUT_STEPS = 1024  # per unit of density
_LUT_SIZE = 4 * _LUT_STEPS


def _tone(acq: Acquisition) -> np.ndarray:
    """Lookup table density -> display value in [0, 1]: attenuation, window, gamma."""
    d = np.arange(_LUT_SIZE, dtype=np.float64) / _LUT_STEPS
    att = 1.0 - np.exp(-acq.gain * d)
    lo, hi = acq.window
    return (np.clip((att - lo) / (hi - lo), 0.0, 1.0) ** acq.gamma).astype(np.float32)


def expose(density: np.ndarray, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """Turn a density map into the final ``uint8 (S, S)`` image (dense = bright)."""
    size = density.shape[0]
    k = size / 256
    d = _warp(density, acq)
    if acq.blur > 0:
        d = ndimage.gaussian_filter(d, acq.blur * k)
    img = _tone(acq)[np.clip(d * _LUT_STEPS, 0, _LUT_SIZE - 1).astype(np.int32)]
    if acq.sharpen > 0:
        low = ndimage.uniform_filter(img, size=max(3, int(7 * k) | 1))
        img = img + acq.sharpen * (img - low)
    # heel effect: a gentle vertical gradient of exposure
    img = img * (0.97 + 0.06 * np.linspace(0, 1, size, dtype=np.float32))[:, None]
    noise = rng.standard_normal((size, size), dtype=np.float32) * acq.noise
    img = img + noise * (0.6 + 0.6 * (1.0 - img))
    out = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    top, bottom, left, right = (int(b * k) for b in acq.border)
    if top:
        out[:top] = 0
    if bottom:
        out[size - bottom :] = 0
    if left:
        out[:, :left] = 0
    if right:
        out[:, size - right :] = 0
    pil = Image.fromarray(out)
    _burn_in(pil, acq)
    return np.asarray(pil)
