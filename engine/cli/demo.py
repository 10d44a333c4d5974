"""`python -m engine demo`: every built stage on the phantom cohorts, then the dashboard.

Each stage is skipped when its results are already there, so a second run reaches the dashboard
in seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from engine.config import SynthConfig

# (cohort name, layout, patients, seed, held-out fraction). Site A's held-out set (45% of its
# patients, as in the study) is large enough for N = 1,000 and, with the phantom's outpatient-heavy
# label mix, for matched pools of N = 100 for about half of its queries.
DEMO_SITES = {"A": ("site-a", "mimic-cxr-jpg", 1400, 0, 0.45),
              "B": ("site-b", "chexpert-plus", 400, 1, 0.25)}
# DP on the demo's ~1,600 training pairs: groups of 8 (about 4 pairs each) give ~400 privacy
# units instead of ~100, and 10 epochs give the noisy steps room to move the heads.
DEMO_DP = dict(group_size=8, epochs=10)
# From seeded random heads the heads must travel further: a larger rate and more epochs.
DEMO_DP_RANDOM = dict(group_size=8, epochs=20, lr=3e-3)
# One UMAP map per cohort and set of heads (7 per cohort, ~3,000 points on site A): the original
# heads' map with 200 epochs instead of UMAP's 500, every other map starting from it with 50.
DEMO_UMAP_EPOCHS = 200
DEMO_UMAP_ALIGNED_EPOCHS = 50


def _stage(name: str, fn: Callable[[], str]) -> None:
    start = time.perf_counter()
    print(f"[demo] {name} ...", flush=True)
    what = fn()
    print(f"[demo] {name}: {what} ({time.perf_counter() - start:.1f} s)", flush=True)


def _synth(site: str, out: Path) -> str:
    from engine.cohort.synth import generate_cohort

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
    from engine.dp.start import Start
    from engine.dp.training import DPConfig

    inputs = audit.load_inputs(db, cache, model, "site-a")
    done = []
    # the default start (seeded random heads) and, for comparison, the model's own heads
    for start, settings in (("random", DEMO_DP_RANDOM), ("original", DEMO_DP)):
        with tqdm(desc=f"DP steps ({start} start)", unit="step", leave=False) as bar:
            result = audit.dp(db, cache, inputs, epsilons=DEFAULT_EPSILONS, progress=bar,
                              training=DPConfig(**settings), start=Start(start))
        done.append(("reused" if result.reused else "trained")
                    + f": heads {', '.join(result.heads)}")
    return "; ".join(done)


def _adaptive(db: Path, cache: Path, model: str) -> str:
    from engine import audit
    from engine.adaptive import AdaptiveConfig

    # the attacker who refits the heads: on site B's pairs (public), or on 1% / 5% of site A's
    # held-out patients (a leak); evaluated on the other held-out pairs
    found = audit.adaptive(db, cache, audit.load_inputs(db, cache, model, "site-a"),
                           config=AdaptiveConfig(public=("site-b",)))
    return ", ".join(f"{a.label} ({a.n_fit_pairs} pairs{', reused' if a.reused else ''})"
                     for a in found)


def _transfer(db: Path, cache: Path, model: str) -> str:
    from engine import audit

    labels = audit.transfer(db, cache, audit.load_inputs(db, cache, model, "site-a"),
                            audit.load_inputs(db, cache, model, "site-b"))
    return f"heads {', '.join(labels)} applied to site-b"


def _umap(db: Path, cache: Path, model: str, cohort: str) -> str:
    from engine import audit
    from engine.jointspace import UmapConfig

    external = cohort == "site-b"
    inputs = audit.load_inputs(db, cache, model, cohort)
    config = UmapConfig(n_epochs=DEMO_UMAP_EPOCHS, aligned_epochs=DEMO_UMAP_ALIGNED_EPOCHS)
    _, reused = audit.umap(db, cache, inputs, config=config, external=external,
                           heads_cohort="site-a")
    return "reused" if reused else "fitted"


def _report(db: Path, cache: Path, model: str, cohort: str) -> str:
    from engine.report import write_report

    paths = write_report(db, model=model, cohort=cohort, out=cache / "reports")
    return ", ".join(str(p) for p in paths.values())


def summarize(db: Path) -> str:
    """The study's four findings measured on the demo database, as a terminal table."""
    from engine.core.findings import format_findings
    from engine.verdicts import measure_findings

    results = measure_findings(db, "site-a", external="site-b")
    return (format_findings(results) + "\nFinding 4 uses the DP heads of the default start "
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
    cache, db = Path(args.cache), Path(args.db)
    start = time.perf_counter()
    for site, (name, *_) in DEMO_SITES.items():
        root = cache / "cohorts" / name
        _stage(f"phantom cohort {name}", lambda site=site, root=root: _synth(site, root))
        _stage(f"register {name}", lambda site=site, root=root: _add(site, root, db))
    rungs: list[str] = []

    def ladder() -> str:
        what, names = _ladder(db, cache)
        rungs.extend(names)
        return what

    _stage("model ladder", ladder)
    specialist = rungs[-1]
    for model in rungs:
        for cohort in ("site-a", "site-b"):
            _stage(f"embed {model} / {cohort}", lambda m=model, c=cohort: _embed(db, cache, m, c))
            _stage(f"attack {model} / {cohort}",
                   lambda m=model, c=cohort: _attack(db, cache, m, c, external=c == "site-b"))
    _stage(f"dp grid {specialist} / site-a", lambda: _dp(db, cache, specialist))
    _stage(f"adaptive attack {specialist} / site-a", lambda: _adaptive(db, cache, specialist))
    _stage(f"transfer {specialist} -> site-b", lambda: _transfer(db, cache, specialist))
    for cohort in ("site-a", "site-b"):
        _stage(f"umap {specialist} / {cohort}", lambda c=cohort: _umap(db, cache, specialist, c))
    for model in rungs:
        _stage(f"report {model} / site-a", lambda m=model: _report(db, cache, m, "site-a"))
    _stage(f"report {specialist} / site-b", lambda: _report(db, cache, specialist, "site-b"))
    print(f"[demo] all stages done in {time.perf_counter() - start:.1f} s; results in {db}")
    print("[demo] the study's four findings on phantom site A (held-out, image -> report, "
          "Recall@1, 95% CI):", flush=True)
    print(summarize(db), flush=True)
    if args.no_serve:
        return 0
    return serve(db)
