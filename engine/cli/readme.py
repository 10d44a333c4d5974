"""Handler for `readme`: the README's results tables from a results database."""

from __future__ import annotations

import argparse


def readme(args: argparse.Namespace) -> int:
    from engine.errors import ConfigError
    from engine.readme import write_readme

    if not args.db.is_file():
        raise ConfigError(f"--db {args.db}: no results database there (run the demo first, or "
                          "point --db at one)")
    external = args.external or None
    changed = write_readme(args.db, args.readme, check=args.check, cohort=args.cohort,
                           external=external, block=args.block)
    if args.check:
        if changed:
            print(f"{args.readme}: results tables differ from {args.db}; run "
                  f"`python -m engine --db {args.db} readme --readme {args.readme}"
                  + (f" --block {args.block}" if args.block != "results" else "") + "`")
            return 1
        print(f"{args.readme}: results tables match {args.db}")
        return 0
    print(f"{args.readme}: results tables {'rewritten' if changed else 'already up to date'} "
          f"from {args.db}")
    return 0
