"""Hostile input never gives a wrong answer: high bit depths are windowed, tiny images and paths
outside the cohort root are refused (and never opened), split leaks are reported as such, and a
split without matched distractors still stores its results."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import bad_input_fixtures as bad
from cohort_fixtures import make_csv, write_image
from engine import images, store
from engine.cli import main
from engine.cohort.adapters import load_cohort
from engine.cohort.check import format_check_report
from engine.errors import ConfigError, StoreError

# ------------------------------------------------------------------ windowing, against references


def _naive_window(pixels: np.ndarray) -> np.ndarray:
    """Pixel by pixel, the rule of engine.images written out plainly."""
    top = int(pixels.max())
    bits = 8 if top <= 255 else next(b for b in (10, 12, 14, 16) if 2**b > top)
    out = np.zeros(pixels.shape, dtype=np.uint8)
    for idx, value in np.ndenumerate(pixels):
        out[idx] = min(255, max(0, int(math.floor(int(value) * 255 / (2**bits - 1) + 0.5))))
    return out


@pytest.mark.parametrize("top,bits", [(0, 8), (255, 8), (256, 10), (1023, 10), (1024, 12),
                                      (3000, 12), (4095, 12), (4096, 14), (16383, 14),
                                      (16384, 16), (65535, 16)])
def test_stored_bits(top, bits):
    assert images.stored_bits(top) == bits


@pytest.mark.parametrize("bits", [10, 12, 16])
def test_window_matches_the_naive_rule(bits):
    rng = np.random.default_rng(bits)
    pixels = rng.integers(0, 2**bits, (17, 23)).astype(np.uint16)
    pixels[0, 0] = 2**bits - 1  # the brightest level is present
    assert np.array_equal(images.window_to_8bit(pixels), _naive_window(pixels))


def test_float_and_signed_images_get_the_percentile_window():
    rng = np.random.default_rng(1)
    pixels = rng.normal(-200.0, 500.0, (40, 40)).astype(np.float32)
    low, high = np.percentile(pixels, (0.5, 99.5))
    expected = np.clip(np.rint((pixels - low) * 255.0 / (high - low)), 0, 255).astype(np.uint8)
    out = images.window_to_8bit(pixels)
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
    assert out.min() == 0 and out.max() == 255
    signed = np.array([[-5, 0], [5, 10]], dtype=np.int32)
    assert images.window_to_8bit(signed).min() == 0 and images.window_to_8bit(signed).max() == 255


@pytest.mark.parametrize("bits", [10, 12, 16])
def test_high_bit_png_is_windowed_like_its_8bit_rendering(tmp_path, bits):
    ref = bad.reference_pixels()
    path = bad.write_png16(tmp_path / "x.png", bad.high_bit_pixels(ref, bits))
    with Image.open(path) as img:
        assert img.mode in images.HIGH_BIT_MODES
        clipped = np.asarray(img.convert("RGB"))[..., 0]
    assert images.inspect_image(path).high_bit_depth
    out = np.asarray(images.load_image(path, "L"))
    assert out.dtype == np.uint8 and out.shape == ref.shape
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1
    rgb = np.asarray(images.load_image(path))
    assert rgb.shape == (*ref.shape, 3) and np.array_equal(rgb[..., 0], out)
    # What Pillow's conversion alone does: most of the radiograph turns white.
    assert (clipped == 255).mean() > 0.8


def test_embedding_of_a_16bit_cohort_matches_its_8bit_rendering(tmp_path):
    """Through the real pipeline (adapter, registry, embed stage): the same features."""
    import _tiny_clip as tiny
    from engine.cohort.registry import register_cohort
    from engine.embed import load_embeddings
    from engine.embed.stage import embed_cohort

    db, cache = tmp_path / "r.duckdb", tmp_path / "cache"
    csv16, refs = bad.make_high_bit_csv(tmp_path / "c16", bits=12)
    csv8 = bad.make_reference_csv(tmp_path / "c8", refs)
    for name, csv in (("c16", csv16), ("c8", csv8)):
        load = load_cohort("csv", csv.parent)
        assert load.stats["images_high_bit_depth"] == (len(refs) if name == "c16" else 0)
        register_cohort(db, name, fmt="csv", root=csv.parent, load=load)
    folder = tmp_path / "model"
    tiny.write_local_dir(folder, tiny.native_cfg(), seed=2)
    spec = f"local-dir:{folder}"
    feats = {}
    for name in ("c16", "c8"):
        embed_cohort(db, cache, spec, name)
        feats[name] = load_embeddings(cache, spec, name).image_features
    a, b = feats["c16"], feats["c8"]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.999
    # The same model on Pillow's clipped conversion fails that bar (about 0.92 here).
    import torch

    from engine.models.loading import load_model

    model = load_model(spec)
    with Image.open(csv16.parent / "img/0.png") as img:
        clipped = img.convert("RGB")
    pixels = torch.stack([model.preprocess(Image.fromarray(refs[0], "L").convert("RGB")),
                          model.preprocess(clipped)])
    with torch.no_grad():
        ref_emb, clipped_emb = model.model.encode_image(pixels, normalize=True)
    assert float((ref_emb * clipped_emb).sum()) < 0.99


# ------------------------------------------------------------------------------- tiny images


def test_one_pixel_image_is_flagged_and_counted(tmp_path):
    rows = bad.csv_rows(3)
    for i in range(3):
        (bad.write_tiny_image if i == 1 else write_image)(tmp_path / rows[i]["image_path"])
    make_csv(tmp_path, rows)
    load = load_cohort("csv", tmp_path)
    assert len(load.items) == 2 and load.stats["images_too_small"] == 1
    (problem,) = [p for p in load.problems if p.kind == "image_too_small"]
    assert problem.row == 2 and "1x1 pixels" in problem.message and problem.skipped
    report = format_check_report(load, fmt="csv", root=tmp_path)
    assert "images too small" in report and "Problems: none" not in report
    with pytest.raises(images.ImageReadError, match="1x1 pixels"):
        images.load_image(tmp_path / rows[1]["image_path"])


def test_check_reports_high_bit_depth_counts(tmp_path, capsys):
    bad.make_high_bit_csv(tmp_path, bits=12, n=3)
    assert main(["cohort", "check", "--format", "csv", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "high bit depth" in x)
    assert line.split()[-1] == "3"
    for label in ("images too small", "outside the cohort root"):
        assert next(x for x in out.splitlines() if label in x).split()[-1] == "0"


# --------------------------------------------------------------------------- containment


@pytest.fixture
def opened(monkeypatch):
    """Every path Pillow or the header check touches."""
    seen: list[str] = []
    real_open, real_inspect = Image.open, images.inspect_image

    def spy_open(fp, *a, **k):
        seen.append(str(getattr(fp, "name", fp)))  # a path, or a file opened by engine.files
        return real_open(fp, *a, **k)

    def spy_inspect(path, *a, **k):
        seen.append(str(path))
        return real_inspect(path, *a, **k)

    monkeypatch.setattr(Image, "open", spy_open)
    monkeypatch.setattr(images, "inspect_image", spy_inspect)
    return seen


def test_resolve_image_rules(tmp_path):
    root = tmp_path / "root"
    write_image(root / "a/b.jpg")
    write_image(tmp_path / "outside.jpg")
    assert images.resolve_image(root, "a/b.jpg") == (root / "a/b.jpg").resolve()
    assert images.resolve_image(root, "a/../a/b.jpg") == (root / "a/b.jpg").resolve()
    (root / "cohort.csv").write_text("image_path\n")  # --root may name the CSV file itself
    assert images.resolve_image(root / "cohort.csv", "a/b.jpg") == (root / "a/b.jpg").resolve()
    for hostile, why in ((str(tmp_path / "outside.jpg"), "absolute"),
                         ("../outside.jpg", "outside the cohort root"),
                         ("a/../../outside.jpg", "outside the cohort root"),
                         ("C:\\data\\x.png", "absolute"), ("", "empty")):
        with pytest.raises(images.ImagePathError, match=why):
            images.resolve_image(root, hostile, where="cohort.csv, row 7")
    with pytest.raises(images.ImagePathError, match="cohort.csv, row 7"):
        images.resolve_image(root, "../outside.jpg", where="cohort.csv, row 7")


def test_symlink_out_of_the_root_is_refused(tmp_path, opened):
    secret = write_image(tmp_path / "private" / "secret.jpg")
    rows = bad.csv_rows(2)
    write_image(tmp_path / "c" / rows[0]["image_path"])
    link = tmp_path / "c" / rows[1]["image_path"]
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(secret)
    make_csv(tmp_path / "c", rows)
    load = load_cohort("csv", tmp_path / "c")
    assert load.items["image_path"].tolist() == [rows[0]["image_path"]]
    (problem,) = [p for p in load.problems if p.kind == "image_outside_root"]
    assert "symbolic link" in problem.message and problem.row == 2
    assert not any("secret" in p for p in opened)


def test_dicom_id_with_dot_dot_is_rejected_and_never_opened(tmp_path, opened):
    root, outside = tmp_path / "mimic", tmp_path / "secret.jpg"
    bad_id = bad.make_mimic_with_escape(root, outside)
    assert images.inspect_image(outside).status == "ok"  # a readable image lies there
    opened.clear()
    load = load_cohort("mimic-cxr-jpg", root)
    assert bad_id not in set(load.items["image_id"])
    (problem,) = [p for p in load.problems if p.kind == "image_outside_root"]
    assert problem.file.startswith("mimic-cxr-2.0.0-metadata") and problem.row == 1
    assert "outside the cohort root" in problem.message and "'..'" in problem.message
    assert load.stats["images_outside_root"] == 1
    assert not any(Path(p).name == "secret.jpg" for p in opened)


def test_absolute_csv_path_is_rejected_and_never_opened(tmp_path, opened):
    secret = write_image(tmp_path / "elsewhere" / "secret.jpg")
    rows = bad.csv_rows(3)
    rows[2]["image_path"] = str(secret)
    for row in rows[:2]:
        write_image(tmp_path / "c" / row["image_path"])
    make_csv(tmp_path / "c", rows)
    opened.clear()
    load = load_cohort("csv", tmp_path / "c")
    assert len(load.items) == 2
    (problem,) = [p for p in load.problems if p.kind == "image_outside_root"]
    assert problem.row == 3 and "is absolute" in problem.message
    assert not any("secret" in p for p in opened)


def test_embed_refuses_a_stored_path_outside_the_root(tmp_path, opened):
    """Even when the items table was written by hand, the embed stage opens nothing outside."""
    import _tiny_clip as tiny
    from engine.embed.stage import embed_cohort

    db, cache = tmp_path / "r.duckdb", tmp_path / "cache"
    items = tiny.make_cohort(db, tmp_path / "cohort", n=6)
    secret = write_image(tmp_path / "secret.jpg")
    hostile = items["image_id"].iloc[2]
    with store.connect_write(db) as con:
        con.execute("UPDATE items SET image_path = ? WHERE image_id = ?",
                    ["../secret.jpg", hostile])
    folder = tmp_path / "model"
    tiny.write_local_dir(folder, tiny.native_cfg(), seed=1)
    opened.clear()
    result = embed_cohort(db, cache, f"local-dir:{folder}", "tiny")
    assert [s["image_id"] for s in result.skipped] == [hostile]
    assert "outside the cohort root" in result.skipped[0]["error"]
    assert result.n_items == len(items) - 1
    assert not any(Path(p).resolve() == secret.resolve() for p in opened)


# ------------------------------------------------------------------- names and split leaks


@pytest.mark.parametrize("name", ["", "   ", "a/b", "..", "x\x07y", "tab\there", "c:\\d"])
def test_cohort_add_rejects_bad_names(tmp_path, capsys, name):
    make_csv(tmp_path / "c")
    rc = main(["--db", str(tmp_path / "r.duckdb"), "cohort", "add", "--name", name,
               "--format", "csv", "--root", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "--name" in err and "Traceback" not in err
    assert not (tmp_path / "r.duckdb").exists()


def test_add_lists_a_leaking_patient_as_kept_not_skipped(tmp_path, capsys):
    make_csv(tmp_path / "c", bad.leaking_split_rows())
    for row in bad.leaking_split_rows():
        write_image(tmp_path / "c" / row["image_path"], "PNG")
    rc = main(["--db", str(tmp_path / "r.duckdb"), "cohort", "add", "--name", "leaky",
               "--format", "csv", "--root", str(tmp_path / "c")])
    out = capsys.readouterr().out
    assert rc == 0
    leak_lines = [line for line in out.splitlines() if "several splits" in line]
    assert leak_lines and all(line.lstrip().startswith("kept, but:") for line in leak_lines)
    assert "0 rows skipped" in out and "skipped:" not in out


def test_attack_records_leaked_patients(tmp_path):
    from engine.attack.stage import leak_message, leaked_patients, run_attack
    from engine.cohort.table import conform

    rng = np.random.default_rng(0)
    rows = bad.leaking_split_rows()
    items = conform(pd.DataFrame([{**r, "image_id": f"i{i}"} for i, r in enumerate(rows)]))
    # Naive reference: patients seen in both splits.
    by_patient = {p: set(g["split"]) for p, g in items.groupby("patient_id")}
    assert leaked_patients(items) == sum(len(s) > 1 for s in by_patient.values()) == 1
    assert leaked_patients(items.assign(patient_id=[f"Q{i}" for i in range(len(items))])) == 0
    emb = rng.normal(size=(len(items), 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    db = tmp_path / "r.duckdb"
    run_id, _ = run_attack(db, model="m", cohort="c", items=items, image_embeddings=emb,
                           text_embeddings=emb[::-1].copy())
    message = store.read_df(db, "SELECT message FROM runs WHERE run_id = ?", [run_id])["message"][0]
    assert message == leak_message(1) and "optimistic" in message and message.startswith("1 ")


def test_report_caveat_names_the_leak():
    from engine.attack.stage import leak_message
    from engine.report.content import _leak_note

    note = _leak_note(leak_message(3))
    assert note.startswith("3 patients") and "patient-disjoint" in note
    assert _leak_note("") == "" and _leak_note(None) == ""


# ---------------------------------------------------------- a split without matched distractors


def test_no_matched_distractor_gives_scalar_chance_and_stores(tmp_path):
    from engine.attack.ranks import count_ranks
    from engine.attack.stage import AttackConfig, pool_metrics, run_attack
    from engine.core.labels import CHEXPERT_LABELS

    n = 12
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(n, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    keys = np.array([f"k{i}" for i in range(n)], dtype=object)  # every label vector unique
    patients = np.array([f"p{i}" for i in range(n)], dtype=object)
    counts = count_ranks(emb, emb, label_keys=keys, patients=patients)
    assert (counts.n_matched == 0).all()
    rows = pool_metrics(counts, patients, AttackConfig(pool_sizes=(5,), n_boot=20))
    matched = [r for r in rows if r["negatives"] == "matched"]
    assert matched and all(isinstance(r["chance"], float) for r in rows)
    assert all(math.isnan(r["chance"]) and r["n_queries"] == 0 for r in matched
               if r["pool_size"] == n)
    # Through the store: unique labels per item, one split.
    items = pd.DataFrame({"image_id": [f"i{i}" for i in range(n)],
                          "study_id": [f"s{i}" for i in range(n)], "patient_id": patients,
                          "split": "test"})
    for j, label in enumerate(CHEXPERT_LABELS):  # label j = bit j of i: 12 distinct vectors
        items[label] = [float((i >> j) & 1) for i in range(n)]
    run_id, _ = run_attack(tmp_path / "r.duckdb", model="m", cohort="c", items=items,
                           image_embeddings=emb, text_embeddings=emb,
                           config=AttackConfig(pool_sizes=(5,), n_boot=20, splits=("test",)))
    stored = store.read_df(tmp_path / "r.duckdb", "SELECT * FROM relink_metrics WHERE run_id = ?",
                           [run_id])
    assert len(stored) and set(stored["negatives"]) == {"random", "matched"}


def test_failed_insert_is_not_masked_by_unregister(tmp_path):
    db = tmp_path / "r.duckdb"
    frame = pd.DataFrame({"cohort": ["c"], "format": ["csv"], "root": ["/x"],
                          "n_images": [np.array([1, 2])]})  # an array where a number goes
    with pytest.raises(StoreError, match="cannot store 1 rows in table 'cohorts'"):
        with store.connect_write(db) as con, store.transaction(con):
            store.replace_rows(con, "cohorts", frame, cohort="c")


def test_text_file_is_not_a_duckdb_database(tmp_path):
    path = bad.write_text_db(tmp_path / "notes.duckdb")
    for open_it in (lambda: store.connect_read(path),
                    lambda: store.connect_write(path).__enter__()):
        with pytest.raises(StoreError, match=f"not a DuckDB database: {path}"):
            open_it()


def test_register_cohort_checks_the_name_too(tmp_path):
    from engine.cohort.registry import register_cohort
    from engine.errors import check_name

    assert check_name("  site-a ") == "site-a"
    make_csv(tmp_path / "c")
    load = load_cohort("csv", tmp_path / "c")
    for name, why in (("", "cannot be empty"), ("../up", "path separators"), ("..", "usable")):
        with pytest.raises(ConfigError, match=why):
            register_cohort(tmp_path / "r.duckdb", name, fmt="csv", root=tmp_path / "c",
                            load=load)
    assert not (tmp_path / "r.duckdb").exists()


# ------------------------------------------- second round: every file a format reads (cases 1, 2)


def _in_thread(func, seconds: float = 30.0):
    """`func()` in a daemon thread; fails the test (instead of hanging it) after `seconds`."""
    import threading

    box: dict = {}

    def run():
        try:
            box["value"] = func()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s (blocked on a file?)"
    if "error" in box:
        raise box["error"]
    return box["value"]


def _kept_studies(load) -> set[str]:
    return set(load.items["study_id"])


@pytest.mark.parametrize("kind,reason", [("link_out", "outside_root"),
                                         ("dev_zero", "outside_root"),
                                         ("fifo", "not_regular"), ("huge", "too_large")])
def test_hostile_report_file_is_refused_and_named(tmp_path, kind, reason):
    from cohort_fixtures import make_mimic

    make_mimic(tmp_path / "clean")
    before = _kept_studies(load_cohort("mimic-cxr-jpg", tmp_path / "clean"))
    root = tmp_path / "mimic"
    report = bad.make_mimic_with_hostile_report(root, kind, outside=tmp_path / "passwd")
    load = _in_thread(lambda: load_cohort("mimic-cxr-jpg", root))
    (problem,) = [p for p in load.problems if p.kind.startswith("report_")]
    assert problem.kind == f"report_{reason}" and problem.skipped
    assert problem.file == report.relative_to(root).as_posix() and "not read" in problem.message
    assert load.stats["reports_refused"] == 1
    # Only that study is lost; every other one is kept as from the clean copy.
    lost = report.stem[1:]
    assert _kept_studies(load) == before - {lost}
    assert not load.items["report_text"].str.contains("root:x|secret").any()
    text = format_check_report(load, fmt="mimic-cxr-jpg", root=root)
    assert "Problems: none" not in text and f"report_{reason}" in text
    assert "reports not read" in text


def test_cohort_check_on_a_fifo_report_ends_with_one_named_line(tmp_path, capsys):
    root = tmp_path / "mimic"
    report = bad.make_mimic_with_hostile_report(root, "fifo")
    rc = _in_thread(lambda: main(["cohort", "check", "--format", "mimic-cxr-jpg",
                                  "--root", str(root)]))
    out, err = capsys.readouterr()
    assert rc == 0 and "Traceback" not in out + err
    (line,) = [x for x in out.splitlines() if "FIFO" in x]
    assert report.name in line and "not a regular file" in line


def test_table_linked_out_of_the_root_is_refused(tmp_path):
    from engine.errors import CohortError

    link = bad.make_csv_with_linked_table(tmp_path / "c", tmp_path / "elsewhere")
    with pytest.raises(CohortError, match="table .*cohort.csv resolves outside the cohort root"):
        load_cohort("csv", tmp_path / "c")
    # Naming the table itself with --root is the user's explicit choice and is read.
    assert len(load_cohort("csv", link.resolve()).items) == 2


def test_fifo_table_is_refused_without_waiting(tmp_path):
    from engine.errors import CohortError

    (tmp_path / "c").mkdir()
    os.mkfifo(tmp_path / "c" / "cohort.csv")
    with pytest.raises(CohortError, match="cohort.csv is a FIFO"):
        _in_thread(lambda: load_cohort("csv", tmp_path / "c"))


def test_openi_xml_fifo_and_link_are_skipped(tmp_path):
    from cohort_fixtures import make_openi

    paths = make_openi(tmp_path / "iu")
    xml_dir = paths["xml_dir"]
    first, second = sorted(xml_dir.glob("*.xml"))[:2]
    first.unlink()
    os.mkfifo(first)
    (tmp_path / "outside.xml").write_bytes(second.read_bytes())
    second.unlink()
    second.symlink_to(tmp_path / "outside.xml")
    load = _in_thread(lambda: load_cohort("iu-xray", tmp_path / "iu"))
    kinds = sorted(p.kind for p in load.problems if p.kind.startswith("report_"))
    assert kinds == ["report_not_regular", "report_outside_root"]
    assert load.stats["reports_refused"] == 2 and len(load.items) > 0


def test_image_replaced_by_a_fifo_after_registration_is_skipped_by_embed(tmp_path):
    import _tiny_clip as tiny
    from engine.embed.stage import embed_cohort

    db, cache = tmp_path / "r.duckdb", tmp_path / "cache"
    items = tiny.make_cohort(db, tmp_path / "cohort", n=6)
    victim = items.iloc[1]
    path = tmp_path / "cohort" / victim["image_path"]
    path.unlink()
    os.mkfifo(path)
    folder = tmp_path / "model"
    tiny.write_local_dir(folder, tiny.native_cfg(), seed=1)
    result = _in_thread(lambda: embed_cohort(db, cache, f"local-dir:{folder}", "tiny"), 120)
    assert [s["image_id"] for s in result.skipped] == [victim["image_id"]]
    assert "FIFO" in result.skipped[0]["error"] and victim["image_path"] in \
        result.skipped[0]["error"]
    assert result.n_items == len(items) - 1


def test_open_regular_refuses_devices_and_folders(tmp_path):
    from engine import files

    for path, words in (("/dev/zero", "character device"), (tmp_path, "a folder")):
        with pytest.raises(files.InputFileError, match=words) as caught:
            files.read_regular(path, max_bytes=10)
        assert caught.value.reason == "not_regular"
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * 11)
    with pytest.raises(files.InputFileError, match="over the limit") as caught:
        files.read_regular(big, max_bytes=10)
    assert caught.value.reason == "too_large"
    assert files.read_regular(big, max_bytes=11) == b"x" * 11


# ------------------------------------------------------------- case 3: epsilons above the ceiling


@pytest.mark.parametrize("value", ["1000", "1e9", "64.5"])
def test_huge_epsilon_is_refused_in_one_line(tmp_path, capsys, value):
    db = store_with_a_run(tmp_path)
    before = db.read_bytes()
    rc = main(["--db", str(db), "dp", "--model", "m", "--cohort", "c", f"--epsilons=1,{value}"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "ceiling of 64" in err
    assert f"epsilon={float(value):g}" in err
    assert db.read_bytes() == before  # nothing written, nothing lost


def store_with_a_run(tmp_path) -> Path:
    from cohort_fixtures import make_csv as _make
    from engine.cohort.registry import register_cohort

    _make(tmp_path / "c")
    db = tmp_path / "r.duckdb"
    register_cohort(db, "c", fmt="csv", root=tmp_path / "c",
                    load=load_cohort("csv", tmp_path / "c"))
    return db


def test_budget_check_refuses_a_huge_epsilon_before_any_accountant(monkeypatch):
    from engine.dp import accounting

    def never(*a, **k):
        raise AssertionError("an accountant was asked")

    monkeypatch.setattr(accounting, "epsilon_for", never)
    for value in (1000.0, 1e9, 64.000001):
        with pytest.raises(accounting.PrivacyBudgetError, match="ceiling of 64"):
            accounting.check_budget(value, delta=1e-5, sample_rate=0.01, steps=100,
                                    accountant="prv", max_noise_multiplier=1000.0)
    assert accounting.check_epsilon(64) == 64 and math.isinf(accounting.check_epsilon(math.inf))
    with pytest.raises(accounting.PrivacyBudgetError, match="positive"):
        accounting.check_epsilon(0)


# ----------------------------------------------------- case 4: one report file per (model, cohort)


def test_report_stems_are_unique_per_exact_names():
    from engine.report import report_stem

    assert report_stem("phantom-r3", "site-a") == "phantom-r3__site-a"  # plain names unchanged
    pairs = [("phantom-r3", "col x"), ("phantom-r3", "col-x"), ("phantom-r3", "Col-x"),
             ("a__b", "c"), ("a", "b__c"), ("m/x", "c"), ("m?x", "c")]
    stems = [report_stem(m, c) for m, c in pairs]
    assert len(set(stems)) == len(stems)
    assert len({s.lower() for s in stems}) == len(stems)  # case-insensitive disks too
    assert all(set(s) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
               for s in stems)


def test_two_cohorts_whose_names_differ_in_punctuation_keep_both_reports(seeded, tmp_path):
    import report_fixtures as rf
    from engine.report import write_report

    db = rf.copy_db(seeded.db, tmp_path / "db")
    rf.rename_cohort(db, seeded.cohort, "col x")
    first = write_report(db, model=seeded.specialist, cohort="col x", formats="json",
                         out=tmp_path / "out")["json"]
    with store.connect_write(db) as con:  # a second cohort "col-x" with the same results
        for (table,) in con.execute(
                "SELECT DISTINCT table_name FROM duckdb_columns() WHERE column_name = 'cohort' "
                "AND table_name IN (SELECT table_name FROM duckdb_tables()) "
                "AND table_name <> 'reports'").fetchall():
            con.execute(f'UPDATE "{table}" SET cohort = ? WHERE cohort = ?', ["col-x", "col x"])
    second = write_report(db, model=seeded.specialist, cohort="col-x", formats="json",
                          out=tmp_path / "out")["json"]
    assert first != second and first.is_file() and second.is_file()
    assert '"col x"' in first.read_text(encoding="utf-8")
    rows = store.read_df(db, "SELECT cohort, path FROM reports ORDER BY cohort")
    assert rows["cohort"].tolist() == ["col x", "col-x"]
    assert rows["path"].tolist() == [str(first.resolve()), str(second.resolve())]


# ------------------------------------------------------------ case 5: CSV formula neutralisation


def test_formula_cells_are_neutralised_and_numbers_kept():
    from engine.core.spreadsheet import neutralise_cell, safe_csv

    for hostile in (bad.FORMULA_PATIENT, bad.FORMULA_REPORT, "+1+1", "@SUM(A1)", "\t=1",
                    "\r=1", "-", "=", "-1-1"):
        assert neutralise_cell(hostile) == "'" + hostile
    for kept in ("-1", "-1.0", "+0.5", "-2e-3", "P1", "a=b", "", " =1"):
        assert neutralise_cell(kept) == kept
    assert neutralise_cell(-1.5) == -1.5 and neutralise_cell(None) is None
    frame = pd.DataFrame({"patient_id": [bad.FORMULA_PATIENT, "P2"],
                          "report": [bad.FORMULA_REPORT, "Normal."], "score": [-0.5, 0.25],
                          "label": ["-1", "1"]})
    back = pd.read_csv(__import__("io").StringIO(safe_csv(frame)), dtype=str)
    assert back["patient_id"].tolist() == ["'" + bad.FORMULA_PATIENT, "P2"]
    assert back["report"].tolist() == ["'" + bad.FORMULA_REPORT, "Normal."]
    assert back["score"].tolist() == ["-0.5", "0.25"] and back["label"].tolist() == ["-1", "1"]
    assert frame["patient_id"][0] == bad.FORMULA_PATIENT  # the caller's frame is untouched


def test_dashboard_downloads_are_neutralised(monkeypatch):
    from dashboard import ui

    made = {}
    monkeypatch.setattr(ui.st, "download_button",
                        lambda label, data, **k: made.update(data=data, name=k["file_name"]))
    frame = pd.DataFrame({"patient_id": [bad.FORMULA_PATIENT], "report": [bad.FORMULA_REPORT]})
    ui.download(frame, "candidates")
    text = made["data"]().decode("utf-8")
    assert made["name"] == "candidates.csv"
    rows = pd.read_csv(__import__("io").StringIO(text), dtype=str)
    assert rows.iloc[0].tolist() == ["'" + bad.FORMULA_PATIENT, "'" + bad.FORMULA_REPORT]


def test_every_csv_is_written_through_the_neutraliser():
    """No module writes CSV itself, except the synthetic dataset files (engine inputs that
    mirror a release's exact format, documented in docs/input-checks.md)."""
    root = Path(__file__).resolve().parent.parent
    allowed = {"engine/core/spreadsheet.py", "synthetic/cohort/layouts.py",
               "synthetic/render/release.py"}
    offenders = []
    for folder in ("engine", "synthetic", "dashboard"):
        for path in (root / folder).rglob("*.py"):
            rel = path.relative_to(root).as_posix()
            text = path.read_text(encoding="utf-8")
            if rel not in allowed and (".to_csv(" in text or "csv.writer" in text):
                offenders.append(rel)
    assert offenders == []


# ----------------------------------------------------------- case 6: a bad results database


@pytest.mark.parametrize("kind,words", [("empty", "is an empty file"),
                                        ("folder", "is a folder"),
                                        ("text", "is not a DuckDB database"),
                                        ("newer", "schema version 99")])
def test_dashboard_names_a_bad_database(tmp_path, kind, words):
    from dashboard import data

    path = bad.write_bad_db(tmp_path / "r.duckdb", kind)
    state = data.db_state(path)
    assert not state.exists and words in state.problem and str(path) in state.problem
    assert state.problem.count("\n") == 0


def test_dashboard_schema_version_is_the_engines():
    from dashboard import data

    assert data.SCHEMA_VERSION == store.SCHEMA_VERSION


@pytest.mark.parametrize("kind", ["empty", "newer"])
def test_dashboard_page_on_a_bad_database_shows_one_notice(tmp_path, monkeypatch, kind):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    st.cache_data.clear()
    path = bad.write_bad_db(tmp_path / "r.duckdb", kind)
    monkeypatch.setenv("RELINK_DB", str(path))
    app = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
    at = AppTest.from_file(str(app), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    (notice,) = at.error
    assert str(path).replace("_", "\\_") in notice.value or path.name in notice.value
    if kind == "newer":
        before = path.read_bytes()
        assert "schema version 99" in notice.value
        assert path.read_bytes() == before  # read only, never upgraded or rewritten


# --------------------------------------------------- case 7: a full disk names the file, cleans up


def test_full_disk_while_saving_heads_names_the_file_and_leaves_no_temporary(tmp_path,
                                                                              monkeypatch):
    import errno
    import shutil

    import torch

    from engine import files, heads

    folder = tmp_path / "emb"
    folder.mkdir()
    image, text = torch.nn.Linear(4, 3), torch.nn.Linear(5, 3)
    heads.save_into(folder, image, text, logit_scale=1.0, logit_bias=None)
    kept = (folder / "heads.pt").read_bytes()

    def full(obj, target, *a, **k):
        Path(target).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")

    monkeypatch.setattr(torch, "save", full)
    real_usage = shutil.disk_usage
    monkeypatch.setattr(files.shutil, "disk_usage",
                        lambda p: real_usage(p)._replace(free=4096))
    with pytest.raises(OSError) as caught:
        heads.save_into(folder, image, text, logit_scale=1.0, logit_bias=None)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(folder / "heads.pt")
    from engine.cli import describe_error

    line, rc = describe_error(caught.value)
    assert rc == 2 and "no space left" in line and str(folder / "heads.pt") in line
    assert sorted(p.name for p in folder.iterdir()) == ["heads.json", "heads.pt"]
    assert (folder / "heads.pt").read_bytes() == kept  # the earlier heads are intact
    with pytest.raises(OSError, match="no space left"):
        heads.save_heads(tmp_path / "dp-1", image, text, logit_scale=1.0, logit_bias=None)
    assert not list(tmp_path.glob("dp-1*"))


def test_full_disk_while_writing_a_report_names_the_file(seeded, tmp_path, monkeypatch):
    import errno

    import report_fixtures as rf
    from engine.cli import describe_error
    from engine.report import write_report

    db = rf.copy_db(seeded.db, tmp_path / "db")
    real = Path.write_text

    def full(self, text, *a, **k):
        if self.name.endswith(".html.tmp"):
            real(self, text[:100], *a, **k)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, text, *a, **k)

    monkeypatch.setattr(Path, "write_text", full)
    out = tmp_path / "out"
    with pytest.raises(OSError) as caught:
        write_report(db, model=seeded.specialist, cohort=seeded.cohort, formats="json,html",
                     out=out)
    line, rc = describe_error(caught.value)
    assert rc == 2 and "no space left" in line and line.endswith(".html")
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 1 and names[0].endswith(".json")  # no hidden .tmp, the JSON kept
    listed = store.read_df(db, "SELECT format, path FROM reports WHERE cohort = ?",
                           [seeded.cohort])
    assert listed["format"].tolist() == ["json"]  # what was written before stays listed


# ------------------------------------------ cases 8 and 10: control and bidi characters shown


def test_visible_markers_for_controls_and_bidi():
    from engine.core.plaintext import visible, visible_frame, visible_tree

    assert visible(bad.RLO_REPORT) == "⟦U+202E⟧evif si sisylana"
    assert visible("a\x00b\tc\nd\r") == "a⟦U+0000⟧b\tc\nd\r"
    assert visible("plain") == "plain" and visible(3) == 3
    assert visible_tree({"k\u2066": ["x\x07", 1]}) == {"k⟦U+2066⟧": ["x⟦U+0007⟧", 1]}
    frame = pd.DataFrame({"report": [bad.RLO_REPORT, "ok"], "n": [1, 2]})
    assert visible_frame(frame)["report"].tolist() == ["⟦U+202E⟧evif si sisylana", "ok"]
    assert frame["report"][0] == bad.RLO_REPORT


def test_dashboard_views_show_bidi_controls(monkeypatch):
    from dashboard import ui

    assert "\u202e" not in ui.esc(bad.RLO_REPORT) and "U+202E" in ui.esc(bad.RLO_REPORT)
    assert "\u202e" not in ui.command(bad.RLO_REPORT)
    shown = {}

    class Box:
        def text(self, value, **k):
            shown["text"] = value

    monkeypatch.setattr(ui.st, "container", lambda **k: Box())
    ui.report_text(bad.RLO_REPORT)
    assert shown["text"] == "⟦U+202E⟧evif si sisylana"
    monkeypatch.setattr(ui.st, "dataframe", lambda frame, **k: shown.update(frame=frame))
    monkeypatch.setattr(ui.st, "download_button", lambda *a, **k: None)
    ui.table(pd.DataFrame({"report_text": [bad.RLO_REPORT]}), "items")
    assert shown["frame"]["report_text"][0] == "⟦U+202E⟧evif si sisylana"


def test_nul_and_bidi_in_a_report_reach_the_html_report_as_markers(seeded, tmp_path):
    import report_fixtures as rf
    from engine.report import write_report

    db = rf.copy_db(seeded.db, tmp_path / "db")
    with store.connect_write(db) as con:
        con.execute("UPDATE items SET report_text = 'Heart\x00 size normal. ' || ? || ' ' || "
                    "report_text", [bad.RLO_REPORT])
    paths = write_report(db, model=seeded.specialist, cohort=seeded.cohort,
                         formats="json,html", out=tmp_path / "out", examples=True)
    page = paths["html"].read_text(encoding="utf-8")
    assert "\x00" not in page and "\u202e" not in page
    assert "⟦U+0000⟧" in page and "⟦U+202E⟧" in page
    doc = paths["json"].read_text(encoding="utf-8")
    assert "\\u0000" in doc and "\u202e" in doc  # the document keeps the exact text


# ------------------------------------------------------------ case 9: pool sizes left out, said


def test_pool_sizes_above_the_split_are_named(tmp_path, capsys, monkeypatch):
    from engine import audit
    from engine.attack.stage import AttackConfig, pool_size_note

    items = pd.DataFrame({"split": ["test"] * 30 + ["train"] * 70,
                          "patient_id": [f"p{i}" for i in range(100)]})
    note = pool_size_note(items, AttackConfig(pool_sizes=(10, 50, 1_000_000_000)))
    assert note.startswith("pool sizes skipped") and "1,000,000,000 in test" in note
    assert "50, 1,000,000,000 in test" in note and "1,000,000,000 in train (70 pairs" in note
    assert pool_size_note(items, AttackConfig(pool_sizes=(10, 30))) == ""

    class Inputs:
        model, cohort = "m", "c"

    Inputs.items = items
    monkeypatch.setattr(audit, "load_inputs", lambda *a: Inputs)
    monkeypatch.setattr(audit, "attack", lambda *a, **k: ("attack-1", False))
    rc = main(["--db", str(tmp_path / "r.duckdb"), "attack", "--model", "m", "--cohort", "c",
               "--pool-sizes", "10,1000000000"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    (line,) = [x for x in out.splitlines() if x.startswith("note: pool sizes skipped")]
    assert "1,000,000,000 in test (30 pairs; its full pool N=30 is stored)" in line


# ----------------------------------------------- case 11: the report frame loads nothing at all


def test_report_frame_has_a_policy_that_blocks_every_load():
    import html as html_lib
    import importlib.util
    import re

    from dashboard import ui

    hostile = ("<!DOCTYPE html><html><head><link rel='stylesheet' href='http://127.0.0.1:9/s.css'>"
               "</head><body><img src='http://127.0.0.1:9/p.png'></body></html>")
    inner = ui.with_csp(hostile)
    assert inner.startswith("<!DOCTYPE html><meta http-equiv=\"Content-Security-Policy\"")
    assert inner.index("Content-Security-Policy") < inner.index("<link")
    assert "default-src 'none'" in ui.NO_LOADS_CSP
    for directive in ui.NO_LOADS_CSP.split(";"):  # nothing but inline styles and data: URIs
        sources = directive.split()[1:]
        assert all(s in ("'none'", "'unsafe-inline'", "data:") for s in sources), directive
    assert ui.with_csp("<p>x</p>").startswith("<meta http-equiv")
    path = Path(__file__).resolve().parent.parent / "dashboard" / "app_pages" / "report.py"
    source = path.read_text(encoding="utf-8")
    code = source.split("\nctx = ui.context()")[0]  # the page's helpers, not its body
    spec = importlib.util.spec_from_loader("report_page", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(code, str(path), "exec"), module.__dict__)  # noqa: S102 - our own page file
    page = module.sandboxed(hostile)
    outer_head = page.split("<iframe")[0]
    assert ui.csp_meta() in outer_head  # the wrapper's policy, which the srcdoc frame inherits
    srcdoc = html_lib.unescape(re.search(r'srcdoc="([^"]*)"', page).group(1))
    assert srcdoc == inner
