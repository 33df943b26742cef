"""The whole-model report: the per-layer curves (quantcalc_ui.modelscan.layer_curves), the report model
(quantcalc_ui.scanreport) and its PDF read back with pypdf 7.1.1.

The checkpoint is written by the safetensors package (test oracle) and scanned by quantcore.scan; the expected
numbers are recomputed here from the tensors themselves with quantcore.analyze (each tensor's dequantization
error, summed in float64 by numpy), not from the scan's rows."""
from __future__ import annotations

import math

import numpy as np
import pytest

import quantcore as qc
from quantcore.io.checkpoint import open_checkpoint
from quantcore.plan import solve_plan
from quantcore.scan import scan
from quantcore.schemes import parse_scheme
from quantcalc_ui.modelscan import layer_curves
from quantcalc_ui.pdf import format_cell, render_scan_pdf
from quantcalc_ui.scanreport import scan_report

from uimodels import flat, pdf_pages, row_after

st = pytest.importorskip("safetensors.numpy", reason="the safetensors package writes the test checkpoint")

SCHEMES = ["q8_0", "int8-sym-channel", "q4_0", "int4-sym-g32"]
LAYERS = 4
EMBED, NORM, IDS = "model.embed_tokens.weight", "model.norm.weight", "token_ids"


def weights() -> dict[str, np.ndarray]:
    """Four layers of two weights (layer 3's stored in float16, so a float16 cast of them is exact), whose
    spread of row scales grows with the layer; an embedding (no layer index), a norm and token ids (skipped)."""
    rng = np.random.default_rng(5)
    out = {EMBED: rng.standard_normal((64, 64)).astype(np.float32)}
    for i in range(LAYERS):
        dtype = np.float16 if i == 3 else np.float32
        spread = rng.uniform(10.0 ** -(i + 1), 1.0, (64, 1))
        out[f"model.layers.{i}.self_attn.q_proj.weight"] = (rng.standard_normal((64, 64)) * spread).astype(dtype)
        out[f"model.layers.{i}.mlp.down_proj.weight"] = (rng.laplace(size=(96, 64)) * spread[:1]).astype(dtype)
    out[NORM] = np.ones(64, np.float32)
    out[IDS] = np.arange(7, dtype=np.int32)
    return out


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """(tensors, rows, scan plan) of the checkpoint under every scheme of SCHEMES + ["f16"]."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny-llm.safetensors"
    tensors = weights()
    st.save_file(tensors, str(path))
    rows, plan = scan(open_checkpoint(str(path)), [parse_scheme(s) for s in SCHEMES + ["f16"]])
    return tensors, rows, plan


def sums(x: np.ndarray, scheme: str) -> tuple[float, float]:
    """(sum of squared errors, sum of squared weights) of ``x`` under ``scheme``, from quantcore.analyze."""
    spec = parse_scheme(scheme).spec
    if spec is None:   # the f16 cast: x rounded to float16 and back
        err = x.astype(np.float16).astype(np.float64) - x.astype(np.float64)
    else:
        err = qc.analyze(x.astype(np.float32), spec).error.astype(np.float64)
    return float(np.sum(err ** 2)), float(np.sum(x.astype(np.float64) ** 2))


def layer_error(tensors, layer: int, scheme: str) -> float:
    parts = [sums(x, scheme) for name, x in tensors.items() if name.startswith(f"model.layers.{layer}.")]
    return math.sqrt(sum(p[0] for p in parts) / sum(p[1] for p in parts))


# --- the per-layer curves ---------------------------------------------------------------------------

def test_layer_curves_are_each_layers_error_over_its_tensors(scanned):
    tensors, rows, _ = scanned
    c = layer_curves(rows, SCHEMES)
    assert c.layers == list(range(LAYERS)) and c.schemes == SCHEMES and c.lines["scheme"] == SCHEMES
    assert not c.log_y    # q8_0 .. int4 g32: about a factor 20, drawn on a linear axis
    for s, xs, ys in zip(c.lines["scheme"], c.lines["xs"], c.lines["ys"]):
        assert xs == [float(i) for i in range(LAYERS)]
        assert ys == pytest.approx([layer_error(tensors, i, s) for i in range(LAYERS)], rel=1e-6), s
    # one hover point per layer x scheme, with the layer's tensor count; the embedding is not drawn, and said so
    assert len(c.points["layer"]) == LAYERS * len(SCHEMES) and set(c.points["tensors"]) == {2}
    at = c.points["layer"].index(2)
    assert c.points["shown"][at] == f"{c.points['rel_rmse'][at]:.4g}"
    assert c.note == "1 tensor without a layer index (embeddings, final norm, output) not drawn"
    assert c.y_range[0] == 0.0 and c.y_range[1] >= max(c.points["rel_rmse"])


def test_layer_curves_use_a_log_axis_for_a_large_spread_and_say_what_it_cannot_draw(scanned):
    tensors, rows, _ = scanned
    c = layer_curves(rows, ["f16", "q4_0"])
    assert c.log_y                                    # f16 ~1e-4 against q4_0 ~1e-1
    f16 = c.lines["ys"][0]
    assert math.isnan(f16[3])                         # layer 3 is stored in float16: a cast loses nothing (0)
    assert layer_error(tensors, 3, "f16") == 0.0
    assert f16[:3] == pytest.approx([layer_error(tensors, i, "f16") for i in range(3)], rel=1e-6)
    assert (3, "f16") not in set(zip(c.points["layer"], c.points["scheme"]))
    assert "1 value of 0 or not finite not drawn on the log scale" in c.note
    assert c.y_range[0] < min(c.points["rel_rmse"]) and c.y_range[1] > max(c.points["rel_rmse"])


def test_layer_curves_of_nothing_or_of_no_layers():
    assert layer_curves([], SCHEMES).layers == []
    c = layer_curves([], SCHEMES)
    assert c.lines == {"scheme": [], "xs": [], "ys": []} and c.note == ""


# --- the report model and its PDF -------------------------------------------------------------------

@pytest.fixture(scope="module")
def report(scanned):
    tensors, rows, plan = scanned
    rows = [r for r in rows if r.scheme in SCHEMES]
    mixed = solve_plan(rows, bits_per_weight=5.0, schemes=SCHEMES)
    model = scan_report("tiny-llm.safetensors", SCHEMES, rows, plan.skipped, [], mixed, budget=5.0)
    data = render_scan_pdf(model)
    return model, data, "\n".join(pdf_pages(data)), mixed


def test_pdf_names_the_checkpoint_and_what_was_scanned_and_skipped(report):
    model, data, text, _ = report
    assert data.startswith(b"%PDF")
    f = flat(text)
    assert "Whole-model report: tiny-llm.safetensors" in f
    n = sum(x.size for name, x in weights().items() if name not in (NORM, IDS))
    assert f"Scanned 9 tensors, {n:,} weights, under 4 schemes: q8_0, int8-sym-channel, q4_0, int4-sym-g32" in f
    assert "Skipped 2 tensors: 1-D (norm or bias; --include-1d scans it) (1); not a floating-point tensor" in f
    assert "page 1 of" in pdf_pages(data)[0]


def test_totals_per_scheme_equal_the_errors_quantcore_analyze_gives_each_tensor(report):
    _, _, text, _ = report
    tensors = {k: v for k, v in weights().items() if k not in (NORM, IDS)}
    for s in SCHEMES:
        parts = [sums(x, s) for x in tensors.values()]
        sse, ssx = sum(p[0] for p in parts), sum(p[1] for p in parts)
        nbytes = sum(qc.analyze(x.astype(np.float32), parse_scheme(s).spec).memory.total_bytes
                     for x in tensors.values())
        got = row_after(text, s, "Totals per scheme")
        assert got[0] == "9" and got[1] == format_cell(nbytes, "bytes"), (s, got)
        assert got[-2:] == [format_cell(math.sqrt(sse / ssx), "error"), format_cell(10 * math.log10(ssx / sse), "db")]


def test_most_damaged_tensor_comes_first(report):
    _, _, text, _ = report
    tensors = {k: v for k, v in weights().items() if k not in (NORM, IDS)}
    worst = max(tensors, key=lambda k: max(math.sqrt(sse / ssx) for sse, ssx in
                                           (sums(tensors[k], s) for s in SCHEMES)))
    section = text[text.index("Most damaged tensors"):]
    first = next(line for line in section.splitlines() if line.startswith("model."))
    assert first.startswith(worst + " ")
    assert format_cell(math.sqrt(np.divide(*sums(tensors[worst], "int4-sym-g32"))), "error") in first.split()


def test_error_by_role_and_by_layer_and_the_chart(report):
    model, _, text, _ = report
    tensors = weights()
    row = row_after(text, "2", "Relative RMSE by layer")
    assert row[0] == "2" and row[1:] == [format_cell(layer_error(tensors, 2, s), "error") for s in SCHEMES]
    assert row_after(text, "no layer index", "Relative RMSE by layer")[0] == "1"
    assert row_after(text, "embedding", "Relative RMSE by role")[0] == "1"
    f = flat(text)
    assert "Per-layer curves" in f and "layer index" in f and "1 tensor without a layer index" in f
    assert model.curves is not None and model.curves.layers == list(range(LAYERS))


def test_plan_section_against_uniform_schemes(report):
    _, _, text, mixed = report
    f = flat(text)
    assert f"The plan uses {mixed.total_bytes:,} bytes" in f and "Budget 5 bits/weight" in f
    assert row_after(text, "Mixed plan", "Mixed-precision plan against")[0] == format_cell(mixed.total_bytes, "bytes")
    for u in mixed.uniform:
        assert row_after(text, u.scheme, "Mixed-precision plan against")[0] == format_cell(u.bytes, "bytes")
    for tensor, scheme in mixed.choices:
        assert row_after(text, tensor, "The plan, tensor by tensor") == [scheme]
    assert "All 9 tensors, in checkpoint order." in f


def test_long_lists_are_cut_and_say_so(scanned):
    _, rows, plan = scanned
    rows = [r for r in rows if r.scheme in SCHEMES]
    mixed = solve_plan(rows, bits_per_weight=5.0, schemes=SCHEMES)
    model = scan_report("m.safetensors", SCHEMES, rows, plan.skipped, [], mixed, budget=5.0, max_worst=3,
                        max_choices=4)
    assert len(model.worst.rows) == 3 and len(model.plan_choices.rows) == 4
    f = flat("\n".join(pdf_pages(render_scan_pdf(model))))
    assert "The 3 most damaged of 9 scanned tensors (every row is in the CSV export)" in f
    assert "The first 4 of 9 tensors in checkpoint order; every choice is in the plan CSV and the JSON export." in f


def test_a_stopped_scan_without_a_plan_says_so(scanned):
    _, rows, plan = scanned
    first = rows[0].tensor
    part = [r for r in rows if r.tensor == first and r.scheme in SCHEMES]
    model = scan_report("m.safetensors", SCHEMES, part, plan.skipped, ["x.weight: non-finite value at 3"], None,
                        budget=1.0, plan_error="budget is below the smallest plan", complete=False, tensors_total=9)
    f = flat("\n".join(pdf_pages(render_scan_pdf(model))))
    assert "(the scan was stopped: 1 of 9 tensors measured)" in f
    assert "No plan within 1 bits/weight: budget is below the smallest plan" in f
    assert "Not measured: x.weight: non-finite value at 3" in f and "Failed 1 tensor" in f


def test_reproducible_bytes(report):
    model, data, _, _ = report
    assert render_scan_pdf(model) == data
