"""The validation report of `cohort check`: what was read, what was lost, and why.

Plain text meant for a terminal: counts (patients, studies, images by split and view), the
joins and their losses (the adapter's counters, `adapters.loadlog.STAT_LABELS`), label coverage
per label at study level, and every problem grouped by kind with its file and row (long lists
capped, with the number left out).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pandas as pd

from engine.cohort.adapters.loadlog import STAT_LABELS
from engine.cohort.table import FRONTAL_VIEWS, SPLITS, CohortLoad
from engine.core.labels import CHEXPERT_LABELS
from engine.errors import InputProblem

MAX_PER_KIND = 10
# Counters shown even when zero: the totals a reader checks first.
ALWAYS_SHOWN = frozenset(
    {"rows_listed", "images_listed", "images_found", "studies_listed", "images_kept",
     "studies_kept", "patients_kept",
     # What the image reader (engine.images) refused or will window: asked for by every check.
     "images_outside_root", "images_too_small", "images_high_bit_depth"}
)

def format_check_report(load: CohortLoad, *, fmt: str, root: Path) -> str:
    """A human-readable validation report of one loaded cohort."""
    items = load.items
    lines = [f"Cohort check: {fmt} at {root}", ""]
    lines += _counts(items)
    lines += ["", "Reading and joins:"]
    lines += _stats(load.stats)
    lines += ["", "Label coverage (one row per study):"]
    lines += _label_coverage(items)
    lines += ["", _problem_headline(load.problems)]
    lines += _problems(load.problems)
    lines += _rendered(root)
    return "\n".join(lines)


def _rendered(root: Path) -> list[str]:
    """For a cohort written by `cohort render`: the findings its images do not show, per label."""
    from engine.cohort.sidecar import read_sidecar

    sidecar = read_sidecar(root)
    if not sidecar:
        return []
    undrawn = dict(sorted(sidecar.get("undrawn", {}).items(), key=lambda kv: (-kv[1], kv[0])))
    drawn = sum(sidecar.get("drawn", {}).values())
    lines = ["", f"Rendered cohort (real report text, synthetic images; {sidecar.get('source')},"
                 f" seed {sidecar.get('seed')}, {sidecar.get('image_size')} px): "
                 f"{drawn} finding mentions drawn, {sum(undrawn.values())} not drawn "
                 "(no painter for the label):"]
    for label, n in list(undrawn.items())[:MAX_PER_KIND]:
        lines.append(f"  {label}: {n}")
    if len(undrawn) > MAX_PER_KIND:
        lines.append(f"    ... and {len(undrawn) - MAX_PER_KIND} more labels (render.json)")
    return lines


def _counts(items: pd.DataFrame) -> list[str]:
    frontal = items.loc[items["view"].isin(FRONTAL_VIEWS), "study_id"].nunique()
    lines = [
        f"Usable: {items['patient_id'].nunique()} patients, {items['study_id'].nunique()} "
        f"studies, {len(items)} images; {frontal} studies have a frontal image",
        "By split:",
    ]
    extra = sorted(set(items["split"]) - set(SPLITS))
    for split in (*SPLITS, *extra):
        part = items.loc[items["split"] == split]
        lines.append(
            f"  {split:<9} {part['patient_id'].nunique():>7} patients "
            f"{part['study_id'].nunique():>8} studies {len(part):>8} images"
        )
    views = items["view"].replace("", "(unknown)").value_counts()
    lines.append("By view: " + (", ".join(f"{v} {n}" for v, n in views.items()) or "none"))
    return lines


def _stats(stats: dict[str, int]) -> list[str]:
    """The adapter's counters: the totals always, the losses only when not zero."""
    keys = [k for k in STAT_LABELS if k in stats] + sorted(k for k in stats if k not in STAT_LABELS)
    shown = [k for k in keys if k in ALWAYS_SHOWN or stats[k]]
    width = max((len(STAT_LABELS.get(k, k)) for k in shown), default=0)
    lines = [f"  {STAT_LABELS.get(k, k):<{width}}  {stats[k]:>8}" for k in shown]
    if len(shown) < len(keys):
        lines.append("  (no other losses)")
    return lines


def _label_coverage(items: pd.DataFrame) -> list[str]:
    studies = items.drop_duplicates("study_id")
    head = f"  {'label':<27}{'positive':>9}{'negative':>9}{'uncertain':>10}{'missing':>9}"
    lines = [head]
    for label in CHEXPERT_LABELS:
        col = studies[label]
        lines.append(
            f"  {label:<27}{int((col == 1).sum()):>9}{int((col == 0).sum()):>9}"
            f"{int((col == -1).sum()):>10}{int(col.isna().sum()):>9}"
        )
    return lines


def _problem_headline(problems: list[InputProblem]) -> str:
    if not problems:
        return "Problems: none"
    skipped = sum(p.skipped for p in problems)
    kept = len(problems) - skipped
    return f"Problems: {len(problems)} ({skipped} skipped an item, {kept} kept it)"


def _problems(problems: list[InputProblem]) -> list[str]:
    by_kind: dict[str, list[InputProblem]] = defaultdict(list)
    for problem in problems:
        by_kind[problem.kind].append(problem)
    lines = []
    for kind, group in sorted(by_kind.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        n_skipped = sum(p.skipped for p in group)
        what = "skipped" if n_skipped == len(group) else f"{n_skipped} skipped"
        lines.append(f"  {kind} ({len(group)}, {what if n_skipped else 'kept'}):")
        lines += [f"    {p}" for p in group[:MAX_PER_KIND]]
        if len(group) > MAX_PER_KIND:
            lines.append(f"    ... and {len(group) - MAX_PER_KIND} more")
    return lines
