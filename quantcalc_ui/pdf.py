"""The PDF reports, drawn with fpdf2's core fonts and vector primitives: one tensor's (``render_pdf(model)``,
:class:`quantcalc_ui.report.ReportModel`) and a whole checkpoint's scan (``render_scan_pdf(report)``,
:class:`quantcalc_ui.scanreport.ScanReport`). Both share the document, its page flow, tables and charts below.

Layout (A4 portrait, 16 mm margins): title block (tensor, data source; no date, so the same model gives the
same bytes), settings as a key/value list, the advice in a tinted box, the scheme comparison, four charts
(per-channel ranges, per-channel RMSE by scheme, histogram with clip bounds, error-vs-memory frontier), then
the per-channel tables and, for a small tensor, every value. The whole-model report: title and facts (what was
scanned and skipped), totals per scheme, the most damaged tensors, error by role, the per-layer chart and table,
the mixed-precision plan.

Typography and tables: Helvetica; tables have a header row, thin rules (top, below the header, bottom; no
vertical lines), right-aligned numbers at a fixed number of significant digits per kind of column
(:func:`format_cell`) that never wrap. Column widths come from the content: a table that does not fit the
page at 7.5 pt is tried at smaller sizes down to 6 pt, and otherwise split into parts that repeat the label
column. Label cells wrap (a scheme name is never cut; a channel label is cut after three lines). A table
that runs over a page repeats its header.

Text: fpdf2's core fonts draw Latin-1 only. :func:`pdf_text` transliterates what they cannot draw (minus
signs, dashes, Greek letters, ...), drops invisible formatting characters (right-to-left marks, zero-width
spaces) and replaces anything else (CJK, emoji) with ``?``; every string reaches the page through it, as
plain text (no markup; fpdf2's ``{nb}`` page-count alias is switched off, so a name containing it is printed
as is).

fpdf2 is imported only when a report is drawn (the browser loads it on the first PDF).
"""
from __future__ import annotations

import math
import unicodedata
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable, Sequence

from .report import Column, ReportModel, Table

if TYPE_CHECKING:   # the scan report imports this module (use_log): no import cycle at run time
    from .scanreport import ScanReport

# --- page and style -------------------------------------------------------------------------------
PAGE_W, PAGE_H = 210.0, 297.0
MARGIN = 16.0
CONTENT_W = PAGE_W - 2 * MARGIN
BOTTOM = PAGE_H - 16.0            # content ends here; the footer sits below
FONT = "Helvetica"
# (font size, whole headings?) tried in this order before a table is split: a smaller font before wrapped
# headings, wrapped headings before the smallest fonts
FIT_ORDER = ((7.5, True), (7.0, True), (7.5, False), (7.0, False), (6.5, True), (6.5, False), (6.0, False))
SPLIT_SIZE = 7.0
CELL_PAD = 1.3                     # mm of padding on each side of a table cell
LABEL_GAP = 2.0                    # mm more between the label column and the first number
MAX_LABEL_SHARE = 0.34             # of the content width, for a table's label column
CHANNEL_LABEL_LINES = 3            # a channel label is cut (with "...") after this many lines
REPRODUCIBLE_DATE = datetime(1980, 1, 1, tzinfo=timezone.utc)   # the ZIP epoch the bundle build uses too

INK = (34, 34, 34)
MUTED = (100, 100, 100)
RULE = (60, 60, 60)
HAIRLINE = (205, 205, 205)
ZEBRA = (246, 247, 249)
HIGHLIGHT = (255, 243, 205)
ADVICE_FILL = (237, 246, 237)
ADVICE_BAR = (44, 122, 44)
GRID = (228, 228, 228)
DATA_BLUE = (31, 119, 180)
RANGE_ORANGE = (255, 127, 14)
CLIP_RED = (214, 39, 40)
PARETO_GREEN = (44, 160, 44)
SWEEP_GREY = (150, 150, 150)
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


# --- text -----------------------------------------------------------------------------------------
_REPLACE = {
    "\u2212": "-", "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
    "\u2026": "...", "\u2264": "<=", "\u2265": ">=", "\u2260": "!=", "\u2248": "~", "\u2192": "->",
    "\u2190": "<-", "\u2194": "<->", "\u21d2": "=>", "\u2022": "*", "\u2605": "*", "\u2018": "'", "\u2019": "'",
    "\u201a": ",", "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2032": "'", "\u2033": '"', "\u221e": "inf",
    "\u221a": "sqrt", "\u2211": "sum", "\u2202": "d", "\u2206": "Delta", "\u2126": "Ohm", "\u2030": " per mille",
    "\u20ac": "EUR", "\u2122": "(TM)", "\u2009": " ", "\u202f": " ", "\u2002": " ", "\u2003": " ",
    "\u0302": "^",   # combining circumflex: x̂ -> x^
}


def pdf_text(text: object) -> str:
    """``text`` as a string the core fonts can draw (Latin-1), never raising; see the module docstring."""
    s = unicodedata.normalize("NFC", str(text))
    out = []
    for ch in s:
        code = ord(ch)
        if ch in _REPLACE:
            out.append(_REPLACE[ch])
        elif ch in "\t\n\r\x0b\x0c":
            out.append(" ")
        elif code < 0x20 or 0x7F <= code < 0xA0:
            continue                                  # control characters
        elif code < 0x100:
            out.append(ch)
        elif unicodedata.category(ch) in ("Cf", "Mn", "Me", "Zl", "Zp"):
            continue                                  # RTL marks, zero-width joiners, combining marks
        else:
            out.append(_transliterate(ch))
    return "".join(out)


def _transliterate(ch: str) -> str:
    name = unicodedata.name(ch, "")
    if name.startswith("GREEK ") and " LETTER " in name:
        letter = name.split(" LETTER ", 1)[1].split(" ")[0].lower()
        return letter.capitalize() if " CAPITAL " in name else letter
    base = unicodedata.normalize("NFKD", ch)
    kept = "".join(c for c in base if ord(c) < 0x100 and unicodedata.category(c) not in ("Mn", "Cf"))
    return kept if kept.strip() or kept == " " else "?"


# --- numbers --------------------------------------------------------------------------------------
SIGNIFICANT = {"value": 6, "error": 4, "bpw": 4, "percent": 3}


def _significant(v: float, digits: int) -> str:
    s = f"{v:.{digits}g}"
    if "e" in s:                                   # 1.5e-05 -> 1.5e-5 (shorter, same number)
        mantissa, exp = s.split("e")
        s = f"{mantissa}e{int(exp)}"
    return "0" if s in ("-0", "-0.0") else s


def format_cell(value: object, kind: str) -> str:
    """A table cell as text; numbers by column kind (see :class:`quantcalc_ui.report.Column`)."""
    if kind in ("text", "scheme"):
        return str(value)
    if kind == "flag":
        return "yes" if value else ""
    if value is None:
        return "n/a"
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if kind in ("int", "bytes"):
        return f"{int(round(v)):,}"
    if kind == "db":
        return f"{v:.1f}"
    if kind == "fraction":
        return f"{100.0 * v:.2f}"
    return _significant(v, SIGNIFICANT.get(kind, 6))


def tick_label(v: float, step: float) -> str:
    """An axis tick label with as many decimals as the tick step needs (0.25 -> 2), in plain notation
    between 1e-4 and 1e5, else with 3 significant digits."""
    if v == 0:
        return "0"
    if not (1e-4 <= abs(v) < 1e5 and step >= 1e-4):
        return _significant(v, 3)
    decimals = next((d for d in range(12) if abs(round(step, d) - step) <= abs(step) * 1e-6), 12)
    return f"{v:.{decimals}f}"


