"""The fused kernel's fast paths on tensor shapes the small-tensor suites never reach.

The property and parity suites use tensors of at most a few hundred elements per row, so a tile there is
many short rows. Benchmark-sized tensors take other paths of :mod:`quantcore.kernel` /
:mod:`quantcore.quantize`: rows of thousands of elements (per-row operands copied into tile buffers,
uint64-word row counts), rows longer than a tile (column slices of one row), a scale shared by every row
(scalar operands), and the float encoder's boundary flags taken from the main pass. Each test states the
invariant and checks it against an independent computation (numpy's own count, the untiled per-element
formulas, ``floatfmt.encode_detailed``, PyTorch 2.13 for the ``torch`` convention).
"""
from __future__ import annotations

import numpy as np
import pytest

from quantcore import IntFormat, PerChannel, PerGroup, PerTensor, Percentile, QuantSpec, analyze, preset
from quantcore import floatfmt as ff
from quantcore.analysis import prepare
from quantcore.kernel import COUNT_WORDS, _row_count
from quantcore.quantize import TILE_ELEMENTS, quantize_blocks

from .conftest import lognormal_channels
from .test_torch_parity import _ties, assert_parity, torch_reference

LONG = TILE_ELEMENTS + 3 * 1024 + 5  # a row longer than a tile: column slices, a ragged last slice


@pytest.mark.parametrize("shape", [(16, 4096), (3, COUNT_WORDS), (5, 2 * COUNT_WORDS), (4, 1000), (2, 3000),
                                   (40, 200), (300, 7), (1, 4096)])
@pytest.mark.parametrize("p", [0.0, 0.003, 0.5, 1.0])
def test_row_count_is_numpys_count(shape, p):
    """_row_count(mask)[i] == count_nonzero(mask[i]) for every row (0 when nothing is set), on each of its paths
    (uint8 sums, uint64 word sums, count_nonzero), including an all-True mask (the largest byte-lane sums) and
    a mask that does not start on an 8-byte boundary."""
    rng = np.random.default_rng(hash((shape, p)) % 2**32)
    m = rng.random(shape) < p
    ref = np.count_nonzero(m, axis=1)
    got = _row_count(m)
    np.testing.assert_array_equal(np.broadcast_to(got, ref.shape) if shape[0] > 1 else [got], ref)
    buf = np.zeros(m.size + 1, bool)
    shifted = buf[1:].reshape(shape)            # same values, data pointer at an odd address
    shifted[...] = m
    got = _row_count(shifted)
    np.testing.assert_array_equal(np.broadcast_to(got, ref.shape) if shape[0] > 1 else [got], ref)


INT_SPECS = {
    "torch affine per-channel": QuantSpec(fmt=IntFormat(8, True), mapping="affine", granularity=PerChannel(0),
                                          convention="torch"),
    "float64 affine per-channel": QuantSpec(fmt=IntFormat(8, True), mapping="affine", granularity=PerChannel(0),
                                            convention="float64"),
    "onnx symmetric per-channel (divide)": QuantSpec(fmt=IntFormat(8, True), mapping="symmetric",
                                                     granularity=PerChannel(0), convention="onnx"),
    "torch-fake uint4 per-group 1024": QuantSpec(fmt=IntFormat(4, False), mapping="affine",
                                                 granularity=PerGroup(1024), convention="torch-fake"),
    "torch per-tensor (scalar operands, FMA)": QuantSpec(fmt=IntFormat(8, True), mapping="affine",
                                                         granularity=PerTensor(), convention="torch"),
    # clipped codes in every channel (rows whose min/max codes leave the range are checked and clamped)
    "torch int4 percentile 99 per-channel": QuantSpec(fmt=IntFormat(4, True), mapping="symmetric",
                                                      granularity=PerChannel(0), convention="torch",
                                                      range=Percentile(99.0)),
}


