"""Option types and output checks of the command line.

Every option value is parsed and checked once, when the command line is parsed (argparse `type=`
callables that raise `argparse.ArgumentTypeError` with the reason; the list values go through
the same parsers as the ``--config`` TOML file's), and every output location a command writes
(`--db`, `--cache`, `--out`) is checked for writability before any work starts, so a bad value
or an unwritable folder costs one line and no computation.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from engine.errors import ConfigError, StoreError, check_name
from engine.values import epsilons, fractions, ints

# Header bytes 8..12 of every DuckDB database file.
_DUCKDB_MAGIC = b"DUCK"


def int_at_least(minimum: int, what: str = "") -> Callable[[str], int]:
    """An argparse type: an integer >= `minimum` (`what` says why, in the message)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            why = f" ({what})" if what else ""
            raise argparse.ArgumentTypeError(f"{value} is too small: expected at least "
                                             f"{minimum}{why}")
        return value

    parse.__name__ = "integer"
    return parse


def _argparse_type(parse: Callable[..., tuple], name: str, **kwargs) -> Callable[[str], tuple]:
    """`parse` as an argparse type: the parsed value, or `argparse.ArgumentTypeError`."""

    def convert(text: str) -> tuple:
        try:
            return parse(text, "", **kwargs)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    return convert


# argparse types: each returns the parsed tuple (defaults given as text are parsed too)
epsilon_list = _argparse_type(epsilons, "epsilon list")
fraction_list = _argparse_type(fractions, "fraction list")


def int_list(minimum: int, what: str) -> Callable[[str], tuple[int, ...]]:
    """An argparse type: comma-separated integers >= `minimum`, as a tuple."""
    return _argparse_type(ints, "integer list", minimum=minimum, what=what)


def name_type(text: str) -> str:
    """`check_name` as an argparse type."""
    try:
        return check_name(text, what="")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).lstrip(" ")) from None


def check_writable_folder(path: Path, option: str) -> None:
    """Refuse a folder that cannot be created or written, before any work starts.

    The nearest existing ancestor must be a folder in which a file can be created (tried for
    real: permission bits do not tell for root or read-only mounts). Nothing is left behind.

    Raises:
        ConfigError: naming the option, the path and the reason.
    """
    path = Path(path)
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "" if probe == path else f" ({probe} is a file)"
        raise ConfigError(f"{option} {path}: not a folder{where}; choose a folder")
    try:
        handle, tmp = tempfile.mkstemp(prefix=".relink-write-test-", dir=probe)
        os.close(handle)
        os.unlink(tmp)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{option} {path}: cannot write in {probe} ({reason}); choose a "
                          "writable folder") from None


def check_database(path: Path, *, write: bool) -> None:
    """Refuse a `--db` that is not a DuckDB file (or cannot be written, when `write`).

    Raises:
        StoreError: ``not a DuckDB database: FILE`` for any other existing file.
        ConfigError: the folder cannot be written (when `write`).
    """
    path = Path(path)
    if path.is_dir():
        raise StoreError(f"not a DuckDB database: {path} is a folder (point --db at a file)")
    if path.exists():
        try:
            with path.open("rb") as handle:
                header = handle.read(12)
        except OSError as exc:
            raise StoreError(f"--db {path}: cannot be read ({exc.strerror})") from None
        if header[8:12] != _DUCKDB_MAGIC:
            raise StoreError(f"not a DuckDB database: {path} (point --db at a results file "
                             "written by the engine, or at a new path)")
    if write:
        check_writable_folder(path.parent, "--db")
        if path.exists() and not os.access(path, os.W_OK):
            raise ConfigError(f"--db {path}: the file is read-only; choose a writable file")


def check_outputs(args: argparse.Namespace) -> None:
    """Check every output a command declared (``writes`` in its defaults) before it runs.

    ``writes`` lists Namespace attributes: ``db`` (the results database, written), ``db_read``
    (read only: checked to be a DuckDB file when it exists), ``cache`` (the artefact folder),
    any other attribute holding an output folder (``out``), or ``out_file`` for an attribute
    ``out`` holding an output file (its folder is checked). A subcommand without ``writes``
    is not checked.
    """
    writes = getattr(args, "writes", ())
    db = getattr(args, "db", None)
    if db is not None and ("db" in writes or "db_read" in writes):
        check_database(Path(db), write="db" in writes)
    for what in writes:
        if what in ("db", "db_read"):
            continue
        if what == "out_file":
            out = Path(args.out)
            if out.is_dir():
                raise ConfigError(f"--out {out}: is a folder; give the output file's name")
            check_writable_folder(out.parent, "--out")
        else:
            value = getattr(args, what, None)
            if value is not None:
                check_writable_folder(Path(value), f"--{what.replace('_', '-')}")
