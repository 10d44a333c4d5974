"""Dashboard pages through Streamlit's AppTest on a seeded database, and its import hygiene.

Each page: rendered on the seeded database with its widgets moved (no exception, the expected
metrics / tables / charts present), on an empty database and without a database (an explicit
empty state), and while the engine holds the write lock ("being updated", no traceback).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import ui
from engine import store

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
HEAVY = {"torch", "open_clip", "opacus", "faiss", "umap"}
PAGES = ("overview", "explorer", "joint_space", "privacy", "hard_negatives", "per_record",
         "report", "runs")


def test_dashboard_never_imports_heavy_libraries():
    offenders = []
    for path in (ROOT / "dashboard").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path}: {n}" for n in names if n.split(".")[0] in HEAVY]
            # of the engine, only its torch-free core (tests/test_core.py lists loaded modules)
            engine = [n for n in names if n.split(".")[0] == "engine"]
            offenders += [f"{path}: {n} (only engine.core, engine.images)" for n in engine
                          if not (n == "engine.core" or n.startswith("engine.core.")
                                  or n == "engine.images")]
    assert offenders == []


def test_dashboard_modules_load_no_heavy_library():
    """What the dashboard imports (its modules, engine.core, engine.images) loads none of them."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "import dashboard.data, dashboard.logic, dashboard.ui, dashboard.charts, "
            "engine.images; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            f"{sorted(HEAVY)!r}))")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------ DB strings

# Calls whose string arguments Streamlit renders as Markdown (all positional arguments), and
# widgets whose label (first argument) and help do.
MARKDOWN_CALLS = {"markdown", "caption", "subheader", "header", "title", "info", "warning",
                  "error", "success", "toast", "write", "metric", "empty", "expander", "table"}
WIDGET_CALLS = {"selectbox", "radio", "text_input", "toggle", "select_slider",
                "segmented_control", "button", "download_button", "checkbox", "slider",
                "number_input", "multiselect", "pills"}
TEXT_KEYWORDS = {"label", "help", "body", "caption", "value", "delta", "placeholder"}
# Calls returning text that is safe in Markdown: the escapers and number formatters.
SAFE_CALLS = {"esc", "command", "percent", "times", "auroc", "risk_level", "len", "int", "float"}


def _str_spec_ok(spec: ast.AST | None) -> bool:
    """A format spec that a str cannot take (',', '.2f', '%Y'...) proves the value is no string."""
    import re

    if spec is None:
        return False
    text = "".join(v.value for v in getattr(spec, "values", []) if isinstance(v, ast.Constant))
    return not re.fullmatch(r"(.?[<>^=])?0?\d*(\.\d+)?s?", text)


def _call_name(node: ast.Call) -> str:
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")


def _safe(node, assigned, seen=frozenset()) -> bool:
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.JoinedStr):
        return all(isinstance(v, ast.Constant) or _str_spec_ok(v.format_spec)
                   or _safe(v.value, assigned, seen) for v in node.values)
    if isinstance(node, ast.FormattedValue):
        return _str_spec_ok(node.format_spec) or _safe(node.value, assigned, seen)
    if isinstance(node, ast.Call):
        return _call_name(node) in SAFE_CALLS
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _safe(node.left, assigned, seen) and _safe(node.right, assigned, seen)
    if isinstance(node, ast.IfExp):
        return _safe(node.body, assigned, seen) and _safe(node.orelse, assigned, seen)
    if isinstance(node, ast.Attribute) and node.attr.isupper():  # a module constant (ui.UPDATING)
        return True
    if isinstance(node, ast.Name):
        if node.id in seen or node.id not in assigned:
            return False
        return all(_safe(v, assigned, seen | {node.id}) for v in assigned[node.id])
    return False


