"""A small, seeded results database for the dashboard's tests (and the latency bench), no torch.

What is real and what is synthetic:

* ``cohorts`` / ``items``: a tiny cohort registered through the engine's own path
  (`engine.cohort.table.conform` -> `CohortLoad` -> `engine.cohort.registry.register_cohort`),
  with small PNG files written by Pillow (one of them deleted afterwards, so the dashboard's
  missing-file path is exercised) and a lateral image per few studies (not ``selected``).
* ``relink_*`` and their ``runs`` rows: the real `engine.attack.stage.run_attack` on synthetic
  L2-normalised embeddings (reports = label signal + per-study noise; images = report + noise
  whose scale falls with the model's specialisation and rises as epsilon falls).
* ``models``, ``dp_runs``, ``utility`` and ``umap_points`` (and their ``runs`` rows) are
  **synthetic rows** written directly with `engine.store.replace_rows` in the layout the dp and
  umap stages write (run ids with ``runs`` rows, ``heads_cohort`` naming the training cohort of
  the DP heads), so that the dashboard's tests run in seconds without torch. The dashboard is
  also tested on a database the engine itself writes (tests/test_run_identity.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from engine import store
from engine.attack.stage import AttackConfig, run_attack
from engine.cohort.registry import register_cohort
from engine.cohort.table import CohortLoad, conform
from engine.core.labels import CHEXPERT_LABELS
from engine.errors import InputProblem

COHORT = "phantom-test"
# (name, specialisation, image noise scale of the original heads)
MODELS = (("ladder-0-untrained", 0, 6.0), ("ladder-1-mid", 1, 1.6), ("ladder-2-specialist", 2, 0.7))
SPECIALIST = MODELS[-1][0]
# DP heads of the specialist: (heads label, epsilon, extra noise scale)
DP_HEADS = (("1", 1.0, 2.2), ("inf", math.inf, 0.9))
# The same sweep started from the model's own heads (issue 20's `start`), and an adaptive
# attacker's refitted heads (issue 21): attack rows like any heads, kept apart by their labels.
START_HEADS = (("1+original", 1.0, 1.0), ("inf+original", math.inf, 0.8))
ADAPTIVE_HEADS = (("adaptive+public-phantom-b", "public", "phantom-b", None, 865, 1.2),
                  ("adaptive+known-5pct", "known", None, 0.05, 2, 1.0))

# Label patterns (the matched-negative key); few, so matched pools exist in a tiny cohort.
PATTERNS = (
    {"No Finding": 1.0},
    {"Pleural Effusion": 1.0, "Support Devices": 1.0},
    {"Cardiomegaly": 1.0, "Edema": -1.0},
    {"Lung Opacity": 1.0, "Pneumonia": 1.0, "Pleural Effusion": 0.0},
)
PHRASES = {
    "No Finding": ["No acute cardiopulmonary process.", "Lungs are clear.",
                   "No focal consolidation, effusion or pneumothorax."],
    "Pleural Effusion": ["Small {side} pleural effusion.", "Moderate {side} effusion with "
                         "basilar atelectasis.", "Layering {side} pleural fluid."],
    "Support Devices": ["Right IJ catheter tip in the mid SVC.", "Endotracheal tube 4 cm above "
                        "the carina.", "Left chest wall pacer with leads in standard position."],
    "Cardiomegaly": ["Moderate cardiomegaly.", "The heart is enlarged.", "Stable enlargement "
                     "of the cardiac silhouette."],
    "Edema": ["Possible mild interstitial edema.", "Cannot exclude early pulmonary edema."],
    "Lung Opacity": ["Patchy opacity in the {side} lower lobe.", "New {side} basilar opacity."],
    "Pneumonia": ["Findings concerning for pneumonia.", "Could represent infection."],
}


@dataclass(frozen=True)
class Seeded:
    """What `build` made: the database and the facts tests need."""

    db: Path
    root: Path
    cohort: str
    models: tuple[str, ...]
    specialist: str
    missing_image: str
    n_test: int


def _report(rng: np.random.Generator, pattern: dict, study: int, patient: int) -> str:
    side = rng.choice(["right", "left", "bilateral"])
    lines = ["FINDINGS:"]
    for name, value in pattern.items():
        if value == 0.0 or name not in PHRASES:
            continue
        lines.append(str(rng.choice(PHRASES[name])).format(side=side))
    if study % 3:
        date = f"{2100 + patient}-0{1 + study % 9}-1{study % 10}"
        lines.append(f"Compared to the prior study of {date}, "
                     f"{rng.choice(['unchanged', 'slightly improved', 'new since'])}.")
    lines.append(f"IMPRESSION: {rng.choice(['As above.', 'See findings.', 'Stable.'])}")
    return "\n".join(lines)


def _cohort(root: Path, n_patients: int, studies: int, rng, *, images: bool, laterals: bool,
            test_of: tuple[int, int]):
    rows = []
    for p in range(n_patients):
        split = "test" if p % test_of[1] < test_of[0] else "train"
        for s in range(studies):
            k = p * studies + s
            pattern = PATTERNS[(p + s) % len(PATTERNS)]
            base = dict(study_id=f"s{k:05d}", patient_id=f"p{p:05d}", split=split,
                        report_text=_report(rng, pattern, k, p), **pattern)
            rows.append(dict(base, image_id=f"i{k:05d}", view="PA" if k % 2 else "AP",
                             image_path=f"images/p{p:05d}/i{k:05d}.png"))
            if laterals and k % 5 == 0:
                rows.append(dict(base, image_id=f"i{k:05d}-lat", view="LATERAL",
                                 image_path=f"images/p{p:05d}/i{k:05d}-lat.png"))
    frame = conform(pd.DataFrame(rows))
    if images:
        for row in frame.itertuples():
            path = root / row.image_path
            path.parent.mkdir(parents=True, exist_ok=True)
            g = np.linspace(40, 200, 64, dtype=np.float32)
            pixels = (np.add.outer(g, g[::-1]) / 2 + rng.normal(0, 12, (64, 64))).clip(0, 255)
            Image.fromarray(pixels.astype(np.uint8), "L").save(path)
    return frame


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def build(
    folder: Path,
    *,
    n_patients: int = 16,
    studies_per_patient: int = 3,
    pool_sizes: tuple[int, ...] = (5, 10),
    dim: int = 32,
    n_boot: int = 50,
    images: bool = True,
    laterals: bool = True,
    test_of: tuple[int, int] = (1, 2),
    seed: int = 0,
    progress=None,
) -> Seeded:
    """Build the seeded database under `folder` and return where things are.

    Defaults give 48 studies (24 held-out, 24 members), 3 models, DP heads ``1`` and ``inf`` for
    the specialist, the same sweep started from its original heads (``1+original``,
    ``inf+original``) and two adaptive attackers (``adaptive+public-phantom-b``,
    ``adaptive+known-5pct``, with their ``adaptive_runs`` rows).
    Patient p is held-out when ``p % test_of[1] < test_of[0]``.
    """
    folder = Path(folder)
    root, db = folder / "cohort", folder / "results.duckdb"
    rng = np.random.default_rng(seed)
    frame = _cohort(root, n_patients, studies_per_patient, rng, images=images, laterals=laterals,
                    test_of=test_of)
    problem = InputProblem(file="labels.csv", row=7, kind="missing_report",
                           message="study s99999 has no report; its 2 images were skipped")
    stored = register_cohort(db, COHORT, fmt="csv", root=root,
                             load=CohortLoad(frame, [problem]), site="A")
    items = stored[stored["selected"]].sort_values("image_id").reset_index(drop=True)
    missing = str(items.loc[items["split"] == "test", "image_id"].iloc[-1])
    if images:
        (root / items.loc[items["image_id"] == missing, "image_path"].iloc[0]).unlink()

    labels = items.loc[:, list(CHEXPERT_LABELS)].fillna(0.0).to_numpy(np.float32)
    signal = rng.normal(size=(len(CHEXPERT_LABELS), dim)).astype(np.float32)
    text = _normalise(labels @ signal + rng.normal(scale=1.0, size=(len(items), dim)))
    config = AttackConfig(pool_sizes=pool_sizes, n_boot=n_boot)
    runs = []
    for name, _, noise in MODELS:
        image = _normalise(text + rng.normal(scale=noise / math.sqrt(dim) * 4, size=text.shape))
        run_attack(db, model=name, cohort=COHORT, items=items, image_embeddings=image,
                   text_embeddings=text, config=config, progress=progress)
        runs.append((name, "original", text, image))
    for heads, _, noise in DP_HEADS + START_HEADS:
        image = _normalise(text + rng.normal(scale=noise / math.sqrt(dim) * 4, size=text.shape))
        run_attack(db, model=SPECIALIST, cohort=COHORT, items=items, image_embeddings=image,
                   text_embeddings=text, heads=heads, config=config, progress=progress)
        runs.append((SPECIALIST, heads, text, image))
    for heads, *_, noise in ADAPTIVE_HEADS:
        image = _normalise(text + rng.normal(scale=noise / math.sqrt(dim) * 4, size=text.shape))
        run_attack(db, model=SPECIALIST, cohort=COHORT, items=items, image_embeddings=image,
                   text_embeddings=text, heads=heads, config=config, progress=progress)
    _synthetic_tables(db, items, runs, rng)
    _adaptive_table(db, int((items["split"] == "test").sum()))
    return Seeded(db, root, COHORT, tuple(m[0] for m in MODELS), SPECIALIST, missing,
                  int((items["split"] == "test").sum()))


def _synthetic_tables(db: Path, items: pd.DataFrame, runs, rng) -> None:
    """models, dp_runs, utility, umap_points: synthetic until their stages exist (module doc)."""
    models = pd.DataFrame([dict(model=n, spec=f"local-dir:cache/models/{n}", specialization=s,
                                description=f"phantom ladder rung {s} (synthetic test row)")
                           for n, s, _ in MODELS])
    dp, utility, umap, run_rows = [], [], [], []
    for heads, eps, _ in DP_HEADS + START_HEADS:
        run_id = f"dp-synthetic-{heads}"
        finite = math.isfinite(eps)
        dp.append(dict(run_id=run_id, model=SPECIALIST, cohort=COHORT, epsilon=eps,
                       delta=1e-3 if finite else None,
                       patient_epsilon=2 * eps if finite else math.inf,
                       patient_delta=(1 + math.exp(eps)) * 1e-3 if finite else None,
                       noise_multiplier=1.1 if finite else 0.0,
                       max_grad_norm=1.0 if finite else math.inf, sample_rate=0.1, steps=200,
                       accountant="prv" if finite else None, privacy_unit="group",
                       heads=heads, target_epsilon=eps, heads_cohort=COHORT,
                       heads_id=f"{heads}@{COHORT}-synthetic",
                       start="original" if heads.endswith("+original") else "random"))
        run_rows.append(run_id)
    centres = rng.normal(scale=6, size=(len(PATTERNS), 2))
    keys = items.loc[:, list(CHEXPERT_LABELS)].fillna(0.0).to_numpy()
    pattern_of = np.zeros(len(items), dtype=int)
    for i, p in enumerate(PATTERNS):
        hit = np.ones(len(items), dtype=bool)
        for name in CHEXPERT_LABELS:
            hit &= keys[:, CHEXPERT_LABELS.index(name)] == p.get(name, 0.0)
        pattern_of[hit] = i
    for model, heads, text, image in runs:
        quality = {"ladder-0-untrained": 0.62, "ladder-1-mid": 0.74}.get(model, 0.82)
        quality -= {"1": 0.006, "inf": 0.001, "1+original": 0.003}.get(heads, 0.0)
        per = {label: float(np.clip(quality + rng.normal(0, 0.04), 0.5, 0.99))
               for label in CHEXPERT_LABELS}
        run_id = (f"dp-synthetic-{heads}" if heads != "original"
                  else f"dp-synthetic-{model}-original")
        run_rows.append(run_id)
        trained = None if heads == "original" else COHORT
        utility += [dict(run_id=run_id, model=model, cohort=COHORT, heads=heads, label=label,
                         auroc=v, heads_cohort=trained) for label, v in per.items()]
        utility.append(dict(run_id=run_id, model=model, cohort=COHORT, heads=heads, label="macro",
                            auroc=float(np.mean(list(per.values()))), heads_cohort=trained))
        umap_id = f"umap-synthetic-{model}-{heads}"
        run_rows.append(umap_id)
        gap = float(np.mean(np.linalg.norm(text - image, axis=1)))
        base = centres[pattern_of] + rng.normal(scale=1.2, size=(len(items), 2))
        for modality, spread in (("image", gap), ("report", 0.0)):
            xy = base + rng.normal(scale=0.3 + 2 * spread, size=base.shape)
            umap.append(pd.DataFrame(dict(run_id=umap_id, model=model, cohort=COHORT, heads=heads,
                                          heads_cohort=trained,
                                          item_id=items["image_id"].to_numpy(), modality=modality,
                                          x=xy[:, 0], y=xy[:, 1])))
    now = pd.Timestamp.now().floor("s").to_pydatetime()
    models_of = {f"dp-synthetic-{n}-original": n for n, _, _ in MODELS}
    models_of.update({f"umap-synthetic-{m}-{h}": m for m, h, _, _ in runs})
    runs_frame = pd.DataFrame([dict(
        run_id=r, stage=r.split("-")[0], model=models_of.get(r, SPECIALIST),
        cohort=COHORT, config_json=json.dumps({"synthetic": True, "note": "test placeholder"}),
        config_hash="synthetic", code_version="test", status="done", started_at=now,
        finished_at=now, seconds=0.0, n_rows=0, n_skipped=0, message="synthetic test row",
        shown_at=now)
        for r in dict.fromkeys(run_rows)])
    with store.connect_write(db) as con, store.transaction(con):
        # the lead's `start` column (issue 20), added here until the store has it
        con.execute("ALTER TABLE dp_runs ADD COLUMN IF NOT EXISTS start VARCHAR")
        store.replace_rows(con, "models", models)
        store.replace_rows(con, "dp_runs", pd.DataFrame(dp), cohort=COHORT)
        store.replace_rows(con, "utility", pd.DataFrame(utility), cohort=COHORT)
        store.replace_rows(con, "umap_points", pd.concat(umap, ignore_index=True), cohort=COHORT)
        for _, row in runs_frame.iterrows():
            store.replace_rows(con, "runs", row.to_frame().T.infer_objects(),
                               run_id=row["run_id"])


def _adaptive_table(db: Path, n_test: int) -> None:
    """``adaptive_runs`` (issue 21's layout) for the adaptive heads attacked above."""
    with store.connect_write(db) as con:
        attack = dict(con.execute(
            "SELECT heads, any_value(run_id) FROM relink_metrics WHERE model = ? AND "
            "heads LIKE 'adaptive%' GROUP BY heads", [SPECIALIST]).fetchall())
    rows = pd.DataFrame([dict(
        run_id=f"adaptive-synthetic-{i}", model=SPECIALIST, cohort=COHORT, heads=heads,
        heads_id=f"{heads}-synthetic", source=source, public_cohort=public,
        known_fraction=fraction, n_fit_pairs=n_fit, n_eval_pairs=n_test - (n_fit if fraction
                                                                           else 0),
        seed=0, epochs=5, fit_seconds=0.0, seconds=0.0, attack_run_id=attack.get(heads))
        for i, (heads, source, public, fraction, n_fit, _) in enumerate(ADAPTIVE_HEADS)])
    with store.connect_write(db) as con, store.transaction(con):
        con.execute("CREATE TABLE IF NOT EXISTS adaptive_runs (run_id VARCHAR, model VARCHAR, "
                    "cohort VARCHAR, heads VARCHAR, heads_id VARCHAR, source VARCHAR, "
                    "public_cohort VARCHAR, known_fraction DOUBLE, n_fit_pairs INTEGER, "
                    "n_eval_pairs INTEGER, seed INTEGER, epochs INTEGER, fit_seconds DOUBLE, "
                    "seconds DOUBLE, attack_run_id VARCHAR)")
        con.register("adaptive_rows", rows)
        con.execute("INSERT INTO adaptive_runs BY NAME SELECT * FROM adaptive_rows")
        con.unregister("adaptive_rows")


def same_ranks_as_original(db: Path, model: str = SPECIALIST, heads: str = "1") -> None:
    """Give `heads` exactly the original heads' per-query ranks (a change of zero, whose
    interval holds zero): the case the pages must call "no measurable change"."""
    with store.connect_write(db) as con:
        run = con.execute("SELECT DISTINCT run_id FROM relink_ranks WHERE heads = ? AND model = ?",
                          [heads, model]).fetchone()[0]
        con.execute("DELETE FROM relink_ranks WHERE heads = ? AND model = ?", [heads, model])
        con.execute("INSERT INTO relink_ranks SELECT * REPLACE (? AS run_id, ? AS heads) FROM "
                    "relink_ranks WHERE heads = 'original' AND model = ?", [run, heads, model])


def build_empty(folder: Path) -> Path:
    """A database with the schema and no rows."""
    db = Path(folder) / "empty.duckdb"
    with store.connect_write(db):
        pass
    return db


if __name__ == "__main__":  # python tests/seed_db.py OUT_DIR: a seeded database to look at
    import sys

    out = build(Path(sys.argv[1] if len(sys.argv) > 1 else "cache/seeded"))
    print(out)
