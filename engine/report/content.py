"""Gathers one model × cohort audit from DuckDB into the report document (a JSON-ready dict).

The document is the single source of every renderer: the JSON file *is* the document, and the
HTML and PDF lay out the same values and the same sentences (`engine.report.outline`). It holds
plain JSON types only: non-finite numbers (NaN, and infinities such as the epsilon of the
non-private ``inf`` heads, whose label ``"inf"`` says so) are ``null``.

Rules the report applies, written down here because the numbers depend on them:

* **Headline.** Held-out split (``test``), image → report, random negatives, k = 1, original
  heads, at N = 100 when stored, otherwise at the largest stored pool size (the whole held-out
  set, as the dashboard does). Lift intervals are the Recall@1 interval divided by chance.
* **Synthetic cohort.** A cohort is flagged synthetic when (1) ``README.txt`` in its root starts
  with a line saying ``SYNTHETIC`` or ``PHANTOM`` (what the phantom generator writes), or else
  (2) its name or site contains ``phantom`` or ``synthetic``. When neither holds and the root
  can be read, it is taken as real; when the root cannot be read and the name says nothing, the
  flag is ``null`` (unknown) and the report says that it could not be checked. Format is not
  evidence: phantom cohorts use the real MIMIC-CXR-JPG and CheXpert Plus layouts on purpose.
* **DP grid.** One row per heads: original, ε = ∞, then finite ε from the largest (least
  private) to the smallest. Recall@1 and lift are taken at the largest stored N (the whole
  held-out set); relative reduction is ``(R_ref − R) / R_ref`` at that N.
* **What is shown.** Every figure is read through the store's ``shown_*`` views
  (`engine.store.VIEWS`): for each (model, cohort, heads, training cohort of the heads) the rows
  of the latest valid run, the same rows the dashboard shows.
* **Transfer.** Attack results of the same model on another cohort C with heads trained on this
  cohort: the rows' ``heads_cohort`` names the training cohort. Rows written before that column
  existed (schema version 1) fall back to the attack run's config key ``heads_cohort``, then to:
  heads on C count as transferred from this cohort when C has no ``dp_runs`` rows of its own for
  the model and this cohort has DP heads of the same label. The original heads on C are shown
  alongside as the reference.
* **Examples.** Report texts are quoted only for synthetic cohorts (by default): an audit of a
  real cohort must not copy patient narratives into a compliance file.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from engine import __version__, store
from engine.core import names
from engine.core.labels import CHEXPERT_LABELS
from engine.core.names import epsilon_label
from engine.errors import ConfigError, StoreError
from engine.report import text as fmt

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1.2"
TITLE = "Re-linkage privacy audit"
PREFERRED_POOL_SIZE = 100
HELD_OUT, MEMBERS = "test", "train"
I2R, R2I = "image_to_report", "report_to_image"
MAX_EXAMPLES = 3
EXCERPT_CHARS = 360
SYNTHETIC_WORDS = ("phantom", "synthetic")
SOURCE_KEYS = ("heads_cohort", "heads_from", "source_cohort")


# ------------------------------------------------------------------------------ public


def build_document(
    db: Path,
    *,
    model: str,
    cohort: str,
    examples: bool | None = None,
    generated_at: datetime | None = None,
) -> dict:
    """Read everything the report shows for (model, cohort) and return the document.

    Args:
        db: The results database (opened read-only).
        model: A registered model name, or the spec of a registered model, or a model name that
            has results without a ``models`` row.
        cohort: A registered cohort name.
        examples: Quote example report texts; ``None`` means only for a synthetic cohort.
        generated_at: Timestamp written into the document (default: now, UTC).

    Raises:
        ConfigError: the model or the cohort is unknown to this database (the message names it
            and lists the known ones).
        StoreError: the database is missing, locked or lacks the public tables.
    """
    data = _read(Path(db), model, cohort)
    return _assemble(data, Path(db), examples, generated_at or datetime.now(UTC))


def clean(value):
    """Recursively turn a value into plain JSON types; non-finite floats become ``None``."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.isoformat()
    if isinstance(value, str):
        return value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


# ------------------------------------------------------------------------------ reading


