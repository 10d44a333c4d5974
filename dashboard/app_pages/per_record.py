"""Per-record risk: every held-out image's risk, its distribution, and the pairing ROC.

The way membership audits report per-record risk (docs/dashboard.md): a score per image (the
true report's expected rank, and the probability that it ranks first in a random pool of N), the
distribution of that score, and the ROC of the decision "is this image-report pair a true pair?"
with its true-positive rate at 0.1% and 1% false-positive rate. The CSV holds every query.
"""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data, logic, ui
from engine.core import decision as dec

ctx = ui.context()
st.title("Per-record risk")
ui.require_results(ctx)
ui.caption(ctx, heads=True)

ranks = data.query_ranks(ctx.db, ctx.token, ctx.cohort, ctx.model, ctx.heads, "test")
if ranks.empty:
    ui.empty("No per-query attack results for these heads: run "
             f"{ui.command(ui.engine_command('attack', ctx.model, ctx.cohort))}.")
    st.stop()
metrics = data.pool_metrics(ctx.db, ctx.token, ctx.cohort, ctx.model, ctx.heads, 1)
sizes = sorted(int(s) for s in metrics.loc[(metrics["split"] == "test")
                                           & (metrics["negatives"] == "random"),
                                           "pool_size"].unique()) or [len(ranks)]
n = st.selectbox("Pool size N for the risk score", sizes, key="record_n",
                 index=sizes.index(logic.default_pool_size(sizes)),
                 format_func=lambda s: f"{s:,}")
records = dec.per_record(ranks, n)
fpr, tpr = dec.pairing_roc(ranks["n_candidates"], ranks["n_greater"], ranks["n_tied"])

c1, c2, c3, c4 = st.columns(4)
c1.metric("TPR at 0.1% FPR", logic.percent(dec.tpr_at(fpr, tpr, 0.001)),
          help="Share of true pairs accepted when 0.1% of wrong pairs are.")
c2.metric("TPR at 1% FPR", logic.percent(dec.tpr_at(fpr, tpr, 0.01)))
c3.metric("Pairing AUROC", logic.auroc(dec.auc(fpr, tpr)))
c4.metric("Held-out images", f"{len(records):,}")
st.caption("The pairing decision declares an image-report pair true when the report ranks "
           "within the image's top r candidates among all held-out reports (ties broken at "
           "random); the ROC runs over r, every wrong pair a negative. Computed exactly from the "
           "stored rank counts.")

left, right = st.columns(2)
with left:
    st.subheader("Risk per image")
    st.vega_lite_chart(charts.risk_histogram(records, n).to_dict(), key="record_hist")
    st.caption(f"Probability that the image's own report ranks first in a random pool of "
               f"{n:,}; the dashed line is chance (1/N).")
with right:
    st.subheader("Pairing ROC")
    st.vega_lite_chart(charts.roc_curve(fpr, tpr).to_dict(), key="record_roc")
    st.caption("Dashed lines at 0.1% and 1% false-positive rate; the grey diagonal is chance.")

st.subheader("Every held-out image")
shown = records.loc[:, ["image_id", "study_id", "patient_id", "expected_rank", "risk_at_n",
                        "n_candidates"]]
listed = shown.head(500)
st.caption(f"The {len(listed):,} riskiest of {len(shown):,} are listed; the CSV below holds "
           f"all {len(shown):,}.")
st.dataframe(listed, hide_index=True, width="stretch", height=300, column_config={
    "expected_rank": st.column_config.NumberColumn("expected rank", format="%.1f"),
    "risk_at_n": st.column_config.NumberColumn(f"risk at N={n:,}", format="percent"),
    "n_candidates": st.column_config.NumberColumn("distractors")})
ui.download(shown, f"per record risk {ctx.model} N{n}", key="per-record-all")
