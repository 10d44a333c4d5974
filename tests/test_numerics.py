"""Pinned numerics (engine/numerics.py): the same ladder weights under two instruction sets.

Each training runs in a fresh process, because the instruction-set variables only take effect
before torch is imported. Measured on this project's machine (AMD EPYC with AVX-512): the
library's own choice (AVX-512) and AVX2 give different weights after two epochs of the tiny
ladder, one thread and two threads differ too; with the pinning, a process started with one
thread and the CPU's own instruction set gives the weights of an AVX2 process, byte for byte.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.numerics import PINNED_ENV

SCRIPT = Path(__file__).resolve().parent / "_repro_train.py"
pytestmark = pytest.mark.slow


def _train(work: Path, *, pin: bool, env: dict) -> tuple[str, str]:
    base = {k: v for k, v in os.environ.items()
            if k not in PINNED_ENV and k not in ("RELINK_NUMERICS", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, str(SCRIPT), str(work), *(["--pin"] if pin else [])],
                         env={**base, **env}, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    found = dict(re.findall(r"^(capability|digest) (\S+)$", out.stdout, re.M))
    return found["capability"], found["digest"]


def _has_avx512() -> bool:
    try:
        return "avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def test_pinned_training_gives_the_avx2_weights_whatever_the_cpu_and_threads(tmp_path):
    native = {"RELINK_NUMERICS": "native"}
    cap_default, default = _train(tmp_path / "a", pin=False, env=native)
    cap_avx2, avx2 = _train(tmp_path / "b", pin=False, env={**native, **PINNED_ENV})
    # pinned, started as another machine would be: its own instruction set, one thread
    cap_pinned, pinned = _train(tmp_path / "c", pin=True, env={"OMP_NUM_THREADS": "1"})
    assert cap_avx2 == cap_pinned == "AVX2"
    assert pinned == avx2  # byte-identical weights
    if _has_avx512():
        # without the pinning the CPU's own path (AVX-512 here) rounds differently
        assert cap_default.startswith("AVX512") and default != avx2


def test_pin_numerics_sets_the_variables_and_runs_record_them(monkeypatch):
    import torch

    import engine.numerics as numerics

    for key in PINNED_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RELINK_NUMERICS", "native")
    assert numerics.pin_numerics() is False and not numerics.is_pinned()
    assert numerics.settings()["numerics"] == "native"
    monkeypatch.setenv("RELINK_NUMERICS", "pinned")
    # torch is already imported in this test process: nothing can be pinned, and it says so
    assert "torch" in sys.modules
    assert numerics.pin_numerics() is False and numerics.settings()["numerics"] == "native"
    for key, value in PINNED_ENV.items():
        monkeypatch.setenv(key, value)
    assert numerics.is_pinned() and numerics.settings()["mkl_cbwr"] == "AVX2,STRICT"
    with numerics.training_threads() as threads:
        assert threads == numerics.TRAIN_THREADS == torch.get_num_threads()
