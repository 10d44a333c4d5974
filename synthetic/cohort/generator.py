"""`generate_cohort`: plan the patients, render and write them (in parallel), write the tables.

Determinism: the main process draws what must be unique across patients (subject and study ids,
splits, each patient's course and number of studies) from one generator; everything else about
patient ``i`` comes from its own seed sequence ``(seed, site, i)``, split into independent
streams for the plan, the images and the reports. Workers write a patient's files and return
its table rows; rows are collected in patient order and sorted by id before writing, so the
output does not depend on how work is scheduled.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from engine.config import SynthConfig
from engine.errors import ConfigError
from synthetic.cohort import layouts
from synthetic.cohort.acquisition import sample_acquisition
from synthetic.cohort.anatomy import PatientLayers, sample_anatomy
from synthetic.cohort.courses import (
    choose_course,
    choose_study_count,
    plan_studies,
    sample_demographics,
)
from synthetic.cohort.radiograph import render_frontal, render_lateral
from synthetic.cohort.reports import write_report

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1.0"
_SITE_CODE = {"A": 1, "B": 2}
_POOL_MIN_PATIENTS = 24  # below this, a process pool costs more than it saves


class Progress(Protocol):
    def update(self, n: int) -> Any: ...


@dataclass(frozen=True)
class SynthSummary:
    """What `generate_cohort` wrote."""

    n_patients: int
    n_studies: int
    n_images: int
    out: Path
    site: str
    seed: int
    version: str = GENERATOR_VERSION


@dataclass(frozen=True)
class _PatientTask:
    index: int
    site: str
    seed: int
    image_size: int
    lateral_fraction: float
    course: str
    n_studies: int
    patient_id: int  # site A subject_id; site B patient number
    study_ids: tuple[int, ...]  # site A only
    split: str
    out: str


@dataclass
class _PatientRows:
    n_studies: int = 0
    n_images: int = 0
    metadata: list[dict] | None = None
    labels: list[dict] | None = None
    splits: list[dict] | None = None
    rows: list[dict] | None = None


def _split_counts(n: int, fractions: tuple[float, ...]) -> list[int]:
    """Patients per split (the last split takes the rest); every split gets one when n allows."""
    counts = [int(round(n * f)) for f in fractions[:-1]]
    counts = [max(1, c) if n >= len(fractions) + 1 else c for c in counts]
    return counts + [n - sum(counts)]


def _plan_tasks(config: SynthConfig, out: Path) -> list[_PatientTask]:
    site = config.site
    rng = np.random.default_rng([config.seed, _SITE_CODE[site], 1])
    n = config.patients
    courses = [choose_course(rng) for _ in range(n)]
    counts = [choose_study_count(rng, c) for c in courses]
    order = rng.permutation(n)
    if site == "A":
        # held-out (default 25 %), 5 % validate, the rest train
        f = config.held_out_fraction
        n_test, n_val, _ = _split_counts(n, (f, 0.05, 0.95 - f))
        split_of = {}
        for rank, i in enumerate(order):
            split_of[int(i)] = (
                "test" if rank < n_test else ("validate" if rank < n_test + n_val else "train")
            )
        subjects = rng.choice(10_000_000, size=n, replace=False) + 10_000_000
        studies = rng.choice(10_000_000, size=sum(counts), replace=False) + 50_000_000
        ids = []
        start = 0
        for c in counts:
            ids.append(tuple(int(s) for s in studies[start : start + c]))
            start += c
        patient_ids = [int(s) for s in subjects]
    else:
        # CheXpert Plus numbers train patients first, then valid ones (default 25 % valid)
        n_valid, _ = _split_counts(n, (config.held_out_fraction, 1 - config.held_out_fraction))
        valid = {int(i) for i in order[:n_valid]}
        split_of = {i: ("valid" if i in valid else "train") for i in range(n)}
        train_ids = [i for i in range(n) if i not in valid]
        valid_ids = [i for i in range(n) if i in valid]
        number = {i: k + 1 for k, i in enumerate(train_ids + valid_ids)}
        patient_ids = [number[i] for i in range(n)]
        ids = [()] * n
    return [
        _PatientTask(
            i,
            site,
            config.seed,
            config.image_size,
            config.lateral_fraction,
            courses[i],
            counts[i],
            patient_ids[i],
            ids[i],
            split_of[i],
            str(out),
        )
        for i in range(n)
    ]


def _sample_social(rng: np.random.Generator) -> dict:
    """CheXpert Plus demographic columns (synthetic)."""
    return {
        "race": str(
            rng.choice(
                [
                    "White",
                    "Asian",
                    "Black or African American",
                    "Other",
                    "Unknown",
                    "Native Hawaiian or Other Pacific Islander",
                ],
                p=[0.5, 0.18, 0.06, 0.16, 0.07, 0.03],
            )
        ),
        "ethnicity": str(
            rng.choice(
                ["Non-Hispanic/Non-Latino", "Hispanic/Latino", "Unknown"], p=[0.75, 0.17, 0.08]
            )
        ),
        "interpreter_needed": "Yes" if rng.random() < 0.08 else "No",
        "insurance_type": str(
            rng.choice(
                ["Medicare", "Private Insurance", "Medicaid", "Unknown"], p=[0.4, 0.35, 0.15, 0.1]
            )
        ),
        "deceased": "Yes" if rng.random() < 0.1 else "No",
    }


@dataclass(frozen=True)
class _PatientPlan:
    sex: str
    age: int
    habitus: float
    anatomy: Any
    plans: tuple
    reports: tuple
    img_rng: np.random.Generator
    id_rng: np.random.Generator


def _plan_patient(task: _PatientTask) -> _PatientPlan:
    """A patient's studies and reports (no pixels); the streams images and ids continue from."""
    ss = np.random.SeedSequence([task.seed, _SITE_CODE[task.site], 2, task.index])
    plan_ss, image_ss, report_ss, id_ss = ss.spawn(4)
    plan_rng = np.random.default_rng(plan_ss)
    rep_rng = np.random.default_rng(report_ss)
    sex, age, habitus = sample_demographics(plan_rng, task.course)
    anat = sample_anatomy(plan_rng, sex, age, habitus)
    plans = plan_studies(
        plan_rng,
        task.course,
        task.n_studies,
        anat,
        age,
        site=task.site,
        lateral_fraction=task.lateral_fraction,
    )
    reports, prior = [], None
    for plan in plans:  # the report stream is its own, so writing reports first changes nothing
        reports.append(
            write_report(
                plan, prior, sex=sex, age=age + plan.day // 365, site=task.site, rng=rep_rng
            )
        )
        prior = plan
    return _PatientPlan(
        sex,
        age,
        habitus,
        anat,
        plans,
        tuple(reports),
        np.random.default_rng(image_ss),
        np.random.default_rng(id_ss),
    )


