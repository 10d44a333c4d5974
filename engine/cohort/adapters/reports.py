"""Report reading: section parsing, the text used for each `--section`, one report per study."""

from __future__ import annotations

import re

import pandas as pd

from engine.cohort.adapters.loadlog import LoadLog

# Section headers of radiology reports: a line starting with upper-case words and a colon
# (" FINDINGS:", "IMPRESSION:", "CLINICAL HISTORY:"). Every header ends the section before it.
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z0-9 ()/,&'-]*?)[ \t]*:(?=\s|$)", re.MULTILINE)

# Header spellings (lower case, single spaces) that mean findings or impression, after the
# normalisation of the MIMIC-CXR sectioner (MIT-LCP/mimic-cxr txt/section_parser.py),
# typos of the real reports included. Other headers are sections we do not use.
SECTION_ALIASES: dict[str, str] = {
    "findings": "findings",
    "finding": "findings",
    "findins": "findings",
    "findngs": "findings",
    "finidngs": "findings",
    "findnings": "findings",
    "findgings": "findings",
    "findindgs": "findings",
    "reference findings": "findings",
    "chest, two views": "findings",
    "impression": "impression",
    "impresson": "impression",
    "impresion": "impression",
    "impession": "impression",
    "imperssion": "impression",
    "imprssion": "impression",
    "impressoin": "impression",
    "imoression": "impression",
    "imprression": "impression",
    "mpression": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "findings and impression": "impression",
    "impression and findings": "impression",
    "findings/impression": "impression",
    "findings/ impression": "impression",
}


def normalise_text(text: str) -> str:
    """Whitespace collapsed to single spaces (sections are stored as one paragraph)."""
    return " ".join(text.split())


def normalise_full(text: str) -> str:
    """A whole report: lines stripped, blank lines dropped, line breaks kept."""
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def parse_sections(text: str) -> dict[str, str]:
    """Findings and impression of a free-text report with upper-case section headers.

    Returns:
        ``{"findings": ..., "impression": ...}``, each whitespace-normalised, empty when the
        report has no such section. Repeated sections are joined in order.
    """
    out = {"findings": [], "impression": []}
    matches = list(_HEADER.finditer(text))
    for i, m in enumerate(matches):
        name = SECTION_ALIASES.get(" ".join(m.group(1).lower().split()))
        if name is None:
            continue
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = normalise_text(text[m.end() : end])
        if body:
            out[name].append(body)
    return {k: " ".join(v) for k, v in out.items()}


def has_content(text: str) -> bool:
    """True when `text` holds more than section headers and a ``FINAL REPORT`` banner."""
    stripped = _HEADER.sub(" ", text).replace("FINAL REPORT", " ")
    return bool(stripped.strip())


def compose_report(findings: str, impression: str, full: str, section: str) -> tuple[str, bool]:
    """The report text for `section`, falling back when that section is empty.

    Fallbacks: findings -> impression -> whole report; impression -> findings -> whole
    report; both (findings, then impression, one per line) -> whichever exists -> whole
    report; full -> whole report.

    Returns:
        ``(text, fell_back)``; text is empty when the report has no content at all.
    """
    full_text = full if has_content(full) else ""
    if section == "full":
        return full_text, False
    parts = {"findings": findings, "impression": impression}
    wanted = ("findings", "impression") if section == "both" else (section,)
    present = [parts[k] for k in wanted if parts[k]]
    if len(present) == len(wanted):
        return "\n".join(present), False
    if present:
        return "\n".join(present), True
    others = [v for k, v in parts.items() if k not in wanted and v]
    if others:
        return others[0], True
    return full_text, bool(full_text)


def select_report_text(sources: pd.DataFrame, section: str, log: LoadLog) -> dict[str, str]:
    """One report text per study from candidate report rows.

    Args:
        sources: Rows with ``study_id``, ``_file``, ``_row`` and ``full`` (the whole report),
            optionally ``findings`` and ``impression`` (given sections; when these columns are
            absent the sections are parsed from ``full``). Several rows of one study are
            allowed (an image-level table); the first usable one wins.
        section: One of `table.SECTIONS`.

    Returns:
        study_id -> text, for studies with a usable report. Studies without one get an
        ``empty_report`` problem and are left out; rows whose text differs from the one
        used get a ``conflicting_report`` problem (not skipped).
    """
    given = "findings" in sources.columns and "impression" in sources.columns
    texts, fell = [], []
    for r in sources.itertuples(index=False):
        full = str(r.full)
        if given:
            findings, impression = normalise_text(r.findings), normalise_text(r.impression)
        else:
            found = parse_sections(full)
            findings, impression = found["findings"], found["impression"]
        text, fell_back = compose_report(findings, impression, normalise_full(full), section)
        texts.append(text)
        fell.append(fell_back)
    frame = sources.assign(_text=texts, _fell=fell)
    usable = frame.loc[frame["_text"] != ""]
    chosen = usable.drop_duplicates("study_id", keep="first").set_index("study_id")
    for study, grp in frame.loc[~frame["study_id"].isin(chosen.index)].groupby(
        "study_id", sort=False
    ):
        first = grp.iloc[0]
        log.add(
            first["_file"],
            first["_row"],
            "empty_report",
            f"report of study {study!r} is empty (no text in any section); study skipped",
        )
        log.stats["reports_empty"] += 1
    log.stats["reports_section_fallback"] += int(chosen["_fell"].sum())
    used = frame["study_id"].map(chosen["_text"])
    differs = used.notna() & (frame["_text"] != used)
    if differs.any():
        first_row = frame["study_id"].map(chosen["_row"])
        for idx in frame.index[differs]:
            log.add(
                frame.at[idx, "_file"],
                frame.at[idx, "_row"],
                "conflicting_report",
                f"report of study {frame.at[idx, 'study_id']!r} differs from the one in row "
                f"{first_row[idx]}, which is used for every image of the study",
                skipped=False,
            )
        log.stats["reports_conflicting"] += int(differs.sum())
    return chosen["_text"].to_dict()


def attach_reports(
    images: pd.DataFrame, texts: dict[str, str], log: LoadLog
) -> pd.DataFrame:
    """Give each image its study's report; drop images whose study has none (counted)."""
    report = images["study_id"].map(texts)
    log.stats["images_without_report"] += int(report.isna().sum())
    return images.assign(report_text=report).loc[report.notna()]