def bytes_label(v: float) -> str:
    """1000 -> '1 kB', 2.5e6 -> '2.5 MB' (decimal units)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= scale:
            return f"{_significant(v / scale, 3)} {unit}"
    return f"{_significant(v, 3)} B"


# --- axes scales ----------------------------------------------------------------------------------
def nice_step(span: float, target: int = 5) -> float:
    if not span > 0 or not math.isfinite(span):
        return 1.0
    raw = span / target
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


def linear_axis(lo: float, hi: float, target: int = 5,
                integer: bool = False) -> tuple[float, float, list[float], float]:
    """Limits widened to whole ticks, the ticks and their step (at least 1 with ``integer``); a zero-width
    range is widened first."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi <= lo:
        pad = abs(lo) * 0.5 or 1.0
        lo, hi = lo - pad, hi + pad
    step = nice_step(hi - lo, target)
    if integer:
        step = max(1.0, math.ceil(step))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    ticks = [k * step for k in range(first, last + 1)]
    return first * step, last * step, ticks, step


def log_axis(lo: float, hi: float) -> tuple[float, float, list[float]]:
    """Limits and ticks of a log axis around [lo, hi] (both > 0): whole decades with ticks at the decades
    when the data span more than two; otherwise the nearest 1-2-5 values, ticks at every 1-2-5 value."""
    a, b = math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9)
    if b - a > 2:
        return 10.0 ** a, 10.0 ** b, [10.0 ** k for k in range(a, b + 1)]
    marks = [m * 10.0 ** k for k in range(a - 1, b + 2) for m in (1, 2, 5)]
    low = max(v for v in marks if v <= lo * (1 + 1e-9))
    high = min(v for v in marks if v >= hi * (1 - 1e-9))
    if high <= low:
        high = min(v for v in marks if v > low)
    return low, high, [v for v in marks if low * (1 - 1e-9) <= v <= high * (1 + 1e-9)]


def use_log(values: Sequence[float], ratio: float = 30.0) -> bool:
    """Log scale when the positive values span more than ``ratio`` (about 1.5 decades)."""
    pos = [v for v in values if v > 0 and math.isfinite(v)]
    return len(pos) > 1 and max(pos) / min(pos) > ratio


# --- document -------------------------------------------------------------------------------------
class _Doc:
    """The fpdf2 document and the flow of blocks down the pages (page breaks are decided here)."""

    def __init__(self, title: str, footer: str, total_pages: int | None) -> None:
        """``title``: the document's title (metadata); ``footer``: the text at the bottom left of every page."""
        from fpdf import FPDF

        footer_left = pdf_text(footer)

        class ReportPDF(FPDF):
            def footer(self) -> None:
                self.set_font(FONT, "", 6.5)
                self.set_text_color(*MUTED)
                self.set_draw_color(*HAIRLINE)
                self.set_line_width(0.2)
                self.line(MARGIN, PAGE_H - 11.5, PAGE_W - MARGIN, PAGE_H - 11.5)
                page = f"page {self.page_no()}" + (f" of {total_pages}" if total_pages else "")
                left = footer_left
                room = CONTENT_W - self.get_string_width(page) - 8
                if self.get_string_width(left) > room:
                    while left and self.get_string_width(left + "...") > room:
                        left = left[:-1]
                    left += "..."
                self.text(MARGIN, PAGE_H - 8, left)
                self.text(PAGE_W - MARGIN - self.get_string_width(page), PAGE_H - 8, page)

        pdf = ReportPDF(orientation="P", unit="mm", format="A4")
        pdf.alias_nb_pages(None)       # a name containing "{nb}" stays text
        pdf.set_auto_page_break(False)  # blocks are placed by _Doc.ensure
        pdf.set_margins(MARGIN, MARGIN, MARGIN)
        pdf.set_creation_date(REPRODUCIBLE_DATE)
        pdf.set_title(pdf_text(title))
        pdf.set_creator("quantcalc")
        pdf.set_producer("quantcalc (fpdf2)")
        pdf.set_text_color(*INK)
        self.pdf = pdf
        pdf.add_page()

    # flow
    @property
    def y(self) -> float:
        return self.pdf.get_y()

    def move(self, dy: float) -> None:
        self.pdf.set_y(self.y + dy)

    def ensure(self, height: float) -> None:
        """Start a new page unless ``height`` mm fit below the current position."""
        if self.y + height > BOTTOM and self.y > MARGIN + 1:
            self.pdf.add_page()
            self.pdf.set_y(MARGIN)

    # text
    def font(self, size: float, style: str = "", color: tuple[int, int, int] = INK) -> None:
        self.pdf.set_font(FONT, style, size)
        self.pdf.set_text_color(*color)

    def width(self, text: str) -> float:
        return self.pdf.get_string_width(text)

    def wrap(self, text: object, width: float, max_lines: int | None = None) -> list[str]:
        """Lines of ``text`` (made drawable) no wider than ``width`` in the current font.

        Breaks at spaces; a word wider than the line is broken after ``.``, ``_``, ``/`` or ``-`` where
        possible, else between characters. With ``max_lines``, the last kept line ends with ``...``.
        """
        width += 1e-6                   # a column sized to its widest cell holds that cell after float round-off
        lines: list[str] = []
        current = ""
        for word in pdf_text(text).split():
            candidate = f"{current} {word}" if current else word
            if self.width(candidate) <= width:
                current = candidate
                continue
            if current:
                lines.append(current)
                current = ""
            while self.width(word) > width:
                cut = self._fit_prefix(word, width)
                lines.append(word[:cut])
                word = word[cut:]
            current = word
        if current or not lines:
            lines.append(current)
        if max_lines is not None and len(lines) > max_lines:
            last = lines[max_lines - 1]
            while last and self.width(last + "...") > width:
                last = last[:-1]
            lines = lines[:max_lines - 1] + [last + "..."]
        return lines

    def _fit_prefix(self, word: str, width: float) -> int:
        lo, hi = 1, len(word)
        while lo < hi:                  # the longest prefix that fits (at least one character)
            mid = (lo + hi + 1) // 2
            if self.width(word[:mid]) <= width:
                lo = mid
            else:
                hi = mid - 1
        breaks = [i + 1 for i, c in enumerate(word[:lo]) if c in "._/-" and i + 1 < lo]
        return breaks[-1] if breaks and breaks[-1] >= lo // 2 else lo

    def lines_at(self, x: float, lines: Sequence[str], line_h: float, align: str = "L",
                 width: float = 0.0) -> None:
        """Draw ``lines`` from the current y (top of the first line), moving y below them."""
        y = self.y
        for i, line in enumerate(lines):
            self.pdf.set_xy(x, y + i * line_h)
            self.pdf.cell(width, line_h, line, align=align)
        self.pdf.set_xy(MARGIN, y + len(lines) * line_h)

    def paragraph(self, text: str, size: float = 8.5, style: str = "", color=INK, line_h: float | None = None,
                  indent: float = 0.0) -> None:
        self.font(size, style, color)
        lh = line_h or size * 0.5
        lines = self.wrap(text, CONTENT_W - indent)
        self.ensure(len(lines) * lh)
        self.lines_at(MARGIN + indent, lines, lh)

    def heading(self, text: str, keep_with: float = 20.0) -> None:
        """A section heading with a thin rule, kept on the same page as the next ``keep_with`` mm."""
        self.ensure(9 + keep_with)
        self.move(2.5)
        self.font(10.5, "B")
        self.lines_at(MARGIN, self.wrap(text, CONTENT_W), 5.0)
        self.rule(self.y + 0.4, HAIRLINE, 0.25)
        self.move(2.2)

    def rule(self, y: float, color=RULE, width: float = 0.3, x0: float = MARGIN,
             x1: float = MARGIN + CONTENT_W) -> None:
        self.pdf.set_draw_color(*color)
        self.pdf.set_line_width(width)
        self.pdf.line(x0, y, x1, y)

    def output(self) -> bytes:
        return bytes(self.pdf.output())