def plan_reports(config: SynthConfig) -> list[tuple[str, Any]]:
    """Every study's ``(split, reports.Report)`` of the cohort `config` describes, no images.

    The same reports and labels `generate_cohort` writes for this config, in a fraction of the
    time: for sizing a cohort (label signatures, matched pools) before rendering it.
    """
    out = []
    for task in _plan_tasks(config, Path(".")):
        out += [(task.split, report) for report in _plan_patient(task).reports]
    return out


def _render_patient(task: _PatientTask) -> _PatientRows:
    """Plan, render and write one patient; return its table rows."""
    root = Path(task.out)
    planned = _plan_patient(task)
    img_rng, id_rng = planned.img_rng, planned.id_rng
    sex, age, habitus = planned.sex, planned.age, planned.habitus
    plans = planned.plans
    layers = PatientLayers(planned.anatomy, task.image_size)
    out = _PatientRows(metadata=[], labels=[], splits=[], rows=[])
    size = task.image_size

    if task.site == "A":
        first = date(int(id_rng.integers(2110, 2195)), 1, 1) + timedelta(
            days=int(id_rng.integers(0, 365))
        )
    else:
        social = _sample_social(id_rng)
        bmi = (
            round(float(np.clip(id_rng.normal(27 + 4 * habitus, 3), 15, 55)), 1)
            if id_rng.random() < 0.8
            else float("nan")
        )

    for plan, report in zip(plans, planned.reports):
        images: list[tuple[str, np.ndarray]] = []  # (view position, pixels)
        acq = sample_acquisition(img_rng, task.site, plan.view, plan.supine)
        images.append(
            (plan.view, render_frontal(layers, plan.findings, acq, plan.inspiration, img_rng))
        )
        if plan.extra_frontal:
            acq2 = sample_acquisition(img_rng, task.site, plan.view, plan.supine)
            images.append(
                (plan.view, render_frontal(layers, plan.findings, acq2, plan.inspiration, img_rng))
            )
        if plan.lateral:
            lat_acq = sample_acquisition(img_rng, task.site, "LATERAL", False)
            view = "LL" if img_rng.random() < 0.2 else "LATERAL"
            images.append((view, render_lateral(layers, plan.findings, lat_acq, img_rng)))
        out.n_studies += 1
        out.n_images += len(images)

        if task.site == "A":
            study_id = task.study_ids[plan.index]
            subject = task.patient_id
            when = first + timedelta(days=plan.day)
            hh, mm, ss_ = (
                int(v)
                for v in (id_rng.integers(0, 24), id_rng.integers(0, 60), id_rng.integers(0, 60))
            )
            frac = int(id_rng.integers(0, 1000))
            study_time = (
                f"{hh * 10000 + mm * 100 + ss_}.{frac:03d}"
                if id_rng.random() < 0.7
                else f"{hh * 10000 + mm * 100 + ss_}.0"
            )
            exam = report.sections.get("examination", "CHEST (PA AND LAT)")
            orientation = "Recumbent" if plan.supine else ("Erect" if id_rng.random() < 0.9 else "")
            layouts.write_text(root, layouts.mimic_report_path(subject, study_id), report.text)
            for view, pixels in images:
                dicom = layouts.dicom_id(id_rng)
                layouts.write_image(
                    root, layouts.mimic_image_path(subject, study_id, dicom), pixels, fmt="JPEG"
                )
                out.metadata.append(
                    {
                        "dicom_id": dicom,
                        "subject_id": subject,
                        "study_id": study_id,
                        "PerformedProcedureStepDescription": exam,
                        "ViewPosition": view,
                        "Rows": size,
                        "Columns": size,
                        "StudyDate": int(when.strftime("%Y%m%d")),
                        "StudyTime": study_time,
                        "ProcedureCodeSequence_CodeMeaning": exam,
                        "ViewCodeSequence_CodeMeaning": layouts.VIEW_MEANING[view],
                        "PatientOrientationCodeSequence_CodeMeaning": orientation,
                    }
                )
                out.splits.append(
                    {
                        "dicom_id": dicom,
                        "study_id": study_id,
                        "subject_id": subject,
                        "split": task.split,
                    }
                )
            row = {"subject_id": subject, "study_id": study_id}
            row.update({k: (np.nan if v is None else v) for k, v in report.labels.items()})
            out.labels.append(row)
        else:
            frontal_n = 0
            for n_view, (view, pixels) in enumerate(images, 1):
                frontal = view in ("PA", "AP")
                frontal_n += frontal
                path = layouts.chexpert_plus_path(
                    task.split, task.patient_id, plan.index + 1, n_view, frontal
                )
                layouts.write_image(root, layouts.png_for(path), pixels, fmt="PNG")
                s = report.sections
                out.rows.append(
                    {
                        "path_to_image": path,
                        "path_to_dcm": path[: -len(".jpg")] + ".dcm",
                        "frontal_lateral": "Frontal" if frontal else "Lateral",
                        "ap_pa": view if frontal else "",
                        "deid_patient_id": f"patient{task.patient_id:05d}",
                        "patient_report_date_order": plan.index + 1,
                        "report": report.text,
                        **{
                            f"section_{k}": s.get(k, "")
                            for k in (
                                "narrative",
                                "clinical_history",
                                "history",
                                "comparison",
                                "technique",
                                "procedure_comments",
                                "findings",
                                "impression",
                                "end_of_impression",
                                "summary",
                                "accession_number",
                            )
                        },
                        "age": age + plan.day // 365,
                        "sex": "Female" if sex == "F" else "Male",
                        **social,
                        "recent_bmi": bmi,
                        "split": task.split,
                    }
                )
                out.labels.append({"path_to_image": path, **report.labels})
    return out


