"""Readers for pasted text, manual-mode lines and CSV.

Pasted text (:func:`parse_text`, seeds 000/002)
    * One channel per line, or per ``;`` on a line.  Line breaks are ``\\n``, ``\\r\\n`` or ``\\r``.
      Blank lines and empty ``;`` records are ignored.  Channels may differ in length.
    * Optional label: ``name: 1, 2, 3``.  Everything before the first ``:`` of a record is the label
      (stripped, 1..Limits.max_name_chars characters, unique).  Unlabelled channels are called
      ``ch<i>`` with ``i`` the 0-based channel index.
    * Values are separated by commas and/or whitespace (spaces, tabs, any Unicode space).  A single
      trailing comma is ignored; an empty value (``1,,2`` or a leading comma) is an error.
    * Numbers: decimal with optional exponent (``-1.5e-3``, ``.5``, ``5.``, ``+2``), and
      ``nan``/``inf``/``infinity`` in any case.  No hex, no ``1_000``.  U+2212 MINUS SIGN is accepted
      as ``-`` (it is what typeset documents paste).  Values overflowing float64 (``1e999``) become
      inf and are treated as non-finite.  Denormals (``5e-324``) are kept exactly.
    * Decimal separator is ``.`` only; a comma always separates values, so ``0,5`` alone is the two
      values 0 and 5 and ``1,2,3`` is three values.  RULE for ambiguity: a chunk of the form
      ``<digits>,<digits>`` with no space around the comma (``0,5``) in a record that ALSO separates
      values by whitespace or by other commas (``0,5 1,5`` or ``0,5, 2``) looks like a decimal comma
      and is an InputError pointing at it, asking for ``.`` decimals.
    * Non-finite values: counted and located (line, column, token).  Policy ``"error"`` (default)
      raises one InputError listing the count and the first 5 positions; ``"drop"`` removes them
      (a channel left empty is an error).
    * Speed: a record is parsed by ``np.fromstring`` after a vectorized character/structure check,
      in ~1 MB chunks; only a chunk that fails is re-scanned token by token to locate the error.
      10**7 tokens parse in a few seconds with memory ~ a few bytes per character.

Manual mode (:func:`parse_manual`, seed 001): one line per sample, fields ``channel, scale,
zero_point, sample`` (or ``scale, zero_point, sample`` -> channel ``ch<i>``), separated by commas
(then the name may contain spaces) or by whitespace.  A first line of header words is skipped.
scale must be finite and > 0, zero_point an integer in [-2**31, 2**31-1] (``11`` or ``11.0``),
sample finite.  Channel names may repeat (each line is an independent sample).

Control characters (every reader here): C0 controls other than tab, line feed, vertical tab, form
feed and carriage return (U+0000..U+0008, U+000E..U+001F), DEL (U+007F) and the C1 controls
(U+0080..U+009F) are refused wherever they occur -- in values, labels and headers -- with line,
column and the UTF-8 byte offset (counted from the start of the text, after a BOM).  They are never
part of a number, a label or a separator; a NUL usually means a binary or UTF-16 file.

CSV (:func:`read_csv`): delimiter is tab if the first non-blank line has a tab, else ``;`` if it
has a ``;`` (then a comma is the decimal separator, e.g. ``0,5;1,25``), else ``,``; a first line of one
cell leaves the choice to the whole text, in the same order.  Under a tab delimiter a row's leading
tab ends an empty first cell (an error, as a leading ``,`` is).  Cells are split
with the csv module's quoting rules (``"a,b"`` is one cell); a *field* is one cell of a row.

* Numbers follow the syntax above: plain decimals, ``.`` as the decimal point (``,`` under ``;``),
  no digit grouping.  A cell that is not a number but looks like one -- digits with a grouping or
  decimal comma (``1,000``, ``0,5``), with a space of any kind inside (``1 000``, U+2009 THIN SPACE,
  U+00A0), with ``'`` or ``_`` grouping, several ``.``, a ``%``, or non-ASCII digits -- is
  *number-like*.  A number-like cell is never taken silently as a label or a header: it is an
  InputError naming its line and column and why it is not a number.
* Data cells are unquoted numbers; empty cells are errors (a single trailing delimiter is
  ignored).  A quoted data cell (``1,"2",3``) is an error naming the cell.  Under a tab delimiter
  a ``,`` inside a data cell is an error (``.`` is the decimal point there).
* Header: ``True``, ``False`` or ``None`` (auto: the first row is a header iff a cell after the
  first is a word -- non-empty, neither a number nor number-like -- or it is a single word).
* ``channels_as="rows"``: each data row is a channel.  Its first column holds channel labels
  (a) when the header says so: its first cell is empty (pandas/R index columns) or one of
  ``channel``, ``channel_name``, ``channel_label``, ``name``, ``label``, ``ch`` (any case); then
  every first cell is a label, whatever it looks like; or (b) without such a header, when the first
  data row's first cell is a word.  In case (b) every later first cell must be a word too (or empty:
  default name): a number there is an error naming both lines, a number-like cell an error as above.
  Otherwise the first column is data and a word in it is "not a number".
* ``channels_as="columns"``: each column is a channel, names from the header.
* Field counts: under a header every row has exactly as many fields as the header has cells
  (label cell included; trailing empty header cells do not count), else an InputError names the
  line and both counts.  Without a header, ``channels_as="columns"`` rows must all have the first
  row's count; ``channels_as="rows"`` rows may differ in length (a ragged tensor).

Limits: text length <= Limits.max_bytes characters, values <= Limits.max_elements, channels <=
Limits.max_channels (CSV rows-mode rows too), CSV data rows <= Limits.max_rows, labels <=
Limits.max_name_chars.  Measured (1 core): 10**7 values on one line ~2-3 s; 10**6 one-value lines
hit the channel cap in ~2 s; CSV ~60k rows/s.

Names (labels, CSV header cells) are UNTRUSTED user text returned as plain ``str``; every renderer
(HTML table, PDF, plot title) must escape them.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np

from ._common import SHOW_POSITIONS, InputError, Limits, check_policy, quote

_NUM_RE = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?i:nan|inf(?:inity)?)"
_NUM = re.compile(_NUM_RE)
_INT = re.compile(r"[+-]?[0-9]+")
_SKIP = re.compile(r"[\s;]*")
_SKIP_LINES = re.compile(r"\s*")
_RECORD = re.compile(r"[^;\n\r]*")
_LINE = re.compile(r"[^\n\r]*")
_UWS = re.compile(r"\s")
_BLANK = re.compile(r"\s*")
_SEP_RUN = re.compile(r"[\s,]*")
_SEP_CHAR = re.compile(r"[\s,]")
_ITEM = re.compile(r"[^\s,]+|,")
_DEC_COMMA = re.compile(r"(?<!\S)[+-]?[0-9]+,[0-9]+(?=,?(?:\s|$))")
_CHUNK = 1 << 20

_ALLOWED = np.zeros(256, dtype=bool)
for _c in b"0123456789+-.eEnNaAiIfFtTyY, \t\n\r\x0b\x0c":
    _ALLOWED[_c] = True
_SPACE = np.zeros(256, dtype=bool)
for _c in b" \t\n\r\x0b\x0c":
    _SPACE[_c] = True
_DIGIT = np.zeros(256, dtype=bool)
_DIGIT[48:58] = True

# C0 controls except \t \n \v \f \r, DEL, C1 controls: never a number, a label or a separator
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
_CONTROL_NAMES = {0x00: "NUL", 0x07: "BEL", 0x08: "BS", 0x1B: "ESC", 0x7F: "DEL"}
# fast screen on UTF-8 bytes: deleting every byte but C0/DEL leaves nothing, and no C1 (\xc2\x80-\xc2\x9f)
_NOT_C0_DEL = bytes(c for c in range(256) if not (c < 9 or 14 <= c < 32 or c == 127))
_C1_UTF8 = re.compile(rb"\xc2[\x80-\x9f]")
# "number-like": digits with grouping / decimal commas, inner spaces of any kind, ' or _ grouping, several
# dots, a percent sign or non-ASCII digits (\d is Unicode); see the module docstring
_NUMBER_LIKE = re.compile(r"[+\-\u2212]?[\d.]*\d[\d\s.,'_]*(?:[eE][+\-\u2212]?\d+)?\s*%?")
_LABEL_HEADERS = frozenset({"", "channel", "channel_name", "channel_label", "name", "label", "ch"})


@dataclass(frozen=True)
class ParsedText:
    """Channels read from text: ``names[i]`` labels ``rows[i]`` (float64, 1-D, lengths may differ).

    Names are untrusted user text: escape them before rendering.
    """

    names: tuple[str, ...]
    rows: tuple[np.ndarray, ...]

    @property
    def ragged(self) -> bool:
        return len({r.size for r in self.rows}) > 1

    def as_array(self) -> np.ndarray | list[np.ndarray]:
        """2-D float64 array (channels x values) if all rows have equal length, else the list of rows."""
        if len(self.rows) == 1:
            return self.rows[0].reshape(1, -1)  # a view: no copy of a 10**7-value channel
        if self.rows and not self.ragged:
            return np.ascontiguousarray(np.stack(self.rows))
        return list(self.rows)


@dataclass(frozen=True)
class ManualRows:
    """Manual-mode lines: one sample per line with its channel's scale and zero point."""

    names: tuple[str, ...]
    scale: np.ndarray       # float64
    zero_point: np.ndarray  # int64
    sample: np.ndarray      # float64


