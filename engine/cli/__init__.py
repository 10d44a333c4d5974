"""`python -m engine`: the command line (the README's "Command line" section).

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
from engine.cli.options import epsilon_list, fraction_list, int_at_least, int_list, name_type
from engine.config import DEFAULT_CACHE, DEFAULT_DB
from engine.errors import EngineError

COHORT_FORMATS = ("mimic-cxr-jpg", "chexpert-plus", "iu-xray", "padchest", "csv")
SECTIONS = ("findings", "impression", "both", "full")
# A map needs more pairs than UMAP's 15 neighbours: 16 pairs = 32 points.
UMAP_MIN_POINTS = 32
UMAP_WHY = "16 image-report pairs, more than UMAP's 15 neighbours"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error: python -m engine dp: argument ...: reason``.

    Subparsers inherit the class, so every subcommand's errors look alike.
    """

    def error(self, message: str) -> None:  # type: ignore[override]
        if "expected one argument" in message:
            # A value starting with '-' (``--epsilons -1,2``) reads as an option to argparse.
            message += "; a value that starts with '-' must be joined with '=', e.g. --epsilons=-1"
        self.exit(2, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def _add_model_cohort(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="registered model name or a spec (docs/models.md: open_clip, hf:DIR, "
                        "openai:FILE)")
    p.add_argument("--cohort", required=True, help="registered cohort name")


def build_parser() -> argparse.ArgumentParser:
    """The whole command-line interface."""
    # `relink-audit` is the console script of an installed copy (pyproject.toml)
    command = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    parser = Parser(
        prog="relink-audit" if command == "relink-audit" else "python -m engine",
        description="Re-linkage privacy audit for clinical vision-language models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--db", type=Path, default=DEFAULT_DB, help="DuckDB results file")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="artefact folder")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an unexpected error")
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
    p.set_defaults(handler="engine.cli.cohort:synth", writes=("out",))

    for name, help_text in (("check", "validate a cohort on disk and print a report"),
                            ("add", "register a cohort in DuckDB")):
        p = csub.add_parser(name, help=help_text)
        if name == "add":
            p.add_argument("--name", required=True, type=name_type,
                           help="cohort name used by later stages")
            p.add_argument("--site", default=None, help="free-text site label (e.g. A, B)")
        p.add_argument("--format", required=True, choices=COHORT_FORMATS, dest="fmt")
        p.add_argument("--root", type=Path, required=True, help="dataset root folder")
        p.add_argument("--section", choices=SECTIONS, default="both",
                       help="report text used: findings, impression, both (default) or full")
        p.set_defaults(handler=f"engine.cli.cohort:{name}",
                       writes=("db",) if name == "add" else ())

    p = csub.add_parser("sheet", help="render a contact sheet of images with their labels")
    p.add_argument("--format", required=True, choices=COHORT_FORMATS, dest="fmt")
    p.add_argument("--root", type=Path, required=True, help="dataset root folder")
    p.add_argument("--out", type=Path, required=True, help="output PNG file")
    p.add_argument("--n", type=int_at_least(1), default=16, help="number of images (default 16)")
    p.add_argument("--seed", type=int, default=0, help="which images are picked")
    p.set_defaults(handler="engine.cli.cohort:sheet", writes=("out_file",))

    p = csub.add_parser("render", help="real reports of a public release with synthetic images")
    p.add_argument("--source", required=True, choices=("padchest", "iu-xray"),
                   help="release whose reports are rendered (read from the installed "
                        "torchxrayvision package)")
    p.add_argument("--out", type=Path, required=True, help="output folder (release layout)")
    p.add_argument("--max-patients", type=int_at_least(1), default=None,
                   help="render a seeded sample of this many patients (default: all)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    p.add_argument("--image-size", type=int_at_least(64), default=128,
                   help="image side in pixels (default 128)")
    p.set_defaults(handler="engine.cli.study:render", writes=("out",))

    models = sub.add_parser("models", help="model registry and the phantom ladder")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    p = msub.add_parser("train-ladder", help="train and register the phantom model ladder")
    p.add_argument("--cohort", required=True, help="registered cohort to train on (train split)")
    p.add_argument("--epochs", default=None, type=int_list(0, "epochs per rung"),
                   help="epochs per rung, comma-separated, starting at 0 (default 0,12,24,36)")
    p.add_argument("--config", type=Path, default=None,
                   help="TOML file with ladder settings (synthetic/ladder/ladder.py LadderConfig)")
    p.set_defaults(handler="engine.cli.stages:train_ladder", writes=("db", "cache"))
    p = msub.add_parser("list", help="list registered models")
    p.set_defaults(handler="engine.cli.stages:list_models", writes=("db_read",))
    p = msub.add_parser("add", help="name a model spec (stored in the results database)")
    p.add_argument("name", type=name_type, help="the model's name in commands and results")
    p.add_argument("spec", help="what to load (docs/models.md): ARCH@FILE, local-dir:DIR, "
                                "hf:DIR, openai:FILE, ...")
    p.add_argument("--description", default="", help="one line shown in lists and audit reports")
    p.add_argument("--specialization", type=int, default=None,
                   help="order on the specialisation axis (0 = least in-domain); only models "
                        "with one form the overview's specialisation ladder")
    p.set_defaults(handler="engine.cli.stages:add_model", writes=("db",))

    p = sub.add_parser("embed", help="embed a cohort's images and reports with a model")
    _add_model_cohort(p)
    p.add_argument("--batch-size", type=int_at_least(1), default=None,
                   help="items per batch (64 CPU, 256 GPU)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="default: the GPU when there is one")
    p.add_argument("--chunk-size", type=int_at_least(1), default=512,
                   help="items per chunk file, the unit of resumption and of sharding between "
                        "torchrun ranks (default 512)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="backbone precision: fp32 (default) or bf16/fp16 autocast (GPU speed; "
                        "cosine to fp32 >= 0.999 is checked)")
    p.set_defaults(handler="engine.cli.stages:embed", writes=("db", "cache"))

    p = sub.add_parser("import-embeddings",
                       help="store embeddings exported by a model's own code (docs/models.md)")
    p.add_argument("--model", required=True, type=name_type,
                   help="name to give the imported model (stored in the results database)")
    p.add_argument("--cohort", required=True, help="registered cohort the vectors are of")
    p.add_argument("--table", type=Path, default=None,
                   help="Parquet file: image_id and the list columns image and text")
    p.add_argument("--image", type=Path, default=None, help=".npy matrix [items, width]")
    p.add_argument("--text", type=Path, default=None, help=".npy matrix [items, width]")
    p.add_argument("--ids", type=Path, default=None,
                   help="image id of each .npy row: .txt (one a line), .json list or .csv")
    p.add_argument("--heads", type=Path, default=None,
                   help="the two heads' weights (.safetensors, or .pt read weights-only): the "
                        "vectors are then pre-projection features and every stage runs; "
                        "without it they are final embeddings and dp cannot run")
    p.add_argument("--heads-config", type=Path, default=None,
                   help="JSON: each head's layers when not one Linear, logit_scale, logit_bias")
    p.add_argument("--logit-scale", type=float, default=None,
                   help="the model's log temperature (default: the JSON's, else log 100)")
    p.add_argument("--logit-bias", type=float, default=None,
                   help="the model's logit bias: its heads are then retrained with the sigmoid "
                        "loss (SigLIP family)")
    p.add_argument("--description", default="", help="one line shown in lists and audit reports")
    p.set_defaults(handler="engine.cli.stages:import_embeddings", writes=("db", "cache"))

    p = sub.add_parser("attack", help="re-linkage attack: exact pool metrics into DuckDB")
    _add_model_cohort(p)
    p.add_argument("--pool-sizes", default="10,100,1000,10000",
                   type=int_list(2, "a pool holds the true item and at least one distractor"),
                   help="pool sizes N besides the full database (default 10,100,1000,10000)")
    p.add_argument("--external", action="store_true",
                   help="the model never saw this cohort: evaluate every pair as held-out")
    p.add_argument("--match", default="labels",
                   choices=("labels", "findings", "findings+localizations"),
                   help="what matched negatives share with the true report: the 14 labels "
                        "(default) or the source's full finding set, with its localizations "
                        "(padchest cohorts); stored as negatives matched / matched:<policy>")
    p.set_defaults(handler="engine.cli.audit:attack", writes=("db",))

    p = sub.add_parser("dp", help="retrain the projection heads with DP over an epsilon grid")
    _add_model_cohort(p)
    p.add_argument("--epsilons", default="0.34,1,2,4,8,inf", type=epsilon_list,
                   help="comma-separated target epsilons (group level); inf is always added")
    p.add_argument("--select", action="store_true",
                   help="choose hyper-parameters per epsilon on a validation split of the "
                        "training patients (docs/dp.md; trains every candidate, and the "
                        "composed epsilon over the candidates is stored)")
    p.add_argument("--start", default="random", metavar="random|original|public:COHORT",
                   help="where DP training starts: seeded random heads (default; the epsilon "
                        "covers everything the heads learned), heads fitted without privacy on "
                        "a patient-disjoint cohort, or the model's own heads (for comparison: "
                        "the epsilon does not cover them)")
    p.set_defaults(handler="engine.cli.audit:dp", writes=("db", "cache"))

    p = sub.add_parser("adaptive", help="the attacker who refits the heads on the released "
                                        "backbones (public pairs, or a leak of known pairs)")
    _add_model_cohort(p)
    p.add_argument("--public", action="append", default=[], metavar="COHORT",
                   help="a patient-disjoint cohort (embedded with the same model) the attacker "
                        "fits heads on; repeatable")
    p.add_argument("--known", default="0.01,0.05", type=fraction_list,
                   help="fractions of the target's held-out patients the attacker already "
                        "knows (default 0.01,0.05; 'none' for no leak)")
    p.add_argument("--seed", type=int, default=0, help="attacker's start and training seed")
    p.set_defaults(handler="engine.cli.audit:adaptive", writes=("db", "cache"))

    p = sub.add_parser("transfer", help="apply heads trained on one cohort to an external one")
    _add_model_cohort(p)
    p.add_argument("--source", required=True, help="cohort the DP heads were trained on")
    p.set_defaults(handler="engine.cli.audit:transfer", writes=("db", "cache"))

    p = sub.add_parser("umap", help="2-D joint space of images and reports")
    _add_model_cohort(p)
    p.add_argument("--max-points", type=int_at_least(UMAP_MIN_POINTS, UMAP_WHY), default=20000,
                   help="points per map, images and reports together (default 20000)")
    p.add_argument("--external", action="store_true", help="map every pair (external cohort)")
    p.add_argument("--heads-from", default=None,
                   help="cohort whose trained heads to map (default: this cohort)")
    p.set_defaults(handler="engine.cli.audit:umap", writes=("db", "cache"))

    p = sub.add_parser("report", help="write the audit report")
    _add_model_cohort(p)
    p.add_argument("--format", default="html,pdf,json", dest="fmt", help="html,pdf,json")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: reports/ under --cache)")
    p.set_defaults(handler="engine.cli.audit:report", writes=("db", "out"))

    p = sub.add_parser("audit", help="audit a model on a cohort in one command: print the plan, "
                                     "run what is missing, optional release gate")
    p.add_argument("--model", default=None, help="registered model name or open_clip spec")
    p.add_argument("--cohort", default=None, help="registered cohort the model was trained on")
    p.add_argument("--external", default=None,
                   help="registered cohort the model never saw (transfer, adaptive attacker)")
    p.add_argument("--epsilons", default=None, type=epsilon_list,
                   help="DP targets, comma-separated (default 0.34,1,2,4,8); inf always added")
    p.add_argument("--start", default=None, metavar="random|original|public:COHORT",
                   help="where DP training starts (default random)")
    p.add_argument("--pool-sizes", default=None,
                   type=int_list(2, "a pool holds the true item and at least one distractor"),
                   help="attack pool sizes (default 10,100,1000,10000)")
    p.add_argument("--known", default=None, type=fraction_list,
                   help="held-out fractions the adaptive attacker knows (default 0.01,0.05)")
    p.add_argument("--formats", default=None, help="report formats (default html,pdf,json)")
    p.add_argument("--out", type=Path, default=None,
                   help="report folder (default <cache>/reports/<model>__<cohort>)")
    p.add_argument("--config", type=Path, default=None,
                   help="TOML file with the same settings (docs/audit-command.md)")
    p.add_argument("--dry-run", action="store_true", help="print the plan only; write nothing")
    p.add_argument("--fail-if", default=None, metavar="'METRIC@N > X'",
                   help="release gate, e.g. 'lift@1000 > 5': exit 3 when the 95%% interval's "
                        "lower bound is above X")
    p.set_defaults(handler="engine.cli.plan:audit", writes=("db_read",))

    p = sub.add_parser("readme", help="write the results tables (docs/results.md) from --db")
    p.add_argument("--readme", type=Path, default=Path("docs/results.md"),
                   help="file holding the <!-- results:begin --> / <!-- results:end --> markers")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 when the tables differ from the database")
    p.add_argument("--cohort", default="site-a", help="cohort the models were audited on")
    p.add_argument("--external", default="site-b",
                   help="cohort the DP heads were transferred to ('' for none)")
    p.add_argument("--block", default="results",
                   help="name of the README block: <!-- NAME:begin --> ... <!-- NAME:end --> "
                        "(default results; the study run's: study-results)")
    p.set_defaults(handler="engine.cli.readme:readme", writes=("db_read",))

    p = sub.add_parser("demo", help="every stage on the phantom cohorts, then the dashboard")
    p.add_argument("--no-serve", action="store_true", help="do not start the dashboard")
    p.set_defaults(handler="engine.cli.demo:demo", writes=("db", "cache"))

    p = sub.add_parser("seeds", help="the reference paper's four claims on the demo over "
                                      "training seeds (their spread and how many seeds give "
                                      "each verdict)")
    p.add_argument("--seeds", type=int_list(0, "seeds"), default="0,1,2,3,4",
                   help="ladder and DP seeds; 0 is the demo database itself (default 0,1,2,3,4)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where each seed's models and database go (default <cache>/seeds)")
    p.set_defaults(handler="engine.cli.seeds:seeds", writes=("db", "cache"))

    p = sub.add_parser("study", help="every stage at the reference paper's scale on rendered "
                                      "PadChest")
    p.add_argument("--workdir", type=Path, default=Path("cache/study"),
                   help="study folder: its own database, cohorts, models, reports "
                        "(default cache/study)")
    p.add_argument("--max-patients", type=int_at_least(2), default=None,
                   help="audit a seeded sample of this many patients (default: all 67,208)")
    p.add_argument("--seed", type=int, default=0, help="render, split and training seed")
    p.add_argument("--rung-epochs", type=int_list(0, "epochs per rung"), default=None,
                   help="ladder epochs per rung over the training split (default 0,1,2,4)")
    p.add_argument("--external-from", default="20170101",
                   help="YYYYMMDD: patients first seen on or after it are the external cohort")
    p.add_argument("--umap-points", type=int_at_least(UMAP_MIN_POINTS), default=20000,
                   help="points per joint-space map (default 20000)")
    p.set_defaults(handler="engine.cli.study:study", writes=("workdir",))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status.

    Every error is one line on stderr: an `EngineError` (a bad input, option or file, naming
    it), an `OSError` (naming the file) and a database error exit with status 2; anything else
    is a bug, reported in one line with its type (status 1) and shown in full with ``--debug``.
    Option values and output folders are checked before the handler runs.
    """
    from engine.numerics import pin_numerics

    pin_numerics()  # before anything imports torch: the same weights on every AVX2 CPU
    from engine.memory import limit_heap

    limit_heap()  # large blocks mapped and returned when freed (engine/memory.py)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad option (already one line)
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from engine.distributed import quiet_unless_main

    quiet_unless_main()  # under torchrun only rank 0 prints results and progress
    module, func = args.handler.split(":")
    try:
        from engine.cli.options import check_outputs

        check_outputs(args)
        handler = getattr(importlib.import_module(module), func)
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; completed work is kept and the next run resumes", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place every failure becomes one line
        if args.debug:
            raise
        line, status = describe_error(exc)
        print(f"error: {as_invoked(line, parser.prog)}", file=sys.stderr)
        return status


def as_invoked(text: str, prog: str) -> str:
    """A message's command hints (written as `python -m engine ...`) in the form the user ran."""
    return text if prog == "python -m engine" else text.replace("`python -m engine", f"`{prog}")


def describe_error(exc: BaseException) -> tuple[str, int]:
    """One line and an exit status for an exception that reached the command line."""
    if isinstance(exc, EngineError):
        return _one_line(str(exc)) or type(exc).__name__, 2
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or _one_line(str(exc))}{where}", 2
    if type(exc).__module__.split(".")[0] in ("duckdb", "_duckdb"):
        return f"database error ({_one_line(str(exc))}); check --db", 2
    text = _one_line(str(exc))
    return (f"unexpected {type(exc).__name__}{': ' + text if text else ''} (a bug; rerun with "
            "--debug for the traceback and report it)"), 1


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""
