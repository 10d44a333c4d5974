"""The finer matched-negative option: PadChest's full finding sets as the matching key.

Covers the key against a naive per-row parse of the fake PadChest rows, the registry round trip
of the ``findings`` / ``localizations`` item columns (and their migration onto an older file),
matched counts under ``findings`` against the naive full-matrix count, and both policies' rows
side by side in the database and in the shown views.
"""

from __future__ import annotations

import ast

import numpy as np
import pandas as pd
import pytest

from cohort_fixtures import PADCHEST_ROWS, make_padchest
from engine import store
from engine.attack.ranks import count_ranks, count_ranks_naive
from engine.attack.stage import AttackConfig, match_keys, pool_metrics, run_attack
from engine.cohort.adapters import padchest
from engine.cohort.registry import read_cohort, register_cohort
from engine.core.labels import CHEXPERT_LABELS
from engine.errors import ConfigError

FRONTAL = ("PA", "AP", "AP_horizontal")


def _literal(cell: str) -> list:
    """A fixture cell as Python data (the release writes Python list literals, ``nan`` bare)."""
    if cell.strip().lower() in ("", "nan"):
        return []
    return ast.literal_eval(cell.replace("nan", "None"))


def _naive_keys() -> dict[str, tuple[str, str]]:
    """study -> (findings key, findings+localizations key), one fixture row at a time."""
    by_study: dict[str, list] = {}
    for row in PADCHEST_ROWS:
        image, study, projection, report = row[0], row[3], row[8], row[12]
        if projection in FRONTAL and report.strip().lower() not in ("", "nan"):
            by_study.setdefault(study, []).append((FRONTAL.index(projection), image, row))
    out = {}
    for study, rows in by_study.items():
        row = sorted(rows)[0][2]
        findings = sorted({x.strip() for x in _literal(row[14]) if x.strip()})
        locs = {x.strip() for x in _literal(row[15]) if x.strip()}
        for group in _literal(row[16]):
            for x in group if isinstance(group, list) else [group]:
                if isinstance(x, str) and x.strip().startswith("loc "):
                    locs.add(x.strip())
        f = ";".join(findings)
        out[study] = (f, f + "|" + ";".join(sorted(locs)))
    return out


@pytest.fixture
def release(tmp_path):
    root = tmp_path / "padchest"
    make_padchest(root)
    return root


def test_finding_keys_equal_a_naive_parse_of_each_row(release):
    chosen = padchest.load(release).items  # one image per study already
    naive = _naive_keys()
    assert set(chosen["study_id"]) == set(naive)
    for policy, at in (("findings", 0), ("findings+localizations", 1)):
        keys = match_keys(chosen, AttackConfig(match=policy), cohort="pc")
        assert list(keys) == [naive[s][at] for s in chosen["study_id"]], policy
    assert naive["fakeS1"][0] == "cardiomegaly;pleural effusion"
    assert naive["fakeS2"][1].endswith("|loc basal;loc gastric chamber;loc right")


def test_a_cohort_without_finding_sets_is_refused_in_one_line():
    items = pd.DataFrame({"image_id": ["a", "b"], **{c: [0.0, 1.0] for c in CHEXPERT_LABELS}})
    for frame in (items, items.assign(findings=None)):
        with pytest.raises(ConfigError) as err:
            match_keys(frame, AttackConfig(match="findings"), cohort="mimic")
        assert "\n" not in str(err.value)
        assert "cohort mimic has no findings column" in str(err.value)
        assert "--match labels" in str(err.value)
    with pytest.raises(ConfigError, match="match='finding'"):
        AttackConfig(match="finding")


def test_registry_round_trip_and_fingerprint_of_the_new_columns(release, tmp_path):
    db = tmp_path / "r.duckdb"
    load = padchest.load(release)
    stored = register_cohort(db, "pc", fmt="padchest", root=release, load=load)
    _, items = read_cohort(db, "pc", selected_only=False)
    want = load.items.set_index("image_id")
    got = items.set_index("image_id").loc[want.index]
    assert list(got["findings"]) == list(want["findings"])
    assert list(got["localizations"]) == list(want["localizations"])
    assert (got["findings"] != "").all()
    # The finer sets are part of the content: changing one changes the fingerprint.
    other = load.items.copy()
    other.loc[0, "findings"] = other.loc[0, "findings"] + ";fake extra"
    changed = register_cohort(db, "pc", fmt="padchest", root=release,
                              load=padchest.CohortLoad(items=other))
    assert changed.attrs["fingerprint"] != stored.attrs["fingerprint"]
    # A format without them stores NULL and keeps the fingerprint it had before the columns.
    plain = load.items.drop(columns=["findings", "localizations"])
    without = register_cohort(db, "plain", fmt="csv", root=release,
                              load=padchest.CohortLoad(items=plain))
    _, back = read_cohort(db, "plain")
    assert back["findings"].isna().all() and back["localizations"].isna().all()
    assert without.attrs["fingerprint"] != stored.attrs["fingerprint"]