def _as_text(text: str | bytes, source: str | None) -> str:
    if isinstance(text, (bytes, bytearray, memoryview)):
        return decode_utf8(bytes(text), source)
    if not isinstance(text, str):
        raise InputError(f"expected text, got {type(text).__name__}", source=source)
    return text


def decode_utf8(data: bytes | memoryview, source: str | None = None) -> str:
    """UTF-8 (optional BOM) -> str; invalid bytes are an InputError with the byte offset."""
    data = memoryview(data).cast("B")
    if data[:3] == b"\xef\xbb\xbf":
        data = data[3:]
    try:
        return str(data, "utf-8")
    except UnicodeDecodeError as e:
        hint = ""
        if bytes(data[:2]) in (b"\xff\xfe", b"\xfe\xff"):
            hint = " (this looks like UTF-16; save the file as UTF-8)"
        raise InputError(f"text is not valid UTF-8 (byte {bytes(data[e.start:e.start + 1])!r}){hint}",
                         offset=e.start, source=source) from None


class _Loc:
    """Maps absolute character positions of one line to (line, column, offset)."""

    __slots__ = ("line", "line_start", "source", "shift")

    def __init__(self, line: int, line_start: int, source: str | None, shift: int = 0):
        self.line, self.line_start, self.source, self.shift = line, line_start, source, shift

    def err(self, msg: str, pos: int) -> InputError:
        pos += self.shift  # positions inside a rewritten copy of the line -> positions in the text
        return InputError(msg, line=self.line, column=pos - self.line_start + 1, offset=pos,
                          source=self.source)

    def where(self, pos: int) -> str:
        return f"line {self.line}, column {pos - self.line_start + 1}"