class _Data:
    """Everything read from the database for one report (frames fully fetched)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def _read(db: Path, model: str, cohort: str) -> _Data:
    con = store.connect_read(db)
    try:
        def q(sql: str, *params) -> pd.DataFrame:
            try:
                return con.execute(sql, list(params)).df()
            except duckdb.CatalogException as exc:
                raise StoreError(f"{db}: not a complete results database ({exc})") from exc

        cohorts = q("SELECT * FROM cohorts ORDER BY cohort")
        if cohort not in set(cohorts["cohort"]):
            known = ", ".join(cohorts["cohort"]) or "none"
            raise ConfigError(f"cohort {cohort!r} is not registered in {db} (known: {known})")
        models = q("SELECT * FROM models ORDER BY model")
        name = _resolve_model(q, db, models, model)
        version = q("SELECT max(version) AS v FROM schema_version")["v"].iloc[0]
        return _Data(
            model=name,
            asked_model=model,
            cohort=cohort,
            cohort_row=cohorts[cohorts["cohort"] == cohort].iloc[0].to_dict(),
            model_row=(models[models["model"] == name].iloc[0].to_dict()
                       if name in set(models["model"]) else None),
            db_version=None if pd.isna(version) else int(version),
            splits=q("SELECT split, count(*) AS n_items, count(DISTINCT patient_id) AS n_patients "
                     "FROM items WHERE cohort = ? AND selected GROUP BY split ORDER BY split",
                     cohort),
            # Own heads of every cohort's rows are kept apart from heads transferred in: this
            # cohort's rows with its own heads, and other cohorts' rows with heads trained here.
            metrics=q("SELECT * FROM shown_relink_metrics WHERE model = ? AND (heads = "
                      "'original' OR heads_cohort IS NULL OR heads_cohort = ?)", name, cohort),
            context=q("SELECT m.model, m.pool_size, m.recall, m.ci_low, m.ci_high, m.chance, "
                      "m.lift, m.n_queries, d.specialization FROM shown_relink_metrics m "
                      "LEFT JOIN models d ON d.model = m.model WHERE m.cohort = ? "
                      "AND m.heads = 'original' AND m.split = ? AND m.direction = ? "
                      "AND m.negatives = 'random' AND m.k = 1", cohort, HELD_OUT, I2R),
            summary=q("SELECT * FROM shown_relink_summary WHERE model = ? AND cohort = ? AND "
                      "(heads_cohort IS NULL OR heads_cohort = cohort)", name, cohort),
            dp=q("SELECT * FROM shown_dp_runs WHERE model = ?", name),
            utility=q("SELECT * FROM shown_utility WHERE model = ? AND cohort = ? AND "
                      "(heads_cohort IS NULL OR heads_cohort = cohort)", name, cohort),
            runs=q("SELECT * FROM valid_runs WHERE model = ? AND run_id IN (SELECT run_id FROM "
                   "shown_runs UNION SELECT run_id FROM shown_dp_runs UNION SELECT run_id FROM "
                   "shown_utility UNION SELECT run_id FROM shown_relink_metrics) "
                   "ORDER BY stage, finished_at", name),
            examples_frame=_read_examples(q, name, cohort),
            ranks=_read_ranks(q, con, name, cohort),
            adaptive_runs=(q("SELECT * FROM adaptive_runs WHERE model = ? AND cohort = ?",
                             name, cohort) if store.table_exists(con, "adaptive_runs")
                           else pd.DataFrame(columns=["heads", "n_fit_pairs"])),
        )
    finally:
        con.close()


def _read_ranks(q, con, model: str, cohort: str) -> dict[str, pd.DataFrame]:
    """Held-out image -> report rank counts per heads of this cohort (the shown runs), with the
    query's patient: what the paired patient bootstrap of every change reads."""
    if not store.table_exists(con, "relink_ranks"):
        return {}
    frame = q(
        "SELECT m.heads_key AS heads, r.query_id, i.patient_id, r.n_candidates, r.n_greater, "
        "r.n_tied, r.n_matched, r.n_matched_greater, r.n_matched_tied, "
        + ", ".join(f'i."{c}"' for c in CHEXPERT_LABELS) + " FROM relink_ranks r "
        "JOIN (SELECT DISTINCT run_id, heads_key FROM shown_relink_metrics WHERE cohort = ? "
        "      AND model = ? AND split = ? AND direction = ?) m ON m.run_id = r.run_id "
        "LEFT JOIN items i ON i.cohort = r.cohort AND i.selected AND i.image_id = r.query_id "
        "WHERE r.cohort = ? AND r.model = ? AND r.split = ? AND r.direction = ?",
        cohort, model, HELD_OUT, I2R, cohort, model, HELD_OUT, I2R)
    frame["patient_id"] = frame["patient_id"].fillna(frame["query_id"])
    return {str(h): g.drop_duplicates("query_id").reset_index(drop=True)
            for h, g in frame.groupby("heads")}


def _resolve_model(q, db: Path, models: pd.DataFrame, model: str) -> str:
    if model in set(models["model"]):
        return model
    by_spec = models[models["spec"] == model]
    if len(by_spec):
        return str(by_spec["model"].iloc[0])
    with_results = q("SELECT DISTINCT model FROM shown_relink_metrics UNION "
                     "SELECT DISTINCT model FROM shown_dp_runs ORDER BY 1")
    if model in set(with_results["model"]):
        return model
    known = sorted(set(models["model"]) | set(with_results["model"]))
    raise ConfigError(f"model {model!r} is not registered in {db} and has no results there "
                      f"(known: {', '.join(known) or 'none'})")


def _read_examples(q, model: str, cohort: str) -> pd.DataFrame:
    """Top-2 candidates of held-out image → report queries (original heads), with texts."""
    return q(
        "SELECT t.query_id, t.rank, t.candidate_id, t.score, t.is_true, t.is_matched, "
        "r.report_text FROM shown_relink_topk t "
        "LEFT JOIN (SELECT study_id, any_value(report_text) AS report_text FROM items "
        "           WHERE cohort = ? GROUP BY study_id) r ON r.study_id = t.candidate_id "
        "WHERE t.model = ? AND t.cohort = ? AND t.heads = 'original' AND t.split = ? "
        "AND t.direction = ? AND t.rank <= 2 ORDER BY t.query_id, t.rank",
        cohort, model, cohort, HELD_OUT, I2R)


# ------------------------------------------------------------------------------ assembling


def _assemble(d: _Data, db: Path, examples: bool | None, generated_at: datetime) -> dict:
    from engine.runs import code_version

    cohort = _cohort_section(d)
    missing: list[str] = []
    attack_cfg, attack_run = _attack_config(d)
    dp_cfg = _dp_config(d)
    heads_order = _heads_order(d)
    headline = _headline(d, missing)
    decision = _decision_section(d, headline)
    doc = {
        "schema_version": SCHEMA_VERSION,
        "title": TITLE,
        "generated_at": generated_at.isoformat(timespec="seconds"),
        "engine": {"version": __version__, "code_version": code_version()},
        "database": {"path": str(db), "schema_version": d.db_version},
        "model": _model_section(d),
        "cohort": cohort,
        "method": _method_section(d, attack_cfg, attack_run, dp_cfg),
        "headline": headline,
        "decision": decision,
        "lift_vs_n": _lift_section(d, missing),
        "linkage": _linkage_section(d, missing),
        "members": _members_section(d, headline, heads_order, missing),
        "privacy": _privacy_section(d, heads_order, missing),
        "transfer": _transfer_section(d, headline),
        "context": _context_section(d, headline),
        "examples": _examples_section(d, cohort, examples),
        "caveats": [],
        "missing": missing,
        "provenance": _provenance(d),
    }
    doc["caveats"] = _caveats({**doc, "_attack_message": (attack_run or {}).get("message")},
                              attack_cfg, dp_cfg)
    return clean(doc)


def _decision_section(d: _Data, headline: dict) -> dict:
    """Threat model, risk level on the lift's lower bound, mitigation, adaptive attacker and
    the recommendation (`engine.core.decision`, docs/decision.md), at the headline N."""
    from engine.core import decision

    n = headline.get("pool_size")
    metrics = d.metrics[d.metrics["cohort"] == d.cohort]
    if "heads_cohort" in metrics:
        metrics = metrics[metrics["heads_cohort"].isna() | (metrics["heads_cohort"] == d.cohort)]
    found = (decision.decide_from(d.model, d.cohort, metrics, d.ranks, d.adaptive_runs, int(n))
             if n else None)
    if found is None:
        return {"available": False, "model": d.model, "pool_size": None, "threat_model": [],
                "risk_level": "unknown", "risk": "", "mitigation": "", "adaptive": "",
                "recommendation": "No attack results: run the attack before deciding.",
                "rule": "docs/decision.md", "scale": []}
    return {"available": True, **decision.decision_dict(found),
            "side_by_side": _side_by_side(d, metrics, int(n))}