def test_the_columns_are_added_to_an_existing_version_2_file(release, tmp_path):
    db = tmp_path / "old.duckdb"
    with store.connect_write(db) as con:
        # A version-2 file written before the columns existed: without them, and with the
        # digest of the older definitions (engine.store re-applies them when it differs).
        con.execute("ALTER TABLE items DROP COLUMN findings")
        con.execute("ALTER TABLE items DROP COLUMN localizations")
        con.execute("UPDATE schema_views SET digest = 'older definitions'")
    register_cohort(db, "pc", fmt="padchest", root=release, load=padchest.load(release))
    _, items = read_cohort(db, "pc")
    assert items["findings"].notna().all()
    assert (store.read_df(db, "SELECT max(version) AS v FROM schema_version")["v"][0]
            == store.SCHEMA_VERSION)


def _attack_inputs(q=240, seed=0):
    """Items with finding sets finer than their labels, and grid embeddings (exact products)."""
    rng = np.random.default_rng(seed)
    d = 12
    reports = rng.normal(size=(q, d))
    images = reports + rng.normal(scale=1.0, size=(q, d))
    grid = lambda x: np.round(x / np.linalg.norm(x, axis=1, keepdims=True) * 4) / 4  # noqa: E731
    images, reports = grid(images).astype(np.float32), grid(reports).astype(np.float32)
    sets = ["normal", "cardiomegaly", "cardiomegaly;pleural effusion", "NSG tube;pneumonia",
            "pleural effusion"]
    findings = rng.choice(sets, size=q)
    labels = {c: np.where(np.char.find(findings.astype(str), "effusion") >= 0, 1.0, np.nan)
              if c == "Pleural Effusion" else np.nan for c in CHEXPERT_LABELS}
    items = pd.DataFrame({
        "image_id": [f"i{j:04d}" for j in range(q)], "study_id": [f"s{j:04d}" for j in range(q)],
        "patient_id": [f"p{j // 2:04d}" for j in range(q)],
        "split": np.where(np.arange(q) % 3 == 0, "train", "test"),
        "findings": findings, **labels,
    })
    return items, images, reports


def test_matched_counts_under_findings_equal_the_naive_count():
    items, images, reports = _attack_inputs()
    config = AttackConfig(match="findings", pool_sizes=(10, 50), n_boot=50)
    keys = match_keys(items, config)
    patients = items["patient_id"].to_numpy(dtype=object)
    fast = count_ranks(images, reports, label_keys=keys, patients=patients, chunk=32, tile=40)
    slow = count_ranks_naive(images, reports, label_keys=keys, patients=patients)
    for field in ("n_matched", "n_matched_greater", "n_matched_tied"):
        np.testing.assert_array_equal(getattr(fast, field), getattr(slow, field), err_msg=field)
    # Finer than the labels: fewer matched distractors per query than the 14-label key gives.
    by_labels = count_ranks_naive(images, reports, patients=patients,
                                  label_keys=match_keys(items, AttackConfig()))
    assert (slow.n_matched <= by_labels.n_matched).all()
    assert (slow.n_matched < by_labels.n_matched).any()
    rows = pd.DataFrame(pool_metrics(fast, patients, config))
    assert set(rows["negatives"]) == {"matched:findings"}
    for n in (10, 50):
        at = rows[(rows["pool_size"] == n) & (rows["k"] == 1)].iloc[0]
        assert at["n_queries"] == int((slow.n_matched >= n - 1).sum())
        assert at["n_excluded"] == len(items) - at["n_queries"]