def _markdown_offenders(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    assigned: dict[str, list] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                assigned.setdefault(target.id, []).append(node.value)
        elif isinstance(node, (ast.For, ast.comprehension, ast.With, ast.AugAssign)):
            targets = ast.walk(node.target) if hasattr(node, "target") else []
            for t in targets:  # loop variables are data of unknown origin
                if isinstance(t, ast.Name):
                    assigned.setdefault(t.id, []).append(ast.Name("<loop>"))
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _call_name(node)
        f = node.func
        if isinstance(f, ast.Attribute) and getattr(f.value, "id", "") == "ui" \
                and name == "caption":
            continue  # ui.caption(ctx) escapes the context's names itself
        if name == "table" and not (isinstance(f, ast.Attribute)
                                    and getattr(f.value, "id", "") == "st"):
            continue  # ui.table is st.dataframe (cells as text); st.table renders Markdown
        if name in MARKDOWN_CALLS:
            checked = list(node.args)
        elif name in WIDGET_CALLS:
            checked = node.args[:1]
        else:
            continue
        words = TEXT_KEYWORDS if name in MARKDOWN_CALLS else {"label", "help", "placeholder"}
        checked += [k.value for k in node.keywords if k.arg in words]
        bad += [f"{path.name}:{node.lineno}: {ast.unparse(a)}" for a in checked
                if not _safe(a, assigned)]
    return bad


def test_pages_render_database_strings_only_through_the_escapers():
    """Every value in a Markdown-rendering call goes through ui.esc / ui.command or is a number."""
    pages = sorted((ROOT / "dashboard" / "app_pages").glob("*.py"))
    files = [ROOT / "dashboard" / "app.py", *pages]
    offenders = [line for path in files for line in _markdown_offenders(path)]
    assert offenders == []


def test_the_markdown_check_catches_an_interpolated_database_value(tmp_path):
    page = tmp_path / "page.py"
    page.write_text("import streamlit as st\nrow = load()\nst.caption(f'Study {row.study_id}')\n"
                    "st.markdown('**' + name + '**')\nst.metric(f'N = {n}', 1)\n"
                    "st.table(frame)\nui.table(frame, 'rows')\n"
                    "st.caption(f'Study {ui.esc(row.study_id)}, {n:,} rows, {x:.2f}')\n")
    assert len(_markdown_offenders(page)) == 4


def test_dashboard_never_renders_report_text_as_markdown_or_html():
    """Reports are untrusted text: `ui.report_text` (st.text) or tables only."""
    for path in (ROOT / "dashboard").rglob("*.py"):
        source = path.read_text()
        assert "unsafe_allow_html" not in source, path
        assert "st.html" not in source, path
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("markdown",
                                                                                 "write"):
                assert "report_text" not in ast.unparse(node), f"{path}: {ast.unparse(node)}"


@pytest.fixture(autouse=True)
def _clear_caches():
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()


def _app(db, monkeypatch) -> AppTest:
    monkeypatch.setenv("RELINK_DB", str(db))
    return AppTest.from_file(APP, default_timeout=60)


def _page(at: AppTest, name: str) -> AppTest:
    return at.switch_page(f"app_pages/{name}.py").run()


def _ok(at: AppTest, allowed: str | None = None) -> None:
    """No exception, and no warning but one starting with `allowed`."""
    assert not at.exception, [e.value for e in at.exception]
    warnings = [w.value for w in at.warning if not (allowed and w.value.startswith(allowed))]
    assert not warnings, warnings


def _charts(at: AppTest) -> int:
    """Charts on the page (all Vega-Lite)."""
    assert not at.get("plotly_chart")  # one chart library: Vega-Lite
    return len(at.get("vega_lite_chart"))


def _infos(at: AppTest) -> str:
    return "\n".join(i.value for i in at.info)


# ------------------------------------------------------------------------------ no results


def test_overview_without_database_shows_how_to_fill_it(tmp_path, monkeypatch):
    at = _app(tmp_path / "absent.duckdb", monkeypatch).run()
    assert not at.exception
    assert any("make demo" in info.value for info in at.info)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_without_database_says_how_to_fill_it(page, tmp_path, monkeypatch):
    at = _page(_app(tmp_path / "absent.duckdb", monkeypatch).run(), page)
    _ok(at)
    assert "make demo" in _infos(at)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_on_empty_database_has_an_empty_state(page, tmp_path, monkeypatch):
    db = tmp_path / "r.duckdb"
    with store.connect_write(db):
        pass
    at = _page(_app(db, monkeypatch).run(), page)
    _ok(at)
    assert "python -m engine" in _infos(at)


def test_pages_of_a_cohort_without_attack_results_say_which_command_fills_them(
        seeded, tmp_path, monkeypatch):
    db = tmp_path / "cohort-only.duckdb"
    shutil.copy(seeded.db, db)
    with store.connect_write(db) as con:
        for table in ("relink_metrics", "relink_ranks", "relink_summary", "relink_topk"):
            con.execute(f"DELETE FROM {table}")
    at = _app(db, monkeypatch).run()
    for page in PAGES[:-1]:
        _page(at, page)
        _ok(at)
        assert f"python -m engine attack --model MODEL --cohort {seeded.cohort}" in _infos(at)


def test_joint_space_and_privacy_empty_states_when_their_stages_have_not_run(
        seeded, tmp_path, monkeypatch):
    db = tmp_path / "attack-only.duckdb"
    shutil.copy(seeded.db, db)
    with store.connect_write(db) as con:
        con.execute("DELETE FROM umap_points")
        con.execute("DELETE FROM dp_runs")
    at = _app(db, monkeypatch).run()
    _ok(_page(at, "joint_space"))
    assert "python -m engine umap" in _infos(at)
    _ok(_page(at, "privacy"))
    assert "python -m engine dp" in _infos(at)


# ------------------------------------------------------------------------------ seeded pages


def test_overview_headline_sentence_and_charts(seeded, monkeypatch):
    at = _app(seeded.db, monkeypatch).run()
    _ok(at)
    assert at.selectbox(key="model").value == seeded.specialist  # most specialised first
    labels = [m.label for m in at.metric]
    assert {"Recall@1", "Lift over chance", "MRR", "Median rank",
            "Patient top-1"} <= set(labels)
    sentence = f"An attacker holding {seeded.specialist} and a pool of {seeded.n_test} reports"
    assert sentence in _infos(at)
    assert "95% CI" in _infos(at)
    # lift vs N for every model, members vs held-out: drawn on the server as SVG images, so the
    # first page loads no chart component
    assert _charts(at) == 0
    images = at.get("image")
    assert len(images) == 2
    svgs = [i.proto.imgs[0].url for i in images]
    assert all(u.startswith("data:image/svg+xml;base64,") for u in svgs), [u[:40] for u in svgs]
    # four claims, ranking summary: static Markdown tables (ui.static_table), no grid
    assert sum(m.value.startswith("| ") for m in at.markdown) == 2 and len(at.dataframe) == 0
    # the full pool-metrics grid is drawn on request (its CSV is always offered)
    assert any(b.label.startswith("Download pool metrics") for b in at.get("download_button"))
    at.toggle(key="overview_all_metrics").set_value(True).run()
    _ok(at)
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) > 10
    assert at.selectbox(key="overview_n").options == [
        "5", "10", f"{seeded.n_test} (full held-out set)"]


