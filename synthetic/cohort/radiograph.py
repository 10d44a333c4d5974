"""A study's radiographs: anatomy, then findings and devices, then acquisition.

`render_frontal` and `render_lateral` return ``uint8 (S, S)`` grayscale images (dense = bright).
`draw_study` is the entry point for drawing a study from a list of findings (the phantom
generator's own or ones read from a real report): the patient's `anatomy.Anatomy`, the
`findings.Finding` tuple (kind, side, severity, zone, detail; devices are findings too), the
projection and the depth of inspiration.
"""

from __future__ import annotations

import numpy as np

from synthetic.cohort.acquisition import Acquisition, expose, sample_acquisition
from synthetic.cohort.anatomy import (
    SIDES,
    Anatomy,
    Chest,
    PatientLayers,
    Pose,
    lateral_density,
)
from synthetic.cohort.devices import render_devices
from synthetic.cohort.findings import Finding, fractures_of, paint_findings, severity_of

HEART_SCALE = {0: 1.0, 1: 1.2, 2: 1.33, 3: 1.48}
MEDIASTINUM_SCALE = {0: 1.0, 1: 1.3, 2: 1.55, 3: 1.8}


def pose_for(findings: tuple[Finding, ...], acq: Acquisition, inspiration: float) -> Pose:
    """The study's pose: projection, volumes and the findings that change the anatomy."""
    loss = {side: 0.0 for side in SIDES}
    for f in findings:
        if f.kind == "atelectasis" and f.severity >= 2:
            for side in SIDES if f.side == "bilateral" else (f.side,):
                loss[side] = max(loss[side], 0.025 * f.severity)
    return Pose(
        ap=acq.view == "AP",
        supine=acq.supine,
        inspiration=inspiration,
        volume_loss=(loss["right"], loss["left"]),
        heart_scale=HEART_SCALE[severity_of(findings, "cardiomegaly")],
        mediastinum_scale=MEDIASTINUM_SCALE[severity_of(findings, "widened_mediastinum")],
    )


def render_frontal(
    layers: PatientLayers,
    findings: tuple[Finding, ...],
    acq: Acquisition,
    inspiration: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """The PA or AP image of a study; ``uint8 (S, S)``."""
    chest = Chest(layers, pose_for(findings, acq, inspiration))
    tissue, air = chest.base_density(fractures=fractures_of(findings))
    tissue, air = paint_findings(chest, tissue, air, findings, rng)
    density = tissue - air
    metal = render_devices(chest, findings)
    if metal is not None:
        density = density + metal
    return expose(density, acq, rng)


def render_lateral(
    layers: PatientLayers, findings: tuple[Finding, ...], acq: Acquisition, rng: np.random.Generator
) -> np.ndarray:
    """The lateral image of a study (simpler anatomy); ``uint8 (S, S)``."""
    effusion = tuple(
        max(
            (
                f.severity
                for f in findings
                if f.kind == "effusion" and f.side in (side, "bilateral")
            ),
            default=0,
        )
        for side in SIDES
    )
    kinds = {f.kind for f in findings}
    devices = [
        name
        for kind, name in (
            ("ett", "ett"),
            ("enteric_tube", "ng"),
            ("pacemaker", "pacer"),
            ("sternotomy", "wires"),
        )
        if kind in kinds
    ]
    density = lateral_density(
        layers,
        heart_scale=HEART_SCALE[severity_of(findings, "cardiomegaly")],
        effusion=effusion,
        devices=devices,
    )
    return expose(density, acq, rng)


def draw_study(
    anatomy: Anatomy,
    findings: tuple[Finding, ...] | list[Finding],
    *,
    view: str = "PA",
    supine: bool = False,
    inspiration: float = 0.0,
    lateral: bool = False,
    site: str = "A",
    image_size: int = 256,
    seed: int = 0,
    layers: PatientLayers | None = None,
) -> list[np.ndarray]:
    """Draw one study: its frontal image and, with ``lateral``, its lateral image.

    Args:
        anatomy: The patient (`anatomy.sample_anatomy`); keep one per patient so that every
            study of the patient shows the same chest.
        findings: What the image shows. Each `findings.Finding` has a ``kind`` (a key of
            `findings.LABEL_OF`, devices included), ``side`` (``right``/``left``/``bilateral``
            or ``""``), ``severity`` (1 small/mild .. 3 large/severe: effusion and
            pneumothorax size, heart size, edema grade), ``zone`` (lobe or region: ``upper``,
            ``middle``, ``lingula``, ``lower``, ``base``, ``apex``, ``lateral``,
            ``retrocardiac``; for devices the tip: ``svc``, ``cavoatrial``, ``right_atrium``,
            ``stomach``, ``esophagus``, ``duodenum``) and ``detail`` (nodule/mass
            ``(x, y, size_cm, seed)``, endotracheal tube ``(cm above the carina,)``,
            pacemaker ``(leads, icd)``, rib fracture ``(rib, lateral distance, healed)``).
        view: ``PA`` or ``AP`` (AP: magnified heart, portable technique).
        supine: Lying down (layering effusions; AP only).
        inspiration: About -1 (low lung volumes) .. 1 (hyperexpanded).
        lateral: Also draw a lateral image.
        site: Acquisition style, ``A`` or ``B``.
        image_size: Side in pixels.
        seed: Seeds the acquisition and the texture noise (same seed, same pixels).
        layers: `anatomy.PatientLayers` of ``anatomy`` at ``image_size``, to reuse across a
            patient's studies (built when None).

    Returns:
        ``[frontal]`` or ``[frontal, lateral]``, each ``uint8 (image_size, image_size)``.
    """
    findings = tuple(findings)
    layers = layers if layers is not None else PatientLayers(anatomy, image_size)
    rng = np.random.default_rng(seed)
    acq = sample_acquisition(rng, site, view, supine and view == "AP")
    images = [render_frontal(layers, findings, acq, inspiration, rng)]
    if lateral:
        images.append(
            render_lateral(layers, findings, sample_acquisition(rng, site, "LATERAL", False), rng)
        )
    return images
