"""The report as an A4 PDF, laid out with matplotlib alone (no browser, no extra library).

A small flow layout places the outline's blocks (`engine.report.outline`) top to bottom on A4
pages: text is wrapped with measured glyph widths (`TextToPath`), tables wrap their cells and
repeat their header across page breaks, and each figure is drawn by the same function as in the
HTML, into a region of the page (a `SubFigure`), so the PDF's figures are the HTML's figures.
Fonts are embedded as TrueType (selectable text); DejaVu Sans ships with matplotlib, so the
output does not depend on the machine's fonts.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from engine.report import outline as ol
from engine.report.figures import INK, NAVY, STYLE, WIDTH_IN

PAGE_W, PAGE_H = 8.27, 11.69  # A4, inches
LEFT, RIGHT, TOP, BOTTOM = 0.8, 0.8, 0.85, 0.8
CONTENT_W = PAGE_W - LEFT - RIGHT
MUTED, RULE, SOFT = "#5b6675", "#d5dbe3", "#f4f6f9"
TONES = {"risk": (NAVY, "#edf3fa"), "warning": ("#b7791f", "#fdf5e4"),
         "missing": ("#8a94a3", "#f2f3f5"), "info": ("#8a94a3", SOFT)}
BODY, NOTE = 9.0, 8.0
LEADING = 1.38
KEEP_TOGETHER = 0.5  # tables shorter than this fraction of a page never split


@dataclass(frozen=True)
class _Style:
    size: float
    bold: bool = False
    color: str = INK


def write_pdf(doc: dict, path: Path, blocks: list | None = None) -> Path:
    """Render the document to `path` (see the module docstring) and return the path."""
    from matplotlib import rc_context
    from matplotlib.backends.backend_pdf import PdfPages

    blocks = ol.blocks_of(doc) if blocks is None else blocks
    path = Path(path)
    with rc_context(STYLE):
        layout = _Layout(doc)
        for i, block in enumerate(blocks):
            layout.place(block, blocks[i + 1] if i + 1 < len(blocks) else None)
        layout.finish()
        meta = {"Title": f"{doc['title']}: {doc['model']['name']} on {doc['cohort']['name']}",
                "Author": "relink-audit", "Subject": "Re-linkage privacy audit report",
                "Creator": f"relink-audit {doc['engine']['code_version']}",
                "CreationDate": None}
        with PdfPages(path, metadata=meta) as pdf:
            for page in layout.pages:
                pdf.savefig(page)
    return path


# ------------------------------------------------------------------------------ measuring


@functools.lru_cache(maxsize=8)
def _prop(size: float, bold: bool):
    from matplotlib.font_manager import FontProperties

    return FontProperties(family="DejaVu Sans", size=size, weight="bold" if bold else "normal")


@functools.lru_cache(maxsize=1)
def _measurer():
    from matplotlib.textpath import TextToPath

    return TextToPath()


@functools.lru_cache(maxsize=65536)
def _width(s: str, size: float, bold: bool) -> float:
    """Width of `s` in inches."""
    if not s:
        return 0.0
    w, _, _ = _measurer().get_text_width_height_descent(s, _prop(size, bold), ismath=False)
    return w / 72.0


def _wrap(runs: list[tuple[str, _Style]], width: float) -> list[list[tuple[str, _Style, float]]]:
    """Greedy word wrap of styled runs: lines of (text, style, x offset in inches)."""
    words: list[tuple[str, _Style]] = []
    for text, style in runs:
        for word in text.split():
            words.extend((piece, style) for piece in _split_long(word, style, width))
    lines: list[list[tuple[str, _Style, float]]] = []
    line: list[tuple[str, _Style, float]] = []
    x = 0.0
    for word, style in words:
        w = _width(word, style.size, style.bold)
        space = _width(" ", style.size, style.bold) if line else 0.0
        if line and x + space + w > width:
            lines.append(line)
            line, x, space = [], 0.0, 0.0
        if line and line[-1][1] == style:
            text, st, x0 = line[-1]
            line[-1] = (text + " " + word, st, x0)
        else:
            line.append((word, style, x + space))
        x += space + w
    if line:
        lines.append(line)
    return lines


def _split_long(word: str, style: _Style, width: float) -> list[str]:
    """Break a word wider than the line (paths, run ids) into pieces that fit."""
    if _width(word, style.size, style.bold) <= width:
        return [word]
    pieces, current = [], ""
    for ch in word:
        if current and _width(current + ch, style.size, style.bold) > width:
            pieces.append(current)
            current = ""
        current += ch
    return pieces + ([current] if current else [])


def _line_h(size: float) -> float:
    return size * LEADING / 72.0


# ------------------------------------------------------------------------------ layout


class _Layout:
    def __init__(self, doc: dict) -> None:
        self.doc = doc
        self.pages = []
        self.fig = None
        self.y = 0.0
        self._new_page()

    # -- pages
    def _new_page(self) -> None:
        from matplotlib.figure import Figure

        self.fig = Figure(figsize=(PAGE_W, PAGE_H))
        self.pages.append(self.fig)
        self.y = TOP

    def _room(self) -> float:
        return PAGE_H - BOTTOM - self.y

    def _need(self, height: float) -> None:
        if height > self._room() and self.y > TOP + 1e-6:
            self._new_page()

    def finish(self) -> None:
        n = len(self.pages)
        d = self.doc
        left = f"{d['title']} · {d['model']['name']} on {d['cohort']['name']}"
        for i, page in enumerate(self.pages, 1):
            if i > 1:
                self._text(page, LEFT, 0.45, left, _Style(7.0, color=MUTED))
                if d["cohort"]["synthetic"] is True:
                    self._text(page, PAGE_W - RIGHT, 0.45, "SYNTHETIC COHORT",
                               _Style(7.0, True, "#8a5a12"), ha="right")
                self._rule(page, 0.56, color=RULE, lw=0.5)
            foot = (f"Generated {d['generated_at'].replace('T', ' ')} · relink-audit "
                    f"{d['engine']['code_version']} · report schema {d['schema_version']}")
            self._rule(page, PAGE_H - 0.6, color=RULE, lw=0.5)
            self._text(page, LEFT, PAGE_H - 0.47, foot, _Style(7.0, color=MUTED))
            self._text(page, PAGE_W - RIGHT, PAGE_H - 0.47, f"Page {i} of {n}",
                       _Style(7.0, color=MUTED), ha="right")

    # -- primitives (y in inches from the top of the page, baseline positioning)
    @staticmethod
    def _text(fig, x: float, y: float, s: str, style: _Style, ha: str = "left") -> None:
        fig.text(x / PAGE_W, 1 - y / PAGE_H, s, ha=ha, va="baseline",
                 fontproperties=_prop(style.size, style.bold), color=style.color)

    @staticmethod
    def _rule(fig, y: float, *, x0: float = LEFT, x1: float = PAGE_W - RIGHT,
              color: str = INK, lw: float = 0.6) -> None:
        from matplotlib.lines import Line2D

        fig.add_artist(Line2D([x0 / PAGE_W, x1 / PAGE_W], [1 - y / PAGE_H] * 2,
                              transform=fig.transFigure, color=color, linewidth=lw))

    @staticmethod
    def _box(fig, x: float, y: float, w: float, h: float, color: str) -> None:
        from matplotlib.patches import Rectangle

        fig.add_artist(Rectangle((x / PAGE_W, 1 - (y + h) / PAGE_H), w / PAGE_W, h / PAGE_H,
                                 transform=fig.transFigure, facecolor=color, edgecolor="none",
                                 zorder=-1))

    def _lines(self, lines, x: float, y: float, size: float, *, right: float | None = None
               ) -> float:
        """Draw wrapped lines with the first baseline at y + ascent; return the height used."""
        lh = _line_h(size)
        for i, line in enumerate(lines):
            base = y + i * lh + size * 0.95 / 72.0
            if right is not None:
                end = line[-1]
                total = end[2] + _width(end[0], end[1].size, end[1].bold)
                shift = right - x - total
            else:
                shift = 0.0
            for text, style, x0 in line:
                self._text(self.fig, x + shift + x0, base, text, style)
        return len(lines) * lh

    def _paragraph(self, runs, size: float, *, indent: float = 0.0, space_after: float = 0.06,
                   width: float | None = None) -> None:
        width = (width or CONTENT_W) - indent
        lines = _wrap(runs, width)
        lh = _line_h(size)
        # Split across pages line by line, keeping at least two lines together.
        i = 0
        while i < len(lines):
            fit = max(0, int(self._room() / lh))
            if fit < min(2, len(lines) - i):
                self._new_page()
                continue
            chunk = lines[i:i + fit]
            self.y += self._lines(chunk, LEFT + indent, self.y, size)
            i += len(chunk)
        self.y += space_after

    # -- blocks
    def place(self, b, following=None) -> None:
        """Place one block; a heading keeps the start of the `following` block on its page."""
        handler = {ol.Title: self._title, ol.Heading: self._heading,
                   ol.Paragraph: self._para, ol.Bullets: self._bullets, ol.Callout: self._callout,
                   ol.Table: self._table, ol.Figure: self._figure}.get(type(b))
        if handler is None:
            raise TypeError(f"unknown block {type(b).__name__}")
        if isinstance(b, ol.Heading):
            self._need(_line_h(12.5) + 0.3 + self._start_height(following))
        handler(b)

    def _start_height(self, b) -> float:
        """Height of the part of a block that should not be separated from its heading."""
        if isinstance(b, ol.Figure):
            return b.height_in + 0.5
        if isinstance(b, ol.Table):
            m = _TableMetrics(b)
            if m.whole_h <= KEEP_TOGETHER * (PAGE_H - TOP - BOTTOM):
                return m.whole_h
            return m.caption_h + m.head_h + sum(m.row_hs[:3]) + 0.1
        if isinstance(b, ol.Callout):
            return self._callout_height(b) + 0.1
        return 0.6

    def _title(self, b: ol.Title) -> None:
        self._text(self.fig, LEFT, self.y + 0.12, "PRIVACY AUDIT REPORT",
                   _Style(7.5, True, MUTED))
        self.y += 0.2
        self._paragraph([(b.title, _Style(20, True, NAVY))], 20, space_after=0.02)
        self._paragraph([(b.subtitle, _Style(12))], 12, space_after=0.1)
        key_w = 1.45
        for key, value in b.meta:
            lines = _wrap([(value, _Style(8.5))], CONTENT_W - key_w)
            self._text(self.fig, LEFT, self.y + 8.5 * 0.95 / 72, key, _Style(8.5, color=MUTED))
            self.y += self._lines(lines, LEFT + key_w, self.y, 8.5)
        self.y += 0.1
        self._rule(self.fig, self.y, color=NAVY, lw=2.2)
        self.y += 0.2

    def _heading(self, b: ol.Heading) -> None:
        size = 12.5 if b.level == 1 else 10.5
        self._need(_line_h(size) + 0.8)
        self.y += 0.14
        self.y += self._lines(_wrap([(b.text, _Style(size, True, NAVY))], CONTENT_W),
                              LEFT, self.y, size)
        self._rule(self.fig, self.y + 0.02, color=RULE, lw=0.7)
        self.y += 0.1

    def _para(self, b: ol.Paragraph) -> None:
        if b.style == "subhead":
            self._need(0.8)
            self.y += 0.04
            self._paragraph([(b.text, _Style(BODY + 0.5, True))], BODY + 0.5, space_after=0.02)
            return
        size = NOTE if b.style == "note" else BODY
        colour = MUTED if b.style == "note" else INK
        runs = [(b.lead, _Style(size, True, colour))] if b.lead else []
        runs.append((b.text, _Style(size, False, colour)))
        self._paragraph(runs, size, space_after=0.07)

    def _bullets(self, b: ol.Bullets) -> None:
        for item in b.items:
            lines = _wrap([(item, _Style(BODY))], CONTENT_W - 0.2)
            self._need(min(len(lines), 2) * _line_h(BODY))
            self._text(self.fig, LEFT + 0.05, self.y + BODY * 0.95 / 72, "•", _Style(BODY))
            self._paragraph([(item, _Style(BODY))], BODY, indent=0.2, space_after=0.03)
        self.y += 0.05

    @staticmethod
    def _callout_parts(b: ol.Callout):
        bar, fill = TONES.get(b.tone, TONES["info"])
        inner = CONTENT_W - 0.3
        big = b.tone == "risk"
        size = 11.0 if big else BODY
        title_style = _Style(8.0 if big else BODY, True, bar if b.tone != "missing" else INK)
        title = _wrap([(b.title.upper() if big else b.title, title_style)], inner)
        text = _wrap([(b.text, _Style(size))], inner) if b.text else []
        items = [_wrap([(i, _Style(BODY))], inner - 0.18) for i in b.items]
        return bar, fill, size, title_style, title, text, items

    def _callout_height(self, b: ol.Callout) -> float:
        _, _, size, title_style, title, text, items = self._callout_parts(b)
        return (0.24 + len(title) * _line_h(title_style.size) + 0.03
                + len(text) * _line_h(size) + sum(len(i) * _line_h(BODY) + 0.03 for i in items))

    def _callout(self, b: ol.Callout) -> None:
        bar, fill, size, title_style, title, text, items = self._callout_parts(b)
        height = self._callout_height(b)
        self._need(height + 0.1)
        self.y += 0.04
        top = self.y
        self._box(self.fig, LEFT, top, CONTENT_W, height, fill)
        self._box(self.fig, LEFT, top, 0.05, height, bar)
        y = top + 0.12
        y += self._lines(title, LEFT + 0.18, y, title_style.size) + 0.03
        y += self._lines(text, LEFT + 0.18, y, size)
        for lines in items:
            self._text(self.fig, LEFT + 0.2, y + BODY * 0.95 / 72, "•", _Style(BODY))
            y += self._lines(lines, LEFT + 0.36, y, BODY) + 0.03
        self.y = top + height + 0.12

    def _table(self, t: ol.Table) -> None:
        m = _TableMetrics(t)
        pad, size = m.pad, m.size

        def header(continued: bool) -> None:
            cap = m.caption if not continued else _wrap(
                [(t.caption.split(".")[0] + " (continued).", _Style(NOTE, color=MUTED))],
                CONTENT_W)
            self.y += self._lines(cap, LEFT, self.y, NOTE) + 0.04
            self._rule(self.fig, self.y, lw=0.9)
            x = LEFT
            for lines, w, a in zip(m.heads, m.widths, m.align):
                self._lines(lines, x + pad, self.y + pad, size,
                            right=x + w - pad if a == "r" else None)
                x += w
            self.y += m.head_h
            self._rule(self.fig, self.y, lw=0.5)

        if m.whole_h <= KEEP_TOGETHER * (PAGE_H - TOP - BOTTOM):
            self._need(m.whole_h)  # short tables never split
        else:
            self._need(m.caption_h + m.head_h + sum(m.row_hs[:2]) + 0.1)
        self.y += 0.04
        header(False)
        for i, (cells, h) in enumerate(zip(m.rows, m.row_hs)):
            if h > self._room() - 0.05:
                self._rule(self.fig, self.y, lw=0.9)
                self._new_page()
                header(True)
            if i % 2 == 1:
                self._box(self.fig, LEFT, self.y, CONTENT_W, h, "#fafbfc")
            x = LEFT
            for lines, w, a in zip(cells, m.widths, m.align):
                if lines:
                    self._lines(lines, x + pad, self.y + pad, size,
                                right=x + w - pad if a == "r" else None)
                x += w
            self.y += h
            if i < len(m.rows) - 1:
                self._rule(self.fig, self.y, color="#e6e9ee", lw=0.4)
        self._rule(self.fig, self.y, lw=0.9)
        self.y += 0.16

    def _figure(self, b: ol.Figure) -> None:
        from matplotlib.gridspec import GridSpec

        caption = _wrap([(b.caption, _Style(NOTE, color=MUTED))], CONTENT_W)
        cap_h = len(caption) * _line_h(NOTE)
        self._need(b.height_in + cap_h + 0.15)
        self.y += 0.06
        x0 = LEFT + (CONTENT_W - WIDTH_IN) / 2
        gs = GridSpec(3, 3, figure=self.fig, left=0, right=1, top=1, bottom=0, wspace=0,
                      hspace=0, width_ratios=[x0, WIDTH_IN, PAGE_W - x0 - WIDTH_IN],
                      height_ratios=[self.y, b.height_in, PAGE_H - self.y - b.height_in])
        sub = self.fig.add_subfigure(gs[1, 1])
        b.draw(sub, self.doc)
        self.y += b.height_in + 0.04
        self.y += self._lines(caption, LEFT, self.y, NOTE) + 0.14


class _TableMetrics:
    """Wrapped cells and heights of a table (inches)."""

    def __init__(self, t: ol.Table) -> None:
        self.size = size = 7.8 * t.font_scale
        self.pad = pad = 0.035
        n = len(t.columns)
        rel = t.widths or (1.0,) * n
        self.widths = [CONTENT_W * w / sum(rel) for w in rel]
        self.align = t.align or ("l",) * n
        head_style = _Style(size, True)
        self.heads = [_wrap([(c, head_style)], w - 2 * pad)
                      for c, w in zip(t.columns, self.widths)]
        self.rows = [[_wrap([(v, _Style(size, i in t.emphasis))], w - 2 * pad) if v else []
                      for v, w in zip(row, self.widths)] for i, row in enumerate(t.rows)]
        lh = _line_h(size)
        self.head_h = max(len(h) for h in self.heads) * lh + 2 * pad
        self.row_hs = [max([len(c) for c in r] + [1]) * lh + 2 * pad for r in self.rows]
        self.caption = _wrap([(t.caption, _Style(NOTE, color=MUTED))], CONTENT_W)
        self.caption_h = len(self.caption) * _line_h(NOTE) + 0.08
        self.whole_h = self.caption_h + self.head_h + sum(self.row_hs) + 0.1
