"""Pasted text, manual mode and CSV: the documented rules, with the seeds' own numbers.

Seed 000: "one channel per line or semicolon. Values use commas or spaces" (its 4-channel table).
Seed 001: manual mode lines "channel, scale, zero_point, sample" (its filter_0..filter_3 table).
"""

from __future__ import annotations

import numpy as np
import pytest

from quantcore.io import InputError, Limits, parse_manual, parse_text, read_csv


def test_seed000_table_both_layouts_agree():
    lines = ("0.12, -0.33, 0.48, -0.05, 0.91\n1.20, 0.95, 1.44, 1.10, 0.88\n"
             "-1.70, -1.22, -0.94, -1.43, -1.11\n0.03, 0.08, -0.02, 0.11, -0.06")
    a = parse_text(lines)
    b = parse_text(lines.replace(", ", " ").replace("\n", "; "))
    assert a.names == b.names == ("ch0", "ch1", "ch2", "ch3")
    for x, y in zip(a.rows, b.rows):
        np.testing.assert_array_equal(x, y)
    assert a.rows[2].min() == -1.70 and a.rows[1].max() == 1.44  # the seed's Local Min / Local Max


def test_seed001_manual_table():
    text = """channel, scale, zero_point, sample
filter_0, 0.00862745, 11, 0.73
filter_1, 0.00666667, -8, -0.21
filter_2, 0.01254902, -8, 1.11
filter_3, 0.00411765, -19, 0.18"""
    m = parse_manual(text)
    assert m.names == ("filter_0", "filter_1", "filter_2", "filter_3")
    np.testing.assert_array_equal(m.scale, [0.00862745, 0.00666667, 0.01254902, 0.00411765])
    np.testing.assert_array_equal(m.zero_point, [11, -8, -8, -19])
    assert m.zero_point.dtype == np.int64 and m.scale.dtype == np.float64
    np.testing.assert_array_equal(m.sample, [0.73, -0.21, 1.11, 0.18])
    ws = parse_manual("filter_0 0.00862745 11 0.73\n0.5 3 1.0")
    assert ws.names == ("filter_0", "ch1")


@pytest.mark.parametrize("text, where, what", [
    ("a, 0, 1, 2", (1, 4), "scale must be > 0"),
    ("a, 0.1, 1.5, 2", (1, 9), "zero_point must be an integer"),
    ("a, 0.1, 1, 2, 3", (1, 1), "expected 4 fields"),
    ("a, 0.1, 1, 2\nb, 0.1, 2, x", (2, 12), "sample 'x' is not a number"),
    ("a, nan, 1, 2", (1, 4), "scale 'nan' is not finite"),
    ("a, 1, 2147483648, 2", (1, 7), "outside the int32 range"),
    ("", None, "no manual-mode lines"),
])
def test_manual_errors_name_line_and_column(text, where, what):
    with pytest.raises(InputError, match=what) as ei:
        parse_manual(text)
    if where:
        assert (ei.value.line, ei.value.column) == where


def test_error_attributes_and_offsets():
    text = "1 2\r\n3 4\r5 bad"
    with pytest.raises(InputError) as ei:
        parse_text(text, source="paste")
    e = ei.value
    assert (e.line, e.column, e.source) == (3, 3, "paste")
    assert text[e.offset:e.offset + 3] == "bad"  # offset indexes the text as given
    assert str(e) == "paste, line 3, column 3: 'bad' is not a number"


def test_comma_rule():
    assert parse_text("1,2,3").rows[0].tolist() == [1, 2, 3]
    assert parse_text("0,5").rows[0].tolist() == [0, 5]           # comma is always a separator
    assert parse_text("0.5,1.5 2").rows[0].tolist() == [0.5, 1.5, 2]
    for amb in ("0,5 1,5", "1 2,5", "0,5, 1", "a: 3,25\t4"):
        with pytest.raises(InputError, match="ambiguous"):
            parse_text(amb)


def test_nonfinite_policies():
    with pytest.raises(InputError, match=r"2 non-finite") as ei:
        parse_text("1 nan\n2 -inf 3")
    assert (ei.value.line, ei.value.column) == (1, 3)
    r = parse_text("1 nan\n2 -inf 3", nonfinite="drop")
    assert [x.tolist() for x in r.rows] == [[1.0], [2.0, 3.0]]
    with pytest.raises(ValueError, match="nonfinite must be"):
        parse_text("1", nonfinite="keep")


def test_long_line_goes_through_the_fast_path_and_matches_python_float():
    rng = np.random.default_rng(5)
    x = rng.standard_normal(50_000) * 10.0 ** rng.integers(-300, 300, 50_000)
    text = " , ".join(repr(float(v)) for v in x)
    np.testing.assert_array_equal(parse_text(text).rows[0], x)
    with pytest.raises(InputError) as ei:
        parse_text(text + " , 1.2.3")
    assert ei.value.column == len(text) + 4


def test_limits_are_validated_and_reported():
    with pytest.raises(ValueError, match="max_elements must be a positive int"):
        Limits(max_elements=0)
    with pytest.raises(InputError, match=r"more than 3 values in total, over the cap"):
        parse_text("1 2\n3 4", limits=Limits(max_elements=3))


def test_csv_modes_and_header_rules():
    c = read_csv("w,x,y\n1,2,3\n4,5,6\n", channels_as="columns")
    assert c.names == ("w", "x", "y") and c.rows[0].tolist() == [1, 4]
    r = read_csv("w,x,y\n1,2,3\n4,5,6\n", channels_as="rows")
    assert r.names == ("ch0", "ch1") and r.rows[1].tolist() == [4, 5, 6]
    n = read_csv("1,2,3\n4,5,6\n", header=False, channels_as="columns")
    assert n.names == ("ch0", "ch1", "ch2")
    h = read_csv("1,2\n3,4\n", header=True, channels_as="columns")
    assert h.names == ("1", "2") and h.rows[0].tolist() == [3]
    lab = read_csv(b"a,1,2\nb,3\n")  # rows mode: label column, ragged rows allowed
    assert lab.names == ("a", "b") and lab.rows[1].tolist() == [3]
    eu = read_csv("x;y\n0,5;1,25\n", channels_as="columns")
    assert eu.rows[0].tolist() == [0.5] and eu.rows[1].tolist() == [1.25]
    with pytest.raises(ValueError, match="channels_as must be"):
        read_csv("1", channels_as="diag")


def test_csv_leading_tab_is_an_empty_cell_and_a_one_cell_first_line_does_not_choose_the_delimiter():
    # Found by test_io_fuzz: "1\n\t1" under a header read its second row as one field, the leading empty
    # tab-separated cell dropped as if it were blank space.
    for text in ("1\n\t1", "a\n\t1", "a\tb\n\t1\t2"):
        with pytest.raises(InputError, match=r"line 2, column 1: empty value: the list starts with tab"):
            read_csv(text, header=True)
    r = read_csv("1\n2\t3", header=False)   # the delimiter is the tab the second line shows
    assert [row.tolist() for row in r.rows] == [[1.0], [2.0, 3.0]]
    r = read_csv("x\ty\n1\t2\n  3\t4", header=None)   # leading spaces before a number are still blank
    assert [row.tolist() for row in r.rows] == [[1.0, 2.0], [3.0, 4.0]]