def test_both_policies_coexist_in_the_database_and_the_shown_views(tmp_path):
    db = tmp_path / "a.duckdb"
    items, images, reports = _attack_inputs()
    args = dict(model="m", cohort="c", items=items, image_embeddings=images,
                text_embeddings=reports)
    small = dict(pool_sizes=(10,), n_boot=20, top_k=5)
    labels_id, reused = run_attack(db, config=AttackConfig(**small), **args)
    assert not reused
    finer_id, reused = run_attack(db, config=AttackConfig(match="findings", **small), **args)
    assert not reused and finer_id != labels_id
    stored = store.read_df(db, "SELECT run_id, negatives, count(*) AS n FROM relink_metrics "
                               "GROUP BY ALL ORDER BY ALL")
    assert set(zip(stored["run_id"], stored["negatives"])) == {
        (labels_id, "random"), (labels_id, "matched"), (finer_id, "matched:findings")}
    # The finer run adds only its matched rows; ranks and top-k stay the labels run's.
    for table in ("relink_ranks", "relink_topk", "relink_summary"):
        assert set(store.read_df(db, f"SELECT DISTINCT run_id FROM {table}")["run_id"]) == {
            labels_id}
    config = store.read_df(db, "SELECT config_json FROM runs WHERE run_id = ?", [finer_id])
    assert '"match": "findings"' in config["config_json"][0]

    def shown():
        m = store.read_df(db, "SELECT run_id, negatives FROM shown_relink_metrics")
        runs = store.read_df(db, "SELECT run_id FROM shown_runs WHERE stage = 'attack'")
        return set(zip(m["run_id"], m["negatives"])), set(runs["run_id"])

    both = ({(labels_id, "random"), (labels_id, "matched"), (finer_id, "matched:findings")},
            {labels_id, finer_id})
    assert shown() == both
    # Rerunning the default reuses its run and shows it again, the finer rows stay shown.
    again, reused = run_attack(db, config=AttackConfig(**small), **args)
    assert reused and again == labels_id
    assert shown() == both
    # Matched rows of the finer run under the 14-label name would be a mix-up: there are none.
    finer = store.read_df(db, "SELECT * FROM relink_metrics WHERE run_id = ?", [finer_id])
    assert (finer["negatives"] == "matched:findings").all()
    assert set(finer["split"]) == {"test", "train"} and len(finer["direction"].unique()) == 2


def test_cli_attack_match_findings_on_a_cohort_without_them_is_one_error_line(tmp_path, capsys):
    import _tiny_clip as tiny
    from engine.cli import main

    db, cache = tmp_path / "r.duckdb", tmp_path / "cache"
    tiny.make_cohort(db, tmp_path / "cohort", n=8)
    tiny.write_local_dir(tmp_path / "model", tiny.native_cfg(), seed=1)
    base = ["--db", str(db), "--cache", str(cache)]
    spec = ["--model", f"local-dir:{tmp_path / 'model'}", "--cohort", "tiny"]
    assert main([*base, "embed", *spec]) == 0
    capsys.readouterr()
    assert main([*base, "attack", *spec, "--pool-sizes", "2", "--match", "findings"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("error: --match findings: cohort tiny has no findings column")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert main([*base, "attack", *spec, "--match", "finding"]) == 2
    assert "--match" in capsys.readouterr().err
    # The default policy still attacks the same cohort.
    assert main([*base, "attack", *spec, "--pool-sizes", "2"]) == 0


def test_dashboard_curves_leave_out_every_matched_full_row_and_draw_finer_dash_dot():
    from dashboard import charts, logic

    rows = [dict(model="m", split="test", heads="original", direction="image_to_report", k=1,
                 negatives=neg, pool_size=n, recall=0.5, lift=n / 2, ci_low=0.4, ci_high=0.6,
                 chance=1 / n, n_queries=5, n_excluded=0)
            for neg in ("random", "matched", "matched:findings") for n in (10, 40)]
    curves = logic.lift_curves(pd.DataFrame(rows))
    kept = set(zip(curves["negatives"], curves["pool_size"]))
    assert kept == {("random", 10), ("random", 40), ("matched", 10), ("matched:findings", 10)}
    spec = charts.random_vs_matched(curves).to_dict()
    scale = spec["layer"][1]["encoding"]["strokeDash"]["scale"]  # the lines' dash per kind
    dashes = dict(zip(scale["domain"], scale["range"]))
    assert dashes["matched:findings negatives"] == charts.DASHES["dashdot"]
    assert dashes["matched negatives"] == charts.DASHES["dash"]
    assert dashes["random negatives"] == charts.DASHES["solid"]
    # the chart draws no matched row of the full pool: every drawn N is a stored pool size
    drawn = {(v["negatives"], v["pool_size"]) for v in next(iter(spec["datasets"].values()))}
    assert drawn == {(f"{n} negatives", s) for n, s in kept}
