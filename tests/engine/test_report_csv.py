"""The CSV exports (issue 12, item 10): one function per file in quantcore.report, the same column names in all
of them (``scheme`` is the scheme, ``channel`` the channel index, ``channel_label`` its label, ``tensor`` the
tensor), and a per-sample file that says when it stops before the last sample."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest

import quantcore as qc
from quantcore import report

HOSTILE = ['a,"b"', "#hash", "x#y", "new\nline", "=SUM(A1)", "\u202eevil"]


def rows_of(text: str) -> list[dict]:
    """What a csv.DictReader user does with our files: skip the optional leading '#' note line."""
    f = io.StringIO(text, newline="")
    return list(csv.DictReader(line for line in f if not line.startswith("#")))


@pytest.fixture(scope="module")
def comparison():
    x = np.random.default_rng(0).standard_normal((6, 40)).astype(np.float32)
    specs = report.standard_schemes(qc.QuantSpec(fmt=qc.IntFormat(4), mapping="symmetric"), (8,)) + [qc.preset("q4_0")]
    return x, report.compare(x, specs, channel_names=HOSTILE)


def test_summary_csv_has_one_row_per_scheme_with_exact_numbers(comparison):
    _, cmp = comparison
    rows = rows_of(report.summary_csv(cmp, "w<1>"))
    assert list(rows[0]) == ["tensor", "scheme", *report.SUMMARY_FIELDS[1:]]
    assert [r["scheme"] for r in rows] == [r.label for r in cmp.results]
    assert {r["tensor"] for r in rows} == {"w<1>"}
    for got, want in zip(rows, cmp.summary_rows()):
        assert float(got["rmse"]) == want["rmse"] and int(got["total_bytes"]) == want["total_bytes"]


def test_channels_csv_names_index_label_and_scheme(comparison):
    _, cmp = comparison
    res = cmp.results[1]
    rows = rows_of(report.channels_csv(res, HOSTILE, "w"))
    assert list(rows[0])[:4] == ["tensor", "scheme", "channel", "channel_label"]
    assert "label" not in rows[0] and "name" not in rows[0]
    assert [r["channel_label"] for r in rows] == HOSTILE                  # exact, whatever the characters
    assert [int(r["channel"]) for r in rows] == list(range(6))
    assert {r["scheme"] for r in rows} == {res.label}
    t = res.channel_table()
    assert [float(r["scale"]) for r in rows] == t["scale"].tolist()
    default = rows_of(report.channels_csv(res, None, "w"))              # no labels: the result's own names
    assert [r["channel_label"] for r in default] == res.channel_names


def test_samples_csv_says_when_it_is_truncated(comparison):
    x, cmp = comparison
    res = cmp.results[2]
    text = report.samples_csv(res, HOSTILE, limit=50, tensor_name="w")
    first = text.split("\n", 1)[0]
    assert first == f"# first 50 of {x.size} samples in channel order: this export stops at 50 rows"
    rows = rows_of(text)
    assert len(rows) == 50
    assert list(rows[0])[:5] == ["tensor", "scheme", "channel", "channel_label", "index"]
    assert [r["channel_label"] for r in rows[38:42]] == [HOSTILE[0]] * 2 + [HOSTILE[1]] * 2  # 40 per channel
    full = report.samples_csv(res, HOSTILE, limit=x.size)
    assert not full.startswith("#") and len(rows_of(full)) == x.size
    np.testing.assert_array_equal([float(r["x"]) for r in rows_of(full)], x.astype(np.float64).ravel())


def test_no_file_uses_label_for_two_things(comparison):
    _, cmp = comparison
    res = cmp.results[0]
    heads = [next(csv.reader(io.StringIO(t.lstrip("#").split("\n", 1)[1] if t.startswith("#") else t)))
             for t in (report.summary_csv(cmp, "w"), report.channels_csv(res, HOSTILE, "w"),
                       report.samples_csv(res, HOSTILE, limit=10, tensor_name="w"))]
    for h in heads:
        assert "label" not in h and "scheme" in h and h[0] == "tensor"
    assert "channel_label" in heads[1] and "channel_label" in heads[2]


def test_manual_csv_names_the_channel_label():
    rows = report.manual(["f0", "f1"], [0.1, 0.2], [0, 1], [0.5, -0.3], qc.IntFormat(8))
    got = rows_of(report.manual_csv(rows))
    assert [r["channel_label"] for r in got] == ["f0", "f1"] and "channel" not in got[0]


def test_to_csv_note_is_one_comment_line_and_hash_cells_are_quoted():
    text = report.to_csv({"channel_label": np.array(["#a", "b#c", "d"], dtype=object), "v": np.array([1.0, 2.0, 3.0])},
                         note="two\nlines")
    lines = text.split("\n")
    assert lines[0] == "# two lines" and lines[1] == "channel_label,v"
    assert lines[2].startswith('"#a",') and lines[3].startswith('"b#c",') and lines[4] == "d,3.0"
    assert report.to_csv([{"a": 1, "b": 2.5}]) == "a,b\n1,2.5\n"           # no note: a plain CSV as before


def test_pandas_reads_the_files_with_comment_hash():
    pd = pytest.importorskip("pandas", reason="pandas is not installed (optional: only this reader check)")
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    res = qc.analyze(x, qc.QuantSpec(granularity=qc.PerChannel(0)), channel_names=["#a", "b#c", "d"])
    df = pd.read_csv(io.StringIO(report.samples_csv(res, None, limit=5)), comment="#")
    assert len(df) == 5 and df["channel_label"].tolist() == ["#a"] * 4 + ["b#c"]