# --- blocks ---------------------------------------------------------------------------------------
def _title_block(doc: _Doc, title: str, full_name: str, facts: Sequence[tuple[str, str]]) -> None:
    """The title (at most three lines; when cut, ``full_name`` follows in small type) and ``facts``, short
    ``(label, text)`` lines under it (empty texts are left out), then a rule."""
    doc.font(15, "B")
    lines = doc.wrap(title, CONTENT_W)
    cut = len(lines) > 3
    doc.lines_at(MARGIN, doc.wrap(title, CONTENT_W, max_lines=3), 6.6)
    if cut:   # a very long name: the title shows its start, the full name follows in small type
        doc.move(0.6)
        doc.paragraph(full_name, size=7, color=MUTED, line_h=3.2)
    doc.move(1.2)
    doc.font(8.5, "B", MUTED)
    key_w = max([14.0] + [doc.width(pdf_text(label)) + 3.0 for label, text in facts if text])
    for label, text in facts:
        if not text:
            continue
        doc.font(8.5, "B", MUTED)
        doc.pdf.set_xy(MARGIN, doc.y)
        doc.pdf.cell(key_w, 4.2, pdf_text(label))
        doc.font(8.5, "", MUTED)
        doc.lines_at(MARGIN + key_w, doc.wrap(text, CONTENT_W - key_w, max_lines=6), 4.2)
    doc.move(1.5)
    doc.rule(doc.y, RULE, 0.45)
    doc.move(1.0)


def _size_words(model: ReportModel) -> str:
    if not model.n_values:
        return ""
    words = f"{model.n_values:,} values in {model.n_channels:,} channel{'s' if model.n_channels != 1 else ''}"
    if model.detail:
        words += f"; detailed scheme: {model.detail}"
    return words


def _settings_block(doc: _Doc, model: ReportModel) -> None:
    if not model.settings:
        return
    doc.heading("Settings")
    key_w = 38.0
    for label, value in model.settings:
        doc.font(8.3, "")
        lines = doc.wrap(value, CONTENT_W - key_w)
        doc.ensure(len(lines) * 4.0)
        y = doc.y
        doc.font(8.3, "", MUTED)
        doc.pdf.set_xy(MARGIN, y)
        doc.pdf.cell(key_w, 4.0, doc.wrap(label, key_w - 2, max_lines=1)[0])
        doc.font(8.3, "", INK)
        doc.pdf.set_y(y)
        doc.lines_at(MARGIN + key_w, lines, 4.0)


def _advice_block(doc: _Doc, model: ReportModel) -> None:
    if not model.advice:
        return
    doc.font(9, "")
    pad = 2.6
    lines = doc.wrap(model.advice, CONTENT_W - 2 * pad - 2)
    height = 4.2 + len(lines) * 4.4 + 2 * pad
    doc.move(4)
    doc.ensure(height)
    y = doc.y
    doc.pdf.set_fill_color(*ADVICE_FILL)
    doc.pdf.rect(MARGIN, y, CONTENT_W, height, style="F")
    doc.pdf.set_fill_color(*ADVICE_BAR)
    doc.pdf.rect(MARGIN, y, 1.1, height, style="F")
    doc.pdf.set_y(y + pad)
    doc.font(8, "B", ADVICE_BAR)
    doc.lines_at(MARGIN + pad + 2, ["Advice"], 4.2)
    doc.font(9, "", INK)
    doc.lines_at(MARGIN + pad + 2, lines, 4.4)
    doc.pdf.set_y(y + height + 1)


def _notes_block(doc: _Doc, notes: Sequence[str]) -> None:
    for note in notes:
        doc.move(1)
        doc.paragraph(note, size=7.5, color=MUTED, line_h=3.6)


# --- tables ---------------------------------------------------------------------------------------
class _TableLayout:
    """Font size, column widths, which columns (after the label column) make each printed part, and the
    widths at which every heading would fit on one line (spare width goes there first)."""

    def __init__(self, size: float, parts: list[list[int]], widths: list[float], whole: list[float]) -> None:
        self.size, self.parts, self.widths, self.whole = size, parts, widths, whole


def _units(columns: Sequence[Column]) -> list[list[int]]:
    """Column indices after the label column, grouped so a column group is never split across parts."""
    units: list[list[int]] = []
    for i in range(1, len(columns)):
        if units and columns[i].group and columns[units[-1][-1]].group == columns[i].group:
            units[-1].append(i)
        else:
            units.append([i])
    return units


def _natural_widths(doc: _Doc, table: Table, cells: list[list[str]], size: float,
                    full_headings: bool) -> list[float]:
    """Per column: the widest cell (bold where a row is highlighted) or its heading (whole, or with
    ``full_headings=False`` its longest word: the heading then wraps), padded. The label column (0) is
    capped by the caller: its cells wrap."""
    widths = []
    for j, col in enumerate(table.columns):
        doc.font(size, "B")
        heading = pdf_text(col.heading)
        w = doc.width(heading) if full_headings else max([doc.width(wd) for wd in heading.split()] or [0.0])
        for i, row in enumerate(cells):
            doc.font(size, "B" if i in table.highlight else "")
            w = max(w, doc.width(row[j]))
        widths.append(w + 2 * CELL_PAD + (LABEL_GAP if j == 0 else 0.0))
    # a group heading needs room for its longest word over the columns it spans
    for unit in _units(table.columns):
        group = table.columns[unit[0]].group
        if group:
            doc.font(size, "B")
            need = max(doc.width(word) for word in pdf_text(group).split()) + 2 * CELL_PAD
            have = sum(widths[j] for j in unit)
            if need > have:
                for j in unit:
                    widths[j] += (need - have) / len(unit)
    return widths


def _layout_table(doc: _Doc, table: Table, cells: list[list[str]]) -> _TableLayout:
    """Fit the table to the content width (:data:`FIT_ORDER`); otherwise split it into parts that repeat the
    label column (a column group stays in one part)."""
    for size, full in FIT_ORDER:
        widths = _natural_widths(doc, table, cells, size, full)
        label = min(widths[0], CONTENT_W * MAX_LABEL_SHARE)
        if label + sum(widths[1:]) <= CONTENT_W:
            widths[0] = label
            whole = _natural_widths(doc, table, cells, size, True)
            return _stretch(_TableLayout(size, [list(range(1, len(widths)))], widths, whole))
    size = SPLIT_SIZE
    widths = _natural_widths(doc, table, cells, size, False)
    widths[0] = min(widths[0], CONTENT_W * 0.25)
    parts = _balanced_parts(_units(table.columns), widths, CONTENT_W - widths[0])
    return _stretch(_TableLayout(size, parts, widths, _natural_widths(doc, table, cells, size, True)))


