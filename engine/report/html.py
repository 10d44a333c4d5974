"""The report as one self-contained, print-friendly HTML file.

Everything is inline: the stylesheet in a ``<style>`` element and each figure as an SVG data
URI (``<img src="data:image/svg+xml;base64,...">``), so the file opens offline, references no
URL, and each SVG keeps its own ids. Every string that comes from the document (model and cohort
names, report texts, notes) goes through `html.escape`; no document text is ever inserted as
markup.
"""

from __future__ import annotations

import base64
import html

from engine.report import outline as ol
from engine.report.figures import FigureSpec, render_svg

CSS = """
:root { --ink:#1d2733; --muted:#5b6675; --rule:#d5dbe3; --navy:#1f4e79; --soft:#f4f6f9; }
* { box-sizing: border-box; }
html { background: #e8ecf1; }
body { margin: 0; color: var(--ink); font-size: 14px; line-height: 1.5;
  font-family: "Helvetica Neue", Helvetica, Arial, "Liberation Sans", "DejaVu Sans", sans-serif; }
main { max-width: 880px; margin: 28px auto; background: #fff; padding: 44px 56px 36px;
  box-shadow: 0 1px 5px rgba(20, 30, 45, .12); }
header.title { border-bottom: 3px solid var(--navy); padding-bottom: 14px; margin-bottom: 16px; }
.kicker { text-transform: uppercase; letter-spacing: .09em; font-size: 11px; color: var(--muted);
  font-weight: 600; }
h1 { font-size: 27px; line-height: 1.2; margin: 6px 0 2px; color: var(--navy); }
.subtitle { font-size: 16px; margin: 0 0 12px; }
dl.meta { display: grid; grid-template-columns: 150px 1fr; gap: 1px 14px; margin: 0;
  font-size: 12.5px; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; overflow-wrap: anywhere; }
h2 { font-size: 17px; color: var(--navy); border-bottom: 1px solid var(--rule);
  padding-bottom: 4px; margin: 30px 0 10px; break-after: avoid; page-break-after: avoid; }
h3.subhead, p.subhead { font-size: 13.5px; font-weight: 700; margin: 14px 0 4px; }
p { margin: 6px 0; }
p.note { font-size: 12.5px; color: var(--muted); }
ul { margin: 4px 0 8px; padding-left: 20px; }
li { margin: 3px 0; }
.callout { border-left: 4px solid var(--muted); background: var(--soft); padding: 10px 14px;
  margin: 12px 0; break-inside: avoid; page-break-inside: avoid; }
.callout .ct { font-weight: 700; margin-bottom: 2px; }
.callout.risk { border-color: var(--navy); background: #edf3fa; }
.callout.risk p { font-size: 15.5px; line-height: 1.45; }
.callout.risk .ct { color: var(--navy); text-transform: uppercase; letter-spacing: .05em;
  font-size: 12px; }
.callout.warning { border-color: #b7791f; background: #fdf5e4; }
.callout.warning .ct { color: #8a5a12; }
.callout.missing { border-color: #8a94a3; background: #f2f3f5; }
.callout ul { margin: 2px 0 0; }
table { border-collapse: collapse; width: 100%; font-size: 12.5px; margin: 14px 0 10px;
  font-variant-numeric: tabular-nums; break-inside: avoid; page-break-inside: avoid; }
table.small { font-size: 11.5px; }
caption { caption-side: top; text-align: left; font-size: 12.5px; color: var(--muted);
  padding: 0 0 5px; }
thead th { border-top: 1.5px solid var(--ink); border-bottom: 1px solid var(--ink);
  font-weight: 600; padding: 4px 6px; text-align: left; vertical-align: bottom; }
tbody td { padding: 3px 6px; border-bottom: 1px solid #eceff3; vertical-align: top;
  overflow-wrap: anywhere; }
tbody tr:last-child td { border-bottom: 1.5px solid var(--ink); }
tbody tr:nth-child(even) td { background: #fafbfc; }
th.r, td.r { text-align: right; }
tr.em td { font-weight: 700; }
figure { margin: 14px 0 10px; break-inside: avoid; page-break-inside: avoid; }
figure img { width: 100%; height: auto; display: block; }
figcaption { font-size: 12.5px; color: var(--muted); margin-top: 4px; }
footer { margin-top: 28px; padding-top: 8px; border-top: 1px solid var(--rule); font-size: 11.5px;
  color: var(--muted); }
@page { size: A4; margin: 15mm 14mm 16mm; }
@media print {
  html { background: #fff; }
  body { font-size: 10pt; }
  main { box-shadow: none; margin: 0; max-width: none; padding: 0; }
  h2 { margin-top: 18pt; }
}
"""


