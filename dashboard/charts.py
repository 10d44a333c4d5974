"""Figures of the dashboard, built from plain frames (no Streamlit, no storage).

The overview's two line charts are Vega-Lite (Altair): they are on the first page a visitor
opens, and Streamlit's Vega component loads and draws several times faster than its Plotly one
(docs/dashboard.md, "Latency"). The other figures are Plotly.
Scatter plots with many points use WebGL (`go.Scattergl`); every point of the UMAP carries its
row position as ``customdata`` so a selection maps back to rows (`logic.selected_points`).
"""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard import logic
from engine.core.names import heads_short

PALETTE = ("#1f5f8b", "#d1495b", "#2e933c", "#edae49", "#7b4b94", "#00798c", "#8c564b",
           "#e377c2", "#7f7f7f", "#bcbd22")
MODALITY_COLOURS = {"image": "#1f5f8b", "report": "#d1495b"}
SPLIT_COLOURS = {"test": "#1f5f8b", "train": "#edae49", "validate": "#7f7f7f"}
# the same colours keyed by the names the pages show ("held-out", "members", ...)
SPLIT_NAME_COLOURS = {logic.SPLIT_NAMES.get(k, k): v for k, v in SPLIT_COLOURS.items()}


def _layout(fig: go.Figure, *, x: str, y: str, height: int = 380, log_x: bool = False,
            log_y: bool = False, legend: bool = True) -> go.Figure:
    fig.update_layout(
        height=height, margin=dict(l=10, r=10, t=30, b=10), xaxis_title=x, yaxis_title=y,
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0) if legend else None,
        showlegend=legend, hovermode="closest",
    )
    if log_x:
        fig.update_xaxes(type="log")
        sizes = sorted({float(v) for t in fig.data if t.x is not None for v in t.x})
        if sizes:  # tick exactly at the stored pool sizes
            fig.update_xaxes(tickvals=sizes, ticktext=[f"{v:,.0f}" for v in sizes])
    if log_y:
        # Each tick labelled with its own shortest form (0.05%, 0.1%, 0.2%): a fixed number of
        # decimals would print 0.05% and 0.1% alike.
        fig.update_yaxes(type="log", tickvals=LOG_TICKS,
                         ticktext=[f"{100 * v:.6g}%" for v in LOG_TICKS])
    return fig


# 1-2-5 ticks for log axes of probabilities (plotly's own minor labels crowd a short range)
LOG_TICKS = [m * 10.0 ** e for e in range(-6, 1) for m in (1, 2, 5) if m * 10.0 ** e <= 1.0]


