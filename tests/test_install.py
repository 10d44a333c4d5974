"""`pip install .` gives a `relink-audit` command equal to `python -m engine`, with its data files.

The wheel is built from the checkout and installed into a fresh virtual environment outside it;
the heavy pinned requirements are not downloaded again: the test's own environment lends them
through a ``.pth`` file, and the wheel itself is installed with ``--no-deps``. Every command then
runs from a folder outside the checkout, so nothing can be imported from the checkout by accident.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(cmd, cwd, **kw):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RELINK_DB")}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          **kw)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("install")
    wheels = tmp / "wheels"
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "-q", "-w", str(wheels), str(ROOT)], cwd=tmp)
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("relink_audit-*.whl")
    venv = tmp / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     cwd=tmp).stdout.strip())
    # the requirements come from this environment; the package itself from the wheel only
    (site / "_lent_requirements.pth").write_text(sysconfig.get_path("purelib") + "\n")
    done = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                 "--no-index", "-q", str(wheel)], cwd=tmp)
    assert done.returncode == 0, done.stderr
    return tmp, venv, site, wheel


def test_wheel_holds_the_engine_synthetic_the_dashboard_and_their_data_files(installed):
    _, _, _, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("engine/models/registry.toml", "engine/report/report.schema.json",
                   "engine/configs/demo.toml", "engine/configs/study.toml", "dashboard/app.py",
                   "dashboard/app_pages/overview.py", "engine/cli/__init__.py",
                   "engine/core/claims.py", "synthetic/cohort/generator.py",
                   "synthetic/ladder/ladder.py"):
        assert needed in names, needed
    assert not any(n.startswith(("tests/", "bench/", "cache/")) for n in names)


def test_relink_audit_command_runs_outside_the_checkout(installed):
    tmp, venv, site, _ = installed
    where = _run([str(venv / "bin" / "python"), "-c",
                  "import engine, dashboard; print(engine.__file__); print(dashboard.__file__)"],
                 cwd=tmp)
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert Path(line).is_relative_to(site) and not Path(line).is_relative_to(ROOT)
    cli = venv / "bin" / "relink-audit"
    shown = _run([str(cli), "--help"], cwd=tmp)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage: relink-audit") and "demo" in shown.stdout
    same = _run([sys.executable, "-m", "engine", "--help"], cwd=ROOT)
    assert same.stdout.split("positional arguments")[1] == shown.stdout.split(
        "positional arguments")[1]
    # the package data is found: the model registry is read into a fresh database
    listed = _run([str(cli), "--db", str(tmp / "r.duckdb"), "models", "list"], cwd=tmp)
    assert listed.returncode == 0, listed.stderr
    assert "phantom-r3" in listed.stdout