def _balanced_parts(units: list[list[int]], widths: Sequence[float], room: float) -> list[list[int]]:
    """As few parts as fit ``room`` mm each (units in order), of about equal width (no lone last column)."""
    unit_w = [sum(widths[j] for j in u) for u in units]

    def pack(capacity: float) -> list[list[int]]:
        parts: list[list[int]] = [[]]
        used = 0.0
        for u, w in zip(units, unit_w):
            if parts[-1] and used + w > capacity:
                parts.append([])
                used = 0.0
            parts[-1].extend(u)
            used += w
        return parts

    fewest = len(pack(room))
    capacity = max(sum(unit_w) / fewest, max(unit_w))
    while capacity < room and len(pack(capacity)) > fewest:
        capacity += 0.5
    return pack(min(capacity, room))


def _stretch(layout: _TableLayout) -> _TableLayout:
    """Spread spare width over the number columns: first where a heading would then fit on one line (when
    all of them can), then evenly -- up to the full content width when the table is already wide, at most
    5 mm per column otherwise (a narrow table stays compact)."""
    widths = list(layout.widths)
    for part in layout.parts:
        spare = CONTENT_W - widths[0] - sum(widths[j] for j in part)
        need = {j: max(0.0, layout.whole[j] - widths[j]) for j in part}
        if 0 < sum(need.values()) <= spare:
            for j in part:
                widths[j] += need[j]
            spare -= sum(need.values())
        if spare <= 0 or not part:
            continue
        share = spare / len(part) if spare < 0.45 * CONTENT_W else min(5.0, spare / len(part))
        for j in part:
            widths[j] += share
    return _TableLayout(layout.size, layout.parts, widths, layout.whole)


def _table_block(doc: _Doc, table: Table | None) -> None:
    if table is None:
        return
    cells = [[pdf_text(format_cell(v, c.kind)) for v, c in zip(row, table.columns)] for row in table.rows]
    layout = _layout_table(doc, table, cells)
    for k, part in enumerate(layout.parts):
        title = table.title + (f" (part {k + 1} of {len(layout.parts)})" if len(layout.parts) > 1 else "")
        _draw_table_part(doc, table, cells, layout, [0] + part, title)
    if table.note:
        doc.move(0.8)
        doc.paragraph(table.note, size=7, color=MUTED, line_h=3.3)


def _header_height(doc: _Doc, table: Table, cols: list[int], widths: list[float], size: float) -> tuple[float, float]:
    """(group row height, heading row height) in mm."""
    lh = size * 0.46
    doc.font(size, "B")
    groups = [u for u in _units(table.columns) if table.columns[u[0]].group and u[0] in cols]
    group_h = max([len(doc.wrap(table.columns[u[0]].group, sum(widths[j] for j in u) - 2 * CELL_PAD)) for u in groups]
                  or [0]) * lh
    head_h = max(len(doc.wrap(table.columns[j].heading, widths[j] - 2 * CELL_PAD)) for j in cols) * lh
    return (group_h + 1.6 if group_h else 0.0), head_h + 1.4


def _label_lines(doc: _Doc, table: Table, text: str, width: float) -> list[str]:
    """A label cell's lines: a scheme name wraps and is never cut; other labels stop after three lines."""
    cut = None if table.columns[0].kind == "scheme" else CHANNEL_LABEL_LINES
    return doc.wrap(text, width - 2 * CELL_PAD - LABEL_GAP, max_lines=cut)


def _draw_header(doc: _Doc, table: Table, cols: list[int], widths: list[float], size: float) -> None:
    lh = size * 0.46
    group_h, head_h = _header_height(doc, table, cols, widths, size)
    x_of = _column_x(cols, widths)
    total_w = sum(widths[j] for j in cols)
    top = doc.y
    doc.rule(top, RULE, 0.4, MARGIN, MARGIN + total_w)
    y = top + 0.8
    doc.font(size, "B")
    if group_h:
        for unit in _units(table.columns):
            group = table.columns[unit[0]].group
            if not group or unit[0] not in cols:
                continue
            x0, span = x_of[unit[0]], sum(widths[j] for j in unit)
            lines = doc.wrap(group, span - 2 * CELL_PAD)
            for i, line in enumerate(lines):
                doc.pdf.set_xy(x0, y + i * lh)
                doc.pdf.cell(span, lh, line, align="C")
            doc.rule(y + group_h - 1.0, RULE, 0.2, x0 + 1.0, x0 + span - 1.0)
        y += group_h
    for j in cols:
        lines = doc.wrap(table.columns[j].heading, widths[j] - 2 * CELL_PAD)
        y0 = y + head_h - 1.4 - len(lines) * lh        # headings sit on the rule below them
        align = "L" if table.columns[j].kind in ("text", "scheme") else "R"
        for i, line in enumerate(lines):
            doc.pdf.set_xy(x_of[j] + CELL_PAD, y0 + i * lh)
            doc.pdf.cell(widths[j] - 2 * CELL_PAD, lh, line, align=align)
    y += head_h
    doc.rule(y, RULE, 0.2, MARGIN, MARGIN + total_w)
    doc.pdf.set_xy(MARGIN, y + 0.5)


def _column_x(cols: list[int], widths: list[float]) -> dict[int, float]:
    x, out = MARGIN, {}
    for j in cols:
        out[j] = x
        x += widths[j]
    return out


MIN_ROWS_AFTER_BREAK = 3   # a table never leaves fewer rows than this alone on its last page


def _page_breaks(top: float, heights: Sequence[float], continued_top: float) -> set[int]:
    """Rows that start a new page, for rows of ``heights`` starting at ``top`` (continuation pages start at
    ``continued_top``); the last break moves up so that at least MIN_ROWS_AFTER_BREAK rows follow it."""
    breaks: list[int] = []
    y = top
    for i, h in enumerate(heights):
        if y + h > BOTTOM and i > 0:
            breaks.append(i)
            y = continued_top
        y += h
    if breaks and len(heights) - breaks[-1] < MIN_ROWS_AFTER_BREAK:
        start = breaks[-2] if len(breaks) > 1 else 0
        moved = max(len(heights) - MIN_ROWS_AFTER_BREAK, start + 1)
        breaks[-1] = min(breaks[-1], moved)
    return set(breaks)


def _draw_table_part(doc: _Doc, table: Table, cells: list[list[str]], layout: _TableLayout, cols: list[int],
                     title: str) -> None:
    size, widths = layout.size, layout.widths
    lh = size * 0.47
    row_pad = 0.55
    group_h, head_h = _header_height(doc, table, cols, widths, size)
    labels, heights = [], []
    for i, row in enumerate(cells):
        doc.font(size, "B" if i in table.highlight else "")
        labels.append(_label_lines(doc, table, row[0], widths[0]))
        heights.append(len(labels[-1]) * lh + 2 * row_pad)
    doc.heading(title, keep_with=group_h + head_h + sum(heights[:MIN_ROWS_AFTER_BREAK]) + 2)
    _draw_header(doc, table, cols, widths, size)
    breaks = _page_breaks(doc.y, heights, MARGIN + 4.4 + group_h + head_h + 1.5)
    x_of = _column_x(cols, widths)
    total_w = sum(widths[j] for j in cols)
    zebra = len(cells) > 6
    for i, row in enumerate(cells):
        style = "B" if i in table.highlight else ""
        if i in breaks:
            doc.rule(doc.y, RULE, 0.4, MARGIN, MARGIN + total_w)
            doc.pdf.add_page()
            doc.pdf.set_y(MARGIN)
            doc.font(7, "I", MUTED)
            doc.lines_at(MARGIN, doc.wrap(f"{title} (continued)", CONTENT_W, max_lines=1), 3.6)
            doc.move(0.8)
            _draw_header(doc, table, cols, widths, size)
        doc.font(size, style)
        y = doc.y
        fill = HIGHLIGHT if i in table.highlight else (ZEBRA if zebra and i % 2 else None)
        if fill:
            doc.pdf.set_fill_color(*fill)
            doc.pdf.rect(MARGIN, y, total_w, heights[i], style="F")
        doc.pdf.set_text_color(*INK)
        for k, line in enumerate(labels[i]):
            doc.pdf.set_xy(x_of[0] + CELL_PAD, y + row_pad + k * lh)
            doc.pdf.cell(widths[0] - 2 * CELL_PAD, lh, line, align="L")
        for j in cols[1:]:
            doc.pdf.set_xy(x_of[j] + CELL_PAD, y + row_pad)
            doc.pdf.cell(widths[j] - 2 * CELL_PAD, lh, row[j],
                         align="L" if table.columns[j].kind in ("text", "scheme") else "R")
        doc.pdf.set_xy(MARGIN, y + heights[i])
    doc.rule(doc.y, RULE, 0.4, MARGIN, MARGIN + total_w)
    doc.move(0.6)


