"""`render_cohort`: synthetic radiographs drawn from real reports' findings, in the source layout.

For every selected study of a release (PadChest: one frontal image per study; OpenI: every
image of every report), the study's own findings, localizations and devices (`vocabulary`) are
drawn on its patient's stable anatomy (`patients`) by the phantom generator's painters, in the
study's projection, and written where the release keeps that image. The release's own tables and
report files are written next to the images (`release`), so the source's adapter reads the
result back like the real thing.

Determinism and resuming: everything about a study comes from seeds of (seed, source, patient)
and (seed, source, study), so output does not depend on scheduling; an image already on disk is
kept (resume after an interruption), and tables are rewritten in full each run.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from synthetic.render import release
from synthetic.render.patients import make_patient
from synthetic.render.tasks import (
    PatientTask,
    RenderConfig,
    RenderSummary,
)
from synthetic.render.vocabulary import openi_drawing, padchest_drawing, stable_seed

log = logging.getLogger(__name__)

RENDER_VERSION = "1.0"
_STYLE = {"padchest": "A", "iu-xray": "B"}  # acquisition style of `synth.acquisition`


class Progress(Protocol):
    def update(self, n: int) -> Any: ...


@dataclass
class PatientResult:
    n_images: int = 0
    n_written: int = 0
    drawn: Counter = field(default_factory=Counter)
    undrawn: Counter = field(default_factory=Counter)


def render_patient(task: PatientTask) -> PatientResult:
    """Draw and write one patient's images (existing files are kept); count the labels."""
    from synthetic.cohort.acquisition import sample_acquisition
    from synthetic.cohort.anatomy import PatientLayers
    from synthetic.cohort.radiograph import render_frontal, render_lateral

    patient = make_patient(task.source, task.patient_id, seed=task.seed, sex=task.sex,
                           age=task.age)
    layers: PatientLayers | None = None
    root = Path(task.out)
    out = PatientResult()
    style = _STYLE[task.source]
    for study in task.studies:
        if task.source == "padchest":
            drawing = padchest_drawing(list(study.groups), study.report, seed=patient.seed,
                                       anat=patient.anatomy)
        else:
            drawing = openi_drawing(list(study.major), seed=patient.seed, anat=patient.anatomy)
        out.drawn.update(drawing.drawn)
        out.undrawn.update(drawing.undrawn)
        rng = np.random.default_rng(stable_seed(task.seed, task.source, study.study_id, "image"))
        for image in study.images:
            out.n_images += 1
            # draw the acquisition even for kept images so the streams stay aligned
            acq = sample_acquisition(rng, style, image.view, image.supine)
            image_rng = np.random.default_rng(rng.integers(0, 2**63 - 1))
            target = root / image.path
            if target.exists():
                continue
            if layers is None:
                layers = PatientLayers(patient.anatomy, task.size)
            if image.view == "LATERAL":
                pixels = render_lateral(layers, drawing.findings, acq, image_rng)
            else:
                inspiration = drawing.inspiration
                if inspiration is None:
                    mean = -0.4 if image.view == "AP" else 0.2
                    inspiration = float(np.clip(image_rng.normal(mean, 0.5), -1, 1))
                pixels = render_frontal(layers, drawing.findings, acq, inspiration, image_rng)
            release.write_png16(target, pixels)
            out.n_written += 1
    return out


def _workers(requested: int | None) -> int:
    if requested is not None:
        return max(1, requested)
    return max(1, min(2, os.cpu_count() or 1))


def render_cohort(config: RenderConfig, out: Path, *, progress: Progress | None = None,
                  workers: int | None = None) -> RenderSummary:
    """Render ``config.source``'s selected studies into ``out`` in the source's release layout.

    Raises:
        ConfigError: ``out`` holds something other than an earlier render of this source.
        CohortError: the release file is missing or unreadable.
    """
    started = time.perf_counter()
    out = Path(out)
    release.prepare_out(out, config.source)
    if config.source == "padchest":
        plan = release.plan_padchest(config, out)
    else:
        plan = release.plan_openi(config, out)
    n_workers = _workers(workers)
    total = PatientResult()
    draw_start = time.perf_counter()

    def collect(res: PatientResult) -> None:
        total.n_images += res.n_images
        total.n_written += res.n_written
        total.drawn.update(res.drawn)
        total.undrawn.update(res.undrawn)
        if progress is not None:
            progress.update(res.n_images)

    if progress is not None and hasattr(progress, "total"):
        progress.total = sum(len(s.images) for t in plan.tasks for s in t.studies)
    if n_workers > 1 and len(plan.tasks) >= 16:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        chunk = max(1, min(64, len(plan.tasks) // (n_workers * 16)))
        with ctx.Pool(n_workers) as pool:
            for res in pool.imap(render_patient, plan.tasks, chunksize=chunk):
                collect(res)
    else:
        for task in plan.tasks:
            collect(render_patient(task))
    draw_seconds = time.perf_counter() - draw_start
    plan.write_tables()
    seconds = time.perf_counter() - started
    summary = RenderSummary(
        source=config.source, out=out, n_patients=len(plan.tasks),
        n_studies=sum(len(t.studies) for t in plan.tasks), n_images=total.n_images,
        n_written=total.n_written, seconds=seconds, draw_seconds=draw_seconds,
        undrawn=dict(sorted(total.undrawn.items(), key=lambda kv: (-kv[1], kv[0]))),
        drawn=dict(sorted(total.drawn.items(), key=lambda kv: (-kv[1], kv[0]))),
    )
    release.write_sidecar(out, config, summary, RENDER_VERSION)
    release.write_readme(out, config, summary)
    log.info("rendered %s: %d patients, %d studies, %d images (%d written) in %.1f s",
             config.source, summary.n_patients, summary.n_studies, summary.n_images,
             summary.n_written, seconds)
    return summary
