"""The command line through its real entry point."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest

import bad_input_fixtures as bad
from engine.cli import build_parser, main

INTERFACE_COMMANDS = ["cohort", "models", "embed", "attack", "dp", "umap", "report", "demo"]


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in INTERFACE_COMMANDS:
        assert command in out


@pytest.mark.parametrize("argv", [["cohort", "synth", "--help"], ["cohort", "check", "--help"],
                                  ["cohort", "add", "--help"], ["models", "train-ladder", "--help"],
                                  ["dp", "--help"], ["report", "--help"]])
def test_subcommand_help(argv, capsys):
    assert main(argv) == 0


def test_global_options_default_to_cache():
    args = build_parser().parse_args(["demo", "--no-serve"])
    assert str(args.db) == "cache/relink.duckdb" and str(args.cache) == "cache"


def test_engine_error_is_one_line_and_nonzero(tmp_path, capsys):
    rc = main(["cohort", "check", "--format", "csv", "--root", str(tmp_path / "missing")])
    err = capsys.readouterr().err
    assert rc != 0
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "missing" in err


def test_bad_option_value_is_rejected(tmp_path, capsys):
    rc = main(["cohort", "synth", "--site", "A", "--patients", "0", "--out", str(tmp_path)])
    assert rc == 2
    assert "--patients 0" in capsys.readouterr().err


# ------------------------------------------------------------------ hostile input: one line each

UNWRITABLE = Path("/sys/relink-audit-test")  # sysfs refuses new files, even to root


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.fixture
def under_a_file(tmp_path) -> Path:
    """A folder path that cannot exist: its parent is a regular file."""
    (tmp_path / "plain.txt").write_text("x")
    return tmp_path / "plain.txt" / "sub"


@pytest.mark.parametrize("where", ["unwritable", "under_a_file"])
@pytest.mark.parametrize("argv", [
    ["--cache", "{out}", "embed", "--model", "m", "--cohort", "c"],
    ["--cache", "{out}", "dp", "--model", "m", "--cohort", "c"],
    ["report", "--model", "m", "--cohort", "c", "--out", "{out}"],
    ["cohort", "synth", "--patients", "2", "--out", "{out}"],
    ["cohort", "sheet", "--format", "csv", "--root", ".", "--out", "{out}/sheet.png"],
])
def test_unwritable_outputs_fail_before_any_work(tmp_path, capsys, under_a_file, where, argv):
    out = UNWRITABLE if where == "unwritable" else under_a_file
    db = tmp_path / "r.duckdb"
    rc = main(["--db", str(db), *[a.replace("{out}", str(out)) for a in argv]])
    err = _one_line(capsys)
    assert rc == 2 and str(out).split("/sheet")[0] in err
    assert ("cannot write" in err) if where == "unwritable" else ("not a folder" in err)
    assert not db.exists()  # nothing was started


def test_text_file_as_db(tmp_path, capsys):
    notes = bad.write_text_db(tmp_path / "notes.txt")
    for argv in (["attack", "--model", "m", "--cohort", "c"], ["models", "list"],
                 ["report", "--model", "m", "--cohort", "c", "--out", str(tmp_path / "o")]):
        assert main(["--db", str(notes), *argv]) == 2
        assert f"not a DuckDB database: {notes}" in _one_line(capsys)
    assert notes.read_text().startswith("this is a text file")  # left as it was


@pytest.mark.parametrize("argv,needle", [
    (["--epsilons", "-1,abc"], "joined with '=', e.g. --epsilons=-1"),
    (["--epsilons=-1,abc"], "-1 is not a positive epsilon"),
    (["--epsilons=1,abc"], "'abc' is not a number or inf"),
    (["--epsilons", "0,1"], "0 is not a positive epsilon"),
])
def test_bad_epsilons_name_the_value(tmp_path, capsys, argv, needle):
    rc = main(["--db", str(tmp_path / "r.duckdb"), "dp", "--model", "m", "--cohort", "c", *argv])
    err = _one_line(capsys)
    assert rc == 2 and "--epsilons" in err and needle in err


def test_one_parser_per_value_kind_for_flags_and_config_files():
    import argparse
    import math

    from engine.cli.options import epsilon_list, fraction_list, int_list
    from engine.errors import ConfigError
    from engine.values import epsilons, fractions, ints

    # a flag's text and a TOML array give the same value; parsing it again changes nothing
    assert epsilon_list("0.34, 1,inf") == epsilons([0.34, 1, "inf"], "f.toml") == (
        0.34, 1.0, math.inf)
    assert epsilons(epsilon_list("2,8"), "--epsilons") == (2.0, 8.0)
    assert int_list(2, "why")("10, 100") == ints([10, 100], "f.toml", minimum=2) == (10, 100)
    assert fraction_list("none") == fractions([], "f.toml") == ()
    assert fraction_list("0.01,0.05") == fractions([0.01, 0.05]) == (0.01, 0.05)
    # the same reasons, named by the option or by the file and key
    with pytest.raises(ConfigError, match=r"^f.toml epsilons: 'abc' is not a number or inf"):
        epsilons([1, "abc"], "f.toml epsilons")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^'abc' is not a number or inf"):
        epsilon_list("1,abc")
    with pytest.raises(ConfigError, match=r"^f.toml \[dp\]: epsilon=1e\+06 is above the ceiling"):
        epsilons([1e6], "f.toml [dp]")
    with pytest.raises(ConfigError, match=r"^x: 1 is too small: expected at least 2"):
        ints([10, 1], "x", minimum=2)
    with pytest.raises(argparse.ArgumentTypeError, match=r"^'ten' is not an integer \(why\)"):
        int_list(2, "why")("10,ten")


@pytest.mark.parametrize("argv,needle", [
    (["umap", "--model", "m", "--cohort", "c", "--max-points", "0"],
     "--max-points: 0 is too small"),
    (["attack", "--model", "m", "--cohort", "c", "--pool-sizes", "10,1"], "--pool-sizes: 1 is"),
    (["embed", "--model", "m", "--cohort", "c", "--batch-size", "0"], "--batch-size: 0 is"),
    (["cohort", "sheet", "--format", "csv", "--root", ".", "--out", "x.png", "--n", "0"], "--n"),
])
def test_bad_numbers_are_refused(tmp_path, capsys, argv, needle):
    assert main(["--db", str(tmp_path / "r.duckdb"), *argv]) == 2
    assert needle in _one_line(capsys)


def test_embed_on_cuda_without_a_gpu(tmp_path, capsys, monkeypatch):
    import torch

    import _tiny_clip as tiny

    db = tmp_path / "r.duckdb"
    tiny.make_cohort(db, tmp_path / "cohort", n=4)
    tiny.write_local_dir(tmp_path / "model", tiny.native_cfg(), seed=1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc = main(["--db", str(db), "--cache", str(tmp_path / "cache"), "embed", "--model",
               f"local-dir:{tmp_path / 'model'}", "--cohort", "tiny", "--device", "cuda"])
    err = _one_line(capsys)
    assert rc == 2 and "--device cuda" in err and "--device cpu" in err
    assert not (tmp_path / "cache" / "features").exists() or not any(
        (tmp_path / "cache" / "features").rglob("*.npy"))


def test_unexpected_error_is_one_line_with_a_debug_hint(tmp_path, capsys, monkeypatch):
    import engine.cli.cohort as handlers

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(handlers, "check", broken)
    argv = ["cohort", "check", "--format", "csv", "--root", str(tmp_path)]
    assert main(argv) == 1
    err = _one_line(capsys)
    assert "unexpected ZeroDivisionError: division by zero" in err and "--debug" in err
    with pytest.raises(ZeroDivisionError):
        main(["--debug", *argv])


def test_os_error_names_the_file(tmp_path, capsys, monkeypatch):
    import engine.cli.cohort as handlers

    def denied(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "locked.csv"))

    monkeypatch.setattr(handlers, "check", denied)
    assert main(["cohort", "check", "--format", "csv", "--root", str(tmp_path)]) == 2
    assert f"Permission denied: {tmp_path / 'locked.csv'}" in _one_line(capsys)


def test_attack_and_report_say_held_out_results_are_optimistic(tmp_path, capsys):
    """tiny.make_cohort puts patient p001 in test (s002) and train (s003): a leaking split."""
    import json

    import _tiny_clip as tiny

    db, cache = tmp_path / "r.duckdb", tmp_path / "cache"
    items = tiny.make_cohort(db, tmp_path / "cohort", n=12)
    part = items.loc[items["split"].isin(["test", "train"])]
    leaked = int((part.groupby("patient_id")["split"].nunique() > 1).sum())
    assert leaked > 0
    tiny.write_local_dir(tmp_path / "model", tiny.native_cfg(), seed=1)
    base = ["--db", str(db), "--cache", str(cache)]
    spec = ["--model", f"local-dir:{tmp_path / 'model'}", "--cohort", "tiny"]
    assert main([*base, "embed", *spec]) == 0
    assert main([*base, "attack", *spec, "--pool-sizes", "2"]) == 0
    out = capsys.readouterr().out
    assert f"warning: {leaked} patients have pairs in both members and held-out" in out
    assert "optimistic" in out
    assert main([*base, "report", *spec, "--format", "json", "--out", str(tmp_path / "rep")]) == 0
    (path,) = (tmp_path / "rep").rglob("*.json")
    caveats = {c["title"]: c["text"] for c in json.loads(path.read_text())["caveats"]}
    assert caveats["Split not patient-disjoint"].startswith(f"{leaked} patients")