# --- charts ---------------------------------------------------------------------------------------
# Four charts in a 2 x 2 grid. Each is planned first (title, legend, caption, a draw function), so a row's
# height is known before it is placed; then drawn: title, plot box, x axis, legend, caption (below, as a
# figure caption, so the plot boxes of a row line up).
PLOT_LEFT = 15.0     # room for the y tick labels and the y axis title
PLOT_H = 42.0
CHART_GAP = 8.0
CHART_W = (CONTENT_W - CHART_GAP) / 2
XAXIS_H, LEGEND_LINE, CAPTION_LINE = 8.6, 3.5, 3.1   # mm: tick labels + axis title, a legend line, a caption line
NO_DATA_H = 16.0
Color = tuple


class _Axes:
    """A plot box with linear or log axes; ``X``/``Y`` map data to page coordinates (mm)."""

    def __init__(self, doc: _Doc, x: float, top: float, width: float, xlim: tuple[float, float],
                 ylim: tuple[float, float], xlog: bool = False, ylog: bool = False) -> None:
        self.doc, self.pdf = doc, doc.pdf
        self.x0, self.y0 = x + PLOT_LEFT, top
        self.w, self.h = width - PLOT_LEFT - 1.0, PLOT_H
        self.xlog, self.ylog = xlog, ylog
        fx = (lambda v: math.log10(v)) if xlog else float
        fy = (lambda v: math.log10(v)) if ylog else float
        self._fx, self._fy = fx, fy
        self._x = (fx(xlim[0]), self.w / (fx(xlim[1]) - fx(xlim[0])))      # (origin, mm per unit)
        self._y = (fy(ylim[0]), self.h / (fy(ylim[1]) - fy(ylim[0])))

    def X(self, v: float) -> float:
        return self.x0 + (self._fx(v) - self._x[0]) * self._x[1]

    def Y(self, v: float) -> float:
        return self.y0 + self.h - (self._fy(v) - self._y[0]) * self._y[1]

    @property
    def bottom(self) -> float:
        return self.y0 + self.h

    def frame(self, yticks: Sequence[float], ylabels: Sequence[str], ytitle: str) -> None:
        """Horizontal grid lines at the y ticks, their labels, the y title and the two axis lines."""
        pdf = self.pdf
        pdf.set_line_width(0.15)
        pdf.set_draw_color(*GRID)
        for v in yticks:
            pdf.line(self.x0, self.Y(v), self.x0 + self.w, self.Y(v))
        self.doc.font(6.2, "", MUTED)
        for v, text in zip(yticks, ylabels):
            pdf.text(self.x0 - 1.2 - pdf.get_string_width(text), self.Y(v) + 0.8, text)
        cx, cy = self.x0 - PLOT_LEFT + 1.8, self.y0 + self.h / 2
        with pdf.rotation(90, cx, cy):
            t = pdf_text(ytitle)
            pdf.text(cx - pdf.get_string_width(t) / 2, cy + 0.8, t)
        pdf.set_draw_color(*RULE)
        pdf.set_line_width(0.25)
        pdf.line(self.x0, self.bottom, self.x0 + self.w, self.bottom)
        pdf.line(self.x0, self.y0, self.x0, self.bottom)

    def xticks(self, ticks: Sequence[float], labels: Sequence[str], title: str) -> None:
        """Tick marks and labels below the box (a label that would overlap its left neighbour is skipped)."""
        pdf = self.pdf
        self.doc.font(6.2, "", MUTED)
        pdf.set_draw_color(*RULE)
        pdf.set_line_width(0.2)
        last_right = -1e9
        for v, text in zip(ticks, labels):
            x = self.X(v)
            pdf.line(x, self.bottom, x, self.bottom + 0.9)
            w = pdf.get_string_width(text)
            left = min(max(x - w / 2, self.x0 - PLOT_LEFT + 4), self.x0 + self.w + 1 - w)
            if left < last_right + 1.5:
                continue
            pdf.text(left, self.bottom + 3.5, text)
            last_right = left + w
        if title:
            t = pdf_text(title)
            pdf.text(self.x0 + self.w / 2 - pdf.get_string_width(t) / 2, self.bottom + 7.3, t)


LegendItem = tuple  # (marker kind, colour, label)


class _Chart:
    """A planned chart: ``draw(doc, x, top, width)`` draws the plot box and its x axis, or is None (no data)."""

    def __init__(self, title: str, caption: str, legend: Sequence[LegendItem], draw=None,
                 no_data: str = "no data") -> None:
        self.title, self.caption, self.legend, self.draw, self.no_data = title, caption, list(legend), draw, no_data

    def height(self, doc: _Doc, width: float) -> float:
        doc.font(8.6, "B")
        h = len(doc.wrap(self.title, width)) * 4.2 + 1.0
        h += PLOT_H + XAXIS_H if self.draw else NO_DATA_H
        h += _legend(doc, 0.0, 0.0, width, self.legend, draw=False) if self.draw else 0.0
        doc.font(6.6)
        return h + len(doc.wrap(self.caption, width)) * CAPTION_LINE + 1.0 if self.caption else h

    def render(self, doc: _Doc, x: float, top: float, width: float) -> float:
        """Draw at (x, top); returns the y below the chart."""
        doc.pdf.set_y(top)
        doc.font(8.6, "B")
        doc.lines_at(x, doc.wrap(self.title, width), 4.2)
        y = doc.y + 1.0
        if self.draw is None:
            _no_data(doc, x, y, width, self.no_data)
            y += NO_DATA_H
        else:
            self.draw(doc, x, y, width)
            y += PLOT_H + XAXIS_H
            y += _legend(doc, x, y, width, self.legend)
        if self.caption:
            doc.font(6.6, "", MUTED)
            doc.pdf.set_y(y)
            doc.lines_at(x, doc.wrap(self.caption, width), CAPTION_LINE)
            y = doc.y
        return y + 1.0


def _legend(doc: _Doc, x: float, y: float, width: float, items: Sequence[LegendItem], draw: bool = True) -> float:
    """Legend entries flowing left to right from the plot's left edge; an entry that does not fit the line
    starts a new one, and a label longer than a whole line wraps (never cut). Returns the legend's height."""
    pdf = doc.pdf
    doc.font(6.4, "", INK)
    left, right = x + PLOT_LEFT, x + width
    cx, line = left, 0
    for kind, color, label in items:
        text = doc.wrap(label, right - left - 5.0)
        w = 4.6 + max(pdf.get_string_width(t) for t in text) + 3.5
        if cx + w > right and cx > left:
            cx, line = left, line + 1
        if draw:
            cy = y + line * LEGEND_LINE + LEGEND_LINE / 2
            _marker(pdf, kind, color, cx + 1.9, cy)
            pdf.set_text_color(*INK)
            for k, t in enumerate(text):
                pdf.text(cx + 4.6, cy + 0.8 + k * LEGEND_LINE, t)
        if len(text) > 1:
            cx, line = right, line + len(text) - 1
        cx += w
    return (line + 1) * LEGEND_LINE + 0.6 if items else 0.0


