"""`cohort render` and `python -m engine study`: real reports with rendered images, at scale."""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm


@contextmanager
def _bar(desc: str, unit: str):
    with tqdm(desc=desc, unit=unit, leave=False) as bar:
        yield bar


def render(args: argparse.Namespace) -> int:
    from synthetic.render import RenderConfig, render_cohort

    config = RenderConfig(args.source, max_patients=args.max_patients, seed=args.seed,
                          image_size=args.image_size)
    with _bar(f"render {args.source}", "img") as bar:
        summary = render_cohort(config, Path(args.out), progress=bar)
    undrawn = sum(summary.undrawn.values())
    top = ", ".join(f"{k} {v}" for k, v in list(summary.undrawn.items())[:5])
    print(f"rendered {summary.n_images} images ({summary.n_written} drawn now, "
          f"{summary.n_images - summary.n_written} kept) of {summary.n_studies} studies, "
          f"{summary.n_patients} patients -> {summary.out} in {summary.seconds:.1f} s "
          f"({summary.images_per_second:.1f} images/s, {config.image_size} px)")
    print(f"finding mentions not drawn: {undrawn}" + (f" (most: {top})" if top else "")
          + "; per label in render.json")
    print("real report text, synthetic images: see README.txt there for the source's licence")
    return 0


def study(args: argparse.Namespace) -> int:
    from engine.study import StudyConfig, run_study

    workdir = Path(args.workdir)
    overrides = {}
    if args.rung_epochs is not None:
        overrides["rung_epochs"] = args.rung_epochs
    config = StudyConfig(max_patients=args.max_patients, seed=args.seed,
                         external_from=args.external_from, umap_points=args.umap_points,
                         **overrides)
    db = workdir / "relink.duckdb"
    print(f"[study] database {db} (dashboard: RELINK_DB={db} streamlit run dashboard/app.py)",
          flush=True)
    result = run_study(db, workdir, config, echo=lambda line: print(line, flush=True),
                       progress_factory=_bar)
    total = sum(s.seconds for s in result.stages)
    peak = max((s.peak_mb for s in result.stages), default=0.0)
    print(f"[study] {len(result.stages)} stages in {total:.1f} s (peak {peak:.0f} MB); "
          f"{result.n_train} train / {result.n_held_out} held-out / {result.n_external} "
          f"external studies; timings in {workdir / 'stages.json'}")
    return 0
