"""The audit at the reference paper's scale: PadChest's real reports with rendered images, every
stage.

`run_study` renders the PadChest release (`synthetic.render`), registers it with the study's
split (`study_split`) and trains the 4-rung ladder on the training split; then it runs the audit
plan (`engine.plan`) with the configuration shipped as ``engine/configs/study.toml``: every rung
embedded and attacked, the strongest once more with PadChest's full finding sets as the matched-
negative key, the DP grids on the strongest rung, its heads transferred to the external cohort,
the joint-space maps and the reports. Every stage is idempotent (it finds its earlier results),
so an interrupted study resumes where it stopped. Each stage's wall time and peak resident
memory (the process and its children, sampled) are printed, written to ``stages.json`` in the
study folder and recorded as ``study`` runs in the database.

The split (`study_split`): patients whose first frontal study is on or after
``StudyConfig.external_from`` form the **external cohort** ``padchest-later`` (a later time
window, never seen by the ladder or the heads); of the others, a seeded ``held_out_fraction`` of
*all* patients is held out (``test``) and the rest train the ladder and the heads.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from engine.core.spreadsheet import safe_csv
from engine.errors import CohortError, ConfigError

log = logging.getLogger(__name__)

COHORT = "padchest"
EXTERNAL = "padchest-later"
SPLIT_FILE = "split.csv"
STAGES_FILE = "stages.json"
PLAN = "study"  # engine/configs/study.toml: the plan's settings and StudyConfig's defaults


def plan_defaults():
    """The study's plan configuration as shipped (`engine.plan.AuditConfig`)."""
    from engine.configs import load_config

    return load_config(PLAN, Path("."), model="rung", cohort=COHORT)


_PLAN = plan_defaults()


@dataclass(frozen=True)
class StudyConfig:
    """Settings of a study run (the audit's, from `pool_sizes` to `report_formats`, default to
    ``engine/configs/study.toml``'s; `study_plan` sets them over that file's plan).

    Attributes:
        max_patients: Render and audit only this many PadChest patients (None = all 67,208).
        seed: Render, split, ladder and sampling seed.
        image_size: Rendered image side in pixels (64: the ladder's input size, so nothing the
            model sees is lost, and the render is about twice as fast as at 128).
        held_out_fraction: Share of all patients held out (the reference paper had 43,793
            held-out pairs).
        external_from: ``YYYYMMDD``; patients whose first study is on or after it are the
            external cohort.
        rung_epochs: Ladder budget per rung (epochs over the training split).
        ladder_batch_size: Ladder batch size.
        context_length: Text tokens per report (open_clip BPE; PadChest reports are short).
        pool_sizes: Attack pool sizes besides the full database.
        epsilons: DP grid (group level) from the default start (seeded random heads); inf is
            always included.
        original_start_epsilons: The grid again from the model's own heads, for comparison
            (their epsilon does not cover the starting heads; docs/dp.md); inf always included.
        validation_fraction: Share of training patients the DP hyper-parameter selection holds
            out for validation (`engine.dp.selection.Selection`).
        umap_points: Points per joint-space map (sampled).
        report_formats: Formats of the audit reports.
        workers: Render processes (default: up to 2).
        release_path: The PadChest table to render (default: the installed package's copy).
    """

    max_patients: int | None = None
    seed: int = 0
    image_size: int = 64
    held_out_fraction: float = 0.45
    external_from: str = "20170101"
    rung_epochs: tuple[int, ...] = (0, 1, 2, 4)
    ladder_batch_size: int = 64
    context_length: int = 64
    pool_sizes: tuple[int, ...] = _PLAN.attack.pool_sizes
    epsilons: tuple[float, ...] = _PLAN.epsilons
    original_start_epsilons: tuple[float, ...] = _PLAN.compare.epsilons
    validation_fraction: float = _PLAN.selection
    umap_points: int = _PLAN.umap.max_points
    report_formats: tuple[str, ...] = _PLAN.formats
    workers: int | None = None
    release_path: Path | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.held_out_fraction < 1.0:
            raise ConfigError(f"held_out_fraction {self.held_out_fraction}: expected 0..1")
        if len(self.external_from) != 8 or not self.external_from.isdigit():
            raise ConfigError(f"--external-from {self.external_from!r}: expected YYYYMMDD")