def test_overview_model_and_pool_size_and_direction(seeded, monkeypatch):
    at = _app(seeded.db, monkeypatch).run()
    before = at.metric[0].value
    at.selectbox(key="overview_n").set_value(5).run()
    _ok(at)
    assert "a pool of 5 reports" in _infos(at)
    assert at.metric[0].value != before
    at.selectbox(key="model").set_value(seeded.models[0]).run()
    _ok(at)
    assert f"An attacker holding {seeded.models[0]} and a pool of 5 reports" in _infos(at)
    at.segmented_control(key="overview_direction").set_value("report_to_image").run()
    _ok(at)
    assert "finds a report's own image" in _infos(at)


def test_model_choice_is_shared_across_pages(seeded, monkeypatch):
    at = _app(seeded.db, monkeypatch).run()
    at.selectbox(key="model").set_value(seeded.models[1]).run()
    for page in PAGES[1:-1]:
        _page(at, page)
        assert at.selectbox(key="model").value == seeded.models[1]


def test_explorer_lists_queries_by_risk_and_shows_the_riskiest(seeded, monkeypatch):
    at = _page(_app(seeded.db, monkeypatch).run(), "explorer")
    _ok(at)
    queries = at.dataframe[0].value
    assert len(queries) == seeded.n_test
    assert queries["expected_rank"].is_monotonic_increasing
    assert [m.label for m in at.metric][0] == "True report's expected rank"
    candidates = at.dataframe[1].value
    assert list(candidates["rank"]) == sorted(candidates["rank"])
    assert {"score", "is_true", "is_matched", "report"} <= set(candidates.columns)
    assert any(s.value.startswith("True report vs") for s in at.subheader)
    assert at.text, "reports are shown as plain text"


