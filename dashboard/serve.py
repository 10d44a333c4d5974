"""Start the dashboard server warm: ``python -m dashboard.serve [streamlit options]``.

``streamlit run dashboard/app.py`` imports a page's libraries and fills its caches when the first
visitor arrives, so the first page of a fresh server waits for pandas, Altair, DuckDB and the
overview's queries (about 3 s on 2 cores, docs/dashboard.md). This launcher does that work before
anyone asks: it imports the libraries the pages use before the server starts, and once the server
is up it computes, in a background thread, what the default page shows (the first cohort and its
most specialised model: the reads, the claims table and both figures), then the joint space's
maps and the explorer's queries, into the caches every session shares. It prints
``[dashboard] warm: ...`` with the time taken. A visitor who comes earlier waits for the same
computation (Streamlit computes a cached value once).

Options after the module name go to ``streamlit run`` unchanged (``--server.port 8502``, ...);
``RELINK_DB`` names the results database as for the app itself.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"
WARM_THREAD = "relink-warm-up"


def preload() -> float:
    """Import the libraries the pages import (seconds taken).

    The dashboard's own modules are imported later, by the warm-up once the runtime exists:
    their caches are created on import and belong to the runtime's cache storage.
    """
    start = time.perf_counter()
    import altair  # noqa: F401
    import duckdb  # noqa: F401
    import pandas  # noqa: F401
    import PIL.Image  # noqa: F401
    import streamlit.elements.vega_charts  # noqa: F401
    import vl_convert  # noqa: F401

    import engine.core.claims  # noqa: F401
    import engine.core.decompose  # noqa: F401
    import engine.images  # noqa: F401
    return time.perf_counter() - start


class _QuietWarmUp(logging.Filter):
    """Drop Streamlit's "missing ScriptRunContext" warning for the warm-up thread (it has none
    by design: it fills shared caches, not a session's page)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName != WARM_THREAD


def warm(db: str | None = None) -> str:
    """Fill the shared caches with the default page's reads and figures; what was warmed."""
    from dashboard import data, views

    state = data.db_state(db)
    if not state.exists:
        return state.problem or f"no results database at {state.path} yet"
    cohort, model = views.default_choice(state.path, state.token)
    if cohort is None or model is None:
        return "no attack results yet"
    views.warm_overview(state.path, state.token, cohort, model)
    # then the heaviest first visits and changes: the joint space's maps, the explorer's queries
    views.warm_joint_space(state.path, state.token, cohort, model)
    views.warm_explorer(state.path, state.token, cohort, model)
    views.warm_overview_choices(state.path, state.token, cohort)
    views.warm_privacy(state.path, state.token, cohort, model)
    return f"risk overview, joint space, explorer and privacy of {model} on {cohort}"


def _streamlit_first_run_costs() -> None:
    """What Streamlit itself does once per process on the first session and script run, done
    now: the page icon's emoji check compiles a regular expression of every emoji (0.3 s here),
    the pages' icons load the Material icon names, the first element checks whether it runs in
    a REPL by walking the stack with `inspect` (0.1 s), and the first session's message imports
    the agent-skills module and looks for installed skills on disk (cached after)."""
    from streamlit import delta_generator, string_util

    string_util.is_emoji("🩻")
    string_util.is_material_icon("shield")
    check = getattr(delta_generator, "_maybe_print_use_warning", None)
    if check is not None:  # private: present in streamlit 1.67 (requirements.txt pins it)
        check()
    try:  # private as well, and only a hint of Streamlit's: never let it stop the warm-up
        import streamlit.runtime.backend_operation_handler  # noqa: F401
        from streamlit.web import skills

        skills.nudge_suppression_reason(str(APP.parent))
    except Exception:  # noqa: BLE001, S110
        pass


def _warm_when_up(timeout_s: float = 60.0) -> None:
    from streamlit import runtime

    deadline = time.monotonic() + timeout_s
    while not runtime.exists():  # the caches every session uses belong to the runtime
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)
    start = time.perf_counter()
    try:
        _streamlit_first_run_costs()
        what = warm()
    except Exception as exc:  # noqa: BLE001 - a failed warm-up must never stop the server
        what = f"skipped ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    # What is cached now lives as long as the server: keep the collector from walking it on
    # every full collection (0.1 s or more each, at random moments of a visitor's run).
    gc.collect()
    gc.freeze()
    print(f"[dashboard] warm: {what} ({time.perf_counter() - start:.1f} s)", file=sys.stderr,
          flush=True)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    seconds = preload()
    print(f"[dashboard] modules imported ({seconds:.1f} s)", file=sys.stderr, flush=True)
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(
        _QuietWarmUp())
    threading.Thread(target=_warm_when_up, name=WARM_THREAD, daemon=True).start()
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(APP), *args]
    cli.main()


if __name__ == "__main__":
    main()
