"""Privacy / utility: what DP-retrained heads buy and cost (DESIGN §3.7.4)."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data, logic, ui

ctx = ui.context()
st.title("Privacy / utility")
ui.require_results(ctx)
ui.caption(ctx)

runs = data.dp_runs(ctx.db, ctx.token, ctx.cohort, ctx.model)
if runs.empty:
    ui.empty(f"No DP runs for `{ctx.model}` on `{ctx.cohort}` yet. Retrain the projection heads "
             f"with `python -m engine dp --model {ctx.model} --cohort {ctx.cohort} "
             "--epsilons 0.34,1,2,4,8,inf` (or `make demo`).")
    st.stop()

metrics = data.pool_metrics(ctx.db, ctx.token, ctx.cohort, ctx.model, None, 1)
util = data.utility(ctx.db, ctx.token, ctx.cohort, ctx.model)
held = metrics[(metrics["split"] == "test") & (metrics["direction"] == "image_to_report")
               & (metrics["negatives"] == "random")]
if held.empty:
    ui.empty("No held-out attack results for this model yet: run `python -m engine attack "
             f"--model {ctx.model} --cohort {ctx.cohort}`.")
    st.stop()
grid = logic.epsilon_grid(runs["heads"], held["heads"])
chosen = st.select_slider("Heads (ε per privacy unit; `inf` = retrained without DP)", grid,
                          value=grid[0], key="epsilon", format_func=logic.heads_name)
n = int(held["pool_size"].max())
at_n = {h: logic.headline(held[held["heads"] == h], n) for h in grid}
now, orig, inf = at_n.get(chosen), at_n.get("original"), at_n.get("inf")
macro = util[util["label"] == "macro"].set_index("heads")["auroc"].to_dict()

st.subheader(f"At N = {n:,} (full held-out set), {logic.heads_name(chosen)}")
if now is None:
    ui.empty(f"No attack results for {logic.heads_name(chosen)} yet: the DP stage attacks each "
             f"new set of heads (`python -m engine dp --model {ctx.model} --cohort {ctx.cohort} "
             f"--epsilons {chosen}`).")
else:
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Recall@1", logic.percent(now.recall),
              help=f"95% CI {logic.percent(now.ci_low)} to {logic.percent(now.ci_high)}")
    c1.caption(f"95% CI {logic.percent(now.ci_low)} to {logic.percent(now.ci_high)}")
    c2.metric("Lift over chance", logic.times(now.lift))
    c2.caption(f"95% CI {logic.times(now.lift_low)} to {logic.times(now.lift_high)}")
    for col, ref, name in ((c3, orig, "original heads"), (c4, inf, "ε = ∞ heads")):
        red = logic.relative_reduction(now.recall, ref.recall) if ref else float("nan")
        col.metric(f"Drop vs {name}", logic.percent(red),
                   help=f"Relative reduction of Recall@1 against the {name}: "
                        "(reference - this) / reference. Negative means higher than the reference.")

u1, u2, u3, _ = st.columns(4)
u1.metric("Probe macro AUROC", logic.auroc(macro.get(chosen)),
          None if chosen == "original" or "original" not in macro or chosen not in macro
          else f"{100 * (macro[chosen] - macro['original']):+.2f} points vs original")
u2.metric("Macro AUROC, original heads", logic.auroc(macro.get("original")))
u3.metric("Macro AUROC, ε = ∞ heads", logic.auroc(macro.get("inf")))
if not macro:
    ui.empty("No linear-probe utility stored yet (the DP stage writes it).")

left, right = st.columns(2)
with left:
    st.subheader("Privacy / utility frontier")
    axis = st.segmented_control("x axis", ["recall", "lift"], default="recall", key="frontier_x",
                                format_func={"recall": "Recall@1", "lift": "lift"}.get) or "recall"
    front = logic.frontier(metrics, util, pool_size=n)
    if front.empty:
        ui.empty("The frontier needs both attack results and utility per heads.")
    else:
        st.plotly_chart(charts.frontier_plot(front, x=axis, chosen=chosen), key="frontier")
with right:
    st.subheader("Per-label probe AUROC")
    shown = [h for h in dict.fromkeys(["original", chosen]) if h in set(util["heads"])]
    if not shown:
        ui.empty("No per-label utility stored for these heads.")
    else:
        st.plotly_chart(charts.per_label_auroc(util, shown), key="per_label")

st.subheader("Every heads at a glance")
if len(front):
    ui.table(front.drop(columns=["name"]), "privacy utility frontier", column_config={
        "recall": st.column_config.NumberColumn("Recall@1", format="%.4f"),
        "lift": st.column_config.NumberColumn(format="%.2f"),
        "ci_low": st.column_config.NumberColumn(format="%.4f"),
        "ci_high": st.column_config.NumberColumn(format="%.4f"),
        "auroc": st.column_config.NumberColumn("macro AUROC", format="%.4f"),
    })
if len(util):
    wide = util.pivot_table(index="label", columns="heads", values="auroc").reset_index()
    order = {name: i for i, name in enumerate(("macro",) + logic.LABELS)}
    wide = wide.sort_values("label", key=lambda s: s.map(order)).reset_index(drop=True)
    ui.table(wide, "probe auroc per label", column_config={
        h: st.column_config.NumberColumn(logic.heads_name(h), format="%.4f")
        for h in wide.columns if h != "label"})

st.subheader("DP parameters")
st.caption("The guarantee holds per privacy unit (one group of patients, or one pair); one "
           "patient changes one group, so the patient-level guarantee is (2ε, (1+e^ε)δ).")
ui.table(logic.dp_table(runs), "dp parameters")
