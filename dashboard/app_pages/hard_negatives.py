"""Hard negatives: does re-linkage survive distractors with the same findings?

See docs/dashboard.md.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import data, logic, ui, views


# Derived tables, computed once per database version and choice (a widget change elsewhere on
# the page then costs no pandas work); the chart is `views.curves_figure`.
@st.cache_data(show_spinner=False, max_entries=64)
def _groups(db: str, token: str, cohort: str, model: str, heads: str, n: int) -> pd.DataFrame:
    return logic.group_table(data.query_ranks(db, token, cohort, model, heads, "test"), n)


@st.cache_data(show_spinner=False, max_entries=64)
def _still(db: str, token: str, cohort: str, model: str, heads: str, n: int,
           k: int) -> pd.DataFrame:
    return logic.still_relinking(data.query_ranks(db, token, cohort, model, heads, "test"), n, k)


ctx = ui.context()
st.title("Hard negatives")
ui.require_results(ctx)
ui.caption(ctx, heads=True)
st.caption("Matched negatives are distractor reports whose 14-label vector equals the true "
           "report's. If the attack still finds the true report among them, the model links on "
           "more than the findings: wording, devices, comparisons, patient specifics.")

metrics = data.pool_metrics(ctx.db, ctx.token, ctx.cohort, ctx.model, ctx.heads, 1)
curves = logic.lift_curves(metrics[metrics["split"] == "test"])
matched = curves[curves["negatives"] == "matched"]
if matched.empty:
    ui.empty("No matched-negative results for these heads: no query had enough distractors with "
             "its exact label vector, or the attack has not run "
             f"({ui.command(ui.engine_command('attack', ctx.model, ctx.cohort))}).")
    st.stop()

st.subheader("Random vs matched negatives (held-out)")
st.vega_lite_chart(views.curves_figure(ctx.db, ctx.token, ctx.cohort, ctx.model, ctx.heads),
                   key="hard_curves")
st.caption("Queries with fewer than N-1 matched distractors are left out of that N. The last "
           "row is the full held-out set: with random negatives every query's pool is all the "
           "other reports; with matched negatives it is all of that query's own matched "
           "distractors, so its size varies per query (the chart leaves it out, having no single "
           "N) and its chance is the mean of 1/N over the queries.")
full = logic.matched_full(metrics[metrics["split"] == "test"])
ui.table(logic.random_vs_matched(curves, full), "random vs matched", column_config={
    "random Recall@1": st.column_config.NumberColumn(format="percent"),
    "matched Recall@1": st.column_config.NumberColumn(format="percent"),
    "matched lift": st.column_config.NumberColumn(format="%.1fx"),
})

sizes = sorted(int(s) for s in matched.loc[matched["n_queries"] > 0, "pool_size"].unique())
if not sizes:
    ui.empty("Every query has too few matched distractors for any stored N; a larger cohort or "
             "smaller pool sizes in the attack configuration fill this page.")
    st.stop()
n = st.selectbox("Pool size N for the tables below", sizes, key="hard_n",
                 index=sizes.index(logic.default_pool_size(sizes, preferred=10)),
                 format_func=lambda s: f"{s:,}")
ranks = data.query_ranks(ctx.db, ctx.token, ctx.cohort, ctx.model, ctx.heads, "test")

groups = _groups(ctx.db, ctx.token, ctx.cohort, ctx.model, ctx.heads, n)
rests = logic.groups_sentence(groups, n)
if rests:
    st.info(ui.esc(rests), icon=":material/group_work:")
st.subheader(f"By label group, N = {n:,}")
st.caption("Queries grouped by their label vector. Eligible queries have at least N-1 matched "
           "distractors; Recall@1 and lift are over the eligible ones (chance is 1/N).")
ui.table(groups, f"label groups N{n}", column_config={
    "matched Recall@1": st.column_config.NumberColumn(format="percent"),
    "lift": st.column_config.NumberColumn(format="%.1fx"),
})

st.subheader("Images that still re-link")
k = st.segmented_control("Within the top k of their matched distractors", [1, 3, 5],
                         default=1, key="hard_k", required=True)
still = _still(ctx.db, ctx.token, ctx.cohort, ctx.model, ctx.heads, n, k)
ties = logic.tied_winners(ranks, n)
if k == 1:
    st.caption(f"Held-out images whose true report scores strictly higher than every one of their "
               f"matched distractors (and that have at least {n - 1:,} of them): {len(still):,} "
               f"of {len(ranks):,}. Ties are not counted as wins: {ties:,} more images have no "
               "matched distractor above their true report but at least one level with it. "
               "Listed by the true report's rank among all held-out reports: an image can lead "
               "its matched distractors and still rank low among all reports.")
else:
    st.caption(f"Held-out images whose true report ranks within the top {int(k)} of their matched "
               f"distractors (expected rank, ties broken at random; at least {n - 1:,} of "
               f"them): {len(still):,} of {len(ranks):,}. Listed by the true report's rank among "
               "all held-out reports.")
if still.empty:
    ui.empty("No image's true report ranks within the top k of its matched distractors at this "
             "N. Try a smaller N or a larger k.")
    st.stop()
listed = still.assign(**{"label group": logic.label_groups(still)}).loc[
    :, ["image_id", "study_id", "matched_rank", "n_matched", "matched_beaten", "matched_recall",
        "expected_rank", "label group"]]
row = ui.picked("hard_pick", listed["image_id"])  # the pick follows the image, not the position
ui.table(listed, f"still relinking N{n} k{k}", key="hard_pick", select="required",
         column_config={
             "matched_rank": st.column_config.NumberColumn(
                 "rank among matched", format="%.1f",
                 help="Expected rank of the true report among its matched distractors."),
             "n_matched": st.column_config.NumberColumn("matched distractors"),
             "matched_beaten": st.column_config.NumberColumn(
                 "matched distractors beaten", help="Matched distractors scoring strictly "
                                                    "below the true report."),
             "matched_recall": st.column_config.NumberColumn(f"matched Recall@1 at N={n}",
                                                            format="percent"),
             "expected_rank": st.column_config.NumberColumn(
                 f"rank among all {len(ranks):,}", format="%.1f"),
         })
pick = listed.iloc[row or 0]
image_id = str(pick["image_id"])

st.subheader(f"What gives {ui.esc(image_id)} away")
cands = data.candidates(ctx.db, ctx.token, ctx.cohort, ctx.model, ctx.heads, "test",
                        "image_to_report", image_id)
rival = logic.best_wrong(logic.candidate_flags(cands), matched_only=True)
it = data.item(ctx.db, ctx.token, ctx.cohort, image_id) or {}
if rival is None:
    ui.empty("The highest-scoring matched distractor of this image is not in its stored top-20 "
             "candidate list (only the top 20 are kept), so it cannot be shown or compared. "
             "The true report ranks "
             f"{float(pick['expected_rank']):,.1f} among all reports.")
    st.markdown("**True report**")
    ui.report_text(it.get("report_text"))
    st.stop()
only_true, only_rival = logic.evidence_diff(it.get("report_text"), rival["report_text"])
a, b = st.columns(2)
with a:
    st.markdown("**True report**")
    ui.report_text(it.get("report_text"))
with b:
    st.markdown(f"**Highest matched rival** (study {ui.esc(rival['study_id'])}, rank "
                f"{int(rival['rank']):,}, cosine {rival['score']:.4f})")
    ui.report_text(rival["report_text"])
words = pd.DataFrame({"only in the true report": pd.Series(only_true, dtype=object),
                      "only in the rival": pd.Series(only_rival, dtype=object)}).fillna("")
st.caption("Content words one report affirms and the other does not: stop words and negated "
           "mentions ('No pneumothorax') are left out. Same 14 labels, so these are what the "
           "model can use to tell them apart.")
ui.table(words, f"word diff {image_id}")
