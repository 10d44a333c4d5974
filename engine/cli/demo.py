"""`python -m engine demo`: the phantom world, the audit plan on it, then the dashboard.

The demo builds the synthetic world (two phantom cohorts, their registration, the model ladder)
and then runs the audit plan (`engine.plan`) with the configuration shipped as
``engine/configs/demo.toml``: every rung embedded and attacked, the strongest audited in full.
Each stage is reused when its results are already there, so a second run reaches the dashboard
in seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from engine.config import SynthConfig

# (cohort name, layout, patients, seed, held-out fraction). Site A's held-out set (45% of its
# patients, as in the paper) is large enough for N = 1,000 and, with the phantom's outpatient-heavy
# label mix, for matched pools of N = 100 for about half of its queries.
DEMO_SITES = {"A": ("site-a", "mimic-cxr-jpg", 1400, 0, 0.45),
              "B": ("site-b", "chexpert-plus", 400, 1, 0.25)}
def _synth(site: str, out: Path) -> str:
    from synthetic.cohort import generate_cohort

    name, _, patients, seed, held_out = DEMO_SITES[site]
    marker = out / ".complete"
    config = SynthConfig(site=site, patients=patients, seed=seed, held_out_fraction=held_out)
    if marker.exists() and marker.read_text() == repr(config):
        return f"reused {out}"
    with tqdm(desc=f"phantom site {site}", unit="img", leave=False) as bar:
        summary = generate_cohort(config, out, progress=bar)
    marker.write_text(repr(config))
    return f"{summary.n_images} images of {summary.n_patients} patients in {out}"


def _add(site: str, root: Path, db: Path) -> str:
    from engine import store
    from engine.cohort.adapters import load_cohort
    from engine.cohort.registry import register_cohort

    name, fmt = DEMO_SITES[site][:2]
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
    from synthetic.ladder.ladder import train_ladder

    with tqdm(desc="ladder", unit="step", leave=False) as bar:
        result = train_ladder(db, cache, "site-a", progress=bar)
    lifts = ", ".join(f"{r.name} {r.lift:.1f}x" for r in result.rungs)
    verb = "reused" if result.reused else f"trained in {result.seconds:.0f} s"
    return f"{verb}; held-out lift at N={result.pool_size}: {lifts}", [r.name for r in result.rungs]


def summarize(db: Path) -> str:
    """The reference paper's four claims measured on the demo database, as a terminal table."""
    from engine.core.claims import format_claims
    from engine.verdicts import measure_claims

    results = measure_claims(db, "site-a", external="site-b")
    return (format_claims(results) + "\nClaim 4 uses the DP heads of the default start "
            "(seeded random heads, `dp --start random`), compared with the epsilon = inf heads "
            "of the same start; the original-start heads (`...+original`) are stored for "
            "comparison only: their epsilon does not cover the starting heads.")


def serve(db: Path) -> int:
    """Replace this process by the dashboard server (never returns unless exec fails).

    The engine's stages leave a large resident process behind (torch, models, features); exec
    hands the process over to Streamlit so none of that memory stays while the dashboard serves.
    The address is 127.0.0.1 unless ``STREAMLIT_SERVER_ADDRESS`` says otherwise (the container
    sets 0.0.0.0 inside its own network namespace).
    """
    import dashboard

    app = Path(dashboard.__file__).resolve().parent / "app.py"
    os.environ["RELINK_DB"] = str(Path(db).resolve())
    # the folder holding `engine` and `dashboard` (a checkout or site-packages) goes first on
    # the server's import path; the working directory stays the user's (relative cohort roots)
    home = str(app.parent.parent)
    paths = [home] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    # the warm launcher: imports the pages' libraries and fills the default page's caches at start
    cmd = [sys.executable, "-m", "dashboard.serve"]
    if not os.environ.get("STREAMLIT_SERVER_ADDRESS"):
        cmd += ["--server.address", "127.0.0.1"]
    address = os.environ.get("STREAMLIT_SERVER_ADDRESS", "127.0.0.1")
    port = os.environ.get("STREAMLIT_SERVER_PORT", "8501")
    print(f"[demo] dashboard at http://{address}:{port} (Ctrl-C to stop)", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, cmd)
    return 1  # only reached when exec is mocked


def demo(args: argparse.Namespace) -> int:
    from engine import plan as planning
    from engine.configs import load_config
    from engine.plan import print_plan, progress_lines

    cache, db = Path(args.cache), Path(args.db)
    start = time.perf_counter()
    stage = progress_lines("demo")
    for site, (name, *_) in DEMO_SITES.items():
        root = cache / "cohorts" / name
        stage(f"phantom cohort {name}", lambda site=site, root=root: _synth(site, root))
        stage(f"register {name}", lambda site=site, root=root: _add(site, root, db))
    rungs: list[str] = []

    def ladder() -> str:
        what, names = _ladder(db, cache)
        rungs.extend(names)
        return what

    stage("model ladder", ladder)
    # the audit plan of demo.toml: the strongest rung in full, the others embedded and attacked
    config = load_config("demo", cache, model=rungs[-1], others=rungs[:-1],
                         cohort=DEMO_SITES["A"][0], external=DEMO_SITES["B"][0])
    plan = planning.steps(db, cache, config)
    states = planning.check(plan)
    print_plan(plan, states, config, db, title="[demo] plan")
    planning.execute(plan, states, progress_lines("demo"))
    print(f"[demo] all stages done in {time.perf_counter() - start:.1f} s; results in {db}")
    print("[demo] the reference paper's four claims on phantom site A (held-out, image -> report, "
          "Recall@1, 95% CI):", flush=True)
    print(summarize(db), flush=True)
    if args.no_serve:
        return 0
    return serve(db)
