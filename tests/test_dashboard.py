"""Dashboard pages through Streamlit's AppTest, and its import hygiene."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine import store

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
HEAVY = {"torch", "open_clip", "opacus", "faiss", "umap"}


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
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("engine"):
                offenders.append(f"{path}: {node.module} (the dashboard reads DuckDB only)")
    assert offenders == []


@pytest.fixture(autouse=True)
def _clear_caches():
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()


def test_overview_without_database_shows_how_to_fill_it(tmp_path, monkeypatch):
    monkeypatch.setenv("RELINK_DB", str(tmp_path / "absent.duckdb"))
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert any("make demo" in info.value for info in at.info)


def test_overview_on_empty_database(tmp_path, monkeypatch):
    db = tmp_path / "r.duckdb"
    with store.connect_write(db):
        pass
    monkeypatch.setenv("RELINK_DB", str(db))
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert any("no cohorts" in info.value for info in at.info)
