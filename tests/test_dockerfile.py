"""The Dockerfile and the smoke script, checked by reading them (docker/smoke.sh runs them)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT = (ROOT / "Dockerfile").read_text()
LINES = [line.strip() for line in TEXT.replace("\\\n", " ").splitlines()
         if line.strip() and not line.strip().startswith("#")]
SMOKE = (ROOT / "docker" / "smoke.sh").read_text()


def test_every_copied_path_exists_and_is_not_docker_ignored():
    copies = [shlex.split(line)[1:-1] for line in LINES if line.startswith("COPY ")]
    assert copies
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith(("#", "!"))}
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source.split("/")[0] not in ignored, source
    assert {".venv", ".git"} <= ignored  # the build context stays small


def test_base_is_an_argument_defaulting_to_the_public_image():
    assert LINES[0] == "ARG BASE=python:3.11-slim"
    assert LINES[1] == "FROM ${BASE}"
    # Debian's own Python has only `python3`: the image makes its venv with it
    assert any(line.startswith("RUN python3 -m venv /opt/venv") for line in LINES)
    assert "PATH=/opt/venv/bin:$PATH" in TEXT


def test_ca_bundle_is_an_optional_build_secret_never_copied():
    install = next(line for line in LINES if "pip install" in line)
    assert "--mount=type=secret,id=ca,required=false" in install
    assert "-r requirements.txt" in install
    assert not re.search(r"(COPY|ADD)\s+\S*(\.crt|\.pem)", TEXT)
    assert "ca-certificates.crt" not in " ".join(LINES)


def test_user_port_volume_and_health():
    users = [line.split()[1] for line in LINES if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert "EXPOSE 8501" in LINES
    assert any(line.startswith("VOLUME") and "/app/cache" in line for line in LINES)
    assert any(line.startswith("HEALTHCHECK") and "_stcore/health" in line for line in LINES)


def test_runs_the_demo_which_hands_over_to_the_dashboard_on_all_container_interfaces():
    cmd = next(line for line in LINES if line.startswith("CMD "))
    assert cmd == 'CMD ["relink-audit", "demo"]'
    assert "STREAMLIT_SERVER_ADDRESS=0.0.0.0" in TEXT and "STREAMLIT_SERVER_PORT=8501" in TEXT


def test_smoke_script_publishes_on_loopback_only():
    assert '-p "127.0.0.1:$PORT:8501"' in SMOKE
    assert "STREAMLIT_SERVER_ADDRESS=127.0.0.1" in SMOKE  # host network: loopback only
    assert "--secret" in SMOKE and "_stcore/health" in SMOKE and "stop -t" in SMOKE


def test_image_runs_the_installed_package_not_a_copy_of_the_checkout():
    install = [line for line in LINES if line.startswith("RUN ") and "/tmp/src" in line]
    assert install and "pip install --no-deps" in install[0] and "rm -rf /tmp/src" in install[0]
    # nothing copied into the working directory could shadow the installed engine or dashboard
    copied = [shlex.split(line)[-1] for line in LINES if line.startswith("COPY ")]
    assert not any(dest.rstrip("/") in ("./engine", "./synthetic", "./dashboard", "engine",
                                        "synthetic", "dashboard")
                   for dest in copied)


def test_smoke_script_runs_the_installed_command_offline():
    assert "relink-audit --help" in SMOKE and "relink-audit demo --no-serve" in SMOKE
    assert SMOKE.count("--network none") >= 2
