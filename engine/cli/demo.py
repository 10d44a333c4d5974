"""`python -m engine demo`: every built stage on the phantom cohorts, then the dashboard.

Each stage is skipped when its results are already there, so a second run reaches the dashboard
in seconds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from engine.config import SynthConfig

DEMO_SITES = {"A": ("site-a", "mimic-cxr-jpg", 1000, 0), "B": ("site-b", "chexpert-plus", 400, 1)}


def _stage(name: str, fn: Callable[[], str]) -> None:
    start = time.perf_counter()
    print(f"[demo] {name} ...", flush=True)
    what = fn()
    print(f"[demo] {name}: {what} ({time.perf_counter() - start:.1f} s)", flush=True)


def _synth(site: str, out: Path) -> str:
    from engine.cohort.synth import generate_cohort

    name, _, patients, seed = DEMO_SITES[site]
    marker = out / ".complete"
    config = SynthConfig(site=site, patients=patients, seed=seed)
    if marker.exists() and marker.read_text() == repr(config):
        return f"reused {out}"
    with tqdm(desc=f"phantom site {site}", unit="img", leave=False) as bar:
        summary = generate_cohort(config, out, progress=bar)
    marker.write_text(repr(config))
    return f"{summary.n_images} images of {summary.n_patients} patients in {out}"


def _add(site: str, root: Path, db: Path) -> str:
    from engine.cohort.adapters import load_cohort
    from engine.cohort.registry import register_cohort
    from engine import store

    name, fmt, _, _ = DEMO_SITES[site]
    stamp = str((root / ".complete").stat().st_mtime_ns)
    if db.exists():
        con = store.connect_read(db)
        try:
            rows = con.execute(
                "SELECT root, created_at FROM cohorts WHERE cohort = ?", [name]
            ).fetchall()
        finally:
            con.close()
        marker = root / ".registered"
        if rows and marker.exists() and marker.read_text() == f"{db.resolve()}:{stamp}":
            return f"reused cohort {name!r}"
    load = load_cohort(fmt, root)
    stored = register_cohort(db, name, fmt=fmt, root=root, load=load, site=site)
    (root / ".registered").write_text(f"{db.resolve()}:{stamp}")
    return f"registered {name!r}: {len(stored)} images, {load.n_skipped} skipped"


def _ladder(db: Path, cache: Path) -> tuple[str, list[str]]:
    from engine.phantom.ladder import train_ladder

    with tqdm(desc="ladder", unit="step", leave=False) as bar:
        result = train_ladder(db, cache, "site-a", progress=bar)
    lifts = ", ".join(f"{r.name} {r.lift:.1f}x" for r in result.rungs)
    verb = "reused" if result.reused else f"trained in {result.seconds:.0f} s"
    return f"{verb}; held-out lift at N={result.pool_size}: {lifts}", [r.name for r in result.rungs]


def _embed(db: Path, cache: Path, model: str, cohort: str) -> str:
    from engine.embed.stage import embed_cohort

    with tqdm(desc=f"embed {model}/{cohort}", unit="item", leave=False) as bar:
        result = embed_cohort(db, cache, model, cohort, progress=bar)
    return f"{result.n_items} pairs" + (" (reused)" if result.reused else "")


def _attack(db: Path, cache: Path, model: str, cohort: str, external: bool) -> str:
    from engine import audit

    inputs = audit.load_inputs(db, cache, model, cohort)
    _, reused = audit.attack(db, inputs, external=external)
    return "reused" if reused else f"{len(inputs.items)} pairs ranked"


def _dp(db: Path, cache: Path, model: str) -> str:
    from engine import audit
    from engine.dp.stage import DEFAULT_EPSILONS

    inputs = audit.load_inputs(db, cache, model, "site-a")
    with tqdm(desc="DP steps", unit="step", leave=False) as bar:
        result = audit.dp(db, cache, inputs, epsilons=DEFAULT_EPSILONS, progress=bar)
    return ("reused" if result.reused else "trained") + f": heads {', '.join(result.heads)}"


def _transfer(db: Path, cache: Path, model: str) -> str:
    from engine import audit

    labels = audit.transfer(db, cache, audit.load_inputs(db, cache, model, "site-a"),
                            audit.load_inputs(db, cache, model, "site-b"))
    return f"heads {', '.join(labels)} applied to site-b"


def _umap(db: Path, cache: Path, model: str, cohort: str) -> str:
    from engine import audit

    external = cohort == "site-b"
    inputs = audit.load_inputs(db, cache, model, cohort)
    _, reused = audit.umap(db, cache, inputs, external=external, heads_cohort="site-a")
    return "reused" if reused else "fitted"


def _report(db: Path, cache: Path, model: str, cohort: str) -> str:
    from engine.report import write_report

    paths = write_report(db, model=model, cohort=cohort, out=cache / "reports")
    return ", ".join(str(p) for p in paths.values())


def serve(db: Path) -> int:
    """Start the dashboard on 127.0.0.1 (blocks until interrupted)."""
    app = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
    env = {**os.environ, "RELINK_DB": str(Path(db).resolve())}
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", "127.0.0.1"]
    print(f"[demo] dashboard at http://127.0.0.1:8501 (Ctrl-C to stop)", flush=True)
    return subprocess.call(cmd, env=env, cwd=app.parent.parent)


def demo(args: argparse.Namespace) -> int:
    cache, db = Path(args.cache), Path(args.db)
    start = time.perf_counter()
    for site, (name, _, _, _) in DEMO_SITES.items():
        root = cache / "cohorts" / name
        _stage(f"phantom cohort {name}", lambda: _synth(site, root))
        _stage(f"register {name}", lambda: _add(site, root, db))
    rungs: list[str] = []

    def ladder() -> str:
        what, names = _ladder(db, cache)
        rungs.extend(names)
        return what

    _stage("model ladder", ladder)
    specialist = rungs[-1]
    for model in rungs:
        for cohort in ("site-a", "site-b"):
            _stage(f"embed {model} / {cohort}", lambda: _embed(db, cache, model, cohort))
            _stage(f"attack {model} / {cohort}",
                   lambda: _attack(db, cache, model, cohort, external=cohort == "site-b"))
    _stage(f"dp grid {specialist} / site-a", lambda: _dp(db, cache, specialist))
    _stage(f"transfer {specialist} -> site-b", lambda: _transfer(db, cache, specialist))
    for cohort in ("site-a", "site-b"):
        _stage(f"umap {specialist} / {cohort}", lambda: _umap(db, cache, specialist, cohort))
    for model in rungs:
        _stage(f"report {model} / site-a", lambda: _report(db, cache, model, "site-a"))
    _stage(f"report {specialist} / site-b", lambda: _report(db, cache, specialist, "site-b"))
    print(f"[demo] all stages done in {time.perf_counter() - start:.1f} s; results in {db}")
    if args.no_serve:
        return 0
    return serve(db)
