"""The PDF read back with pypdf 7.1.1: the seeds' numbers, intact numbers, settings in words, page counts,
complete scheme names, hostile names as plain text, reproducible bytes, pictures for a human to look at."""
from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import quantcore as qc
from quantcalc_ui.pdf import CONTENT_W, CELL_PAD, _Doc, _layout_table, format_cell, pdf_text, render_pdf
from quantcalc_ui.report import Column, Table, report_model

from uimodels import NUMBER, flat, pdf_pages, row_after

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "ui"


def text_of(data: bytes) -> str:
    return "\n".join(pdf_pages(data))


# --- the seeds' numbers -----------------------------------------------------------------------------

def test_seed_001_filter_0(rendered):
    # seed 001's table: filter_0 min -1.2, max 1, sample 0.73, scale 0.00862745, zero point 11, quantized 96
    text = text_of(rendered["s1"])
    assert row_after(text, "filter_0", "Per-channel table")[:5] == ["0.73", "0.73", "-1.2", "1", "0.00862745"]
    assert row_after(text, "filter_0", "Per-channel table")[5] == "11"
    assert row_after(text, "filter_0", "Per-value table")[:4] == ["0", "0.73", "96", "96"]
    assert row_after(text, "filter_1", "Per-value table")[3] == "-40"     # seed 001, the tie


def test_seed_003_row_a_collapses_under_per_tensor(rendered):
    # seed 003: per-tensor MAE of Row A about 0.10, all 4 values collapse; per-channel about 0.005, none
    text = text_of(rendered["s3"])
    mae_pt, collapsed_pt, mae_pc, collapsed_pc = row_after(text, "Row A", "Per-channel error by scheme")
    assert float(mae_pt) == pytest.approx(0.10) and collapsed_pt == "4"
    assert float(mae_pc) == pytest.approx(0.005, abs=5e-4) and collapsed_pc == "0"
    assert row_after(text, "int4 narrow symmetric per-tensor", "Scheme comparison")[5] == "4"   # Collapsed to 0


# --- tables ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["s0", "s1", "s2", "s3", "big"])
def test_comparison_numbers_are_intact_and_in_their_row(key, rendered, example_models, big):
    """Every number of the comparison is one token on its scheme's line, in column order: none is wrapped."""
    model = big[0] if key == "big" else example_models[key][0]
    text = text_of(rendered[key])
    table = model.comparison_table()
    for row in table.rows:
        expected = [format_cell(v, c.kind) for v, c in zip(row[1:], table.columns[1:])]
        expected = [e for e in expected if e]            # an empty flag cell is no token
        got = row_after(text, row[0], "Scheme comparison")
        assert got == expected, (row[0], got, expected)
        assert all(NUMBER.match(t) for t in got if t != "yes"), got


def test_channel_table_numbers_are_intact(rendered, big):
    text = text_of(rendered["big"])
    table = big[0].channel_table
    for row in table.rows:
        expected = [format_cell(v, c.kind) for v, c in zip(row[1:], table.columns[1:])]
        assert row_after(text, row[0], "Per-channel table") == expected


def test_table_layout_fits_every_cell(big, example_models):
    """Column widths come from the content: every cell fits its column, the table fits the page."""
    doc = _Doc(big[0].title, "", None)
    for model in [big[0]] + [m for m, _ in example_models.values()]:
        for table in (model.comparison_table(), model.channel_table, model.channel_errors, model.values_table):
            if table is None:
                continue
            cells = [[pdf_text(format_cell(v, c.kind)) for v, c in zip(r, table.columns)] for r in table.rows]
            layout = _layout_table(doc, table, cells)
            for part in layout.parts:
                assert layout.widths[0] + sum(layout.widths[j] for j in part) <= CONTENT_W + 1e-6
            for i, r in enumerate(cells):
                doc.font(layout.size, "B" if i in table.highlight else "")
                for j in range(1, len(r)):
                    assert doc.width(r[j]) + 2 * CELL_PAD <= layout.widths[j] + 1e-6, (table.title, r[j])


