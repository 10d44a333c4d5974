"""`python -m engine audit`: the plan of a model's audit, what is missing run, the release gate.

Flags and a TOML file (``--config``) take the same settings (docs/audit-command.md); a flag
given on the command line wins over the file.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields, replace
from pathlib import Path

from engine.errors import ConfigError
from engine.values import epsilons, fractions, ints

TOP_KEYS = ("model", "cohort", "external", "epsilons", "start", "formats", "out", "fail_if",
            "db", "cache")
TABLES = ("attack", "dp", "adaptive", "umap", "gate")
GATE_KEYS = ("metric", "n", "k", "op", "threshold", "direction", "negatives", "heads", "split")


def read_toml(path: Path) -> dict:
    """The file's settings, every key checked (one line naming the file and the key)."""
    import tomllib

    try:
        with Path(path).open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML ({exc})") from None
    for key, value in data.items():
        if key in TABLES:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [{key}] must be a table")
        elif key not in TOP_KEYS:
            raise ConfigError(f"{path}: unknown key {key!r} (known: "
                              f"{', '.join(TOP_KEYS)}; tables {', '.join(TABLES)})")
    return data


def _table(cls, table: dict, where: str, *, base=None, convert=None):
    """A config dataclass from a TOML table (unknown keys refused, lists made tuples)."""
    names = {f.name for f in fields(cls)}
    bad = sorted(set(table) - names)
    if bad:
        raise ConfigError(f"{where}: unknown key {bad[0]!r} (known: {', '.join(sorted(names))})")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}
    for key, fn in (convert or {}).items():
        if key in values:
            values[key] = fn(values[key], f"{where} {key}")
    try:
        return replace(base, **values) if base is not None else cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def build_config(args: argparse.Namespace):
    """`engine.plan.AuditConfig` (and db, cache) from the TOML file and the flags over it."""
    from engine.adaptive import ATTACKER_TRAINING
    from engine.attack.stage import AttackConfig
    from engine.config import DEFAULT_CACHE, DEFAULT_DB
    from engine.dp.training import DPConfig
    from engine.jointspace import UmapConfig
    from engine.plan import AuditConfig, Gate

    path = args.config
    data = read_toml(path) if path is not None else {}
    where = str(path)
    tables = {t: data.get(t, {}) for t in TABLES}

    def pick(flag, key):
        value = getattr(args, flag, None)
        return value if value is not None else data.get(key)

    model, cohort = pick("model", "model"), pick("cohort", "cohort")
    if not model or not cohort:
        missing = "--model" if not model else "--cohort"
        raise ConfigError(f"audit: {missing} is needed (on the command line or in --config)")
    attack = _table(AttackConfig, tables["attack"], f"{where} [attack]",
                    convert={"pool_sizes": ints, "ks": ints})
    if args.pool_sizes is not None:
        attack = replace(attack, pool_sizes=ints(args.pool_sizes, "--pool-sizes"))
    dp = _table(DPConfig, tables["dp"], f"{where} [dp]")
    adaptive = dict(tables["adaptive"])
    known = adaptive.pop("known", None)
    seed = adaptive.pop("seed", 0)
    # the remaining [adaptive] keys are the attacker's (non-private) schedule
    _table(DPConfig, adaptive, f"{where} [adaptive]", base=ATTACKER_TRAINING)
    if args.known is not None:
        known = args.known
    umap = _table(UmapConfig, tables["umap"], f"{where} [umap]")
    gate_text = args.fail_if if args.fail_if is not None else data.get("fail_if")
    gate = None
    table = dict(tables["gate"])
    if "N" in table:
        table["n"] = table.pop("N")
    bad = sorted(set(table) - set(GATE_KEYS))
    if bad:
        raise ConfigError(f"{where} [gate]: unknown key {bad[0]!r} (known: "
                          f"{', '.join(GATE_KEYS)})")
    if gate_text:
        extra = {k: v for k, v in table.items() if k not in ("metric", "n", "k", "op",
                                                             "threshold")}
        gate = Gate.parse(gate_text, **extra)
    elif table:
        if "metric" not in table or "n" not in table or "threshold" not in table:
            raise ConfigError(f"{where} [gate]: needs metric, n (or N) and threshold")
        try:
            gate = Gate(**{**table, "threshold": float(table["threshold"])})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where} [gate]: {exc}") from None
    eps = pick("epsilons", "epsilons")
    formats = pick("formats", "formats")
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    out = pick("out", "out")
    config = AuditConfig(
        model=str(model), cohort=str(cohort), external=pick("external", "external") or None,
        epsilons=epsilons(eps, "--epsilons") if eps is not None else AuditConfig.epsilons,
        start=str(pick("start", "start") or "random"), attack=attack, dp=dp,
        known=fractions(known, "--known") if known is not None else AuditConfig.known,
        adaptive_seed=int(seed), adaptive_training=adaptive, umap=umap,
        formats=tuple(formats) if formats else AuditConfig.formats,
        out=Path(out) if out else None, gate=gate)
    # the global --db / --cache win unless left at their defaults and the file names its own
    db = Path(data["db"]) if "db" in data and args.db == DEFAULT_DB else Path(args.db)
    cache = (Path(data["cache"]) if "cache" in data and args.cache == DEFAULT_CACHE
             else Path(args.cache))
    return config, db, cache


def print_plan(plan, states, config, db: Path) -> None:
    ext = f" (external {config.external})" if config.external else ""
    print(f"audit plan: {config.model} on {config.cohort}{ext}; results in {db}")
    width = max(len(s.name) for s in plan)
    for step in plan:
        state = states[step.name]
        print(f"  {step.name:<{width}}  {state.state:<8}  {state.why}")
    if config.gate is not None:
        print(f"  gate: fail if {config.gate.describe()} on the 95% interval "
              f"({config.gate.where()})")


def audit(args: argparse.Namespace) -> int:
    from engine import plan as planning
    from engine.cli.options import check_database, check_writable_folder
    from engine.errors import StoreError

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
    for step in plan:
        if step.stage == "report" and states[step.name].state == planning.DONE and not any(
                states[d].state != planning.DONE for d in step.after):
            print(f"[audit] {step.name}: current, not rewritten", flush=True)
            continue
        t0 = time.perf_counter()
        print(f"[audit] {step.name} ...", flush=True)
        what = step.run(step.ctx)
        print(f"[audit] {step.name}: {what} ({time.perf_counter() - t0:.1f} s)", flush=True)
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