def percent_ticks(low: float, high: float, *, count: int = 5) -> tuple[list[float], list[str]]:
    """Tick values on a 1-2-5 step over [low, high] and percent labels that all differ.

    The number of decimals follows the step, so a range of 84.00%-84.09% reads 84.00%, 84.02%,
    ... instead of 84.0% five times.
    """
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        value = low if math.isfinite(low) else 0.0
        return [value], [f"{100 * value:.2f}%"]
    raw = (high - low) / max(count - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = min((m * power for m in (1, 2, 5, 10)), key=lambda v: abs(math.log(v / raw)))
    decimals = max(0, math.ceil(-math.log10(step * 100) - 1e-9))
    first = math.ceil(low / step - 1e-9)
    values = [round(i * step, 12) for i in range(first, int(math.floor(high / step + 1e-9)) + 1)]
    return values, [f"{100 * v:.{decimals}f}%" for v in values]


def plain(value) -> str:
    """A database string as plotly text: plotly renders <b>, <a href>, <br> in names and hovers."""
    return html.escape("" if value is None else str(value), quote=False)


def _plain_all(values: pd.Series) -> pd.Series:
    """`plain` of every value of a column (vectorised: a map spends seconds on 40k points)."""
    text = values.astype(str)
    return text.str.replace("&", "&amp;").str.replace("<", "&lt;").str.replace(">", "&gt;")


def colours(names) -> dict[str, str]:
    """A stable colour per name (in the given order)."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(dict.fromkeys(names))}


def _dash(negatives: str) -> str:
    """Random negatives solid, 14-label matched dashed, finer ``matched:<policy>`` dash-dot."""
    return "solid" if negatives == "random" else "dash" if negatives == "matched" else "dashdot"


def _log_axis(title: str, values, *, percent: bool = False):
    """A log axis ticked exactly at `values` (pool sizes as 10,000; probabilities as 0.05%)."""
    import altair as alt

    return alt.Axis(title=title, values=[float(v) for v in values],
                    format="~%" if percent else ",.0f", grid=True)


def lift_vs_n(curves: pd.DataFrame, *, highlight: str | None = None):
    """Lift over chance vs N per model (log x): random negatives solid, matched dashed.

    A Vega-Lite chart (Altair): the overview, the first page a visitor sees, draws in a fraction
    of the time a Plotly figure takes to load in the browser. Database strings travel only as
    data values (legend entries and tooltips are text), never inside an expression.
    """
    import altair as alt

    frame = pd.DataFrame({
        "model": curves["model"].astype(str) if len(curves) else pd.Series(dtype=str),
        "negatives": curves["negatives"].astype(str) if len(curves) else pd.Series(dtype=str),
    })
    for column in ("pool_size", "lift", "recall", "n_queries", "n_excluded"):
        frame[column] = pd.to_numeric(curves[column], errors="coerce") if len(curves) else []
    frame["highlighted"] = frame["model"] == highlight if highlight is not None else False
    models = list(dict.fromkeys(frame["model"]))
    palette = colours(models)
    kinds = list(dict.fromkeys(frame["negatives"]))
    dashes = {"solid": [1, 0], "dash": [6, 4], "dashdot": [8, 3, 2, 3]}
    sizes = sorted(frame["pool_size"].dropna().unique())
    x = alt.X("pool_size:Q", scale=alt.Scale(type="log"),
              axis=_log_axis("pool size N (log)", sizes))
    lines = alt.Chart(frame).mark_line(point=True).encode(
        x=x,
        y=alt.Y("lift:Q", title="lift = Recall@1 / (1/N)"),
        color=alt.Color("model:N", scale=alt.Scale(domain=models,
                                                   range=[palette[m] for m in models]),
                        legend=alt.Legend(orient="top", title=None)),
        strokeDash=alt.StrokeDash("negatives:N", scale=alt.Scale(
            domain=kinds, range=[dashes[_dash(k)] for k in kinds]),
            legend=alt.Legend(orient="top", title=None, symbolType="stroke",
                              symbolStrokeColor="#444", symbolStrokeWidth=2)),
        strokeWidth=alt.StrokeWidth("highlighted:N", scale=alt.Scale(domain=[False, True],
                                                                     range=[2, 3.5]),
                                    legend=None),
        detail="negatives:N",
        tooltip=[alt.Tooltip("model:N"), alt.Tooltip("negatives:N"),
                 alt.Tooltip("pool_size:Q", title="N", format=","),
                 alt.Tooltip("lift:Q", format=".1f"), alt.Tooltip("recall:Q", title="Recall@1",
                                                                  format=".2%"),
                 alt.Tooltip("n_queries:Q", title="queries", format=","),
                 alt.Tooltip("n_excluded:Q", title="excluded", format=",")],
    )
    chance = alt.Chart(pd.DataFrame({"chance": [1.0]})).mark_rule(
        color="#999", strokeDash=[2, 3]).encode(y="chance:Q")
    return (lines + chance).properties(height=380)


def members_vs_heldout(curves: pd.DataFrame):
    """Recall@1 vs N with 95% intervals for members and held-out pairs (random negatives, log-log).

    A Vega-Lite chart, as `lift_vs_n`. The chance line 1/N is drawn dotted.
    """
    import altair as alt

    rnd = curves[curves["negatives"] == "random"] if len(curves) else curves
    frame = pd.DataFrame({"pairs": [logic.SPLIT_NAMES.get(s, s) for s in rnd.get("split", [])]})
    for column in ("pool_size", "recall", "ci_low", "ci_high"):
        frame[column] = pd.to_numeric(rnd[column], errors="coerce").to_numpy() if len(rnd) else []
    sizes = sorted(frame["pool_size"].dropna().unique())
    chance = pd.DataFrame({"pool_size": sizes, "recall": [1.0 / s for s in sizes],
                           "pairs": "chance (1/N)"})
    values = pd.concat([frame[["recall", "ci_low", "ci_high"]].stack(), chance["recall"]])
    low, high = (float(values.min()), float(values.max())) if len(values) else (1e-3, 1.0)
    ticks = [t for t in LOG_TICKS if low / 1.5 <= t <= high * 1.5] or LOG_TICKS
    names = list(dict.fromkeys(frame["pairs"])) + ["chance (1/N)"]
    colour = alt.Color("pairs:N", title=None, legend=alt.Legend(orient="top"),
                       scale=alt.Scale(domain=names, range=[SPLIT_NAME_COLOURS.get(n, "#444")
                                                            for n in names[:-1]] + ["#999"]))
    x = alt.X("pool_size:Q", scale=alt.Scale(type="log"),
              axis=_log_axis("pool size N (log)", sizes))
    y = alt.Y("recall:Q", scale=alt.Scale(type="log"),
              axis=_log_axis("Recall@1 (log)", ticks, percent=True))
    tooltip = [alt.Tooltip("pairs:N"), alt.Tooltip("pool_size:Q", title="N", format=","),
               alt.Tooltip("recall:Q", title="Recall@1", format=".2%")]
    base = alt.Chart(frame)
    lines = base.mark_line(point=True).encode(x=x, y=y, color=colour, tooltip=tooltip)
    bars = base.mark_rule().encode(x=x, y="ci_low:Q", y2="ci_high:Q", color=colour)
    dotted = alt.Chart(chance).mark_line(strokeDash=[2, 3]).encode(x=x, y=y, color=colour)
    return (bars + lines + dotted).properties(height=380)


def random_vs_matched(curves: pd.DataFrame) -> go.Figure:
    """Recall@1 vs N for random and matched negatives (held-out), with 95% intervals."""
    fig = go.Figure()
    for negatives, g in curves.groupby("negatives", sort=False):
        g = g.sort_values("pool_size")
        fig.add_trace(go.Scatter(
            x=g["pool_size"], y=g["recall"], mode="lines+markers", name=f"{negatives} negatives",
            line=dict(color=PALETTE[0] if negatives == "random" else
                      PALETTE[1] if negatives == "matched" else PALETTE[2],
                      dash=_dash(negatives)),
            error_y=dict(type="data", symmetric=False, array=g["ci_high"] - g["recall"],
                         arrayminus=g["recall"] - g["ci_low"], thickness=1),
            customdata=g[["n_queries", "n_excluded"]].to_numpy(),
            hovertemplate=("N=%{x:,}<br>Recall@1 %{y:.2%}<br>queries %{customdata[0]:,} "
                           "(excluded %{customdata[1]:,})<extra></extra>"),
        ))
    if len(curves):
        sizes = np.sort(curves["pool_size"].unique())
        fig.add_trace(go.Scatter(x=sizes, y=1.0 / sizes, mode="lines", name="chance (1/N)",
                                 line=dict(color="#999", dash="dot")))
    return _layout(fig, x="pool size N (log)", y="Recall@1 (log)", log_x=True, log_y=True)


COLOUR_BY = ("modality", "label", "split", "rank")


# The joint space's selection parameters (`logic.selected_rows` reads them back): a drag draws a
# box over the map's coordinates, a click picks one point by its row label.
BOX, PICK = "box", "pick"


def umap_scatter(points: pd.DataFrame, colour_by: str, *, height: int = 520):
    """The joint space as a Vega-Lite scatter on a canvas: images as circles, reports as diamonds.

    Each point carries its index label in `points` (``row``), so a click maps back to a row; a
    drag makes an interval selection over ``x`` and ``y`` whose bounds select over the whole map.
    Database strings travel only as data values (tooltips and legend entries are text).
    """
    import altair as alt

    p = points
    frame = pd.DataFrame({
        "x": p["x"].astype(float).to_numpy(), "y": p["y"].astype(float).to_numpy(),
        "row": p.index.to_numpy(),
        "modality": p["modality"].fillna("?").astype(str).to_numpy(),
        "item": p["image_id"].fillna(p["item_id"]).astype(str).to_numpy(),
        "split": p["split"].fillna("?").map(lambda s: logic.SPLIT_NAMES.get(s, s)).to_numpy(),
    })
    tooltip = [alt.Tooltip("modality:N"), alt.Tooltip("item:N", title="id"),
               alt.Tooltip("split:N")]
    if colour_by == "rank":
        frame["rank"] = np.log10(p["expected_rank"].astype(float).clip(lower=1.0)).to_numpy()
        colour = alt.Color("rank:Q", title="log10 expected rank",
                           scale=alt.Scale(scheme="viridis", reverse=True, domainMin=0))
        tooltip.append(alt.Tooltip("rank:Q", title="log10 rank", format=".2f"))
    else:
        if colour_by == "modality":
            frame["colour"], palette = frame["modality"], MODALITY_COLOURS
        elif colour_by == "split":
            frame["colour"], palette = frame["split"], SPLIT_NAME_COLOURS
        else:
            frame["colour"] = logic.main_labels(p).to_numpy()
            palette = colours(frame["colour"].value_counts().index)
        names = list(frame["colour"].value_counts().index)
        colour = alt.Color("colour:N", title=colour_by, legend=alt.Legend(orient="top"),
                           scale=alt.Scale(domain=names,
                                           range=[palette.get(n, "#888") for n in names]))
        if colour_by == "label":
            tooltip.append(alt.Tooltip("colour:N", title="main finding"))
    box = alt.selection_interval(name=BOX, encodings=["x", "y"])
    pick = alt.selection_point(name=PICK, fields=["row"], on="click", clear="dblclick")
    shape = alt.Shape("modality:N", title=None,  # the colours name the modalities already
                      legend=None if colour_by == "modality" else alt.Legend(orient="top"),
                      scale=alt.Scale(domain=["image", "report"], range=["circle", "diamond"]))
    return alt.Chart(frame).mark_point(filled=True, size=22, opacity=0.75).encode(
        x=alt.X("x:Q", title="UMAP 1", scale=alt.Scale(zero=False)),
        y=alt.Y("y:Q", title="UMAP 2", scale=alt.Scale(zero=False)),
        color=colour, shape=shape, tooltip=tooltip,
    ).add_params(box, pick).properties(
        height=height, usermeta={"embedOptions": {"renderer": "canvas"}})


def frontier_plot(frame: pd.DataFrame, *, x: str = "recall",
                  chosen: str | None = None) -> go.Figure:
    """Privacy/utility frontier: one point per heads (x Recall@1 or lift, y macro AUROC)."""
    fig = go.Figure()
    dp = frame[frame["heads"] != "original"]
    fig.add_trace(go.Scatter(
        x=dp[x], y=dp["auroc"], mode="lines+markers+text", name="retrained heads",
        text=[plain(heads_short(h)) for h in dp["heads"]],
        textposition="middle right",
        line=dict(color=PALETTE[0]), marker=dict(size=9),
        hovertemplate="%{text}<br>%{x:.3g}<br>macro AUROC %{y:.2%}<extra></extra>",
    ))
    orig = frame[frame["heads"] == "original"]
    fig.add_trace(go.Scatter(
        x=orig[x], y=orig["auroc"], mode="markers+text", name="original heads",
        text=["original"] * len(orig), textposition="middle left",
        marker=dict(size=12, symbol="star", color=PALETTE[1]),
        hovertemplate="original<br>%{x:.3g}<br>macro AUROC %{y:.2%}<extra></extra>",
    ))
    sel = frame[frame["heads"] == chosen]
    if len(sel):
        fig.add_trace(go.Scatter(
            x=sel[x], y=sel["auroc"], mode="markers", name="selected",
            marker=dict(size=20, color="rgba(0,0,0,0)", line=dict(color="#1b2430", width=2)),
            hoverinfo="skip"))
    label = "Recall@1 (attack success)" if x == "recall" else "lift over chance"
    y_range = _padded(frame["auroc"], 0.25)
    x_range = _padded(frame[x], 0.15)
    if y_range:
        values, text = percent_ticks(*y_range)
        fig.update_yaxes(range=y_range, tickvals=values, ticktext=text)
    if x_range and x == "recall":
        values, text = percent_ticks(*x_range)
        fig.update_xaxes(range=x_range, tickvals=values, ticktext=text)
    else:
        fig.update_xaxes(range=x_range)
    return _layout(fig, x=f"{label} → more re-linkage", y="probe macro AUROC → more utility",
                   height=420)


def _padded(values: pd.Series, share: float) -> list[float] | None:
    """An axis range with room around the points for their labels."""
    v = values.dropna().astype(float)
    if v.empty:
        return None
    lo, hi = float(v.min()), float(v.max())
    pad = (hi - lo) * share or max(abs(hi) * 0.05, 1e-3)
    return [lo - pad, hi + pad]


def per_label_auroc(utility: pd.DataFrame, heads: list[str]) -> go.Figure:
    """Per-label probe AUROC, grouped bars for the given heads."""
    fig = go.Figure()
    per = utility[(utility["label"] != "macro") & utility["heads"].isin(heads)]
    order = [label for label in logic.LABELS if label in set(per["label"])][::-1]
    for i, h in enumerate(heads):
        g = per[per["heads"] == h].set_index("label").reindex(order)
        fig.add_trace(go.Bar(y=order, x=g["auroc"], name=plain(logic.heads_name(h)),
                             orientation="h",
                             marker_color=PALETTE[i % len(PALETTE)],
                             hovertemplate="%{y}<br>AUROC %{x:.2%}<extra></extra>"))
    fig.update_layout(barmode="group", bargap=0.25)
    low = float(per["auroc"].min()) if len(per) else 0.5
    fig.update_xaxes(tickformat=".0%", range=[min(0.5, low - 0.02), 1.0])
    return _layout(fig, x="probe AUROC (0.5 = chance)", y="", height=40 + 30 * max(len(order), 4))