def _line_at(text: str, pos: int) -> tuple[int, int]:
    """(1-based line, start offset of that line) of text position ``pos``; breaks are \\n, \\r\\n, \\r."""
    line = 1 + text.count("\n", 0, pos) + text.count("\r", 0, pos) - text.count("\r\n", 0, pos)
    return line, max(text.rfind("\n", 0, pos), text.rfind("\r", 0, pos)) + 1


def refuse_control_characters(text: str, source: str | None = None) -> None:
    """InputError at the first C0/C1 control character of ``text`` other than tab and line breaks
    (see the module docstring), with line, column and UTF-8 byte offset."""
    step = 1 << 22  # screen 4 Mi characters at a time (~10x faster than the regex; bounded memory)
    for a in range(0, len(text), step):
        b = text[a:a + step].encode("utf-8", "surrogatepass")
        if b.translate(None, _NOT_C0_DEL) or (not b.isascii() and _C1_UTF8.search(b)):
            break
    else:
        return
    m = _CONTROL.search(text)
    pos, code = m.start(), ord(m.group())
    line, line_start = _line_at(text, pos)
    name = f" ({_CONTROL_NAMES[code]})" if code in _CONTROL_NAMES else ""
    byte = len(text[:pos].encode("utf-8", "surrogatepass"))
    hint = " (a NUL usually means a binary file or UTF-16 text; save it as UTF-8 text)" if code == 0 else ""
    raise InputError(f"control character U+{code:04X}{name} at byte offset {byte}: text input may hold "
                     f"printable characters, tabs and line breaks only{hint}",
                     line=line, column=pos - line_start + 1, offset=pos, source=source)


def _why_number_like(cell: str) -> str:
    """Why a number-like cell (see _NUMBER_LIKE) is not a number, in a few words."""
    if any(c.isdigit() and not c.isascii() for c in cell):
        return "non-ASCII digits: use 0-9"
    space = re.search(r"\s", cell.strip())
    if space:
        ch = space.group()
        what = "a space" if ch == " " else f"U+{ord(ch):04X} {unicodedata.name(ch, 'SPACE')}"
        return f"{what} inside the number: digit-group separators are not accepted"
    if re.fullmatch(r"[+\-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?", cell.strip()):
        return "',' as a digit-group separator: write the digits without it"
    if "," in cell:
        return "a decimal comma: '.' is the decimal point, except with ';' as the delimiter"
    if "'" in cell or "_" in cell:
        return "digit-group separators (' or _) are not accepted"
    if "%" in cell:
        return "a percent sign: give the plain number"
    return "'.' as a digit-group separator, or several decimal points"


def _is_number_like(cell: str) -> bool:
    return _NUMBER_LIKE.fullmatch(cell.strip()) is not None


class _LineWalker:
    """Iterates non-blank records of a text (split at line breaks and optionally ';') with line numbers."""

    def __init__(self, text: str, record: re.Pattern, skip: re.Pattern):
        self.text, self.record, self.skip = text, record, skip
        self.line, self.line_start, self.counted = 1, 0, 0

    def __iter__(self):
        text, n, pos = self.text, len(self.text), 0
        while True:
            pos = self.skip.match(text, pos).end()
            if pos >= n:
                return
            a = self.counted
            nl = text.count("\n", a, pos) + text.count("\r", a, pos) - text.count("\r\n", a, pos)
            if nl:
                self.line += nl
                self.line_start = max(text.rfind("\n", a, pos), text.rfind("\r", a, pos)) + 1
            self.counted = pos
            end = self.record.match(text, pos).end()
            yield pos, end
            pos = end


# --------------------------------------------------------------------------------------------
# one run of values "1, 2 3e-4, nan" -> float64


class _Values:
    """Values of one record plus a way to locate value k (absolute char position of its token)."""

    def __init__(self, values: np.ndarray, locate: Callable[[np.ndarray], np.ndarray]):
        self.values, self.locate = values, locate