@pytest.mark.parametrize("shape", [(24, 4096), (3, LONG)], ids=["rows-of-4096", "rows-longer-than-a-tile"])
@pytest.mark.parametrize("name", list(INT_SPECS))
def test_long_rows_match_the_untiled_formulas(name, shape):
    """On long rows the tiled codec (per-row operands in tile buffers, or scalars) gives the codes of the untiled
    ``quantize_blocks`` over the whole block view (per-row columns), x_hat = (q - zp) * scale, and statistics
    equal to the per-element ones: collapsed = #(x != 0 and x_hat == 0), clipped counts, max |x_hat - x| (formed in
    the working dtype), mean squared and absolute error (float64 sums)."""
    rng = np.random.default_rng(7)
    x = lognormal_channels(rng, shape, 0)
    x[:, ::53] = 0.0                                     # exact zeros: never counted as collapsed
    x[1, 5] = 40.0 * np.abs(x[1]).max()                  # an outlier: many codes of its channel become zero-point
    spec = INT_SPECS[name]
    r = analyze(x, spec)
    p = prepare(x, spec)
    conv, bv = p.conv, p.blocks
    qmin, qmax = conv.code_range(spec.element)
    raw, q = quantize_blocks(bv.values, p.scales.scale, p.scales.zero_point, qmin, qmax, conv,
                             spec.effective_rounding, fma=p.codec().fma)
    np.testing.assert_array_equal(r._q_b, q)
    np.testing.assert_array_equal(p.codes().reshape(q.shape), q)
    xd, xh = x.astype(np.float64), r.dequantized.astype(np.float64)
    e = xh - xd
    m = r.metrics
    assert m.collapsed == int(((xd != 0) & (xh == 0)).sum())
    assert (m.clipped_low, m.clipped_high) == (int((raw < qmin).sum()), int((raw > qmax).sum()))
    if "percentile" in name:
        assert m.clipped_low > 0 and m.clipped_high > 0          # the clamping path ran
    work = r.dequantized.dtype                              # errors are formed in the working dtype
    assert m.max_abs == np.abs(r.dequantized - x.astype(work)).max()
    np.testing.assert_allclose(m.mse, (e * e).mean(), rtol=2e-5)   # float32 runs of 256 (kernel._row_sum)
    np.testing.assert_allclose(m.mae, np.abs(e).mean(), rtol=2e-5)


@pytest.mark.parametrize("shape", [(24, 4096), (3, LONG)], ids=["rows-of-4096", "rows-longer-than-a-tile"])
@pytest.mark.parametrize("dtype,mapping,axis", [("qint8", "affine", 0), ("quint8", "symmetric", 0),
                                                ("qint8", "affine", None)])
def test_long_rows_bit_exact_with_torch(torch, dtype, mapping, axis, shape):
    """PyTorch 2.13's quantize_per_channel / quantize_per_tensor on long rows, with constructed ties: scale,
    zero-point, codes and x_hat identical bit for bit (the same oracle as test_torch_parity, other shapes)."""
    rng = np.random.default_rng(11)
    x = lognormal_channels(rng, shape, 0)
    assert_parity(torch, x, dtype, mapping, False, axis, "torch", f"random {shape}")
    s, _, _, _ = torch_reference(torch, x, dtype, mapping, False, axis, "torch")
    assert_parity(torch, _ties(x, s, axis, rng), dtype, mapping, False, axis, "torch", f"ties {shape}")


FLOAT_SCHEMES = ("fp8_e4m3", "fp8_e4m3_channel", "fp8_e4m3_b128", "mxfp4_e2m1", "nvfp4", "nf4")
# dyadic data whose scales are powers of two (amax 7 in every channel and 128-block: 7 / 448 = 2**-6; MX scales are
# powers of two): many scaled values land exactly on a midpoint of the element grid
EXACT_MIDPOINTS = ("fp8_e4m3", "fp8_e4m3_channel", "fp8_e4m3_b128", "mxfp4_e2m1")


@pytest.mark.parametrize("data", ["normal", "dyadic"])
@pytest.mark.parametrize("name", FLOAT_SCHEMES)
def test_float_flags_from_the_main_pass(name, data):
    """analyze() keeps the boundary flags (the ties column) from its own encoder run: they equal
    ``floatfmt.encode_detailed(scaled).boundary`` of the scaled values, and a result that has to recompute them
    (the fallback pass) gets the same; the clip signs (a compare-only pass) equal ``encode_detailed``'s
    saturation mask times sign(x); ``Prepared.codes`` gives analyze's codes. Rows longer than a tile."""
    rng = np.random.default_rng(3)
    if data == "normal":
        x = rng.standard_normal((6, LONG)).astype(np.float32)
        x[2, 7] = 300.0                                   # saturates in the 16- and 32-element block schemes
    else:
        x = (rng.integers(-112, 113, (6, LONG)) / 16).astype(np.float32)
        x[:, ::128] = 7.0
    r = analyze(x, preset(name))
    assert "ties_blocks" in r.__dict__                    # kept by analyze: no second encoder pass
    scaled = r._raw_b                                     # x / encode_scale (or x * it), block layout
    enc = ff.encode_detailed(scaled, r.spec.element)
    np.testing.assert_array_equal(r.ties_blocks, enc.boundary)
    np.testing.assert_array_equal(r._clip_sign_b, np.where(enc.touched, np.sign(r._prep.work), 0))
    np.testing.assert_array_equal(r._q_b, enc.codes)
    if data == "dyadic" and name in EXACT_MIDPOINTS:
        assert enc.boundary.any()                         # the comparison is not vacuous
    again = analyze(x, preset(name))
    del again.__dict__["ties_blocks"]                     # as a result built without the flags
    np.testing.assert_array_equal(again.ties_blocks, r.ties_blocks)
    np.testing.assert_array_equal(prepare(x, preset(name)).codes().reshape(r._q_b.shape), r._q_b)
