"""The audit of one model on one cohort as a plan: its stages in order, each stage's state first.

`steps` lists the stages for a model, its cohort and an optional external cohort: embed (both
cohorts) -> attack with the original heads (both) -> dp (the epsilon sweep and the attack of
every set of heads) -> adaptive (the attacker who refits the heads: on the external cohort as
public pairs when there is one, and on 1% / 5% known held-out patients) -> transfer (the dp
heads applied to the external cohort) -> umap (both) -> report (both). Each stage is a function of
one `Context`: where the results go, the model, the cohort it works on, and `AuditConfig`, which
holds every stage's own config.

Before anything runs, `check` gives every step a `State` (docs/audit-command.md):

* ``done``: its run (every run it would make) is finished with the same identity; it is reused.
* ``to do``: it never ran for this model and cohort (or its run is incomplete).
* ``stale``: a run of this stage exists for the model and cohort with another identity; ``why``
  says what differs (config keys, cohort content, inputs).
* ``to check``: its identity cannot be known before a stage it depends on has run (or, for the
  adaptive attacker fitted outside this command, before its heads are refitted).

How the state is found, per stage: the embed step computes the embedding config the way
`engine.embed.stage.embed_cohort` does and looks for its manifest. The attack, dp, transfer and
umap steps run their own stage function in *probe* mode (`probe`): every `engine.runs.Run` the
stage builds is its real identity, and `Run.reuse` answers from `Run.is_done` without writing;
the first run that is not done stops the probe before any work (so does the dp stage's training
of new heads). The adaptive step is reused through a key of its
inputs (the embeddings' config hashes, the cohorts' content and its own config) kept under
``<cache>/plan/``, because its stage must fit the attacker's heads before it knows its attack's
identity. The report step is done when its files are the ones the ``reports`` table lists and
every run the other steps would reuse is the one shown, finished before the report was written.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from engine.attack.stage import MATCH_POLICIES, AttackConfig
from engine.dp.stage import DEFAULT_EPSILONS
from engine.dp.training import DPConfig
from engine.errors import ConfigError, EngineError
from engine.jointspace import UmapConfig

DONE, TODO, STALE, CHECK = "done", "to do", "stale", "to check"
GATE_FAILED = 3  # exit status of a failed release gate


@dataclass(frozen=True)
class AuditConfig:
    """Everything the `audit` command takes (flags and the TOML file, `engine.cli.plan`).

    Attributes:
        model: Registered model name or open_clip spec.
        cohort: The audited (training) cohort, registered.
        external: A patient-disjoint cohort the model never saw (optional).
        epsilons: DP targets; ``inf`` is always added.
        start: DP start: ``random`` (default), ``original`` or ``public:COHORT``.
        attack: The attack's config (every attack of the audit).
        dp: The DP training config.
        known: Fractions of held-out patients the adaptive attacker knows.
        adaptive_seed: The adaptive attacker's seed.
        adaptive_training: Overrides of the attacker's schedule (`engine.adaptive`).
        umap: Map settings.
        formats: Report formats.
        out: Report folder (default ``<cache>/reports/<model>__<cohort>``).
        gate: The release gate (None: none).
        others: Further models (weakest first) audited on the same cohorts by embed and attack
            only, with a report on the audited cohort each: the demo's and the study's weaker
            rungs of the ladder; `model` is the one audited in full (the strongest rung).
        compare: A second DP sweep from another start, for comparison (None: none).
        selection: Validation share of the training patients for the DP hyper-parameter
            selection (`engine.dp.selection.Selection`); None trains `dp` as it is.
        start_seed: Seed of the DP start (the random heads; the public fit's random start).
        matched: A finer matched-negative key (``findings``): the audited model's held-out pairs
            are attacked once more with negatives sharing it (None: not).
    """

    model: str
    cohort: str
    external: str | None = None
    epsilons: tuple[float, ...] = DEFAULT_EPSILONS
    start: str = "random"
    attack: AttackConfig = AttackConfig()
    dp: DPConfig = DPConfig()
    known: tuple[float, ...] = (0.01, 0.05)
    adaptive_seed: int = 0
    adaptive_training: dict = field(default_factory=dict)
    umap: UmapConfig = UmapConfig()
    formats: tuple[str, ...] = ("html", "pdf", "json")
    out: Path | None = None
    gate: Gate | None = None
    others: tuple[str, ...] = ()
    compare: Compare | None = None
    selection: float | None = None
    start_seed: int = 0
    matched: str | None = None

    def __post_init__(self) -> None:
        if self.external is not None and self.external == self.cohort:
            raise ConfigError(f"--external {self.external}: must differ from --cohort")
        from engine.dp.start import Start

        Start.parse(self.start)  # one line for a bad start, before any work
        if self.compare is not None and self.compare.start == self.start:
            raise ConfigError(f"[compare] start {self.compare.start!r}: the comparison needs "
                              "another start than the audit's own")
        if self.model in self.others:
            raise ConfigError(f"model {self.model!r} is also among the other models")
        if self.matched is not None and (self.matched == "labels"
                                         or self.matched not in MATCH_POLICIES):
            raise ConfigError(f"matched {self.matched!r}: expected one of "
                              f"{', '.join(MATCH_POLICIES[1:])} (the 14 labels are always "
                              "matched)")
        if self.selection is not None and not 0.0 < self.selection < 1.0:
            raise ConfigError(f"[selection] validation_fraction {self.selection}: expected 0..1")

    def adaptive_config(self):
        from engine.adaptive import ATTACKER_TRAINING, AdaptiveConfig

        training = replace(ATTACKER_TRAINING, **self.adaptive_training)
        return AdaptiveConfig(public=(self.external,) if self.external else (),
                              known_fractions=tuple(self.known), seed=self.adaptive_seed,
                              training=training)


@dataclass(frozen=True)
class Compare:
    """A second DP sweep from another start (docs/dp.md: the original start's epsilon does not
    cover the starting heads, so it is shown for comparison only).

    Attributes:
        start: ``original``, ``random`` or ``public:COHORT`` (not the audit's own start).
        epsilons: Its DP targets; ``inf`` is always added.
        dp: Its DP training config.
    """

    start: str = "original"
    epsilons: tuple[float, ...] = DEFAULT_EPSILONS
    dp: DPConfig = DPConfig()

    def __post_init__(self) -> None:
        from engine.dp.start import Start

        Start.parse(self.start)


@dataclass(frozen=True)
class Gate:
    """A release gate on one stored attack metric (`relink_metrics`), on its 95% interval.

    ``metric op threshold`` fails when the interval's bound on the side of the threshold is past
    it: for ``>`` the lower bound is above the threshold, for ``<`` the upper bound is below it.

    Attributes:
        metric: ``lift`` or ``recall``.
        n: Pool size N (an int), or ``full`` (the whole held-out split).
        k: Recall cut-off (default 1).
        op: ``>`` or ``<``.
        threshold: The limit.
        direction: ``image_to_report`` (default) or ``report_to_image``.
        negatives: ``random`` (default) or ``matched``.
        heads: ``original`` (default) or a DP heads label (``8``, ``inf``).
        split: ``test`` (held-out, default) or ``train`` (members).
    """

    metric: str
    n: int | str
    threshold: float
    k: int = 1
    op: str = ">"
    direction: str = "image_to_report"
    negatives: str = "random"
    heads: str = "original"
    split: str = "test"

    def __post_init__(self) -> None:
        if self.metric not in ("lift", "recall"):
            raise ConfigError(f"gate metric {self.metric!r}: expected lift or recall")
        if self.op not in (">", "<"):
            raise ConfigError(f"gate {self.op!r}: expected > or <")
        if self.direction not in ("image_to_report", "report_to_image"):
            raise ConfigError(f"gate direction {self.direction!r}: expected image_to_report or "
                              "report_to_image")
        if not (self.n == "full" or (isinstance(self.n, int) and self.n >= 2)):
            raise ConfigError(f"gate N {self.n!r}: expected a pool size >= 2 or full")
        if not math.isfinite(self.threshold):
            raise ConfigError(f"gate threshold {self.threshold!r}: expected a number")

    @classmethod
    def parse(cls, text: str, **extra) -> Gate:
        """``lift@1000 > 5``, ``lift@5@1000 > 20``, ``recall@1@100 > 0.05``, ``lift@full > 3``.

        ``lift@N`` is the lift of Recall@1; with two numbers the first is k, the second N.
        """
        text = str(text).strip()
        op = ">" if ">" in text else "<" if "<" in text else None
        if op is None:
            raise ConfigError(f"--fail-if {text!r}: expected METRIC@N > THRESHOLD, e.g. "
                              "'lift@1000 > 5'")
        left, _, right = text.partition(op)
        parts = [p.strip() for p in left.strip().split("@")]
        try:
            threshold = float(right.strip())
            numbers = [p if p == "full" else int(p) for p in parts[1:]]
        except ValueError:
            raise ConfigError(f"--fail-if {text!r}: expected METRIC@N > THRESHOLD, e.g. "
                              "'lift@1000 > 5'") from None
        if len(numbers) not in (1, 2) or (len(numbers) == 2 and numbers[0] == "full"):
            raise ConfigError(f"--fail-if {text!r}: expected METRIC@N or METRIC@K@N")
        k, n = (1, numbers[0]) if len(numbers) == 1 else numbers
        return cls(metric=parts[0].lower(), n=n, k=k, op=op, threshold=threshold, **extra)

    def describe(self) -> str:
        at = f"@{self.k}@{self.n}" if self.k != 1 or self.metric == "recall" else f"@{self.n}"
        return f"{self.metric}{at} {self.op} {self.threshold:g}"

    def where(self) -> str:
        split = "held-out" if self.split == "test" else "members"
        return (f"{split}, {self.direction.replace('_', ' ')}, {self.negatives} negatives, "
                f"{self.heads} heads")


@dataclass(frozen=True)
class Context:
    """What a stage works with.

    Attributes:
        db: The results database.
        cache: The artefact folder.
        model: The model (as given; stages resolve it).
        cohort: The cohort this step works on (the audited or the external one).
        source: The audited cohort: DP heads are trained on it.
        external: The external cohort of the audit (None without).
        config: The audit's config (every stage's own config inside).
    """

    db: Path
    cache: Path
    model: str
    cohort: str
    source: str
    external: str | None
    config: AuditConfig

    @property
    def is_external(self) -> bool:
        return self.cohort != self.source

    def inputs(self, cohort: str | None = None):
        from engine import audit

        return audit.load_inputs(self.db, self.cache, self.model, cohort or self.cohort)

    def report_dir(self) -> Path:
        from engine.models.registry import resolve_model
        from engine.report import report_stem

        if self.config.out is not None:
            return Path(self.config.out)
        name = resolve_model(self.model, cache=self.cache, db=self.db).name
        return Path(self.cache) / "reports" / report_stem(name, self.cohort)


# ---------------------------------------------------------------------------- the stages


def embed(ctx: Context) -> str:
    from engine.embed.stage import embed_cohort

    with _bar(f"embed {ctx.cohort}", "item") as progress:
        result = embed_cohort(ctx.db, ctx.cache, ctx.model, ctx.cohort, progress=progress)
    return f"{result.n_items} pairs" + (" (reused)" if result.reused else "")


def attack(ctx: Context) -> str:
    from engine import audit

    inputs = ctx.inputs()
    _, reused = audit.attack(ctx.db, inputs, config=ctx.config.attack, external=ctx.is_external)
    return "reused" if reused else f"{len(inputs.items)} pairs ranked"


def attack_matched(ctx: Context) -> str:
    """The held-out pairs once more, negatives matched on `AuditConfig.matched`."""
    import pandas as pd

    from engine import audit

    key = ctx.config.matched
    inputs = ctx.inputs()
    missing = [c for c in key.split("+")
               if inputs.items.get(c, pd.Series(dtype=object)).isna().all()]
    if missing:
        # e.g. registered by an engine that did not keep the finding sets; registering again
        # would change the content fingerprint and recompute every stage
        return (f"skipped: {ctx.cohort} was registered without {'/'.join(missing)} "
                "(register it again to add them)")
    config = replace(ctx.config.attack, match=key, splits=("test",))
    _, reused = audit.attack(ctx.db, inputs, config=config, external=ctx.is_external)
    return "reused" if reused else f"{len(inputs.items)} pairs ranked"


def _dp(ctx: Context, start: str, epsilons: tuple[float, ...], training: DPConfig) -> str:
    from engine import audit
    from engine.dp.selection import Selection
    from engine.dp.start import Start

    selection = (None if ctx.config.selection is None
                 else Selection(validation_fraction=ctx.config.selection))
    with _bar("DP steps", "step") as progress:
        result = audit.dp(ctx.db, ctx.cache, ctx.inputs(), epsilons=tuple(epsilons),
                          attack_config=ctx.config.attack, training=training,
                          selection=selection, progress=progress,
                          start=Start.parse(start, seed=ctx.config.start_seed))
    return ("reused" if result.reused else "trained") + f": heads {', '.join(result.heads)}"


def dp(ctx: Context) -> str:
    return _dp(ctx, ctx.config.start, ctx.config.epsilons, ctx.config.dp)


def dp_compare(ctx: Context) -> str:
    compare = ctx.config.compare
    return _dp(ctx, compare.start, compare.epsilons, compare.dp)


def adaptive(ctx: Context) -> str:
    from engine import audit, store
    from engine.runs import Run

    key = _adaptive_key(ctx)
    runs = _adaptive_marker_runs(ctx, key)
    if runs is not None:
        for run_id in runs:
            Run("adaptive", None, None, {}, run_id=run_id).mark_shown(ctx.db)
        return "reused"
    found = audit.adaptive(ctx.db, ctx.cache, ctx.inputs(), config=ctx.config.adaptive_config(),
                           attack_config=ctx.config.attack)
    if not found:
        return "no attacker (no public cohort, no known patient)"
    frame = store.read_df(ctx.db, "SELECT run_id FROM adaptive_runs WHERE model = ? AND "
                                  "cohort = ? AND list_contains(?, heads)",
                          [_model_name(ctx), ctx.cohort, [a.label for a in found]])
    ids = sorted(set(frame["run_id"].astype(str)) | {a.attack_run_id for a in found})
    marker = _marker(ctx)
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(f".{marker.name}.tmp")
    tmp.write_text(json.dumps({"key": key, "runs": ids}, indent=1), encoding="utf-8")
    tmp.replace(marker)
    return ", ".join(f"{a.label} ({a.n_fit_pairs} pairs{', reused' if a.reused else ''})"
                     for a in found)


def transfer(ctx: Context) -> str:
    from engine import audit

    labels = audit.transfer(ctx.db, ctx.cache, ctx.inputs(ctx.source), ctx.inputs(),
                            attack_config=ctx.config.attack)
    return f"heads {', '.join(labels)} applied to {ctx.cohort}"


def umap(ctx: Context) -> str:
    from engine import audit

    _, reused = audit.umap(ctx.db, ctx.cache, ctx.inputs(), config=ctx.config.umap,
                           external=ctx.is_external, heads_cohort=ctx.source)
    return "reused" if reused else "fitted"


def report(ctx: Context) -> str:
    from engine.models.registry import resolve_model
    from engine.report import write_report

    name = resolve_model(ctx.model, cache=ctx.cache, db=ctx.db).name
    paths = write_report(ctx.db, model=name, cohort=ctx.cohort, formats=ctx.config.formats,
                         out=ctx.report_dir())
    return ", ".join(str(p) for p in paths.values())


# ---------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Step:
    """One stage on one cohort.

    Attributes:
        stage: The stage's name (also the ``runs.stage`` its runs carry).
        ctx: Its context.
        run: The stage function.
        after: Names of the steps whose results it reads.
        title: Its name in the plan and the progress lines (`step_name`).
    """

    stage: str
    ctx: Context
    run: Callable[[Context], str]
    after: tuple[str, ...] = ()
    title: str = ""

    @property
    def name(self) -> str:
        return self.title or step_name(self.stage, self.ctx.model, self.ctx.cohort,
                                       source=self.ctx.source)


def step_name(stage: str, model: str, cohort: str, *, source: str = "", long: bool = False,
              variant: str = "") -> str:
    """A step's name: ``dp A`` in a one-model plan; with several models (``long``) the model
    is named, ``dp grid M`` (the study records its stages under these names)."""
    extra = f", {variant}" if variant else ""
    if not long:
        if stage == "transfer":
            return f"transfer {source} -> {cohort}"
        return f"{stage} {cohort}{extra}"
    if stage == "transfer":
        return f"transfer {model} -> {cohort}"
    if stage == "dp":
        return f"dp grid {model}{extra}"
    if stage == "adaptive":
        return f"adaptive attack {model} / {cohort}{extra}"
    return f"{stage} {model} / {cohort}{extra}"


@dataclass
class State:
    """A step's state before the run (`check`)."""

    state: str
    why: str = ""
    run_ids: list[str] = field(default_factory=list)


def steps(db: Path, cache: Path, config: AuditConfig) -> list[Step]:
    """The audit's steps in the order they run.

    Every model (`AuditConfig.others`, then `AuditConfig.model`) is embedded and attacked on
    both cohorts (with several models, cohort by cohort: the demo's and the study's order); the
    last one alone gets the matched attack, the DP sweeps, the adaptive
    attacker, the transfer and the maps; then a report per model on the audited cohort and the
    audited model's report on the external one.
    """
    c, e = config.cohort, config.external
    long = bool(config.others)
    cohorts = (c, e) if e else (c,)
    out: list[Step] = []

    def add(stage: str, run: Callable[[Context], str], cohort: str, after=(), *,
            model: str = config.model, variant: str = "") -> str:
        ctx = Context(Path(db), Path(cache), model, cohort, c, e, config)
        title = step_name(stage, model, cohort, source=c, long=long, variant=variant)
        out.append(Step(stage, ctx, run, tuple(after), title))
        return title

    attacks: dict[str, list[str]] = {}
    embeds: dict[str, dict[str, str]] = {}
    for model in (*config.others, config.model):
        embeds[model], attacks[model] = {}, []
        # one model: both embeddings first; several: embed and attack per cohort in turn
        for group in ([(k,) for k in cohorts] if long else [cohorts]):
            for k in group:
                embeds[model][k] = add("embed", embed, k, model=model)
            for k in group:
                attacks[model].append(add("attack", attack, k, [embeds[model][k]], model=model))
    own = embeds[config.model]
    mine = {k: [] for k in cohorts}  # the audited model's steps per cohort (its reports read)
    mine[c].append(attacks[config.model][0])
    if e:
        mine[e].append(attacks[config.model][1])
    if config.matched:
        mine[c].append(add("attack", attack_matched, c, [own[c]],
                           variant=f"matched on {config.matched}"))

    def dp_after(start: str) -> list[str]:
        public = start.split(":", 1)[1].strip() if start.startswith("public:") else ""
        return [own[c]] + ([own[e]] if e and public == e else [])

    dps = [add("dp", dp, c, dp_after(config.start))]
    if config.compare is not None:
        dps.append(add("dp", dp_compare, c, dp_after(config.compare.start),
                       variant=f"{config.compare.start} start (comparison)"))
    mine[c] += dps
    mine[c].append(add("adaptive", adaptive, c, [own[k] for k in cohorts]))
    if e:
        mine[e].append(add("transfer", transfer, e, [*dps, own[e]]))
    mine[c].append(add("umap", umap, c, dps))
    if e:
        mine[e].append(add("umap", umap, e, [*dps, own[e]]))
    for model in config.others:
        add("report", report, c, [attacks[model][0]], model=model)
    add("report", report, c, mine[c])
    if e:
        add("report", report, e, mine[e])
    return out


def print_plan(plan: list[Step], states: dict[str, State], config: AuditConfig, db: Path, *,
               title: str = "audit plan", echo=None) -> None:
    """The plan, one line per step with its state and why (`echo`: default print)."""
    echo = echo or (lambda line: print(line, flush=True))
    ext = f" (external {config.external})" if config.external else ""
    models = ", ".join((*config.others, config.model))
    echo(f"{title}: {models} on {config.cohort}{ext}; results in {db}")
    width = max(len(s.name) for s in plan)
    for step in plan:
        state = states[step.name]
        echo(f"  {step.name:<{width}}  {state.state:<8}  {state.why}")
    if config.gate is not None:
        echo(f"  gate: fail if {config.gate.describe()} on the 95% interval "
             f"({config.gate.where()})")


def progress_lines(prefix: str):
    """A stage runner (`engine.plan.execute`) printing ``[prefix] NAME ...`` and
    ``[prefix] NAME: WHAT (SECONDS s)``."""
    def run(name: str, fn) -> str:
        t0 = time.perf_counter()
        print(f"[{prefix}] {name} ...", flush=True)
        what = fn()
        print(f"[{prefix}] {name}: {what} ({time.perf_counter() - t0:.1f} s)", flush=True)
        return what

    return run


def execute(plan: list[Step], states: dict[str, State],
            stage: Callable[[str, Callable[[], str]], object]) -> None:
    """Run every step in order through `stage` (name, work -> its progress lines, timing).

    A report found current with every step it reads done is not rewritten.
    """
    for step in plan:
        if step.stage == "report" and states[step.name].state == DONE and not any(
                states[d].state != DONE for d in step.after):
            stage(step.name, lambda: "reused: current, not rewritten")
            continue
        stage(step.name, lambda step=step: step.run(step.ctx))


def check(plan: list[Step]) -> dict[str, State]:
    """Every step's `State`, in order, writing nothing."""
    states: dict[str, State] = {}
    for step in plan:
        waiting = [d for d in step.after if states[d].state != DONE]
        if waiting and step.stage != "report":
            states[step.name] = (State(CHECK, f"after {', '.join(waiting)}")
                                 if _any_done_run(step) else State(TODO, "never ran"))
            continue
        try:
            if step.stage == "embed":
                states[step.name] = _check_embed(step.ctx)
            elif step.stage == "report":
                states[step.name] = _check_report(step, states, waiting)
            elif step.stage == "adaptive":
                states[step.name] = _check_adaptive(step.ctx)
            else:
                states[step.name] = _check_probe(step)
        except EngineError as exc:
            states[step.name] = State(CHECK, f"cannot tell: {_one_line(exc)}")
    return states


# ---------------------------------------------------------------------------- probing


class _Pending(Exception):
    """Raised inside a probed stage at the first run that is not done (or work to start)."""

    def __init__(self, run=None, why: str = "") -> None:
        super().__init__(why)
        self.run, self.why = run, why


class _ProbeState:
    active = False


_probing = _ProbeState()


@contextmanager
def probe(db: Path) -> Iterator[list]:
    """Run a stage function without writing: each `Run.reuse` answers `Run.is_done`.

    Yields the list of (run, done) the stage asked about. The first run not done raises
    `_Pending`, and so does the start of work that has no reuse check before it (training new DP
    heads: `engine.dp.stage.starting_heads`).
    """
    import engine.dp.stage as dp_stage
    from engine.runs import Run

    seen: list = []
    made: list = []
    reuse, post_init = Run.reuse, Run.__post_init__
    starting_heads = dp_stage.starting_heads

    def probed_reuse(self, db_):
        done = self.is_done(db_)
        seen.append((self, done))
        if not done:
            raise _Pending(self)
        return True

    def probed_post_init(self):
        post_init(self)
        made.append(self)

    def no_training(*args, **kwargs):
        raise _Pending(made[-1] if made else None, "new heads to train")

    Run.reuse, Run.__post_init__ = probed_reuse, probed_post_init
    dp_stage.starting_heads = no_training
    _probing.active = True
    try:
        yield seen
    finally:
        Run.reuse, Run.__post_init__ = reuse, post_init
        dp_stage.starting_heads = starting_heads
        _probing.active = False


def _bar(desc: str, unit: str):
    from tqdm import tqdm

    # None: drawn on a terminal only (a CI log or a pipe gets the stages' lines alone)
    return tqdm(desc=desc, unit=unit, leave=False, disable=True if _probing.active else None)


def _check_probe(step: Step) -> State:
    with probe(step.ctx.db) as seen:
        try:
            step.run(step.ctx)
        except _Pending as pending:
            ids = [r.run_id for r, _ in seen if r is not pending.run]
            return _pending_state(step.ctx.db, pending.run, pending.why, ids)
    return State(DONE, f"{len(seen)} finished run(s), reused", [r.run_id for r, _ in seen])


def _pending_state(db: Path, run, why: str, done_ids: list[str]) -> State:
    """To do or stale, for the first run of a probed step that is not done."""
    if run is None:
        return State(TODO, why or "never ran", done_ids)
    what = f"{run.stage}" + (f" of heads {run.heads}" if run.heads not in (None, "original")
                             else "")
    rows = _read(db, "SELECT run_id, status, config_json, cohort_fingerprint, "
                     "source_fingerprint FROM runs WHERE stage = ? AND model = ? AND cohort = ? "
                     "AND heads IS NOT DISTINCT FROM ? AND heads_cohort IS NOT DISTINCT FROM ? "
                     "ORDER BY (status = 'done') DESC, shown_at DESC NULLS LAST, "
                     "finished_at DESC", [run.stage, run.model, run.cohort, run.heads,
                                          run.heads_cohort])
    same = [r for r in rows if r[0] == run.run_id]
    if same:
        status = same[0][1]
        return State(TODO, f"{what}: its run is {status}" if status != "done" else
                     f"{what}: rows missing or cohort re-registered", done_ids)
    # 'stale' is what re-registering a cohort with other content marks its runs
    done = [r for r in rows if r[1] in ("done", "stale")]
    if not done:
        if why:
            return State(TODO, why, done_ids)
        return State(TODO, f"{what}: never ran", done_ids)
    old = json.loads(done[0][2] or "{}")
    old.pop("environment", None)
    changed = _diff(old, json.loads(run.config_json))
    if done[0][1] == "stale" or done[0][3] != run.cohort_fingerprint:
        reason = "cohort content changed"
    elif changed:
        reason = "config changed: " + "; ".join(changed[:2]) + (
            f" (+{len(changed) - 2})" if len(changed) > 2 else "")
    else:
        reason = "inputs changed (embeddings or heads)"
    return State(STALE, f"{what}: {reason}", done_ids)


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {_short(a)} -> {_short(b)}")
    return out


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _any_done_run(step: Step) -> bool:
    # a transfer is its attacks (heads trained on the source) and, with train and held-out
    # pairs on the external cohort, its probe run
    rows = _read(step.ctx.db, "SELECT 1 FROM runs WHERE cohort = ? AND status IN ('done', "
                              "'stale') AND (model = ? OR model = ?) AND (stage = ? OR (? = "
                              "'transfer' AND stage = 'attack' AND heads_cohort = ?)) LIMIT 1",
                 [step.ctx.cohort, step.ctx.model, _model_name(step.ctx), step.stage,
                  step.stage, step.ctx.source])
    return bool(rows)


def _model_name(ctx: Context) -> str:
    from engine.models.registry import resolve_model

    return resolve_model(ctx.model, cache=ctx.cache, db=ctx.db).name


def _read(db: Path, sql: str, params: list) -> list[tuple]:
    import duckdb

    from engine import store

    if not Path(db).exists():
        return []
    con = store.connect_read(db)
    try:
        return con.execute(sql, params).fetchall()
    except (duckdb.CatalogException, duckdb.BinderException):
        return []
    finally:
        con.close()


# ---------------------------------------------------------------------------- embed, adaptive


def _check_embed(ctx: Context) -> State:
    """`embed_cohort`'s own folder key: done when its manifest is there."""
    from engine.cohort.registry import read_cohort
    from engine.embed.reader import MANIFEST, pair_dir
    from engine.embed.stage import EmbedOptions, config_hash, embed_config
    from engine.models.registry import resolve_model

    entry = resolve_model(ctx.model, cache=ctx.cache, db=ctx.db)
    meta, items = read_cohort(ctx.db, ctx.cohort)
    config = embed_config(entry, ctx.cohort, items.reset_index(drop=True),
                          EmbedOptions().chunk_size, meta.get("fingerprint"))
    base = pair_dir(ctx.cache, entry.name, ctx.cohort)
    if (base / config_hash(config) / MANIFEST).exists():
        return State(DONE, "embedding found, reused")
    others = []
    for path in base.glob(f"*/{MANIFEST}"):
        try:
            others.append((path.stat().st_mtime_ns,
                           json.loads(path.read_text(encoding="utf-8")).get("config", {})))
        except (OSError, ValueError):
            continue
    if not others:
        return State(TODO, f"{len(items)} items never embedded by this model")
    old = max(others, key=lambda o: o[0])[1]
    changed = [k for k in ("model_fingerprint", "spec", "cohort_fingerprint", "cohort_content",
                           "n_items", "format_version", "image_reader")
               if old.get(k) != config.get(k)]
    names = {"model_fingerprint": "model weights changed", "spec": "model location changed",
             "cohort_fingerprint": "cohort items changed", "cohort_content": "cohort content "
             "changed", "n_items": "number of items changed"}
    return State(STALE, ", ".join(names.get(k, f"{k} changed") for k in changed)
                 or "embedding config changed")


def _marker(ctx: Context) -> Path:
    from engine.models.registry import storage_key

    return (Path(ctx.cache) / "plan" / storage_key(_model_name(ctx)) / storage_key(ctx.cohort)
            / "adaptive.json")


def _adaptive_key(ctx: Context) -> str:
    """Hash of what the adaptive attackers are a function of (see the module docstring)."""
    config = ctx.config.adaptive_config()
    cohorts = {name: ctx.inputs(name) for name in (ctx.cohort, *config.public)}
    payload = {"adaptive": asdict(config), "attack": ctx.config.attack.identity(),
               "inputs": {name: [i.embeddings.config_hash, i.cohort_fingerprint,
                                 i.original_heads_id] for name, i in cohorts.items()}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()
                          ).hexdigest()[:16]


def _adaptive_marker_runs(ctx: Context, key: str) -> list[str] | None:
    """The runs of the last adaptive step with this key, when all are still done."""
    from engine.runs import Run

    try:
        saved = json.loads(_marker(ctx).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if saved.get("key") != key or not saved.get("runs"):
        return None
    runs = [str(r) for r in saved["runs"]]
    if not all(Run("adaptive", None, None, {}, run_id=r).is_done(ctx.db) for r in runs):
        return None
    return runs


def _check_adaptive(ctx: Context) -> State:
    runs = _adaptive_marker_runs(ctx, _adaptive_key(ctx))
    if runs is not None:
        return State(DONE, f"{len(runs)} finished run(s), reused", runs)
    return _adaptive_pending(ctx, "the attackers' heads to fit")


def _adaptive_pending(ctx: Context, why: str) -> State:
    try:
        saved = json.loads(_marker(ctx).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = None
    if saved is not None:
        return State(STALE, "inputs or config changed, or its rows are gone; " + why)
    found = _read(ctx.db, "SELECT 1 FROM runs WHERE stage = 'adaptive' AND cohort = ? AND "
                          "model = ? AND status = 'done' LIMIT 1",
                  [ctx.cohort, _model_name(ctx)])
    if found:
        return State(CHECK, "fitted outside `audit`: refitted, its attacks reused when the heads "
                            "come out the same")
    return State(TODO, "never ran")


# ---------------------------------------------------------------------------- report


def _check_report(step: Step, states: dict[str, State], waiting: list[str]) -> State:
    """Done when the files are intact and every run the report reads is shown and older."""
    ctx = step.ctx
    from engine.models.registry import resolve_model
    from engine.report import report_stem

    name = resolve_model(ctx.model, cache=ctx.cache, db=ctx.db).name
    folder = ctx.report_dir()
    paths = [(folder / f"{report_stem(name, ctx.cohort)}.{fmt}").resolve()
             for fmt in ctx.config.formats]
    rows = {r[0]: r for r in _read(
        ctx.db, "SELECT p.path, p.content_hash, r.finished_at FROM reports p JOIN runs r "
                "ON r.run_id = p.run_id WHERE p.model = ? AND p.cohort = ?", [name, ctx.cohort])}
    missing = [p.name for p in paths if str(p) not in rows or not p.exists()]
    if waiting:
        changes = any(states[d].state in (TODO, STALE) for d in waiting)
        state = CHECK if not changes else STALE if len(missing) < len(paths) else TODO
        return State(state, f"after {', '.join(waiting)}")
    if missing:
        return State(TODO, f"{', '.join(missing)} not written")
    for p in paths:
        if hashlib.sha256(p.read_bytes()).hexdigest()[:16] != rows[str(p)][1]:
            return State(STALE, f"{p.name} changed on disk")
    written = min(rows[str(p)][2] for p in paths)
    ids = sorted({i for d in step.after for i in states[d].run_ids})
    if ids:
        # per run, the run shown in its place (`shown_runs`' key); two steps' runs may share a
        # key (the two DP sweeps' own runs): then the one shown must be one of them
        shown = _read(ctx.db, "SELECT r.run_id, s.run_id, s.finished_at FROM runs r LEFT JOIN "
                              "shown_runs s ON s.stage = r.stage AND s.model IS NOT DISTINCT "
                              "FROM r.model AND s.cohort IS NOT DISTINCT FROM r.cohort AND "
                              "s.heads IS NOT DISTINCT FROM r.heads AND s.heads_cohort IS NOT "
                              "DISTINCT FROM r.heads_cohort AND json_extract_string("
                              "s.config_json, '$.match') IS NOT DISTINCT FROM "
                              "json_extract_string(r.config_json, '$.match') WHERE "
                              "list_contains(?, r.run_id)", [ids])
        if len(shown) < len(ids) or any(s not in ids for _, s, _ in shown):
            return State(STALE, "results shown changed since it was written")
        if any(t > written for _, _, t in shown):
            return State(STALE, "results newer than the report")
    return State(DONE, f"{len(paths)} file(s) current")


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


# ---------------------------------------------------------------------------- the gate


@dataclass
class Verdict:
    """A gate's outcome (written as ``gate.json``)."""

    metric: str
    where: str
    value: float
    ci: tuple[float, float]
    threshold: float
    op: str
    passed: bool
    model: str
    cohort: str
    commit: str

    def line(self) -> str:
        bound = "lower" if self.op == ">" else "upper"
        verb = "passed" if self.passed else "failed"
        return (f"gate {verb}: {self.metric} ({self.where}) = {self.value:.4g}, 95% CI "
                f"[{self.ci[0]:.4g}, {self.ci[1]:.4g}]; its {bound} bound is "
                f"{'not ' if self.passed else ''}{self.op} {self.threshold:g}")

    def as_json(self) -> dict:
        return {"metric": self.metric, "where": self.where, "value": self.value,
                "ci": list(self.ci), "threshold": self.threshold, "op": self.op,
                "passed": self.passed, "model": self.model, "cohort": self.cohort,
                "commit": self.commit}


def evaluate_gate(db: Path, cache: Path, config: AuditConfig) -> Verdict:
    """The gate on the stored (shown) `relink_metrics` row of the audited cohort."""
    from engine.models.registry import resolve_model
    from engine.runs import code_version

    gate = config.gate
    name = resolve_model(config.model, cache=cache, db=db).name
    heads_cohort = None if gate.heads == "original" else config.cohort
    rows = _read(db, "SELECT pool_size, recall, chance, ci_low, ci_high FROM "
                     "shown_relink_metrics WHERE model = ? AND cohort = ? AND split = ? AND "
                     "direction = ? AND negatives = ? AND heads = ? AND heads_cohort IS NOT "
                     "DISTINCT FROM ? AND k = ? ORDER BY pool_size",
                 [name, config.cohort, gate.split, gate.direction, gate.negatives, gate.heads,
                  heads_cohort, gate.k])
    if not rows:
        raise ConfigError(f"gate {gate.describe()}: no stored {gate.where()} attack rows of "
                          f"{name} on {config.cohort} at k={gate.k}")
    sizes = [int(r[0]) for r in rows]
    pick = [r for r in rows if (r[0] == max(sizes) if gate.n == "full" else r[0] == gate.n)]
    if not pick:
        raise ConfigError(f"gate {gate.describe()}: no pool of N={gate.n} stored (pool sizes: "
                          f"{', '.join(map(str, sizes))}; the largest is the full held-out "
                          "split, `full`)")
    _, recall, chance, low, high = pick[0]
    scale = (1.0 / chance) if gate.metric == "lift" and chance else 1.0
    value, ci = recall * scale, (low * scale, high * scale)
    bound = ci[0] if gate.op == ">" else ci[1]
    failed = bound > gate.threshold if gate.op == ">" else bound < gate.threshold
    return Verdict(gate.describe().split(" ")[0], gate.where(), float(value),
                   (float(ci[0]), float(ci[1])), gate.threshold, gate.op, not failed, name,
                   config.cohort, code_version())


def config_fields(cls) -> set[str]:
    """The field names of a config dataclass (the TOML keys of its table)."""
    return {f.name for f in fields(cls)}
