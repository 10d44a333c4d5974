"""IU X-ray / OpenI (Indiana University): the original OpenI release and the Kaggle copy.

Layouts read, under the cohort root (the first one found is used):

**OpenI original** (as NLM distributes it)::

    ecgen-radiology/<n>.xml     one report per file (or the archive NLMCXR_reports.tgz itself,
                                or ecgen-radiology.tgz); FINDINGS / IMPRESSION / INDICATION /
                                COMPARISON, MeSH major and automatic tags, one parentImage per
                                image (id CXR<n>_IM-<a>-<b>, sometimes with a -<c> suffix)
    NLMCXR_png/<image id>.png   the images
    nlmcxr_dicom_metadata.csv[.gz]  optional: ``imageid, View Position`` (as torchxrayvision
                                ships it) for the views

**Kaggle copy** (raddar/chest-xrays-indiana-university)::

    indiana_reports.csv       uid, MeSH, Problems, image, indication, comparison, findings,
                              impression (one report per uid; required: uid, findings,
                              impression)
    indiana_projections.csv   uid, filename, projection (Frontal/Lateral) (required: uid,
                              filename)
    images/images_normalized/1_IM-0001-4001.dcm.png   (also accepted: images_normalized/, images/)

The two name the same things differently: report ``<n>.xml`` is Kaggle uid ``n`` and image
``CXR1_1_IM-0001-3001.png`` is Kaggle ``1_IM-0001-3001.dcm.png``. Both layouts give
``study_id`` = ``patient_id`` = ``n``. What the release does not have, and what this adapter
does instead:

* No patient ids: ``patient_id`` is the report number (one study per patient as far as we can
  tell; the DICOM patient id equals it), so patient-level results equal study-level ones.
* No split: a deterministic hash of the uid puts 25% of studies in ``test`` and 75% in
  ``train`` (`ids.hash_split`), patient-disjoint by construction.
* Views: Kaggle's projection gives ``FRONTAL`` / ``LATERAL``. The OpenI XML has none; the
  optional DICOM metadata table gives PA / AP / LATERAL (noisy: about a third of the images
  have no view position); without it every view is unknown (said once, as a problem).
* No CheXpert labels: they are mapped from the MeSH major tags (and Kaggle's ``Problems``
  terms) by `openi_labels.MESH_RULES` (docs/label-mapping.md); labels no rule fires for stay
  missing. A report tagged ``normal`` gets No Finding = 1 and nothing else.

Sections come from FINDINGS and IMPRESSION; ``full`` is indication, comparison, findings and
impression, each under its header. ``XXXX`` (the release's redaction mark) stays in the text.
"""

from __future__ import annotations

import re
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd

from engine import files
from engine.cohort.adapters import (
    assembly,
    ids,
    image_check,
    loadlog,
    openi_labels,
    reports,
    tables,
)
from engine.cohort.table import CohortLoad
from engine.core.labels import CHEXPERT_LABELS
from engine.errors import CohortError

REPORTS_FILE = "indiana_reports.csv"
PROJECTIONS_FILE = "indiana_projections.csv"
IMAGE_DIRS = ("images/images_normalized", "images_normalized", "images")
FULL_SECTIONS = ("indication", "comparison", "findings", "impression")
VIEWS = {"frontal": "FRONTAL", "lateral": "LATERAL"}

OPENI_XML_DIR = "ecgen-radiology"
OPENI_ARCHIVES = ("NLMCXR_reports.tgz", "NLMCXR_reports.tar.gz", "ecgen-radiology.tgz")
OPENI_IMAGE_DIR = "NLMCXR_png"
OPENI_METADATA = ("nlmcxr_dicom_metadata.csv.gz", "nlmcxr_dicom_metadata.csv")
# DICOM View Position values of the OpenI images -> the cohort's view.
OPENI_VIEWS = {"PA": "PA", "AP": "AP", "LL": "LATERAL", "RL": "LATERAL", "LATERAL": "LATERAL",
               "LARGE LATERAL": "LATERAL"}
_XML_NAME = re.compile(r"(?:^|/)(\d+)\.xml$")