def test_explorer_pick_by_selection_and_missing_image(seeded, monkeypatch):
    at = _page(_app(seeded.db, monkeypatch).run(), "explorer")
    queries = at.dataframe[0].value
    row = int(queries.index[queries["image_id"] == seeded.missing_image][0])
    at.session_state["explorer_pick"] = {"selection": {"rows": [row], "columns": [], "cells": []}}
    at.run()
    _ok(at)
    assert any(s.value == f"Image {seeded.missing_image}" for s in at.subheader)
    assert "Image file not available" in _infos(at)
    other = (row + 1) % len(queries)
    at.session_state["explorer_pick"] = {"selection": {"rows": [other], "columns": [], "cells": []}}
    at.run()
    _ok(at)
    assert any(s.value == f"Image {queries['image_id'][other]}" for s in at.subheader)
    assert len(at.image) == 1


def _pick(at: AppTest, key: str, row: int) -> AppTest:
    at.session_state[key] = {"selection": {"rows": [row], "columns": [], "cells": []}}
    return at.run()


def _ticked(at: AppTest, key: str) -> int | None:
    state = at.session_state[key]
    return state["selection"]["rows"][0] if state["selection"]["rows"] else None


def test_explorer_pick_follows_the_image_through_search_and_heads(seeded, monkeypatch):
    at = _page(_app(seeded.db, monkeypatch).run(), "explorer")
    queries = at.dataframe[0].value
    effusion = set(queries.loc[queries["Pleural Effusion"] == 1.0, "image_id"]) \
        if "Pleural Effusion" in queries else None
    at.selectbox(key="explorer_label").set_value("Pleural Effusion").run()
    listed = at.dataframe[0].value
    chosen = listed["image_id"].iloc[-1]  # the last row: another row after any narrowing
    _pick(at, "explorer_pick", len(listed) - 1)
    _ok(at)
    assert any(s.value == f"Image {chosen}" for s in at.subheader)
    at.text_input(key="explorer_search").set_value("effusion").run()
    _ok(at)
    now = at.dataframe[0].value
    assert chosen in set(now["image_id"]) and len(now) <= len(listed)
    assert now["image_id"].iloc[_ticked(at, "explorer_pick")] == chosen  # the tick moved with it
    assert any(s.value == f"Image {chosen}" for s in at.subheader)
    at.selectbox(key="heads").set_value("1").run()
    _ok(at)
    now = at.dataframe[0].value
    assert now["image_id"].iloc[_ticked(at, "explorer_pick")] == chosen
    assert any(s.value == f"Image {chosen}" for s in at.subheader)
    # filtered out: the tick and the detail both go to the first listed image
    at.text_input(key="explorer_search").set_value(now["image_id"].iloc[0]).run()
    _ok(at)
    first = at.dataframe[0].value["image_id"].iloc[0]
    assert _ticked(at, "explorer_pick") == 0
    assert any(s.value == f"Image {first}" for s in at.subheader)
    assert effusion is None or first in effusion


def test_explorer_never_flags_the_true_report_as_a_matched_negative(seeded, monkeypatch):
    at = _page(_app(seeded.db, monkeypatch).run(), "explorer")
    for row in range(0, seeded.n_test, 5):
        _pick(at, "explorer_pick", row)
        candidates = at.dataframe[1].value
        assert not (candidates["is_true"] & candidates["is_matched"]).any()


def test_database_strings_reach_the_page_as_text(seeded, tmp_path, monkeypatch):
    db = tmp_path / "hostile.duckdb"
    shutil.copy(seeded.db, db)
    link = "[click me](http://example.com) <b>bold</b> www.example.com"
    markup = "**big** [x](y) <i>i</i> :red[z] $m$ `tick`"
    with store.connect_write(db) as con:
        con.execute("UPDATE items SET patient_id = ? WHERE cohort = ?", [link, seeded.cohort])
        con.execute("UPDATE models SET description = ?", [markup])
    at = _page(_app(db, monkeypatch).run(), "explorer")
    _ok(at)
    captions = [c.value for c in at.caption]
    patient = next(c for c in captions if c.startswith("Study "))
    # each linkable word is a code span (never linked), the rest escaped text
    assert ui.esc(link) == ("\\[click `me](http://example.com)` \\<b\\>bold\\</b\\> "
                            "`www.example.com`")
    assert f"patient {ui.esc(link)}" in patient
    about = next(c for c in captions if "specialisation level" in c)
    assert "\\*\\*big\\*\\* \\[x\\](y) \\<i\\>i\\</i\\> \\:red\\[z\\] \\$m\\$ \\`tick\\`" in about


