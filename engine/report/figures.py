"""The report's figures, drawn with matplotlib from the document (never from the database).

Each figure is a function ``draw_<key>(fig, doc)`` that fills a `matplotlib.figure.Figure` or
`SubFigure` of the size given by its `FigureSpec`. The HTML renders the figure alone to SVG; the
PDF draws the same function into a region of an A4 page, so both show identical figures. Only
the object-oriented API is used (no pyplot), so no GUI backend or global figure state is
touched; style lives in `STYLE`, applied with ``rc_context``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

from engine.report import text as fmt

NAVY, ORANGE, GREY, LIGHT, GREEN, INK = (
    "#1f4e79", "#c55a11", "#8a94a3", "#9dc3e6", "#2e7d32", "#1d2733")

WIDTH_IN = 6.6

STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 8.5,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.labelsize": 8,
    "axes.labelcolor": INK,
    "axes.edgecolor": "#6b7785",
    "axes.linewidth": 0.7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": "#e4e8ee",
    "grid.linewidth": 0.6,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "xtick.color": "#4a5563",
    "ytick.color": "#4a5563",
    "legend.fontsize": 7.5,
    "legend.frameon": False,
    "text.color": INK,
    "text.parse_math": False,
    "svg.fonttype": "path",
    "svg.hashsalt": "relink-audit-report",
    "pdf.fonttype": 42,
}


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the report.

    Attributes:
        key: Stable name (``lift``, ``members``, ``privacy``).
        caption: What the figure shows, in one or two sentences.
        height_in: Height in inches (the width is `WIDTH_IN`).
        draw: ``draw(fig, doc)``.
    """

    key: str
    caption: str
    height_in: float
    draw: Callable


def figure_specs(doc: dict) -> dict[str, FigureSpec]:
    """The figures this document has data for, by key."""
    out = {}
    if any(fmt.finite(r["lift"]) for r in doc["lift_vs_n"]["rows"]
           if r["direction"] == "image_to_report" and not r["pool_varies"]):
        out["lift"] = FigureSpec(
            "lift", "Re-linkage vs pool size N (held-out pairs, image → report, original heads). "
            "Left: Recall@1, with chance (1/N) dashed. Right: lift over chance. Bands are 95% "
            "bootstrap intervals over patients; the dotted line marks the headline N.",
            2.55, draw_lift)
    if any(fmt.finite(r["held_out"]["recall"]) or fmt.finite(r["members"]["recall"])
           for r in doc["members"]["rows"]):
        out["members"] = FigureSpec(
            "members", f"Recall@1 of members (training pairs) and held-out pairs at N = "
            f"{doc['members']['pool_size']:,}, per set of heads, with 95% intervals; chance "
            "dashed. The gap between the bars is memorisation.",
            heads_height(len(doc["members"]["rows"]), 2.35), draw_members)
    if doc["privacy"]["available"] and any(fmt.finite(r["recall"]) or fmt.finite(r["macro_auroc"])
                                           for r in doc["privacy"]["rows"]):
        out["privacy"] = FigureSpec(
            "privacy", "Privacy and utility across the DP grid, a row per set of heads. Left: "
            f"Recall@1 at N = {doc['privacy']['pool_size'] or 0:,} (held-out, image → report) "
            "with 95% intervals and chance dashed. Right: 14-label probe macro AUROC; the dashed "
            "line is the probe on the frozen backbone features (sanity line).",
            heads_height(len(doc["privacy"]["rows"]), 2.55), draw_privacy)
    return out


def render_svg(spec: FigureSpec, doc: dict) -> str:
    """The figure alone as an SVG document (text as paths, so it looks the same everywhere)."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    with rc_context(STYLE):
        fig = Figure(figsize=(WIDTH_IN, spec.height_in))
        spec.draw(fig, doc)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    return buf.getvalue()


# ------------------------------------------------------------------------------ drawing


def _heads_rows(fig, axes, labels) -> list[float]:
    """Heads names down the y axis of `axes` (first at the top), one line each, and a left margin
    measured to fit the longest: long names (``ε=0.34 (original start)``, the adaptive
    attackers) never overlap or leave the figure. Returns the rows' y positions."""
    y = [float(len(labels) - 1 - i) for i in range(len(labels))]
    axes[0].set_yticks(y, labels)
    for ax in axes:
        ax.set_ylim(-0.6, len(labels) - 0.4)
        ax.grid(axis="y", visible=False)
    for ax in axes[1:]:  # the panels beside share the rows: names once, on the left
        ax.tick_params(labelleft=False)
    fig.get_figure(root=True).draw_without_rendering()
    widest = max((t.get_window_extent().width for t in axes[0].get_yticklabels()
                  if t.get_text()), default=0.0)
    fig.subplots_adjust(left=min(0.5, (widest + 12) / fig.bbox.width))
    return y


