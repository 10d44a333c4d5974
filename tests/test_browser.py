"""The dashboard in a real browser: Debian Chromium driven by Playwright against `streamlit run`.

Visits every page on the seeded database, moves the epsilon slider, waits for each script run
to finish and saves a screenshot per page (to ``$RELINK_SCREENSHOTS``, e.g. ``docs/screenshots``, when set;
otherwise to a temporary folder). Skipped (with the reason) only when the Chromium executable is
missing; never downloads a browser.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
# Screenshots for the README are refreshed on request only (RELINK_SCREENSHOTS=docs/screenshots),
# so a test run never dirties the work tree.
SHOTS_ENV = "RELINK_SCREENSHOTS"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# url path -> screenshot name (the default page lives at "/")
PAGES = {"": "overview", "explorer": "explorer", "joint-space": "joint_space",
         "privacy": "privacy", "hard-negatives": "hard_negatives", "runs": "runs"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(seeded):
    port = _free_port()
    env = {**os.environ, "RELINK_DB": str(seeded.db)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard" / "app.py"),
         "--server.headless", "true", "--server.address", "127.0.0.1", "--server.port", str(port),
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not start: {proc.stdout.read()}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium executable not found at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _settle(page) -> None:
    """Wait until the script run has finished and nothing is still loading."""
    from playwright.sync_api import expect

    page.wait_for_load_state("networkidle")
    expect(page.get_by_test_id("stApp")).to_be_visible(timeout=30_000)
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=30_000)
    expect(page.get_by_test_id("stSkeleton")).to_have_count(0, timeout=30_000)
    page.wait_for_timeout(400)  # plotly draws after the run ends
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=30_000)


def _screenshot(page, path: Path) -> None:
    """The whole page: Streamlit scrolls inside its main block, so grow the viewport to fit it."""
    height = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll('[data-testid=stMain], "
        "[data-testid=stMainBlockContainer]')].map(e => e.scrollHeight))")
    width = page.viewport_size["width"]
    page.set_viewport_size({"width": width, "height": min(int(height) + 40, 6000)})
    _settle(page)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": width, "height": 1000})


def test_every_page_renders_and_the_epsilon_slider_moves(server, browser, tmp_path):
    from playwright.sync_api import expect

    SHOTS = ROOT / os.environ[SHOTS_ENV] if os.environ.get(SHOTS_ENV) else tmp_path / "shots"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    for path, name in PAGES.items():
        page.goto(f"{server}/{path}")
        _settle(page)
        expect(page.get_by_test_id("stSidebarNav")).to_be_visible()
        expect(page.locator("h1")).to_have_count(1)
        assert page.get_by_test_id("stException").count() == 0, name
        if name in ("overview", "privacy"):
            expect(page.get_by_test_id("stMetric").first).to_be_visible()
        if name in ("overview", "joint_space", "privacy", "hard_negatives"):
            expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible()
        if name in ("explorer", "runs", "hard_negatives"):
            expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
        if name == "joint_space":  # colour by finding, and the DP map beside the original
            page.get_by_test_id("stButtonGroup").get_by_text("label", exact=True).click()
            _settle(page)
            page.get_by_test_id("stSelectbox").filter(has_text="Compare with").click()
            page.get_by_role("option", name="DP heads, ε = 1").click()
            _settle(page)
            expect(page.get_by_test_id("stPlotlyChart")).to_have_count(2)
        if name == "privacy":
            before = page.get_by_test_id("stMetricValue").first.inner_text()
            slider = page.get_by_role("slider").first
            slider.focus()
            slider.press("End")  # to "original heads"
            _settle(page)
            expect(page.get_by_test_id("stMetricValue").first).not_to_have_text(before)
            slider.press("Home")
            slider.press("ArrowRight")  # to eps = inf
            _settle(page)
            assert page.get_by_test_id("stException").count() == 0
        _screenshot(page, SHOTS / f"{name}.png")
    assert errors == []
    page.close()
