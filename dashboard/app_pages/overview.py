"""Risk overview: how risky is this model, in one number, and why (docs/dashboard.md)."""

from __future__ import annotations

import streamlit as st

from dashboard import data, logic, ui, views

ctx = ui.context()
st.title("Re-linkage risk overview")
ui.require_results(ctx)
ui.caption(ctx)

metrics = data.pool_metrics(ctx.db, ctx.token, ctx.cohort, ctx.model, "original", None)
if metrics.empty:
    ui.empty(f"No attack results with the original heads of {ui.command(ctx.model)} on "
             f"{ui.command(ctx.cohort)}. Run "
             f"{ui.command(ui.engine_command('attack', ctx.model, ctx.cohort))}.")
    st.stop()


def decision_block() -> None:
    """The decision first: threat model, risk level, what the mitigation buys, recommendation."""
    d = views.decision(ctx.db, ctx.token, ctx.cohort, ctx.model)
    if d is None:
        return
    st.subheader("Decision")
    box = st.container(border=True)
    box.markdown(f"**Threat model.** {ui.esc(' '.join(d.threat))}")
    box.markdown(f"**Risk level: {ui.esc(d.risk)}.** {ui.esc(d.risk_text)}")
    box.markdown(f"**What the mitigation buys.** {ui.esc(d.mitigation)}")
    box.markdown(f"**What an adaptive attacker gets back.** {ui.esc(d.adaptive)}")
    box.markdown(f"**Recommendation.** {ui.esc(d.recommendation)}")
    box.caption("The rule that produced the recommendation, and the risk scale's cut points: "
                "docs/decision.md. Held-out pairs, image → report, Recall@1; every interval "
                "is a 95% patient bootstrap, and a change is measured on the same queries.")


decision_block()

# required: one direction is always chosen (a deselected control would fall back silently)
direction = st.segmented_control(
    "Direction", list(logic.DIRECTION_NAMES), default="image_to_report", key="overview_direction",
    format_func=logic.DIRECTION_NAMES.get, required=True)
mine = metrics[(metrics["split"] == "test") & (metrics["direction"] == direction)
               & (metrics["negatives"] == "random") & (metrics["k"] == 1)]
sizes = sorted(int(n) for n in mine["pool_size"].unique())
if not sizes:
    ui.empty("No held-out (test split) results for this direction. The attack evaluates the "
             "`test` split; check the cohort's split column (`python -m engine cohort check`).")
    st.stop()


@st.fragment
def headline_block(model: str, direction: str, sizes: list[int]) -> None:
    """The pool-size picker and the headline: changing N reruns only this block."""
    n = st.selectbox("Pool size N (true report + N-1 others)", sizes, key="overview_n",
                     index=sizes.index(logic.default_pool_size(sizes)),
                     format_func=lambda s: f"{s:,}" + (" (full held-out set)"
                                                       if s == sizes[-1] else ""))
    top = logic.headline(metrics, n, direction=direction)
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Recall@1", logic.percent(top.recall),
              help="Probability that the true item ranks first in a random pool of N.")
    c1.caption(f"95% CI {logic.percent(top.ci_low)} to {logic.percent(top.ci_high)}")
    c2.metric("Lift over chance", logic.times(top.lift),
              help="Recall@1 divided by chance (1/N); its interval is the recall interval over "
                   "chance.")
    # the level is read on the interval's lower end, on the scale of docs/decision.md
    c2.caption(f"95% CI {logic.times(top.lift_low)} to {logic.times(top.lift_high)} · "
               f"{logic.risk_level(top.lift_low)} (lower end)")
    c3.metric("Chance (1/N)", logic.percent(top.chance))
    c4.metric("Held-out queries", f"{top.n_queries:,}")
    st.info(ui.esc(logic.risk_sentence(model, top, direction=direction)),
            icon=":material/warning:")


headline_block(ctx.model, direction, sizes)

st.subheader("Lift over chance vs pool size, every model")
st.caption("Held-out pairs, original heads, Recall@1. Solid: random negatives; dashed: "
           "pathology-matched negatives (distractors with the same 14 labels). Vertical bars: "
           "95% intervals (patient bootstrap); the dotted line is chance (1×).")
# drawn on the server (views.lift_figure): the first page loads no chart component
st.image(views.lift_figure(ctx.db, ctx.token, ctx.cohort, ctx.model, direction))

a, b = st.columns(2)
with a:
    st.subheader("Members vs held-out")
    st.caption(f"{ui.esc(ctx.model)}: Recall@1 vs N for training pairs (members) and held-out "
               "pairs. The gap is memorisation, the part DP bounds.")
    st.image(views.members_figure(ctx.db, ctx.token, ctx.cohort, ctx.model, direction))
with b:
    st.subheader("Ranking summary (full database)")
    summ = views.summary(ctx.db, ctx.token, ctx.cohort, ctx.model)
    if summ.empty:
        ui.empty("No summary metrics stored for this model (rerun the attack stage).")
    else:
        row = summ[(summ["split"] == "held-out")
                   & (summ["direction"] == logic.DIRECTION_NAMES[direction])]
        if len(row):
            r = row.iloc[0]
            m1, m2, m3 = st.columns(3)
            m1.metric("MRR", f"{r['MRR']:.3f}")
            # one decimal, as in the table below (a median of an even count can end in .5); the
            # "of N" goes under it, so the value fits a third of a half column at 1280 px
            m2.metric("Median rank", f"{r['median rank']:,.1f}",
                      help="Median expected rank of the true report among all held-out reports.")
            m2.caption(f"of {int(r['queries']):,} reports")
            m3.metric("Patient top-1", logic.percent(r["patient top-1"]),
                      help="Probability that the top-ranked candidate belongs to the query's "
                           "patient (any of their studies).")
        # the narrow column shows the key figures only (the table fits it at 1280 px)
        ui.static_table(summ.loc[:, ["split", "direction", "MRR", "median rank",
                                     "patient top-1"]], "ranking summary", formats={
            "MRR": "{:.4f}".format, "median rank": "{:,.1f}".format,
            "patient top-1": logic.percent, "chance top-1": logic.percent,
            "queries": "{:,}".format})

st.subheader("The reference paper's four claims on this cohort")
st.caption("Each claim of the reference paper recomputed from this cohort's results: held-out "
           "pairs, image → report, Recall@1 with 95% intervals; the models from least to most "
           "specialised, claims 2-4 on the most specialised. Where a claim does not "
           "reproduce, the verdict says so and why.")
ui.static_table(views.claims(ctx.db, ctx.token, ctx.cohort), "four claims")

st.subheader("All pool metrics of this model")
# Drawn on request: the full table is for researchers, and the grid is the heaviest element a
# first visit would otherwise load (docs/dashboard.md, "Latency").
if st.toggle(f"Show all {len(metrics):,} rows (every split, direction, negatives, N and k)",
             key="overview_all_metrics"):
    ui.table(metrics.drop(columns=["run_id"]), f"pool metrics {ctx.model}", column_config={
        **{c: st.column_config.NumberColumn(format="percent")
           for c in ("recall", "ci_low", "ci_high", "chance")},
        "lift": st.column_config.NumberColumn(format="%.2f"),
    }, height=300)
else:
    ui.download(metrics.drop(columns=["run_id"]), f"pool metrics {ctx.model}")
