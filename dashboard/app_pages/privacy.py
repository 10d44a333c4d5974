"""Privacy / utility: what DP-retrained heads buy and cost (docs/dashboard.md)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import data, logic, ui, views
from engine.core import decision as dec
from engine.core import decompose
from engine.core.names import sort_heads

ctx = ui.context()
st.title("Privacy / utility")
ui.require_results(ctx)
ui.caption(ctx)

runs = data.dp_runs(ctx.db, ctx.token, ctx.cohort, ctx.model)
if runs.empty:
    dp_command = ui.engine_command("dp", ctx.model, ctx.cohort, "--epsilons 0.34,1,2,4,8,inf")
    ui.empty(f"No DP runs for {ui.command(ctx.model)} on {ui.command(ctx.cohort)} yet. Retrain "
             f"the projection heads with {ui.command(dp_command)} (or `make demo`).")
    st.stop()

metrics = data.pool_metrics(ctx.db, ctx.token, ctx.cohort, ctx.model, None, 1)
util = data.utility(ctx.db, ctx.token, ctx.cohort, ctx.model)
held, grid, opened = logic.privacy_view(metrics, runs["heads"])
if held.empty:
    ui.empty("No held-out attack results for this model yet: run "
             f"{ui.command(ui.engine_command('attack', ctx.model, ctx.cohort))}.")
    st.stop()
# the picker holds the default start's sweep (random heads): original heads, then DP heads from
# the strongest privacy to the weakest, then no DP (ε = ∞), opening on the strongest privacy;
# other starts are shown below it, and an adaptive attacker's heads are never in a heads picker
chosen = st.select_slider("Heads (ε per privacy unit; `inf` = retrained without DP)", grid,
                          value=opened, key="epsilon", format_func=logic.heads_name)
n = int(held["pool_size"].max())
at_n = {h: logic.headline(held[held["heads"] == h], n) for h in grid}
now, orig, inf = at_n.get(chosen), at_n.get("original"), at_n.get("inf")
scope = dec.epsilon_scope(chosen, ctx.cohort)
macro = util[util["label"] == "macro"].set_index("heads")["auroc"].to_dict()

st.subheader(f"At N = {n:,} (full held-out set), {ui.esc(logic.heads_name(chosen))}")
if now is None:
    again = ui.engine_command("dp", ctx.model, ctx.cohort, f"--epsilons {chosen}")
    ui.empty(f"No attack results for {ui.esc(logic.heads_name(chosen))} yet: the DP stage "
             f"attacks each new set of heads ({ui.command(again)}).")
else:
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Recall@1", logic.percent(now.recall),
              help="Probability that the true report ranks first among all held-out reports.")
    c1.caption(f"95% CI {logic.percent(now.ci_low)} to {logic.percent(now.ci_high)} · "
               f"{ui.esc(dec.expected_count(now.recall, now.n_queries))} images")
    c2.metric("Lift over chance", logic.times(now.lift))
    c2.caption(f"95% CI {logic.times(now.lift_low)} to {logic.times(now.lift_high)}")
    # the changes as text, not metric cards: "no measurable change" and its interval must wrap
    # rather than be cut at 1280 px
    for col, ref, ref_label, name in ((c3, orig, "original", "original heads"),
                                      (c4, inf, "inf", "ε = ∞ heads")):
        box = col.container(border=True)
        if ref is None or chosen == ref_label:
            box.markdown(f"**Change vs {ui.esc(name)}:** "
                         + ("reference" if ref is not None else "n/a"))
            continue
        change = views.heads_change(ctx.db, ctx.token, ctx.cohort, ctx.model, ref_label, chosen,
                                    n)
        box.markdown(f"**Change vs {ui.esc(name)}:** {ui.esc(dec.change_text(change))}",
                     help=f"Relative change of Recall@1 against the {ui.esc(name)} on the same "
                          "held-out queries, with a 95% interval from one patient bootstrap of "
                          "both; when the interval includes zero the change is not measurable.")
        box.caption(f"reference {logic.percent(ref.recall)}, "
                    f"{ui.esc(dec.expected_count(ref.recall, ref.n_queries))} images")
if scope:
    st.caption(ui.esc(scope))

u1, u2, u3, _ = st.columns(4)
u1.metric("Probe macro AUROC", logic.auroc(macro.get(chosen)),
          None if chosen == "original" or "original" not in macro or chosen not in macro
          else f"{100 * (macro[chosen] - macro['original']):+.2f} points vs original")
if "backbone" in macro:
    u1.caption(f"Frozen backbone (sanity line): {logic.auroc(macro['backbone'])}")
u2.metric("Macro AUROC, original", logic.auroc(macro.get("original")))
u3.metric("Macro AUROC, ε = ∞", logic.auroc(macro.get("inf")))
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
        st.vega_lite_chart(views.frontier_figure(ctx.db, ctx.token, ctx.cohort, ctx.model, n,
                                                 axis, chosen), key="frontier")
with right:
    st.subheader("Per-label probe AUROC")
    shown = [h for h in dict.fromkeys(["original", chosen]) if h in set(util["heads"])]
    if not shown:
        ui.empty("No per-label utility stored for these heads.")
    else:
        st.vega_lite_chart(views.per_label_figure(ctx.db, ctx.token, ctx.cohort, ctx.model,
                                                  tuple(shown)), key="per_label")

st.subheader("Every heads at a glance")
if len(front):
    # percentages as on the cards above (Recall@1 14%, AUROC 83.98%), not raw fractions
    ui.table(front.drop(columns=["name"]), "privacy utility frontier", column_config={
        "recall": st.column_config.NumberColumn("Recall@1", format="percent"),
        "lift": st.column_config.NumberColumn(format="%.1f×"),
        "ci_low": st.column_config.NumberColumn("95% CI low", format="percent"),
        "ci_high": st.column_config.NumberColumn("95% CI high", format="percent"),
        "auroc": st.column_config.NumberColumn("macro AUROC", format="percent"),
    })
if len(util):
    wide = util.pivot_table(index="label", columns="heads", values="auroc").reset_index()
    order = {name: i for i, name in enumerate(("macro",) + logic.LABELS)}
    wide = wide.sort_values("label", key=lambda s: s.map(order)).reset_index(drop=True)
    heads_cols = sort_heads(h for h in wide.columns if h != "label")  # backbone, original, ε...
    wide = wide.loc[:, ["label"] + heads_cols]
    ui.table(wide, "probe auroc per label", column_config={
        h: st.column_config.NumberColumn(logic.heads_name(h), format="percent")
        for h in heads_cols})

starts = [h for h in logic.epsilon_grid(runs["heads"], held["heads"])
          if dec.start_of(h) not in (None, dec.RANDOM)]
if starts:
    st.subheader("Other starts, for comparison")
    st.caption("The same sweep started from other heads; each is compared with the ε = ∞ heads "
               "of its own start. Heads started from the original heads carry the original "
               "heads' training, which the ε does not cover.")
    rows = []
    for h in starts:
        p = logic.headline(held[held["heads"] == h], n)
        if p is None:
            continue
        ref_inf = dec.inf_of(dec.start_of(h))
        vs_o = views.heads_change(ctx.db, ctx.token, ctx.cohort, ctx.model, "original", h, n)
        vs_i = (views.heads_change(ctx.db, ctx.token, ctx.cohort, ctx.model, ref_inf, h, n)
                if h != ref_inf else None)
        rows.append({"heads": logic.heads_name(h), "Recall@1": p.recall,
                     "95% CI low": p.ci_low, "95% CI high": p.ci_high,
                     "vs original": dec.change_text(vs_o),
                     "vs ε = ∞ (same start)": "reference" if vs_i is None
                     else dec.change_text(vs_i),
                     "what ε covers": dec.epsilon_scope(h, ctx.cohort)})
    ui.table(pd.DataFrame(rows), "other starts", column_config={
        c: st.column_config.NumberColumn(format="percent")
        for c in ("Recall@1", "95% CI low", "95% CI high")})

attackers = logic.adaptive_table(held, data.adaptive_runs(ctx.db, ctx.token, ctx.cohort,
                                                          ctx.model), n, at_n.get("original"))
st.subheader("What an attacker who refits the heads gets back")
if attackers.empty:
    ui.empty("No adaptive attacker measured for this model: what an attacker gets back by "
             "refitting the heads on the frozen backbones is unknown.")
else:
    top = attackers.iloc[0]
    st.markdown(ui.esc(
        f"An attacker {top['attacker']}"
        + (f" ({int(top['fit pairs']):,} pairs)" if pd.notna(top["fit pairs"]) else "")
        + f" re-links {logic.percent(top['Recall@1'])} at N = {n:,} "
        f"({logic.times(top['lift'])} chance), {logic.percent(top['share of original'])} of "
        "the original model's rate. A heads-only mitigation protects against the released "
        "heads' own similarity, not against an attacker who refits them."))
    ui.table(attackers, "adaptive attackers", column_config={
        **{c: st.column_config.NumberColumn(format="percent")
           for c in ("Recall@1", "95% CI low", "95% CI high", "share of original")},
        "lift": st.column_config.NumberColumn(format="%.1f×")})

st.subheader("How much of the drop is privacy")
parts = views.decomposition(ctx.db, ctx.token, ctx.cohort, ctx.model)
parts = parts[parts["heads"].map(lambda h: dec.start_of(h) in (None, dec.RANDOM))]
said = decompose.sentences(parts)
if said:
    st.markdown(ui.esc(said[0]))
else:
    ui.empty("The split needs attack results for the original, ε = ∞ and a finite ε heads.")
if len(parts):
    st.caption("Drop of Recall@1 vs the original heads = points from retraining (ε = ∞ vs "
               "original) + points from privacy (ε vs ε = ∞), in points of the original "
               "Recall@1; held-out pairs, image → report, random negatives. The _low/_high "
               "columns are 95% intervals from one patient bootstrap of the three sets of heads "
               "on the same queries; an interval holding zero is no measurable change.")
    ui.table(parts[["heads", "pool", "recall", "ci_low", "ci_high", "lift", "drop_vs_original",
                    "drop_low", "drop_high", "retraining_points", "retraining_low",
                    "retraining_high", "privacy_points", "privacy_low", "privacy_high",
                    "membership_auroc",
                    "membership_tpr", "macro_auroc", "backbone_auroc"]],
             "drop decomposition", column_config={
                 "recall": st.column_config.NumberColumn("Recall@1", format="percent"),
                 "ci_low": st.column_config.NumberColumn("95% CI low", format="percent"),
                 "ci_high": st.column_config.NumberColumn("95% CI high", format="percent"),
                 "lift": st.column_config.NumberColumn(format="%.1f×"),
                 "drop_vs_original": st.column_config.NumberColumn("drop %", format="%.1f"),
                 **{c: st.column_config.NumberColumn(format="%.1f") for c in (
                     "drop_low", "drop_high", "retraining_low", "retraining_high",
                     "privacy_low", "privacy_high")},
                 "retraining_points": st.column_config.NumberColumn("retraining", format="%.1f"),
                 "privacy_points": st.column_config.NumberColumn("privacy", format="%.1f"),
                 "membership_auroc": st.column_config.NumberColumn("membership AUROC",
                                                                   format="%.3f"),
                 "membership_tpr": st.column_config.NumberColumn("TPR at 1% FPR", format="%.3f"),
                 "macro_auroc": st.column_config.NumberColumn("macro AUROC", format="percent"),
                 "backbone_auroc": st.column_config.NumberColumn("backbone", format="percent"),
             })
for other in data.cohorts(ctx.db, ctx.token)["cohort"]:
    if other == ctx.cohort:
        continue
    away = data.pool_metrics(ctx.db, ctx.token, other, ctx.model, None, 1)
    if not away["heads"].astype(str).str.endswith(f"@{ctx.cohort}").any():
        continue
    moved = decompose.decompose(away, utility=data.utility(ctx.db, ctx.token, other, ctx.model),
                                source=ctx.cohort)
    for line in decompose.sentences(moved):
        st.markdown(f"Transferred unchanged to {ui.esc(other)}: {ui.esc(line)}")

chosen_rows = data.dp_selection(ctx.db, ctx.token, ctx.cohort, ctx.model)
if len(chosen_rows):
    st.subheader("Hyper-parameter selection")
    st.caption("Per ε, every candidate was trained on the training patients outside a keyed-hash "
               "validation split and scored by its in-group loss on that split (the held-out "
               "split is never read); the lowest wins. Every candidate's run spends privacy, so "
               "the composed ε (RDP, all candidates) is the guarantee of what is released.")
    ui.table(chosen_rows, "hyper-parameter selection")

st.subheader("DP parameters")
st.caption("The guarantee holds per privacy unit (one group of patients, or one pair); one "
           "patient changes one group, so the patient-level guarantee is (2ε, (1+e^ε)δ). Each ε "
           "covers the head-training steps on the training patients from its start; it never "
           "covers the frozen backbones, and for heads started from the original heads "
           "(label +original) it does not cover the starting heads, which were fitted without "
           "privacy.")
weak = logic.weak_patient_delta(runs)
if len(weak):
    which = ", ".join(f"{logic.heads_name(str(r.heads))} (patient-level δ "
                      f"{float(r.patient_delta):.1e})" for r in weak.itertuples())
    st.warning(f"Weak patient-level guarantee: {ui.esc(which)}. δ bounds the probability that "
               "the ε "
               "guarantee fails outright; above 1e-3 (and above 1 / number of patients) it no "
               "longer protects individual patients. Retrain with a smaller δ or a smaller ε.",
               icon=":material/warning:")
ui.table(logic.dp_table(runs), "dp parameters")
