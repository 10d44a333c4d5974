"""Rendered cohorts: real reports of a public release with synthetic radiographs drawn from them.

Modules: `vocabulary` (a source's findings and localizations -> phantom findings), `patients`
(stable anatomy per patient), `release` (the source's own file layout, README and sidecar),
`tasks` (the settings, per-patient tasks and summary both share) and `renderer`
(`render_cohort`, in parallel and resumable).
"""

from synthetic.render.renderer import RENDER_VERSION, render_cohort
from synthetic.render.tasks import DEFAULT_IMAGE_SIZE, SOURCES, RenderConfig, RenderSummary

__all__ = ["DEFAULT_IMAGE_SIZE", "RENDER_VERSION", "SOURCES", "RenderConfig", "RenderSummary",
           "render_cohort"]