def test_a_too_wide_table_is_split_evenly_and_repeats_its_labels(example_models):
    values = [1234567.891 * (k + 1) for k in range(24)]
    columns = (Column("Channel", "text"),) + tuple(Column(f"Column number {k}", "value") for k in range(24))
    wide = Table("Wide table", columns, (("first channel",) + tuple(values),))
    model = dataclasses.replace(example_models["s3"][0], channel_table=wide)
    text = text_of(render_pdf(model))
    n = int(re.search(r"Wide table \(part 1 of (\d+)\)", text).group(1))
    assert n >= 2
    parts = [row_after(text, "first channel", f"Wide table (part {k} of {n})") for k in range(1, n + 1)]
    assert sum(parts, []) == [format_cell(v, "value") for v in values]
    assert max(map(len, parts)) - min(map(len, parts)) <= 1, [len(p) for p in parts]   # no lone last column


# --- words, names, pages --------------------------------------------------------------------------

def test_settings_in_words_and_nothing_else(rendered, big):
    text = flat(text_of(rendered["big"]))
    for label, value in big[0].settings:
        assert flat(pdf_text(f"{label} {value}")) in text, label
    assert "Granularity compared per-tensor, per-channel, per-group 128" in text
    assert "Data synthetic normal 4096x256, seed 0" not in text      # x is drawn as the Latin-1 multiplication sign
    assert "Data synthetic normal 4096×256, seed 0, channel-scale spread 1, 4 outlier channels" in text
    for raw in ("syn_rows", "range_method", "syn_rows=", "pct", "Percentile", "custom", "stochastic"):
        assert raw not in text, raw


@pytest.mark.parametrize("key", ["s0", "s1", "s2", "s3", "big"])
def test_scheme_names_are_complete(key, rendered, example_models, big):
    model = big[0] if key == "big" else example_models[key][0]
    text = flat(text_of(rendered[key]))
    for s in model.schemes:
        assert text.count(s.label) >= 4, s.label   # comparison row, chart legends, error table heading


def test_page_counts(rendered):
    pages = {key: len(pdf_pages(data)) for key, data in rendered.items()}
    assert pages["big"] <= 4, pages               # the old report took 9 pages for 4096 channels
    assert all(pages[k] <= 3 for k in ("s0", "s1", "s2", "s3")), pages
    for key, data in rendered.items():
        last = pdf_pages(data)[-1]
        assert f"page {pages[key]} of {pages[key]}" in last


def test_reproducible_bytes(example_models):
    model = example_models["s3"][0]
    assert render_pdf(model) == render_pdf(model)


def test_charts_are_never_empty(example_models):
    model = dataclasses.replace(example_models["s3"][0], ranges=None, errors=None, histogram=None, frontier=())
    text = text_of(render_pdf(model))
    assert text.count("no data") == 4


# --- hostile names --------------------------------------------------------------------------------

HOSTILE = {
    "script": "<script>alert(1)</script>",
    "rtl": "weight\u202egnp.exe\u200f",
    "emoji": "layer🤖.weight",
    "cjk": "权重.q_proj",
    "alias": "{nb} pages",
    "pdf syntax": "a) Tj (b\\",
    "controls": "line\nbreak\ttab\x00nul",
}


def hostile_model():
    x = np.array([[0.5, -0.25, 1.0], [0.01, 0.02, -0.03]], dtype=np.float32)
    names = [HOSTILE["script"], "x" * 500]
    cmp = qc.compare(x, [qc.QuantSpec(fmt=qc.IntFormat(4), mapping="symmetric", granularity=g)
                         for g in (qc.PerTensor(), qc.PerChannel(0))], channel_names=names)
    tensor = " ".join(HOSTILE.values()) + " " + "model.layers." * 40
    return report_model(cmp, 1, title=f"Quantization report: {tensor}", tensor_name=tensor,
                        source_description=f"uploaded file {HOSTILE['script']}.safetensors, tensor {tensor}",
                        settings=[("Range", "custom: min −1.5 ≤ α; max β × 2")], channel_labels=names,
                        frontier_rows=[])