def _fast_chunk(chunk: str, base: int, csv_strict: bool, other_sep: bool) -> _Values | None:
    """Vectorized parse of a chunk, or None if anything is off (the slow path then explains)."""
    if not chunk.isascii():
        chunk = _UWS.sub(" ", chunk)  # Unicode spaces -> ' ', one char for one char
        if not chunk.isascii():
            return None
    b = np.frombuffer(chunk.encode("ascii"), dtype=np.uint8)
    if b.size == 0:
        return _Values(np.empty(0), lambda k: k)
    if not _ALLOWED[b].all():
        return None
    sp = _SPACE[b]
    comma = b == 44
    tok = ~(sp | comma)
    starts = tok.copy()
    starts[1:] &= ~tok[:-1]
    ntok = int(np.count_nonzero(starts))
    ns = b[~sp]
    if ns.size and ns[0] == 44:
        return None
    c = ns == 44
    if c.size > 1 and bool((c[1:] & c[:-1]).any()):
        return None
    if csv_strict and ntok > 1:
        # every gap between two tokens must hold a comma: with spaces removed, tokens separated
        # only by whitespace would merge, so the run count drops
        t = ns != 44
        runs = int(np.count_nonzero(t[1:] & ~t[:-1])) + int(t[0])
        if runs != ntok:
            return None
    elif ntok > 1 and b.size > 2 and comma.any():
        tight = comma[1:-1] & _DIGIT[b[:-2]] & _DIGIT[b[2:]]
        if tight.any() and other_sep and _DEC_COMMA.search(chunk):
            return None
    try:
        vals = np.fromstring(chunk.replace(",", " "), dtype=np.float64, sep=" ")
    except (ValueError, DeprecationWarning):
        return None
    if vals.size != ntok:
        return None
    return _Values(vals, lambda k: base + np.flatnonzero(starts)[k])


_NON_SEP = re.compile(r"[^\s,]")


def _has_other_sep(text: str, a: int, n: int) -> bool:
    """Does text[a:n] separate values by whitespace or by more than one comma (ignoring the ends)?"""
    m = _NON_SEP.search(text, a, n)
    if m is None:
        return False
    a = m.start()
    last = a
    # last token character: scan back from the end past separators (bounded by trailing blanks)
    k = n - 1
    while k > a and (text[k].isspace() or text[k] == ","):
        k -= 1
    last = k + 1
    return text.count(",", a, last) > 1 or _UWS.search(text, a, last) is not None


def _slow_chunk(chunk: str, base: int, loc: _Loc, csv_strict: bool, other_sep: bool,
                delim_name: str) -> _Values:
    """Token-by-token parse; raises InputError at the first problem in reading order."""
    if not csv_strict and other_sep:
        m = _DEC_COMMA.search(chunk)
        if m:
            tok = m.group(0)
            raise loc.err(f"{quote(tok)} is ambiguous: ',' separates values, but this looks like a "
                          f"decimal comma because the record also separates values by spaces or "
                          f"commas; write {tok.replace(',', '.')} ('.' is the decimal separator)",
                          base + m.start())
    vals: list[float] = []
    pos_list: list[int] = []
    prev, prev_end = "start", 0
    for m in _ITEM.finditer(chunk):
        item, p = m.group(0), base + m.start()
        if item == ",":
            if prev != "token":
                what = "starts with" if prev == "start" else "has two"
                raise loc.err(f"empty value: the list {what} {delim_name} with nothing between "
                              f"(use a number, or remove the extra {delim_name})", p)
            prev = "comma"
            continue
        if csv_strict and prev == "token":
            odd = [c for c in chunk[prev_end:m.start()] if c not in " \t"]
            why = (f" (separated by U+{ord(odd[0]):04X} {unicodedata.name(odd[0], 'SPACE')}: a space inside a "
                   f"cell; digit-group separators are not accepted)") if odd else ""
            raise loc.err(f"{quote(item)} follows the previous value without a {delim_name}{why}", p)
        prev_end = m.end()
        if not _NUM.fullmatch(item):
            raise loc.err(_not_a_number(item), p)
        vals.append(float(item))
        pos_list.append(p)
        prev = "token"
    positions = np.asarray(pos_list, dtype=np.int64)
    return _Values(np.asarray(vals, dtype=np.float64), lambda k: positions[k])


def _not_a_number(tok: str) -> str:
    msg = f"{quote(tok)} is not a number"
    if ":" in tok:
        msg += " (a channel label 'name:' must come first in its record, once)"
    elif any(ord(ch) > 127 for ch in tok):
        msg += " (non-ASCII character; use ASCII digits, '-' and '.')"
    elif re.fullmatch(r"[+-]?0[xX][0-9a-fA-F.]*", tok):
        msg += " (hexadecimal is not accepted)"
    elif "_" in tok:
        msg += " (digit separators '_' are not accepted)"
    return msg


def _chunks(text: str, a: int, n: int):
    """Split text[a:n] at separator runs into pieces of ~_CHUNK chars; each piece starts at a token."""
    while a < n:
        if n - a <= _CHUNK:
            yield text[a:n], a
            return
        m = _SEP_CHAR.search(text, a + _CHUNK, n)
        if m is None:
            yield text[a:n], a
            return
        cut = _SEP_RUN.match(text, m.start(), n).end()
        yield text[a:cut], a
        a = cut


def parse_values(text: str, base: int, loc: _Loc, *, csv_strict: bool = False,
                 delim_name: str = "','", cap: int = 1 << 62, used: int = 0,
                 end: int | None = None) -> _Values:
    """Parse the run of values text[base:end] (absolute char positions; end defaults to len)."""
    end = len(text) if end is None else end
    other = _has_other_sep(text, base, end) if not csv_strict else False
    parts: list[_Values] = []
    count = 0
    for chunk, cbase in _chunks(text, base, end):
        # short runs: the token loop is cheaper than numpy's per-call overhead (same results)
        v = _fast_chunk(chunk, cbase, csv_strict, other) if len(chunk) >= 256 else None
        if v is None:
            v = _slow_chunk(chunk, cbase, loc, csv_strict, other, delim_name)
        count += v.values.size
        if used + count > cap:
            raise InputError(f"more than {cap:,} values in total, over the cap "
                             f"(Limits.max_elements)", line=loc.line, source=loc.source)
        parts.append(v)
    if len(parts) == 1:
        return parts[0]
    values = np.concatenate([p.values for p in parts])
    sizes = np.cumsum([0] + [p.values.size for p in parts])

    def locate(k: np.ndarray) -> np.ndarray:
        k = np.atleast_1d(k)
        out = np.empty(k.size, dtype=np.int64)
        for i, kk in enumerate(k):
            j = int(np.searchsorted(sizes, kk, side="right")) - 1
            out[i] = parts[j].locate(np.array([kk - sizes[j]]))[0]
        return out

    return _Values(values, locate)


