"""app.pdf_report(calc) natively (Panel imported, no browser, no server): the settings the app holds, in words.

These failed on the old report (a parameter dump, 9 pages for 4096 channels, numbers in wrapping cells).
"""
from __future__ import annotations

import io

import numpy as np
import pytest

from quantcalc_ui.pdf import format_cell

from uimodels import flat, pdf_pages, row_after

app = pytest.importorskip("app", reason="app.py needs the app extra (panel, bokeh) to import")


def settled(**params):
    """A calculator with ``params`` applied (no Bokeh document: it computes at once, frontier included)."""
    calc = app.QuantCalcSettings()
    calc.param.update(**params)
    return calc


def test_example_s1_report_in_words():
    calc = settled(example="s1")
    text = "\n".join(pdf_pages(app.pdf_report(calc)))
    f = flat(text)
    assert "Quantization report: example s1" in f
    assert "Data built-in example s1 (seed 001)" in f
    assert "Range custom: min -1.2, -0.8, -1.5, -0.45; max 1, 0.9, 1.7, 0.6" in f
    assert "Mapping affine (asymmetric), integer zero-point" in f
    for raw in ("syn_rows", "syn_", "range_method=", "example=s1", "Percentile", "Symmetric scale"):
        assert raw not in f, raw
    assert row_after(text, "filter_0", "Per-channel table")[4] == "0.00862745"      # seed 001
    assert row_after(text, "filter_0", "Per-value table")[3] == "96"


def test_synthetic_4096_channels_fit_four_pages_with_intact_numbers():
    calc = settled(source="synthetic", syn_rows=4096, syn_cols=256, syn_outliers=2)
    data = app.pdf_report(calc)
    pages = pdf_pages(data)
    assert len(pages) <= 4, len(pages)        # the old report: 9 pages
    text = "\n".join(pages)
    for row in calc.comparison.summary_rows():
        got = row_after(text, row["label"], "Scheme comparison")
        assert got[:3] == [format_cell(row[k], "error") for k in ("mae", "rmse", "max_abs")], got
        assert format_cell(row["total_bytes"], "bytes") in got
    f = flat(text)
    assert "Data synthetic normal 4096×256, seed 0, channel-scale spread 1, 2 outlier channels" in f
    assert "First 64 of 4,096 channels, sorted by RMSE descending" in f


def test_upload_names_file_and_dtype_and_no_synthetic_fields():
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(0).standard_normal((8, 64)).astype(np.float16))
    calc = settled()
    calc.set_upload(buf.getvalue(), "weights.npy")
    f = flat("\n".join(pdf_pages(app.pdf_report(calc))))
    assert "Data uploaded file weights.npy, tensor weights, float16 8×64" in f
    for absent in ("synthetic", "seed 0", "example", "64×256"):
        assert absent not in f.split("Settings")[0].split("Data", 1)[1], absent


def test_manual_mode_report():
    calc = settled(source="manual", bits=8, manual_text="filter_0, 0.00862745, 11, 0.73\n")
    text = "\n".join(pdf_pages(app.pdf_report(calc)))
    assert row_after(text, "filter_0", "Manual mode")[4] == "96"                   # seed 001
    assert "Parameters scale and zero-point given per channel (manual mode)" in flat(text)
