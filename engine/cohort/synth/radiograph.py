"""A study's radiographs: anatomy, then findings and devices, then acquisition.

`render_frontal` and `render_lateral` return ``uint8 (S, S)`` grayscale images (dense = bright).
"""

from __future__ import annotations

import numpy as np

from engine.cohort.synth.acquisition import Acquisition, expose
from engine.cohort.synth.anatomy import SIDES, Chest, PatientLayers, Pose, lateral_density
from engine.cohort.synth.devices import render_devices
from engine.cohort.synth.findings import Finding, fractures_of, paint_findings, severity_of

HEART_SCALE = {0: 1.0, 1: 1.2, 2: 1.33, 3: 1.48}
MEDIASTINUM_SCALE = {0: 1.0, 1: 1.3, 2: 1.55, 3: 1.8}


def pose_for(findings: tuple[Finding, ...], acq: Acquisition, inspiration: float) -> Pose:
    """The study's pose: projection, volumes and the findings that change the anatomy."""
    loss = {side: 0.0 for side in SIDES}
    for f in findings:
        if f.kind == "atelectasis" and f.severity >= 2:
            for side in (SIDES if f.side == "bilateral" else (f.side,)):
                loss[side] = max(loss[side], 0.025 * f.severity)
    return Pose(
        ap=acq.view == "AP",
        supine=acq.supine,
        inspiration=inspiration,
        volume_loss=(loss["right"], loss["left"]),
        heart_scale=HEART_SCALE[severity_of(findings, "cardiomegaly")],
        mediastinum_scale=MEDIASTINUM_SCALE[severity_of(findings, "widened_mediastinum")],
    )


def render_frontal(layers: PatientLayers, findings: tuple[Finding, ...], acq: Acquisition,
                   inspiration: float, rng: np.random.Generator) -> np.ndarray:
    """The PA or AP image of a study; ``uint8 (S, S)``."""
    chest = Chest(layers, pose_for(findings, acq, inspiration))
    tissue, air = chest.base_density(fractures=fractures_of(findings))
    tissue, air = paint_findings(chest, tissue, air, findings, rng)
    density = tissue - air
    metal = render_devices(chest, findings)
    if metal is not None:
        density = density + metal
    return expose(density, acq, rng)


def render_lateral(layers: PatientLayers, findings: tuple[Finding, ...], acq: Acquisition,
                   rng: np.random.Generator) -> np.ndarray:
    """The lateral image of a study (simpler anatomy); ``uint8 (S, S)``."""
    effusion = tuple(
        max((f.severity for f in findings if f.kind == "effusion" and f.side in (side, "bilateral")), default=0)
        for side in SIDES
    )
    kinds = {f.kind for f in findings}
    devices = [name for kind, name in (("ett", "ett"), ("enteric_tube", "ng"), ("pacemaker", "pacer"),
                                       ("sternotomy", "wires")) if kind in kinds]
    density = lateral_density(layers, heart_scale=HEART_SCALE[severity_of(findings, "cardiomegaly")],
                              effusion=effusion, devices=devices)
    return expose(density, acq, rng)