class _Nonfinite:
    """Accumulates non-finite counts and the first positions across channels."""

    def __init__(self, text: str):
        self.text, self.count, self.shown = text, 0, []

    def add(self, v: _Values, loc: _Loc) -> np.ndarray:
        bad = ~np.isfinite(v.values)
        n = int(np.count_nonzero(bad))
        if n:
            need = SHOW_POSITIONS - len(self.shown)
            if need > 0:
                idx = np.flatnonzero(bad)[:need]
                for p in v.locate(idx):
                    p = int(p)
                    m = re.compile(r"[^\s,;]+").match(self.text, p)
                    tok = m.group(0) if m else "?"
                    self.shown.append((loc.line, p - loc.line_start + 1, p, tok))
            self.count += n
        return bad

    def raise_if_any(self, source: str | None) -> None:
        if not self.count:
            return
        first = self.shown[0]
        where = "; ".join(f"line {ln}, column {c} ({quote(t)})" for ln, c, _, t in self.shown)
        more = f" (first {len(self.shown)} shown)" if self.count > len(self.shown) else ""
        raise InputError(f"{self.count:,} non-finite value(s) (NaN/inf, or too large for float64): "
                         f"{where}{more}; remove them or use nonfinite='drop'",
                         line=first[0], column=first[1], offset=first[2], source=source)


# --------------------------------------------------------------------------------------------


def parse_text(text: str | bytes, *, limits: Limits = Limits(), nonfinite: str = "error",
               source: str | None = None) -> ParsedText:
    """Parse pasted channels (see module docstring for the exact grammar) into float64 rows."""
    check_policy(nonfinite)
    text = _as_text(text, source)
    if len(text) > limits.max_bytes:
        raise InputError(f"text is {len(text):,} characters, over the cap of {limits.max_bytes:,} "
                         f"(Limits.max_bytes)", source=source)
    refuse_control_characters(text, source)
    text = text.replace("\u2212", "-")
    names: list[str | None] = []
    rows: list[np.ndarray] = []
    seen: dict[str, int] = {}
    total = 0
    nf = _Nonfinite(text)
    walker = _LineWalker(text, _RECORD, _SKIP)
    for start, end in walker:
        loc = _Loc(walker.line, walker.line_start, source)
        if len(rows) >= limits.max_channels:
            raise loc.err(f"more than {limits.max_channels:,} channels, over the cap "
                          f"(Limits.max_channels); each line or ';' starts a new channel", start)
        colon = text.find(":", start, end)
        name = None
        body_start = start
        if colon >= 0:
            name = text[start:colon].strip()
            if not name:
                raise loc.err("empty channel label before ':'", colon)
            if len(name) > limits.max_name_chars:
                raise loc.err(f"channel label is {len(name):,} characters, over the cap of "
                              f"{limits.max_name_chars} (Limits.max_name_chars)", start)
            if name in seen:
                raise loc.err(f"duplicate channel label {quote(name)} (first used on line "
                              f"{seen[name]})", start)
            seen[name] = walker.line
            body_start = colon + 1
        if _BLANK.match(text, body_start, end).end() >= end:
            raise loc.err(f"channel {quote(name)} has no values after ':'", colon)
        v = parse_values(text, body_start, loc, cap=limits.max_elements, used=total, end=end)
        total += v.values.size
        bad = nf.add(v, loc)
        vals = v.values
        if nonfinite == "drop" and bad.any():
            vals = vals[~bad]
            if vals.size == 0:
                raise loc.err(f"channel {quote(name or f'ch{len(rows)}')} has no finite values "
                              f"left after nonfinite='drop'", start)
        rows.append(vals)
        names.append(name)
    if not rows:
        raise InputError("no values found (the text is empty or blank)", source=source)
    if nonfinite == "error":
        nf.raise_if_any(source)
    final = _default_names(names, seen, source)
    return ParsedText(names=final, rows=tuple(rows))


def _default_names(names: list[str | None], seen: dict[str, int], source: str | None) -> tuple[str, ...]:
    out = []
    for i, n in enumerate(names):
        if n is None:
            n = f"ch{i}"
            if n in seen:
                raise InputError(f"channel label {quote(n)} on line {seen[n]} collides with the "
                                 f"default name of unlabelled channel {i}; rename it", source=source)
        out.append(n)
    return tuple(out)


# --------------------------------------------------------------------------------------------

_HEADER_WORDS = ({"channel", "name", "channel_name", "ch"}, {"scale", "s"},
                 {"zero_point", "zero point", "zeropoint", "zp", "zero-point"},
                 {"sample", "x", "value", "val"})


