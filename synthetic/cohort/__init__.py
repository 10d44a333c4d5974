"""The phantom cohort (docs/phantom.md): synthetic chest radiographs with reports, in real layouts.

Modules, in data-flow order: `courses` (who the patient is, how findings evolve across studies),
`anatomy` (the patient's stable anatomy as density maps), `findings` and `devices` (what a study
shows, painted onto the anatomy), `acquisition` (projection, exposure, noise, markers),
`radiograph` (one image from all of these), `reports` (what the radiologist wrote, and its
labels), `layouts` (the MIMIC-CXR-JPG and CheXpert Plus files) and `generator`
(`generate_cohort`, which runs them for every patient).
"""

from synthetic.cohort.generator import (
    GENERATOR_VERSION,
    SynthSummary,
    generate_cohort,
    plan_reports,
)

__all__ = ["GENERATOR_VERSION", "SynthSummary", "generate_cohort", "plan_reports"]