def _marker(pdf, kind: str, color: Color, x: float, y: float, size: float = 1.0) -> None:
    pdf.set_fill_color(*color)
    pdf.set_draw_color(*color)
    if kind == "bar":
        pdf.rect(x - 1.5, y - 1.0, 3.0, 2.0, style="F")
    elif kind == "line":
        pdf.set_line_width(0.5)
        pdf.line(x - 1.8, y, x + 1.8, y)
    elif kind == "dash":
        pdf.set_line_width(0.4)
        pdf.set_dash_pattern(dash=0.9, gap=0.6)
        pdf.line(x - 1.9, y, x + 1.9, y)
        pdf.set_dash_pattern()
    elif kind == "square":
        pdf.set_draw_color(*INK)
        pdf.set_line_width(0.2)
        pdf.rect(x - size, y - size, 2 * size, 2 * size, style="DF")
    elif kind == "ring":
        pdf.set_line_width(0.25)
        pdf.circle(x, y, 0.55 * size, style="D")
    else:  # dot
        pdf.circle(x, y, 0.6 * size, style="F")


def _no_data(doc: _Doc, x: float, y: float, width: float, message: str) -> None:
    """An empty plot area that says why (a chart is never drawn empty)."""
    doc.pdf.set_draw_color(*HAIRLINE)
    doc.pdf.set_line_width(0.2)
    doc.pdf.rect(x + PLOT_LEFT, y, width - PLOT_LEFT - 1.0, NO_DATA_H - 3.0, style="D")
    doc.font(7.5, "I", MUTED)
    lines = doc.wrap(message, width - PLOT_LEFT - 5.0, max_lines=2)
    doc.pdf.set_y(y + (NO_DATA_H - 3.0) / 2 - len(lines) * 1.7)
    doc.lines_at(x + PLOT_LEFT, lines, 3.4, align="C", width=width - PLOT_LEFT - 1.0)


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _channel_ticks(doc: _Doc, ax: _Axes, labels: Sequence[str]) -> None:
    """x ticks of a channel axis: the labels themselves when few and short, else channel indices."""
    n = len(labels)
    short = [pdf_text(s) for s in labels]
    doc.font(6.2)
    if n <= 16 and all(doc.width(s) <= ax.w / max(n, 1) - 1.5 for s in short):
        ax.xticks(list(range(n)), short, "channel")
        return
    _, _, ticks, _ = linear_axis(0, max(n - 1, 1), 6)
    ticks = [t for t in ticks if 0 <= t <= n - 1 and float(t).is_integer()]
    ax.xticks(ticks, [f"{int(t):,}" for t in ticks], "channel index")


def _draws_ranges(plot) -> bool:
    """The scheme's per-channel range is drawn only where it exists and differs from the data's min/max."""
    pairs = [(a, b, c, d) for a, b, c, d in zip(plot.range_lo, plot.range_hi, plot.data_min, plot.data_max)
             if math.isfinite(a) and math.isfinite(b)]
    tol = 1e-9 * max([abs(v) for v in _finite(plot.data_min + plot.data_max)] or [1.0])
    return any(abs(a - c) > tol or abs(b - d) > tol for a, b, c, d in pairs)


BAND_ABOVE = 300   # channels; above this the ranges chart draws one min..max band instead of one bar each
ENVELOPE_POINTS = 600   # a band or curve is drawn through at most this many points: ~0.1 mm apart in the plot


def _envelope(values: Sequence[float], pick) -> list[tuple[float, float]]:
    """``(channel, value)`` points of a band's edge: all finite values when few, else for each of
    ENVELOPE_POINTS runs of consecutive channels the extreme (``pick``: min or max) at the run's middle, so no
    spike is lost at the plot's resolution."""
    n = len(values)
    if n <= ENVELOPE_POINTS:
        return [(i, v) for i, v in enumerate(values) if math.isfinite(v)]
    out = []
    for b in range(ENVELOPE_POINTS):
        start, stop = b * n // ENVELOPE_POINTS, (b + 1) * n // ENVELOPE_POINTS
        run = [v for v in values[start:stop] if math.isfinite(v)]
        if run:
            out.append(((start + stop - 1) / 2, pick(run)))
    return out


def _ranges_chart(model: ReportModel) -> _Chart:
    plot = model.ranges
    if plot is None or not _finite(plot.data_min + plot.data_max):
        return _Chart("Per-channel ranges", "", [])
    ranges = _draws_ranges(plot)
    n = len(plot.data_min)
    caption = ("Each channel's data min..max" + (" (one band over all channels)" if n > BAND_ABOVE else "")
               + (f"; orange: the range {plot.scheme} quantized each channel with" if ranges else "")
               + ("; dashed: the per-tensor range every channel shares" if plot.tensor_range else "") + ".")
    legend = [("bar", DATA_BLUE, "data min..max")]
    if ranges:
        legend.append(("line", RANGE_ORANGE, "range used"))
    if plot.tensor_range:
        legend.append(("dash", CLIP_RED, "per-tensor range"))

    def draw(doc: _Doc, x: float, top: float, width: float) -> None:
        ys = _finite(plot.data_min + plot.data_max + (plot.range_lo + plot.range_hi if ranges else ())
                     + (plot.tensor_range or ()) + (0.0,))
        lo, hi, ticks, step = linear_axis(min(ys), max(ys), 5)
        ax = _Axes(doc, x, top, width, (-0.5, n - 0.5), (lo, hi))
        ax.frame(ticks, [tick_label(t, step) for t in ticks], "value")
        pdf = doc.pdf
        if lo < 0 < hi:
            pdf.set_draw_color(*HAIRLINE)
            pdf.set_line_width(0.25)
            pdf.line(ax.x0, ax.Y(0), ax.x0 + ax.w, ax.Y(0))
        pitch = ax.w / n
        pdf.set_fill_color(*DATA_BLUE)
        if n <= BAND_ABOVE:
            bar = max(0.12, min(5.0, 0.65 * pitch))
            for i, (a, b) in enumerate(zip(plot.data_min, plot.data_max)):
                if math.isfinite(a) and math.isfinite(b):
                    y0 = ax.Y(b)
                    pdf.rect(ax.X(i) - bar / 2, y0, bar, max(ax.Y(a) - y0, 0.3), style="F")
        else:
            upper = [(ax.X(i), ax.Y(v)) for i, v in _envelope(plot.data_max, max)]
            lower = [(ax.X(i), ax.Y(v)) for i, v in _envelope(plot.data_min, min)]
            pdf.set_draw_color(*DATA_BLUE)
            pdf.set_line_width(0.05)
            pdf.polygon(upper + lower[::-1], style="DF")
        if ranges:
            pdf.set_draw_color(*RANGE_ORANGE)
            pdf.set_line_width(0.45)
            if n <= BAND_ABOVE:
                cap = max(0.5, min(6.0, 0.85 * pitch))
                for i, (a, b) in enumerate(zip(plot.range_lo, plot.range_hi)):
                    for v in (a, b):
                        if math.isfinite(v):
                            pdf.line(ax.X(i) - cap / 2, ax.Y(v), ax.X(i) + cap / 2, ax.Y(v))
            else:
                for values, pick in ((plot.range_lo, min), (plot.range_hi, max)):
                    pts = [(ax.X(i), ax.Y(v)) for i, v in _envelope(values, pick)]
                    if len(pts) > 1:
                        pdf.polyline(pts)
        if plot.tensor_range:
            pdf.set_draw_color(*CLIP_RED)
            pdf.set_line_width(0.4)
            pdf.set_dash_pattern(dash=1.4, gap=0.9)
            for v in plot.tensor_range:
                pdf.line(ax.x0, ax.Y(v), ax.x0 + ax.w, ax.Y(v))
            pdf.set_dash_pattern()
        _channel_ticks(doc, ax, plot.labels)

    return _Chart("Per-channel ranges", caption, legend, draw)


