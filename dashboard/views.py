"""Cached views the pages show: figures and tables derived from `data.py`'s reads.

They live in a module, not in the page scripts, so that the server can compute them before the
first visitor arrives (`dashboard.serve` warms the default page) and every session shares them.
Keys are plain arguments ``(db, token, ...)`` as in `data.py`: a new database state is a new key.
Figures are cached as resources (shared, never copied: Streamlit serialises them per run and
never changes them); tables as data (each caller gets its own copy).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, logic
from engine.core import decision as dec
from engine.core.claims import (
    PAPER_DP_POOL,
    claims_rows,
    dp_heads_label,
    strongest_model,
    summarize_claims,
)


def _ranks(db: str, token: str, cohort: str, model: str, heads) -> dict[str, pd.DataFrame]:
    """Held-out image -> report rank counts of each heads that has them."""
    out = {}
    for h in dict.fromkeys(heads):
        if h is None:
            continue
        r = data.query_ranks(db, token, cohort, model, h, "test")
        if len(r):
            out[h] = r
    return out


@st.cache_data(show_spinner=False, max_entries=32)
def matched_groups(db: str, token: str, cohort: str, model: str, heads: str = "original",
                   pool_size: int = 100) -> pd.DataFrame:
    """The label groups a matched figure at N rests on: eligible queries per group."""
    return logic.group_table(data.query_ranks(db, token, cohort, model, heads, "test"), pool_size)


@st.cache_data(show_spinner=False, max_entries=32)
def claims(db: str, token: str, cohort: str) -> pd.DataFrame:
    """The reference paper's four claims on a cohort (claim 3 names its label groups; claim 4 has
    the paired patient-bootstrap changes)."""
    frame = data.models(db, token, cohort)
    ladder = list(frame["model"])
    orders = dict(zip(frame["model"], frame["specialization"]))  # only ordered models are rungs
    top = strongest_model(ladder, orders)
    metrics = data.pool_metrics(db, token, cohort, None, None, 1)
    groups, changes = None, None
    if top:
        g = matched_groups(db, token, cohort, top)
        groups = list(zip(g["label group"], g["eligible"], g["queries"]))
        mine = metrics[metrics["model"] == top]
        label = dp_heads_label(metrics, top)
        if label is not None:
            held = mine[(mine["split"] == "test") & (mine["direction"] == "image_to_report")
                        & (mine["negatives"] == "random")]
            sizes = set(held.loc[held["heads"] == label, "pool_size"].astype(int))
            if sizes:
                n = PAPER_DP_POOL if PAPER_DP_POOL in sizes else max(sizes)
                ranks = _ranks(db, token, cohort, top, ("original", "inf", label))
                changes = {(ref, label, n): dec.heads_change(ranks, ref, label, n)
                           for ref in ("original", "inf")}
                changes = {k: v for k, v in changes.items() if logic.finite(v.point)}
    found = summarize_claims(
        metrics, data.utility(db, token, cohort, top) if top else None, ladder=ladder,
        orders=orders, matched_groups=groups, dp_changes=changes)
    return pd.DataFrame(claims_rows(found))


@st.cache_resource(show_spinner=False, max_entries=32)
def decision(db: str, token: str, cohort: str, model: str):
    """The overview's decision (`logic.decision_for`) at the headline N, or None."""
    metrics = data.pool_metrics(db, token, cohort, model, None, 1)
    held = metrics[(metrics["split"] == "test") & (metrics["direction"] == "image_to_report")
                   & (metrics["negatives"] == "random")]
    sizes = held.loc[held["heads"] == "original", "pool_size"].astype(int).unique()
    n = logic.default_pool_size(sizes)
    if n is None:
        return None
    label = logic.strongest(held["heads"].astype(str).unique())
    ranks = _ranks(db, token, cohort, model, ("original", label))
    return logic.decision_for(model, cohort, held, ranks,
                              data.adaptive_runs(db, token, cohort, model), n)


