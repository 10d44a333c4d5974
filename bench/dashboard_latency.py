"""Benchmark: dashboard latency in a real browser on a database with 20,000 held-out queries.

Builds (or reuses, with ``--db``) a database like the tests' seeded one but at scale: the real
attack stage (`engine.attack.stage.run_attack`) on synthetic embeddings for 3 models and DP heads
``1`` / ``inf`` of the specialist (20,000 held-out + 5,000 member pairs each, pool sizes
10/100/1,000/10,000/full, top-20 lists), plus synthetic models / dp_runs / utility / umap_points
rows (see tests/seed_db.py).

Then starts the dashboard on it as `make demo` does (``python -m dashboard.serve``: the pages'
libraries imported before the server starts, the default page's reads and figures, the joint
space's maps and the explorer's queries computed into the shared caches once it is up), waits for
its ``[dashboard] warm`` line, and drives Debian's Chromium with Playwright, a fresh browser (no
cached scripts). Every step is timed from the action (navigation click, option pick, button
click, key press, the release of a box-selecting drag) to the page settling: the server's
``script_finished`` message for the run the action caused has arrived (read from the app's
websocket), and then, checked in the page on every animation frame, Streamlit's running
indicator (``stStatusWidget``) is gone, no skeleton is left, the step's content is visible and
every chart is drawn. Opening a select box's list and the drag's moves come before the timer
starts (the drag's are reported beside it). Steps:

* first load of the app (``/``) on the warm server, in a browser that has been running for 2 s
  with empty caches (no script of the app cached or compiled), then the first visit of every
  page through the sidebar;
* widget changes on each page (pool size, model, direction, image pick, finding filter, report
  search, heads, colour, box selection by mouse drag, a second map, epsilon, hard-negatives N),
  first time and again after going back; the per-record risk page's pool size.

Goals: first page load < 2 s, every interaction < 1 s.

Run: .venv/bin/python bench/dashboard_latency.py [--db cache/bench-dashboard/results.duckdb]
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
APP = str(ROOT / "dashboard" / "app.py")
GOAL_LOAD, GOAL_STEP = 2.0, 1.0
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def build_db(folder: Path, queries: int) -> Path:
    """A seeded results database with `queries` held-out queries (tests/seed_db.py at scale)."""
    from seed_db import build

    # 4 studies per patient; 4 of every 5 patients held out -> `queries` held-out pairs.
    patients = queries // 4 * 5 // 4
    start = time.perf_counter()
    seeded = build(folder, n_patients=patients, studies_per_patient=4, test_of=(4, 5),
                   pool_sizes=(10, 100, 1000, 10000), dim=64, n_boot=200, laterals=False)
    print(f"built {seeded.db} ({seeded.n_test:,} held-out queries) in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    return seeded.db


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db: Path, port: int, log: Path) -> subprocess.Popen:
    """The dashboard on `db` as `make demo` starts it (``python -m dashboard.serve``: imports and
    the default page's caches warmed at start), headless, without a file watcher."""
    return subprocess.Popen(
        [sys.executable, "-m", "dashboard.serve", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port),
         "--server.fileWatcherType", "none", "--server.runOnSave", "false",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env={**os.environ, "RELINK_DB": str(db)},
        stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_warm(log: Path, proc: subprocess.Popen, timeout: float = 120.0) -> str:
    """The launcher's ``[dashboard] warm: ...`` line, once it is printed."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline and proc.poll() is None:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("[dashboard] warm"):
                return line
        time.sleep(0.1)
    raise RuntimeError(f"the dashboard did not report its warm-up: {log.read_text()[-500:]}")


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> float:
    import urllib.request

    start = time.perf_counter()
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - start
        except OSError:
            pass
        if proc.poll() is not None or time.perf_counter() - start > timeout:
            raise RuntimeError("streamlit did not start")
        time.sleep(0.1)


# The page has settled: no running indicator or skeleton, `content` (a test id) visible, every
# Vega-Lite chart drawn (a canvas or SVG) and every image decoded (the overview's charts).
SETTLED = """(content) => {
  const q = (sel) => document.querySelectorAll(sel);
  if (q('[data-testid="stStatusWidget"]').length || q('[data-testid="stSkeleton"]').length) {
    return false;
  }
  if (content) {
    const el = document.querySelector(`[data-testid="${content}"]`);
    if (!el || !el.getClientRects().length) return false;
  }
  for (const el of q('[data-testid="stVegaLiteChart"]')) {
    if (!el.querySelector('canvas, svg')) return false;
  }
  for (const img of q('[data-testid="stImage"] img')) {
    if (!img.complete || !img.naturalWidth) return false;
  }
  return true;
}"""


class Driver:
    """A Playwright page on the app that times actions up to the settled page.

    Every ``script_finished`` message the server sends on the app's websocket is counted as it
    arrives, so an action is timed to the end of the run it caused even when that run finishes
    before the wait starts.
    """

    def __init__(self, page, url: str):
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        self.page, self.url, self._msg = page, url, ForwardMsg
        self.finished = 0
        self.server_s = float("nan")
        self.drag_s = float("nan")
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))

    def _frame(self, payload) -> None:
        if isinstance(payload, str):
            return
        try:
            msg = self._msg.FromString(payload)
        except Exception:  # noqa: BLE001 - not a ForwardMsg frame
            return
        if msg.WhichOneof("type") == "script_finished":
            self.finished += 1

    def _wait_finished(self, after: int, timeout: float = 60.0) -> None:
        deadline = time.perf_counter() + timeout
        while self.finished <= after:
            if time.perf_counter() > deadline:
                raise TimeoutError("no script run finished after the action")
            self.page.wait_for_timeout(5)  # lets Playwright deliver the frames

    def settle(self, content: str | None = None, timeout: float = 60_000) -> None:
        """Wait for no running indicator, no skeleton, `content` (a test id) visible and every
        chart drawn.

        One predicate checked in the page on every animation frame (Playwright's own assertions
        poll at 100 ms to 1 s intervals, which would add up to a second to a step).
        """
        self.page.wait_for_function(SETTLED, arg=content, polling="raf", timeout=timeout)

    def timed(self, action, content: str | None = None) -> float:
        """Seconds from `action()` to the end of the run it caused and the page settled.

        `action` may be a pair ``(prepare, act)``: `prepare` runs untimed first (a drag's press
        and moves; the step is timed from the release). `server_s` keeps the part up to the
        server's ``script_finished`` message.
        """
        if isinstance(action, tuple):
            prepare, action = action
            prepare()
        before = self.finished
        start = time.perf_counter()
        action()
        self._wait_finished(before)
        self.server_s = time.perf_counter() - start
        self.settle(content)
        return time.perf_counter() - start

    def first_load(self, content: str) -> float:
        """Seconds from navigating to the app to its first page settled."""
        start = time.perf_counter()
        self.page.goto(self.url)
        self._wait_finished(0)
        self.server_s = time.perf_counter() - start
        self.settle(content)
        return time.perf_counter() - start

    # ------------------------------------------------------------------ actions

    def nav(self, title: str):
        return lambda: self.page.get_by_test_id("stSidebarNav").get_by_text(
            title, exact=True).click()

    def select(self, label: str, option: str):
        """``(open the list, pick the option)``: the step is timed from the pick.

        Streamlit's selectbox is a combo box: a mouse click on it does not always open its list
        (it only focuses the text field); the keyboard does, retried when the list stays closed
        (a focus that lands while the page is still drawing).
        """
        box = self.page.get_by_test_id("stSelectbox").filter(has_text=label).first
        choice = self.page.get_by_role("option", name=option, exact=True).first

        def open_list():
            for attempt in range(3):
                box.locator("input").first.focus()
                self.page.keyboard.press("ArrowDown")
                try:
                    choice.wait_for(state="visible", timeout=1_500 * (attempt + 1))
                    return
                except Exception:  # noqa: BLE001 - closed, or another list: try again
                    self.page.keyboard.press("Escape")
            shown = self.page.get_by_role("option").all_inner_texts()
            raise RuntimeError(f"no option {option!r} in {label!r}; listed: {shown[:8]}")

        return open_list, choice.click

    def button(self, group_label: str, text: str):
        return lambda: self.page.get_by_test_id("stButtonGroup").filter(
            has_text=text).get_by_text(text, exact=True).first.click()

    def key(self, role: str, key: str):
        def act():
            slider = self.page.get_by_role(role).first
            slider.focus()
            slider.press(key)
        return act

    def search(self, text: str):
        def act():
            box = self.page.get_by_test_id("stTextInput").locator("input").first
            box.fill(text)
            box.press("Enter")
        return act

    def pick_row(self, row: int):
        """Click the row-selection cell of row `row` (0-based) of the first table."""
        def act():
            grid = self.page.get_by_test_id("stDataFrame").first
            box = grid.bounding_box()
            # glide-data-grid: header 35 px, rows 35 px; the selection column is the first 30 px
            self.page.mouse.click(box["x"] + 15, box["y"] + 35 + 35 * row + 17)
        return act

    def drag_box(self, chart: int = 0, share: float = 0.3):
        """Box-select by dragging over the middle of Vega-Lite chart `chart` (a drag selects).

        Returns ``(press and move, release)``: the step is timed from the release, when the
        selection is made; the time the box took to follow the mouse is kept in `drag_s`.
        """
        def prepare():
            plot = self.page.get_by_test_id("stVegaLiteChart").nth(chart)
            box = plot.locator("canvas").bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            dx, dy = box["width"] * share / 2, box["height"] * share / 2
            start = time.perf_counter()
            self.page.mouse.move(cx - dx, cy - dy)
            self.page.mouse.down()
            self.page.mouse.move(cx, cy, steps=5)
            self.page.mouse.move(cx + dx, cy + dy, steps=5)
            self.drag_s = time.perf_counter() - start
        return prepare, self.page.mouse.up


def run_browser(db: Path) -> list[tuple[str, float, str]]:
    """(step, seconds, kind) for every step, kind ``load`` or ``interaction``."""
    from playwright.sync_api import sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = db.parent / "bench-server.log"
    started = time.perf_counter()
    proc = start_server(db, port, log)
    rows: list[tuple[str, float, str]] = []

    def failed(name, exc):
        rows.append((name, float("nan"), "failed"))
        print(f"  {name:<48} FAILED: {str(exc).splitlines()[0][:90]}", flush=True)
        page.reload()  # start the next step from a settled page
        d.settle()

    def record(name, seconds, kind="interaction"):
        rows.append((name, seconds, kind))
        goal = GOAL_LOAD if kind == "load" else GOAL_STEP
        flag = "" if seconds < goal else "   <-- over the goal"
        print(f"  {name:<48} {seconds * 1000:7.0f} ms  (run finished at "
              f"{d.server_s * 1000:5.0f} ms){flag}", flush=True)

    try:
        print(f"server healthy after {wait_healthy(url, proc):.1f} s", flush=True)
        warm = wait_warm(log, proc)
        print(f"{warm}; {time.perf_counter() - started:.1f} s after the server was started",
              flush=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            # a browser that is already running, as a visitor's is (its start-up work done);
            # its caches are still empty
            page.goto("about:blank")
            page.wait_for_timeout(2_000)
            d = Driver(page, url)
            record("first load: / (risk overview)", d.first_load("stMetric"), "load")

            def twice(name, go, back, content=None):
                """The step cold, back (not timed), the step again; a failure is recorded."""
                try:
                    record(f"{name} (first)", d.timed(go, content))
                    d.timed(back, content)
                    record(f"{name} (again)", d.timed(go, content))
                except Exception as exc:  # noqa: BLE001 - report and go on with the next step
                    failed(name, exc)

            twice("overview: pool size N", d.select("Pool size N", "10"),
                  d.select("Pool size N", "100"), "stMetric")
            twice("overview: direction", d.button("Direction", "report → image"),
                  d.button("Direction", "image → report"), "stMetric")
            models = ["ladder-0-untrained", "ladder-2-specialist"]
            twice("overview: model", d.select("Model", models[0]), d.select("Model", models[1]),
                  "stMetric")
            d.timed(d.select("Model", models[1]), "stMetric")  # back to the specialist

            for title, content in (("Re-linkage explorer", "stDataFrame"),
                                   ("Joint space", "stVegaLiteChart"),
                                   ("Privacy / utility", "stMetric"),
                                   ("Hard negatives", "stDataFrame"),
                                   ("Per-record risk", "stVegaLiteChart"),
                                   ("Audit report", None), ("Runs", "stDataFrame"),
                                   ("Risk overview", "stMetric")):
                record(f"first visit: {title}", d.timed(d.nav(title), content), "load")
            for title, content in (("Re-linkage explorer", "stDataFrame"),
                                   ("Joint space", "stVegaLiteChart"),
                                   ("Privacy / utility", "stMetric"),
                                   ("Hard negatives", "stDataFrame"),
                                   ("Per-record risk", "stVegaLiteChart")):
                record(f"page switch (again): {title}", d.timed(d.nav(title), content))

            d.timed(d.nav("Re-linkage explorer"), "stDataFrame")
            for row in (3, 7):
                try:
                    record(f"explorer: pick row {row}", d.timed(d.pick_row(row), "stImage"))
                except Exception as exc:  # noqa: BLE001
                    failed(f"explorer: pick row {row}", exc)
            twice("explorer: finding filter", d.select("Finding", "Pleural Effusion"),
                  d.select("Finding", "any"), "stDataFrame")
            twice("explorer: search report words", d.search("pleural effusion"),
                  d.search(""), "stDataFrame")
            twice("explorer: heads", d.select("Heads", "DP heads, ε = 1"),
                  d.select("Heads", "original heads"), "stDataFrame")
            d.timed(d.select("Heads", "original heads"), "stDataFrame")  # the next pages' heads

            d.timed(d.nav("Joint space"), "stVegaLiteChart")
            twice("joint space: colour by label", d.button("Colour by", "label"),
                  d.button("Colour by", "modality"), "stVegaLiteChart")
            try:
                record("joint space: box select (release)", d.timed(d.drag_box(), "stDataFrame"))
                print(f"  {'  (the box followed 10 mouse moves in':<48} "
                      f"{d.drag_s * 1000:7.0f} ms)")
            except Exception as exc:  # noqa: BLE001
                failed("joint space: box select (drag)", exc)
            twice("joint space: compare with ε = 1", d.select("Compare with", "DP heads, ε = 1"),
                  d.select("Compare with", "(none)"), "stVegaLiteChart")

            d.timed(d.nav("Privacy / utility"), "stMetric")
            twice("privacy: move epsilon", d.key("slider", "ArrowRight"),
                  d.key("slider", "ArrowLeft"), "stMetric")

            d.timed(d.nav("Hard negatives"), "stDataFrame")
            twice("hard negatives: N", d.select("Pool size N for the tables below", "100"),
                  d.select("Pool size N for the tables below", "10"), "stDataFrame")

            d.timed(d.nav("Per-record risk"), "stVegaLiteChart")
            twice("per-record risk: N", d.select("Pool size N for the risk score", "10"),
                  d.select("Pool size N for the risk score", "100"), "stVegaLiteChart")
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path,
                        default=ROOT / "cache" / "bench-dashboard" / "results.duckdb",
                        help="reuse this database when it exists, else build it there")
    parser.add_argument("--queries", type=int, default=20000, help="held-out queries to build")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"error: Chromium not found at {CHROMIUM} (apt-get install chromium, or set "
              "CHROMIUM)", file=sys.stderr)
        return 2
    db = args.db if args.db.exists() else build_db(args.db.parent, args.queries)
    from engine import store

    with store.connect_write(db):  # bring a database built by older code to the current schema
        pass
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())} (other jobs share it)", flush=True)
    rows = run_browser(db)
    loads = [s for _, s, kind in rows if kind == "load"]
    steps = [s for _, s, kind in rows if kind == "interaction"]
    failures = [name for name, _, kind in rows if kind == "failed"]
    if failures:
        print(f"failed steps: {', '.join(failures)}")
    worst_load, worst_step = max(loads), max(steps)
    ok = worst_load < GOAL_LOAD and worst_step < GOAL_STEP
    print(f"slowest page load {worst_load * 1000:.0f} ms (goal < {GOAL_LOAD * 1000:.0f} ms), "
          f"slowest interaction {worst_step * 1000:.0f} ms (goal < {GOAL_STEP * 1000:.0f} ms); "
          f"{'all goals met' if ok else 'GOAL MISSED'}; load average after "
          f"{os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
