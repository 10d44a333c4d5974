"""Rendered cohorts: real reports of a public release with synthetic radiographs drawn from them.

Modules: `vocabulary` (a source's findings and localizations -> phantom findings), `patients`
(stable anatomy per patient), `release` (the source's own file layout, README and sidecar) and
`renderer` (`render_cohort`, in parallel and resumable).
"""

from engine.cohort.render.renderer import (
    DEFAULT_IMAGE_SIZE,
    RENDER_VERSION,
    SOURCES,
    RenderConfig,
    RenderSummary,
    render_cohort,
)

__all__ = ["DEFAULT_IMAGE_SIZE", "RENDER_VERSION", "SOURCES", "RenderConfig", "RenderSummary",
           "render_cohort"]
