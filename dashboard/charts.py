"""Figures of the dashboard, built from plain frames (no Streamlit, no storage).

Every figure is a Vega-Lite chart (Altair). The pages cache it as its spec dict and draw it with
`st.vega_lite_chart` (Streamlit's Vega component loads and draws several times faster than its
Plotly one in a browser without GPU), except the first page's two charts, which are drawn here
as SVG (`svg`, by the Vega project's own converter) and shown as images, so that the first page
loads no chart component at all (docs/dashboard.md, "Latency"). One chart library, one set of
rules. Database strings travel only as data values (legend entries, tooltips and
text marks are text), never inside an expression, a title or a format. The joint space's points
carry their row label (``row``), so a click maps back to a row (`logic.selected_points`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from dashboard import logic
from engine.core.names import heads_short

PALETTE = ("#1f5f8b", "#d1495b", "#2e933c", "#edae49", "#7b4b94", "#00798c", "#8c564b",
           "#e377c2", "#7f7f7f", "#bcbd22")
MODALITY_COLOURS = {"image": "#1f5f8b", "report": "#d1495b"}
SPLIT_COLOURS = {"test": "#1f5f8b", "train": "#edae49", "validate": "#7f7f7f"}
# the same colours keyed by the names the pages show ("held-out", "members", ...)
SPLIT_NAME_COLOURS = {logic.SPLIT_NAMES.get(k, k): v for k, v in SPLIT_COLOURS.items()}


# 1-2-5 ticks for log axes of probabilities (a log axis's own labels crowd a short range)
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


# Drawn width of a server-drawn chart, in CSS pixels: about the page's main column (full, half)
# beside the sidebar at a common laptop width, so its text reads near the page's own size.
FULL_WIDTH, HALF_WIDTH = 880, 420


def svg(chart, *, width: int) -> str:
    """`chart` drawn as an SVG document `width` pixels wide (Vega's own renderer, in-process).

    Text stays text, escaped by the renderer (a database string is never markup); the document
    is shown in an ``<img>``, which runs no script and loads nothing. Interaction (tooltips,
    selections) is given up: this is for charts that only show.
    """
    import vl_convert

    # the look Streamlit's theme gives the browser-drawn charts: light grid, grey text, no frame
    spec = chart.properties(width=width).configure(font="sans-serif").configure_axis(
        labelFontSize=12, titleFontSize=12, titleFontWeight="normal", labelColor="#31333f",
        titleColor="#31333f", gridColor="#e6eaf1", domainColor="#d5dae4", tickColor="#d5dae4",
    ).configure_legend(labelFontSize=12, labelColor="#31333f").configure_view(
        strokeWidth=0).to_dict()
    # "https://vega.github.io/schema/vega-lite/v6.4.1.json" -> "6.4", the converter's name for it
    version = ".".join(spec["$schema"].rsplit("/v", 1)[1].split(".")[:2])
    return vl_convert.vegalite_to_svg(spec, vl_version=version)


def colours(names) -> dict[str, str]:
    """A stable colour per name (in the given order)."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(dict.fromkeys(names))}


# Vega-Lite stroke dash arrays of `_dash`'s names
DASHES = {"solid": [1, 0], "dash": [6, 4], "dashdot": [8, 3, 2, 3]}


def _dash(negatives: str) -> str:
    """Random negatives solid, 14-label matched dashed, finer ``matched:<policy>`` dash-dot."""
    return "solid" if negatives == "random" else "dash" if negatives == "matched" else "dashdot"


def _log_axis(title: str, values, *, percent: bool = False):
    """A log axis ticked exactly at `values` (pool sizes as 10,000; probabilities as 0.05%)."""
    import altair as alt

    return alt.Axis(title=title, values=[float(v) for v in values],
                    format="~%" if percent else ",.0f", grid=True)


def _pool_x(sizes):
    """The pool-size x encoding: log scale over exactly the stored sizes, ticked at each (a
    "nice" log domain would run on to the next power of ten), a little room at both ends."""
    import altair as alt

    return alt.X("pool_size:Q", scale=alt.Scale(type="log", nice=False, padding=10),
                 axis=_log_axis("pool size N (log)", sizes))


def _log_recall(values: pd.Series):
    """A log y encoding of ``recall`` over the positive `values` (rates and interval ends).

    Ticked on the 1-2-5 `LOG_TICKS` within the values' range; an interval end of 0 (no success
    at all) has no place on a log axis, so the domain covers the positive values and marks below
    are clamped to its floor instead of stretching the axis.
    """
    import altair as alt

    v = pd.to_numeric(values, errors="coerce")
    v = v[v > 0]
    low, high = (float(v.min()), float(v.max())) if len(v) else (1e-3, 1.0)
    ticks = [t for t in LOG_TICKS if low / 1.5 <= t <= high * 1.5]
    if len(ticks) < 2:  # a narrow range: the 1-2-5 ticks just around it
        ticks = ([t for t in LOG_TICKS if t <= low][-1:] + ticks
                 + [t for t in LOG_TICKS if t >= high][:1])
        ticks = sorted(set(ticks))
    domain = [min(low / 1.2, ticks[0]), min(max(high * 1.2, ticks[-1]), 1.0)]
    return alt.Y("recall:Q", scale=alt.Scale(type="log", domain=domain, clamp=True, nice=False),
                 axis=_log_axis("Recall@1 (log)", ticks, percent=True))


def lift_vs_n(curves: pd.DataFrame, *, highlight: str | None = None):
    """Lift over chance vs N per model (log x): random negatives solid, matched dashed.

    The overview draws it on the server (`svg`); database strings travel only as data values
    (legend entries and tooltips are text), never inside an expression.
    """
    import altair as alt

    frame = pd.DataFrame({
        "model": curves["model"].astype(str) if len(curves) else pd.Series(dtype=str),
        "negatives": curves["negatives"].astype(str) if len(curves) else pd.Series(dtype=str),
    })
    for column in ("pool_size", "lift", "recall", "n_queries", "n_excluded", "ci_low", "ci_high",
                   "chance"):
        frame[column] = (pd.to_numeric(curves[column], errors="coerce")
                         if len(curves) and column in curves else np.nan if len(curves) else [])
    # the lift's 95% interval: the recall interval over chance (a bar per point), so noise does
    # not read as a trend
    frame["lift_low"] = frame["ci_low"] / frame["chance"]
    frame["lift_high"] = frame["ci_high"] / frame["chance"]
    frame["highlighted"] = frame["model"] == highlight if highlight is not None else False
    models = list(dict.fromkeys(frame["model"]))
    palette = colours(models)
    kinds = list(dict.fromkeys(frame["negatives"]))
    sizes = sorted(frame["pool_size"].dropna().unique())
    x = _pool_x(sizes)
    lines = alt.Chart(frame).mark_line(point=True).encode(
        x=x,
        y=alt.Y("lift:Q", title="lift = Recall@1 / (1/N)"),
        color=alt.Color("model:N", scale=alt.Scale(domain=models,
                                                   range=[palette[m] for m in models]),
                        legend=alt.Legend(orient="top", title=None, labelLimit=0, columns=2)),
        strokeDash=alt.StrokeDash("negatives:N", scale=alt.Scale(
            domain=kinds, range=[DASHES[_dash(k)] for k in kinds]),
            legend=alt.Legend(orient="top", title=None, symbolType="stroke", symbolSize=300,
                              symbolStrokeColor="#444", symbolStrokeWidth=2,
                              symbolFillColor="#444")),
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
    bars = alt.Chart(frame).mark_rule(opacity=0.6).encode(
        x=x, y="lift_low:Q", y2="lift_high:Q",
        color=alt.Color("model:N", scale=alt.Scale(domain=models,
                                                   range=[palette[m] for m in models]),
                        legend=None),
        detail="negatives:N")
    chance = alt.Chart(pd.DataFrame({"chance": [1.0]})).mark_rule(
        color="#999", strokeDash=[2, 3]).encode(y="chance:Q")
    return (bars + lines + chance).properties(height=380)


CHANCE = "chance (1/N)"


def _recall_vs_n(curves: pd.DataFrame, by: str, names, colour_of, dash_of,
                 counts: dict[str, str] | None = None):
    """Recall@1 vs N per series (log-log) with 95% interval bars and the chance line 1/N dotted.

    Column `by` names each row's series (`names`, one per row of `curves`); `colour_of` and
    `dash_of` give each series its colour and Vega-Lite dash array; `counts` (column: title)
    adds count columns of `curves` to the lines' tooltips.
    The layers are the interval bars, the lines, the chance line, in that order.
    """
    import altair as alt

    frame = pd.DataFrame({by: list(names)})
    counts = counts or {}
    for column in ("pool_size", "recall", "ci_low", "ci_high", *counts):
        frame[column] = (pd.to_numeric(curves[column], errors="coerce").to_numpy()
                         if len(curves) else [])
    sizes = sorted(frame["pool_size"].dropna().unique())
    chance = pd.DataFrame({"pool_size": sizes, "recall": [1.0 / s for s in sizes], by: CHANCE})
    series = list(dict.fromkeys(frame[by]))
    domain = series + [CHANCE]
    colour = alt.Color(f"{by}:N", title=None, legend=alt.Legend(orient="top"),
                       scale=alt.Scale(domain=domain,
                                       range=[colour_of(n) for n in series] + ["#999"]))
    dash = alt.StrokeDash(f"{by}:N", legend=None, scale=alt.Scale(
        domain=series, range=[dash_of(n) for n in series]))
    x = _pool_x(sizes)
    y = _log_recall(pd.concat([frame[["recall", "ci_low", "ci_high"]].stack(),
                               chance["recall"]]))
    tooltip = [alt.Tooltip(f"{by}:N"), alt.Tooltip("pool_size:Q", title="N", format=","),
               alt.Tooltip("recall:Q", title="Recall@1", format=".2%"),
               *(alt.Tooltip(f"{c}:Q", title=t, format=",") for c, t in counts.items())]
    base = alt.Chart(frame)
    bars = base.mark_rule().encode(x=x, y="ci_low:Q", y2="ci_high:Q", color=colour)
    lines = base.mark_line(point=True).encode(x=x, y=y, color=colour, strokeDash=dash,
                                              tooltip=tooltip)
    dotted = alt.Chart(chance).mark_line(strokeDash=[2, 3]).encode(x=x, y=y, color=colour)
    return (bars + lines + dotted).properties(height=380)


def members_vs_heldout(curves: pd.DataFrame):
    """Recall@1 vs N with 95% intervals for members and held-out pairs (random negatives, log-log).

    A Vega-Lite chart, as `lift_vs_n`. The chance line 1/N is drawn dotted.
    """
    rnd = curves[curves["negatives"] == "random"] if len(curves) else curves
    return _recall_vs_n(rnd, "pairs", [logic.SPLIT_NAMES.get(s, s) for s in rnd.get("split", [])],
                        lambda n: SPLIT_NAME_COLOURS.get(n, "#444"), lambda n: DASHES["solid"])


def random_vs_matched(curves: pd.DataFrame):
    """Recall@1 vs N for random and matched negatives (held-out), with 95% intervals (log-log).

    A Vega-Lite chart: random negatives solid, 14-label matched dashed, a finer policy dash-dot
    (`_dash`); the chance line 1/N dotted.
    """
    palette = {"random negatives": PALETTE[0], "matched negatives": PALETTE[1]}
    return _recall_vs_n(
        curves, "negatives", [f"{n} negatives" for n in curves.get("negatives", [])],
        lambda n: palette.get(n, PALETTE[2]),
        lambda n: DASHES[_dash(n.removesuffix(" negatives"))],
        counts={"n_queries": "queries", "n_excluded": "excluded"})


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
    # no shape legend: the page's caption says circles are images, diamonds reports (a second
    # top legend overflows a half-width map)
    shape = alt.Shape("modality:N", legend=None,
                      scale=alt.Scale(domain=["image", "report"], range=["circle", "diamond"]))
    return alt.Chart(frame).mark_point(filled=True, size=22, opacity=0.75).encode(
        x=alt.X("x:Q", title="UMAP 1", scale=alt.Scale(zero=False)),
        y=alt.Y("y:Q", title="UMAP 2", scale=alt.Scale(zero=False)),
        color=colour, shape=shape, tooltip=tooltip,
    ).add_params(box, pick).properties(
        height=height, usermeta={"embedOptions": {"renderer": "canvas"}})


def frontier_plot(frame: pd.DataFrame, *, x: str = "recall", chosen: str | None = None):
    """Privacy/utility frontier: one point per heads (x Recall@1 or lift, y macro AUROC).

    A Vega-Lite chart: the retrained heads joined in the epsilon grid's order and labelled, the
    original heads as a diamond, the chosen heads ringed. Percent axes are ticked by
    `percent_ticks`, so no two ticks read alike.
    """
    import altair as alt

    f = pd.DataFrame({"heads": frame["heads"].astype(str).to_numpy(),
                      "x": pd.to_numeric(frame[x], errors="coerce").to_numpy(),
                      "auroc": pd.to_numeric(frame["auroc"], errors="coerce").to_numpy()})
    f["label"] = [heads_short(h) if h != "original" else "original" for h in f["heads"]]
    f["kind"] = np.where(f["heads"] == "original", "original heads", "retrained heads")
    f["order"] = np.arange(len(f))
    label = "Recall@1 (attack success)" if x == "recall" else "lift over chance"
    x_range, y_range = _padded(f["x"], 0.15), _padded(f["auroc"], 0.25)
    x_axis = (_percent_axis(f"{label} → more re-linkage", x_range) if x == "recall"
              else alt.Axis(title=f"{label} → more re-linkage", format=".1f"))
    enc_x = alt.X("x:Q", axis=x_axis, scale=alt.Scale(domain=x_range, zero=False, nice=False)
                  if x_range else alt.Scale(zero=False))
    enc_y = alt.Y("auroc:Q", axis=_percent_axis("probe macro AUROC → more utility", y_range),
                  scale=alt.Scale(domain=y_range, zero=False, nice=False)
                  if y_range else alt.Scale(zero=False))
    colour = alt.Color("kind:N", title=None, legend=alt.Legend(orient="top"),
                       scale=alt.Scale(domain=["retrained heads", "original heads"],
                                       range=[PALETTE[0], PALETTE[1]]))
    shape = alt.Shape("kind:N", legend=None, scale=alt.Scale(
        domain=["retrained heads", "original heads"], range=["circle", "diamond"]))
    tooltip = [alt.Tooltip("label:N", title="heads"),
               alt.Tooltip("x:Q", title=label, format=".2%" if x == "recall" else ".1f"),
               alt.Tooltip("auroc:Q", title="macro AUROC", format=".2%")]
    base = alt.Chart(f)
    line = base.transform_filter(alt.datum.kind == "retrained heads").mark_line(
        color=PALETTE[0]).encode(x=enc_x, y=enc_y, order="order:Q")
    points = base.mark_point(filled=True, size=110, opacity=1).encode(
        x=enc_x, y=enc_y, color=colour, shape=shape, tooltip=tooltip)
    text = base.mark_text(align="left", dx=9, fontSize=11).encode(
        x=enc_x, y=enc_y, text="label:N")
    layers = [line, points, text]
    ring = f[f["heads"] == str(chosen)] if chosen is not None else f.iloc[:0]
    if len(ring):
        layers.append(alt.Chart(ring).mark_point(size=420, strokeWidth=2, color="#1b2430")
                      .encode(x=enc_x, y=enc_y))
    return alt.layer(*layers).properties(height=420)


def _percent_axis(title: str, domain):
    """A percent axis ticked by `percent_ticks` over `domain` (labels that all differ)."""
    import altair as alt

    if not domain:
        return alt.Axis(title=title, format=".2%")
    values, text = percent_ticks(*domain)
    decimals = len(text[0].rstrip("%").partition(".")[2]) if text else 2
    return alt.Axis(title=title, values=values, format=f".{decimals}%")


def _padded(values: pd.Series, share: float) -> list[float] | None:
    """An axis range with room around the points for their labels."""
    v = values.dropna().astype(float)
    if v.empty:
        return None
    lo, hi = float(v.min()), float(v.max())
    pad = (hi - lo) * share or max(abs(hi) * 0.05, 1e-3)
    return [lo - pad, hi + pad]


def per_label_auroc(utility: pd.DataFrame, heads: list[str]):
    """Per-label probe AUROC, grouped horizontal bars for the given heads (a Vega-Lite chart)."""
    import altair as alt

    per = utility[(utility["label"] != "macro") & utility["heads"].isin(heads)]
    order = [label for label in logic.LABELS if label in set(per["label"])]
    names = [logic.heads_name(h) for h in heads]
    frame = pd.DataFrame({"label": per["label"].astype(str).to_numpy(),
                          "heads": per["heads"].map(logic.heads_name).to_numpy(),
                          "auroc": pd.to_numeric(per["auroc"], errors="coerce").to_numpy()})
    low = float(frame["auroc"].min()) if len(frame) else 0.5
    return alt.Chart(frame).mark_bar(clip=True).encode(
        y=alt.Y("label:N", sort=order, title=None),
        yOffset=alt.YOffset("heads:N", sort=names),
        x=alt.X("auroc:Q", title="probe AUROC (0.5 = chance)",
                scale=alt.Scale(domain=[min(0.5, low - 0.02), 1.0], nice=False),
                axis=alt.Axis(format=".0%")),
        color=alt.Color("heads:N", title=None, legend=alt.Legend(orient="top"),
                        scale=alt.Scale(domain=names,
                                        range=[PALETTE[i % len(PALETTE)]
                                               for i in range(len(names))])),
        tooltip=[alt.Tooltip("label:N", title="finding"), alt.Tooltip("heads:N"),
                 alt.Tooltip("auroc:Q", title="AUROC", format=".2%")],
    ).properties(height=40 + 30 * max(len(order), 4))


def risk_histogram(frame: pd.DataFrame, pool_size: int, bins: int = 40):
    """Distribution of the per-record risk (probability of re-linkage at N), chance marked.

    Binned here, not in the browser: a cohort of 50,000 held-out images ships 40 bars, not
    50,000 rows (Altair refuses more than 5,000 rows in a chart's data).
    """
    import altair as alt

    risk = frame["risk_at_n"].dropna().astype(float).to_numpy()
    top = float(risk.max()) if len(risk) and risk.max() > 0 else 1.0 / pool_size
    counts, edges = np.histogram(risk, bins=bins, range=(0.0, top))
    data = pd.DataFrame({"start": edges[:-1], "end": edges[1:], "images": counts})
    axis = alt.Axis(format="%", labelOverlap=True)
    bars = alt.Chart(data).mark_bar(color=PALETTE[0]).encode(
        x=alt.X("start:Q", title=f"probability of re-linkage at N = {pool_size:,}", axis=axis),
        x2="end:Q",
        y=alt.Y("images:Q", title="held-out images"), y2=alt.datum(0),
        tooltip=[alt.Tooltip("start:Q", title="from", format=".2%"),
                 alt.Tooltip("end:Q", title="to", format=".2%"),
                 alt.Tooltip("images:Q", title="images", format=",")])
    chance = alt.Chart(pd.DataFrame({"start": [1.0 / pool_size]})).mark_rule(
        color=PALETTE[1], strokeDash=[4, 3]).encode(x="start:Q")
    return (bars + chance).properties(height=260)


def roc_curve(fpr, tpr):
    """ROC of the pairing decision on log-scaled FPR (the low-FPR end is what matters)."""
    import altair as alt

    fpr, tpr = np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float)
    keep = fpr > 0
    data = pd.DataFrame({"fpr": fpr[keep], "tpr": tpr[keep]}).sort_values("fpr")
    low = max(float(data["fpr"].min()) if len(data) else 1e-4, 1e-6)
    line = alt.Chart(data).mark_line(color=PALETTE[0]).encode(
        x=alt.X("fpr:Q", scale=alt.Scale(type="log", domain=[low, 1]), title="false-positive "
                "rate (log)", axis=alt.Axis(format="%", labelOverlap=True)),
        y=alt.Y("tpr:Q", scale=alt.Scale(domain=[0, 1]), title="true-positive rate",
                axis=alt.Axis(format="%")))
    diagonal = pd.DataFrame({"fpr": np.geomspace(low, 1, 50)})
    diagonal["tpr"] = diagonal["fpr"]
    chance = alt.Chart(diagonal).mark_line(color="#7f7f7f", strokeDash=[4, 3]).encode(
        x="fpr:Q", y="tpr:Q")
    marks = pd.DataFrame({"fpr": [0.001, 0.01]})
    rules = alt.Chart(marks).mark_rule(color=PALETTE[1], strokeDash=[2, 2]).encode(x="fpr:Q")
    return (line + chance + rules).properties(height=260)