def _side_by_side(d: _Data, metrics: pd.DataFrame, n: int) -> list[dict]:
    """Every released set of heads (original, every DP epsilon of every start) and every
    adaptive attacker at the headline N: Recall@1 with its interval, lift, share of the
    original heads' rate (issue "The attacker who adapts": shown side by side)."""
    from engine.core import decision

    original = decision.point_from(metrics, "original", n)

    def row(heads: str, kind: str, p, attacker: str = "", fit=None) -> dict:
        share = (p.recall / original.recall if original is not None and original.recall
                 else None)
        return {"heads": heads, "kind": kind, "attacker": attacker, "fit_pairs": fit,
                "recall": p.recall, "ci_low": p.ci_low, "ci_high": p.ci_high, "lift": p.lift,
                "share_of_original": share}

    rows = []
    released = [h for h in sort_heads(metrics["heads"].astype(str).unique())
                if not decision.is_adaptive(h)]
    for h in released:
        p = decision.point_from(metrics, h, n)
        if p is not None:
            rows.append(row(h, "released", p))
    table = decision.adaptive_table(metrics, d.adaptive_runs, n, original)
    for r in table.to_dict("records"):
        p = decision.point_from(metrics, r["heads"], n)
        rows.append(row(r["heads"], "adaptive", p, r["attacker"], r["fit pairs"]))
    return rows


def _matched_groups(d: _Data, pool_size: int | None) -> list[dict]:
    """The label groups the matched figure at N rests on (original heads): eligible queries
    (at least N - 1 matched distractors) per group, most first."""
    from engine.core.claims import matched_groups

    ranks = d.ranks.get("original")
    if ranks is None or not pool_size:
        return []
    return [{"group": g, "eligible": e, "queries": q}
            for g, e, q in matched_groups(ranks, int(pool_size))]


def _leak_note(message) -> str:
    """The attack run's note on patients in several splits (`attack.stage.leak_message`)."""
    if isinstance(message, str) and "patient-disjoint" in message:
        return message.split(", so held-out")[0]
    return ""


def _model_section(d: _Data) -> dict:
    row = d.model_row or {}
    spec = row.get("spec")
    level = row.get("specialization")
    return {
        "name": d.model,
        "requested_as": d.asked_model,
        "registered": d.model_row is not None,
        "spec": spec,
        "specialization": None if level is None or pd.isna(level) else int(level),
        "description": row.get("description"),
    }


def _cohort_section(d: _Data) -> dict:
    row = d.cohort_row
    synthetic, evidence = synthetic_flag(row)
    return {
        "name": d.cohort,
        "format": row.get("format"),
        "site": row.get("site"),
        "root": row.get("root"),
        "n_patients": row.get("n_patients"),
        "n_studies": row.get("n_studies"),
        "n_images": row.get("n_images"),
        "n_skipped": row.get("n_skipped"),
        "registered_at": row.get("created_at"),
        "splits": [
            {"split": r.split, "name": fmt.SPLIT_NAMES.get(r.split, r.split),
             "n_items": int(r.n_items), "n_patients": int(r.n_patients)}
            for r in d.splits.itertuples()
        ],
        "synthetic": synthetic,
        "synthetic_evidence": evidence,
    }


def synthetic_flag(row: dict) -> tuple[bool | None, str]:
    """Whether a ``cohorts`` row is a synthetic (phantom) cohort, and the evidence (module doc)."""
    root = row.get("root")
    readable = False
    if isinstance(root, str) and root:
        readme = Path(root) / "README.txt"
        try:
            first = readme.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            first_line = first[0].strip() if first else ""
            readable = True
            if any(w in first_line.lower() for w in SYNTHETIC_WORDS):
                return True, f"README.txt in the cohort root says: {first_line[:120]!r}"
        except FileNotFoundError:
            readable = Path(root).is_dir()
        except OSError:
            readable = False
    for field in ("cohort", "site"):
        value = row.get(field)
        if isinstance(value, str) and any(w in value.lower() for w in SYNTHETIC_WORDS):
            return True, f"the cohort {'name' if field == 'cohort' else field} {value!r} says so"
    if readable:
        return False, ("no synthetic marker: the cohort root's README.txt does not say phantom "
                       "or synthetic, and neither does its name or site")
    return None, (f"could not be checked: the cohort root {root!r} is not readable from here and "
                  "the cohort's name and site carry no synthetic marker")


def _json(text) -> dict | None:
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _attack_config(d: _Data) -> tuple[dict | None, dict | None]:
    runs = d.runs[(d.runs["stage"] == "attack") & (d.runs["cohort"] == d.cohort)]
    for run in runs.itertuples():
        cfg = _json(run.config_json)
        if cfg is not None and cfg.get("heads", "original") == "original":
            return cfg, run._asdict()
    if len(runs):
        run = runs.iloc[0]
        return _json(run["config_json"]), run.to_dict()
    return None, None


def _dp_rows(d: _Data, cohort: str | None = None) -> pd.DataFrame:
    dp = d.dp[d.dp["cohort"] == (cohort or d.cohort)].copy()
    if dp.empty:
        return dp.assign(label=pd.Series(dtype=object))
    dp["label"] = [_dp_label(r) for r in dp.to_dict("records")]
    return dp


def _dp_label(row: dict) -> str:
    heads = row.get("heads")
    if isinstance(heads, str) and heads:
        return heads
    for key in ("target_epsilon", "epsilon"):
        value = row.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return epsilon_label(float(value))
    return "unknown"


def _dp_config(d: _Data) -> dict | None:
    dp = _dp_rows(d)
    if dp.empty:
        return None
    run_ids = list(dict.fromkeys(dp["run_id"].astype(str)))
    runs = d.runs[d.runs["run_id"].isin(run_ids)]
    config = next((c for c in map(_json, runs["config_json"]) if c), None)
    membership = {}
    for message in runs["message"]:
        parsed = _json(message)
        if parsed and all(isinstance(v, dict) for v in parsed.values()):
            membership.update(parsed)
    return {"run_ids": run_ids, "config": config, "membership": membership}


