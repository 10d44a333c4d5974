"""`python -m engine seeds`: the reference paper's four claims on the demo, over training seeds.

A verdict must not hang on rounding or on one draw of the training randomness. For each seed
other than the demo's own (0), this trains the demo's ladder with that seed on the same phantom
cohort (site A), embeds and attacks site A's held-out pairs with every rung, and runs the
default-start DP sweep with that seed (the random starting heads, Poisson sampling and noise),
each in its own folder ``<workdir>/seed-<k>/`` with its own database. It then measures the four
claims on every seed's database exactly as docs/results.md and the dashboard do
(`engine.verdicts.measure_claims`) and stores one row per (seed, claim) in the demo
database's ``seed_verdicts`` table: the verdict, the measured text and the key figures (the
table's column ``finding`` holds the claim's number: a stored name, kept for existing
databases).
`python -m engine readme --block seed-spread` turns them into the spread tables of docs/results.md
(each figure's range, each verdict with how many seeds give it).

Every stage is the demo's own stage function with the demo's settings, so a rerun reuses what
is done; seed 0 is the demo database itself (run ``make demo`` first).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pandas as pd

from engine import store
from engine.core.claims import ClaimResult

COHORT = "site-a"
DEFAULT_SEEDS = (0, 1, 2, 3, 4)


def _register(db: Path, cohorts: Path) -> str:
    """Site A registered in a seed's database (the demo's phantom files, shared read-only)."""
    from engine.cli.demo import DEMO_SITES
    from engine.cohort.adapters import load_cohort
    from engine.cohort.registry import register_cohort

    name, fmt = DEMO_SITES["A"][:2]
    if db.exists():
        con = store.connect_read(db)
        try:
            known = store.table_exists(con, "cohorts") and bool(con.execute(
                "SELECT count(*) FROM cohorts WHERE cohort = ?", [name]).fetchone()[0])
        finally:
            con.close()
        if known:
            return "reused"
    root = cohorts / name
    stored = register_cohort(db, name, fmt=fmt, root=root, load=load_cohort(fmt, root),
                             site="A")
    return f"{len(stored)} images"


def run_seed(seed: int, folder: Path, cohorts: Path, echo: Callable[[str], None] = print
             ) -> Path:
    """Train and measure the paper's claims on the demo's site A with `seed`; returns its
    database."""
    from tqdm import tqdm

    from engine import audit
    from engine.configs import load_config
    from engine.dp.stage import DEFAULT_EPSILONS
    from engine.dp.start import RANDOM, Start
    from engine.embed.stage import embed_cohort
    from synthetic.ladder.ladder import LadderConfig, train_ladder

    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "relink.duckdb"
    # the demo's DP settings from its default start (engine/configs/demo.toml)
    demo_dp = load_config("demo", folder, model="-").dp

    def stage(name: str, fn: Callable[[], str]) -> None:
        start = time.perf_counter()
        echo(f"[seeds] seed {seed}: {name} ...")
        echo(f"[seeds] seed {seed}: {name}: {fn()} ({time.perf_counter() - start:.1f} s)")

    stage("register site-a", lambda: _register(db, cohorts))
    rungs: list[str] = []

    def ladder() -> str:
        with tqdm(desc=f"ladder seed {seed}", unit="step", leave=False) as bar:
            result = train_ladder(db, folder, COHORT, config=LadderConfig(seed=seed),
                                  progress=bar)
        rungs.extend(r.name for r in result.rungs)
        return ("reused" if result.reused else "trained") + ": " + ", ".join(
            f"{r.name} {r.lift:.1f}x" for r in result.rungs)

    stage("ladder", ladder)
    for model in rungs:
        def embed_attack(model: str = model) -> str:
            with tqdm(desc=f"embed {model}", unit="item", leave=False) as bar:
                embed_cohort(db, folder, model, COHORT, progress=bar)
            _, reused = audit.attack(db, audit.load_inputs(db, folder, model, COHORT))
            return "reused" if reused else "ranked"

        stage(f"embed and attack {model}", embed_attack)

    def dp() -> str:
        with tqdm(desc=f"DP seed {seed}", unit="step", leave=False) as bar:
            result = audit.dp(db, folder, audit.load_inputs(db, folder, rungs[-1], COHORT),
                              epsilons=DEFAULT_EPSILONS, progress=bar,
                              training=replace(demo_dp, seed=seed),
                              start=Start(RANDOM, None, seed))
        return ("reused" if result.reused else "trained") + f": heads {', '.join(result.heads)}"

    stage(f"dp grid {rungs[-1]}", dp)
    return db


def record(demo_db: Path, seed: int, results: Sequence[ClaimResult], *,
           cohort: str = COHORT) -> None:
    """Replace `seed`'s rows of ``seed_verdicts`` in the demo database."""
    from engine.numerics import settings
    from engine.runs import code_version

    version, numerics = code_version(), json.dumps(settings(), sort_keys=True)
    with store.connect_write(demo_db) as con, store.transaction(con):
        con.execute("DELETE FROM seed_verdicts WHERE cohort = ? AND seed = ?", [cohort, seed])
        for r in results:
            figures = {k: (float(v) if v == v else None) for k, v in r.figures.items()}
            con.execute("INSERT INTO seed_verdicts (cohort, seed, finding, title, verdict, "
                        "measured, figures_json, code_version, numerics_json) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [cohort, seed, r.number, r.claim, r.verdict, r.measured,
                         json.dumps(figures, sort_keys=True), version, numerics])


def seed_spread(demo_db: Path, workdir: Path, cohorts: Path, seeds: Sequence[int] = DEFAULT_SEEDS,
                echo: Callable[[str], None] = print) -> pd.DataFrame:
    """Run every seed (0 is the demo database itself), record and return the verdict rows."""
    from engine.errors import ConfigError
    from engine.verdicts import measure_claims

    if not Path(demo_db).exists():
        raise ConfigError(f"{demo_db}: no demo database (run `make demo` first)")
    for seed in seeds:
        db = demo_db if seed == 0 else run_seed(seed, Path(workdir) / f"seed-{seed}", cohorts,
                                                echo)
        results = measure_claims(db, COHORT)
        record(demo_db, seed, results)
        echo(f"[seeds] seed {seed}: " + "; ".join(f"{r.number}. {r.verdict}" for r in results))
    return spread_rows(demo_db)


def seeds(args: argparse.Namespace) -> int:
    """The `seeds` command."""
    db, cache = Path(args.db), Path(args.cache)
    workdir = Path(args.workdir) if args.workdir else cache / "seeds"
    chosen = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    seed_spread(db, workdir, cache / "cohorts", chosen,
                echo=lambda line: print(line, flush=True))
    print(f"[seeds] verdicts of seeds {', '.join(map(str, chosen))} in {db} (seed_verdicts); "
          "`python -m engine readme --block seed-spread` writes the spread into docs/results.md",
          flush=True)
    return 0


def spread_rows(db: Path, cohort: str = COHORT) -> pd.DataFrame:
    """The stored ``seed_verdicts`` rows of a cohort, by claim and seed (column ``finding``)."""
    return store.read_df(db, "SELECT seed, finding AS claim, title, verdict, measured, "
                             "figures_json, "
                             "code_version FROM seed_verdicts WHERE cohort = ? "
                             "ORDER BY finding, seed", [cohort])
