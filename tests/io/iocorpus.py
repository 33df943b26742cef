"""Hostile-input corpus for quantcore.io, generated programmatically (no binary blobs in git).

Each :class:`Case` is one input (bytes + file name + options) and its documented outcome: either an
InputError whose message matches ``error`` (a regex), or a successful load checked by ``check``.
Run ``python tests/io/iocorpus.py OUTDIR`` to write every case to disk (for trying the CLI by hand).

Binary files are built with tiny struct-level writers here (so headers can lie) and, for valid
bases, with numpy / the ``safetensors`` library / gguf-py's GGUFWriter.
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from quantcore.io import Limits

SMALL = Limits(max_elements=1000, max_bytes=1 << 16, max_header_bytes=4096, max_channels=50)


@dataclass
class Case:
    id: str
    data: bytes
    filename: str | None
    error: str | None = None                 # regex the InputError message must match
    check: Callable | None = None            # called with the LoadedInput when error is None
    tensor: str | None = None
    nonfinite: str = "error"
    limits: Limits = field(default_factory=Limits)
    channels_as: str = "rows"
    big: bool = False                        # large input: bounded by time, printed by the test


def _ok(expected):
    """Check that the loaded data equals ``expected`` (array, or list of arrays for ragged text)."""
    def check(li):
        if isinstance(expected, list):
            assert isinstance(li.data, list) and len(li.data) == len(expected)
            for a, b in zip(li.data, expected):
                np.testing.assert_array_equal(a, np.asarray(b, dtype=np.float64))
        else:
            np.testing.assert_array_equal(li.data, expected)
    return check


def _names(*names, then=None):
    def check(li):
        assert li.channel_names == list(names), li.channel_names
        if then:
            then(li)
    return check


# ------------------------------------------------------------------------------------- text

def text_cases() -> list[Case]:
    T = lambda i, s, err=None, check=None, **kw: Case(  # noqa: E731
        f"text-{i}", s.encode("utf-8") if isinstance(s, str) else s, kw.pop("filename", "in.txt"),
        err, check, **kw)
    c = [
        T("empty", "", r"no values found"),
        T("blank", "  \n\t\n  \r\n", r"no values found"),
        T("only-semicolons", ";;; ;\n;", r"no values found"),
        T("word", "hello", r"line 1, column 1: 'hello' is not a number"),
        T("token-mid", "1, 2, abc, 4", r"line 1, column 7: 'abc' is not a number"),
        T("token-line3", "1 2\n3 4\n5 x6", r"line 3, column 3: 'x6' is not a number"),
        T("hex", "1 0x1F", r"column 3: '0x1F' is not a number \(hexadecimal"),
        T("underscore", "1_000 2", r"'1_000' is not a number \(digit separators"),
        T("exp-missing", "1e 2", r"'1e' is not a number"),
        T("exp-sign-only", "1e+ 2", r"'1e\+' is not a number"),
        T("double-minus", "--1", r"'--1' is not a number"),
        T("plus-minus", "+-1", r"'\+-1' is not a number"),
        T("lone-dot", "1 . 2", r"column 3: '\.' is not a number"),
        T("lone-minus", "1 - 2", r"column 3: '-' is not a number"),
        T("two-dots", "1..2", r"'1\.\.2' is not a number"),
        T("three-parts", "1.2.3", r"'1\.2\.3' is not a number"),
        T("infinity-symbol", "1 \u221e", r"is not a number \(non-ASCII"),
        T("fullwidth-digits", "\uff11\uff12 3", r"column 1: '１２' is not a number \(non-ASCII"),
        T("arabic-digits", "\u0661\u0662", r"is not a number \(non-ASCII"),
        T("nul-byte", "1\x002", r"line 1, column 2: control character U\+0000 \(NUL\) at byte offset 1"),
        T("nul-in-label", "a\x00b: 1 2", r"line 1, column 2: control character U\+0000 \(NUL\)"),
        T("esc-in-label", "ok: 1\n\x1b[2J: 3", r"line 2, column 1: control character U\+001B \(ESC\) at byte offset 6"),
        T("c1-in-value", "1 2\u0085 3", r"line 1, column 4: control character U\+0085 at byte offset 3"),
        T("percent", "50%", r"'50%' is not a number"),
        T("paren", "(1)", r"'\(1\)' is not a number"),
        T("quoted", '"1", "2"', r"'\"1\"' is not a number"),
        T("second-colon", "a: 1 b: 2", r"'b:' is not a number \(a channel label"),
        T("empty-label", ": 1 2", r"line 1, column 1: empty channel label"),
        T("label-no-values", "w:   ", r"channel 'w' has no values"),
        T("dup-label", "a: 1\nb: 2\na: 3", r"line 3, column 1: duplicate channel label 'a' \(first used on line 1\)"),
        T("label-vs-default", "ch1: 1\n2 3", r"collides with the default name"),
        T("long-label", "x" * 300 + ": 1", r"label is 300 characters, over the cap of 256"),
        T("double-comma", "1,,2", r"column 3: empty value: the list has two ','"),
        T("comma-space-comma", "1, , 2", r"column 4: empty value"),
        T("leading-comma", ", 1, 2", r"column 1: empty value: the list starts with ','"),
        T("label-leading-comma", "a:, 1", r"column 3: empty value"),
        T("comma-decimal-space", "0,5 1,5", r"column 1: '0,5' is ambiguous.*write 0\.5"),
        T("comma-decimal-mixed", "1.5 2,25", r"column 5: '2,25' is ambiguous"),
        T("comma-decimal-commas", "0,5, 1", r"'0,5' is ambiguous"),
        T("comma-decimal-neg", "1 -0,5", r"'-0,5' is ambiguous"),
        T("invalid-utf8", b"1 2 \xff\xfe 3", r"byte offset 4: text is not valid UTF-8"),
        T("utf16", "1 2".encode("utf-16"), r"not valid UTF-8.*UTF-16"),
        T("nan", "1 2 nan", r"line 1, column 5: 1 non-finite value\(s\).*'nan'"),
        T("inf-multi", "inf 1\n-Infinity\n2 NaN", r"3 non-finite value\(s\).*line 1, column 1 \('inf'\); line 2, column 1 \('-Infinity'\); line 3, column 3 \('NaN'\)"),
        T("overflow", "1e309", r"1 non-finite.*too large.*'1e309'"),
        T("overflow-neg", "1 -1e400", r"'-1e400'"),
        T("many-nan", " ".join(["nan"] * 50), r"50 non-finite value\(s\).*\(first 5 shown\)"),
        T("nan-drop-empty", "a: nan inf", r"channel 'a' has no finite values left", nonfinite="drop"),
        T("long-token", "1" * 400, r"1 non-finite.*\('1111"),
        T("too-many-channels", "\n".join(["1"] * 51), r"more than 50 channels", limits=SMALL),
        T("too-many-values", " ".join(["1"] * 1001), r"more than 1,000 values in total", limits=SMALL),
        T("too-many-values-2ch", " ".join(["1"] * 600) + "\n" + " ".join(["2"] * 600),
          r"line 2: more than 1,000 values in total", limits=SMALL),
        T("text-over-bytes", "1 " * 40000, r"text file is 80,000 bytes, over the cap of 65,536", limits=SMALL),
        T("csv-ragged-columns", "a,b\n1,2\n3\n", r"line 3, column 1: row has 1 field but the header \(line 1\) has 2",
          filename="x.csv", channels_as="columns"),
        T("csv-empty-cell", "1,,2\n", r"line 1, column 3: empty value", filename="x.csv"),
        T("csv-space-sep", "4,5,6\n1 2,3", r"line 2, column 3: '2' follows the previous value without a ','",
          filename="x.csv", channels_as="rows"),
        T("csv-bad-cell", "a,b\n1,x\n", r"line 2, column 3: 'x' is not a number", filename="x.csv",
          channels_as="columns"),
        T("csv-header-only", "a,b,c\n", r"CSV has a header but no data rows", filename="x.csv"),
        T("csv-empty", "", r"CSV has no rows", filename="x.csv"),
        T("csv-nan", "1,2\nnan,4\n", r"line 2, column 1: 1 non-finite", filename="x.csv"),
        T("csv-dup-header", "a,a\n1,2\n", r"duplicate channel name 'a'", filename="x.csv", channels_as="columns"),
        T("csv-too-many-rows", "\n".join(["1,2"] * 51), r"more than 50 rows", filename="x.csv", limits=SMALL),
        T("csv-too-many-data-rows", "a\n" + "1\n" * 101, r"line 102, column 1: more than 100 data rows",
          filename="x.csv", channels_as="columns", limits=Limits(max_rows=100)),
    ]
    ok = [
        T("seed000-lines", "0.12, -0.33, 0.48, -0.05, 0.91\n1.20, 0.95, 1.44, 1.10, 0.88\n"
          "-1.70, -1.22, -0.94, -1.43, -1.11\n0.03, 0.08, -0.02, 0.11, -0.06",
          check=_names("ch0", "ch1", "ch2", "ch3", then=_ok(np.array(
              [[0.12, -0.33, 0.48, -0.05, 0.91], [1.20, 0.95, 1.44, 1.10, 0.88],
               [-1.70, -1.22, -0.94, -1.43, -1.11], [0.03, 0.08, -0.02, 0.11, -0.06]])))),
        T("seed000-semicolons", "0.12 -0.33 0.48; 1.20 0.95 1.44", check=_ok(np.array([[0.12, -0.33, 0.48], [1.2, 0.95, 1.44]]))),
        T("seed002-one-line", "-1.25, -0.92, -0.51, -0.10, 0, 0.14, 0.37, 0.79, 1.12, 1.46",
          check=_ok(np.array([[-1.25, -0.92, -0.51, -0.10, 0, 0.14, 0.37, 0.79, 1.12, 1.46]]))),
        T("seed003-rows", "A: 0.05 -0.08 0.12 -0.15\nB: 2.21 -3.10 1.77 -2.66",
          check=_names("A", "B", then=_ok(np.array([[0.05, -0.08, 0.12, -0.15], [2.21, -3.10, 1.77, -2.66]])))),
        T("ragged", "1 2 3\n4\n\n5 6", check=_ok([[1, 2, 3], [4], [5, 6]])),
        T("unicode-minus", "\u22121.5, 2e\u22123", check=_ok(np.array([[-1.5, 2e-3]]))),
        T("nbsp-thin-space", "1\u00a02\u20093", check=_ok(np.array([[1.0, 2.0, 3.0]]))),
        T("tabs-crlf", "1\t2\r\n3\t4\r\n", check=_ok(np.array([[1.0, 2.0], [3.0, 4.0]]))),
        T("lone-cr", "1 2\r3 4", check=_ok(np.array([[1.0, 2.0], [3.0, 4.0]]))),
        T("bom", b"\xef\xbb\xbf1 2", check=_ok(np.array([[1.0, 2.0]]))),
        T("comma-no-space-is-separator", "0,5", check=_ok(np.array([[0.0, 5.0]]))),
        T("comma-list", "1,2,3", check=_ok(np.array([[1.0, 2.0, 3.0]]))),
        T("comma-per-channel", "0,5; 1,5", check=_ok(np.array([[0.0, 5.0], [1.0, 5.0]]))),
        T("trailing-comma", "1, 2, 3,", check=_ok(np.array([[1.0, 2.0, 3.0]]))),
        T("sci", "1e5 -2.5E-3 +.5 5. 1e+02", check=_ok(np.array([[1e5, -2.5e-3, 0.5, 5.0, 100.0]]))),
        T("big-1e38", "1e38 -1e38 3.4028235e38 1e308", check=_ok(np.array([[1e38, -1e38, 3.4028235e38, 1e308]]))),
        T("denormals", "5e-324 1e-310 -2.2250738585072014e-308",
          check=_ok(np.array([[5e-324, 1e-310, -2.2250738585072014e-308]]))),
        T("neg-zero", "-0 0", check=lambda li: np.testing.assert_array_equal(np.signbit(li.data), [[True, False]])),
        T("nan-drop", "a: 1 nan 2\nb: inf 3", check=_names("a", "b", then=_ok([[1, 2], [3]])), nonfinite="drop"),
        T("html-label", "<script>alert(1)</script>: 1 2\n<img src=x onerror=alert(1)>: 3 4",
          check=_names("<script>alert(1)</script>", "<img src=x onerror=alert(1)>")),
        T("rtl-label", "\u202eevil\u202c: 1", check=_names("\u202eevil\u202c")),
        T("label-with-spaces", "  my channel  :1;other:2", check=_names("my channel", "other")),
        T("csv-columns-header", "a,b\n1,2\n3,4\n", check=_names("a", "b", then=_ok(np.array([[1.0, 3.0], [2.0, 4.0]]))),
          filename="x.csv", channels_as="columns"),
        T("csv-rows-names", "w0,1,2\nw1,3,4\n", check=_names("w0", "w1", then=_ok(np.array([[1.0, 2.0], [3.0, 4.0]]))),
          filename="x.csv"),
        T("csv-quoted-name", '"a,b",1,2\n"<b>",3,4\n', check=_names("a,b", "<b>"), filename="x.csv"),
        T("csv-semicolon-decimal-comma", "0,5;1,25\n2;3\n", check=_ok(np.array([[0.5, 1.25], [2.0, 3.0]])), filename="x.csv"),
        T("csv-tab", "1\t2\n3\t4\n", check=_ok(np.array([[1.0, 2.0], [3.0, 4.0]])), filename="x.tsv"),
        T("csv-html-header", "<script>x</script>,b\n1,2\n", check=_names("<script>x</script>", "b"),
          filename="x.csv", channels_as="columns"),
    ]
    # big inputs: 10**7 tokens must parse fast and bounded (time printed by the test)
    n = 10**7
    big_line = ("0.5 " * (n - 1) + "1.5").encode()
    big_bad = ("0.5 " * (n - 1) + "x").encode()
    big = [
        Case("text-1e7-tokens", big_line, "big.txt",
             check=lambda li: (li.data.shape == (1, 10**7)) or (_ for _ in ()).throw(AssertionError(li.data.shape)),
             big=True),
        Case("text-1e7-tokens-bad-last", big_bad, "big.txt", error=r"line 1, column 39999997: 'x' is not a number",
             big=True),
        Case("text-1e7-tokens-over-cap", big_line, "big.txt", error=r"over the cap \(Limits.max_elements\)",
             limits=Limits(max_elements=10**6), big=True),
        Case("text-1e6-lines", b"1\n" * 10**6, "lines.txt", error=r"more than 100,000 channels", big=True),
        Case("text-1e7-blank-lines", b"\n" * 10**7 + b"7", "blank.txt", check=_ok(np.array([[7.0]])), big=True),
    ]
    return c + ok + big


# ------------------------------------------------------------------------------------- CSV shapes

def csv_cases() -> list[Case]:
    """CSV inputs that used to load silently wrong (issue 12, item 9): a number-like first cell taken as a
    channel label, control characters, rows whose field count differs from the header's."""
    C = lambda i, s, err=None, check=None, **kw: Case(  # noqa: E731
        f"csv-{i}", s.encode("utf-8") if isinstance(s, str) else s, kw.pop("filename", "x.csv"), err, check, **kw)
    return [
        # a number-like first cell is never silently a label
        C("quoted-thousands-first-cell", 'a,b,c\n"1,000",2,3\n4,5,6\n',
          r"line 2, column 1: '1,000' is not a number.*',' as a digit-group separator.*header row whose first "
          r"cell is 'channel'"),
        C("quoted-thousands-only-row", '"1,000",2,3\n', r"line 1, column 1: '1,000' is not a number"),
        C("quoted-decimal-comma-first-cell", '"0,5",2,3\n', r"line 1, column 1: '0,5' is not a number.*decimal comma"),
        C("quoted-thousands-value", 'a,b,c\n1,"2,000",3\n', r"line 2, column 3: quoted cell '2,000': data cells "
          r"are unquoted numbers.*digit-group separator"),
        C("quoted-number-value", '1,"2",3\n', r"line 1, column 3: quoted cell '2': data cells are unquoted numbers"),
        C("unquoted-thousands-under-header", "a,b,c\n1,000,2,3\n", r"line 2, column 1: row has 4 fields but the "
          r"header \(line 1\) has 3"),
        C("thin-space-first-cell", "a,b,c\n1\u20092,2,3\n4,5,6\n",
          r"line 2, column 1: '1\\u20092' is not a number.*U\+2009 THIN SPACE"),
        C("nbsp-first-cell", "1\u00a0000;2;3\n", r"line 1, column 1: '1\\xa0000' is not a number.*U\+00A0"),
        C("thin-space-value", "1,2\u20093,4\n", r"line 1, column 5: '3' follows the previous value without a ',' "
          r"\(separated by U\+2009 THIN SPACE"),
        C("fullwidth-first-cell", "\uff11,2,3\n", r"line 1, column 1: '１' is not a number.*non-ASCII digit"),
        C("tab-decimal-comma-first-row", "1,5\t2,5\t3\n4\t5\t6\n", r"line 1, column 1: '1,5' is not a number "
          r"\(a decimal comma", filename="x.tsv"),
        C("tab-decimal-comma-value", "w0\t1\t2,5\n", r"line 1, column 7: ',' inside a tab-separated cell",
          filename="x.tsv"),
        # control characters anywhere: refused with line, column and byte offset
        C("nul-first-cell", "a,b,c\n1\x00,2,3\n4,5,6\n",
          r"line 2, column 2: control character U\+0000 \(NUL\) at byte offset 7"),
        C("nul-header", "a\x00,b\n1,2\n", r"line 1, column 2: control character U\+0000 \(NUL\) at byte offset 1"),
        C("esc-label", "w0,1,2\nw\x1b[31m,3,4\n", r"line 2, column 2: control character U\+001B \(ESC\) at byte "
          r"offset 8"),
        C("c1-after-multibyte", "\u00e9\u009b,1\n", r"line 1, column 2: control character U\+009B at byte offset 2"),
        C("del-in-value", "1,2\x7f,3\n", r"line 1, column 4: control character U\+007F \(DEL\)"),
        C("utf16-csv", "a,b\n1,2\n".encode("utf-16-le"), r"line 1, column 2: control character U\+0000 \(NUL\).*"
          r"UTF-16"),
        # ragged rows under a header, in both layouts
        C("ragged-short-under-header", "a,b,c\n1,2\n4,5,6\n", r"line 2, column 1: row has 2 fields but the header "
          r"\(line 1\) has 3"),
        C("ragged-long-under-header", "a,b,c\n1,2,3\n4,5,6,7\n", r"line 3, column 1: row has 4 fields but the "
          r"header \(line 1\) has 3"),
        C("ragged-labels-under-header", ",x0,x1\nw0,1,2\nw1,3\n", r"line 3, column 1: row has 2 fields but the "
          r"header \(line 1\) has 3"),
        C("ragged-columns-no-header", "1,2\n3\n", r"line 2, column 1: row has 1 field but line 1 \(the first row\) "
          r"has 2", channels_as="columns"),
        # a first column is labels or numbers, never both
        C("label-then-number", "w0,1,2\n5,3,4\n", r"line 2, column 1: '5' is a number, but the first column holds "
          r"channel labels \(line 1: 'w0'\)"),
        C("number-then-label", "1,2,3\nw1,4,5\n", r"line 2, column 1: 'w1' is not a number"),
        # accepted: the header declares the label column, or no first cell is number-like
        C("header-declares-labels", "channel,x0,x1\n0,1,2\n1,3,4\n",
          check=_names("0", "1", then=_ok(np.array([[1.0, 2.0], [3.0, 4.0]])))),
        C("header-declares-number-like-label", 'name,x\n"1,000",2\n', check=_names("1,000", then=_ok(np.array([[2.0]])))),
        C("pandas-index-header", ",x0,x1\nw0,1,2\nw1,3,4\n",
          check=_names("w0", "w1", then=_ok(np.array([[1.0, 2.0], [3.0, 4.0]])))),
        C("header-words-auto-labels", "id,a,b\nw0,1,2\nw1,3,4\n", check=_names("w0", "w1")),
        C("header-no-labels", "a,b,c\n1,2,3\n4,5,6\n",
          check=_names("ch0", "ch1", then=_ok(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])))),
        C("labels-that-are-words-with-digits", "layer.0,1,2\n2024-01,3,4\nv1.2.3a,5,6\n",
          check=_names("layer.0", "2024-01", "v1.2.3a")),
        C("ragged-without-header-ok", "w0,1,2\nw1,3\n", check=_names("w0", "w1", then=_ok([[1, 2], [3]]))),
    ]