def _heads_order(d: _Data) -> list[str]:
    """Heads of this model on this cohort: original, inf, then epsilon from large to small."""
    labels = set(d.metrics.loc[d.metrics["cohort"] == d.cohort, "heads"].astype(str))
    labels |= set(_dp_rows(d)["label"]) | {"original"}
    from engine.core.decision import is_adaptive

    return sort_heads(h for h in labels if not is_adaptive(h))


def sort_heads(labels) -> list[str]:
    """original, inf, then finite epsilon labels from the largest to the smallest, then others."""
    return [h for h in names.sort_heads(labels, descending=True) if h != names.BACKBONE]


def _metric(d: _Data, *, cohort=None, heads="original", split=HELD_OUT, direction=I2R,
            negatives="random", k=1) -> pd.DataFrame:
    m = d.metrics
    return m[(m["cohort"] == (cohort or d.cohort)) & (m["heads"] == heads) & (m["split"] == split)
             & (m["direction"] == direction) & (m["negatives"] == negatives) & (m["k"] == k)
             ].sort_values("pool_size").drop_duplicates("pool_size", keep="last")


def _at(frame: pd.DataFrame, pool_size) -> dict | None:
    rows = frame[frame["pool_size"] == pool_size]
    return None if rows.empty else rows.iloc[0].to_dict()


def _point(row: dict | None) -> dict:
    """Recall, interval, chance and lift (with its interval) of a relink_metrics row."""
    if row is None:
        return {"recall": None, "ci_low": None, "ci_high": None, "chance": None, "lift": None,
                "lift_low": None, "lift_high": None, "n_queries": None, "n_excluded": None}
    chance = row.get("chance")
    ok = fmt.finite(chance) and chance > 0
    return {
        "recall": row.get("recall"), "ci_low": row.get("ci_low"), "ci_high": row.get("ci_high"),
        "chance": chance, "lift": row.get("lift"),
        "lift_low": row["ci_low"] / chance if ok and fmt.finite(row.get("ci_low")) else None,
        "lift_high": row["ci_high"] / chance if ok and fmt.finite(row.get("ci_high")) else None,
        "n_queries": row.get("n_queries"), "n_excluded": row.get("n_excluded"),
    }


def headline_pool_size(sizes) -> int | None:
    """N = 100 when stored, else the largest stored pool size."""
    sizes = sorted(int(s) for s in sizes)
    if not sizes:
        return None
    return PREFERRED_POOL_SIZE if PREFERRED_POOL_SIZE in sizes else sizes[-1]


def _headline(d: _Data, missing: list[str]) -> dict:
    frame = _metric(d)
    base = {"split": HELD_OUT, "direction": I2R, "negatives": "random", "k": 1,
            "heads": "original"}
    n = headline_pool_size(frame["pool_size"])
    if n is None:
        sentence = (f"No attack results for {d.model} on {d.cohort} (held-out pairs, image → "
                    f"report, original heads): the risk could not be measured. Run `python -m "
                    f"engine attack --model {d.model} --cohort {d.cohort}`.")
        missing.append("Attack results (original heads, held-out pairs): not in the database, "
                       "so no headline, lift curve or members comparison.")
        return {**base, "available": False, "sentence": sentence, "risk_level": "unknown",
                "pool_size": None, "full_database": None, **_point(None)}
    full = int(frame["pool_size"].max())
    p = _point(_at(frame, n))
    pool = (f"the whole held-out set of {n:,} reports" if n == full
            else f"a pool of {n:,} held-out reports")
    sentence = (f"An attacker holding {d.model} and {pool} finds an image's own report "
                f"{fmt.percent(p['recall'])} of the time, {fmt.times(p['lift'])} chance "
                f"(95% CI {fmt.percent_range(p['ci_low'], p['ci_high'])}; "
                f"{fmt.times_range(p['lift_low'], p['lift_high'])} chance). Guessing would "
                f"succeed {fmt.percent(p['chance'])} of the time.")
    return {**base, "available": True, "sentence": sentence,
            # on the lower end of the lift's interval, as the decision reads it (docs/decision.md)
            "risk_level": fmt.risk_level(p["lift_low"]), "pool_size": n,
            "full_database": n == full,
            **p}


def _lift_section(d: _Data, missing: list[str]) -> dict:
    rows = []
    for direction in (I2R, R2I):
        frames = {neg: _metric(d, direction=direction, negatives=neg)
                  for neg in ("random", "matched")}
        full = max((int(f["pool_size"].max()) for f in frames.values() if len(f)), default=None)
        sizes = sorted(set().union(*(set(f["pool_size"].astype(int)) for f in frames.values())))
        for n in sizes:
            for neg, frame in frames.items():
                row = _at(frame, n)
                if row is None:
                    continue
                rows.append({"direction": direction, "negatives": neg, "pool_size": n,
                             "full_database": n == full,
                             "pool_varies": bool(neg == "matched" and n == full),
                             **_point(row)})
    notes = [
        "Held-out pairs, original heads, k = 1. The last N of each direction is the whole "
        "held-out set.",
        "With matched negatives at the whole held-out set, each query's pool is all the reports "
        "that share its 14 labels, so N varies per query; that point is in the table, not on "
        "the curve.",
    ]
    excluded = [r for r in rows if r["negatives"] == "matched" and (r["n_excluded"] or 0) > 0]
    if excluded:
        worst = max(excluded, key=lambda r: r["n_excluded"])
        notes.append(
            f"Matched pools need N − 1 reports with the query's label vector; queries with fewer "
            f"are left out of that N and counted (up to {worst['n_excluded']:,} at N = "
            f"{worst['pool_size']:,}).")
    if not rows:
        notes = ["No attack results for the original heads on the held-out pairs."]
    elif not any(r["negatives"] == "matched" and fmt.finite(r["recall"]) for r in rows):
        missing.append("Pathology-matched negatives: no N with enough matched distractors.")
    # the N the summary quotes (the largest fixed matched N with a figure): which label groups
    # the figure rests on
    quoted = [r for r in rows if r["direction"] == I2R and r["negatives"] == "matched"
              and fmt.finite(r["lift"]) and not r["pool_varies"]]
    groups = {"pool_size": None, "groups": [], "text": ""}
    if quoted:
        from engine.core.claims import groups_text

        n = quoted[-1]["pool_size"]
        found = _matched_groups(d, n)
        text = groups_text([(g["group"], g["eligible"], g["queries"]) for g in found])
        groups = {"pool_size": n, "groups": found,
                  "text": f"The matched figure at N = {n:,} {text}." if text else ""}
        if text:
            notes.append(groups["text"])
    return {"available": bool(rows), "rows": rows, "notes": notes, "matched_groups": groups}


