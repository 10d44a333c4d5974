"""Handlers for `models train-ladder`, `models list` and `embed`."""

from __future__ import annotations

import argparse


def train_ladder(args: argparse.Namespace) -> int:
    from engine.phantom.ladder import LadderConfig
    from engine.phantom.ladder import train_ladder as run_ladder

    epochs = None
    if args.epochs:
        try:
            epochs = tuple(int(e) for e in args.epochs.split(","))
        except ValueError:
            from engine.errors import ConfigError

            raise ConfigError(
                f"--epochs {args.epochs!r}: expected integers like 0,1,3,10") from None
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
    print(f"registered {len(result.rungs)} models in {args.db} (`python -m engine models list`)")
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
        level = None if row.specialization is None or row.specialization != row.specialization \
            else int(row.specialization)
        rows.append((name, level, _availability(row.spec), row.description or "", row.spec))
    print(f"{'model':<16} {'spec.':>5}  {'status':<10} description")
    for name, level, status, description, spec in rows:
        print(f"{name:<16} {'' if level is None else level:>5}  {status:<10} {description}")
        print(f"{'':<16} {'':>5}  {'':<10} {spec}")
    print(f"{len(rows)} models (registry: engine/models/registry.toml; table: {args.db})")
    return 0


def _availability(spec: str) -> str:
    """Cheap local check: is a local-dir / checkpoint spec on disk? (hub caches: 'check on use')."""
    from pathlib import Path

    if spec.startswith("local-dir:"):
        folder = Path(spec[len("local-dir:"):].split("@")[0])
        return "ready" if (folder / "open_clip_config.json").exists() else "not built"
    if "@" in spec and not spec.startswith("hf-hub:"):
        return "ready" if Path(spec.split("@", 1)[1]).expanduser().is_file() else "missing"
    return "cache"


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

