"""The files of a rendered cohort, in the source release's own layout.

PadChest: ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz`` (the release's columns,
one row per rendered image) and the images at ``<ImageDir>/<ImageID>`` as 16-bit grayscale PNG
with 12 bits stored (as ``BitsStored_DICOM`` says). OpenI: the release's own
``ecgen-radiology/<n>.xml`` report files and ``NLMCXR_png/<parentImage id>.png``.

Every rendered cohort also gets ``README.txt`` (real report text, synthetic images, the source
and its licence) and ``render.json`` (settings, counts, and the findings drawn and not drawn per
label; `cohort check` shows the latter).
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from engine.cohort.sidecar import SIDECAR
from engine.errors import CohortError, ConfigError

if TYPE_CHECKING:
    from synthetic.render.tasks import PatientTask, RenderConfig, RenderSummary

PADCHEST_CSV = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"
OPENI_TGZ = "NLMCXR_reports.tgz"
README_HEAD = "RENDERED COHORT: REAL REPORT TEXT, SYNTHETIC IMAGES"
LICENCES = {
    "padchest": (
        "PadChest (Bustos et al., Medical Image Analysis 2020; BIMCV, Hospital San Juan,\n"
        "Alicante). Distributed for research use only: do not redistribute these reports or\n"
        "anything built from them, and do not attempt to re-identify any patient."
    ),
    "iu-xray": (
        "Indiana University chest X-ray collection (OpenI, National Library of Medicine;\n"
        "Demner-Fushman et al., JAMIA 2016). Licence: CC BY-NC-ND 4.0\n"
        "(http://creativecommons.org/licenses/by-nc-nd/4.0/), as every report file states."
    ),
}


def prepare_out(out: Path, source: str) -> None:
    """Create ``out``, or accept an earlier render of ``source`` there (to resume it)."""
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"--out {out}: exists and is not a folder")
        if any(out.iterdir()):
            sidecar = out / SIDECAR
            try:
                earlier = json.loads(sidecar.read_text(encoding="utf-8"))["source"]
            except (OSError, ValueError, KeyError):
                earlier = None
            marker = out / ".rendering"
            if earlier is None and marker.is_file():
                earlier = marker.read_text(encoding="utf-8").strip()
            if earlier != source:
                raise ConfigError(f"--out {out}: folder is not empty and holds no rendered "
                                  f"{source} cohort; choose an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / ".rendering").write_text(source, encoding="utf-8")


def write_png16(path: Path, pixels: np.ndarray) -> None:
    """Write ``uint8`` pixels as a 16-bit PNG with 12 bits used; atomically (resume-safe)."""
    from PIL import Image

    v = pixels.astype(np.uint16)
    wide = (v << 4) | (v >> 4)  # 0..255 -> 0..4095, so 255 maps to the 12-bit maximum
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    Image.fromarray(wide).save(tmp, format="PNG", compress_level=1)
    os.replace(tmp, path)


def _write_gzip_csv(path: Path, frame: pd.DataFrame) -> None:
    """Gzipped CSV with a fixed header time, so the same rows give the same bytes."""
    text = frame.to_csv(index=False, lineterminator="\n")
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                               mtime=0) as gz:
        gz.write(text.encode("utf-8"))
    os.replace(tmp, path)


@dataclass
class Plan:
    """The patients to render and how to write the release's tables afterwards."""

    tasks: list[PatientTask]
    write_tables: Callable[[], None]


def _sample_patients(ids: list[str], config: RenderConfig) -> list[str]:
    ids = sorted(set(ids))
    if config.max_patients is None or config.max_patients >= len(ids):
        return ids
    rng = np.random.default_rng([config.seed, 7])
    pick = rng.choice(len(ids), size=config.max_patients, replace=False)
    return [ids[i] for i in sorted(pick)]


# --------------------------------------------------------------------------- PadChest


def read_padchest(path: Path) -> pd.DataFrame:
    """The PadChest release table as released: every column, as text, one row per image."""
    from engine.cohort.adapters import loadlog, padchest, tables

    path = Path(path)
    frame = tables.read_table(path, path.parent, loadlog.LoadLog(), required=padchest.REQUIRED)
    return frame.drop(columns=[c for c in ("_file", "_row") if c in frame])