# The overview's two charts are SVG documents drawn here (`charts.svg`), shown as images: the
# first page then loads no chart component. The other pages' figures are kept as validated
# Vega-Lite spec dicts for `st.vega_lite_chart` (`st.altair_chart` would validate the chart
# against the schema again on every run, about 50 ms each).
@st.cache_resource(show_spinner=False, max_entries=64)
def lift_figure(db: str, token: str, cohort: str, model: str, direction: str) -> str:
    """Lift vs N for every model of the cohort, `model` highlighted (an SVG document)."""
    everyone = data.pool_metrics(db, token, cohort, None, "original", 1)
    curves = logic.lift_curves(everyone[everyone["split"] == "test"], direction=direction)
    return charts.svg(charts.lift_vs_n(curves, highlight=model), width=charts.FULL_WIDTH)


@st.cache_resource(show_spinner=False, max_entries=64)
def members_figure(db: str, token: str, cohort: str, model: str, direction: str) -> str:
    """Members vs held-out Recall@1 of `model` (an SVG document, as `lift_figure`)."""
    metrics = data.pool_metrics(db, token, cohort, model, "original", None)
    return charts.svg(charts.members_vs_heldout(
        logic.lift_curves(metrics[metrics["k"] == 1], direction=direction)),
        width=charts.HALF_WIDTH)


@st.cache_data(show_spinner=False, max_entries=64)
def summary(db: str, token: str, cohort: str, model: str) -> pd.DataFrame:
    """The ranking summary table of `model` (original heads)."""
    return logic.summary_table(data.summary(db, token, cohort, model, "original"))


@st.cache_resource(show_spinner=False, max_entries=32)
def curves_figure(db: str, token: str, cohort: str, model: str, heads: str) -> dict:
    """Random vs matched negatives, held-out Recall@1 vs N (hard negatives; a Vega-Lite spec)."""
    metrics = data.pool_metrics(db, token, cohort, model, heads, 1)
    return charts.random_vs_matched(logic.lift_curves(metrics[metrics["split"] == "test"])
                                    ).to_dict()


@st.cache_resource(show_spinner=False, max_entries=64)
def frontier_figure(db: str, token: str, cohort: str, model: str, pool_size: int, x: str,
                    chosen: str) -> dict:
    """The privacy/utility frontier at N = `pool_size`, `chosen` ringed (a Vega-Lite spec)."""
    front = logic.frontier(data.pool_metrics(db, token, cohort, model, None, 1),
                           data.utility(db, token, cohort, model), pool_size=pool_size)
    return charts.frontier_plot(front, x=x, chosen=chosen).to_dict()


@st.cache_resource(show_spinner=False, max_entries=64)
def per_label_figure(db: str, token: str, cohort: str, model: str, heads: tuple[str, ...]) -> dict:
    """Per-label probe AUROC of `heads` side by side (a Vega-Lite spec)."""
    return charts.per_label_auroc(data.utility(db, token, cohort, model), list(heads)).to_dict()


# Items drawn per map (2 points each), a fixed random sample beyond that: the browser draws every
# point on a canvas, and the spec carries each; a box still selects every item of the full map
# inside it (`logic.selected_rows`), and only its bounds travel back (docs/dashboard.md,
# "Latency").
MAX_ITEMS = 1_500


@st.cache_resource(show_spinner=False, max_entries=16)
def umap_figure(db: str, token: str, cohort: str, model: str, heads: str, colour_by: str):
    """The joint-space map of one heads in one colouring (a Vega-Lite spec dict), and whether it
    draws a sample."""
    points = data.umap_points(db, token, cohort, model, heads)
    drawn = logic.sample_items(points, MAX_ITEMS)
    return charts.umap_scatter(drawn, colour_by).to_dict(), len(drawn) < len(points)


def default_choice(db: str, token: str) -> tuple[str | None, str | None]:
    """The cohort and model the sidebar shows first: the first cohort, its most specialised model.

    `app.sidebar` opens on the same choice (first cohort listed; last model, the ladder's top).
    """
    cohorts = data.cohorts(db, token)
    if cohorts.empty:
        return None, None
    cohort = str(cohorts["cohort"].iloc[0])
    models = data.models(db, token, cohort)
    return cohort, (str(models["model"].iloc[-1]) if len(models) else None)