def _linkage_section(d: _Data, missing: list[str]) -> dict:
    s = d.summary[d.summary["heads"] == "original"]
    rows = []
    for (split, direction), group in s.groupby(["split", "direction"], sort=True):
        by = {r["metric"]: r for r in group.to_dict("records")}

        def val(metric, field="value", by=by):
            return by.get(metric, {}).get(field)

        rows.append({
            "split": split, "direction": direction,
            "n_queries": max((r.get("n_queries") or 0) for r in by.values()),
            "mrr": val("mrr"), "mrr_ci_low": val("mrr", "ci_low"),
            "mrr_ci_high": val("mrr", "ci_high"),
            "median_rank": val("median_rank"),
            "patient_top1": val("patient_top1"),
            "patient_top1_ci_low": val("patient_top1", "ci_low"),
            "patient_top1_ci_high": val("patient_top1", "ci_high"),
            "chance_top1": val("chance_top1"),
        })
    rows.sort(key=lambda r: (r["split"] != HELD_OUT, r["split"], r["direction"]))
    if not rows:
        missing.append("Ranking summary (MRR, median rank, patient-level linkage): not stored.")
    return {
        "available": bool(rows), "rows": rows,
        "notes": ["Whole split as the candidate set, random negatives, original heads. Patient "
                  "top-1 is the probability that the top-ranked candidate belongs to the query's "
                  "patient (any of their studies): linkage to the person, not only the study."],
    }


def _members_section(d: _Data, headline: dict, heads_order: list[str],
                     missing: list[str]) -> dict:
    n = headline.get("pool_size")
    rows = []
    for heads in heads_order:
        held = _at(_metric(d, heads=heads), n) if n else None
        mem = _at(_metric(d, heads=heads, split=MEMBERS), n) if n else None
        if held is None and mem is None:
            continue
        ph, pm = _point(held), _point(mem)
        gap = (pm["recall"] - ph["recall"]
               if fmt.finite(pm["recall"]) and fmt.finite(ph["recall"]) else None)
        rows.append({"heads": heads,
                     "held_out": {k: ph[k] for k in ("recall", "ci_low", "ci_high", "lift",
                                                     "n_queries")},
                     "members": {k: pm[k] for k in ("recall", "ci_low", "ci_high", "lift",
                                                    "n_queries")},
                     "gap": gap})
    dp = _dp_config(d)
    membership = []
    for heads, m in (dp or {}).get("membership", {}).items():
        membership.append({"heads": str(heads), "auroc": m.get("auroc"),
                           "tpr_at_fpr": m.get("tpr_at_fpr"), "fpr": m.get("fpr"),
                           "n_members": m.get("n_members"), "n_nonmembers": m.get("n_nonmembers")})
    order = {h: i for i, h in enumerate(sort_heads([m["heads"] for m in membership]))}
    membership.sort(key=lambda m: order.get(m["heads"], 99))
    notes = ["Members are the training pairs of the heads (the train split); held-out pairs were "
             "never trained on. A gap between the two is memorisation, the part DP bounds."]
    if not any(fmt.finite(r["members"]["recall"]) for r in rows):
        missing.append("Members (train split) attack results: not stored, so no members vs "
                       "held-out comparison.")
    if not membership:
        notes.append("Membership signal (true-pair similarity as a membership score) is not "
                     "stored: it is written by the dp stage.")
    return {"available": bool(rows), "pool_size": n, "rows": rows, "membership": membership,
            "notes": notes}