def _padchest_groups(row) -> tuple:
    from synthetic.render.vocabulary import padchest_groups

    sentences = [list(s) for s in (row.findings_by_sentence or []) if len(s)]
    if not sentences:
        sentences = [list(row.findings) + list(row.localizations)]
    return tuple(padchest_groups(sentences))


def plan_padchest(config: RenderConfig, out: Path) -> Plan:
    """Patients and studies of the PadChest release to render into ``out``.

    The studies are those `engine.cohort.adapters.padchest.read_release` selects (one frontal
    image with a report per study), so the adapter reads the rendered cohort back whole.
    """
    from engine.cohort import sources
    from engine.cohort.adapters import padchest
    from synthetic.render.tasks import ImageTask, PatientTask, StudyTask

    path = Path(config.release_path) if config.release_path else sources.padchest_table()
    studies = padchest.read_release(path)
    patients = set(_sample_patients(studies["patient_id"].astype(str).tolist(), config))
    studies = studies[studies["patient_id"].astype(str).isin(patients)]
    studies = studies.sort_values(["patient_id", "study_date", "study_id"], kind="stable")
    tasks: list[PatientTask] = []
    for pid, rows in studies.groupby("patient_id", sort=True):
        first = rows.iloc[0]
        age = None if pd.isna(first["age"]) else int(first["age"])
        tasks.append(PatientTask(
            source="padchest", patient_id=str(pid), sex=str(first["sex"]), age=age,
            studies=tuple(
                StudyTask(study_id=str(r.study_id),
                          images=(ImageTask(str(r.image_path), str(r.view),
                                            r.projection == "AP_horizontal"),),
                          groups=_padchest_groups(r), report=str(r.report))
                for r in rows.itertuples(index=False)),
            seed=config.seed, size=config.image_size, out=str(out)))
    chosen = set(studies["image_id"].astype(str))
    raw = read_padchest(path)
    table = raw[raw["ImageID"].isin(chosen)]
    del raw

    def write_tables() -> None:
        nonlocal table
        table = table.sort_values(["ImageDir", "ImageID"], kind="stable")
        table = table.rename(columns={c: "" for c in table.columns if c.startswith("Unnamed: 0")})
        _write_gzip_csv(out / PADCHEST_CSV, table)

    return Plan(tasks, write_tables)


# --------------------------------------------------------------------------- OpenI


OPENI_METADATA = "nlmcxr_dicom_metadata.csv.gz"


def _openi_views(image_ids: set[str]) -> dict[str, str]:
    """image id -> PA / AP / LATERAL from the package's DICOM metadata table (noisy; partial)."""
    from engine.cohort import sources
    from engine.cohort.adapters import iu_xray, loadlog, tables

    folder = sources.package_data_dir()
    path = None if folder is None else folder / OPENI_METADATA
    if path is None or not path.is_file():
        return {}
    frame = tables.read_table(path, path.parent, loadlog.LoadLog(), required=("imageid",),
                              columns=("imageid", "View Position"))
    frame = frame[frame["imageid"].isin(image_ids)]
    views = frame.get("View Position", pd.Series("", index=frame.index)).str.upper()
    return dict(zip(frame["imageid"], views.map(iu_xray.OPENI_VIEWS).fillna("")))


def _openi_xml(path: Path, names: set[str]) -> dict[str, bytes]:
    """``<n>.xml`` name -> the file's bytes, from the release archive or folder (copied as is)."""
    import tarfile

    out: dict[str, bytes] = {}
    if path.is_dir():
        folder = path / "ecgen-radiology" if (path / "ecgen-radiology").is_dir() else path
        for name in names:
            out[name] = (folder / name).read_bytes()
        return out
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in names:
                    out[base] = tar.extractfile(member).read()
    except (OSError, tarfile.TarError) as exc:
        raise CohortError(f"{path}: cannot read the OpenI archive ({exc})") from exc
    return out


