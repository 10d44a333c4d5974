"""The audit plan's TOML configurations: the loader, and the demo's and study's files.

`config_from` turns a TOML file's settings (`read_toml`: every key checked) into an
`engine.plan.AuditConfig`; the `audit` command's ``--config`` file goes through it with the
flags set over it (`engine.cli.plan`), and `load_config` reads a configuration shipped in this
folder as package data: ``demo.toml`` (`python -m engine demo`) and ``study.toml``
(`python -m engine study`). docs/audit-command.md lists the keys.
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

from engine.errors import ConfigError
from engine.values import epsilons, fractions, ints

TOP_KEYS = ("model", "cohort", "external", "epsilons", "start", "formats", "out", "fail_if",
            "db", "cache", "others", "matched", "start_seed")
TABLES = ("attack", "dp", "adaptive", "umap", "gate", "compare", "selection")
# The plan configurations shipped with the package: NAME.toml in this folder
CONFIGS = Path(__file__).resolve().parent
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


def load_config(name: str, cache: Path, **values):
    """A plan configuration shipped with the package (``engine/configs/NAME.toml``: the demo's
    and the study's), with `values` (the models, the cohorts) set over the file's."""
    path = CONFIGS / f"{name}.toml"
    data = read_toml(path)
    data.update(values)
    return config_from(data, str(path), Path(cache))


def config_from(data: dict, where: str, cache: Path):
    """`engine.plan.AuditConfig` from a TOML file's checked settings (`read_toml`).

    ``out`` may name ``{cache}``, the artefact folder (the shipped configs' reports go there).
    """
    from engine.adaptive import ATTACKER_TRAINING
    from engine.attack.stage import AttackConfig
    from engine.dp.training import DPConfig
    from engine.jointspace import UmapConfig
    from engine.plan import AuditConfig, Compare, Gate

    tables = {t: data.get(t, {}) for t in TABLES}
    model, cohort = data.get("model"), data.get("cohort")
    attack = _table(AttackConfig, tables["attack"], f"{where} [attack]",
                    convert={"pool_sizes": ints, "ks": ints})
    dp = _table(DPConfig, tables["dp"], f"{where} [dp]")
    adaptive = dict(tables["adaptive"])
    known = adaptive.pop("known", None)
    seed = adaptive.pop("seed", 0)
    # the remaining [adaptive] keys are the attacker's (non-private) schedule
    _table(DPConfig, adaptive, f"{where} [adaptive]", base=ATTACKER_TRAINING)
    umap = _table(UmapConfig, tables["umap"], f"{where} [umap]")
    gate_text = data.get("fail_if")
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
    compare = None
    if tables["compare"]:
        table = dict(tables["compare"])
        bad = sorted(set(table) - {"start", "epsilons", "dp"})
        if bad:
            raise ConfigError(f"{where} [compare]: unknown key {bad[0]!r} (known: start, "
                              "epsilons, dp)")
        sub = table.get("dp", {})
        if not isinstance(sub, dict):
            raise ConfigError(f"{where} [compare.dp] must be a table")
        compare = Compare(
            start=str(table.get("start", "original")),
            epsilons=(epsilons(table["epsilons"], f"{where} [compare] epsilons")
                      if "epsilons" in table else Compare.epsilons),
            dp=_table(DPConfig, sub, f"{where} [compare.dp]"))
    selection = None
    if tables["selection"]:
        bad = sorted(set(tables["selection"]) - {"validation_fraction"})
        if bad:
            raise ConfigError(f"{where} [selection]: unknown key {bad[0]!r} (known: "
                              "validation_fraction)")
        selection = float(tables["selection"].get("validation_fraction", 0.2))
    eps = data.get("epsilons")
    formats = data.get("formats")
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    others = data.get("others") or ()
    if isinstance(others, str):
        others = [o.strip() for o in others.split(",") if o.strip()]
    out = data.get("out")
    try:
        start_seed = int(data.get("start_seed", 0))
        seed = int(seed)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: start_seed and [adaptive] seed must be integers") from None
    return AuditConfig(
        model=str(model or ""), cohort=str(cohort or ""), external=data.get("external") or None,
        epsilons=epsilons(eps, "--epsilons") if eps is not None else AuditConfig.epsilons,
        start=str(data.get("start") or "random"), attack=attack, dp=dp,
        known=fractions(known, "--known") if known is not None else AuditConfig.known,
        adaptive_seed=seed, adaptive_training=adaptive, umap=umap,
        formats=tuple(formats) if formats else AuditConfig.formats,
        out=Path(str(out).replace("{cache}", str(cache))) if out else None, gate=gate,
        others=tuple(str(o) for o in others), compare=compare, selection=selection,
        start_seed=start_seed, matched=data.get("matched") or None)
