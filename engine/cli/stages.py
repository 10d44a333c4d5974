"""Handlers for `models train-ladder`, `models list` and `embed`."""

from __future__ import annotations

import argparse

import pandas as pd


def train_ladder(args: argparse.Namespace) -> int:
    from synthetic.ladder.ladder import LadderConfig
    from synthetic.ladder.ladder import train_ladder as run_ladder

    epochs = args.epochs or None  # parsed by the option's type (engine.cli.options.int_list)
    if args.config is not None:
        config = LadderConfig.from_toml(args.config, rung_epochs=epochs)
    else:
        config = LadderConfig(rung_epochs=epochs) if epochs else LadderConfig()
    with _LazyBar(desc="ladder", unit="step", leave=False) as bar:
        result = run_ladder(args.db, args.cache, args.cohort, config=config, progress=bar)
    timing = (f"{result.seconds:.0f} s: {result.preprocess_seconds:.0f} s preprocessing, "
              f"{result.train_seconds:.0f} s training and calibration")
    verb = f"reused (trained earlier in {timing})" if result.reused else f"trained in {timing}"
    print(
        f"phantom ladder on cohort {args.cohort!r} ({result.n_train} train pairs, "
        f"{result.n_eval} held-out): {verb}; rungs in {result.folder}"
    )
    print(f"  {'model':<12} {'epochs':>6} {'R@1 N=' + str(result.pool_size):>10} {'lift':>7}")
    for rung in result.rungs:
        print(f"  {rung.name:<12} {rung.epochs:>6} {rung.recall:>10.4f} {rung.lift:>6.1f}x")
    print(f"registered {len(result.rungs)} models in {args.db} (`{_prog()} models list`)")
    return 0


def list_models(args: argparse.Namespace) -> int:
    from engine.models.registry import read_models_table, read_registry

    table = read_models_table(args.db)
    registered = {row.model: row for row in table.itertuples(index=False)}
    rows = []
    for entry in read_registry(args.cache):
        row = registered.pop(entry.name, None)
        rows.append((entry.name, entry.specialization, _availability(entry.spec),
                     row.description if row is not None else entry.description, entry.spec))
    for name, row in registered.items():
        # an unregistered model's specialization is NULL: pandas gives NA, which has no truth
        level = None if pd.isna(row.specialization) else int(row.specialization)
        description = "" if pd.isna(row.description) else str(row.description)
        rows.append((name, level, _availability(row.spec), description, row.spec))
    print(f"{'model':<16} {'spec.':>5}  {'status':<10} description")
    for name, level, status, description, spec in rows:
        print(f"{name:<16} {'' if level is None else level:>5}  {status:<10} {description}")
        print(f"{'':<16} {'':>5}  {'':<10} {spec}")
    print(f"{len(rows)} models (registry: engine/models/registry.toml; table: {args.db}; "
          f"name another with `{_prog()} models add NAME SPEC`)")
    return 0


def add_model(args: argparse.Namespace) -> int:
    from engine.errors import ConfigError
    from engine.models import families
    from engine.models.registry import ModelEntry, read_registry, register_models

    if any(e.name == args.name for e in read_registry(args.cache)):
        raise ConfigError(f"model name {args.name!r} is taken by the package registry "
                          "(engine/models/registry.toml); choose another")
    spec = args.spec.strip()
    if families.family_name(spec) == "open_clip":
        from engine.models.loading import parse_spec

        parse_spec(families.strip_prefix(spec))  # a malformed spec is refused now, not at use
    register_models(args.db, [ModelEntry(args.name, spec, args.specialization,
                                         args.description)])
    print(f"model {args.name!r} -> {spec} ({_availability(spec)}) registered in {args.db}; "
          f"use --model {args.name}")
    return 0


def import_embeddings(args: argparse.Namespace) -> int:
    from engine.embed.imports import import_embeddings as run_import

    result = run_import(args.db, args.cache, model=args.model, cohort=args.cohort,
                        table=args.table, image=args.image, text=args.text, ids=args.ids,
                        heads=args.heads, heads_config=args.heads_config,
                        logit_scale=args.logit_scale, logit_bias=args.logit_bias,
                        description=args.description)
    what = ("pre-projection features and heads: every stage can run" if result.kind == "features"
            else "final embeddings: attack, umap and report can run, dp cannot")
    verb = "already imported" if result.reused else "imported"
    print(f"{verb} {result.n_items} items of cohort {result.cohort!r} as model "
          f"{result.model!r} ({what}; image {result.image_width}, text {result.text_width}, "
          f"embedding {result.embed_dim} wide) -> {result.folder}")
    return 0


def _prog() -> str:
    import sys
    from pathlib import Path

    command = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return "relink-audit" if command == "relink-audit" else "python -m engine"


def _availability(spec: str) -> str:
    """Cheap local check by the spec's family (`engine.models.families.available`)."""
    from engine.models import families

    try:
        return families.available(spec)
    except Exception:  # noqa: BLE001 - a listing never fails on one odd spec
        return "unknown"


class _LazyBar:
    """A tqdm bar that appears only once there is work to show (so errors stay one line)."""

    def __init__(self, **kwargs) -> None:
        self._kwargs = kwargs
        self._bar = None

    def _open(self, total=None):
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, **self._kwargs)
        return self._bar

    @property
    def total(self):
        return None if self._bar is None else self._bar.total

    @total.setter
    def total(self, value) -> None:
        self._open(value).total = value

    def refresh(self) -> None:
        self._open().refresh()

    def update(self, n: int = 1) -> None:
        self._open().update(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()


def embed(args: argparse.Namespace) -> int:
    from engine.embed.stage import EmbedOptions, embed_cohort

    options = EmbedOptions(batch_size=getattr(args, "batch_size", None),
                           device=getattr(args, "device", None),
                           chunk_size=getattr(args, "chunk_size", None) or 512,
                           precision=getattr(args, "precision", None) or "fp32")
    with _LazyBar(desc=f"embed {args.cohort}", unit="item") as bar:
        result = embed_cohort(args.db, args.cache, args.model, args.cohort, options=options,
                              progress=bar)
    if result.reused:
        print(f"already embedded: {result.n_items} items of cohort {result.cohort!r} with model "
              f"{result.model!r} in {result.folder} (nothing to do)")
        return 0
    resumed = (f", {result.chunks_reused} reused from an interrupted run"
               if result.chunks_reused else "")
    print(f"embedded {result.n_items} items of cohort {result.cohort!r} with model "
          f"{result.model!r} on {result.device} in {result.seconds:.1f} s "
          f"({result.chunks_computed} of {result.chunks_total} chunks computed{resumed}) -> "
          f"{result.folder}")
    if result.skipped:
        print(f"skipped {len(result.skipped)} unreadable images:")
        for item in result.skipped[:10]:
            print(f"  {item['file']}: {item['error']}")
    return 0