def load(root: Path, *, section: str = "both") -> CohortLoad:
    """Read an IU X-ray release at `root` (OpenI original or Kaggle copy) into the cohort table."""
    loadlog.check_section(section)
    root = Path(root)
    if (root / REPORTS_FILE).is_file() or (root / PROJECTIONS_FILE).is_file():
        return _load_kaggle(root, section)
    if _openi_source(root) is not None:
        return _load_openi(root, section)
    if not root.exists():
        raise CohortError(f"{root}: cohort root does not exist")
    raise CohortError(
        f"{root}: no IU X-ray release found (looked for {OPENI_XML_DIR}/*.xml, "
        f"{', '.join(OPENI_ARCHIVES)} for the OpenI original, or {REPORTS_FILE} + "
        f"{PROJECTIONS_FILE} for the Kaggle copy)"
    )


# --------------------------------------------------------------------------- OpenI original


def _openi_source(root: Path) -> Path | None:
    if (root / OPENI_XML_DIR).is_dir():
        return root / OPENI_XML_DIR
    return tables.find_file(root, OPENI_ARCHIVES)


def read_openi(
    source: str | Path,
    *,
    root: Path | None = None,
    log: loadlog.LoadLog | None = None,
    max_reports: int | None = None,
) -> pd.DataFrame:
    """Read the OpenI reports (XML files) into one row per report.

    Args:
        source: ``NLMCXR_reports.tgz`` (the archive as distributed; the one in the installed
            ``torchxrayvision`` package is `engine.cohort.sources.openi_reports`), a folder
            holding ``ecgen-radiology/``, or that folder itself.
        root: Folder that problems name files relative to (default: the source's folder).
        log: Where problems and counters go (a fresh one when None).
        max_reports: Keep only the reports with the this-many smallest numbers (small runs).

    Returns:
        One row per readable report, sorted by report number, columns:

        * ``report_id`` (``"n"`` of ``<n>.xml``; Kaggle's uid), ``uid`` (``"CXR<n>"``),
          ``file`` (the XML's path inside the archive or under `root`);
        * ``image_ids`` (list[str], the ``parentImage`` ids in document order, e.g.
          ``CXR1_1_IM-0001-3001``; the PNG is ``NLMCXR_png/<id>.png``);
        * ``comparison``, ``indication``, ``findings``, ``impression`` (str, whitespace
          collapsed, "" when absent);
        * ``mesh_major``, ``mesh_automatic`` (list[str], the tags as written);
        * ``mesh`` (list[dict], one per major tag, see `parse_mesh`: ``term``, ``location``,
          ``laterality``, ``severity``, ``attributes``), ``normal`` (bool: major tag ``normal``);
        * ``licence`` (the licence URL the XML states), ``_file`` (= ``file``), ``_row`` (None).

    Raises:
        CohortError: the source does not exist or holds no report XML.
    """
    path = Path(source)
    log = loadlog.LoadLog() if log is None else log
    if path.is_dir() and (path / OPENI_XML_DIR).is_dir():
        path = path / OPENI_XML_DIR
    root = (path.parent if root is None else Path(root))
    documents = list(_xml_documents(path, root))
    if not documents:
        raise CohortError(f"{path}: no OpenI report XML (<n>.xml) found")
    documents.sort(key=lambda d: int(d[0]))
    if max_reports is not None:
        documents = documents[: max(0, int(max_reports))]
    rows = []
    for number, name, data in documents:
        if isinstance(data, files.InputFileError):
            log.add(name, None, f"report_{data.reason}", f"{data}; report skipped")
            log.stats["reports_refused"] += 1
            continue
        try:
            rows.append(_parse_report_xml(number, name, data))
        except ET.ParseError as exc:
            log.add(name, None, "bad_report_xml", f"not valid XML ({exc}); report skipped")
    log.stats["studies_listed"] += len(documents)
    columns = ["report_id", "uid", "file", "image_ids", *FULL_SECTIONS, "mesh_major",
               "mesh_automatic", "mesh", "normal", "licence", "_file", "_row"]
    return pd.DataFrame(rows, columns=columns)


