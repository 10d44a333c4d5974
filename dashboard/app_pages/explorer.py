"""Re-linkage explorer: one image, the reports the attacker would pick, and why.

See docs/dashboard.md.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import data, logic, ui

SHOWN = 500  # rows of the query table (riskiest first); search narrows it

ctx = ui.context()
st.title("Re-linkage explorer")
ui.require_results(ctx)
ui.caption(ctx, heads=True)

c1, c2, c3, c4 = st.columns([1, 1, 2, 1])
split = c1.radio("Queries", ["test", "train"], key="explorer_split", horizontal=True,
                 format_func=lambda s: logic.SPLIT_NAMES[s])
label = c2.selectbox("Finding", ["any"] + list(logic.LABELS), key="explorer_label",
                     help="Only images whose study is labelled positive for this finding.")
text = c3.text_input("Search image id, study id or report words", key="explorer_search",
                     placeholder="e.g. pleural effusion, or an image id",
                     help="Whole words, as a phrase, ignoring case; an id must match exactly. "
                          "% and _ are plain characters, not wildcards.")
skip_negated = c4.toggle("Skip negated mentions", value=True, key="explorer_skip_negated",
                         help='On: "effusion" does not find a report that only says "No '
                              'pleural effusion" or "effusion has resolved".')

ranks = data.query_ranks(ctx.db, ctx.token, ctx.cohort, ctx.model, ctx.heads, split)
if ranks.empty:
    ui.empty(f"No per-query ranks for the {ui.esc(logic.SPLIT_NAMES[split])} split with "
             f"{ui.esc(logic.heads_name(ctx.heads))}. Run "
             f"{ui.command(ui.engine_command('attack', ctx.model, ctx.cohort))} (the DP stage "
             "runs it for retrained heads).")
    st.stop()
ids = (data.search_reports(ctx.db, ctx.token, ctx.cohort, text, skip_negated=skip_negated)
       if text.strip() else None)
found = logic.filter_queries(ranks, label=None if label == "any" else label, ids=ids)
if found.empty:
    ui.empty("No image matches this search and finding filter. Clear the search box or pick "
             "another finding.")
    st.stop()

st.subheader("Images, riskiest first")
st.caption(f"{len(found):,} of {len(ranks):,} images match; the {min(SHOWN, len(found)):,} with "
           "the lowest expected rank of their true report are listed. Select a row to inspect it.")
listed = found.head(SHOWN).reset_index(drop=True)
listed = listed.assign(**{"label group": logic.label_groups(listed)})
columns = ["image_id", "study_id", "patient_id", "expected_rank", "n_greater", "n_tied",
           "n_candidates", "n_matched", "n_matched_greater", "label group"]
# the pick follows the image id, not the row position (ui.picked)
row = ui.picked("explorer_pick", listed["image_id"])
ui.table(listed.loc[:, columns], "explorer queries", key="explorer_pick", select="required",
                 height=280, column_config={
                     "expected_rank": st.column_config.NumberColumn("expected rank", format="%.1f"),
                     "n_candidates": st.column_config.NumberColumn("distractors"),
                     "n_matched": st.column_config.NumberColumn("matched distractors"),
                 })
if len(found) > len(listed):
    # the button above holds the listed rows; this one every image that matches
    ui.download(found.assign(**{"label group": logic.label_groups(found)}).loc[:, columns],
                "explorer all matching images", key="explorer-all")
query = listed.iloc[row or 0]
image_id = str(query["image_id"])
it = data.item(ctx.db, ctx.token, ctx.cohort, image_id) or {}

st.divider()
st.subheader(f"Image {ui.esc(image_id)}")
pic, facts = st.columns([1, 2])
with pic:
    png, why = data.item_thumbnail(it.get("root"), it.get("image_path"))
    if png:
        st.image(png, width="stretch",
                 caption=f"{ui.esc(it.get('view') or '')} · "
                         f"{ui.esc(Path(str(it.get('image_path'))).name)}")
    else:
        ui.empty(f"Image file not available: {ui.esc(why)}. The ranks below are unaffected.")
with facts:
    m = int(query["n_candidates"])
    pool = 100 if m + 1 >= 100 else m + 1
    recall = float(logic.recall_at_1([m], [query["n_greater"]], [query["n_tied"]], pool)[0])
    a, b, c = st.columns(3)
    a.metric("True report's expected rank", f"{query['expected_rank']:,.1f}",
             f"of {m + 1:,} reports", delta_color="off", delta_arrow="off")
    b.metric(f"Recall@1 in a pool of {pool:,}", logic.percent(recall),
             f"{logic.times(recall * pool)} chance", delta_color="off", delta_arrow="off")
    matched = query["n_matched"]
    c.metric("Beaten by matched distractors", f"{int(query['n_matched_greater'] or 0):,}",
             f"of {int(matched or 0):,} with the same labels", delta_color="off",
             delta_arrow="off")
    st.caption(f"Study {ui.esc(query['study_id'])} · patient {ui.esc(query['patient_id'])} · "
               f"findings: {ui.esc(logic.label_group(query))}")
    st.caption("The stored report of this study:")
    ui.report_text(it.get("report_text"), height=160)

cands = data.candidates(ctx.db, ctx.token, ctx.cohort, ctx.model, ctx.heads, split,
                        "image_to_report", image_id)
st.subheader("Reports the attacker ranks highest")
if cands.empty:
    ui.empty("No stored candidate list for this image (the attack stores the top 20 per query; "
             "rerun `python -m engine attack` to fill it).")
    st.stop()
cands = logic.candidate_flags(cands)  # the true report is never a "matched negative"
shown = cands.assign(**{"label group": logic.label_groups(cands),
                        "report": cands["report_text"].fillna("").str.slice(0, 160)})
if not shown["is_true"].any():
    st.caption(f"The true report is not among the stored top {len(shown):,}; its expected rank "
               f"is {query['expected_rank']:,.1f}.")
ui.table(shown.loc[:, ["rank", "score", "is_true", "is_matched", "study_id", "label group",
                       "report"]],
         f"candidates {image_id}", column_config={
             "score": st.column_config.NumberColumn("cosine", format="%.4f"),
             "is_true": st.column_config.CheckboxColumn("true report"),
             "is_matched": st.column_config.CheckboxColumn("matched negative",
                                                           help="Same 14-label vector as the true "
                                                                "report (a hard negative)."),
             "report": st.column_config.TextColumn("report (start)", width="large"),
         })

st.subheader("True report vs the best wrong one")
wrong = logic.best_wrong(cands)
true_rows = cands[cands["is_true"].astype(bool)]
left, right = st.columns(2)
with left:
    where = (f"rank {int(true_rows['rank'].iloc[0]):,}" if len(true_rows)
             else f"expected rank {query['expected_rank']:,.1f}")
    st.markdown(f"**True report** ({ui.esc(where)})")
    ui.report_text(it.get("report_text"))
with right:
    if wrong is None:
        ui.empty("No wrong report in the stored list.")
    else:
        flag = ", matched negative" if bool(wrong["is_matched"]) else ""
        st.markdown(f"**Best wrong report** (rank {int(wrong['rank']):,}, cosine "
                    f"{wrong['score']:.4f}{ui.esc(flag)})")
        ui.report_text(wrong["report_text"])
if wrong is not None:
    findings = logic.compare_findings(it, wrong)
    if findings.empty:
        st.caption("Neither report mentions any finding.")
    else:
        ui.table(findings, f"findings {image_id}", column_config={
            "true_report": "true report", "other_report": "best wrong report"})