def warm_overview(db: str, token: str, cohort: str, model: str,
                  direction: str = "image_to_report") -> None:
    """Everything the risk overview reads and draws for (cohort, model), in its default state."""
    data.heads(db, token, cohort, model)
    data.pool_metrics(db, token, cohort, model, "original", None)
    decision(db, token, cohort, model)
    claims(db, token, cohort)
    lift_figure(db, token, cohort, model, direction)
    members_figure(db, token, cohort, model, direction)
    summary(db, token, cohort, model)


def warm_overview_choices(db: str, token: str, cohort: str) -> None:
    """The overview's charts for every model of the cohort in both directions (its pickers):
    each is drawn on the server, about 0.1 s a chart here."""
    for model in reversed(list(data.models(db, token, cohort)["model"])):
        data.pool_metrics(db, token, cohort, model, "original", None)  # the page reads it too
        decision(db, token, cohort, model)
        for direction in logic.DIRECTION_NAMES:
            lift_figure(db, token, cohort, model, direction)
            members_figure(db, token, cohort, model, direction)


def warm_joint_space(db: str, token: str, cohort: str, model: str) -> None:
    """The joint space of (cohort, model): every map in the default colouring (the page and its
    "compare with" picker), then in every other colouring, and the cohort's items (the report
    of a selection, the explorer's candidates)."""
    maps = sorted(data.umap_heads(db, token, cohort, model), key=lambda h: h != "original")
    for heads in maps:
        umap_figure(db, token, cohort, model, heads, "modality")
    data.item(db, token, cohort, "")  # any id: the first call reads all the cohort's items
    for colour_by in charts.COLOUR_BY:
        for heads in maps:
            umap_figure(db, token, cohort, model, heads, colour_by)


def warm_explorer(db: str, token: str, cohort: str, model: str) -> None:
    """The explorer and hard negatives of (cohort, model): the held-out queries and top-k lists of
    every heads (the heads picker; any query id: the first call reads the heads' whole list)."""
    heads = sorted(data.heads(db, token, cohort, model), key=lambda h: h != "original")
    for h in heads:
        data.query_ranks(db, token, cohort, model, h, "test")
    for h in heads:
        data.candidates(db, token, cohort, model, h, "test", "image_to_report", "")


def warm_privacy(db: str, token: str, cohort: str, model: str) -> None:
    """The privacy page's paired changes at its N (the full held-out set): every released set of
    heads against the original heads and against the eps = inf heads of its start, and the
    frontier it opens on (the patient-bootstrap counts they share are drawn once, here)."""
    runs = data.dp_runs(db, token, cohort, model)
    if runs.empty:
        return
    held, _, opened = logic.privacy_view(data.pool_metrics(db, token, cohort, model, None, 1),
                                         runs["heads"])
    if held.empty:
        return
    n = int(held["pool_size"].max())
    for h in logic.epsilon_grid(runs["heads"], held["heads"]):
        for reference in dict.fromkeys(("original", dec.inf_of(dec.start_of(h)))):
            if reference != h:
                heads_change(db, token, cohort, model, reference, h, n)
    frontier_figure(db, token, cohort, model, n, "recall", opened)


@st.cache_data(show_spinner=False, max_entries=256)
def heads_change(db: str, token: str, cohort: str, model: str, reference: str, heads: str,
                 pool_size: int) -> dec.Change:
    """The change of `heads` against `reference` at N on the same held-out queries, with its
    paired patient-bootstrap interval."""
    ranks = _ranks(db, token, cohort, model, (reference, heads))
    return dec.heads_change(ranks, reference, heads, pool_size)


@st.cache_data(show_spinner=False, max_entries=32)
def decomposition(db: str, token: str, cohort: str, model: str) -> pd.DataFrame:
    """`engine.core.decompose` of this model's heads with paired intervals (same queries)."""
    from engine.core import decompose

    metrics = data.pool_metrics(db, token, cohort, model, None, 1)
    heads = [h for h in metrics["heads"].astype(str).unique()
             if "@" not in h and not dec.is_adaptive(h) and h != "backbone"]
    return decompose.decompose(
        metrics, membership=data.membership(db, token, cohort, model),
        utility=data.utility(db, token, cohort, model),
        ranks=_ranks(db, token, cohort, model, heads), n_boot=500)
