"""The README's results tables, written from a results database (``python -m engine readme``).

The README's measured figures live between two markers, ``<!-- results:begin -->`` and
``<!-- results:end -->`` (other blocks, such as the `study` run's, have their own name:
``--block``); `write_readme` replaces what is between them by tables built here from the
database, so the README says what the code measured and nothing else. The text depends only on
the database (the commit and date it states are those recorded by the runs that produced the
figures, not the current checkout or clock), so rewriting the README from the same database
changes nothing, and ``--check`` can tell whether the README still matches. ``--check`` leaves
out the provenance line (engine version, dates, CPU, numerics), so a database made on another
machine, another day, checks the figures alone.

The tables, for the cohort the models were audited on and, when there is one, the external
cohort its DP heads were transferred to:

* **the reference paper's four claims**, each recomputed from the rows with a verdict
  (`engine.core.claims`);
* **the ladder**: every model with results on the cohort (original heads, held-out pairs,
  image -> report, k = 1): lift at every stored N with its 95% interval, matched-negative lift and
  the members' lift at the headline N;
* **DP on the projection heads** of the model with DP runs: per set of heads the DP parameters,
  Recall@1 and lift at N = 10,000 (the paper's DP pool size; the largest stored N when it is
  not stored), the change against the original and the epsilon = inf heads with intervals, lift
  at the headline N, probe macro AUROC and the membership signal, and the paper's figures;
* **transfer**: the same heads applied unchanged to the external cohort;
* **the stages of a study run** (`engine.study`), when the database holds one: per stage what it
  did, wall and CPU seconds and peak memory.

Rows are read through the ``shown_*`` views (docs/storage.md: the rows of the run shown for
each model, cohort and heads) when the database has them, else from the tables themselves.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from engine import store
from engine.core import format as fmt
from engine.core import names
from engine.core.claims import PAPER_DP_POOL
from engine.core.decompose import PAPER_DP
from engine.errors import ConfigError

BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"
HEADLINE_N = 100  # the paper's headline pool size
DP_N = PAPER_DP_POOL  # the pool size of the paper's DP figure (-61.8% Recall@1 at epsilon 0.34)


def markers(block: str = "results") -> tuple[str, str]:
    """The begin and end markers of a named block (``results``: the demo's tables)."""
    if not re.fullmatch(r"[a-z][a-z0-9-]*", block):
        raise ConfigError(f"--block {block!r}: expected lower-case letters, digits and '-'")
    return f"<!-- {block}:begin -->", f"<!-- {block}:end -->"

_EPOCHS = re.compile(r"\[(\d+) epochs? on cohort ")


@dataclass(frozen=True)
class _Source:
    """Where each kind of row is read from: the ``shown_*`` view, or the table itself."""

    metrics: str
    dp_runs: str
    utility: str
    membership: str | None
    heads_column: str


def _source(con) -> _Source:
    names_ = {r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables").fetchall()}
    shown = "shown_relink_metrics" in names_

    def pick(table: str) -> str | None:
        if shown and f"shown_{table}" in names_:
            return f"shown_{table}"
        return table if table in names_ else None

    return _Source(metrics=pick("relink_metrics") or "relink_metrics",
                   dp_runs=pick("dp_runs") or "dp_runs", utility=pick("utility") or "utility",
                   membership=pick("membership"), heads_column="heads_key" if shown else "heads")


def _frame(con, sql: str, params: list) -> pd.DataFrame:
    """A query's rows; without an ORDER BY, sorted on every column (DuckDB returns rows in any
    order, and the README must come out byte for byte the same from the same database)."""
    frame = con.execute(sql, params).df()
    if "order by" not in sql.lower() and len(frame) > 1:
        keys = frame.astype(str).apply(tuple, axis=1)
        frame = frame.loc[keys.sort_values(kind="stable").index].reset_index(drop=True)
    return frame


def _lift_ci(row) -> str:
    """``8.4 (6.5–10.3)``: the lift and its interval (the recall interval over chance)."""
    if row is None:
        return fmt.NA
    lift = f"{row['lift']:.1f}" if fmt.finite(row["lift"]) else fmt.NA
    chance = row["chance"]
    if fmt.finite(row["ci_low"]) and fmt.finite(row["ci_high"]) and fmt.finite(chance) and chance:
        return f"{lift} ({row['ci_low'] / chance:.1f}–{row['ci_high'] / chance:.1f})"
    return lift


def _one(frame: pd.DataFrame, **where) -> pd.Series | None:
    rows = frame
    for key, value in where.items():
        rows = rows[rows[key] == value]
    return None if rows.empty else rows.iloc[0]


def _epochs(description) -> str:
    found = _EPOCHS.search(description or "") if isinstance(description, str) else None
    return found.group(1) if found else "–"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _headline_n(sizes) -> int | None:
    sizes = sorted(int(s) for s in sizes)
    if not sizes:
        return None
    return HEADLINE_N if HEADLINE_N in sizes else sizes[-1]


def _ladder(con, src: _Source, cohort: str) -> tuple[str, list[str]]:
    metrics = _frame(con, f"""
        SELECT m.model, m.split, m.negatives, m.pool_size, m.recall, m.chance, m.lift, m.ci_low,
               m.ci_high, m.n_queries, m.n_excluded, m.run_id,
               md.specialization, md.description
        FROM {src.metrics} m LEFT JOIN models md ON md.model = m.model
        WHERE m.cohort = ? AND m.{src.heads_column} = 'original' AND m.k = 1
          AND m.direction = 'image_to_report'""", [cohort])
    if metrics.empty:
        return "", []
    held = metrics[(metrics["split"] == "test") & (metrics["negatives"] == "random")]
    sizes = sorted(int(s) for s in held["pool_size"].unique())
    # The members' pools are drawn from the train split, whose full size differs: compare the
    # splits at N = 100, else at the largest N both have.
    members = metrics[(metrics["split"] == "train") & (metrics["negatives"] == "random")]
    common = sorted(set(sizes) & {int(s) for s in members["pool_size"].unique()})
    n_h = HEADLINE_N if HEADLINE_N in sizes else (common[-1] if common else _headline_n(sizes))
    header = ["model", "epochs"]
    for n in sizes:
        full = bool((held[held["pool_size"] == n]["n_queries"] == n).all())
        header.append(f"lift N={n:,}" + (" (all held-out)" if full else "") + " (95% CI)")
    header += [f"matched lift N={n_h:,} (queries)", f"members lift N={n_h:,}"]
    order = (metrics.drop_duplicates("model")
             .sort_values(["specialization", "model"], na_position="last")["model"])
    rows = []
    for model in order:
        m = metrics[metrics["model"] == model]
        row = [model, _epochs(m["description"].iloc[0])]
        row += [_lift_ci(_one(m, split="test", negatives="random", pool_size=n)) for n in sizes]
        matched = _one(m, split="test", negatives="matched", pool_size=n_h)
        row.append(fmt.NA if matched is None
                   else f"{_lift_ci(matched)} ({int(matched['n_queries']):,})")
        members = _one(m, split="train", negatives="random", pool_size=n_h)
        row.append(_lift_ci(members))
        rows.append(row)
    text = (f"**The ladder** on cohort `{cohort}`: held-out pairs, image → report, random "
            "negatives unless stated, k = 1, original heads; lift over chance with its 95% "
            "interval (bootstrap over patients). Matched negatives share the true report's 14 "
            "labels; queries without enough of them are left out of that N.\n\n"
            + _table(header, rows))
    return text, sorted(set(metrics["run_id"].astype(str)))


def _dp_model(con, src: _Source, cohort: str) -> str | None:
    rows = con.execute(
        f"SELECT d.model FROM {src.dp_runs} d LEFT JOIN models md ON md.model = d.model "
        "WHERE d.cohort = ? ORDER BY md.specialization DESC NULLS LAST, d.model LIMIT 1",
        [cohort]).fetchall()
    return rows[0][0] if rows else None


def _dp(con, src: _Source, cohort: str, model: str) -> tuple[str, list[str]]:
    """One DP table per start (the default start first), then the adaptive attacker beside."""
    from engine.core.decision import split_label
    from engine.dp.start import coverage

    dp = _frame(con, f"SELECT * FROM {src.dp_runs} WHERE cohort = ? AND model = ?",
                [cohort, model])
    if "heads" not in dp.columns or dp["heads"].isna().any():
        dp["heads"] = [names.epsilon_label(e) for e in dp["epsilon"]]
    metrics = _frame(con, f"""
        SELECT {src.heads_column} AS heads, pool_size, recall, chance, lift, ci_low, ci_high,
               n_queries, run_id
        FROM {src.metrics}
        WHERE cohort = ? AND model = ? AND split = 'test' AND direction = 'image_to_report'
          AND negatives = 'random' AND k = 1""", [cohort, model])
    utility = _frame(con, f"SELECT heads, auroc, run_id FROM {src.utility} "
                          "WHERE cohort = ? AND model = ? AND label = 'macro'", [cohort, model])
    membership = (pd.DataFrame(columns=["heads", "auroc"]) if src.membership is None else
                  _frame(con, f"SELECT heads, auroc, run_id FROM {src.membership} "
                              "WHERE cohort = ? AND model = ?", [cohort, model]))
    if metrics.empty:
        return "", []
    stored = {int(n) for n in metrics["pool_size"].unique()}
    # The reductions at the paper's N = 10,000 when stored, else at the largest stored N.
    n_full = DP_N if DP_N in stored else max(stored)
    n_h = _headline_n(stored)
    at_full = metrics[metrics["pool_size"] == n_full].drop_duplicates("heads").set_index("heads")
    at_h = metrics[metrics["pool_size"] == n_h].drop_duplicates("heads").set_index("heads")
    macro = utility.drop_duplicates("heads").set_index("heads")["auroc"]
    signal = membership.drop_duplicates("heads").set_index("heads")["auroc"]
    dp_rows = dp.drop_duplicates("heads").set_index("heads")
    starts: dict[str, list[str]] = {}
    for h in names.sort_heads(dp_rows.index):
        if h in at_full.index:
            starts.setdefault(split_label(h)[1] or "random", []).append(h)

    def recall(h, column="recall", at=at_full):
        return at[column].get(h)

    paired = src.heads_column == "heads_key"  # per-query ranks of the shown runs are readable
    ranks: dict[str, pd.DataFrame] = {}

    def versus(h, reference, at=at_full) -> str:
        """The paired patient-bootstrap change of Recall@1 against `reference` (as on the
        dashboard and in claim 4); without per-query ranks, the heads' Recall@1 interval
        against the reference's point estimate."""
        from engine.core import decision
        from engine.verdicts import held_out_ranks

        if paired:
            for key in (h, reference):
                if key not in ranks:
                    ranks[key] = held_out_ranks(con, cohort, model, key)
            if len(ranks[h]) and len(ranks[reference]):
                return decision.change_text(decision.heads_change(ranks, reference, h, n_full))
        cut = fmt.relative_reduction(recall(h, at=at), recall(reference, at=at))
        low = fmt.relative_reduction(recall(h, "ci_high", at), recall(reference, at=at))
        high = fmt.relative_reduction(recall(h, "ci_low", at), recall(reference, at=at))
        if not fmt.finite(cut):
            return fmt.NA
        span = f"{-100 * high:+.0f}% to {-100 * low:+.0f}%"
        if fmt.finite(low) and fmt.finite(high) and low <= 0 <= high:
            return f"no measurable change ({span})"
        return f"{fmt.reduction(cut)} ({span})"

    header = ["heads", "group ε", "patient ε (δ)", "σ", f"R@1 N={n_full:,} (95% CI)",
              f"lift N={n_full:,} (95% CI)", "vs original (CI)", "vs ε = ∞ of this start (CI)"]
    header += [f"lift N={n_h:,} (95% CI)"] if n_h != n_full else []
    header += ["probe macro AUROC", "membership AUROC"]
    where = (f"N = {n_full:,}" if n_full == DP_N
             else f"the largest stored N ({n_full:,}; N = {DP_N:,} is not stored)")
    parts = [f"**DP on the projection heads** of `{model}` (trained on `{cohort}`'s train split), "
             f"attacked on held-out pairs (image → report, random negatives, k = 1) at {where}"
             + (f" and at N = {n_h:,}" if n_h != n_full else "")
             + "; changes are relative changes of Recall@1 with their paired 95% interval from "
               "one bootstrap over patients (both sets of heads resampled together, as on the "
               "dashboard); an interval that holds 0 reads *no measurable change*. " + PAPER_DP]
    order = sorted(starts, key=lambda s: (s != "random", s != "original", s))
    for start in order:
        inf = next((h for h in starts[start] if names.heads_epsilon(h) == float("inf")), None)
        rows = []
        for h in (["original"] if "original" in at_full.index else []) + starts[start]:
            d = dp_rows.loc[h] if h in dp_rows.index else None
            if d is None:
                group = patient = sigma = "–"
            elif h == inf:
                group, patient, sigma = "∞ (no DP)", "–", fmt.general(d["noise_multiplier"])
            else:
                group = fmt.general(d["epsilon"])
                patient = (f"{fmt.general(d['patient_epsilon'])} "
                           f"({fmt.general(d['patient_delta'], 2)})")
                sigma = fmt.general(d["noise_multiplier"])
            vs_original = "–" if h == names.ORIGINAL else versus(h, names.ORIGINAL)
            vs_inf = "–" if h in (names.ORIGINAL, inf) or inf is None else versus(h, inf)
            r_ci = (f"{fmt.percent(recall(h))} ({fmt.percent(recall(h, 'ci_low'))[:-1]}–"
                    f"{fmt.percent(recall(h, 'ci_high'))})")
            row = [names.heads_short(h), group, patient, sigma, r_ci,
                   _lift_ci(at_full.loc[h]), vs_original, vs_inf]
            if n_h != n_full:
                row.append(_lift_ci(at_h.loc[h] if h in at_h.index else None))
            rows.append(row + [fmt.auroc(macro.get(h)), fmt.auroc(signal.get(h))])
        cover = coverage(start)
        title = {"random": "From seeded random heads (the default start, for release)",
                 "original": "From the model's own heads (for comparison only)"}.get(
            start, f"From heads fitted on `{start.partition(':')[2]}` (public start)")
        text = (f"*{title}.* What ε covers: {cover['covers']}. Not covered: "
                f"{cover['not_covered']}.")
        if cover["caveat"]:
            text += f" **Caveat: {cover['caveat']}.**"
        parts += ["", text, "", _table(header, rows)]
    trained = dp_rows[[names.heads_epsilon(h) not in (None, float("inf")) for h in dp_rows.index]]
    if len(trained):
        parts += ["", _dp_parameters(trained)]
    if names.BACKBONE in macro.index:
        parts += ["", "Frozen-backbone probe (the sanity line, which DP cannot move): "
                      f"{fmt.auroc(macro.get(names.BACKBONE))} macro AUROC."]
    adaptive, adaptive_ids = _adaptive(con, src, cohort, model, at_h, n_h)
    if adaptive:
        parts += ["", adaptive]
    run_ids = set(metrics["run_id"].astype(str)) | set(dp["run_id"].astype(str))
    return "\n".join(parts), sorted(run_ids | set(adaptive_ids))


def _adaptive(con, src: _Source, cohort: str, model: str, at_h: pd.DataFrame,
              n_h: int) -> tuple[str, list[str]]:
    """The adaptive attacker beside the released heads (engine/adaptive.py), at the headline N."""
    has = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'adaptive_runs'"
                      ).fetchall()[0][0]
    if not has:
        return "", []
    runs = _frame(con, "SELECT * FROM adaptive_runs WHERE cohort = ? AND model = ? "
                       "ORDER BY source DESC, known_fraction, heads", [cohort, model])
    runs = runs.drop_duplicates("heads", keep="last")
    runs = runs[runs["heads"].isin(at_h.index)]
    if runs.empty or "original" not in at_h.index:
        return "", []
    base = at_h.loc["original"]
    released = [h for h in names.sort_heads(at_h.index)
                if names.heads_epsilon(h) is not None and "+" not in h]
    rows = [["original heads (released model)", "–", _pct_ci(base), _lift_ci(base), "100%"]]
    for h in released:
        r = at_h.loc[h]
        rows.append([f"released DP heads, {names.heads_short(h)}", "–", _pct_ci(r),
                     _lift_ci(r), fmt.percent(r["recall"] / base["recall"])
                     if base["recall"] else fmt.NA])
    lines = []
    for _, a in runs.iterrows():
        r = at_h.loc[a["heads"]]
        share = r["recall"] / base["recall"] if base["recall"] else math.nan
        fit = (f"{int(a['n_fit_pairs']):,} public pairs of `{a['public_cohort']}`"
               if a["source"] == "public" else
               f"{int(a['n_fit_pairs']):,} known held-out pairs "
               f"({100 * float(a['known_fraction']):g}% of the patients)")
        rows.append([f"**adaptive attacker**, {names.heads_short(a['heads'])}", fit,
                     _pct_ci(r), _lift_ci(r), fmt.percent(share)])
        lines.append(f"an attacker with {fit} re-links {fmt.percent(r['recall'])} at "
                     f"N = {n_h:,} ({fmt.general(r['lift'], 2)}x chance), "
                     f"{fmt.percent(share)} of the original model's rate")
    said = "; ".join(lines)
    text = (f"**The attacker who adapts** (`{model}` on `{cohort}`, held-out pairs, image → "
            f"report, random negatives, Recall@1 at N = {n_h:,}): heads fitted without privacy "
            "on the released frozen backbones, from a random start, by the engine's own heads "
            "training; a known-pairs attacker is scored on the other held-out patients only. "
            + said[:1].upper() + said[1:]
            + ". A heads-only mitigation protects against the released "
            "heads' own similarity, not against an attacker who refits the heads.\n\n"
            + _table(["heads", "attacker's data", f"R@1 N={n_h:,} (95% CI)",
                      f"lift N={n_h:,} (95% CI)", "share of the original rate"], rows))
    ids = set(runs["attack_run_id"].astype(str)) | set(runs["run_id"].astype(str))
    return text, sorted(ids)


def _pct_ci(row) -> str:
    return (f"{fmt.percent(row['recall'])} ({fmt.percent(row['ci_low'])[:-1]}–"
            f"{fmt.percent(row['ci_high'])})")


def _dp_parameters(dp: pd.DataFrame) -> str:
    """One line of the DP settings the rows share (unit, clipping, steps, sampling, accountant)."""

    def values(column: str, digits: int = 3) -> str:
        if column not in dp.columns:
            return fmt.NA
        raw = sorted(set(dp[column].dropna()), key=lambda v: (isinstance(v, str), v))
        found = list(dict.fromkeys(fmt.general(v, digits) if not isinstance(v, str) else v
                                   for v in raw))
        return ", ".join(found) if found else fmt.NA

    return (f"DP settings: privacy unit {values('privacy_unit')}, clipping norm C = "
            f"{values('max_grad_norm')}, {values('steps')} steps at sampling rate "
            f"q = {values('sample_rate')}, group-level δ = {values('delta', 2)}, "
            f"accountant {values('accountant')}; patient-level ε and δ by group privacy "
            "(docs/dp.md).")


def _transfer(con, src: _Source, cohort: str, external: str, model: str) -> tuple[str, list[str]]:
    if src.heads_column == "heads_key":
        where, params = ("(m.heads_key = 'original' OR m.heads_cohort = ?)", [cohort])
    else:
        where, params = ("TRUE", [])
    metrics = _frame(con, f"""
        SELECT m.heads, m.pool_size, m.recall, m.chance, m.lift, m.ci_low, m.ci_high, m.run_id
        FROM {src.metrics} m
        WHERE m.cohort = ? AND m.model = ? AND m.split = 'test' AND m.k = 1
          AND m.direction = 'image_to_report' AND m.negatives = 'random' AND {where}""",
                     [external, model, *params])
    if metrics.empty:
        return "", []
    utility = _frame(con, f"SELECT heads, auroc FROM {src.utility} "
                          "WHERE cohort = ? AND model = ? AND label = 'macro'", [external, model])
    n_h = _headline_n(metrics["pool_size"].unique())
    at_h = metrics[metrics["pool_size"] == n_h].drop_duplicates("heads").set_index("heads")
    macro = utility.drop_duplicates("heads").set_index("heads")["auroc"]
    heads = [h for h in names.sort_heads(at_h.index) if h != names.BACKBONE]
    rows = [[names.heads_short(h), fmt.percent(at_h.loc[h, "recall"]), _lift_ci(at_h.loc[h]),
             fmt.auroc(macro.get(h))] for h in heads]
    text = (f"**Transfer**: the heads of `{model}` trained on `{cohort}`, applied unchanged to "
            f"the external cohort `{external}` (every pair held-out), at N = {n_h:,}.\n\n"
            + _table(["heads", f"R@1 N={n_h:,}", f"lift N={n_h:,} (95% CI)",
                      "probe macro AUROC"], rows))
    if names.BACKBONE in macro.index:
        text += f"\n\nFrozen-backbone probe on `{external}`: {fmt.auroc(macro.get('backbone'))}."
    return text, sorted(set(metrics["run_id"].astype(str)))


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _claims(con, src: _Source, cohort: str, external: str | None) -> str:
    """The paper's four claims as the dashboard's overview measures them (`engine.verdicts`)."""
    from engine.core.claims import claims_rows, strongest_model
    from engine.verdicts import claims_of

    if src.heads_column != "heads_key":
        return ""  # a database older than the shown_* views: no claims table
    results = claims_of(con, cohort, external=external)
    if all(r.measured == "n/a" for r in results):
        return ""
    models = _frame(con, "SELECT model, specialization FROM models WHERE model IN (SELECT "
                         "DISTINCT model FROM shown_relink_metrics WHERE cohort = ?)", [cohort])
    top = strongest_model(list(models["model"]),
                          dict(zip(models["model"], models["specialization"])))
    rows = claims_rows(results)
    header = ["claim", "the paper", "measured here", "verdict", "why"]
    body = [[_cell(r["claim"]), _cell(r["paper"]), _cell(r["measured"]), _cell(r["verdict"]),
             _cell(r["why"])] for r in rows]
    return (f"**The reference paper's four claims** on `{cohort}` (held-out pairs, image → report, "
            f"Recall@1), each recomputed from the stored rows of the most specialised model "
            f"`{top}`:\n\n" + _table(header, body))


SEEDS_BLOCK = "seed-spread"  # the block `python -m engine seeds` fills (its own: a fresh demo
# database has no seed rows, and `readme --check` of the results block must pass on it)


def seed_markdown(db: Path, *, cohort: str = "site-a") -> str:
    """The markdown of the seed-spread block (`python -m engine seeds`)."""
    con = store.connect_read(Path(db))
    try:
        text = _seed_spread(con, cohort)
    finally:
        con.close()
    if not text:
        raise ConfigError(f"{db}: no seed_verdicts rows for cohort {cohort!r} (run "
                          "`python -m engine seeds` first)")
    return text


def _seed_spread(con, cohort: str) -> str:
    """The paper's claims over training seeds (`python -m engine seeds`): each key figure's value
    per seed and its range, each verdict with how many seeds give it."""
    if not store.table_exists(con, "seed_verdicts"):
        return ""
    # the stored column ``finding`` holds the claim's number (a public name, kept: store.py)
    rows = _frame(con, "SELECT seed, finding AS claim, title, verdict, figures_json, "
                       "code_version FROM seed_verdicts WHERE cohort = ? ORDER BY finding, seed",
                   [cohort])
    if rows.empty:
        return ""
    seeds = sorted(int(s) for s in rows["seed"].unique())
    n = len(seeds)
    verdicts, figures = [], []
    for (number, title), group in rows.groupby(["claim", "title"], sort=True):
        counts = group["verdict"].value_counts()
        said = "; ".join(f"{v}: {c} of {n}" for v, c in counts.items())
        if len(counts) == 1:
            said = f"{counts.index[0]} in all {n} seeds"
        else:
            said = f"**differs between seeds**: {said}"
        verdicts.append([f"{number}. {_cell(title)}", said])
        by_seed = {int(s): json.loads(f or "{}") for s, f in zip(group["seed"],
                                                                 group["figures_json"])}
        keys = sorted(dict.fromkeys(k for f in by_seed.values() for k in f), key=_natural)
        for key in keys:
            values = [by_seed.get(s, {}).get(key) for s in seeds]
            shown = [_seed_figure(key, v) for v in values]
            finite_ = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
            span = (f"{_seed_figure(key, min(finite_))} to {_seed_figure(key, max(finite_))}"
                    if finite_ else "–")
            figures.append([f"{number}", _cell(key), *shown, span])
    versions = sorted(set(rows["code_version"].dropna().astype(str)))
    return (f"**The paper's claims over {n} training seeds** (`python -m engine seeds`: the ladder "
            "and the DP sweep retrained with each seed on the same phantom cohort; seed 0 is "
            "the demo above; measured as above; engine "
            f"{', '.join(f'`{v}`' for v in versions)}):\n\n"
            + _table(["claim", "verdict over the seeds"], verdicts) + "\n\n"
            + _table(["claim", "figure", *[f"seed {s}" for s in seeds], "range"], figures))


def _natural(key: str) -> tuple:
    """Sort key that reads numbers as numbers: ``N=100`` before ``N=1,000`` before ``N=1,471``."""
    parts = re.split(r"(\d[\d,]*(?:\.\d+)?)", key)
    return tuple((1, float(p.replace(",", ""))) if i % 2 else (0, p) for i, p in enumerate(parts))


def _seed_figure(key: str, value) -> str:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "–"
    if key.startswith("lift") or key.startswith("matched lift"):
        return f"{value:.1f}x"
    if key.startswith("AUROC"):
        return f"{value:+.2f}"
    return f"{value:+.1%}" if "change" in key else f"{value:.0%}"


def _study_stages(con) -> tuple[str, list[str]]:
    """The stages of the latest `engine study` run (wall time, CPU time, peak memory)."""
    runs = _frame(con, "SELECT run_id, config_json, message, finished_at FROM runs "
                       "WHERE stage = 'study' ORDER BY finished_at, run_id", [])
    if runs.empty:
        return "", []
    configs = [json.loads(c) for c in runs["config_json"]]
    latest = configs[-1].get("settings")
    keep = [i for i, c in enumerate(configs) if c.get("settings") == latest]

    def figure(msg: dict, key: str) -> str:
        value = msg.get(key)
        return f"{value:,.0f}" if isinstance(value, int | float) and math.isfinite(value) else "–"

    rows, totals = [], {"seconds": 0.0, "cpu_seconds": 0.0}
    peak = 0.0
    for i in keep:
        try:
            msg = json.loads(runs["message"].iloc[i] or "{}")
        except json.JSONDecodeError:
            msg = {}
        for key in totals:
            totals[key] += float(msg.get(key) or 0.0)
        peak = max(peak, float(msg.get("peak_mb") or 0.0))
        rows.append([_cell(configs[i].get("study_stage", "?")), _cell(msg.get("what", "")),
                     figure(msg, "seconds"), figure(msg, "cpu_seconds"), figure(msg, "peak_mb")])
    rows.append(["**all**", f"{len(keep)} stages", f"{totals['seconds']:,.0f}",
                 f"{totals['cpu_seconds']:,.0f}", f"{peak:,.0f}"])
    text = ("**Stages of the study run** (`engine study`: wall time, CPU time of the process and "
            "its finished children, peak resident memory of the process tree, sampled):\n\n"
            + _table(["stage", "what", "wall s", "CPU s", "peak MB"], rows))
    return text, [str(runs["run_id"].iloc[i]) for i in keep]


PROVENANCE = "_Written by `python -m engine readme` from "


def _provenance(con, run_ids: list[str], db_name: str) -> str:
    """Which engine, when, on which CPU and with which numerics the figures were computed."""
    if not run_ids:
        return ""
    marks = ", ".join("?" for _ in run_ids)
    runs = _frame(con, f"SELECT code_version, finished_at, config_json FROM runs "
                       f"WHERE run_id IN ({marks})", run_ids)
    versions = sorted(set(runs["code_version"].dropna().astype(str)))
    finished = pd.to_datetime(runs["finished_at"]).dropna()
    dates = sorted({d.strftime("%Y-%m-%d") for d in finished})
    when = (dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}") if dates else "unknown"
    envs = []
    for text in runs["config_json"].dropna():
        try:
            envs.append(json.loads(text).get("environment") or {})
        except (json.JSONDecodeError, AttributeError):
            continue
    cpus = sorted({str(e["cpu"]) for e in envs if e.get("cpu")})
    pinned = [e for e in envs if e.get("numerics") == "pinned"]
    machine = f" on {', '.join(cpus)}" if cpus else ""
    if pinned and len(pinned) == len(envs):
        e = pinned[0]
        numerics = (f" with pinned numerics (ATen `{e.get('aten_cpu_capability')}`, MKL "
                    f"`{e.get('mkl_cbwr')}`, oneDNN `{e.get('onednn_max_cpu_isa')}`, "
                    f"{e.get('train_threads')} training threads), so they hold on any x86-64 "
                    "CPU with AVX2 (docs/reproducibility.md)")
    elif pinned:
        numerics = f" ({len(pinned)} of {len(envs)} runs with pinned numerics)"
    else:
        numerics = " without pinned numerics (reproducible on the same machine only)"
    return (f"{PROVENANCE}`{db_name}`: figures computed by engine "
            f"{', '.join(f'`{v}`' for v in versions) or 'of unknown version'} "
            f"(version+commit), runs finished {when}{machine}{numerics}. `readme --check` "
            "compares everything in this block but this line._")


def _without_provenance(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith(PROVENANCE))


def results_markdown(db: Path, *, cohort: str = "site-a", external: str | None = "site-b") -> str:
    """The markdown that goes between the README's results markers.

    Args:
        db: A results database.
        cohort: The cohort the models were audited (and the DP heads trained) on.
        external: The cohort the DP heads were transferred to; None or absent: no transfer table.

    Raises:
        ConfigError: the database has no attack results for `cohort`.
    """
    con = store.connect_read(Path(db))
    try:
        src = _source(con)
        ladder, run_ids = _ladder(con, src, cohort)
        if not ladder:
            raise ConfigError(f"{db}: no attack results for cohort {cohort!r} (run the demo or "
                              "`python -m engine attack` first, or pick another --cohort)")
        parts = [_claims(con, src, cohort, external), ladder]
        model = _dp_model(con, src, cohort)
        if model is not None:
            text, ids = _dp(con, src, cohort, model)
            if text:
                parts.append(text)
                run_ids += ids
            if external:
                text, ids = _transfer(con, src, cohort, external, model)
                if text:
                    parts.append(text)
                    run_ids += ids
        text, ids = _study_stages(con)
        if text:
            parts.append(text)
            run_ids += ids
        parts.append(_provenance(con, sorted(set(run_ids)), Path(db).name))
    finally:
        con.close()
    return "\n\n".join(p for p in parts if p)


def replace_block(text: str, block: str, *, where: str = "README", name: str = "results") -> str:
    """`text` with what lies between the markers of block `name` replaced by `block`.

    Raises:
        ConfigError: the markers are missing, repeated or out of order.
    """
    begin, end = markers(name)
    starts, ends = text.count(begin), text.count(end)
    if starts != 1 or ends != 1 or text.index(begin) > text.index(end):
        raise ConfigError(f"{where}: expected one {begin} line followed by one {end} line "
                          f"(found {starts} and {ends})")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{block.strip()}\n{end}{tail}"


def write_readme(db: Path, readme: Path, *, check: bool = False, cohort: str = "site-a",
                 external: str | None = "site-b", block: str = "results") -> bool:
    """Rewrite the README's block `block` (default ``results``) from `db`; with `check`, compare.

    Returns:
        True when the README differs from what the database gives (and, unless `check`, was
        rewritten); False when it already matched.

    Raises:
        ConfigError: unreadable README, missing markers, or no results for `cohort`.
    """
    readme = Path(readme)
    try:
        current = readme.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--readme {readme}: cannot read ({exc.strerror or exc})") from exc
    text = (seed_markdown(db, cohort=cohort) if block == SEEDS_BLOCK
            else results_markdown(db, cohort=cohort, external=external))
    wanted = replace_block(current, text, where=str(readme), name=block)
    if wanted == current or (check and _without_provenance(wanted)
                             == _without_provenance(current)):
        return False
    if not check:
        tmp = readme.with_name(readme.name + ".tmp")
        tmp.write_text(wanted, encoding="utf-8")
        tmp.replace(readme)
    return True