@dataclass
class StageRecord:
    """One stage's outcome: what it did, wall time, CPU time, peak resident memory.

    ``cpu_seconds`` (user + system of this process and its finished children) is the figure to
    compare between machines that are shared: wall time grows with other load, CPU time less.
    """

    name: str
    what: str
    seconds: float
    peak_mb: float
    cpu_seconds: float = 0.0

    @property
    def reused(self) -> bool:
        """True when the stage only found its outputs (every part of ``what`` says reused)."""
        parts = [p.strip() for p in self.what.split(", ")]
        return self.what.startswith("reused") or all(p.endswith("(reused)") for p in parts)


@dataclass
class StudyResult:
    stages: list[StageRecord] = field(default_factory=list)
    rungs: list[str] = field(default_factory=list)
    n_held_out: int = 0
    n_train: int = 0
    n_external: int = 0


# --------------------------------------------------------------------------- split


def study_split(studies: pd.DataFrame, *, seed: int, held_out_fraction: float,
                external_from: str) -> pd.DataFrame:
    """Patient-level split of the study.

    Args:
        studies: One row per study with ``patient_id`` and ``study_date`` (``YYYYMMDD`` text).
        seed: The permutation of patients is a function of the seed and the sorted ids only.
        held_out_fraction: Share of all patients that is held out.
        external_from: Patients whose first study is on or after this date are external.

    Returns:
        One row per patient: ``patient_id, cohort`` (`COHORT` or `EXTERNAL`), ``split``
        (``train`` / ``test``; the external cohort is split in half for its probe).
    """
    first = (studies.assign(study_date=studies["study_date"].astype(str))
             .groupby("patient_id")["study_date"].min().sort_index())
    patients = first.index.astype(str).to_numpy()
    external = first.to_numpy() >= external_from
    internal_ids = patients[~external]
    external_ids = patients[external]
    rng = np.random.default_rng([seed, 45])
    n_held = min(len(internal_ids) - 1 if len(internal_ids) > 1 else 0,
                 int(round(held_out_fraction * len(patients))))
    order = rng.permutation(len(internal_ids))
    split = np.full(len(internal_ids), "train", dtype=object)
    split[order[:n_held]] = "test"
    ext_order = rng.permutation(len(external_ids))
    ext_split = np.full(len(external_ids), "train", dtype=object)
    ext_split[ext_order[: len(external_ids) // 2]] = "test"
    return pd.concat([
        pd.DataFrame({"patient_id": internal_ids, "cohort": COHORT, "split": split}),
        pd.DataFrame({"patient_id": external_ids, "cohort": EXTERNAL, "split": ext_split}),
    ], ignore_index=True).sort_values("patient_id", kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- memory


class PeakMemory:
    """Samples the resident memory of this process and its children; ``peak_mb`` when done."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self.peak_kb = _tree_rss_kb()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, _tree_rss_kb())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_kb = max(self.peak_kb, _tree_rss_kb())

    @property
    def peak_mb(self) -> float:
        return self.peak_kb / 1024.0


def _rss_kb(pid: int | str) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int | str) -> list[str]:
    out: list[str] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as fh:
                out += fh.read().split()
    except OSError:
        pass
    return out


def _tree_rss_kb() -> int:
    """RSS of this process plus its descendants (Linux /proc; elsewhere ru_maxrss of self)."""
    if not os.path.isdir("/proc/self/task"):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    total, todo = 0, [str(os.getpid())]
    while todo:
        pid = todo.pop()
        total += _rss_kb(pid)
        todo += _children(pid)
    return total


# --------------------------------------------------------------------------- stages


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class _Stages:
    """Runs stages with a progress line, timing and peak memory."""

    def __init__(self, echo: Callable[[str], None],
                 on_record: Callable[[StageRecord], None] | None = None) -> None:
        self.records: list[StageRecord] = []
        self.echo = echo
        self.on_record = on_record  # called as each stage ends: a crash keeps what was measured

    def __call__(self, name: str, fn: Callable[[], str]) -> str:
        self.echo(f"[study] {name} ...")
        start = time.perf_counter()
        cpu = _cpu_seconds()
        from engine.memory import release

        release()  # what the previous stage freed goes back to the system first
        with PeakMemory() as mem:
            what = fn()
        rec = StageRecord(name, what, time.perf_counter() - start, mem.peak_mb,
                          _cpu_seconds() - cpu)
        self.records.append(rec)
        self.echo(f"[study] {name}: {what} ({rec.seconds:.1f} s, {rec.cpu_seconds:.1f} s CPU, "
                  f"peak {rec.peak_mb:.0f} MB)")
        if self.on_record is not None:
            self.on_record(rec)
        return what


def _render(config: StudyConfig, root: Path, progress_factory) -> str:
    from engine.cohort.sidecar import read_sidecar
    from synthetic.render import RenderConfig, render_cohort

    rc = RenderConfig("padchest", max_patients=config.max_patients, seed=config.seed,
                      image_size=config.image_size, release_path=config.release_path)
    done = read_sidecar(root)
    if done and done.get("seed") == rc.seed and done.get("image_size") == rc.image_size \
            and done.get("max_patients") == rc.max_patients:
        return f"reused {root} ({done['n_images']} images)"
    with progress_factory("render", "img") as bar:
        summary = render_cohort(rc, root, progress=bar, workers=config.workers)
    return (f"{summary.n_images} images of {summary.n_patients} patients "
            f"({summary.n_written} drawn, {summary.images_per_second:.1f} images/s), "
            f"{sum(summary.undrawn.values())} finding mentions not drawn")


def _register(config: StudyConfig, db: Path, root: Path, workdir: Path) -> tuple[str, dict]:
    from engine import store
    from engine.cohort.adapters import load_cohort
    from engine.cohort.registry import register_cohort
    from engine.cohort.table import CohortLoad
    from synthetic.render.release import PADCHEST_CSV, read_padchest

    stamp = json.dumps({"render": (root / "render.json").stat().st_mtime_ns,
                        "split": [config.seed, config.held_out_fraction, config.external_from],
                        "db": str(Path(db).resolve())})
    marker = workdir / ".registered"
    counts_file = workdir / "split.json"
    if marker.is_file() and marker.read_text() == stamp and counts_file.is_file() and db.exists():
        con = store.connect_read(db)
        try:
            known = {r[0] for r in con.execute("SELECT cohort FROM cohorts").fetchall()}
        finally:
            con.close()
        if {COHORT, EXTERNAL} <= known or COHORT in known:
            counts = json.loads(counts_file.read_text())
            return f"reused cohorts ({_describe(counts)})", counts
    load = load_cohort("padchest", root)
    table = read_padchest(root / PADCHEST_CSV)
    dates = table[["StudyID", "PatientID", "StudyDate_DICOM"]].rename(columns={
        "StudyID": "study_id", "PatientID": "patient_id", "StudyDate_DICOM": "study_date"})
    split = study_split(dates, seed=config.seed, held_out_fraction=config.held_out_fraction,
                        external_from=config.external_from)
    safe_csv(split, workdir / SPLIT_FILE)  # ids are data: no formula reaches a spreadsheet
    items = load.items.drop(columns="split").merge(split, on="patient_id", how="left")
    if items["cohort"].isna().any():
        raise CohortError(f"{root}: {int(items['cohort'].isna().sum())} images have a patient "
                          "id the rendered table does not list; render again")
    counts: dict = {"seed": config.seed, "held_out_fraction": config.held_out_fraction,
                    "external_from": config.external_from,
                    "n_patients": int(split["patient_id"].nunique())}
    for name in (COHORT, EXTERNAL):
        part = items[items["cohort"] == name].drop(columns="cohort").reset_index(drop=True)
        if part.empty:
            continue
        register_cohort(db, name, fmt="padchest", root=root,
                        load=CohortLoad(part, load.problems, load.stats), site=name)
        studies = part.drop_duplicates("study_id")
        counts[name] = {s: int((studies["split"] == s).sum()) for s in ("train", "test")}
        counts[name]["patients"] = int(part["patient_id"].nunique())
    counts_file.write_text(json.dumps(counts, indent=1, sort_keys=True))
    marker.write_text(stamp)
    return f"registered ({_describe(counts)}; split in {workdir / SPLIT_FILE})", counts


def _describe(counts: dict) -> str:
    main = counts.get(COHORT, {})
    ext = counts.get(EXTERNAL, {})
    return (f"{main.get('train', 0)} train / {main.get('test', 0)} held-out studies, "
            f"external {sum(v for k, v in ext.items() if k != 'patients')} studies")


def run_study(db: Path, workdir: Path, config: StudyConfig = StudyConfig(), *,
              echo: Callable[[str], None] = print, progress_factory=None) -> StudyResult:
    """Every stage of the study at `config`'s size; each is reused when already done."""
    from contextlib import nullcontext

    db, workdir = Path(db), Path(workdir)
    cache = workdir
    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "cohorts" / "padchest-rendered"
    progress_factory = progress_factory or (lambda desc, unit: nullcontext(None))
    counts: dict = {}
    stage = _Stages(echo, on_record=lambda rec: _record(db, workdir, config, [rec], counts))
    result = StudyResult()
    stage("render PadChest", lambda: _render(config, root, progress_factory))

    def register() -> str:
        what, found = _register(config, db, root, workdir)
        counts.update(found)
        return what

    stage("register and split", register)
    result.n_train = counts.get(COHORT, {}).get("train", 0)
    result.n_held_out = counts.get(COHORT, {}).get("test", 0)
    ext = counts.get(EXTERNAL, {})
    result.n_external = sum(v for k, v in ext.items() if k != "patients")
    cohorts = [COHORT] + ([EXTERNAL] if result.n_external else [])

    def ladder() -> str:
        from synthetic.ladder.ladder import LadderConfig, train_ladder

        lc = LadderConfig(rung_epochs=tuple(config.rung_epochs), seed=config.seed,
                          batch_size=config.ladder_batch_size,
                          context_length=config.context_length)
        with progress_factory("ladder", "step") as bar:
            res = train_ladder(db, cache, COHORT, config=lc, progress=bar)
        result.rungs = [r.name for r in res.rungs]
        lifts = ", ".join(f"{r.name} {r.lift:.1f}x" for r in res.rungs)
        verb = "reused" if res.reused else f"trained on {res.n_train} pairs"
        return f"{verb}; held-out lift at N={res.pool_size} (calibration only): {lifts}"

    stage("ladder", ladder)
    # the strongest rung is chosen by training budget alone (the longest), never by held-out
    from engine import plan as planning
    from engine.plan import print_plan

    audit_config = study_plan(config, cache, result.rungs, external=EXTERNAL in cohorts)
    plan = planning.steps(db, cache, audit_config)
    states = planning.check(plan)
    print_plan(plan, states, audit_config, db, title="[study] plan", echo=echo)
    planning.execute(plan, states, stage)
    result.stages = stage.records
    return result


def study_plan(config: StudyConfig, cache: Path, rungs: list[str], *, external: bool):
    """``study.toml``'s plan with `config`'s settings, on the ladder's `rungs` (weakest first)."""
    from engine.configs import load_config

    plan = load_config(PLAN, cache, model=rungs[-1], others=list(rungs[:-1]),
                       cohort=COHORT)
    return replace(
        plan, external=EXTERNAL if external else None, epsilons=tuple(config.epsilons),
        attack=replace(plan.attack, pool_sizes=tuple(config.pool_sizes)),
        compare=replace(plan.compare, epsilons=tuple(config.original_start_epsilons)),
        selection=config.validation_fraction, start_seed=config.seed,
        adaptive_seed=config.seed, umap=replace(plan.umap, max_points=config.umap_points),
        formats=tuple(config.report_formats))


def _record(db: Path, workdir: Path, config: StudyConfig, records: list[StageRecord],
            counts: dict) -> None:
    """Merge `records` into ``stages.json`` and record one ``study`` run per stage.

    Called as each stage ends, so a run that stops keeps every stage it measured. A stage that
    only reused its outputs keeps the figures of the invocation that computed it (in
    ``stages.json`` and in its run): a resumed study reports what each stage cost, not the
    seconds it took to find its outputs.
    """
    from engine.runs import Run, record_run

    entries: list[dict] = []
    if (workdir / STAGES_FILE).exists():
        try:
            entries = list(json.loads((workdir / STAGES_FILE).read_text()).get("stages", []))
        except (json.JSONDecodeError, AttributeError, TypeError):
            entries = []
    where = {e.get("name"): i for i, e in enumerate(entries) if isinstance(e, dict)}
    settings = {k: v for k, v in asdict(config).items() if k not in ("workers", "release_path")}
    for s in records:
        before = entries[where[s.name]] if s.name in where else None
        if s.reused and before is not None and not StageRecord(
                before["name"], before.get("what", ""), 0.0, 0.0).reused:
            continue  # measured when it was computed; its run is left as it is
        if s.name in where:
            entries[where[s.name]] = asdict(s)
        else:
            where[s.name] = len(entries)
            entries.append(asdict(s))
        run = Run("study", None, COHORT, {"study_stage": s.name, "settings": settings})
        record_run(db, run, message=json.dumps({"seconds": round(s.seconds, 2),
                                                "cpu_seconds": round(s.cpu_seconds, 2),
                                                "peak_mb": round(s.peak_mb, 1),
                                                "what": s.what}))
    payload = {"config": asdict(config), "split": counts, "stages": entries,
               "total_seconds": sum(float(e.get("seconds") or 0.0) for e in entries)}
    tmp = workdir / (STAGES_FILE + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    tmp.replace(workdir / STAGES_FILE)
