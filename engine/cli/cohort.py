"""Handlers for `python -m engine cohort ...`."""

from __future__ import annotations

import argparse
import time

from tqdm import tqdm

from engine.config import SynthConfig


def synth(args: argparse.Namespace) -> int:
    config = SynthConfig(
        site=args.site, patients=args.patients, seed=args.seed, image_size=args.image_size
    )
    from synthetic.cohort import generate_cohort

    start = time.perf_counter()
    with tqdm(desc=f"phantom site {config.site}", unit="img") as bar:
        summary = generate_cohort(config, args.out, progress=bar)
    seconds = time.perf_counter() - start
    print(
        f"wrote phantom site {config.site} to {args.out}: {summary.n_patients} patients, "
        f"{summary.n_studies} studies, {summary.n_images} images in {seconds:.1f} s "
        f"({summary.n_images / max(seconds, 1e-9):.0f} images/s)"
    )
    return 0


def check(args: argparse.Namespace) -> int:
    from engine.cohort.adapters import load_cohort
    from engine.cohort.adapters.assembly import NoUsableImages
    from engine.cohort.check import format_check_report

    try:
        load = load_cohort(args.fmt, args.root, section=args.section)
    except NoUsableImages as exc:
        # The report still says what was listed and why each item was lost; then the error.
        print(format_check_report(exc.load, fmt=args.fmt, root=args.root))
        raise
    print(format_check_report(load, fmt=args.fmt, root=args.root))
    return 0


def add(args: argparse.Namespace) -> int:
    from engine.cohort.adapters import load_cohort
    from engine.cohort.registry import register_cohort

    load = load_cohort(args.fmt, args.root, section=args.section)
    stored = register_cohort(
        args.db, args.name, fmt=args.fmt, root=args.root, load=load, site=args.site,
        section=args.section,
    )
    n_selected = int(stored["selected"].sum())
    print(
        f"registered cohort {args.name!r} in {args.db}: {len(stored)} images, "
        f"{n_selected} studies used by the audit, {load.n_skipped} rows skipped"
    )
    if stored.attrs.get("notice"):
        print(f"note: {stored.attrs['notice']}")
    # A problem either dropped its row ("skipped") or kept it with a warning ("kept"), such as a
    # patient in several splits: listing the latter as skipped would misstate what was stored.
    for label, group in (("skipped", [p for p in load.problems if p.skipped]),
                         ("kept, but", [p for p in load.problems if not p.skipped])):
        for problem in group[:10]:
            print(f"  {label}: {problem}")
        if len(group) > 10:
            print(f"  ... and {len(group) - 10} more {label.split(',')[0]} (see `cohort check`)")
    return 0


def sheet(args: argparse.Namespace) -> int:
    from engine.cohort.adapters import load_cohort
    from engine.cohort.sheet import render_contact_sheet

    load = load_cohort(args.fmt, args.root)
    out = render_contact_sheet(load.items, args.root, args.out, n=args.n, seed=args.seed)
    print(f"wrote contact sheet of {min(args.n, len(load.items))} images to {out}")
    return 0
