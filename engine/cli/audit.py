"""Handlers for the audit stages: `attack`, `dp`, `transfer`, `umap`, `report`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tqdm import tqdm


def attack(args: argparse.Namespace) -> int:
    from engine import audit
    from engine.attack.stage import AttackConfig

    inputs = audit.load_inputs(args.db, args.cache, args.model, args.cohort)
    config = AttackConfig(pool_sizes=args.pool_sizes, match=args.match)
    if config.match != "labels":
        from engine.attack.stage import match_keys

        match_keys(inputs.items, config, cohort=inputs.cohort)  # refused before any progress
    start = time.perf_counter()
    n_splits = 1 if args.external else len(config.splits)
    with tqdm(total=2 * n_splits * len(inputs.items), desc="ranking", unit="query",
              leave=False) as bar:
        run_id, reused = audit.attack(args.db, inputs, config=config, external=args.external,
                                      progress=bar)
    what = "reused" if reused else f"computed in {time.perf_counter() - start:.1f} s"
    print(f"attack {inputs.model} on {inputs.cohort}: {len(inputs.items)} pairs, {what}; "
          f"run {run_id} in {args.db}")
    from engine.attack.stage import pool_size_note

    note = pool_size_note(audit.evaluation_items(inputs.items, external=args.external), config)
    if note:
        print(f"note: {note}")
    if not args.external:
        from engine.attack.stage import leak_message, leaked_patients

        note = leak_message(leaked_patients(inputs.items, config.splits))
        if note:
            print(f"warning: {note}")
    return 0


def dp(args: argparse.Namespace) -> int:
    from engine import audit

    inputs = audit.load_inputs(args.db, args.cache, args.model, args.cohort)
    start = time.perf_counter()
    with tqdm(desc="DP steps", unit="step", leave=False) as bar:
        selection = None
        if getattr(args, "select", False):
            from engine.dp.selection import Selection

            selection = Selection()
        from engine.dp.start import Start

        result = audit.dp(args.db, args.cache, inputs, epsilons=args.epsilons,
                          progress=bar, selection=selection,
                          start=Start.parse(getattr(args, "start", "random")))
    what = "reused" if result.reused else f"trained in {time.perf_counter() - start:.1f} s"
    print(f"dp {inputs.model} on {inputs.cohort}: heads {', '.join(result.heads)} {what}; "
          f"attacked with every set of heads; run {result.run_id} in {args.db}")
    for label, row in result.dp_rows.items():
        if row.get("accountant"):
            print(f"  epsilon {label}: group eps={row['epsilon']:.3g}, patient eps="
                  f"{row['patient_epsilon']:.3g}, sigma={row['noise_multiplier']:.3g}, "
                  f"steps={row['steps']}, accountant={row['accountant']}")
    return 0


def adaptive(args: argparse.Namespace) -> int:
    from engine import audit
    from engine.adaptive import AdaptiveConfig

    config = AdaptiveConfig(public=tuple(args.public), known_fractions=args.known, seed=args.seed)
    target = audit.load_inputs(args.db, args.cache, args.model, args.cohort)
    attackers = audit.adaptive(args.db, args.cache, target, config=config, echo=print)
    print(f"adaptive {target.model} on {target.cohort}: {len(attackers)} attacker(s) stored in "
          f"{args.db} (heads {', '.join(a.label for a in attackers)})")
    return 0


def transfer(args: argparse.Namespace) -> int:
    from engine import audit

    source = audit.load_inputs(args.db, args.cache, args.model, args.source)
    target = audit.load_inputs(args.db, args.cache, args.model, args.cohort)
    labels = audit.transfer(args.db, args.cache, source, target)
    print(f"transfer {source.model}: heads {', '.join(labels)} trained on {source.cohort} "
          f"applied to {target.cohort} ({len(target.items)} pairs, all held-out); attack and "
          f"probe stored in {args.db}")
    return 0


def umap(args: argparse.Namespace) -> int:
    from engine import audit
    from engine.jointspace import UmapConfig

    inputs = audit.load_inputs(args.db, args.cache, args.model, args.cohort)
    start = time.perf_counter()
    with tqdm(desc="maps", unit="map", leave=False) as bar:
        run_id, reused = audit.umap(args.db, args.cache, inputs,
                                    config=UmapConfig(max_points=args.max_points),
                                    external=args.external, heads_cohort=args.heads_from,
                                    progress=bar)
    what = "reused" if reused else f"fitted in {time.perf_counter() - start:.1f} s"
    print(f"umap {inputs.model} on {inputs.cohort}: {what}; run {run_id} in {args.db}")
    return 0


def report(args: argparse.Namespace) -> int:
    from engine.models.registry import resolve_model
    from engine.report import write_report

    formats = tuple(f.strip() for f in args.fmt.split(",") if f.strip())
    name = resolve_model(args.model, cache=args.cache, db=args.db).name
    out = args.out if args.out is not None else Path(args.cache) / "reports"
    paths = write_report(args.db, model=name, cohort=args.cohort, formats=formats, out=out)
    for fmt, path in paths.items():
        print(f"wrote {fmt} report to {path}")
    return 0
