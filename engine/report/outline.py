"""The report's reading order: the document laid out as a list of blocks.

HTML and PDF render the same blocks (`blocks_of`), so they carry the same words, tables and
figures in the same order; only typography differs. Blocks hold plain strings, never markup:
the HTML renderer escapes every one of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from engine.core.claims import PAPER_DP_POOL
from engine.core.decompose import PAPER_DP
from engine.report import text as fmt
from engine.report.figures import figure_specs


@dataclass(frozen=True)
class Title:
    title: str
    subtitle: str
    meta: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 1


@dataclass(frozen=True)
class Paragraph:
    """A paragraph; `lead` is set in bold before the text; `style` is ``body``, ``note`` (small,
    muted) or ``subhead`` (a bold run-in title)."""

    text: str
    lead: str = ""
    style: str = "body"


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Callout:
    """A boxed statement; `tone` is ``risk``, ``warning``, ``missing`` or ``info``."""

    title: str
    text: str = ""
    items: tuple[str, ...] = ()
    tone: str = "info"


@dataclass(frozen=True)
class Table:
    """A table of strings; `align` per column (``l``/``r``), `widths` relative column widths."""

    caption: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: tuple[str, ...] = ()
    widths: tuple[float, ...] = ()
    emphasis: tuple[int, ...] = ()
    font_scale: float = 1.0


@dataclass(frozen=True)
class Figure:
    key: str
    caption: str
    height_in: float
    draw: object = field(repr=False, compare=False, default=None)


DASH = "—"  # not applicable (as opposed to n/a: applicable but not available)

Block = Title | Heading | Paragraph | Bullets | Callout | Table | Figure


def blocks_of(doc: dict) -> list[Block]:
    """The whole report as blocks, numbered sections, tables and figures included."""
    b = _Builder(doc)
    b.title()
    b.decision()
    b.summary()
    b.model_cohort()
    b.method()
    b.lift()
    b.linkage()
    b.members()
    b.privacy()
    b.transfer()
    b.context()
    b.examples()
    b.caveats()
    b.glossary()
    b.provenance()
    return b.out


class _Builder:
    def __init__(self, doc: dict) -> None:
        self.doc = doc
        self.out: list[Block] = []
        self.section = 0
        self.n_tables = 0
        self.n_figures = 0
        self.figures = figure_specs(doc)

    # -- helpers
    def heading(self, text: str) -> None:
        self.section += 1
        self.out.append(Heading(f"{self.section}. {text}"))

    def table(self, caption: str, columns, rows, **kw) -> None:
        self.n_tables += 1
        self.out.append(Table(f"Table {self.n_tables}. {caption}", tuple(columns),
                              tuple(tuple(r) for r in rows), **kw))

    def figure(self, key: str) -> None:
        spec = self.figures.get(key)
        if spec is None:
            return
        self.n_figures += 1
        self.out.append(Figure(key, f"Figure {self.n_figures}. {spec.caption}", spec.height_in,
                               spec.draw))

    def notes(self, notes) -> None:
        for note in notes:
            self.out.append(Paragraph(note, style="note"))

    # -- sections
    def title(self) -> None:
        d = self.doc
        m, c = d["model"], d["cohort"]
        synthetic = {True: "synthetic (phantom) cohort", False: "real cohort",
                     None: "origin not verified"}[c["synthetic"]]
        meta = (
            ("Model", m["name"] + (f" ({m['spec']})" if m["spec"] else "")),
            ("Cohort", f"{c['name']} · {synthetic}"),
            ("Generated", d["generated_at"].replace("T", " ")),
            ("Engine", d["engine"]["code_version"]),
            ("Results database", d["database"]["path"]),
            ("Report schema", f"version {d['schema_version']}"),
        )
        self.out.append(Title(d["title"], f"{m['name']} on {c['name']}", meta))
        if c["synthetic"] is True:
            self.out.append(Callout(
                "Synthetic cohort",
                f"{c['name']} is generated data ({c['synthetic_evidence']}). The figures in "
                "this report demonstrate the audit; they are not evidence about real patients.",
                tone="warning"))
        elif c["synthetic"] is None:
            self.out.append(Callout("Cohort origin not verified",
                                    f"Whether {c['name']} is synthetic {c['synthetic_evidence']}.",
                                    tone="info"))

    def decision(self) -> None:
        """The decision first: threat model, risk level, mitigation, adaptive attacker, what to
        do (docs/decision.md)."""
        dec = self.doc.get("decision") or {}
        self.heading("Decision")
        if not dec.get("available"):
            self.out.append(Callout("No decision possible", dec.get("recommendation")
                                    or "No attack results.", tone="missing"))
            return
        self.out.append(Callout("Recommendation", dec["recommendation"], tone="risk"))
        self.out.append(Paragraph("Threat model", style="subhead"))
        self.out.append(Bullets(tuple(dec["threat_model"])))
        self.out.append(Paragraph(dec["risk"], lead=f"Risk level: {dec['risk_level']}."))
        self.out.append(Paragraph(dec["mitigation"], lead="What the mitigation buys."))
        self.out.append(Paragraph(dec["adaptive"], lead="What an adaptive attacker gets back."))
        self.out.append(Paragraph(
            f"The rule that produced the recommendation is written in {dec['rule']} of the "
            "engine's repository: the risk level is read on the lower end of the lift's 95% "
            "interval; the DP heads are recommended only when their change against the original "
            "heads is measurable and the upper ends of their lift interval and of an adaptive "
            "attacker's lie below 1.5×. Every change is measured on the same queries with one "
            "patient bootstrap; an interval that includes zero is no measurable change.",
            style="note"))

    def glossary(self) -> None:
        self.heading("Glossary")
        self.out.append(Bullets((
            "Re-linkage: finding the report that belongs to an image (or the image of a report) "
            "among candidates, by the model's similarity.",
            "Pool size N: the true item plus N − 1 candidates drawn at random from the held-out "
            "set; chance is 1/N.",
            "Recall@1: the probability that the true item ranks first in the pool; lift: Recall@1 "
            "divided by chance.",
            "95% CI: a percentile interval from a bootstrap over patients (a patient's studies "
            "are resampled together).",
            "No measurable change: the 95% interval of a change, from one patient bootstrap of "
            "both sets of heads on the same queries, includes zero.",
            "Matched negatives: candidate reports with the same 14-label vector as the true "
            "report.",
            "Projection heads: the small layers that map each encoder's features into the shared "
            "space; the DP mitigation retrains only these, the encoders (backbones) stay frozen.",
            "ε (epsilon), δ (delta): the differential-privacy guarantee of the heads' training "
            "steps, per privacy unit (a group of patients) and per patient; it covers neither the "
            "frozen backbones nor heads the training started from.",
            "Start: the heads DP training starts from (seeded random heads by default; the "
            "model's own heads, or heads fitted on a public cohort).",
            "Adaptive attacker: one who refits the heads without privacy on the frozen "
            "backbones, from public data or a leaked share of the pairs.",
        )))

    def summary(self) -> None:
        d = self.doc
        h = d["headline"]
        self.heading("Summary")
        self.out.append(Callout(
            f"Headline risk: {h['risk_level']} (on the lift interval's lower end)"
            if h["available"] else "Headline risk: unknown",
            h["sentence"], tone="risk"))
        items = [x for x in (self._lift_result(), self._matched_result(),
                             self._patient_result(), self._members_result(),
                             self._privacy_result(), self._transfer_result()) if x]
        if items:
            self.out.append(Paragraph("Key results", style="subhead"))
            self.out.append(Bullets(tuple(items)))
        if d["missing"]:
            self.out.append(Callout("Not in this report", items=tuple(d["missing"]),
                                    tone="missing"))

    def _lift_result(self) -> str:
        rows = [r for r in self.doc["lift_vs_n"]["rows"]
                if r["direction"] == "image_to_report" and r["negatives"] == "random"
                and fmt.finite(r["lift"])]
        if len(rows) < 2:
            return ""
        a, z = rows[0], rows[-1]
        return (f"The risk grows with the candidate pool: lift {fmt.times(a['lift'])} at N = "
                f"{a['pool_size']:,} and {fmt.times(z['lift'])} at N = {z['pool_size']:,} "
                f"(Recall@1 {fmt.percent(a['recall'])} and {fmt.percent(z['recall'])}).")

    def _matched_result(self) -> str:
        rows = [r for r in self.doc["lift_vs_n"]["rows"]
                if r["direction"] == "image_to_report" and r["negatives"] == "matched"
                and fmt.finite(r["lift"]) and not r["pool_varies"]]
        if not rows:
            return ""
        r = rows[-1]
        groups = (self.doc["lift_vs_n"].get("matched_groups") or {}).get("text") or ""
        below = fmt.finite(r.get("lift_low")) and r["lift_low"] <= 1
        verdict = ("its interval reaches chance, so the matched labels may explain the signal"
                   if below else "the signal is more than the findings")
        return (f"Against pathology-matched reports (same 14 labels) the model finds the "
                f"true report at {fmt.times(r['lift'])} chance at N = {r['pool_size']:,} "
                f"(95% CI {fmt.times_range(r.get('lift_low'), r.get('lift_high'))}; "
                f"{r['n_queries']:,} queries; {r['n_excluded']:,} without enough matched "
                f"reports left out): {verdict}. {groups}").strip()

    def _patient_result(self) -> str:
        rows = [r for r in self.doc["linkage"]["rows"]
                if r["split"] == "test" and r["direction"] == "image_to_report"]
        if not rows or not fmt.finite(rows[0]["patient_top1"]):
            return ""
        r = rows[0]
        return (f"The top-ranked report belongs to the image's patient "
                f"{fmt.percent(r['patient_top1'])} of the time (95% CI "
                f"{fmt.percent_range(r['patient_top1_ci_low'], r['patient_top1_ci_high'])}) "
                f"across the whole held-out set; MRR {fmt.general(r['mrr'], 3)}, median rank "
                f"{fmt.general(r['median_rank'], 4)}.")

    def _members_result(self) -> str:
        rows = [r for r in self.doc["members"]["rows"] if r["heads"] == "original"]
        if not rows or not fmt.finite(rows[0]["gap"]):
            return ""
        r = rows[0]
        return (f"Members (training pairs) re-link at {fmt.percent(r['members']['recall'])} vs "
                f"{fmt.percent(r['held_out']['recall'])} for held-out pairs at N = "
                f"{self.doc['members']['pool_size']:,} ({fmt.points(r['gap'])}).")

    def _privacy_result(self) -> str:
        p = self.doc["privacy"]
        if not p["available"]:
            return "No differential privacy results yet: the mitigation has not been evaluated."
        dp = [r for r in p["rows"] if r["heads"] not in ("original", "inf")
              and r.get("start") in (None, "random") and fmt.finite(r["recall"])]
        if not dp:
            return ""
        r = dp[-1]
        orig = next((x for x in p["rows"] if x["heads"] == "original"), None)
        util = ""
        if orig and fmt.finite(r["macro_auroc"]) and fmt.finite(orig["macro_auroc"]):
            util = (f"; probe macro AUROC {fmt.auroc(orig['macro_auroc'])} → "
                    f"{fmt.auroc(r['macro_auroc'])}")
        patient = (f", patient level ε = {fmt.general(r['patient_epsilon'])}"
                   if fmt.finite(r["patient_epsilon"]) else "")
        vs_o = (r.get("change_vs_original") or {}).get("text") or fmt.reduction(
            r["reduction_vs_original"]) + " (no paired interval)"
        vs_i = (r.get("change_vs_inf") or {}).get("text") or fmt.reduction(
            r["reduction_vs_inf"]) + " (no paired interval)"
        scope = r.get("epsilon_scope") or ""
        return (f"DP heads at ε = {r['heads']}{patient}: Recall@1 at N = {p['pool_size']:,} is "
                f"{fmt.percent(r['recall'])}; against the original heads {vs_o}; against "
                f"non-private retraining {vs_i}{util}. {scope}").strip()

    def _transfer_result(self) -> str:
        rows = [r for r in self.doc["transfer"]["rows"] if r["heads"] != "original"]
        if not rows:
            return ""
        r = rows[-1]
        what = ("the heads retrained without DP" if r["heads"] == "inf"
                else f"the DP heads (ε = {r['heads']})")
        return (f"Applied unchanged to {r['cohort']}, {what} give "
                f"Recall@1 {fmt.percent(r['recall'])} at N = {r['pool_size']:,} "
                f"({fmt.reduction(r['reduction_vs_original'])} than the original heads there).")

    def model_cohort(self) -> None:
        d = self.doc
        m, c = d["model"], d["cohort"]
        self.heading("Model and cohort")
        splits = "; ".join(f"{s['name']}: {s['n_items']:,} studies, {s['n_patients']:,} patients"
                           for s in c["splits"]) or fmt.NA
        synthetic = {True: "yes", False: "no", None: "unknown"}[c["synthetic"]]
        rows = [
            ("Model", m["name"]),
            ("open_clip spec", m["spec"] or "not registered in the models table"),
            ("Specialisation level", fmt.NA if m["specialization"] is None
             else str(m["specialization"])),
            ("Description", m["description"] or fmt.NA),
            ("Cohort", c["name"]),
            ("Format / site", f"{c['format'] or fmt.NA} / {c['site'] or fmt.NA}"),
            ("Root", c["root"] or fmt.NA),
            ("Patients / studies / images", " / ".join(fmt.integer(c[k]) for k in
                                                        ("n_patients", "n_studies", "n_images"))),
            ("Audited (one image per study)", splits),
            ("Inputs skipped at registration", fmt.integer(c["n_skipped"])),
            ("Synthetic", f"{synthetic}: {c['synthetic_evidence']}"),
        ]
        self.table("Model and cohort.", ("Item", "Value"), rows, align=("l", "l"),
                   widths=(1.0, 3.0))

    def method(self) -> None:
        meth = self.doc["method"]
        self.heading("Method and parameters")
        for para in meth["paragraphs"]:
            lead, _, rest = para.partition(". ")
            if lead in ("Attack", "Mitigation"):
                self.out.append(Paragraph(rest, lead=lead + "."))
            else:
                self.out.append(Paragraph(para))
        a = meth["attack"]
        if a is not None:
            cfg = a["config"]
            names = {"pool_sizes": "Pool sizes N (whole split always added)",
                     "ks": "Recall cut-offs k", "splits": "Splits evaluated",
                     "uncertain": "Uncertain-label policy (matched negatives)",
                     "n_boot": "Bootstrap replicates (patients)", "seed": "Bootstrap seed",
                     "top_k": "Stored candidate list length", "embeddings": "Embeddings hash"}
            keys = [k for k in names if k in cfg] + [k for k in cfg if k not in names]
            rows = [(names.get(k, k), _value(cfg[k])) for k in keys if k != "heads"]
            rows += [("Run", a["run_id"]), ("Code version", a.get("code_version") or fmt.NA)]
            self.table("Attack parameters (original heads).", ("Parameter", "Value"), rows,
                       align=("l", "l"), widths=(1.6, 2.4))
        else:
            self.notes(["No attack run is recorded for this model and cohort."])
        dp = meth["dp"]
        if dp is not None:
            cfg = dp["config"] or {}
            training = cfg.get("training") if isinstance(cfg.get("training"), dict) else None
            names = {"privacy_unit": "Privacy unit", "group_size": "Group size (pairs)",
                     "group_fill": "Group fill", "group_key": "Group hash key",
                     "batch_size": "Expected units per batch", "min_steps_per_epoch":
                     "Min. steps per epoch", "epochs": "Epochs", "lr": "Learning rate (Adam)",
                     "max_grad_norm": "Clipping norm C", "delta": "Target δ",
                     "accountant": "Accountant", "grad_sample_mode": "Per-sample gradients",
                     "public_negatives": "Public negatives K",
                     "max_noise_multiplier": "Noise ceiling", "seed": "Seed"}
            rows = []
            if "sweep" in cfg:
                rows.append(("ε grid", ", ".join(map(str, cfg["sweep"]))))
            if training:
                keys = [k for k in names if k in training] + [k for k in training
                                                              if k not in names]
                rows += [(names.get(k, k), _value(training[k])) for k in keys
                         if k != "group_key"]
            else:
                rows += [(k, _value(v)) for k, v in cfg.items() if k != "sweep"]
            for key in ("train_split", "eval_split"):
                if key in cfg:
                    rows.append((key.replace("_", " ").capitalize(), str(cfg[key])))
            rows.append(("Runs", ", ".join(dp["run_ids"])))
            if not training:
                self.notes(["The dp run did not record its training configuration; its stored "
                            "config is shown as is."])
            self.table("DP training configuration.", ("Parameter", "Value"), rows,
                       align=("l", "l"), widths=(1.6, 2.4))

    def lift(self) -> None:
        sec = self.doc["lift_vs_n"]
        self.heading("Re-linkage risk vs pool size")
        if not sec["available"]:
            self.out.append(Callout("No attack results", items=tuple(sec["notes"]),
                                    tone="missing"))
            return
        self.figure("lift")
        rows = []
        by = {}
        for r in sec["rows"]:
            by[(r["direction"], r["pool_size"], r["negatives"])] = r
        keys = sorted({(r["direction"], r["pool_size"]) for r in sec["rows"]},
                      key=lambda k: (k[0] != "image_to_report", k[1]))
        for direction, n in keys:
            ran, mat = by.get((direction, n, "random")), by.get((direction, n, "matched"))
            full = (ran or mat)["full_database"]
            rows.append((
                fmt.DIRECTION_NAMES[direction],
                f"{n:,}" + (" (all)" if full else ""),
                _recall_ci(ran), fmt.times(ran["lift"]) if ran else fmt.NA,
                _recall_ci(mat) + (" †" if mat and mat["pool_varies"] else ""),
                fmt.times(mat["lift"]) if mat else fmt.NA,
                fmt.integer(mat["n_excluded"]) if mat else fmt.NA,
            ))
        self.table("Recall@1 and lift by pool size, held-out pairs, original heads, k = 1. "
                   "† pool = every matched report, N varies per query.",
                   ("Direction", "N", "Random: Recall@1 (95% CI)", "Lift",
                    "Matched: Recall@1 (95% CI)", "Lift", "Excluded"), rows,
                   align=("l", "r", "r", "r", "r", "r", "r"),
                   widths=(1.15, 0.7, 1.55, 0.55, 1.55, 0.55, 0.7))
        self.notes(sec["notes"])

    def linkage(self) -> None:
        sec = self.doc["linkage"]
        self.heading("Ranking and patient-level linkage")
        if not sec["available"]:
            self.out.append(Callout("Not stored", items=("No ranking summary for the original "
                                                         "heads.",), tone="missing"))
            return
        rows = [(fmt.SPLIT_NAMES.get(r["split"], r["split"]),
                 fmt.DIRECTION_NAMES[r["direction"]], fmt.integer(r["n_queries"]),
                 f"{fmt.general(r['mrr'], 3)} ({fmt.general(r['mrr_ci_low'], 3)}–"
                 f"{fmt.general(r['mrr_ci_high'], 3)})",
                 fmt.general(r["median_rank"], 4),
                 f"{fmt.percent(r['patient_top1'])} "
                 f"({fmt.percent_range(r['patient_top1_ci_low'], r['patient_top1_ci_high'])})",
                 fmt.percent(r["chance_top1"]))
                for r in sec["rows"]]
        self.table("Whole-split ranking: mean reciprocal rank, median expected rank of the true "
                   "item and patient-level top-1 linkage (95% CI).",
                   ("Pairs", "Direction", "Queries", "MRR (95% CI)", "Median rank",
                    "Patient top-1 (95% CI)", "Chance top-1"), rows,
                   align=("l", "l", "r", "r", "r", "r", "r"),
                   widths=(0.8, 1.1, 0.65, 1.3, 0.8, 1.45, 0.8))
        self.notes(sec["notes"])

    def members(self) -> None:
        sec = self.doc["members"]
        self.heading("Members vs held-out")
        if not sec["available"]:
            self.out.append(Callout("Not stored", items=tuple(sec["notes"]), tone="missing"))
            return
        self.figure("members")
        rows = [(fmt.heads_name(r["heads"]),
                 _recall_ci(r["held_out"]), fmt.times(r["held_out"]["lift"]),
                 _recall_ci(r["members"]), fmt.times(r["members"]["lift"]),
                 fmt.points(r["gap"]))
                for r in sec["rows"]]
        self.table(f"Recall@1 at N = {sec['pool_size']:,}, image → report, random negatives: "
                   "held-out pairs vs members, per set of heads.",
                   ("Heads", "Held-out (95% CI)", "Lift", "Members (95% CI)", "Lift",
                    "Gap"), rows, align=("l", "r", "r", "r", "r", "r"),
                   widths=(1.7, 1.45, 0.55, 1.45, 0.55, 0.8))
        if sec["membership"]:
            rows = [(fmt.heads_name(m["heads"]), fmt.general(m["auroc"], 3),
                     f"{fmt.percent(m['tpr_at_fpr'])} at {fmt.percent(m['fpr'])}",
                     fmt.integer(m["n_members"]), fmt.integer(m["n_nonmembers"]))
                    for m in sec["membership"]]
            self.table("Membership signal: the similarity of a true pair used as a membership "
                       "score (AUROC 0.5 = no signal; true-positive rate at a fixed "
                       "false-positive rate).",
                       ("Heads", "AUROC", "TPR at FPR", "Members", "Non-members"), rows,
                       align=("l", "r", "r", "r", "r"), widths=(1.8, 0.8, 1.2, 0.9, 0.9))
        self.notes(sec["notes"])

    def privacy(self) -> None:
        p = self.doc["privacy"]
        self.heading("Differential privacy")
        if not p["available"]:
            self.out.append(Callout(
                "No differential privacy results",
                f"The dp stage has not been run for {self.doc['model']['name']} on "
                f"{self.doc['cohort']['name']}. Until it is, this report has no DP grid, no "
                "privacy/utility trade-off and no transfer of DP heads.", tone="missing"))
            return
        self.figure("privacy")
        rows = [r for r in p["rows"] if r["heads"] != "original"]
        self.table(
            "Privacy guarantees per set of heads. Group level as spent by the accountant; "
            "patient level (2ε, (1 + e^ε)δ) by group privacy. σ noise multiplier, C clipping "
            "norm, q sampling rate.",
            ("Heads", "ε group", "δ group", "ε patient", "δ patient", "σ", "C", "q", "Steps",
             "Accountant", "Unit"),
            [(fmt.heads_short(r["heads"]),
              "∞" if r["heads"] == "inf" else fmt.general(r["epsilon"]),
              DASH if r["heads"] == "inf" else fmt.scientific(r["delta"]),
              "∞" if r["heads"] == "inf" else fmt.general(r["patient_epsilon"]),
              DASH if r["heads"] == "inf" else fmt.scientific(r["patient_delta"]),
              fmt.general(r["noise_multiplier"]),
              DASH if r["heads"] == "inf" else fmt.general(r["max_grad_norm"]),
              fmt.general(r["sample_rate"]), fmt.integer(r["steps"]),
              DASH if r["heads"] == "inf" else (r["accountant"] or fmt.NA),
              r["privacy_unit"] or fmt.NA) for r in rows],
            align=("l",) + ("r",) * 8 + ("l", "l"),
            widths=(0.6, 0.6, 0.75, 0.65, 0.75, 0.5, 0.45, 0.5, 0.5, 0.8, 0.55),
            font_scale=0.92)
        n = p["pool_size"]
        def paired(r, key, fallback):
            return (r.get(key) or {}).get("text") or fmt.reduction(r[fallback])

        risk_rows = [(fmt.heads_name(r["heads"]), _recall_ci(r), fmt.times(r["lift"]),
                      "reference" if r["heads"] == "original" else
                      paired(r, "change_vs_original", "reduction_vs_original"),
                      "reference" if r["heads"] == r.get("reference_inf", "inf")
                      else DASH if r["heads"] == "original"
                      else paired(r, "change_vs_inf", "reduction_vs_inf"),
                      fmt.auroc(r["macro_auroc"]),
                      "reference" if r["heads"] == "original" else
                      fmt.points(r["auroc_change_vs_original"]))
                     for r in p["rows"]]
        risk_rows.append(("frozen backbone (sanity line)", "", "", "", "",
                          fmt.auroc(p["backbone_macro_auroc"]), ""))
        self.table(
            f"Risk and utility: Recall@1 and lift at N = {n:,} (whole held-out set), the change "
            "of Recall@1 against the original heads and against the ε = ∞ heads of the same "
            "start (95% interval from one patient bootstrap of both on the same queries; "
            "\"no measurable change\" when it includes zero), and the 14-label probe macro "
            "AUROC." if n else "Risk and utility per set of heads.",
            ("Heads", "Recall@1 (95% CI)", "Lift", "vs original", "vs ε = ∞",
             "Macro AUROC", "Δ AUROC"), risk_rows,
            align=("l", "r", "r", "r", "r", "r", "r"),
            widths=(1.6, 1.2, 0.5, 1.45, 1.45, 0.75, 0.6), emphasis=(0,), font_scale=0.92)
        scopes = list(dict.fromkeys(f"{fmt.heads_name(r['heads'])}: {r['epsilon_scope']}"
                                    for r in p["rows"] if r.get("epsilon_scope")))
        if scopes:
            self.out.append(Paragraph("What each ε covers", style="subhead"))
            self.out.append(Bullets(tuple(scopes)))
        decided = self.doc.get("decision") or {}
        side = decided.get("side_by_side") or []
        if any(r["kind"] == "adaptive" for r in side):
            n_d = decided.get("pool_size")
            self.table(
                f"The released heads and the attacker who adapts, at N = {n_d:,}: Recall@1 with "
                "its 95% interval, lift over chance and the share of the original heads' rate. "
                "The adaptive attacker fits heads of its own, without privacy, on the released "
                "frozen backbones (on public pairs, or on known held-out patients, scored on the "
                "other held-out patients); the released heads do not limit it.",
                ("Heads", "Attacker's data", "Recall@1 (95% CI)", "Lift", "Share of original"),
                [(fmt.heads_name(r["heads"]) if r["kind"] == "released"
                  else f"adaptive attacker ({r['attacker']})",
                  DASH if r["kind"] == "released" else
                  (f"{r['fit_pairs']:,} pairs" if r.get("fit_pairs") else fmt.NA),
                  _recall_ci(r), fmt.times(r["lift"]),
                  fmt.percent(r["share_of_original"])) for r in side],
                align=("l", "l", "r", "r", "r"), widths=(2.2, 1.1, 1.3, 0.6, 0.9),
                emphasis=tuple(i for i, r in enumerate(side) if r["kind"] == "adaptive"),
                font_scale=0.92)
        adaptive = decided.get("adaptive")
        if adaptive:
            self.out.append(Callout("What an attacker who refits the heads gets back", adaptive,
                                    tone="warning"))
        self._paper_pool_table(p)
        self.notes(p["notes"])
        if p["per_label"]:
            cols = list(p["per_label"][0]["auroc"].keys())
            rows = [(r["label"],) + tuple(fmt.auroc(r["auroc"].get(c)) for c in cols)
                    for r in p["per_label"]]
            self.table("Probe AUROC per label (held-out split) for the backbone features and "
                       "every set of heads; n/a where a label lacks one of its classes.",
                       ("Label",) + tuple(fmt.heads_short(c) for c in cols), rows,
                       align=("l",) + ("r",) * len(cols),
                       widths=(1.9,) + (0.75,) * len(cols), emphasis=(len(rows) - 1,),
                       font_scale=0.92)

    def _paper_pool_table(self, p: dict) -> None:
        """Recall@1 at the paper's N = 10,000 against both references, beside the paper's figure."""
        rows = [r for r in p.get("decomposition") or []
                if r.get("pool") == f"{PAPER_DP_POOL:,}" and r.get("heads") != "backbone"]
        if not rows:
            return

        def change(row, point, low, high, reference: str) -> str:
            if row["heads"] == reference:
                return "reference"
            if not fmt.finite(row.get(point)):  # e.g. the original heads against inf
                return DASH
            # points of a reduction, shown as the change of Recall@1 with its interval
            text = f"{-row[point]:+.1f}%"
            if fmt.finite(row.get(low)) and fmt.finite(row.get(high)):
                text += f" ({-row[high]:+.0f}% to {-row[low]:+.0f}%)"
            return text.replace("-", "−")

        table = [(fmt.heads_name(r["heads"]), _recall_ci(r),
                  change(r, "drop_vs_original", "drop_low", "drop_high", "original"),
                  change(r, "drop_vs_inf", "inf_drop_low", "inf_drop_high", "inf"),
                  fmt.auroc(r.get("membership_auroc")), fmt.auroc(r.get("macro_auroc")))
                 for r in rows]
        self.table(
            f"At the paper's pool size, N = {PAPER_DP_POOL:,}: change of Recall@1 against the "
            "original heads and against the heads retrained without noise (ε = ∞); the "
            "interval is the heads' Recall@1 interval against the reference's point estimate. "
            "Membership AUROC: the true pair's similarity as a score separating training pairs "
            "from held-out ones (50% is no signal). " + PAPER_DP,
            ("Heads", "Recall@1 (95% CI)", "vs original (CI)", "vs ε = ∞ (CI)",
             "Membership AUROC", "Macro AUROC"), table,
            align=("l", "r", "r", "r", "r", "r"),
            widths=(1.75, 1.35, 1.35, 1.35, 0.95, 0.85), emphasis=(0,))

    def transfer(self) -> None:
        t = self.doc["transfer"]
        self.heading("Transfer to another cohort")
        if t["available"]:
            rows = [(r["cohort"], fmt.heads_name(r["heads"]), f"{r['pool_size']:,}",
                     _recall_ci(r), fmt.times(r["lift"]),
                     "reference" if r["heads"] == "original" else
                     fmt.reduction(r["reduction_vs_original"])) for r in t["rows"]]
            self.table("Heads trained on this cohort, applied unchanged to an external cohort "
                       "(held-out pairs, image → report, random negatives, whole set).",
                       ("Cohort", "Heads", "N", "Recall@1 (95% CI)", "Lift", "vs original"),
                       rows, align=("l", "l", "r", "r", "r", "r"),
                       widths=(1.2, 1.7, 0.6, 1.4, 0.6, 1.0))
        self.notes(t["notes"])
        self.out.append(Paragraph(t["rule"], style="note"))

    def context(self) -> None:
        c = self.doc["context"]
        self.heading("Other models on this cohort")
        if not c["available"]:
            self.notes(["No other model has been audited on this cohort."])
            return
        rows = [(r["model"] + (" (this report)" if r["this_model"] else ""),
                 fmt.NA if r["specialization"] is None else str(r["specialization"]),
                 _recall_ci(r), fmt.times(r["lift"])) for r in c["rows"]]
        emphasis = tuple(i for i, r in enumerate(c["rows"]) if r["this_model"])
        self.table(f"Recall@1 and lift at N = {c['pool_size']:,} for every model audited on this "
                   "cohort (held-out, image → report, random negatives, original heads).",
                   ("Model", "Specialisation", "Recall@1 (95% CI)", "Lift"), rows,
                   align=("l", "r", "r", "r"), widths=(2.2, 1.0, 1.6, 0.7), emphasis=emphasis)

    def examples(self) -> None:
        e = self.doc["examples"]
        if not e["included"]:
            return
        self.heading("Examples")
        self.notes([e["note"]])
        for i, r in enumerate(e["rows"], 1):
            self.table(
                f"Example {i}: image {r['query_id']} and its two best-scoring reports.",
                ("Candidate", "Score", "Report text"),
                [(f"{r['true_id']} (own report, rank 1)", fmt.general(r["score_true"], 3),
                  r["true_report"]),
                 (f"{r['runner_up_id']} (rank 2" + (", matched)" if r["runner_up_matched"]
                                                     else ")"),
                  fmt.general(r["score_runner_up"], 3), r["runner_up_report"])],
                align=("l", "r", "l"), widths=(1.45, 0.5, 4.2), font_scale=0.95)

    def caveats(self) -> None:
        self.heading("Caveats")
        for c in self.doc["caveats"]:
            self.out.append(Paragraph(c["text"], lead=c["title"] + "."))

    def provenance(self) -> None:
        runs = self.doc["provenance"]["runs"]
        self.heading("Provenance")
        if not runs:
            self.notes(["No runs recorded for this model and cohort."])
            return
        rows = [(r["run_id"], r["stage"], r["heads"] or "", r["status"] or fmt.NA,
                 (r["finished_at"] or fmt.NA).replace("T", " ")[:19],
                 fmt.general(r["seconds"], 3) + " s" if r["seconds"] is not None else fmt.NA,
                 r["code_version"] or fmt.NA)
                for r in runs]
        self.table("Stored runs behind this report (runs table).",
                   ("Run", "Stage", "Heads", "Status", "Finished (UTC)", "Time", "Code"),
                   rows, align=("l", "l", "l", "l", "l", "r", "l"),
                   widths=(1.55, 0.55, 0.5, 0.5, 1.3, 0.6, 1.1), font_scale=0.92)


def _recall_ci(r: dict | None) -> str:
    if not r or not fmt.finite(r.get("recall")):
        return fmt.NA
    return f"{fmt.percent(r['recall'])} ({fmt.percent_range(r.get('ci_low'), r.get('ci_high'))})"


def _value(v) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(_value(x) for x in v)
    if isinstance(v, float):
        return fmt.general(v, 4)
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return str(v)
