"""`python -m engine audit`: the plan of a model's audit, what is missing run, the release gate.

Flags and a TOML file (``--config``) take the same settings (docs/audit-command.md); a flag
given on the command line wins over the file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from engine.configs import config_from, read_toml
from engine.errors import ConfigError
from engine.values import ints


def build_config(args: argparse.Namespace):
    """`engine.plan.AuditConfig` (and db, cache) from the TOML file and the flags over it."""
    from engine.config import DEFAULT_CACHE, DEFAULT_DB

    path = args.config
    data = read_toml(path) if path is not None else {}
    # the flags given win over the file: they are put in its place
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for flag in ("model", "cohort", "external", "epsilons", "start", "formats", "out",
                 "fail_if"):
        if getattr(args, flag, None) is not None:
            data[flag] = getattr(args, flag)
    if getattr(args, "pool_sizes", None) is not None:
        data.setdefault("attack", {})["pool_sizes"] = ints(args.pool_sizes, "--pool-sizes")
    if getattr(args, "known", None) is not None:
        data.setdefault("adaptive", {})["known"] = args.known
    if not data.get("model") or not data.get("cohort"):
        missing = "--model" if not data.get("model") else "--cohort"
        raise ConfigError(f"audit: {missing} is needed (on the command line or in --config)")
    # the global --db / --cache win unless left at their defaults and the file names its own
    db = Path(data["db"]) if "db" in data and args.db == DEFAULT_DB else Path(args.db)
    cache = (Path(data["cache"]) if "cache" in data and args.cache == DEFAULT_CACHE
             else Path(args.cache))
    return config_from(data, str(path), cache), db, cache


def audit(args: argparse.Namespace) -> int:
    from engine import plan as planning
    from engine.cli.options import check_database, check_writable_folder
    from engine.errors import StoreError
    from engine.plan import print_plan, progress_lines

    config, db, cache = build_config(args)
    if not db.is_file():
        raise StoreError(f"--db {db}: no results database; register the cohort first "
                         f"(`python -m engine --db {db} cohort add --name {config.cohort} ...`)")
    check_database(db, write=False)
    plan = planning.steps(db, cache, config)
    states = planning.check(plan)
    print_plan(plan, states, config, db)
    if args.dry_run:
        print("dry run: nothing was run or written")
        return 0
    check_database(db, write=True)
    check_writable_folder(cache, "--cache")
    started = time.perf_counter()
    planning.execute(plan, states, progress_lines("audit"))
    print(f"[audit] done in {time.perf_counter() - started:.1f} s; results in {db}", flush=True)
    if config.gate is None:
        return 0
    verdict = planning.evaluate_gate(db, cache, config)
    folder = next(s.ctx.report_dir() for s in plan if s.stage == "report")  # the audited cohort
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "gate.json"
    tmp = target.with_name(".gate.json.tmp")
    tmp.write_text(json.dumps(verdict.as_json(), indent=2) + "\n", encoding="utf-8")
    tmp.replace(target)
    if verdict.passed:
        print(f"{verdict.line()}; verdict in {target}")
        return 0
    import sys

    print(verdict.line(), file=sys.stderr)
    return planning.GATE_FAILED
