"""Joint space: images and reports in one 2-D map, before and after DP (docs/dashboard.md)."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data, logic, ui, views
from dashboard.views import MAX_ITEMS

ctx = ui.context()
st.title("Joint space")
ui.require_results(ctx)
ui.caption(ctx, heads=True)

available = data.umap_heads(ctx.db, ctx.token, ctx.cohort, ctx.model)
if not available:
    ui.empty(f"No UMAP coordinates for {ui.command(ctx.model)} on {ui.command(ctx.cohort)} yet. "
             f"Run {ui.command(ui.engine_command('umap', ctx.model, ctx.cohort))} "
             "(or `make demo`).")
    st.stop()
grid = logic.epsilon_grid([], available)

c1, c2 = st.columns([1, 1])
colour_by = c1.segmented_control("Colour by", list(charts.COLOUR_BY), default="modality",
                                 key="umap_colour", required=True)
others = [h for h in grid if h != ctx.heads]
compare = c2.selectbox("Compare with", ["(none)"] + others, key="umap_compare",
                       format_func=lambda h: h if h == "(none)" else logic.heads_name(h),
                       help="Show a second map side by side, e.g. the heads retrained with DP.")
# one short line above the map (the map stays above the fold at 1280 x 720); the reading guide
# is below it
MEANING = {"modality": "colour: blue images, red reports",
           "label": "colour: the first positive finding of the item's labels",
           "split": "colour: held-out, members (training) or validation",
           "rank": "colour: log10 of the true report's expected rank among all held-out "
                   "reports (0 = first; yellow = low rank = riskiest, dark purple = safest)"}
st.caption(f"Shape: circles are images, diamonds reports; "
           f"{ui.esc(MEANING.get(colour_by, ''))}. Drag a box (or click a point) to list the "
           "pairs behind it; double-click clears.")

maps = [ctx.heads] + ([compare] if compare != "(none)" else [])
cols = st.columns(len(maps))
selected = []
for heads, col in zip(maps, cols):
    with col:
        points = data.umap_points(ctx.db, ctx.token, ctx.cohort, ctx.model, heads)
        if points.empty:
            ui.empty(f"No UMAP for {ui.esc(logic.heads_name(heads))}: run "
                     f"{ui.command(ui.engine_command('umap', ctx.model, ctx.cohort))}.")
            continue
        key = f"umap_select_{heads}"
        figure, sampled = views.umap_figure(ctx.db, ctx.token, ctx.cohort, ctx.model, heads,
                                            colour_by)
        st.markdown(f"**{ui.esc(logic.heads_name(heads))}**")
        event = st.vega_lite_chart(figure, key=key, on_select="rerun",
                                   selection_mode=(charts.BOX, charts.PICK))
        if sampled:
            st.caption(f"Drawing a fixed random sample of {MAX_ITEMS:,} of "
                       f"{points['image_id'].nunique():,} items (both points of each); a box "
                       "selects every item inside it, drawn or not.")
        # a box selects by its bounds over the whole map, a click by its point
        rows = logic.selected_rows(points, event)
        if rows:
            selected.append((heads, logic.pairs_of(points, rows)))

with st.expander("How to read the map"):
    st.caption("How to read distance: contrastive models place all images in one region and all "
               "reports in another (the *modality gap*), so the map often shows two clouds and "
               "an image is seldom next to its own report. What matters is the position *within* "
               "each cloud: images with similar neighbours lie close together, and so do similar "
               "reports. UMAP keeps neighbourhoods, not distances, so the image-report distance "
               "in the table below says little about risk; the expected rank (colour by rank) is "
               "the measure.")

st.subheader("Selected pairs")
if not selected:
    ui.empty("Nothing selected yet: drag a box over the map, or click a point.")
for heads, pairs in selected:
    st.markdown(f"**{ui.esc(logic.heads_name(heads))}**: {len(pairs):,} items")
    ui.table(pairs, f"umap selection {heads}", column_config={
        "expected_rank": st.column_config.NumberColumn("expected rank", format="%.1f"),
        "gap": st.column_config.NumberColumn("image-report distance", format="%.2f"),
        **{c: st.column_config.NumberColumn(c.replace("_", " "), format="%.2f")
           for c in ("image_x", "image_y", "report_x", "report_y")},
    })
    if len(pairs):
        first = pairs.iloc[0]
        text = data.item(ctx.db, ctx.token, ctx.cohort, str(first["image_id"])) or {}
        st.caption(f"Report of {ui.esc(first['image_id'])} (first selected):")
        ui.report_text(text.get("report_text"), height=140)
