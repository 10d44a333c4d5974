"""Hostile and malformed inputs: high-bit-depth and tiny images, paths leading out of the cohort
root, patients in two splits, non-DuckDB result files. Used by test_hostile_input and test_cli."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from cohort_fixtures import (
    MIMIC_META,
    MIMIC_SPLIT,
    make_csv,
    make_mimic,
    read_csv_rows,
    write_csv,
    write_image,
)


def reference_pixels(size: int = 64, seed: int = 0) -> np.ndarray:
    """An 8-bit radiograph-like picture: a bright central column, dark fields, noise."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    column = np.exp(-(x / 0.25) ** 2)[None, :] * 150.0
    fade = np.linspace(30.0, 80.0, size, dtype=np.float32)[:, None]
    pixels = 20.0 + column + fade + rng.normal(0.0, 6.0, (size, size))
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def high_bit_pixels(reference: np.ndarray, bits: int, seed: int = 0) -> np.ndarray:
    """`reference` stored with `bits` bits in a uint16 array: each 8-bit level spread over the
    2**(bits-8) stored levels below the next one, as a detector with more bits would record it."""
    step = 2 ** (bits - 8)
    rng = np.random.default_rng(seed)
    low = rng.integers(0, step, reference.shape) if step > 1 else 0
    return (reference.astype(np.uint16) * step + low).astype(np.uint16)


def write_png16(path: Path, pixels: np.ndarray) -> Path:
    """A 16-bit grayscale PNG (Pillow mode I;16) of a uint16 array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint16)).save(path, format="PNG")
    return path


def write_png8(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(path, format="PNG")
    return path


def write_tiny_image(path: Path, size: int = 1) -> Path:
    """A `size` x `size` PNG: a valid file no model can see anything in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (size, size), 128).save(path, format="PNG")
    return path


def csv_rows(n: int, *, image: str = "img/{i}.png", split=None) -> list[dict]:
    """`n` cohort.csv rows, one patient and study each (split: a function of i, or hash)."""
    rows = []
    for i in range(n):
        row = {"image_path": image.format(i=i), "report_text": f"FINDINGS: Case {i}. "
               "IMPRESSION: Normal.", "patient_id": f"P{i}", "study_id": f"S{i}", "view": "PA"}
        if split is not None:
            row["split"] = split(i)
        rows.append(row)
    return rows


def make_high_bit_csv(root: Path, *, bits: int, n: int = 4) -> tuple[Path, list[np.ndarray]]:
    """A csv cohort of `n` `bits`-bit PNGs; returns the CSV and the 8-bit references."""
    references = []
    for i in range(n):
        ref = reference_pixels(seed=i)
        references.append(ref)
        write_png16(root / f"img/{i}.png", high_bit_pixels(ref, bits, seed=i))
    return make_csv(root, csv_rows(n, split=lambda i: "test")), references


def make_reference_csv(root: Path, references: list[np.ndarray]) -> Path:
    """The same cohort as `make_high_bit_csv` with 8-bit PNGs of the references."""
    for i, ref in enumerate(references):
        write_png8(root / f"img/{i}.png", ref)
    return make_csv(root, csv_rows(len(references), split=lambda i: "test"))


def make_mimic_with_escape(root: Path, outside: Path) -> str:
    """MIMIC tree whose first dicom_id climbs out of `root` with ``../`` to the image `outside`.

    Returns the offending dicom_id. `outside` is written (a readable JPEG), so only the
    containment check can keep it out.
    """
    make_mimic(root)
    write_image(outside)
    depth = 4  # files/pXX/pXXXXXXXX/sXXXXXXXX/
    rel = Path("../" * depth + "../" * len(root.relative_to(outside.parent).parts))
    bad_id = str(rel / outside.stem)
    for name in (MIMIC_META, MIMIC_SPLIT):
        header, rows = read_csv_rows(root / name)
        rows[0][0] = bad_id
        write_csv(root / name, header, rows)
    return bad_id


def leaking_split_rows() -> list[dict]:
    """cohort.csv rows where patient P0 has a train study and a test study."""
    rows = csv_rows(6, split=lambda i: "train" if i % 2 else "test")
    rows[1]["patient_id"] = "P0"  # P0: S0 (test) and S1 (train)
    return rows


def write_text_db(path: Path) -> Path:
    """A text file where a DuckDB results file is expected."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is a text file, not a database\n" * 4)
    return path


# ------------------------------------------------------ second round: files a format reads


def mimic_reports(root: Path) -> list[Path]:
    """The report files of a `make_mimic` tree, in study order."""
    from cohort_fixtures import MIMIC_IMAGES, mimic_report_rel

    studies = sorted({(s[0], s[1]) for s in MIMIC_IMAGES})
    return [root / mimic_report_rel(subject, study) for subject, study in studies]


def make_mimic_with_hostile_report(root: Path, kind: str, outside: Path | None = None) -> Path:
    """MIMIC tree whose first report is replaced by `kind`: ``link_out`` (a symbolic link to
    `outside`, a readable text file), ``dev_zero`` (a link to /dev/zero), ``fifo`` (a named pipe
    no one writes to) or ``huge`` (a regular file over the report size cap). Returns that path."""
    from engine.files import MAX_REPORT_BYTES

    make_mimic(root)
    report = mimic_reports(root)[0]
    report.unlink()
    if kind == "link_out":
        assert outside is not None
        outside.write_text("root:x:0:0:root:/root:/bin/bash\nFINDINGS: secret. IMPRESSION: x.\n")
        report.symlink_to(outside)
    elif kind == "dev_zero":
        report.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(report)
    elif kind == "huge":
        report.write_text("FINDINGS: " + "clear " * (MAX_REPORT_BYTES // 6 + 10))
    else:
        raise ValueError(kind)
    return report


def make_csv_with_linked_table(root: Path, elsewhere: Path) -> Path:
    """A csv cohort folder `root` (images present) whose cohort.csv is a symbolic link to a
    valid table in the folder `elsewhere`. Returns the link."""
    rows = csv_rows(2, split=lambda i: "test")
    table = make_csv(elsewhere, rows)
    for row in rows:
        write_image(root / row["image_path"], "PNG")
    (root / "cohort.csv").symlink_to(table)
    return root / "cohort.csv"


# --------------------------------------------------------------- results files the dashboard reads


def write_bad_db(path: Path, kind: str) -> Path:
    """A bad `RELINK_DB`: ``empty`` (0 bytes), ``folder``, ``text`` or ``newer`` (a real results
    database whose schema_version says 99). Returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path.mkdir()
    elif kind == "text":
        write_text_db(path)
    elif kind == "newer":
        from engine import store

        with store.connect_write(path) as con:
            con.execute("INSERT INTO schema_version (version) VALUES (99)")
    else:
        raise ValueError(kind)
    return path


# Strings a spreadsheet would run (issue 26, case 5), and a right-to-left override (case 10).
FORMULA_PATIENT = '=HYPERLINK("http://evil.example", "pid")'
FORMULA_REPORT = "-2+3+cmd|' /C calc'!A0"
RLO_REPORT = "\u202eevif si sisylana"