def plan_openi(config: RenderConfig, out: Path) -> Plan:
    """Reports and images of the OpenI release to render into ``out``.

    Every image a report lists (``parentImage``) is drawn: frontal or lateral by the package's
    DICOM metadata where it says, else the first image frontal and the others lateral. The
    views drawn are written to ``nlmcxr_dicom_metadata.csv.gz`` (``imageid, View Position``),
    the table the ``iu-xray`` adapter reads views from.
    """
    from engine.cohort import sources
    from engine.cohort.adapters import iu_xray
    from synthetic.render.tasks import ImageTask, PatientTask, StudyTask

    path = Path(config.release_path) if config.release_path else sources.openi_reports()
    reports = iu_xray.read_openi(path)
    # the studies the adapter keeps: at least one image and some report text
    has_text = reports[list(iu_xray.FULL_SECTIONS)].astype(str).apply(
        lambda col: col.str.strip() != "").any(axis=1)
    reports = reports[(reports["image_ids"].map(len) > 0) & has_text]
    keep = set(_sample_patients(reports["uid"].astype(str).tolist(), config))
    reports = reports[reports["uid"].astype(str).isin(keep)].sort_values("uid", kind="stable")
    known = _openi_views({i for ids in reports["image_ids"] for i in ids})
    tasks, views = [], []
    for r in reports.itertuples(index=False):
        images = []
        for k, image_id in enumerate(r.image_ids):
            view = known.get(image_id, "")
            view = view or ("PA" if k == 0 else "LATERAL")
            images.append(ImageTask(f"NLMCXR_png/{image_id}.png", view, False))
            views.append({"imageid": image_id, "View Position": view})
        study = StudyTask(study_id=str(r.uid), images=tuple(images), major=tuple(r.mesh_major))
        tasks.append(PatientTask(source="iu-xray", patient_id=str(r.uid), sex=None, age=None,
                                 studies=(study,), seed=config.seed, size=config.image_size,
                                 out=str(out)))
    names = {f"{r}.xml" for r in reports["report_id"].astype(str)}

    def write_tables() -> None:
        folder = out / "ecgen-radiology"
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in sorted(_openi_xml(path, names).items()):
            target = folder / name
            tmp = target.with_name(target.name + ".part")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        _write_gzip_csv(out / OPENI_METADATA, pd.DataFrame(views, columns=["imageid",
                                                                            "View Position"]))

    return Plan(tasks, write_tables)


# --------------------------------------------------------------------------- sidecar, README


def write_sidecar(out: Path, config: RenderConfig, summary: RenderSummary, version: str) -> None:
    """``render.json``: settings, counts, and findings drawn / not drawn per label."""
    payload = {
        "source": config.source, "seed": config.seed, "image_size": config.image_size,
        "max_patients": config.max_patients, "version": version,
        "n_patients": summary.n_patients, "n_studies": summary.n_studies,
        "n_images": summary.n_images, "drawn": summary.drawn, "undrawn": summary.undrawn,
    }
    (out / SIDECAR).write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n",
                               encoding="utf-8")
    marker = out / ".rendering"
    if marker.exists():
        marker.unlink()


def write_readme(out: Path, config: RenderConfig, summary: RenderSummary) -> None:
    """``README.txt``: what this folder is, where its text comes from, and its licence."""
    n_undrawn = sum(summary.undrawn.values())
    text = f"""{README_HEAD}

This folder is a {config.source} cohort in the release's own layout. The REPORT TEXT and the
structured findings are REAL: they are copied from the public {config.source} release files
(read from the installed torchxrayvision package). The IMAGES ARE SYNTHETIC: each one was drawn
by relink-audit's phantom generator from its own study's findings, localizations, devices,
projection and patient (stable anatomy per patient), at {config.image_size} x {config.image_size}
pixels. No real image was used or is contained here.

Source and licence:
{LICENCES[config.source]}
Do not commit, publish or share this folder.

Patients: {summary.n_patients}   studies: {summary.n_studies}   images: {summary.n_images}
Render seed: {config.seed}   max patients: {config.max_patients or 'all'}
Finding mentions not drawn (no painter for the label): {n_undrawn}; per label in {SIDECAR}.
"""
    (out / "README.txt").write_text(text, encoding="utf-8")
