"""The Dockerfile, checked by reading it (no Docker engine runs here)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT = (ROOT / "Dockerfile").read_text()
LINES = [line.strip() for line in TEXT.replace("\\\n", " ").splitlines()
         if line.strip() and not line.strip().startswith("#")]


def test_every_copied_path_exists():
    copies = [shlex.split(line)[1:-1] for line in LINES if line.startswith("COPY ")]
    assert copies
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), source


def test_base_user_port_volume_and_health():
    assert LINES[0].startswith("FROM python:3.11-slim")
    users = [line.split()[1] for line in LINES if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert "EXPOSE 8501" in LINES
    assert any(line.startswith("VOLUME") and "/app/cache" in line for line in LINES)
    assert any(line.startswith("HEALTHCHECK") and "_stcore/health" in line for line in LINES)


def test_installs_the_pinned_requirements_and_runs_the_demo():
    assert "RUN pip install -r requirements.txt" in LINES
    cmd = next(line for line in LINES if line.startswith("CMD "))
    assert "python -m engine demo --no-serve" in cmd
    assert "streamlit run dashboard/app.py" in cmd and "--server.port 8501" in cmd
    assert re.search(r"--server.address 0\.0\.0\.0", cmd)  # reachable from outside the container