# ------------------------------------------------------------------------------------- npy / npz

def npy_bytes(arr: np.ndarray) -> bytes:
    b = io.BytesIO()
    np.save(b, arr, allow_pickle=False)
    return b.getvalue()


def npy_raw(header: str | bytes, payload: bytes = b"", version: tuple[int, int] = (1, 0),
            hlen: int | None = None) -> bytes:
    h = header.encode("latin1") if isinstance(header, str) else header
    if hlen is None:
        hlen = len(h)
    pre = b"\x93NUMPY" + bytes(version)
    pre += struct.pack("<H", hlen) if version[0] == 1 else struct.pack("<I", hlen)
    return pre + h + payload


def _npy_hdr(descr="<f4", fortran=False, shape=(2,)) -> str:
    return repr({"descr": descr, "fortran_order": fortran, "shape": shape})


def npy_cases() -> list[Case]:
    N = lambda i, data, err=None, check=None, **kw: Case(f"npy-{i}", data, kw.pop("filename", "a.npy"), err, check, **kw)  # noqa: E731
    good = npy_bytes(np.arange(6, dtype=np.float32).reshape(2, 3))
    obj = io.BytesIO()
    np.save(obj, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    c = []
    for cut in (0, 1, 5, 6, 8, 9, 10, 20, 60, 127, 128, 129, len(good) - 1):
        err = (r"does not start like one" if cut < 6 else
               r"not a \.npy file|truncated")
        c.append(N(f"truncated-{cut}", good[:cut], err))
    c += [
        N("trailing-bytes", good + b"\x00" * 4, r"4 unexpected bytes after the array data"),
        N("pickled-object", obj.getvalue(), r"object arrays are refused: loading them needs pickle"),
        N("object-descr-lying", npy_raw(_npy_hdr("|O", shape=(1,)), b"\x80\x04N."), r"object arrays are refused"),
        N("structured", npy_bytes(np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")])), r"structured \(record\)"),
        N("unicode-str", npy_bytes(np.array(["ab", "cd"])), r"dtype '<U2' is not supported"),
        N("bool", npy_bytes(np.array([True, False])), r"dtype '\|b1' is not supported"),
        N("complex", npy_bytes(np.array([1j])), r"dtype '<c16' is not supported"),
        N("int64", npy_bytes(np.array([1, 2], dtype=np.int64)), r"dtype '<i8' is not supported"),
        N("datetime", npy_bytes(np.array(["2020-01-01"], dtype="M8[D]")), r"is not supported"),
        N("void", npy_raw(_npy_hdr("|V4", shape=(1,)), b"\0" * 4), r"'\|V4' is not supported"),
        N("version-9", npy_raw(_npy_hdr(), b"\0" * 8, version=(9, 0)), r"version 9\.0 is not supported"),
        N("v2-huge-hlen", npy_raw(_npy_hdr(), b"", version=(2, 0), hlen=2**32 - 1), r"header declares 4,294,967,295 bytes, over the cap"),
        N("hlen-past-end", npy_raw(_npy_hdr(), b"", hlen=5000), r"truncated inside the \.npy header"),
        N("header-code", npy_raw("__import__('os').system('echo pwned')", b""), r"not a Python literal"),
        N("header-list", npy_raw("[1, 2, 3]", b""), r"must be a dict with keys"),
        N("header-extra-key", npy_raw(repr({"descr": "<f4", "fortran_order": False, "shape": (1,), "x": 1}), b"\0" * 4), r"must be a dict"),
        N("header-nested", npy_raw("(" * 500 + ")" * 500, b""), r"not a Python literal"),
        N("fortran-str", npy_raw(_npy_hdr(fortran="yes"), b"\0" * 8), r"fortran_order must be True or False"),
        N("shape-negative", npy_raw(_npy_hdr(shape=(-1,)), b""), r"shape must be a tuple of non-negative ints"),
        N("shape-float", npy_raw(_npy_hdr(shape=(2.0,)), b"\0" * 8), r"shape must be a tuple"),
        N("shape-bool", npy_raw(_npy_hdr(shape=(True,)), b"\0" * 4), r"shape must be a tuple"),
        N("shape-40-dims", npy_raw(_npy_hdr(shape=(1,) * 40), b"\0" * 4), r"40 dimensions"),
        N("shape-huge", npy_raw(_npy_hdr(shape=(10**6, 10**6)), b"\0" * 16), r"10\^12|1,000,000,000,000 elements, over the cap"),
        N("shape-huge-overflow-int64", npy_raw(_npy_hdr(shape=(2**40, 2**40)), b""), r"elements, over the cap"),
        N("shape-lies-bigger", npy_raw(_npy_hdr(shape=(100,)), b"\0" * 16), r"truncated: shape \(100,\) of <f4 needs 400 data bytes but only 16"),
        N("shape-lies-smaller", npy_raw(_npy_hdr(shape=(2,)), b"\0" * 16), r"8 unexpected bytes"),
        N("descr-not-str", npy_raw(_npy_hdr(descr=3), b""), r"structured|not supported"),
        N("header-bad-utf8-v3", npy_raw(b"{'descr': '\xff'}", b"", version=(3, 0)), r"header is not valid UTF-8"),
        N("nan", npy_bytes(np.array([1, np.nan, 3], dtype=np.float32)), r"1 non-finite value\(s\).*index 1 = nan"),
        N("inf-2d", npy_bytes(np.array([[1, 2], [np.inf, -np.inf]])), r"2 non-finite.*index \(1, 0\) = inf; index \(1, 1\) = -inf"),
        N("nan-drop-refused", npy_bytes(np.array([1, np.nan])), r"'drop' is not available for binary tensors", nonfinite="drop"),
        N("over-cap-elements", npy_bytes(np.zeros(1001, np.float32)), r"1,001 elements, over the cap of 1,000", limits=SMALL),
        N("over-cap-file", npy_bytes(np.zeros(900, np.float64)), r"7,200 bytes, over the cap of 4,096", limits=Limits(max_bytes=4096)),
        N("wrong-name", good, r"no tensor named 'w'", tensor="w"),
        N("magic-wrong-ext", b"GGUF" + good, r"says \.npy but"),
    ]
    ok = [
        N("ok-f4", good, check=_ok(np.arange(6, dtype=np.float32).reshape(2, 3))),
        N("ok-f2", npy_bytes(np.array([0.5, -2], np.float16)), check=lambda li: li.data.dtype == np.float32 or 1 / 0),
        N("ok-big-endian", npy_bytes(np.array([1.5, -2], dtype=">f8")), check=_ok(np.array([1.5, -2.0]))),
        N("ok-fortran", npy_bytes(np.asfortranarray(np.arange(6.0).reshape(2, 3))), check=_ok(np.arange(6.0).reshape(2, 3))),
        N("ok-int8", npy_bytes(np.array([-128, 127], np.int8)), check=_ok(np.array([-128.0, 127.0], np.float32))),
        N("ok-int32-exact", npy_bytes(np.array([2**31 - 1, -2**31], np.int32)), check=_ok(np.array([2**31 - 1, -2**31], np.float64))),
        N("ok-uint8", npy_bytes(np.array([0, 255], np.uint8)), check=_ok(np.array([0, 255], np.float32))),
        N("ok-empty", npy_bytes(np.zeros((0, 3), np.float32)), check=lambda li: li.data.shape == (0, 3) or 1 / 0),
        N("ok-scalar", npy_bytes(np.float64(3.5)), check=_ok(np.float64(3.5))),
        N("ok-denormal", npy_bytes(np.array([1e-45, 1e38], np.float32)), check=_ok(np.array([1e-45, 1e38], np.float32))),
        N("ok-no-ext-sniffed", good, check=_ok(np.arange(6, dtype=np.float32).reshape(2, 3)), filename=None),
    ]
    return c + ok + npz_cases()


def npz_bytes(members: dict, compress=True) -> bytes:
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as zf:
        for k, v in members.items():
            zf.writestr(k, v if isinstance(v, bytes) else npy_bytes(v))
    return b.getvalue()


def npz_cases() -> list[Case]:
    Z = lambda i, data, err=None, check=None, **kw: Case(f"npz-{i}", data, kw.pop("filename", "a.npz"), err, check, **kw)  # noqa: E731
    good = npz_bytes({"a.npy": np.ones(3, np.float32), "b.npy": np.arange(4.0)})
    obj = io.BytesIO()
    np.save(obj, np.array([None], dtype=object), allow_pickle=True)
    # zip bomb: one member of 64 MiB of zeros, deflated to ~64 KB
    bomb = npz_bytes({"z.npy": npy_raw(_npy_hdr("<f8", shape=(8 * 2**20,)), b"\0" * (64 * 2**20))})
    # lying central directory size: declared uncompressed size smaller than the real stream
    liar = bytearray(npz_bytes({"a.npy": np.arange(100.0)}))
    cd = liar.rfind(b"PK\x01\x02")
    struct.pack_into("<I", liar, cd + 24, 200)  # uncompressed size in the central directory
    eocd = bytearray(good)
    e = eocd.rfind(b"PK\x05\x06")
    struct.pack_into("<H", eocd, e + 10, 60000)
    struct.pack_into("<H", eocd, e + 8, 60000)
    return [
        Z("ok-pick", good, check=_ok(np.arange(4.0)), tensor="b"),
        Z("ok-single", npz_bytes({"only.npy": np.ones(2)}), check=_ok(np.ones(2))),
        Z("ok-stored", npz_bytes({"x.npy": np.arange(3.0)}, compress=False), check=_ok(np.arange(3.0))),
        Z("need-name", good, r"has 2 tensors; choose one by name.*'a', 'b'"),
        Z("missing-name", good, r"no tensor named 'c'", tensor="c"),
        Z("html-member", npz_bytes({"<script>.npy": np.ones(1)}), check=lambda li: li.name == "<script>" or 1 / 0),
        Z("pickled-member", npz_bytes({"o.npy": obj.getvalue()}), r"object arrays are refused"),
        Z("garbage-member", npz_bytes({"g.npy": b"hello world"}), r"not a \.npy file"),
        Z("bomb", bomb, r"member 'z.npy': array of shape \(8388608,\) \(<f8\) is 67,108,864 bytes, over the cap of 1,048,576", limits=Limits(max_bytes=2**20)),
        Z("bomb-elements", bomb, r"8,388,608 elements, over the cap", limits=Limits(max_elements=2**20)),
        Z("liar-size", bytes(liar), r"truncated|unexpected bytes|Bad CRC|cannot read"),
        Z("truncated-half", good[: len(good) // 2], r"end-of-central-directory record not found"),
        Z("truncated-tail", good[:-5], r"end-of-central-directory|not a readable"),
        Z("crc-flip", _flip_payload(good), r"cannot read \.npz member|Bad CRC|not a \.npy|not a readable|Error -3", tensor="a"),
        Z("many-entries", bytes(eocd), r"declares 60,000 members|not a readable"),
        Z("empty-zip", npz_bytes({}), r"contains no tensors"),
        Z("not-zip", b"PK\x03\x04" + b"\0" * 40, r"not a readable \.npz|end-of-central-directory"),
        Z("ext-mismatch", b"hello", r"says \.npz but"),
    ]


def _flip_payload(z: bytes) -> bytes:
    b = bytearray(z)
    i = b.find(b"PK\x03\x04")
    name_len, extra_len = struct.unpack_from("<HH", b, i + 26)
    start = i + 30 + name_len + extra_len
    for k in range(start + 2, start + 12):
        b[k] ^= 0x5A
    return bytes(b)


# ------------------------------------------------------------------------------------- safetensors

def st_raw(header: dict | bytes | str, data: bytes = b"", hlen: int | None = None) -> bytes:
    if isinstance(header, dict):
        h = json.dumps(header).encode()
    elif isinstance(header, str):
        h = header.encode()
    else:
        h = header
    return struct.pack("<Q", len(h) if hlen is None else hlen) + h + data


def st_cases() -> list[Case]:
    from safetensors.numpy import save  # test oracle only
    S = lambda i, data, err=None, check=None, **kw: Case(f"st-{i}", data, kw.pop("filename", "m.safetensors"), err, check, **kw)  # noqa: E731
    good = save({"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], np.int8)},
                metadata={"format": "pt"})
    E = lambda dt="F32", shape=(2,), offs=(0, 8): {"dtype": dt, "shape": list(shape), "data_offsets": list(offs)}  # noqa: E731
    c = []
    for cut in (0, 3, 7, 8, 9, 30, len(good) - 30, len(good) - 1):
        c.append(S(f"truncated-{cut}", good[:cut], r"does not start like one|truncated|not valid JSON|past the end"))
    c += [
        S("hlen-huge", struct.pack("<Q", 2**63) + b"{}", r"does not start like one|over the cap"),
        S("hlen-over-cap", st_raw({"a": E()}, b"\0" * 8), r"header declares \d+ bytes, over the cap of 16", limits=Limits(max_header_bytes=16)),
        S("hlen-past-end", st_raw({"a": E()}, b"\0" * 8, hlen=10**6), r"does not start like one|truncated"),
        S("not-json", st_raw("{not json}"), r"not valid JSON"),
        S("json-array", st_raw("[1, 2]"), r"says \.safetensors but"),
        S("json-string", st_raw('{"a": "x"}'), r"entry must have exactly dtype, shape, data_offsets"),
        S("deep-nesting", st_raw("{" + '"a":[' * 100000 + "]" * 100000 + "}"), r"not valid JSON"),
        S("dup-keys", st_raw('{"a": %s, "a": %s}' % (json.dumps(E()), json.dumps(E(offs=(8, 16)))), b"\0" * 16), r"duplicate key 'a'"),
        S("nan-constant", st_raw('{"a": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 8]}}', b"\0" * 8), r"NaN is not valid"),
        S("bad-utf8", st_raw(b'{"\xff": 1}'), r"header is not valid UTF-8"),
        S("unknown-dtype", st_raw({"a": E(dt="F128")}, b"\0" * 8), r"tensor 'a': unknown dtype 'F128'"),
        S("dtype-int", st_raw({"a": E(dt=3)}, b"\0" * 8), r"unknown dtype '3'"),
        S("shape-negative", st_raw({"a": E(shape=(-2,))}, b"\0" * 8), r"shape must be a list"),
        S("shape-float", st_raw({"a": E(shape=(2.0,))}, b"\0" * 8), r"shape must be a list"),
        S("shape-bool", st_raw({"a": E(shape=(True, True))}, b"\0" * 8), r"shape must be a list"),
        S("shape-str", st_raw({"a": {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}}, b"\0" * 8), r"shape must be a list"),
        S("shape-40-dims", st_raw({"a": E(shape=(1,) * 40, offs=(0, 4))}, b"\0" * 4), r"at most 32"),
        S("offsets-negative", st_raw({"a": E(offs=(-8, 0))}, b"\0" * 8), r"negative or reversed"),
        S("offsets-reversed", st_raw({"a": E(offs=(8, 0))}, b"\0" * 8), r"negative or reversed"),
        S("offsets-one", st_raw({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}, b"\0" * 8), r"must be \[begin, end\]"),
        S("offsets-float", st_raw({"a": E(offs=(0.0, 8.0))}, b"\0" * 8), r"must be \[begin, end\]"),
        S("offsets-past-end", st_raw({"a": E(offs=(0, 8))}, b"\0" * 4), r"point past the end of the data buffer \(4 bytes"),
        S("offsets-huge", st_raw({"a": E(offs=(0, 2**64))}, b"\0" * 8), r"past the end"),
        S("length-mismatch", st_raw({"a": E(shape=(3,), offs=(0, 8))}, b"\0" * 8), r"hold 8 bytes but shape \(3,\) of F32 needs 12"),
        S("overlap", st_raw({"a": E(offs=(0, 8)), "b": E(offs=(4, 12))}, b"\0" * 12), r"'a' \[0, 8\] and 'b' \[4, 12\] overlap"),
        S("overlap-identical", st_raw({"a": E(offs=(0, 8)), "b": E(offs=(0, 8))}, b"\0" * 8), r"overlap"),
        S("huge-shape-lying", st_raw({"a": E(shape=(10**6, 10**6), offs=(0, 8))}, b"\0" * 8), r"needs 4,000,000,000,000"),
        S("extra-field", st_raw({"a": {**E(), "x": 1}}, b"\0" * 8), r"exactly dtype, shape, data_offsets"),
        S("metadata-nonstring", st_raw({"__metadata__": {"a": 1}, "a": E()}, b"\0" * 8), r"__metadata__ must be an object of string"),
        S("bool-refused", st_raw({"a": E(dt="BOOL", offs=(0, 2))}, b"\1\0"), r"dtype BOOL cannot be loaded"),
        S("i64-refused", st_raw({"a": E(dt="I64", offs=(0, 16))}, b"\0" * 16), r"dtype I64 cannot be loaded"),
        S("over-cap-elements", save({"a": np.zeros(2000, np.float32)}), r"2,000 elements, over the cap of 1,000", limits=SMALL),
        S("over-cap-bytes", save({"a": np.zeros(600, np.float64)}), r"4,800 bytes, over the cap of 4,096", limits=Limits(max_bytes=4096)),
        S("nan", save({"a": np.array([0, np.nan], np.float32)}), r"tensor 'a' has 1 non-finite.*index 1 = nan"),
        S("nan-bf16", st_raw({"a": E(dt="BF16", offs=(0, 4))}, struct.pack("<HH", 0x3F80, 0x7FC0)), r"1 non-finite.*index 1 = nan"),
        S("need-name", good, r"has 2 tensors; choose one"),
        S("wrong-name", good, r"no tensor named 'x'", tensor="x"),
        S("empty-header", st_raw("{}"), r"contains no tensors"),
    ]
    ok = [
        S("ok-pick", good, check=_ok(np.arange(6, dtype=np.float32).reshape(2, 3)), tensor="w"),
        S("ok-i8", good, check=_ok(np.array([1.0, 2.0], np.float32)), tensor="b"),
        S("ok-bf16", st_raw({"a": E(dt="BF16", offs=(0, 4))}, struct.pack("<HH", 0x3F80, 0xC040)), check=_ok(np.array([1.0, -3.0], np.float32))),
        S("ok-html-name", save({"<img src=x onerror=alert(1)>": np.ones(2, np.float32)}), check=lambda li: li.name == "<img src=x onerror=alert(1)>" or 1 / 0),
        S("ok-holes-allowed", st_raw({"a": E(offs=(8, 16))}, b"\0" * 16), check=_ok(np.zeros(2, np.float32))),
        S("ok-padded-header", st_raw(json.dumps({"a": E()}) + "      ", b"\0" * 8), check=_ok(np.zeros(2, np.float32))),
        S("ok-sniffed", good, check=_ok(np.array([1.0, 2.0], np.float32)), tensor="b", filename=None),
    ]
    return c + ok


# ------------------------------------------------------------------------------------- gguf

def gg_str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def gguf_raw(kvs: list[bytes] = (), tensors: list[tuple] = (), data: bytes = b"", *, version=3,
             n_tensors=None, n_kv=None, alignment=32, magic=b"GGUF") -> bytes:
    """tensors: (name, ne tuple, ggml type id, offset)."""
    out = magic + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                              len(kvs) if n_kv is None else n_kv)
    out += b"".join(kvs)
    for name, ne, t, off in tensors:
        out += gg_str(name) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne) + struct.pack("<IQ", t, off)
    pad = (-len(out)) % alignment
    return out + b"\0" * pad + data


def kv_u32(k, v):
    return gg_str(k) + struct.pack("<II", 4, v)


def gguf_writer_bytes(tensors: dict, kv: dict | None = None) -> bytes:
    import gguf  # test oracle only
    with tempfile.TemporaryDirectory() as td:
        p = os.path.join(td, "m.gguf")
        w = gguf.GGUFWriter(p, "llama")
        for k, v in (kv or {}).items():
            w.add_string(k, v)
        for name, (arr, qtype) in tensors.items():
            if qtype is None:
                w.add_tensor(name, arr)
            else:
                w.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        with open(p, "rb") as f:
            return f.read()


def gguf_cases() -> list[Case]:
    import gguf
    from gguf.quants import dequantize, quantize
    G = lambda i, data, err=None, check=None, **kw: Case(f"gguf-{i}", data, kw.pop("filename", "m.gguf"), err, check, **kw)  # noqa: E731
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 64)).astype(np.float32)
    Q = gguf.GGMLQuantizationType
    good = gguf_writer_bytes({"w": (x, None), "q": (x, Q.Q4_0)}, {"general.name": "<script>alert(1)</script>"})
    f32 = x.tobytes()
    c = []
    for cut in (0, 3, 4, 7, 8, 16, 23, 24, 40, 100, 300, len(good) - 200, len(good) - 300):
        c.append(G(f"truncated-{cut}", good[:cut], r"does not start like one|truncated|past the end"))
    c += [
        G("bad-magic-ext", b"GGUX" + good[4:], r"says \.gguf but"),
        G("big-endian", b"FUGG" + good[4:], r"big-endian GGUF files are not supported"),
        G("big-endian-version", b"GGUF" + struct.pack(">I", 3) + good[8:], r"big-endian"),
        G("version-1", gguf_raw(version=1), r"GGUF version 1 is not supported"),
        G("version-99", gguf_raw(version=99), r"GGUF version 99 is not supported"),
        G("n-kv-huge", gguf_raw(n_kv=2**60), r"1,152,921,504,606,846,976 metadata entries|truncated"),
        G("n-tensors-huge", gguf_raw(n_tensors=2**63), r"tensor infos|truncated"),
        G("key-len-huge", gguf_raw([struct.pack("<Q", 2**62) + b"\0" * 64], n_kv=1), r"metadata key #0 of 4,611,686,018,427,387,904 bytes"),
        G("key-bad-utf8", gguf_raw([gg_str(b"\xff\xfe") + struct.pack("<II", 4, 1)]), r"metadata key #0 is not valid UTF-8"),
        G("value-type-unknown", gguf_raw([gg_str("k") + struct.pack("<I", 77)]), r"unknown metadata value type 77"),
        G("array-item-unknown", gguf_raw([gg_str("k") + struct.pack("<IIQ", 9, 55, 1)]), r"unknown array item type 55"),
        G("array-count-huge", gguf_raw([gg_str("k") + struct.pack("<IIQ", 9, 6, 2**60)]), r"1,152,921,504,606,846,976 items"),
        G("string-array-count-huge", gguf_raw([gg_str("k") + struct.pack("<IIQ", 9, 8, 2**40)]), r"items"),
        G("array-nesting", gguf_raw([gg_str("k") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 6 + struct.pack("<IQ", 4, 0)]), r"nested deeper than 4"),
        G("dup-key", gguf_raw([kv_u32("a", 1), kv_u32("a", 2)]), r"duplicate metadata key 'a'"),
        G("alignment-zero", gguf_raw([kv_u32("general.alignment", 0)]), r"general.alignment must be a power of two"),
        G("alignment-3", gguf_raw([kv_u32("general.alignment", 3)]), r"power of two"),
        G("alignment-string", gguf_raw([gg_str("general.alignment") + struct.pack("<I", 8) + gg_str("32")]), r"power of two"),
        G("n-dims-100", gguf_raw(tensors=[("t", (1,) * 100, 0, 0)]), r"has 100 dimensions \(max 8\)"),
        G("row-not-block-multiple", gguf_raw(tensors=[("t", (33,), 2, 0)], data=b"\0" * 64), r"ne\[0\]=33 is not a multiple of the Q4_0 block size 32"),
        # found by test_io_fuzz: a 0-dimensional Q8_0 tensor (one element, zero bytes) reached numpy's reshape
        G("scalar-block-type", gguf_raw(tensors=[("t", (), 8, 0)]), r"row length 1 \(0 dimensions: one element\) is not a multiple of the Q8_0 block size 32"),
        G("misaligned", gguf_raw(tensors=[("t", (2,), 0, 4)], data=b"\0" * 16), r"data offset 4 is not a multiple of the alignment 32"),
        G("past-eof", gguf_raw(tensors=[("t", (64,), 0, 0)], data=b"\0" * 16), r"lies past the end of the file"),
        G("huge-dims", gguf_raw(tensors=[("t", (2**31, 2**31), 0, 0)], data=b"\0" * 16), r"past the end"),
        G("dims-overflow-u64", gguf_raw(tensors=[("t", (2**63, 2**63, 2**63), 0, 0)], data=b"\0" * 16), r"past the end"),
        G("overlap", gguf_raw(tensors=[("a", (8,), 0, 0), ("b", (8,), 0, 0)], data=b"\0" * 64), r"'a' and 'b' overlap"),
        G("dup-tensor", gguf_raw(tensors=[("a", (8,), 0, 0), ("a", (8,), 0, 32)], data=b"\0" * 64), r"duplicate tensor name 'a'"),
        G("unknown-type-load", gguf_raw(tensors=[("t", (8,), 99, 0)], data=b"\0" * 32), r"GGML type type99 cannot be loaded"),
        G("iq2xxs-load", gguf_raw(tensors=[("t", (256,), 16, 0)], data=b"\0" * 66), r"GGML type IQ2_XXS cannot be loaded"),
        G("i64-load", gguf_raw(tensors=[("t", (2,), 27, 0)], data=b"\0" * 16), r"GGML type I64 cannot be loaded"),
        G("header-over-cap", good, r"larger than the cap of 64 bytes", limits=Limits(max_header_bytes=64)),
        G("over-cap-elements", gguf_raw(tensors=[("t", (2000,), 0, 0)], data=b"\0" * 8000), r"2,000 elements, over the cap of 1,000", limits=SMALL),
        G("q8-over-cap-output", gguf_raw(tensors=[("t", (32 * 64,), 8, 0)], data=b"\0" * (34 * 64)), r"decoded tensor of shape \(2048,\) is 8,192 bytes, over the cap of 4,096",
          limits=Limits(max_bytes=4096)),
        G("nan-f32", gguf_raw(tensors=[("t", (2,), 0, 0)], data=struct.pack("<ff", 1.0, float("nan"))), r"tensor 't' has 1 non-finite"),
        G("nan-q8-scale", gguf_raw(tensors=[("t", (32,), 8, 0)], data=struct.pack("<e", float("inf")) + b"\1" * 32), r"32 non-finite"),
        G("need-name", good, r"has 2 tensors; choose one.*'w', 'q'"),
        G("wrong-name", good, r"no tensor named 'nope'", tensor="nope"),
        G("no-tensors", gguf_raw(), r"contains no tensors"),
    ]
    ok = [
        G("ok-f32", good, check=_ok(x), tensor="w"),
        G("ok-q4_0", good, check=_ok(dequantize(quantize(x, Q.Q4_0), Q.Q4_0)), tensor="q"),
        G("ok-html-tensor-name", gguf_raw(tensors=[("<svg onload=alert(1)>", (2,), 0, 0)], data=f32[:8]),
          check=lambda li: li.name == "<svg onload=alert(1)>" or 1 / 0),
        G("ok-scalar-0dims", gguf_raw(tensors=[("s", (), 0, 0)], data=struct.pack("<f", 2.5)), check=_ok(np.float32(2.5))),
        G("ok-alignment-64", gguf_raw([kv_u32("general.alignment", 64)], tensors=[("t", (2,), 0, 0)], data=struct.pack("<ff", 1, 2), alignment=64),
          check=_ok(np.array([1, 2], np.float32))),
        G("ok-denormal-1e38", gguf_raw(tensors=[("t", (3,), 0, 0)], data=struct.pack("<fff", 1e-45, 1e38, -3.4e38)),
          check=_ok(np.array([1e-45, 1e38, -3.4e38], np.float32))),
        G("ok-sniffed", good, check=_ok(x), tensor="w", filename=None),
        G("ok-v2", gguf_raw(tensors=[("t", (2,), 0, 0)], data=struct.pack("<ff", 1, 2), version=2), check=_ok(np.array([1, 2], np.float32))),
    ]
    return c + ok


def all_cases() -> list[Case]:
    cases = text_cases() + csv_cases() + npy_cases() + st_cases() + gguf_cases()
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    return cases


def write_corpus(outdir: str, include_big: bool = False) -> list[tuple[Case, str]]:
    """Write every case to ``outdir`` (file names keep the case's extension); returns (case, path)."""
    os.makedirs(outdir, exist_ok=True)
    out = []
    for c in all_cases():
        if c.big and not include_big:
            continue
        ext = os.path.splitext(c.filename)[1] if c.filename else ""
        p = os.path.join(outdir, c.id + ext)
        with open(p, "wb") as f:
            f.write(c.data)
        out.append((c, p))
    return out


if __name__ == "__main__":
    res = write_corpus(sys.argv[1] if len(sys.argv) > 1 else "io-corpus")
    print(f"wrote {len(res)} files")