def _xml_documents(path: Path, root: Path):
    """(number, display name, bytes) of every ``<n>.xml`` in a folder or a tar archive.

    Every file must be a regular file inside `root`, an XML file at most
    `files.MAX_REPORT_BYTES` long (`engine.files`); a refused XML file comes with the
    `files.InputFileError` in place of its bytes, a refused archive raises CohortError.
    """
    if path.is_dir():
        for file in path.glob("*.xml"):
            match = _XML_NAME.search(file.name)
            if match:
                try:
                    files.contained(root, file, what="report XML")
                    data = files.read_regular(file, what="report XML",
                                              max_bytes=files.MAX_REPORT_BYTES)
                except files.InputFileError as exc:
                    data = exc
                yield match.group(1), tables.display_path(file, root), data
        return
    if not path.exists():
        raise CohortError(f"{path}: OpenI reports not found")
    try:
        files.contained(root, path, what="OpenI archive")
        with files.open_regular(path, what="OpenI archive") as raw, \
                tarfile.open(fileobj=raw) as archive:
            for member in archive:
                match = _XML_NAME.search(member.name)
                if member.isfile() and match:
                    data = archive.extractfile(member).read()
                    yield match.group(1), member.name, data
    except files.InputFileError as exc:
        raise CohortError(str(exc)) from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CohortError(f"{path}: cannot be read as a tar archive ({exc})") from exc


def _parse_report_xml(number: str, name: str, data: bytes) -> dict:
    doc = ET.fromstring(data)
    sections = dict.fromkeys(FULL_SECTIONS, "")
    for node in doc.iter("AbstractText"):
        label = (node.get("Label") or "").strip().lower()
        if label in sections:
            sections[label] = reports.normalise_text("".join(node.itertext()))
    major = [(n.text or "").strip() for n in doc.iter("major") if (n.text or "").strip()]
    automatic = [(n.text or "").strip() for n in doc.iter("automatic") if (n.text or "").strip()]
    licence = doc.findtext("licenseURL") or ""
    return {
        "report_id": number,
        "uid": f"CXR{number}",
        "file": name,
        "image_ids": [n.get("id") for n in doc.iter("parentImage") if n.get("id")],
        **sections,
        "mesh_major": major,
        "mesh_automatic": automatic,
        "mesh": [parse_mesh(tag) for tag in major],
        "normal": any(tag.lower() == openi_labels.NORMAL for tag in major),
        "licence": licence.strip(),
        "_file": name,
        "_row": None,
    }


def parse_mesh(tag: str) -> dict:
    """One MeSH tag as ``{term, location, laterality, severity, attributes}``.

    ``Opacity/lung/base/left/mild`` gives term ``Opacity``, location ``lung/base``,
    laterality ``left``, severity ``mild``, attributes ``""``. Qualifiers are told apart by
    the vocabularies of `openi_labels` (laterality, severity, descriptive attributes); any
    other qualifier is part of the location. Several of a kind are joined with ``/``.
    """
    term, *qualifiers = [part.strip() for part in tag.split("/")]
    kinds: dict[str, list[str]] = {"location": [], "laterality": [], "severity": [],
                                   "attributes": []}
    for q in qualifiers:
        low = q.lower()
        if low in openi_labels.LATERALITY:
            kinds["laterality"].append(low)
        elif low in openi_labels.SEVERITY:
            kinds["severity"].append(low)
        elif low in openi_labels.ATTRIBUTES:
            kinds["attributes"].append(low)
        elif low:
            kinds["location"].append(low)
    return {"term": term, **{k: "/".join(v) for k, v in kinds.items()}}


def mesh_labels(tags: list[str], terms: list[str] = ()) -> np.ndarray:
    """[14] float labels (1 or NaN) from MeSH tags (with qualifiers) and bare terms."""
    out = np.full(len(CHEXPERT_LABELS), np.nan)
    col = {label: i for i, label in enumerate(CHEXPERT_LABELS)}
    parsed = [_term_and_qualifiers(t) for t in tags] + [(t.strip().lower(), set()) for t in terms]
    if any(term == openi_labels.NORMAL for term, _ in parsed):
        out[col["No Finding"]] = 1.0
        return out
    for term, quals in parsed:
        for rule_term, qualifier, label in openi_labels.MESH_RULES:
            if term == rule_term and (not qualifier or qualifier in quals):
                out[col[label]] = 1.0
    return out


