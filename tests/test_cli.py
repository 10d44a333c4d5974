"""The command line through its real entry point."""

from __future__ import annotations

import pytest

from engine.cli import build_parser, main

DESIGN_COMMANDS = ["cohort", "models", "embed", "attack", "dp", "umap", "report", "demo"]


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in DESIGN_COMMANDS:
        assert command in out


@pytest.mark.parametrize("argv", [["cohort", "synth", "--help"], ["cohort", "check", "--help"],
                                  ["cohort", "add", "--help"], ["models", "train-ladder", "--help"],
                                  ["dp", "--help"], ["report", "--help"]])
def test_subcommand_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0


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