def test_static_tables_show_database_strings_as_text():
    def page():
        import pandas as pd

        from dashboard import ui

        ui.static_table(pd.DataFrame({
            "model **x**": ["**big** [x](y) <b>b</b> :red[z]", "ok", None],
            "n": [1234.5, float("nan"), 2.0]}), "hostile", formats={"n": "{:,.1f}".format})

    at = AppTest.from_function(page).run()
    assert not at.exception
    table = at.markdown[0].value.splitlines()
    assert table[0] == "| model \\*\\*x\\*\\* | n |" and table[1] == "|---|---|"
    assert table[2] == ("| \\*\\*big\\*\\* \\[x\\](y) \\<b\\>b\\</b\\> \\:red\\[z\\] | "
                        "1,234.5 |")
    # "2.0" could open an ordered list at the start of a cell: escaped, it reads the same
    assert table[3:] == ["| ok | — |", "| — | 2\\.0 |"]
    # the download holds the values themselves, not their escaped display
    assert at.get("download_button")[0].label == "Download hostile (CSV)"


def test_the_launcher_warms_what_the_first_page_reads(seeded, monkeypatch):
    """After `dashboard.serve.warm`, the first visit of the overview reads nothing itself."""
    import streamlit as st

    from dashboard import data, serve

    st.cache_data.clear()
    st.cache_resource.clear()
    monkeypatch.setenv("RELINK_DB", str(seeded.db))
    assert serve.warm() == (f"risk overview, joint space, explorer and privacy of "
                            f"{seeded.specialist} on {seeded.cohort}")
    reads = []
    real = data.query
    monkeypatch.setattr(data, "query", lambda *a, **k: reads.append(a[1]) or real(*a, **k))
    at = _app(seeded.db, monkeypatch).run()
    _ok(at)
    assert at.metric[0].label == "Recall@1"
    assert reads == []
    _page(at, "joint_space")
    _ok(at)
    assert len(at.get("vega_lite_chart")) == 1
    assert not [r for r in reads if "umap_points" in r]  # the map's points came warm too
    from engine.core import decision as dec

    bootstrapped = []
    real_change = dec.heads_change

    def counted(ranks, ref, heads, *a, **k):
        bootstrapped.append((ref, heads))
        return real_change(ranks, ref, heads, *a, **k)

    monkeypatch.setattr(dec, "heads_change", counted)
    _page(at, "privacy")
    assert not at.exception  # (its weak-delta warning on this tiny cohort is expected)
    assert at.get("vega_lite_chart")  # the frontier drawn
    assert bootstrapped == []  # every paired change on the page's first visit came warm
    monkeypatch.setenv("RELINK_DB", str(seeded.db.parent / "nothing-here.duckdb"))
    assert serve.warm().startswith("no results database at ")


def test_esc_and_command():
    from dashboard import ui

    assert ui.esc("ladder-2-specialist") == "ladder-2-specialist"
    assert ui.esc("# title") == "\\# title" and ui.esc("- item") == "\\- item"
    assert ui.esc("1. first") == "1\\. first" and ui.esc("> quote") == "\\> quote"
    assert ui.esc("a\n\n# b") == "a # b"  # one line: a value never opens a block
    assert ui.esc(None) == ""
    assert ui.esc("mail me@x.org") == "mail `me@x.org`"
    # "@" in prose (Recall@1) is escaped text, not a code span; a URL word is code
    assert ui.esc("Recall@1 at N = 100") == "Recall\\@1 at N = 100"
    assert ui.esc("see https://x.org/a now") == "see `https://x.org/a` now"
    assert ui.command("a `b` c") == "`` a `b` c ``"
    assert ui.command("plain") == "`plain`"


def test_explorer_search_filter_split_and_heads(seeded, monkeypatch):
    at = _page(_app(seeded.db, monkeypatch).run(), "explorer")
    at.selectbox(key="explorer_label").set_value("Pleural Effusion").run()
    _ok(at)
    assert 0 < len(at.dataframe[0].value) < seeded.n_test
    at.text_input(key="explorer_search").set_value("no such words anywhere").run()
    _ok(at)
    assert "No image matches" in _infos(at)
    at.text_input(key="explorer_search").set_value("'; DROP TABLE items; --").run()
    _ok(at)  # bound parameter: a quote in the search is just text
    at.text_input(key="explorer_search").set_value("").run()
    at.selectbox(key="explorer_label").set_value("any").run()
    at.radio(key="explorer_split").set_value("train").run()
    _ok(at)
    assert len(at.dataframe[0].value) == 24
    at.selectbox(key="heads").set_value("1").run()
    _ok(at)
    assert "heads **1**" in " ".join(c.value for c in at.caption)