def _term_and_qualifiers(tag: str) -> tuple[str, set[str]]:
    term, *quals = [" ".join(p.lower().split()) for p in tag.split("/")]
    return term, set(quals)


def _openi_views(root: Path, log: loadlog.LoadLog) -> dict[str, str]:
    """image id -> view, from the optional DICOM metadata table; {} when there is none."""
    path = tables.find_file(root, OPENI_METADATA)
    if path is None:
        log.add(OPENI_XML_DIR, None, "missing_views",
                f"no {' or '.join(OPENI_METADATA)} under {root}: the OpenI XML records no view, "
                "so every view is unknown (one image per study is then the first by id)",
                skipped=False)
        return {}
    table = tables.read_table(path, root, log, required=("imageid", "View Position"),
                              columns=("imageid", "View Position"))
    views = table["View Position"].str.upper().map(OPENI_VIEWS).fillna("")
    return dict(zip(table["imageid"], views))


def _load_openi(root: Path, section: str) -> CohortLoad:
    """Read the OpenI original at `root` into the cohort table."""
    log = loadlog.LoadLog()
    source = _openi_source(root)
    studies = read_openi(source, root=root, log=log)
    views = _openi_views(root, log)
    images = studies.loc[:, ["report_id", "image_ids", "_file"]].explode("image_ids")
    no_image = images["image_ids"].isna()
    for file, number in zip(images.loc[no_image, "_file"], images.loc[no_image, "report_id"]):
        log.add(file, None, "study_without_images",
                f"report {number} lists no image (parentImage); skipped")
    images = images.loc[~no_image].rename(columns={"image_ids": "image_id"})
    images = ids.drop_duplicates(images.assign(_row=None), "image_id", log, what="image id")
    log.stats["rows_listed"] = len(images)
    log.stats["images_listed"] = len(images)
    images = images.assign(
        study_id=images["report_id"],
        patient_id=images["report_id"],
        split=images["report_id"].map(ids.hash_split),
        view=[views.get(image_id, "") for image_id in images["image_id"]],
        image_path=OPENI_IMAGE_DIR + "/" + images["image_id"] + ".png",
    )
    images = image_check.check_images(images, root, log)
    log.stats["studies_without_images"] = len(studies) - images["study_id"].nunique()

    full = [
        "\n".join(f"{s.upper()}: {r[s]}" for s in FULL_SECTIONS if r[s])
        for _, r in studies.iterrows()
    ]
    sources = studies.loc[:, ["_file", "_row", "findings", "impression"]].assign(
        study_id=studies["report_id"], full=full
    )
    texts = reports.select_report_text(sources, section, log)
    images = reports.attach_reports(images, texts, log)
    labels = pd.DataFrame(
        [mesh_labels(tags) for tags in studies["mesh_major"]],
        index=studies["report_id"], columns=list(CHEXPERT_LABELS),
    )
    images = images.merge(labels, left_on="study_id", right_index=True, how="left")
    return assembly.finish(images, log, root)


# --------------------------------------------------------------------------- Kaggle copy


