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
    print(f"[demo] all stages done in {time.perf_counter() - start:.1f} s; results in {db}")
    if args.no_serve:
        return 0
    return serve(db)