def parse_manual(text: str | bytes, *, limits: Limits = Limits(),
                 source: str | None = None) -> ManualRows:
    """Parse manual-mode lines ``channel, scale, zero_point, sample`` (see module docstring)."""
    text = _as_text(text, source)
    if len(text) > limits.max_bytes:
        raise InputError(f"text is {len(text):,} characters, over the cap of {limits.max_bytes:,} "
                         f"(Limits.max_bytes)", source=source)
    refuse_control_characters(text, source)
    text = text.replace("\u2212", "-")
    names: list[str] = []
    scale: list[float] = []
    zp: list[int] = []
    sample: list[float] = []
    walker = _LineWalker(text, _LINE, _SKIP_LINES)
    first = True
    for start, end in walker:
        loc = _Loc(walker.line, walker.line_start, source)
        if len(names) >= limits.max_channels:
            raise loc.err(f"more than {limits.max_channels:,} lines, over the cap "
                          f"(Limits.max_channels)", start)
        fields = _split_fields(text, start, end)
        if first:
            first = False
            words = [f.strip().lower() for f, _ in fields]
            if len(words) in (3, 4) and all(w in hw for w, hw in zip(words[::-1], _HEADER_WORDS[::-1])):
                continue
        if len(fields) not in (3, 4):
            raise loc.err(f"expected 4 fields 'channel, scale, zero_point, sample' (or 3 without "
                          f"the channel), found {len(fields)}", start)
        if len(fields) == 4:
            (nm, npos), rest = fields[0], fields[1:]
            nm = nm.strip()
            if len(nm) > limits.max_name_chars:
                raise loc.err(f"channel name is {len(nm):,} characters, over the cap of "
                              f"{limits.max_name_chars} (Limits.max_name_chars)", npos)
            if not nm:
                nm = f"ch{len(names)}"
        else:
            nm, rest = f"ch{len(names)}", fields
        (s_tok, s_pos), (z_tok, z_pos), (x_tok, x_pos) = [(t.strip(), p + len(t) - len(t.lstrip()))
                                                          for t, p in rest]
        s = _manual_float(s_tok, "scale", loc, s_pos)
        if not (s > 0):
            raise loc.err(f"scale must be > 0, got {quote(s_tok)}", s_pos)
        z = _manual_int(z_tok, loc, z_pos)
        x = _manual_float(x_tok, "sample", loc, x_pos)
        names.append(nm)
        scale.append(s)
        zp.append(z)
        sample.append(x)
    if not names:
        raise InputError("no manual-mode lines found (expected 'channel, scale, zero_point, sample')",
                         source=source)
    return ManualRows(names=tuple(names), scale=np.asarray(scale, dtype=np.float64),
                      zero_point=np.asarray(zp, dtype=np.int64),
                      sample=np.asarray(sample, dtype=np.float64))


def _split_fields(text: str, start: int, end: int) -> list[tuple[str, int]]:
    line = text[start:end]
    if "," in line:
        out, p = [], start
        parts = line.split(",")
        if len(parts) > 1 and not parts[-1].strip():
            parts = parts[:-1]  # trailing comma
        for part in parts:
            out.append((part, p))
            p += len(part) + 1
        return out
    return [(m.group(0), start + m.start()) for m in re.finditer(r"\S+", line)]


def _manual_float(tok: str, what: str, loc: _Loc, pos: int) -> float:
    if not tok:
        raise loc.err(f"{what} is empty", pos)
    if not _NUM.fullmatch(tok):
        raise loc.err(f"{what} {_not_a_number(tok)}", pos)
    v = float(tok)
    if v != v or v in (float("inf"), float("-inf")):
        raise loc.err(f"{what} {quote(tok)} is not finite", pos)
    return v


def _manual_int(tok: str, loc: _Loc, pos: int) -> int:
    if _INT.fullmatch(tok):
        z = int(tok)
    else:
        v = _manual_float(tok, "zero_point", loc, pos)
        if v != int(v):
            raise loc.err(f"zero_point must be an integer, got {quote(tok)}", pos)
        z = int(v)
    if not -(2**31) <= z < 2**31:
        raise loc.err(f"zero_point {z} is outside the int32 range", pos)
    return z


# --------------------------------------------------------------------------------------------