GROUPED_BARS_MAX = 16   # channels; above this, per-channel errors are drawn as sorted profiles


def _errors_chart(model: ReportModel) -> _Chart:
    plot = model.errors
    title = "Per-channel RMSE by scheme"
    values = [v for row in (plot.rmse if plot else ()) for v in row if math.isfinite(v)]
    log = use_log(values)
    shown = [v for v in values if v > 0 or not log]
    if plot is None or not plot.schemes or not shown:
        return _Chart(title, "", [])
    n = len(plot.labels)
    profiles = n > GROUPED_BARS_MAX
    caption = ("RMSE of each channel under every compared scheme"
               + ("; each scheme's channels sorted from worst to best, so the curves compare distributions "
                  "(the tables below name the channels)" if profiles else "")
               + ("; log scale" + (", zero errors not drawn" if len(shown) < len(values) else "") if log else "")
               + ".")
    legend = [("line" if profiles else "bar", PALETTE[s % len(PALETTE)], name) for s, name in enumerate(plot.schemes)]

    def draw(doc: _Doc, x: float, top: float, width: float) -> None:
        if log:
            lo, hi, ticks = log_axis(min(shown), max(shown))
            labels = [tick_label(t, t) for t in ticks]
        else:
            lo, hi, ticks, step = linear_axis(0.0, max(shown), 5)
            labels = [tick_label(t, step) for t in ticks]
        pdf = doc.pdf
        k = len(plot.schemes)
        if profiles:
            ax = _Axes(doc, x, top, width, (1, max(n, 2)), (lo, hi), ylog=log)
            ax.frame(ticks, labels, "RMSE")
            for s, row in enumerate(plot.rmse):
                ranked = sorted((v for v in row if math.isfinite(v) and (v > 0 or not log)), reverse=True)
                step = max(1, len(ranked) // ENVELOPE_POINTS)     # a monotone curve: every step-th rank + the last
                keep = list(range(0, len(ranked), step)) + ([len(ranked) - 1] if (len(ranked) - 1) % step else [])
                pts = [(ax.X(i + 1), ax.Y(ranked[i])) for i in keep]
                pdf.set_draw_color(*PALETTE[s % len(PALETTE)])
                pdf.set_line_width(0.55)
                if len(pts) > 1:
                    pdf.polyline(pts)
            _, _, xt, _ = linear_axis(1, n, 6)
            xt = [t for t in xt if 1 <= t <= n]
            ax.xticks(xt, [f"{int(t):,}" for t in xt], "channel rank (worst first)")
        else:
            ax = _Axes(doc, x, top, width, (-0.5, n - 0.5), (lo, hi), ylog=log)
            ax.frame(ticks, labels, "RMSE")
            group = min(ax.w / n * 0.8, 12.0 * k)
            bar = group / k
            base = ax.Y(lo) if log else ax.Y(0.0)
            for s, row in enumerate(plot.rmse):
                pdf.set_fill_color(*PALETTE[s % len(PALETTE)])
                for i, v in enumerate(row):
                    if math.isfinite(v) and (v > 0 or not log):
                        y0 = ax.Y(v)
                        pdf.rect(ax.X(i) - group / 2 + s * bar + 0.08, y0, max(bar - 0.16, 0.1),
                                 max(base - y0, 0.25), style="F")
            _channel_ticks(doc, ax, plot.labels)

    return _Chart(title, caption, legend, draw)


def _histogram_chart(model: ReportModel) -> _Chart:
    h = model.histogram
    title = "Value histogram"
    if h is None or not h.counts or not any(h.counts):
        return _Chart(title, "", [])
    bounds = math.isfinite(h.clip_lo) and math.isfinite(h.clip_hi)
    caption = (f"{sum(h.counts):,} values in {len(h.counts)} equal bins"
               + (f"; dashed: {h.clip_label}, {format_cell(h.clip_lo, 'value')} to "
                  f"{format_cell(h.clip_hi, 'value')}; values outside it are clipped" if bounds else "") + ".")
    legend = [("bar", DATA_BLUE, "values per bin")] + ([("dash", CLIP_RED, "quantization range")] if bounds else [])

    def draw(doc: _Doc, x: float, top: float, width: float) -> None:
        xs = list(h.edges) + ([h.clip_lo, h.clip_hi] if bounds else [])
        pad = 0.03 * (max(xs) - min(xs))     # bounds at the data's edge stay visible inside the box
        xlo, xhi, xt, xstep = linear_axis(min(xs) - pad, max(xs) + pad, 6)
        _, yhi, yt, ystep = linear_axis(0, max(h.counts), 4, integer=True)
        ax = _Axes(doc, x, top, width, (xlo, xhi), (0, yhi))
        ax.frame(yt, [f"{int(t):,}" for t in yt], "count")
        pdf = doc.pdf
        pdf.set_fill_color(*DATA_BLUE)
        for a, b, c in zip(h.edges[:-1], h.edges[1:], h.counts):
            if c:
                y0 = ax.Y(c)
                pdf.rect(ax.X(a), y0, max(ax.X(b) - ax.X(a) - 0.12, 0.15), max(ax.bottom - y0, 0.25), style="F")
        if bounds:
            pdf.set_draw_color(*CLIP_RED)
            pdf.set_line_width(0.45)
            pdf.set_dash_pattern(dash=1.4, gap=0.9)
            for v in (h.clip_lo, h.clip_hi):
                pdf.line(ax.X(v), ax.y0, ax.X(v), ax.bottom)
            pdf.set_dash_pattern()
        ax.xticks(xt, [tick_label(t, xstep) for t in xt], "value")

    return _Chart(title, caption, legend, draw)


def _frontier_chart(model: ReportModel) -> _Chart:
    title = "Error vs memory"
    pts = [p for p in model.frontier if p.total_bytes > 0 and p.rmse > 0 and math.isfinite(p.rmse)]
    sweep = [p for p in pts if not p.compared]
    compared = [p for p in model.frontier if p.compared]
    if not pts:
        return _Chart(title, model.frontier_note, [], no_data="no data (every error is 0)" if compared else "no data")
    caption = ("Total bytes (payload + metadata) against RMSE, log scales"
               + ("; grey: the bits x granularity sweep, green: its Pareto front (nothing smaller is as accurate)"
                  if sweep else "")
               + "; squares: the compared schemes."
               + (" Points with zero error are not drawn." if len(pts) < len(model.frontier) else "")
               + (f" {model.frontier_note}" if model.frontier_note else ""))
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(compared))]   # the scheme's colour in every chart
    legend = ([("ring", SWEEP_GREY, "sweep"), ("dot", PARETO_GREEN, "Pareto front")] if sweep else []) \
        + [("square", color, p.label) for p, color in zip(compared, colors)]

    def draw(doc: _Doc, x: float, top: float, width: float) -> None:
        xlo, xhi, xt = log_axis(min(p.total_bytes for p in pts), max(p.total_bytes for p in pts))
        ylo, yhi, yt = log_axis(min(p.rmse for p in pts), max(p.rmse for p in pts))
        ax = _Axes(doc, x, top, width, (xlo, xhi), (ylo, yhi), xlog=True, ylog=True)
        ax.frame(yt, [tick_label(t, t) for t in yt], "RMSE")
        pdf = doc.pdf
        for p in sweep:
            if not p.pareto:
                _marker(pdf, "ring", SWEEP_GREY, ax.X(p.total_bytes), ax.Y(p.rmse), 1.5)
        front = sorted((p for p in sweep if p.pareto), key=lambda p: p.total_bytes)
        if len(front) > 1:
            pdf.set_draw_color(*PARETO_GREEN)
            pdf.set_line_width(0.45)
            pdf.polyline([(ax.X(p.total_bytes), ax.Y(p.rmse)) for p in front])
        for p in front:
            _marker(pdf, "dot", PARETO_GREEN, ax.X(p.total_bytes), ax.Y(p.rmse), 1.6)
        for p, color in zip(compared, colors):
            if p in pts:
                _marker(pdf, "square", color, ax.X(p.total_bytes), ax.Y(p.rmse), 1.05)
        ax.xticks(xt, [bytes_label(t) for t in xt], "total bytes")

    return _Chart(title, caption, legend, draw)


