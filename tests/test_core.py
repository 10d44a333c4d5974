"""The torch-free core: names, number formats, exact pool maths, and what the dashboard loads."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.core import format as fmt
from engine.core import names, pools

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "open_clip", "opacus", "faiss", "umap")
# The parts of the engine the dashboard may load: the core, and the safe image reader (numpy and
# Pillow only) with the error types it raises and its stdlib-only file opener.
DASHBOARD_ENGINE = ("engine", "engine.images", "engine.errors", "engine.files")


def _allowed(module: str) -> bool:
    return module in DASHBOARD_ENGINE or module.split(".")[:2] == ["engine", "core"]


# ------------------------------------------------------------------------------ names


def test_epsilon_labels_round_trip():
    assert [names.epsilon_label(e) for e in (0.34, 1.0, 8, math.inf)] == ["0.34", "1", "8", "inf"]
    assert names.epsilon_label(None) == names.epsilon_label(float("nan")) == "unknown"
    assert [names.heads_epsilon(h) for h in ("0.34", "inf", "original", "backbone")] == [
        0.34, math.inf, None, None]


def test_heads_order_and_names():
    got = names.sort_heads(["inf", "8", "original", "0.34", "backbone", "1", "8"])
    assert got == ["backbone", "original", "0.34", "1", "8", "inf"]
    assert names.heads_name("inf") == "retrained, no DP (ε = ∞)"
    assert names.heads_name("0.34") == "DP heads, ε = 0.34"
    assert names.heads_name("backbone") == "frozen backbone features"
    assert [names.heads_short(h) for h in ("original", "inf", "1")] == ["original", "ε=∞", "ε=1"]
    # least private first, as the report lists them
    assert names.sort_heads(["0.34", "inf", "original", "8"], descending=True) == [
        "original", "inf", "8", "0.34"]


def test_heads_keys_of_transferred_heads():
    assert names.split_heads_key("1@site-a") == ("1", "site-a")
    assert names.split_heads_key("original") == ("original", None)
    assert names.heads_short("inf@site-a") == "ε=∞ from site-a"
    assert names.heads_name("0.34@a") == "DP heads, ε = 0.34, trained on a"
    assert names.sort_heads(["inf@A", "1@A", "original", "1", "inf"]) == [
        "original", "1", "1@A", "inf", "inf@A"]


# ------------------------------------------------------------------------------ formats


@pytest.mark.parametrize("value, text", [
    (0.14, "14%"), (0.023, "2.3%"), (0.00041, "0.041%"), (1.0, "100%"), (0.0, "0%"),
    (-0.5, "-50%"), (float("nan"), "n/a"), (None, "n/a"), (float("inf"), "n/a"), ("x", "n/a"),
])
def test_percent(value, text):
    assert fmt.percent(value) == text


def test_lifts_aurocs_and_ranges():
    assert (fmt.times(14.2), fmt.times(2.34), fmt.times(None)) == ("14×", "2.3×", "n/a")
    assert fmt.times_range(9.46, 14.2) == "9.5–14×"
    assert fmt.percent_range(0.5, 0.73) == "50–73%" and fmt.percent_range(None, 1) == "n/a"
    assert fmt.auroc(0.7963) == "79.63%" and fmt.auroc(float("nan")) == "n/a"
    assert fmt.points(-0.042) == "−4.2 pp"
    assert fmt.integer(43793) == "43,793" and fmt.scientific(6e-6) == "6.0e-06"
    assert fmt.general(math.inf) == "∞" and fmt.general("ghost") == "ghost"


def test_reductions():
    assert fmt.relative_reduction(0.38, 1.0) == pytest.approx(0.62)
    assert math.isnan(fmt.relative_reduction(0.5, 0.0))
    assert math.isnan(fmt.relative_reduction(None, 1.0))
    assert fmt.reduction(0.618) == "62% lower" and fmt.reduction(-0.05) == "5% higher"
    assert fmt.reduction(0.001) == "no change"


@pytest.mark.parametrize("lift, level", [
    (1.0, "near chance"), (1.5, "elevated"), (4.99, "elevated"), (15.0, "high"),
    (20.0, "very high"), (float("nan"), "unknown"), (None, "unknown"),
])
def test_risk_level(lift, level):
    assert fmt.risk_level(lift) == level


# ------------------------------------------------------------------------------ pool maths


def _enumerated_recall(m: int, g: int, e: int, pool_size: int, k: int) -> float:
    """Naive reference: every pool of N-1 distractors, ties broken uniformly inside the pool."""
    kinds = ["greater"] * g + ["tied"] * e + ["lower"] * (m - g - e)
    total, count = 0.0, 0
    for pool in itertools.combinations(range(m), pool_size - 1):
        above = sum(kinds[i] == "greater" for i in pool)
        ties = sum(kinds[i] == "tied" for i in pool)
        total += min(max(k - above, 0), ties + 1) / (ties + 1)
        count += 1
    return total / count


@pytest.mark.parametrize("k", [1, 2])
def test_exact_recall_equals_enumerating_every_pool(k):
    m, n = 7, 4
    cases = [(g, e) for g in range(m + 1) for e in range(m - g + 1)]
    got = pools.recall_at_k(np.full(len(cases), m), [c[0] for c in cases], [c[1] for c in cases],
                            n, k)
    want = [_enumerated_recall(m, g, e, n, k) for g, e in cases]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_recall_where_eligible_leaves_short_queries_as_nan():
    got = pools.recall_where_eligible([3, 10, 7], [0, 0, 2], [0, 0, 1], 6)
    assert math.isnan(got[0]) and got[1] == pytest.approx(1.0)
    assert got[2] == pytest.approx(_enumerated_recall(7, 2, 1, 6, 1))
    assert np.isnan(pools.recall_where_eligible([1], [0], [0], 5)).all()


# ------------------------------------------------------------------------------ what loads


def _loaded_modules(script: str, **env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                         timeout=240, env={**os.environ, **env}, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


_LIST = ("import json, sys; mods = sorted(sys.modules); "
         f"print(json.dumps({{'heavy': [m for m in mods if m.split('.')[0] in {HEAVY!r}], "
         "'engine': [m for m in mods if m.split('.')[0] == 'engine']}))")


def test_core_imports_no_heavy_library():
    got = _loaded_modules("import engine.core.format, engine.core.labels, engine.core.names, "
                          "engine.core.pools; " + _LIST)
    assert got["heavy"] == []
    assert [m for m in got["engine"] if not (m == "engine" or m.startswith("engine.core"))] == []


def test_dashboard_pages_load_no_heavy_library_and_only_the_engine_core(seeded):
    """Run the app and every page on the seeded database, then list the loaded modules."""
    pages = sorted(p.name for p in (ROOT / "dashboard" / "app_pages").glob("*.py")
                   if not p.name.startswith("_"))
    script = (
        "from streamlit.testing.v1 import AppTest\n"
        "at = AppTest.from_file('dashboard/app.py', default_timeout=120).run()\n"
        f"for page in {pages!r}:\n"
        "    at.switch_page('app_pages/' + page).run()\n"
        "import dashboard.charts, dashboard.data, dashboard.logic, dashboard.ui\n" + _LIST
    )
    got = _loaded_modules(script, RELINK_DB=str(seeded.db))
    assert got["heavy"] == []
    assert "engine.core.format" in got["engine"]
    assert [m for m in got["engine"] if not _allowed(m)] == []