def test_joint_space_colours_selection_and_comparison(seeded, monkeypatch):
    at = _page(_app(seeded.db, monkeypatch).run(), "joint_space")
    _ok(at)
    assert _charts(at) == 1
    assert "Nothing selected yet" in _infos(at)
    for colour in ("label", "split", "rank", "modality"):
        at.segmented_control(key="umap_colour").set_value(colour).run()
        _ok(at)
    at.session_state["umap_select_original"] = {"selection": {
        "pick": [{"row": 0}, {"row": 5}], "box": {}}}
    at.run()
    _ok(at)
    pairs = at.dataframe[0].value
    assert len(pairs) == 2 and {"image_x", "report_y", "gap"} <= set(pairs.columns)
    at.selectbox(key="umap_compare").set_value("1").run()
    _ok(at)
    assert _charts(at) == 2


def test_privacy_page_epsilon_slider(seeded, monkeypatch):
    at = _page(_app(seeded.db, monkeypatch).run(), "privacy")
    _ok(at, allowed="Weak patient-level guarantee")
    slider = at.select_slider(key="epsilon")
    # original, then DP from the strongest privacy, then no DP; the page opens on the strongest
    assert list(slider.options) == ["original heads", "DP heads, ε = 1",
                                    "retrained, no DP (ε = ∞)"]
    assert slider.value == "1"
    labels = [m.label for m in at.metric]
    assert {"Recall@1", "Lift over chance", "Probe macro AUROC"} <= set(labels)
    cards = "\n".join(m.value for m in at.markdown)
    assert "**Change vs original heads:**" in cards and "**Change vs ε = ∞ heads:**" in cards
    assert _charts(at) == 2  # frontier, per-label AUROC
    dp = at.dataframe[-1].value
    assert {"ε (group)", "ε (patient)", "δ (group)", "σ (noise)", "C (clip)", "q (sampling)",
            "steps", "accountant", "unit"} <= set(dp.columns)
    first = at.metric[0].value
    slider.set_value("original").run()
    _ok(at, allowed="Weak patient-level guarantee")
    assert at.metric[0].value != first
    at.segmented_control(key="frontier_x").set_value("lift").run()
    _ok(at, allowed="Weak patient-level guarantee")


def test_privacy_page_reads_without_none_infinity_or_a_backbone_epsilon(seeded, monkeypatch):
    at = _page(_app(seeded.db, monkeypatch).run(), "privacy")
    dp = at.dataframe[-1].value
    cells = {str(v) for v in dp.drop(columns="heads").to_numpy().ravel()}
    assert not cells & {"None", "nan", "inf", "Infinity", "NaN"}, cells
    inf_row = dp[dp["heads"] == "inf"].iloc[0]
    assert inf_row["ε (group)"] == "∞" and inf_row["δ (group)"] == "—"
    # the patient-level delta of eps = 1 in the seeded rows is (1 + e) * 1e-3 = 3.7e-3
    assert dp[dp["heads"] == "1"].iloc[0]["δ (patient)"] == "3.7e-03"
    warning = " ".join(w.value for w in at.warning)
    assert "Weak patient-level guarantee" in warning and "3.7e-03" in warning
    per_label = next(d.value for d in at.dataframe if "label" in d.value.columns
                     and "macro" in set(d.value["label"]))
    assert list(per_label.columns)[:2] == ["label", "original"]  # original before the epsilons


def test_hard_negatives_groups_survivors_and_word_diff(seeded, monkeypatch):
    at = _page(_app(seeded.db, monkeypatch).run(), "hard_negatives")
    _ok(at)
    assert _charts(at) == 1
    assert at.selectbox(key="hard_n").options == ["5"]  # N=10 has no eligible query
    tables = {d.value.columns[0]: d.value for d in at.dataframe}
    assert "label group" in tables and tables["label group"]["queries"].sum() == seeded.n_test
    survivors = tables["image_id"]
    assert (survivors["n_matched"] >= 4).all()
    at.session_state["hard_pick"] = {"selection": {"rows": [len(survivors) - 1], "columns": [],
                                                   "cells": []}}
    at.run()
    _ok(at)
    last = survivors["image_id"].iloc[-1]
    assert any(s.value == f"What gives {last} away" for s in at.subheader)


