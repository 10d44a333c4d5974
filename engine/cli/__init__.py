"""`python -m engine`: the command line (DESIGN §3.8).

The parser lists every subcommand; each handler lives in a small module of this package and is
imported only when its subcommand runs, so `--help` is instant and heavy libraries (torch,
open_clip, opacus, faiss, umap) load only inside the stages that need them. Handlers print; the
library underneath only logs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from engine import __version__
from engine.config import DEFAULT_CACHE, DEFAULT_DB
from engine.errors import EngineError

COHORT_FORMATS = ("mimic-cxr-jpg", "chexpert-plus", "iu-xray", "csv")
SECTIONS = ("findings", "impression", "both", "full")


def _add_model_cohort(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="registered model name or open_clip spec")
    p.add_argument("--cohort", required=True, help="registered cohort name")


def build_parser() -> argparse.ArgumentParser:
    """The whole command-line interface."""
    parser = argparse.ArgumentParser(
        prog="python -m engine",
        description="Re-linkage privacy audit for clinical vision-language models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--db", type=Path, default=DEFAULT_DB, help="DuckDB results file")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="artefact folder")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cohort = sub.add_parser("cohort", help="generate, validate and register cohorts")
    csub = cohort.add_subparsers(dest="cohort_command", required=True, metavar="ACTION")
    p = csub.add_parser("synth", help="write a phantom cohort in a real dataset's layout")
    p.add_argument("--site", choices=("A", "B"), default="A",
                   help="A: MIMIC-CXR-JPG layout; B: CheXpert Plus layout (external site)")
    p.add_argument("--patients", type=int, default=1000, help="number of patients (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    p.add_argument("--image-size", type=int, default=256, help="image side in pixels (>= 256)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(handler="engine.cli.cohort:synth")

    for name, help_text in (("check", "validate a cohort on disk and print a report"),
                            ("add", "register a cohort in DuckDB")):
        p = csub.add_parser(name, help=help_text)
        if name == "add":
            p.add_argument("--name", required=True, help="cohort name used by later stages")
            p.add_argument("--site", default=None, help="free-text site label (e.g. A, B)")
        p.add_argument("--format", required=True, choices=COHORT_FORMATS, dest="fmt")
        p.add_argument("--root", type=Path, required=True, help="dataset root folder")
        p.add_argument("--section", choices=SECTIONS, default="both",
                       help="report text used: findings, impression, both (default) or full")
        p.set_defaults(handler=f"engine.cli.cohort:{name}")

    p = csub.add_parser("sheet", help="render a contact sheet of images with their labels")
    p.add_argument("--format", required=True, choices=COHORT_FORMATS, dest="fmt")
    p.add_argument("--root", type=Path, required=True, help="dataset root folder")
    p.add_argument("--out", type=Path, required=True, help="output PNG file")
    p.add_argument("--n", type=int, default=16, help="number of images (default 16)")
    p.add_argument("--seed", type=int, default=0, help="which images are picked")
    p.set_defaults(handler="engine.cli.cohort:sheet")

    models = sub.add_parser("models", help="model registry and the phantom ladder")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    p = msub.add_parser("train-ladder", help="train and register the phantom model ladder")
    p.add_argument("--cohort", required=True, help="registered cohort to train on (train split)")
    p.add_argument("--epochs", default=None,
                   help="epochs per rung, comma-separated, starting at 0 (default 0,12,24,36)")
    p.add_argument("--config", type=Path, default=None,
                   help="TOML file with ladder settings (engine/models/ladder.py LadderConfig)")
    p.set_defaults(handler="engine.cli.stages:train_ladder")
    p = msub.add_parser("list", help="list registered models")
    p.set_defaults(handler="engine.cli.stages:list_models")

    p = sub.add_parser("embed", help="embed a cohort's images and reports with a model")
    _add_model_cohort(p)
    p.add_argument("--batch-size", type=int, default=None, help="items per batch (64 CPU, 256 GPU)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="default: the GPU when there is one")
    p.set_defaults(handler="engine.cli.stages:embed")

    p = sub.add_parser("attack", help="re-linkage attack: exact pool metrics into DuckDB")
    _add_model_cohort(p)
    p.add_argument("--pool-sizes", default="10,100,1000,10000",
                   help="pool sizes N besides the full database (default 10,100,1000,10000)")
    p.add_argument("--external", action="store_true",
                   help="the model never saw this cohort: evaluate every pair as held-out")
    p.set_defaults(handler="engine.cli.audit:attack")

    p = sub.add_parser("dp", help="retrain the projection heads with DP over an epsilon grid")
    _add_model_cohort(p)
    p.add_argument("--epsilons", default="0.34,1,2,4,8,inf",
                   help="comma-separated target epsilons (group level); inf is always added")
    p.set_defaults(handler="engine.cli.audit:dp")

    p = sub.add_parser("transfer", help="apply heads trained on one cohort to an external one")
    _add_model_cohort(p)
    p.add_argument("--source", required=True, help="cohort the DP heads were trained on")
    p.set_defaults(handler="engine.cli.audit:transfer")

    p = sub.add_parser("umap", help="2-D joint space of images and reports")
    _add_model_cohort(p)
    p.add_argument("--max-points", type=int, default=20000, help="points per map (default 20000)")
    p.add_argument("--external", action="store_true", help="map every pair (external cohort)")
    p.add_argument("--heads-from", default=None,
                   help="cohort whose trained heads to map (default: this cohort)")
    p.set_defaults(handler="engine.cli.audit:umap")

    p = sub.add_parser("report", help="write the audit report")
    _add_model_cohort(p)
    p.add_argument("--format", default="html,pdf,json", dest="fmt", help="html,pdf,json")
    p.add_argument("--out", type=Path, default=Path("cache/reports"), help="output folder")
    p.set_defaults(handler="engine.cli.audit:report")

    p = sub.add_parser("demo", help="every stage on the phantom cohorts, then the dashboard")
    p.add_argument("--no-serve", action="store_true", help="do not start the dashboard")
    p.set_defaults(handler="engine.cli.demo:demo")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    module, func = args.handler.split(":")
    try:
        handler = getattr(importlib.import_module(module), func)
        return int(handler(args) or 0)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; completed work is kept and the next run resumes", file=sys.stderr)
        return 130