def _load_kaggle(root: Path, section: str) -> CohortLoad:
    """Read the Kaggle copy at `root` into the cohort table."""
    log = loadlog.LoadLog()

    reports_path = tables.require_file(root, (REPORTS_FILE,), what="IU X-ray reports table")
    projections_path = tables.require_file(
        root, (PROJECTIONS_FILE,), what="IU X-ray projections table"
    )
    report_rows = tables.read_table(
        reports_path, root, log, required=("uid", "findings", "impression"),
        text_columns=FULL_SECTIONS,
    )
    report_rows = ids.drop_blank(report_rows, ("uid",), log)
    report_rows = ids.drop_duplicates(report_rows, "uid", log, what="uid")
    projections = tables.read_table(projections_path, root, log, required=("uid", "filename"))
    log.stats["rows_listed"] = len(projections)
    projections = ids.drop_blank(projections, ("uid", "filename"), log)
    projections = ids.drop_duplicates(projections, "filename", log, what="filename")

    image_dir = next((d for d in IMAGE_DIRS if (root / d).is_dir()), IMAGE_DIRS[0])
    if "projection" in projections:
        projection = projections["projection"]
    else:
        projection = pd.Series("", index=projections.index)
        log.add(
            PROJECTIONS_FILE,
            None,
            "missing_column",
            "column 'projection' not found; every view is unknown",
            skipped=False,
        )
    images = projections.assign(
        image_id=projections["filename"],
        study_id=projections["uid"],
        patient_id=projections["uid"],
        split=projections["uid"].map(ids.hash_split),
        view=projection.str.lower().map(VIEWS).fillna(projection.str.upper()),
        image_path=image_dir + "/" + projections["filename"],
    )
    log.stats["images_listed"] = len(images)
    listed_studies = set(images["study_id"]) | set(report_rows["uid"])
    _flag_reports_without_images(report_rows, set(images["study_id"]), log)
    images = _drop_images_without_report_row(images, report_rows, log)
    images = image_check.check_images(images, root, log)
    log.stats["studies_listed"] = len(listed_studies)
    log.stats["studies_without_images"] = len(listed_studies - set(images["study_id"]))

    full = [
        "\n".join(f"{s.upper()}: {r[s]}" for s in FULL_SECTIONS if s in r and r[s])
        for _, r in report_rows.iterrows()
    ]
    sources = report_rows.loc[:, ["_file", "_row", "findings", "impression"]].assign(
        study_id=report_rows["uid"], full=full
    )
    texts = reports.select_report_text(sources, section, log)
    images = reports.attach_reports(images, texts, log)
    labels = _labels(report_rows, log)
    images = images.merge(labels, left_on="study_id", right_index=True, how="left")
    return assembly.finish(images, log, root)


def _drop_images_without_report_row(
    images: pd.DataFrame, report_rows: pd.DataFrame, log: loadlog.LoadLog
) -> pd.DataFrame:
    orphan = ~images["study_id"].isin(report_rows["uid"])
    for _, r in images.loc[orphan].iterrows():
        log.add(
            r["_file"],
            r["_row"],
            "missing_report",
            f"uid {r['uid']!r} of image {r['filename']!r} has no row in {REPORTS_FILE}; "
            "image skipped",
        )
    log.stats["images_without_report"] += int(orphan.sum())
    return images.loc[~orphan]


def _flag_reports_without_images(
    report_rows: pd.DataFrame, listed: set[str], log: loadlog.LoadLog
) -> None:
    lonely = ~report_rows["uid"].isin(listed)
    for _, r in report_rows.loc[lonely].iterrows():
        log.add(
            r["_file"],
            r["_row"],
            "study_without_images",
            f"report uid {r['uid']!r} has no image in {PROJECTIONS_FILE}; skipped",
        )


def _labels(report_rows: pd.DataFrame, log: loadlog.LoadLog) -> pd.DataFrame:
    """The 14 labels per uid (index), from the MeSH tags and Problems terms (`mesh_labels`)."""
    present = [col for col in ("Problems", "MeSH") if col in report_rows]
    if len(present) < 2:
        absent = [col for col in ("Problems", "MeSH") if col not in present]
        log.add(
            REPORTS_FILE,
            None,
            "missing_label_column",
            f"column(s) {', '.join(map(repr, absent))} not found; labels come from "
            f"{', '.join(present) or 'nothing'} only",
            skipped=False,
        )
    rows = []
    for _, r in report_rows.iterrows():
        # The normal rule reads Problems (MeSH when the table has no Problems column).
        if present and r[present[0]].strip().lower() == openi_labels.NORMAL:
            rows.append(mesh_labels([openi_labels.NORMAL]))
            continue
        tags = [t for t in r["MeSH"].split(";") if t.strip()] if "MeSH" in present else []
        terms = [t for t in r["Problems"].split(";") if t.strip()] if "Problems" in present else []
        rows.append(mesh_labels(tags, [t for t in terms if t.strip().lower() != "normal"]))
    return pd.DataFrame(rows, index=report_rows["uid"], columns=list(CHEXPERT_LABELS))