def _prepare_out(out: Path) -> None:
    """Create ``out``; replace an earlier phantom cohort there, refuse any other content."""
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"--out {out}: exists and is not a folder")
        entries = list(out.iterdir())
        if entries:
            readme = out / "README.txt"
            if not (
                readme.is_file()
                and readme.read_text(errors="replace").startswith("SYNTHETIC (PHANTOM) DATA")
            ):
                raise ConfigError(
                    f"--out {out}: folder is not empty and holds no phantom cohort; "
                    "choose an empty or new folder"
                )
            for entry in entries:
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def generate_cohort(
    config: SynthConfig, out: Path, *, progress: Progress | None = None, workers: int | None = None
) -> SynthSummary:
    """Write a phantom cohort of ``config.patients`` patients for ``config.site`` to ``out``.

    Site A uses the MIMIC-CXR-JPG layout, site B the CheXpert Plus layout (`layouts`). The same
    config gives byte-identical files. ``progress.update(n)`` is called as images are written.
    ``workers`` (default: up to 2 processes) does not change the output.
    """
    out = Path(out)
    _prepare_out(out)
    tasks = _plan_tasks(config, out)
    n_workers = _workers() if workers is None else max(1, workers)
    metadata: list[dict] = []
    labels: list[dict] = []
    splits: list[dict] = []
    rows: list[dict] = []
    n_studies = n_images = 0

    def collect(res: _PatientRows) -> None:
        nonlocal n_studies, n_images
        n_studies += res.n_studies
        n_images += res.n_images
        metadata.extend(res.metadata or [])
        labels.extend(res.labels or [])
        splits.extend(res.splits or [])
        rows.extend(res.rows or [])
        if progress is not None:
            progress.update(res.n_images)

    if n_workers > 1 and len(tasks) >= _POOL_MIN_PATIENTS:
        methods = mp.get_all_start_methods()
        ctx = mp.get_context("fork" if "fork" in methods else "spawn")
        chunk = max(1, min(16, len(tasks) // (n_workers * 8)))
        with ctx.Pool(n_workers) as pool:
            for res in pool.imap(_render_patient, tasks, chunksize=chunk):
                collect(res)
    else:
        for task in tasks:
            collect(_render_patient(task))

    if config.site == "A":
        layouts.write_site_a_tables(out, metadata, labels, splits)
    else:
        layouts.write_site_b_tables(out, rows, labels)
    layouts.write_readme(
        out,
        site=config.site,
        seed=config.seed,
        patients=config.patients,
        image_size=config.image_size,
        version=GENERATOR_VERSION,
        n_studies=n_studies,
        n_images=n_images,
    )
    log.info(
        "phantom site %s: %d patients, %d studies, %d images -> %s",
        config.site,
        config.patients,
        n_studies,
        n_images,
        out,
    )
    return SynthSummary(
        n_patients=config.patients,
        n_studies=n_studies,
        n_images=n_images,
        out=out,
        site=config.site,
        seed=config.seed,
    )


__all__ = ["GENERATOR_VERSION", "SynthSummary", "generate_cohort", "plan_reports"]