def _charts_block(doc: _Doc, model: ReportModel) -> None:
    charts = [_ranges_chart(model), _errors_chart(model), _histogram_chart(model), _frontier_chart(model)]
    for row in (charts[:2], charts[2:]):
        height = max(c.height(doc, CHART_W) for c in row)
        doc.ensure(height + 4.0)
        top = doc.y + 4.0
        bottoms = [c.render(doc, MARGIN + k * (CHART_W + CHART_GAP), top, CHART_W) for k, c in enumerate(row)]
        doc.pdf.set_xy(MARGIN, max(bottoms))


# --- the report -----------------------------------------------------------------------------------
def _draw(model: ReportModel, total_pages: int | None) -> _Doc:
    doc = _Doc(model.title, f"quantcalc report: {model.tensor_name or 'unnamed tensor'}", total_pages)
    _title_block(doc, model.title, f"Tensor: {model.tensor_name}",
                 (("Data", model.source), ("Size", _size_words(model))))
    _settings_block(doc, model)
    _advice_block(doc, model)
    if model.manual_table is not None or not model.schemes:
        _table_block(doc, model.manual_table)
        _notes_block(doc, model.notes)
        return doc
    _table_block(doc, model.comparison_table())
    _charts_block(doc, model)
    _table_block(doc, model.channel_table)
    _table_block(doc, model.channel_errors)
    _table_block(doc, model.values_table)
    _notes_block(doc, model.notes)
    return doc


def _two_passes(draw: Callable[[int | None], _Doc]) -> bytes:
    """``draw(total_pages)`` twice: first to count the pages, then with "page i of n" in the footers."""
    return draw(draw(None).pdf.pages_count).output()


def render_pdf(model: ReportModel) -> bytes:
    """The report as PDF bytes (A4). The same model gives the same bytes (no dates, fixed metadata)."""
    return _two_passes(lambda pages: _draw(model, pages))


# --- the whole-model report -----------------------------------------------------------------------
LAYER_MARKERS_MAX = 80   # layers; above this the curves are drawn without a dot per layer


def _layer_chart(curves) -> _Chart:
    """Relative RMSE by layer index, one line per scheme in the scheme's palette colour (as in the page)."""
    title = "Per-layer curves"
    if curves is None or not curves.points["rel_rmse"]:
        return _Chart(title, "", [], no_data="no data (no tensor has a layer index)")
    caption = ("Each layer's relative RMSE, sqrt(sum of squared errors / sum of squared weights) over its tensors"
               + ("; log scale" if curves.log_y else "") + "."
               + (f" {curves.note[0].upper()}{curves.note[1:]}." if curves.note else ""))
    legend = [("line", PALETTE[k % len(PALETTE)], s) for k, s in enumerate(curves.lines["scheme"])]

    def draw(doc: _Doc, x: float, top: float, width: float) -> None:
        values = curves.points["rel_rmse"]
        if curves.log_y:
            lo, hi, ticks = log_axis(min(values), max(values))
            labels = [tick_label(t, t) for t in ticks]
        else:
            lo, hi, ticks, step = linear_axis(0.0, max(values), 5)
            labels = [tick_label(t, step) for t in ticks]
        first, last = min(curves.layers), max(curves.layers)
        ax = _Axes(doc, x, top, width, (first - 0.5, last + 0.5), (lo, hi), ylog=curves.log_y)
        ax.frame(ticks, labels, "relative RMSE")
        pdf = doc.pdf
        dots = len(curves.layers) <= LAYER_MARKERS_MAX
        for k, (xs, ys) in enumerate(zip(curves.lines["xs"], curves.lines["ys"])):
            color = PALETTE[k % len(PALETTE)]
            pdf.set_draw_color(*color)
            pdf.set_line_width(0.5)
            run: list[tuple[float, float]] = []
            for xv, yv in list(zip(xs, ys)) + [(math.nan, math.nan)]:   # a NaN ends a run (a gap in the line)
                if math.isfinite(yv):
                    run.append((ax.X(xv), ax.Y(yv)))
                    continue
                if len(run) > 1:
                    pdf.polyline(run)
                if dots:
                    for px, py in run:
                        _marker(pdf, "dot", color, px, py, 1.3)
                pdf.set_draw_color(*color)
                pdf.set_line_width(0.5)
                run = []
        _, _, xt, _ = linear_axis(first, last, 8, integer=True)
        xt = [t for t in xt if first <= t <= last]
        ax.xticks(xt, [f"{int(t):,}" for t in xt], "layer index")

    return _Chart(title, caption, legend, draw)


def _scan_draw(report: "ScanReport", total_pages: int | None) -> _Doc:
    doc = _Doc(report.title, f"quantcalc whole-model report: {report.checkpoint or 'checkpoint'}", total_pages)
    _title_block(doc, report.title, f"Checkpoint: {report.checkpoint}", report.facts)
    _notes_block(doc, report.notes)
    _table_block(doc, report.totals)
    _table_block(doc, report.worst)
    _table_block(doc, report.by_role)
    chart = _layer_chart(report.curves)
    doc.heading("Error by layer", keep_with=chart.height(doc, CONTENT_W))
    doc.pdf.set_xy(MARGIN, chart.render(doc, MARGIN, doc.y, CONTENT_W))
    _table_block(doc, report.by_layer)
    doc.heading("Mixed-precision plan")
    doc.paragraph(report.plan_words)
    _table_block(doc, report.plan_table)
    _table_block(doc, report.plan_choices)
    return doc


def render_scan_pdf(report: "ScanReport") -> bytes:
    """The whole-model report (:class:`quantcalc_ui.scanreport.ScanReport`) as PDF bytes (A4), laid out as
    :func:`render_pdf`'s report: title and facts, then the totals per scheme, the most damaged tensors, the error
    by role, the per-layer chart and table, and the mixed-precision plan. Same model, same bytes."""
    return _two_passes(lambda pages: _scan_draw(report, pages))