def _privacy_section(d: _Data, heads_order: list[str], missing: list[str]) -> dict:
    dp = _dp_rows(d)
    util = d.utility
    macro = {str(h): v for h, v in
             util.loc[util["label"] == "macro", ["heads", "auroc"]].itertuples(index=False)}
    backbone = macro.get("backbone")
    if dp.empty:
        missing.append(f"Differential privacy results: the dp stage has not been run for "
                       f"{d.model} on {d.cohort} (`python -m engine dp --model {d.model} "
                       f"--cohort {d.cohort}`), so no DP grid, no privacy/utility trade-off and "
                       f"no transfer of DP heads.")
        return {"available": False, "pool_size": None, "rows": [], "original_macro_auroc":
                macro.get("original"), "backbone_macro_auroc": backbone, "per_label": [],
                "notes": ["No differential privacy results for this model and cohort yet."]}
    from engine.core import decision

    by_label = {r["label"]: r for r in dp.to_dict("records")}
    held = {h: _metric(d, heads=h) for h in {*heads_order, "original", "inf"}}
    sizes = [int(f["pool_size"].max()) for f in held.values() if len(f)]
    n = max(sizes) if sizes else None
    rows = []
    for heads in heads_order:
        row = by_label.get(heads, {})
        p = _point(_at(held[heads], n) if n else None)
        inf_label = decision.inf_of(decision.start_of(heads))
        ref = {"original": (_at(held["original"], n) or {}).get("recall") if n else None,
               "inf": (_at(_metric(d, heads=inf_label), n) or {}).get("recall") if n else None}
        vs_o = (decision.heads_change(d.ranks, "original", heads, n)
                if n and heads != "original" else None)
        vs_i = (decision.heads_change(d.ranks, inf_label, heads, n)
                if n and heads not in ("original", inf_label) else None)
        rows.append({
            "heads": heads,
            "epsilon": row.get("epsilon"), "delta": row.get("delta"),
            "patient_epsilon": row.get("patient_epsilon"),
            "patient_delta": row.get("patient_delta"),
            "noise_multiplier": row.get("noise_multiplier"),
            "max_grad_norm": row.get("max_grad_norm"), "sample_rate": row.get("sample_rate"),
            "steps": row.get("steps"), "accountant": row.get("accountant"),
            "privacy_unit": row.get("privacy_unit"), "target_epsilon": row.get("target_epsilon"),
            "has_dp_row": bool(row),
            "recall": p["recall"], "ci_low": p["ci_low"], "ci_high": p["ci_high"],
            "lift": p["lift"],
            "reduction_vs_original": (None if heads == "original"
                                      else _reduction(p["recall"], ref["original"])),
            "reduction_vs_inf": (None if heads in ("original", inf_label)
                                 else _reduction(p["recall"], ref["inf"])),
            "start": decision.start_of(heads), "reference_inf": inf_label,
            "change_vs_original": _change_dict(vs_o),
            "change_vs_inf": _change_dict(vs_i),
            "epsilon_scope": decision.epsilon_scope(heads, d.cohort),
            "macro_auroc": macro.get(heads),
            "auroc_change_vs_original": (macro[heads] - macro["original"]
                                         if heads != "original" and fmt.finite(macro.get(heads))
                                         and fmt.finite(macro.get("original")) else None),
        })
    per_label = []
    cols = ["backbone"] + [h for h in heads_order if h in macro]
    for label in (*CHEXPERT_LABELS, "macro"):
        sel = util[util["label"] == label]
        values = {str(h): v for h, v in sel[["heads", "auroc"]].itertuples(index=False)}
        per_label.append({"label": label, "auroc": {h: values.get(h) for h in cols}})
    notes = [f"Recall@1 and lift at N = {n:,} (the whole held-out set), held-out pairs, image → "
             "report, random negatives. Reductions are relative to the original heads and to "
             "the non-private retrained heads (ε = ∞) at that N."] if n else []
    notes.append("Utility is the 14-label linear probe's macro AUROC on the held-out split. The "
                 "probe on the frozen backbone features is a sanity line: it must not move with "
                 "ε.")
    if backbone is None:
        notes.append("The backbone sanity line is not stored for this model and cohort.")
        missing.append("Backbone sanity line (probe on frozen backbone features): not stored.")
    no_attack = [r["heads"] for r in rows if r["recall"] is None]
    if no_attack:
        notes.append("No attack results yet for heads " + ", ".join(no_attack) + ".")
        missing.append("Attack results for DP heads " + ", ".join(no_attack) + ": not stored.")
    no_row = [r["heads"] for r in rows if not r["has_dp_row"] and r["heads"] != "original"]
    if no_row:
        notes.append("Heads with attack results but no dp_runs row: " + ", ".join(no_row) + ".")
    decomposition, said = _decomposition(d)
    selection = _selection_summary(dp)
    notes = said + selection["notes"] + notes
    return {"available": True, "pool_size": n, "rows": rows,
            "original_macro_auroc": macro.get("original"), "backbone_macro_auroc": backbone,
            "per_label": per_label, "notes": notes, "decomposition": decomposition,
            "decomposition_sentences": said, "selection": selection["rows"]}


def _decomposition(d: _Data) -> tuple[list[dict], list[str]]:
    """`engine.core.decompose` rows at N = 100, 10,000 and full, and its sentence."""
    from engine.core import decompose

    m = d.metrics[(d.metrics["cohort"] == d.cohort)]
    if "heads_cohort" in m:
        m = m[m["heads_cohort"].isna() | (m["heads_cohort"] == d.cohort)]
    members = (_dp_config(d) or {}).get("membership", {})
    membership = pd.DataFrame([{"heads": str(h), **v} for h, v in members.items()])
    frame = decompose.decompose(m, membership=membership, utility=d.utility, ranks=d.ranks)
    return clean(frame.to_dict("records")), decompose.sentences(frame)


def _selection_summary(dp: pd.DataFrame) -> dict:
    """Per heads: the chosen candidate, and the epsilon composed over all candidates."""
    if "selection_epsilon" not in dp or dp["selection_params"].isna().all():
        return {"rows": [], "notes": ["Hyper-parameters were fixed in advance (no selection)."]}
    rows = []
    for r in dp.dropna(subset=["selection_params"]).to_dict("records"):
        rows.append({"heads": r["label"], "epsilon": r.get("epsilon"),
                     "selection_epsilon": r.get("selection_epsilon"),
                     "selection_patient_epsilon": r.get("selection_patient_epsilon"),
                     "chosen": r.get("selection_chosen"), "params": r.get("selection_params"),
                     "n_fit_pairs": r.get("n_fit_pairs"),
                     "n_validation_pairs": r.get("n_validation_pairs")})
    rows.sort(key=lambda r: names.heads_sort_key(r["heads"]))
    spent = [f"ε = {r['heads']}: {_eps_text(r['selection_epsilon'])} over all candidates "
             f"(patient level {_eps_text(r['selection_patient_epsilon'])})"
             for r in rows if fmt.finite(r["selection_epsilon"])]
    notes = ["Hyper-parameters (learning rate, epochs, groups per step, clipping norm, group "
             "capacity, DP-Adam or DP-SGD with momentum) were chosen per ε by the lowest "
             "in-group loss on a validation split of the training patients (keyed hash of the "
             "patient id; the held-out split is never read). Validation patients are used "
             "non-privately, for the choice only, and are excluded from training."]
    if spent:
        notes.append("Every candidate trained on the same patients, so the released heads' "
                     "guarantee is the composition of all candidates' runs (RDP): "
                     + "; ".join(spent) + ".")
    return {"rows": clean(rows), "notes": notes}


def _change_dict(change) -> dict | None:
    """A paired change as JSON: point, interval, whether measurable, and the words."""
    from engine.core import decision

    if change is None:
        return None
    return {"point": change.point, "low": change.low, "high": change.high,
            "measurable": change.measurable, "n_queries": change.n_queries,
            "text": decision.change_text(change)}


def _eps_text(value) -> str:
    return f"{value:.3g}" if fmt.finite(value) else "∞"


def _reduction(value, reference):
    if not (fmt.finite(value) and fmt.finite(reference)) or reference == 0:
        return None
    return (reference - value) / reference