def render_html(doc: dict, blocks: list | None = None) -> str:
    """The whole report as an HTML string (see the module docstring)."""
    blocks = ol.blocks_of(doc) if blocks is None else blocks
    body = "\n".join(_block(b, doc) for b in blocks)
    e = html.escape
    footer = (f"Generated {e(doc['generated_at'])} by relink-audit "
              f"{e(doc['engine']['code_version'])} from {e(doc['database']['path'])}. "
              "Report schema version "
              f"{e(doc['schema_version'])}; the same content is in the JSON document.")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{e(doc['title'])}: {e(doc['model']['name'])} on {e(doc['cohort']['name'])}"
        f"</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n{body}\n"
        f"<footer>{footer}</footer>\n</main>\n</body>\n</html>\n"
    )


def _block(b, doc: dict) -> str:
    e = html.escape
    if isinstance(b, ol.Title):
        meta = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in b.meta)
        return (f"<header class=\"title\"><div class=\"kicker\">Privacy audit report</div>"
                f"<h1>{e(b.title)}</h1><p class=\"subtitle\">{e(b.subtitle)}</p>"
                f"<dl class=\"meta\">{meta}</dl></header>")
    if isinstance(b, ol.Heading):
        return f"<h{b.level + 1}>{e(b.text)}</h{b.level + 1}>"
    if isinstance(b, ol.Paragraph):
        if b.style == "subhead":
            return f"<p class=\"subhead\">{e(b.text)}</p>"
        lead = f"<strong>{e(b.lead)}</strong> " if b.lead else ""
        cls = " class=\"note\"" if b.style == "note" else ""
        return f"<p{cls}>{lead}{e(b.text)}</p>"
    if isinstance(b, ol.Bullets):
        return "<ul>" + "".join(f"<li>{e(i)}</li>" for i in b.items) + "</ul>"
    if isinstance(b, ol.Callout):
        inner = f"<div class=\"ct\">{e(b.title)}</div>"
        if b.text:
            inner += f"<p>{e(b.text)}</p>"
        if b.items:
            inner += "<ul>" + "".join(f"<li>{e(i)}</li>" for i in b.items) + "</ul>"
        return f"<div class=\"callout {e(b.tone)}\">{inner}</div>"
    if isinstance(b, ol.Table):
        return _table(b)
    if isinstance(b, ol.Figure):
        spec = FigureSpec(b.key, b.caption, b.height_in, b.draw)
        svg = render_svg(spec, doc)
        data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
        return (f"<figure id=\"figure-{e(b.key)}\"><img alt=\"{e(b.caption)}\" "
                f"src=\"data:image/svg+xml;base64,{data}\">"
                f"<figcaption>{e(b.caption)}</figcaption></figure>")
    raise TypeError(f"unknown block {type(b).__name__}")


def _table(t: ol.Table) -> str:
    e = html.escape
    align = t.align or ("l",) * len(t.columns)
    cols = ""
    if t.widths:
        total = sum(t.widths)
        cols = "<colgroup>" + "".join(f"<col style=\"width:{100 * w / total:.1f}%\">"
                                      for w in t.widths) + "</colgroup>"
    head = "".join(f"<th class=\"{a}\">{e(c)}</th>" for c, a in zip(t.columns, align))
    rows = []
    for i, row in enumerate(t.rows):
        cls = " class=\"em\"" if i in t.emphasis else ""
        cells = "".join(f"<td class=\"{a}\">{e(v)}</td>" for v, a in zip(row, align))
        rows.append(f"<tr{cls}>{cells}</tr>")
    small = " class=\"small\"" if t.font_scale < 1 else ""
    return (f"<table{small}><caption>{e(t.caption)}</caption>{cols}<thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")