def test_runs_page_provenance(seeded, monkeypatch):
    at = _page(_app(seeded.db, monkeypatch).run(), "runs")
    _ok(at)
    tables = [d.value for d in at.dataframe]
    runs, cohorts, problems, counts = tables
    assert {"stage", "status", "code_version", "seconds", "n_rows",
            "n_skipped"} <= set(runs.columns)
    assert set(runs["stage"]) == {"cohort", "attack", "dp", "umap"}  # cohort add is a run too
    assert cohorts["n_skipped"].iloc[0] == 1
    assert problems["kind"].tolist() == ["missing_report"]
    assert dict(zip(counts["table"], counts["rows"]))["relink_ranks"] > 0
    at.session_state["runs_pick"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    _ok(at)
    assert len(at.json) == 1
    assert len(at.get("download_button")) == 4


# ------------------------------------------------------------------------------ while writing


@pytest.mark.parametrize("page", ["overview", "explorer", "runs"])
def test_page_while_engine_writes_says_results_are_being_updated(page, seeded, tmp_path,
                                                                 monkeypatch):
    db = tmp_path / "locked.duckdb"
    shutil.copy(seeded.db, db)
    at = _app(db, monkeypatch)
    if page != "overview":
        at.run()
        import streamlit as st

        st.cache_data.clear()
        at.switch_page(f"app_pages/{page}.py")
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import sys, time, duckdb
            con = duckdb.connect(sys.argv[1])
            print("locked", flush=True)
            time.sleep(30)
        """), str(db)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        at.run()
    finally:
        holder.kill()
        holder.wait(timeout=20)
    assert not at.exception, [e.value for e in at.exception]
    assert any("being updated" in w.value for w in at.warning)


def test_report_page_refuses_files_outside_the_report_folder(seeded, tmp_path, monkeypatch):
    import pandas as pd

    monkeypatch.delenv("RELINK_REPORTS", raising=False)
    db = tmp_path / "with-report.duckdb"
    shutil.copy(seeded.db, db)
    outside = tmp_path / "elsewhere" / "page.html"
    outside.parent.mkdir()
    outside.write_text("<script>document.title = 'owned'</script>")
    inside = tmp_path / "reports" / "r.html"
    inside.parent.mkdir()
    inside.write_text('<p>ok</p><script>alert("x")</script>')
    at = _app(db, monkeypatch).run()
    model, cohort = at.session_state["model"], at.session_state["cohort"]
    with store.connect_write(db) as con:
        con.execute("DELETE FROM reports")
        con.register("r", pd.DataFrame({"model": [model] * 2, "cohort": [cohort] * 2,
                                        "format": ["html", "json"],
                                        "path": [str(inside), str(outside)]}))
        con.execute("INSERT INTO reports (model, cohort, format, path) SELECT * FROM r")
    import streamlit as st

    st.cache_data.clear()
    at = _page(_app(db, monkeypatch).run(), "report")
    assert not at.exception
    assert any("outside the report folder" in w.value for w in at.warning)
    assert {b.label for b in at.get("download_button")} == {"Download HTML"}
    frames = at.get("iframe")
    assert len(frames) == 1
    src = frames[0].proto.srcdoc
    # the report sits in an inner frame with an empty sandbox, its markup attribute-escaped
    assert '<iframe sandbox="" ' in src and "allow-scripts" not in src
    assert "<script>" not in src and "&lt;script&gt;" in src


def test_report_page_offers_the_engine_report(seeded, tmp_path, monkeypatch):
    import shutil

    from engine.report import write_report

    db = tmp_path / "with-report.duckdb"
    shutil.copy(seeded.db, db)
    at = _page(_app(db, monkeypatch).run(), "report")
    _ok(at)
    assert any("No audit report" in i.value for i in at.info)
    model = at.session_state["model"]
    write_report(db, model=model, cohort=at.session_state["cohort"], out=tmp_path / "reports")
    import streamlit as st

    st.cache_data.clear()
    at = _page(_app(db, monkeypatch).run(), "report")
    _ok(at)
    labels = {b.label for b in at.get("download_button")}
    assert labels == {"Download HTML", "Download PDF", "Download JSON"}


# ------------------------------------------------------------------------------ decision (#25)


def _markdown(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_overview_opens_on_the_decision(seeded, monkeypatch):
    at = _app(seeded.db, monkeypatch).run()
    _ok(at)
    assert at.subheader[0].value == "Decision"
    text = _markdown(at)
    for part in ("**Threat model.**", "**Risk level:", "**What the mitigation buys.**",
                 "**What an adaptive attacker gets back.**", "**Recommendation.**"):
        assert part in text, part
    assert "The attacker holds the released model" in text
    # the mitigation is the random-start sweep's strongest heads, with what its epsilon covers;
    # the attacker who refits the heads is quoted with the pairs it used
    assert "DP heads, ε = 1\\:" in text and "does not cover the frozen backbones" in text
    assert "refits the heads on the frozen backbones" in text


def test_privacy_page_says_no_measurable_change_when_the_interval_holds_zero(
        seeded, tmp_path, monkeypatch):
    db = tmp_path / "same.duckdb"
    shutil.copy(seeded.db, db)
    from seed_db import same_ranks_as_original

    same_ranks_as_original(db)
    at = _page(_app(db, monkeypatch).run(), "privacy")
    _ok(at, allowed="Weak patient-level guarantee")
    assert ("**Change vs original heads:** no measurable change (95% CI +0.0% to +0.0%)"
            in _markdown(at))
    # the sweep started from the original heads sits beside it, with its own epsilon = inf, and
    # says the starting heads are not covered; the adaptive attackers are never in the slider
    assert any(s.value == "Other starts, for comparison" for s in at.subheader)
    assert "ε does not cover the starting heads" in " ".join(
        " ".join(map(str, d.value.to_numpy().ravel())) for d in at.dataframe)
    assert not [o for o in at.select_slider(key="epsilon").options if "attacker" in o]
    assert "not against an attacker who refits them" in _markdown(at)


def test_a_matched_figure_resting_on_one_label_group_names_it(seeded, tmp_path, monkeypatch):
    from dashboard import data, logic
    from engine.report.content import build_document

    db = tmp_path / "one-group.duckdb"
    shutil.copy(seeded.db, db)
    tok = data.db_state(db).token
    ranks = data.query_ranks(str(db), tok, seeded.cohort, seeded.specialist, "original")
    groups = logic.group_table(ranks, 5)
    keep = str(groups.sort_values("eligible", ascending=False)["label group"].iloc[0])
    others = ranks.loc[logic.label_groups(ranks) != keep, "query_id"].tolist()
    with store.connect_write(db) as con:  # every other group loses its matched distractors
        con.execute("UPDATE relink_ranks SET n_matched = 0 WHERE split = 'test' AND "
                    "direction = 'image_to_report' AND list_contains(?, query_id)", [others])
    at = _page(_app(db, monkeypatch).run(), "hard_negatives")
    _ok(at)
    assert ui.esc("The matched figure at N = 5 rests on 1 label group: " + keep) in _infos(at)
    doc = build_document(db, model=seeded.specialist, cohort=seeded.cohort)
    assert f"rests on 1 label group: {keep} (" in doc["lift_vs_n"]["matched_groups"]["text"]


def test_per_record_page_scores_every_query(seeded, monkeypatch):
    at = _page(_app(seeded.db, monkeypatch).run(), "per_record")
    _ok(at)
    labels = {m.label for m in at.metric}
    assert {"TPR at 0.1% FPR", "TPR at 1% FPR", "Pairing AUROC"} <= labels
    assert next(m.value for m in at.metric if m.label == "Held-out images") == f"{seeded.n_test}"
    assert _charts(at) == 2
    assert f"the CSV below holds all {seeded.n_test}" in "\n".join(c.value for c in at.caption)
    assert any(b.label.startswith("Download per record risk") for b in at.get("download_button"))


def test_a_url_with_cohort_model_and_heads_opens_that_view(seeded, monkeypatch):
    at = _app(seeded.db, monkeypatch)
    at.query_params["cohort"] = seeded.cohort
    at.query_params["model"] = seeded.models[0]  # not the default (the most specialised)
    at.run()
    _ok(at)
    assert at.selectbox(key="model").value == seeded.models[0]
    at = _app(seeded.db, monkeypatch)
    at.query_params.update({"model": seeded.specialist, "heads": "inf"})
    _ok(_page(at.run(), "hard_negatives"))
    assert at.selectbox(key="heads").value == "inf"
    # an attacker's heads are not a released set: a link naming them opens the original heads
    at = _app(seeded.db, monkeypatch)
    at.query_params.update({"model": seeded.specialist, "heads": "adaptive+known-5pct"})
    _ok(_page(at.run(), "hard_negatives"))
    assert at.selectbox(key="heads").value == "original"