def read_csv(data: bytes | str, *, channels_as: Literal["rows", "columns"] = "rows",
             header: bool | None = None, limits: Limits = Limits(), nonfinite: str = "error",
             source: str | None = None) -> ParsedText:
    """Read CSV into channels (see module docstring: delimiter, header, label column, field counts)."""
    check_policy(nonfinite)
    if channels_as not in ("rows", "columns"):
        raise ValueError(f"channels_as must be 'rows' or 'columns', got {channels_as!r}")
    if header not in (True, False, None):
        raise ValueError(f"header must be True, False or None, got {header!r}")
    if isinstance(data, (bytes, bytearray, memoryview)) and len(data) > limits.max_bytes:
        raise InputError(f"CSV is {len(data):,} bytes, over the cap of {limits.max_bytes:,} "
                         f"(Limits.max_bytes)", source=source)
    text = _as_text(data, source)
    if len(text) > limits.max_bytes:
        raise InputError(f"CSV is {len(text):,} characters, over the cap of {limits.max_bytes:,} "
                         f"(Limits.max_bytes)", source=source)
    refuse_control_characters(text, source)
    text = text.replace("\u2212", "-")
    walker = _LineWalker(text, _LINE, _SKIP_LINES)
    it = iter(walker)
    first = next(it, None)
    if first is None:
        raise InputError("CSV has no rows (empty or blank)", source=source)
    first_loc = _Loc(walker.line, walker.line_start, source)
    first_line = text[first[0]:first[1]]
    delim = _sniff_delimiter(text[walker.line_start:first[1]]) or _sniff_delimiter(text) or ","
    if delim == "\t":
        # The walker skips leading blanks, but a leading tab ends an empty first cell: rows start at their line.
        first = (walker.line_start, first[1])
        first_line = text[first[0]:first[1]]
    delim_name = {",": "','", "\t": "tab", ";": "';'"}[delim]

    head_cells = _split_cells(first_line, delim, first_loc, first[0])
    is_header = header if header is not None else _looks_like_header(head_cells, delim)
    col_names: list[str] | None = None
    lines: list[tuple[int, int, _Loc]] = []
    if is_header:
        col_names = [c.strip() for c in head_cells]
        while col_names and not col_names[-1]:
            col_names.pop()
        if not col_names:
            raise first_loc.err("the header row has only empty cells", first[0])
        for c in col_names:
            if len(c) > limits.max_name_chars:
                raise first_loc.err(f"header cell is {len(c):,} characters, over the cap of "
                                    f"{limits.max_name_chars} (Limits.max_name_chars)", first[0])
    else:
        lines.append((first[0], first[1], first_loc))
    labels = _LabelColumn(delim, declared=channels_as == "rows" and col_names is not None
                          and col_names[0].lower() in _LABEL_HEADERS)
    if col_names is not None:
        want_fields: int | None = len(col_names)
        want_from = f"the header (line {first_loc.line}) has {want_fields}"
    else:
        want_fields, want_from = None, ""

    names: list[str | None] = []
    rows: list[np.ndarray] = []
    total = 0
    nf = _Nonfinite(text)

    def handle(start: int, end: int, loc: _Loc) -> None:
        nonlocal total, want_fields, want_from
        if channels_as == "rows" and len(rows) >= limits.max_channels:
            raise loc.err(f"more than {limits.max_channels:,} rows, over the cap "
                          f"(Limits.max_channels)", start)
        if len(rows) >= limits.max_rows:
            raise loc.err(f"more than {limits.max_rows:,} data rows, over the cap "
                          f"(Limits.max_rows)", start)
        row_start, name, fields = start, None, 0
        seg = text[start:end]
        if channels_as == "rows":
            cell, lead, rest_at = _first_cell(seg, delim, loc, start)
            if labels.is_label(cell, loc, start + lead):
                name = cell.strip()
                if len(name) > limits.max_name_chars:
                    raise loc.err(f"channel name is {len(name):,} characters, over the cap of "
                                  f"{limits.max_name_chars} (Limits.max_name_chars)", start)
                fields = 1
                start += rest_at
                seg = text[start:end]
        _refuse_odd_data_cells(seg, delim, loc, start)
        body = _to_comma(seg, delim)
        if not body.strip():
            raise loc.err("row has no values", start)
        # body is a same-length rewrite of the row: positions shift by the row's start
        v = parse_values(body, 0, _Loc(loc.line, loc.line_start, source, shift=start), csv_strict=True,
                         delim_name=delim_name, cap=limits.max_elements, used=total)
        v.locate = (lambda f, s0: (lambda k: f(k) + s0))(v.locate, start)
        fields += v.values.size
        if want_fields is None and channels_as == "columns":
            want_fields, want_from = fields, f"line {loc.line} (the first row) has {fields}"
        if want_fields is not None and fields != want_fields:
            hint = (" (channels_as='columns' needs a rectangular table)" if channels_as == "columns" else
                    " (under a header every row has one field per header cell; without a header, "
                    "rows may differ in length)")
            raise loc.err(f"row has {fields} field{'' if fields == 1 else 's'} but {want_from}{hint}", row_start)
        total += v.values.size
        bad = nf.add(v, loc)
        vals = v.values
        if channels_as == "rows" and nonfinite == "drop" and bad.any():
            vals = vals[~bad]
            if vals.size == 0:
                raise loc.err("row has no finite values left after nonfinite='drop'", row_start)
        rows.append(vals)
        names.append(name)

    for s, e, loc in lines:
        handle(s, e, loc)
    for s, e in it:
        handle(walker.line_start if delim == "\t" else s, e, _Loc(walker.line, walker.line_start, source))
    if not rows:
        raise InputError("CSV has a header but no data rows", source=source)

    if channels_as == "columns":
        table = np.stack(rows)  # samples x channels
        cols = np.ascontiguousarray(table.T)
        if nonfinite == "error":
            nf.raise_if_any(source)
        out_rows = []
        for j in range(cols.shape[0]):  # one Python step per channel only to build the tuple
            r = cols[j]
            if nonfinite == "drop":
                r = r[np.isfinite(r)]
                if r.size == 0:
                    raise InputError(f"column {j + 1} has no finite values left after "
                                     f"nonfinite='drop'", source=source)
            out_rows.append(r)
        nm = col_names if col_names else [f"ch{j}" for j in range(cols.shape[0])]
        nm = [n if n else f"ch{j}" for j, n in enumerate(nm)]
        _check_unique(nm, source)
        return ParsedText(names=tuple(nm), rows=tuple(out_rows))

    if nonfinite == "error":
        nf.raise_if_any(source)
    nm = [n if n else f"ch{i}" for i, n in enumerate(names)]
    _check_unique(nm, source)
    return ParsedText(names=tuple(nm), rows=tuple(rows))