def _height_in(fig) -> float:
    """Height in inches of a figure or of a page region (`SubFigure`)."""
    return fig.bbox.height / fig.get_figure(root=True).dpi


def heads_height(n_rows: int, base: float) -> float:
    """A heads chart's height (inches): `base`, or more when each heads needs its own row."""
    return max(base, 0.9 + 0.24 * n_rows)


def _log_axis(ax, sizes) -> None:
    ax.set_xscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([f"{s:,}" for s in sizes])
    ax.minorticks_off()


def draw_lift(fig, doc: dict) -> None:
    """Recall@1 and lift vs N, random vs matched negatives."""
    rows = [r for r in doc["lift_vs_n"]["rows"]
            if r["direction"] == "image_to_report" and not r["pool_varies"]]
    axes = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.085, right=0.985, bottom=0.17, top=0.8, wspace=0.28)
    sizes = sorted({r["pool_size"] for r in rows})
    headline_n = doc["headline"].get("pool_size")
    for neg, colour, marker, name in (("random", NAVY, "o", "random negatives"),
                                      ("matched", ORANGE, "s", "pathology-matched")):
        pts = [r for r in rows if r["negatives"] == neg and fmt.finite(r["recall"])]
        if not pts:
            continue
        n = [r["pool_size"] for r in pts]
        for ax, (val, lo, hi) in zip(axes, (("recall", "ci_low", "ci_high"),
                                            ("lift", "lift_low", "lift_high"))):
            y = [100 * r[val] if val == "recall" else r[val] for r in pts]
            low = [(100 * r[lo] if val == "recall" else r[lo]) if fmt.finite(r[lo]) else yy
                   for r, yy in zip(pts, y)]
            high = [(100 * r[hi] if val == "recall" else r[hi]) if fmt.finite(r[hi]) else yy
                    for r, yy in zip(pts, y)]
            ax.fill_between(n, low, high, color=colour, alpha=0.13, linewidth=0)
            ax.plot(n, y, color=colour, marker=marker, markersize=3.5, linewidth=1.4,
                    label=name)
    chance_n = sizes or [1]
    axes[0].plot(chance_n, [100.0 / s for s in chance_n], color=GREY, linestyle="--",
                 linewidth=1.0, label="chance (1/N)")
    axes[1].axhline(1.0, color=GREY, linestyle="--", linewidth=1.0, label="chance (1×)")
    axes[0].set_ylabel("Recall@1 (%)")
    axes[1].set_ylabel("lift over chance (×)")
    axes[0].set_title("Recall@1")
    axes[1].set_title("Lift = Recall@1 / chance")
    axes[0].set_ylim(0, None)
    axes[1].set_ylim(0, None)
    for ax in axes:
        if sizes:
            _log_axis(ax, sizes)
        ax.set_xlabel("pool size N (reports, true one included)")
        if headline_n:
            ax.axvline(headline_n, color=INK, linestyle=":", linewidth=0.8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", bbox_to_anchor=(0.985, 1.0), ncols=3)


def draw_members(fig, doc: dict) -> None:
    """Grouped horizontal bars: held-out vs members Recall@1 per heads (a row each)."""
    rows = doc["members"]["rows"]
    ax = fig.subplots()
    fig.subplots_adjust(right=0.985, bottom=0.5 / _height_in(fig),
                        top=1 - 0.55 / _height_in(fig))
    y = _heads_rows(fig, [ax], [fmt.heads_short(r["heads"]) for r in rows])
    height = 0.36
    for offset, key, colour, name in ((height / 2, "held_out", NAVY, "held-out pairs"),
                                      (-height / 2, "members", LIGHT, "members (training pairs)")):
        vals = [r[key]["recall"] for r in rows]
        x = [100 * v if fmt.finite(v) else 0.0 for v in vals]
        err = [[max(0.0, xx - 100 * r[key]["ci_low"]) if fmt.finite(r[key]["ci_low"]) else 0.0
                for xx, r in zip(x, rows)],
               [max(0.0, 100 * r[key]["ci_high"] - xx) if fmt.finite(r[key]["ci_high"]) else 0.0
                for xx, r in zip(x, rows)]]
        pos = [yy + offset for yy in y]
        ax.barh(pos, x, height, color=colour, label=name, edgecolor="white", linewidth=0.5,
                xerr=err, error_kw=dict(ecolor=INK, elinewidth=0.8, capsize=2.0))
        for yi, v in zip(pos, vals):
            if not fmt.finite(v):
                ax.text(0.5, yi, "n/a", ha="left", va="center", fontsize=6.5, color=GREY)
    n = doc["members"]["pool_size"]
    if n:
        ax.axvline(100.0 / n, color=GREY, linestyle="--", linewidth=1.0, label=f"chance (1/{n:,})")
    ax.set_xlabel(f"Recall@1 at N = {n:,} (%)" if n else "Recall@1 (%)")
    ax.set_xlim(0, None)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", bbox_to_anchor=(0.985, 1.0), ncols=3)
    ax.set_title("Members vs held-out")


def draw_privacy(fig, doc: dict) -> None:
    """Recall@1 and probe macro AUROC across the heads grid, a row per heads (forest plot)."""
    p = doc["privacy"]
    rows = p["rows"]
    axes = fig.subplots(1, 2, sharey=True)
    fig.subplots_adjust(right=0.985, bottom=0.5 / _height_in(fig),
                        top=1 - 0.3 / _height_in(fig), wspace=0.08)
    y = _heads_rows(fig, list(axes), [fmt.heads_short(r["heads"]) for r in rows])
    colours = [GREY if r["heads"] == "original" else NAVY if r["heads"] == "inf" else ORANGE
               for r in rows]
    ax = axes[0]
    for yi, r, c in zip(y, rows, colours):
        if not fmt.finite(r["recall"]):
            ax.text(0, yi, " n/a", ha="left", va="center", fontsize=6.5, color=GREY)
            continue
        x = 100 * r["recall"]
        lo = 100 * r["ci_low"] if fmt.finite(r["ci_low"]) else x
        hi = 100 * r["ci_high"] if fmt.finite(r["ci_high"]) else x
        ax.errorbar([x], [yi], xerr=[[x - lo], [hi - x]], fmt="o", color=c, markersize=4.5,
                    elinewidth=1.0, capsize=2.5)
    if p["pool_size"]:
        ax.axvline(100.0 / p["pool_size"], color=GREY, linestyle="--", linewidth=1.0,
                   label=f"chance (1/{p['pool_size']:,})")
        ax.legend(loc="best")
    ax.set_xlabel(f"Recall@1 at N = {p['pool_size']:,} (%)" if p["pool_size"] else "Recall@1 (%)")
    ax.set_xlim(0, None)
    ax.set_title("Re-linkage risk")

    ax = axes[1]
    vals = [(yi, 100 * r["macro_auroc"], c) for yi, r, c in zip(y, rows, colours)
            if fmt.finite(r["macro_auroc"])]
    for yi, x, c in vals:
        ax.plot([x], [yi], "o", color=c, markersize=4.5)
    all_x = [v[1] for v in vals]
    if fmt.finite(p["backbone_macro_auroc"]):
        b = 100 * p["backbone_macro_auroc"]
        ax.axvline(b, color=GREEN, linestyle="--", linewidth=1.0,
                   label="frozen backbone (sanity line)")
        ax.legend(loc="best")
        all_x.append(b)
    if all_x:
        pad = max(1.0, (max(all_x) - min(all_x)) * 0.35)
        ax.set_xlim(min(all_x) - pad, min(100.0, max(all_x) + pad))
    ax.set_xlabel("probe macro AUROC (%)")
    ax.set_title("Utility")