def test_hostile_names_are_plain_text():
    data = render_pdf(hostile_model())
    text = text_of(data)
    squeezed = "".join(text.split())
    assert "<script>alert(1)</script>" in text                       # printed, not interpreted
    assert "{nb}pages" in squeezed                                     # fpdf2's page-count alias is off
    assert "weightgnp.exe" in squeezed                                  # RTL override and mark dropped
    assert "layer?.weight" in text and "??.q_proj" in text             # emoji, CJK: replaced
    assert "a) Tj (b\\" in text                                         # PDF string syntax escaped
    assert "line break tabnul" in flat(text)          # newline, tab: a space; NUL: dropped
    assert "custom: min -1.5 <= alpha; max beta × 2" in flat(text)
    assert ("model.layers." * 40).rstrip(".") in squeezed              # the full name, below the cut title
    assert "x" * 150 not in squeezed and "xxx..." in squeezed           # a 500-char channel label: 3 lines, cut
    for active in (b"/JavaScript", b"/JS", b"/URI", b"/Launch", b"/AA", b"/Annots", b"/AcroForm"):
        assert active not in data


def test_pdf_text_transliterates():
    assert pdf_text("−1 ≤ x ≥ 2 – 3 … ±µ·×") == "-1 <= x >= 2 - 3 ... ±µ·×"
    assert pdf_text("α β Ω σ²") == "alpha beta Omega sigma²"
    assert pdf_text("x̂") == "x^"
    assert pdf_text("a\u200bb\u202ec\u2066d") == "abcd"
    assert pdf_text("中🤖") == "??"
    assert pdf_text("ﬁle") == "file"                # compatibility ligature decomposed
    pdf_text("".join(chr(c) for c in range(0x20, 0x3000)))   # never raises
    data = "".join(chr(c) for c in range(0x20, 0x800))
    pdf_text(data).encode("latin-1")


def test_format_cell():
    assert format_cell(0.008627450980392158, "value") == "0.00862745"
    assert format_cell(1048576, "bytes") == "1,048,576"
    assert format_cell(0.0051234567, "error") == "0.005123"
    assert format_cell(1.5e-05, "error") == "1.5e-5"
    assert format_cell(-0.0, "value") == "0"
    assert format_cell(float("nan"), "value") == "n/a"
    assert format_cell(float("inf"), "db") == "inf"
    assert format_cell(0.0052, "fraction") == "0.52"
    assert format_cell(27.84, "db") == "27.8"
    assert format_cell(True, "flag") == "yes" and format_cell(False, "flag") == ""


# --- light imports --------------------------------------------------------------------------------

def test_importing_the_package_loads_no_pdf_or_panel_library():
    code = ("import sys, quantcalc_ui, quantcalc_ui.report, quantcalc_ui.pdf, quantcalc_ui.settings_words; "
            "print(sorted(m for m in ('fpdf', 'panel', 'bokeh', 'param') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- pictures -------------------------------------------------------------------------------------

def test_render_pngs_for_a_look(rendered):
    """Writes tests/artifacts/ui/<key>-<page>.png (git-ignored) for a human to look at."""
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (Debian's poppler-utils) is not installed: no PNGs to look at")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for key, data in rendered.items():
        pdf = ARTIFACTS / f"{key}.pdf"
        pdf.write_bytes(data)
        for old in ARTIFACTS.glob(f"{key}-*.png"):
            old.unlink()
        subprocess.run(["pdftoppm", "-r", "90", "-png", str(pdf), str(ARTIFACTS / key)], check=True)
        pngs = sorted(ARTIFACTS.glob(f"{key}-*.png"))
        assert len(pngs) == len(pdf_pages(data))


def test_a_long_scheme_name_wraps_and_is_never_cut():
    x = qc.synthetic(4, 64, seed=3)
    name = "a deliberately long scheme name that cannot fit one line of the label column " * 2
    spec = qc.QuantSpec(fmt=qc.IntFormat(4), mapping="symmetric", granularity=qc.PerChannel(0), name=name.strip())
    cmp = qc.compare(x, [spec, qc.preset("q4_0")])
    text = text_of(render_pdf(report_model(cmp, 0, title="t", tensor_name="t", source_description="s",
                                           settings=[], frontier_rows=[])))
    comparison = flat(text.split("Scheme comparison", 1)[1].split("Highlighted:", 1)[0])
    assert name.strip() in comparison          # wrapped over three lines of the label column, read back whole
    assert "..." not in comparison