def _cell_kind(cell: str, delim: str) -> str:
    """'empty', 'number' (the number syntax; ',' is the decimal point under ';'), 'number-like' (see the
    module docstring) or 'word'."""
    c = cell.strip()
    if not c:
        return "empty"
    if _NUM.fullmatch(_to_comma(c, delim).strip()):
        return "number"
    return "number-like" if _is_number_like(c) else "word"


class _LabelColumn:
    """The rows-mode rule "is the first column channel labels?" (module docstring), applied row by row.

    ``declared``: the header's first cell says so, and every first cell is a label.  Otherwise the first data
    row decides -- a word starts a label column, a number a data column, a number-like cell is an error --
    and later rows must agree.
    """

    def __init__(self, delim: str, declared: bool):
        self.delim, self.declared = delim, declared
        self.first: tuple[int, str] | None = None  # (line, cell) of the row that made it a label column
        self.decided = declared

    def is_label(self, cell: str, loc: _Loc, pos: int) -> bool:
        if self.declared:
            return True
        if self.decided and self.first is None:
            return False  # a data column: the number parser reports what is wrong with the cell
        kind = _cell_kind(cell, self.delim)
        if kind == "number-like":
            raise loc.err(f"{quote(cell.strip())} is not a number ({_why_number_like(cell)}); numbers are plain, "
                          f"like 1000, -1.5 or 2.5e-3; if the first column holds channel labels, start the file "
                          f"with a header row whose first cell is 'channel'", pos)
        if not self.decided:
            self.decided = True
            if kind == "word":
                self.first = (loc.line, cell.strip())
        if self.first is None:
            return False
        if kind == "number":
            raise loc.err(f"{quote(cell.strip())} is a number, but the first column holds channel labels "
                          f"(line {self.first[0]}: {quote(self.first[1])}); give every row a label (an empty "
                          f"first cell takes the default name) or none", pos)
        return True


def _split_cells(line: str, delim: str, loc: _Loc, pos: int) -> list[str]:
    try:
        return next(csv.reader([line], delimiter=delim))
    except csv.Error as e:
        raise loc.err(f"cannot split the row into cells: {e}", pos) from None


def _first_cell(seg: str, delim: str, loc: _Loc, pos: int) -> tuple[str, int, int]:
    """A row's first cell: (its text, unquoted; offset of its first non-blank character; offset just past
    the delimiter that ends it, or len(seg))."""
    lead = len(seg) - len(seg.lstrip())
    if seg.startswith('"', lead):
        return _split_cells(seg[lead:], delim, loc, pos + lead)[0], lead, _after_quoted_cell(seg, delim)
    cut = seg.find(delim)
    return (seg, lead, len(seg)) if cut < 0 else (seg[:cut], lead, cut + 1)


def _refuse_odd_data_cells(seg: str, delim: str, loc: _Loc, pos: int) -> None:
    """Quoted data cells, and ',' inside a tab-separated data cell, are errors naming the cell."""
    q = seg.find('"')
    if q >= 0:
        cell_at = seg.rfind(delim, 0, q) + 1
        cell = _split_cells(seg[cell_at:], delim, loc, pos + cell_at)[0]
        kind = _cell_kind(cell, delim)
        why = ("; write it without quotes" if kind == "number" else
               f"; {quote(cell)} is not a number either: {_why_number_like(cell)}" if kind == "number-like" else "")
        raise loc.err(f"quoted cell {quote(cell)}: data cells are unquoted numbers{why}", pos + q)
    if delim == "\t":
        c = seg.find(",")
        if c >= 0:
            raise loc.err("',' inside a tab-separated cell: '.' is the decimal point (a decimal comma needs "
                          "';' as the delimiter)", pos + c)


def _looks_like_header(cells: list[str], delim: str) -> bool:
    """Auto header rule: some cell after the first is a word (a word FIRST cell alone is a row label),
    or the row is a single word.  Number-like cells are not words: they never make a header."""
    kinds = [_cell_kind(c, delim) for c in cells]
    return "word" in kinds[1:] or kinds == ["word"]


def _check_unique(names: list[str], source: str | None) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise InputError(f"duplicate channel name {quote(n)}", source=source)
        seen.add(n)


def _sniff_delimiter(s: str) -> str | None:
    """The CSV delimiter: tab, else ';', else ',' if ``s`` holds one (the first line decides; a first line of
    one cell leaves it to the rest of the text), None if it holds none."""
    return next((d for d in "\t;," if d in s), None)


def _to_comma(s: str, delim: str) -> str:
    """Rewrite a row to ',' delimiters keeping every character position (same length)."""
    if delim == ",":
        return s
    if delim == ";":
        return s.replace(",", ".").replace(";", ",")
    return s.replace(",", "\x00").replace("\t", ",")  # a comma inside a tab-separated cell is invalid


def _after_quoted_cell(seg: str, delim: str) -> int:
    i = seg.index('"') + 1
    while True:
        j = seg.find('"', i)
        if j < 0:
            return len(seg)
        if seg.startswith('""', j):
            i = j + 2
            continue
        k = seg.find(delim, j + 1)
        return len(seg) if k < 0 else k + 1