def _transfer_section(d: _Data, headline: dict) -> dict:
    rule = ("Transfer: attack results of this model on another cohort with heads other than the "
            "original. When the attack run's config names the cohort its heads were trained on "
            "(heads_cohort), that decides; otherwise heads on another cohort count as "
            "transferred from this one when that cohort has no DP runs of its own for this model "
            "and this cohort has DP heads of the same label.")
    own_dp = set(_dp_rows(d)["label"])
    rows = []
    m = d.metrics
    for other in sorted(set(m["cohort"]) - {d.cohort}):
        rows_other = m[m["cohort"] == other]
        # an adaptive attacker's heads are not a released set: never a transfer
        rows_other = rows_other[~rows_other["heads"].astype(str).str.startswith("adaptive")]
        other_heads = set(rows_other["heads"]) - {"original"}
        has_own_dp = not _dp_rows(d, other).empty
        sources = _heads_sources(d, other)
        marked = rows_other[rows_other["heads"] != "original"].dropna(subset=["heads_cohort"]) \
            if "heads_cohort" in rows_other else rows_other.iloc[:0]
        sources.update(dict(zip(marked["heads"].astype(str), marked["heads_cohort"].astype(str))))
        transferred = []
        for heads in other_heads:
            source = sources.get(heads)
            if source is not None:
                if source == d.cohort:
                    transferred.append(heads)
            elif not has_own_dp and heads in own_dp:
                transferred.append(heads)
        if not transferred:
            continue
        for heads in ["original"] + sort_heads(transferred):
            frame = _metric(d, cohort=other, heads=heads)
            if frame.empty:
                continue
            ref = _metric(d, cohort=other, heads="original")
            n = int(frame["pool_size"].max())
            p = _point(_at(frame, n))
            r0 = (_at(ref, n) or {}).get("recall")
            rows.append({"cohort": other, "heads": heads, "pool_size": n,
                         "recall": p["recall"], "ci_low": p["ci_low"], "ci_high": p["ci_high"],
                         "lift": p["lift"],
                         "reduction_vs_original": (None if heads == "original"
                                                   else _reduction(p["recall"], r0))})
    notes = [] if rows else [
        f"No transfer results: {d.model} has no attack results with DP heads from {d.cohort} "
        "on another cohort."]
    if rows:
        notes.append("Held-out pairs of the external cohort, image → report, random negatives, "
                     "k = 1, at its whole held-out set. The heads were trained on this report's "
                     "cohort and applied unchanged.")
        from engine.core import decompose

        for other in dict.fromkeys(r["cohort"] for r in rows):
            keep = {r["heads"] for r in rows if r["cohort"] == other}
            frame = decompose.decompose(m[(m["cohort"] == other) & m["heads"].isin(keep)])
            notes += [f"On {other}: {s}" for s in decompose.sentences(frame)]
    return {"available": bool(rows), "rule": rule, "rows": rows, "notes": notes}


def _heads_sources(d: _Data, cohort: str) -> dict[str, str]:
    """heads label -> training cohort, from attack run configs that name it."""
    out = {}
    runs = d.runs[(d.runs["stage"] == "attack") & (d.runs["cohort"] == cohort)]
    for text in runs["config_json"]:
        cfg = _json(text) or {}
        source = next((cfg[k] for k in SOURCE_KEYS if isinstance(cfg.get(k), str)), None)
        if source is not None and isinstance(cfg.get("heads"), str):
            out[cfg["heads"]] = source
    return out


def _context_section(d: _Data, headline: dict) -> dict:
    n = headline.get("pool_size")
    c = d.context
    if n is None or c.empty:
        return {"available": False, "pool_size": n, "rows": [],
                "notes": ["No other results on this cohort to compare with."]}
    c = c[c["pool_size"] == n]
    rows = []
    for r in c.to_dict("records"):
        level = r.get("specialization")
        rows.append({"model": r["model"],
                     "specialization": None if level is None or pd.isna(level) else int(level),
                     "this_model": r["model"] == d.model, **{k: v for k, v in _point(r).items()
                                                           if k in ("recall", "ci_low",
                                                                    "ci_high", "lift")}})
    rows.sort(key=lambda r: (r["specialization"] is None, r["specialization"] or 0, r["model"]))
    return {"available": len(rows) > 1, "pool_size": n, "rows": rows,
            "notes": [f"Every model audited on this cohort at the headline N = {n:,} (held-out, "
                      "image → report, random negatives, original heads)."]}


def _examples_section(d: _Data, cohort: dict, examples: bool | None) -> dict:
    include = cohort["synthetic"] is True if examples is None else bool(examples)
    if not include:
        return {"included": False, "rows": [],
                "note": "Example report texts are quoted only for synthetic cohorts: an audit of "
                        "real data must not copy patient narratives into the report."}
    f = d.examples_frame
    rows = []
    if not f.empty:
        first = f[(f["rank"] == 1) & f["is_true"]]
        second = f[f["rank"] == 2]
        both = first.merge(second, on="query_id", suffixes=("", "_2"))
        both["margin"] = both["score"] - both["score_2"]
        both = both.sort_values(["margin", "query_id"], ascending=[False, True])
        for r in both.head(MAX_EXAMPLES).to_dict("records"):
            rows.append({"query_id": str(r["query_id"]), "true_id": r["candidate_id"],
                         "score_true": r["score"], "runner_up_id": r["candidate_id_2"],
                         "score_runner_up": r["score_2"],
                         "runner_up_matched": bool(r["is_matched_2"]),
                         "true_report": _excerpt(r["report_text"]),
                         "runner_up_report": _excerpt(r["report_text_2"])})
    note = ("Held-out images whose own report ranked first by the widest margin (original heads, "
            "whole held-out set). Quoted because the cohort is synthetic.")
    if not rows:
        note = "No held-out image ranked its own report first, or no top-k lists are stored."
    return {"included": True, "rows": rows, "note": note}


def _excerpt(text) -> str:
    if not isinstance(text, str):
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT_CHARS else flat[:EXCERPT_CHARS - 1].rstrip() + "…"


def _method_section(d: _Data, attack_cfg: dict | None, attack_run: dict | None,
                    dp: dict | None) -> dict:
    a = attack_cfg or {}
    n_boot = a.get("n_boot")
    uncertain = a.get("uncertain", "own")
    policy = {"own": "uncertain is its own value", "positive": "uncertain counts as positive",
              "negative": "uncertain counts as negative"}.get(uncertain, str(uncertain))
    paragraphs = [
        "Attack. For every query image the attacker ranks candidate reports by the cosine "
        "similarity of the model's image and report embeddings (and the reverse for report → "
        "image). Recall@1 at pool size N is the exact probability, over random pools of N "
        "reports that contain the true one and random tie-breaking, that the true report ranks "
        "first; it is computed in closed form, not by sampling pools. Chance is 1/N and lift = "
        "Recall@1 / chance.",
        "Intervals are 95% bootstrap intervals over patients"
        + (f" ({int(n_boot):,} replicates)." if fmt.finite(n_boot) else "."),
        "Pathology-matched negatives restrict the distractors to reports whose 14 CheXpert "
        f"labels equal the true report's ({policy}; a missing label counts as 0).",
        "Patient-level linkage is the probability that the top-ranked report belongs to the "
        "query's patient, through any of their studies.",
    ]
    if dp is not None:
        t = (dp.get("config") or {}).get("training") or {}
        unit = t.get("privacy_unit") or _first(_dp_rows(d)["privacy_unit"]) or "group"
        paragraphs.append(
            "Mitigation. Only the two projection heads are retrained, with DP-SGD (Opacus: "
            "per-unit clipping, Poisson sampling, Gaussian noise), on the train split; the "
            "encoders stay frozen and the temperature is fixed to the model's. "
            + ("The privacy unit is a group of patients, assigned by a keyed hash; the "
               "contrastive loss is computed inside the group, so (ε, δ) holds per group and, "
               "since one patient changes one group, (2ε, (1 + e^ε)δ) per patient."
               if unit == "group" else
               "The privacy unit is one pair, contrasted with public negatives; the "
               "patient-level guarantee follows by group privacy over the patient's pairs.")
            + " ε = ∞ is the same training without clipping or noise, which separates the "
            "effect of retraining from the effect of privacy.")
        paragraphs.append(
            "Utility is the 14-label linear probe (one logistic regression per label on the "
            "projected, L2-normalised train-split image embeddings), scored as macro AUROC on "
            "the held-out split; the same probe on the frozen backbone features is the sanity "
            "line.")
    attack = None
    if attack_run is not None:
        attack = {"run_id": attack_run.get("run_id"),
                  "code_version": attack_run.get("code_version"),
                  "finished_at": attack_run.get("finished_at"), "config": attack_cfg or {}}
    dp_out = None
    if dp is not None:
        dp_out = {"run_ids": dp["run_ids"], "config": dp.get("config") or {}}
    return {"paragraphs": paragraphs, "attack": attack, "dp": dp_out}


def _first(series: pd.Series):
    values = [v for v in series if isinstance(v, str) and v]
    return values[0] if values else None


def _provenance(d: _Data) -> dict:
    runs = d.runs[d.runs["cohort"] == d.cohort]
    rows = []
    for r in runs.to_dict("records"):
        cfg = _json(r.get("config_json")) or {}
        rows.append({"run_id": r["run_id"], "stage": r["stage"],
                     "heads": cfg.get("heads") if isinstance(cfg.get("heads"), str) else None,
                     "status": r.get("status"), "code_version": r.get("code_version"),
                     "finished_at": r.get("finished_at"), "seconds": r.get("seconds"),
                     "config_hash": r.get("config_hash"), "n_rows": r.get("n_rows")})
    return {"runs": rows}


def _caveats(doc: dict, attack_cfg: dict | None, dp: dict | None) -> list[dict]:
    out = []
    c = doc["cohort"]
    if c["synthetic"] is True:
        out.append({"title": "Synthetic cohort", "text": (
            f"{c['name']} is a synthetic (phantom) cohort ({c['synthetic_evidence']}). These "
            "numbers show how the audit works on generated images and reports; they say nothing "
            "about this model's risk on real patients.")})
    elif c["synthetic"] is None:
        out.append({"title": "Cohort origin not verified", "text": (
            f"Whether {c['name']} is synthetic {c['synthetic_evidence']}.")})
    leak = _leak_note(doc.get("_attack_message"))
    if leak:
        out.append({"title": "Split not patient-disjoint", "text": (
            f"{leak}. Pairs of these patients were seen in training, so Recall@k and lift on the "
            "held-out split overstate how well the model generalises; re-split by patient.")})
    held = next((s for s in c["splits"] if s["split"] == HELD_OUT), None)
    if held is not None and held["n_items"] < 1000:
        out.append({"title": "Small evaluation set", "text": (
            f"Only {held['n_items']:,} held-out studies from {held['n_patients']:,} patients: "
            "intervals are wide and large pool sizes cannot be evaluated.")})
    if not doc["privacy"]["available"]:
        out.append({"title": "No mitigation evaluated", "text": (
            "The risk above is that of the model as released. Whether retraining its projection "
            "heads with differential privacy would reduce it has not been measured for this "
            "cohort; a DP guarantee would in any case cover only the heads' training data, not "
            "the encoders or the held-out reports.")})
    unit = "group of patients" if _unit(doc) in (None, "group") else "pair"
    dp_caveats = [
        {"title": "What the DP guarantee covers", "text": (
            f"The (ε, δ) guarantees cover the training data of the retrained heads (the train "
            f"split of {c['name']}) at the level of one {unit} and, derived from it, of one "
            "patient, given the frozen encoders. They bound how much the heads can memorise "
            "those pairs, which is the members vs held-out gap.")},
        {"title": "What it does not cover", "text": (
            "The image and text encoders were trained without DP and may memorise their own "
            "training data; the guarantee says nothing about them or about the data the original "
            "model was trained on. Re-linkage of held-out pairs, the headline risk, comes from "
            "what the model learned in general: DP heads reduce it only as a side effect, and the "
            "attacker's pool of reports is not protected at all.")},
        {"title": "Hyper-parameters", "text": (
            "The DP hyper-parameters (privacy unit, group size, epochs, learning rate, clipping "
            "norm, δ) were fixed in advance, not tuned on the evaluation split and not selected "
            "privately; other choices give other privacy/utility trade-offs. The reported ε is "
            "what the named accountant computed for the noise, sampling rate and steps used.")},
    ]
    if doc["privacy"]["available"]:
        out += dp_caveats
    out += [
        {"title": "Random pools", "text": (
            "Candidate pools are drawn uniformly at random from the held-out split. A real "
            "attacker's candidate set may be smaller or better targeted (same hospital, time "
            "window or findings), which raises the risk; pathology-matched negatives are a "
            "harder, but still idealised, case.")},
        {"title": "Intervals", "text": (
            "The 95% intervals reflect which patients happen to be in the evaluation split; they "
            "do not cover variation from retraining the model or the heads.")},
    ]
    return out


def _unit(doc: dict) -> str | None:
    for r in doc["privacy"]["rows"]:
        if isinstance(r.get("privacy_unit"), str):
            return r["privacy_unit"]
    return None
