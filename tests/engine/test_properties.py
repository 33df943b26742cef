"""hypothesis property tests: each test states its invariant in words in its docstring.

Inputs are small random tensors (hypothesis draws shape, magnitude, offset and a numpy seed, plus
hand-picked special values such as 0 and exact duplicates) and random schemes. Example counts are
kept low so the whole engine suite stays within a few minutes on one core.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from quantcore.conventions import get_convention
from quantcore import (CustomRange, IntFormat, MinMax, MSEOptimal, PerChannel, PerGroup, PerTensor, Percentile,
                       QuantSpec, analyze, memory_estimate)

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NEAREST = ("half-even", "half-away")
ALL_ROUNDINGS = ("half-even", "half-away", "floor", "ceil", "trunc", "stochastic")
EXACT_CONVENTIONS = ("float64", "torch", "torch-fake")


DESIGNED_REJECTIONS = ("no positive codes", "rejects reduce_range", "overflows fp16")


def run(x, spec: QuantSpec):
    """analyze(), discarding the example when the scheme is one the engine rejects by design (tested in
    test_bad_input): a symmetric format with no positive codes, PyTorch's unsigned symmetric reduce_range,
    a scale too large for fp16 storage."""
    try:
        return analyze(x, spec)
    except ValueError as e:
        if any(m in str(e) for m in DESIGNED_REJECTIONS):
            assume(False)
        raise


@st.composite
def tensors(draw, min_dims=2, max_dims=2, max_side=24):
    """A float32 tensor: normal values x magnitude (per-channel log-normal) + offset, with zeros sprinkled in."""
    ndim = draw(st.integers(min_dims, max_dims))
    shape = tuple(draw(st.integers(1, max_side)) for _ in range(ndim))
    seed = draw(st.integers(0, 2**32 - 1))
    mag = 10.0 ** draw(st.integers(-6, 4))
    offset = draw(st.sampled_from([0.0, 0.0, 1.0, -3.0]))
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) + offset) * mag
    if ndim >= 1:
        x *= np.exp(rng.normal(0.0, draw(st.sampled_from([0.0, 1.0, 3.0])), (shape[0],) + (1,) * (ndim - 1)))
    if draw(st.booleans()):
        x.flat[rng.integers(0, x.size, max(1, x.size // 5))] = 0.0
    if draw(st.booleans()):
        x = np.round(x / mag * 4) * mag / 4  # many exact duplicates and grid-aligned values
    return x.astype(np.float32)


@st.composite
def int_formats(draw, custom=False):
    bits = draw(st.integers(2, 16))
    signed = draw(st.booleans())
    if custom and draw(st.booleans()):
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        a = draw(st.integers(lo, 0))            # a custom range must include 0 (IntFormat, as torch)
        b = draw(st.integers(max(a + 1, 0), hi))
        return IntFormat(bits, signed, custom_qmin=a, custom_qmax=b)
    narrow = draw(st.booleans())
    rr = draw(st.booleans()) and bits > 2 and not (narrow and bits == 3)
    return IntFormat(bits, signed, narrow=narrow, reduce_range=rr)


def same_metrics(a, b) -> None:
    """Integer metrics identical; float metrics equal up to summation order and padding.

    The kernel sums float32 errors in float32 runs of at most 256 terms before accumulating in
    float64 (quantcore.kernel._row_sum), so two tilings of the same data agree to ~1e-6 relative."""
    da, db = a.to_dict(), b.to_dict()
    assert da.keys() == db.keys()
    for k in da:
        if isinstance(da[k], int):
            assert da[k] == db[k], k
        else:
            assert da[k] == pytest.approx(db[k], rel=2e-5, abs=1e-300), k


def _tol(r, x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Float slack for a 'within scale/2' bound: exact in float64 up to 1e-12 relative, float32 a few ulps.

    float32 conventions form x*inv + zp before rounding; near |t| ~ |qmin| (large zero-points, e.g. 13-bit
    affine with an eps-clamped scale) its spacing adds up to half an ulp of |qmin| codes to the half-code error.
    """
    if r.spec.convention == "float64":
        return 1e-12 * (np.abs(scale) + np.abs(x)) + np.finfo(np.float32).tiny
    codes = 2.0**-24 * max(abs(r.qmin), abs(r.qmax))
    return 2.0**-20 * (np.abs(scale) + np.abs(x)) + codes * np.abs(scale) + np.finfo(np.float32).tiny


def _per_element(r, a: np.ndarray) -> np.ndarray:
    """Broadcast a per-block array (scale or zero-point) to the input's shape (per-tensor / per-channel)."""
    g = r.spec.granularity
    a = np.asarray(a, np.float64)
    if isinstance(g, PerTensor):
        return np.full(r.x.shape, a[0])
    shape = [1] * r.x.ndim
    shape[g.axis] = a.size
    return np.broadcast_to(a.reshape(shape), r.x.shape)


@SETTINGS
@given(x=tensors(), fmt=int_formats(), mapping=st.sampled_from(["affine", "symmetric"]),
       per_channel=st.booleans(), conv=st.sampled_from(EXACT_CONVENTIONS), rounding=st.sampled_from(NEAREST))
def test_roundtrip_error_within_half_step(x, fmt, mapping, per_channel, conv, rounding):
    """dequantize(quantize(x)) is within scale/2 of x wherever x lies inside the block's widened range
    [lo', hi'] (affine: [min(lo,0), max(hi,0)]; symmetric: [-amax, amax]) and inside the grid
    [(qmin - zp) * scale, (qmax - zp) * scale] widened by half a step, when rounding is to nearest."""
    g = PerChannel(0) if per_channel else PerTensor()
    r = run(x, QuantSpec(fmt=fmt, mapping=mapping, granularity=g, convention=conv, rounding=rounding))
    s, zp = _per_element(r, r.scale), _per_element(r, r.zero_point)
    xd = r.x.astype(np.float64)
    lo, hi = _per_element(r, r.lo), _per_element(r, r.hi)
    if mapping == "affine":
        lo_w, hi_w = np.minimum(lo, 0), np.maximum(hi, 0)
    else:
        amax = np.maximum(np.abs(lo), np.abs(hi))
        lo_w, hi_w = -amax, amax
    tol = _tol(r, xd, s)
    inside = ((xd >= lo_w) & (xd <= hi_w) & (xd >= (r.qmin - zp - 0.5) * s - tol)
              & (xd <= (r.qmax - zp + 0.5) * s + tol))
    err = np.abs(r.dequantized.astype(np.float64) - xd)
    assert (err[inside] <= s[inside] / 2 + tol[inside]).all()
    if mapping == "affine":
        # affine grids always cover [lo', hi'] to within half a step (zp = qmin - round(lo'/scale) is never
        # clamped since lo' <= 0 <= hi'), so with min/max calibration the bound holds for every element
        assert inside.all()


@SETTINGS
@given(x=tensors(), fmt=int_formats(custom=True), mapping=st.sampled_from(["affine", "symmetric", "affine_float"]),
       rounding=st.sampled_from(ALL_ROUNDINGS), shrink=st.floats(0.05, 1.0), pct=st.floats(60, 100),
       which=st.sampled_from(["minmax", "custom", "percentile"]), conv=st.sampled_from(EXACT_CONVENTIONS + ("gguf",)))
def test_codes_inside_format_and_clip_counts(x, fmt, mapping, rounding, shrink, pct, which, conv):
    """Clamped codes always lie in [qmin, qmax], whatever the range method, rounding or format; an element
    is counted as clipped below (above) exactly when its unclamped code is < qmin (> qmax), and
    clip_count = clipped_low + clipped_high."""
    rng_ = {"minmax": MinMax(), "percentile": Percentile(pct),
            "custom": CustomRange(float(x.min()) * shrink, float(x.max()) * shrink)}[which]
    r = run(x, QuantSpec(fmt=fmt, mapping=mapping, range=rng_, rounding=rounding, convention=conv,
                                 granularity=PerChannel(0)))
    q, raw = r.q, r.raw_q
    assert q.min() >= r.qmin and q.max() <= r.qmax
    np.testing.assert_array_equal(q, np.clip(raw, r.qmin, r.qmax))
    m = r.metrics
    assert m.clipped_low == int((raw < r.qmin).sum())
    assert m.clipped_high == int((raw > r.qmax).sum())
    assert m.clip_count == m.clipped_low + m.clipped_high
    assert m.clip_rate == pytest.approx(m.clip_count / x.size)


@SETTINGS
@given(x=tensors(min_dims=1, max_dims=3), fmt=int_formats(custom=True), rounding=st.sampled_from(ALL_ROUNDINGS),
       conv=st.sampled_from(EXACT_CONVENTIONS + ("gguf",)), gran=st.sampled_from(["tensor", "channel", "group"]),
       scale_dtype=st.sampled_from(["fp32", "fp16", "bf16"]))
def test_zero_is_exact_for_affine(x, fmt, rounding, conv, gran, scale_dtype):
    """Affine mapping (integer zero-point): every x == 0 is quantized to the zero-point and dequantizes to
    exactly 0, for every rounding rule, convention, granularity and scale storage dtype."""
    x = x.copy()
    x.flat[:: max(1, x.size // 3)] = 0.0
    g = {"tensor": PerTensor(), "channel": PerChannel(0), "group": PerGroup(3, -1)}[gran]
    r = run(x, QuantSpec(fmt=fmt, mapping="affine", granularity=g, rounding=rounding, convention=conv,
                             scale_dtype=scale_dtype))
    zero = r.x == 0
    assert (r.dequantized[zero] == 0).all()


@SETTINGS
@given(x=tensors(), fmt=st.builds(IntFormat, st.integers(2, 16), st.just(True)),  # grids covering [lo', hi']
       mapping=st.sampled_from(["affine", "symmetric"]), conv=st.sampled_from(EXACT_CONVENTIONS))
def test_per_channel_error_bounded_by_its_scale_and_by_per_tensor(x, fmt, mapping, conv):
    """With min/max ranges and nearest rounding, per-channel quantization's worst error in channel c never
    exceeds scale_c / 2, and scale_c never exceeds the per-tensor scale, so per-channel's error is within
    per-tensor's error bound (scale_tensor / 2) in every channel."""
    pc = run(x, QuantSpec(fmt=fmt, mapping=mapping, granularity=PerChannel(0), convention=conv))
    pt = run(x, QuantSpec(fmt=fmt, mapping=mapping, granularity=PerTensor(), convention=conv))
    err = np.abs(pc.dequantized.astype(np.float64) - pc.x.astype(np.float64)).max(axis=1)
    s_c = np.asarray(pc.scale, np.float64)
    slack = (1e-12 if conv == "float64" else 2.0**-20) * (s_c + np.abs(pc.x).max(axis=1)) + 1e-38
    if conv != "float64":
        # float32 forms x*inv + zp before rounding: near |t| ~ |qmin| its spacing adds up to half an ulp of
        # |qmin| (in codes) to the half-code rounding error (e.g. 14-bit affine with an eps-clamped scale).
        slack = slack + s_c * 2.0**-24 * max(abs(fmt.qmin), abs(fmt.qmax))
    assert (err <= s_c / 2 + slack).all()
    assert (pc.scale <= pt.scale[0]).all()
    assert (err <= float(pt.scale[0]) / 2 + slack).all()
    np.testing.assert_allclose(pc.channel_table()["max_abs"], err, rtol=1e-12)


@SETTINGS
@given(x=tensors(), fmt=int_formats(custom=True), mapping=st.sampled_from(["affine", "symmetric", "affine_float"]),
       conv=st.sampled_from(EXACT_CONVENTIONS + ("gguf",)), extra=st.integers(0, 5),
       rounding=st.sampled_from(ALL_ROUNDINGS[:-1]))
def test_group_of_whole_row_equals_per_channel(x, fmt, mapping, conv, extra, rounding):
    """Per-group with a group size >= the row length (one group per row) gives exactly per-channel's
    scales, zero-points, codes and dequantized values on a 2-D tensor."""
    pc = run(x, QuantSpec(fmt=fmt, mapping=mapping, granularity=PerChannel(0), convention=conv, rounding=rounding))
    pg = run(x, QuantSpec(fmt=fmt, mapping=mapping, granularity=PerGroup(x.shape[1] + extra, -1),
                              convention=conv, rounding=rounding))
    np.testing.assert_array_equal(pg.scale, pc.scale)
    np.testing.assert_array_equal(pg.zero_point, pc.zero_point)
    np.testing.assert_array_equal(pg.q, pc.q)
    np.testing.assert_array_equal(pg.dequantized, pc.dequantized)
    same_metrics(pg.metrics, pc.metrics)


@SETTINGS
@given(x=tensors(), fmt=int_formats(), mapping=st.sampled_from(["affine", "symmetric", "affine_float"]),
       conv=st.sampled_from(EXACT_CONVENTIONS + ("gguf",)), gran=st.sampled_from(["tensor", "channel", "group"]),
       rounding=st.sampled_from(ALL_ROUNDINGS))
def test_ragged_input_with_equal_rows_equals_dense(x, fmt, mapping, conv, gran, rounding):
    """A list of equally long rows (as pasted text gives) produces exactly the dense 2-D array's results."""
    g = {"tensor": PerTensor(), "channel": PerChannel(0), "group": PerGroup(5, -1)}[gran]
    spec = QuantSpec(fmt=fmt, mapping=mapping, granularity=g, convention=conv, rounding=rounding, seed=3)
    dense = run(x, spec)
    ragged = run([row for row in x.astype(np.float64)], spec)
    np.testing.assert_array_equal(ragged.scale, dense.scale)
    np.testing.assert_array_equal(ragged.zero_point, dense.zero_point)
    np.testing.assert_array_equal(ragged.q, dense.q)
    np.testing.assert_array_equal(ragged.dequantized, dense.dequantized)
    same_metrics(ragged.metrics, dense.metrics)


@SETTINGS
@given(x=tensors(min_dims=3, max_dims=3, max_side=9), axis=st.integers(0, 2), gaxis=st.integers(0, 2),
       fmt=int_formats(), mapping=st.sampled_from(["affine", "symmetric", "affine_float"]),
       conv=st.sampled_from(EXACT_CONVENTIONS + ("gguf",)), size=st.integers(1, 6))
def test_moving_the_channel_axis_changes_nothing(x, axis, gaxis, fmt, mapping, conv, size):
    """Quantizing x per channel along ``axis`` equals quantizing moveaxis(x, axis, 0) along axis 0 and
    moving the results back; the same holds for the group axis of a per-group scheme."""
    base = QuantSpec(fmt=fmt, mapping=mapping, convention=conv)
    a = run(x, base.with_(granularity=PerChannel(axis)))
    b = run(np.ascontiguousarray(np.moveaxis(x, axis, 0)), base.with_(granularity=PerChannel(0)))
    np.testing.assert_array_equal(a.scale, b.scale)
    np.testing.assert_array_equal(a.q, np.moveaxis(b.q, 0, axis))
    np.testing.assert_array_equal(a.dequantized, np.moveaxis(b.dequantized, 0, axis))
    assert a.metrics.max_abs == b.metrics.max_abs and a.metrics.clip_count == b.metrics.clip_count
    assert a.metrics.mse == pytest.approx(b.metrics.mse, rel=2e-5, abs=0)
    c = run(x, base.with_(granularity=PerGroup(size, gaxis)))
    d = run(np.ascontiguousarray(np.moveaxis(x, gaxis, -1)), base.with_(granularity=PerGroup(size, -1)))
    np.testing.assert_array_equal(c.q, np.moveaxis(d.q, -1, gaxis))
    np.testing.assert_array_equal(c.dequantized, np.moveaxis(d.dequantized, -1, gaxis))
    np.testing.assert_array_equal(np.sort(c.scale), np.sort(d.scale))


@settings(max_examples=15, deadline=None)
@given(frac=st.floats(0.01, 0.99), base=st.integers(-50, 50), seed=st.integers(0, 2**31),
       conv=st.sampled_from(["float64", "torch-fake"]))
def test_stochastic_rounding_reproducible_and_unbiased(frac, base, seed, conv):
    """Stochastic rounding with the same seed gives identical codes; a different seed gives another
    stream; and the mean code of N copies of a value t = base + frac is t within 5 standard errors
    (E[round(t)] = t: rounds up with probability frac(t))."""
    n = 20_000
    scale = 0.25
    t = np.float32(base + frac)
    xval = np.float32(t * scale)  # exact: scale is a power of two
    x = np.full((1, n), xval, np.float32)
    spec = QuantSpec(fmt=IntFormat(8), mapping="affine", range=CustomRange(-32.0, 31.75),  # scale = 63.75/255 = 0.25
                     rounding="stochastic", seed=seed, convention=conv)
    r1, r2 = run(x, spec), run(x, spec)
    assert float(r1.scale[0]) == scale
    np.testing.assert_array_equal(r1.q, r2.q)
    r3 = run(x, spec.with_(seed=seed + 1))
    assert not np.array_equal(r1.q, r3.q)
    codes = r1.q.astype(np.float64) - float(r1.zero_point[0])
    exact_t = float(xval) / scale
    sd = math.sqrt((exact_t % 1) * (1 - exact_t % 1) / n)
    assert abs(codes.mean() - exact_t) <= 5 * sd + 1e-9
    assert set(np.unique(codes)) <= {math.floor(exact_t), math.floor(exact_t) + 1}


@SETTINGS
@given(x=tensors(min_dims=1, max_dims=3), fmt=int_formats(custom=True),
       mapping=st.sampled_from(["affine", "symmetric", "affine_float"]), conv=st.sampled_from(EXACT_CONVENTIONS + ("gguf",)),
       gran=st.sampled_from(["tensor", "channel", "group"]), shrink=st.floats(0.1, 1.0))
def test_metrics_are_consistent(x, fmt, mapping, conv, gran, shrink):
    """Reported metrics equal their definitions recomputed from x and x_hat in float64: mse = mean(e^2),
    rmse^2 = mse, mae = mean|e|, max_abs = max|e|, sqnr = 10 log10(sum x^2 / sum e^2) (+inf when e = 0),
    collapsed = #(x != 0 and x_hat == 0), clip_count = clipped_low + clipped_high; per-channel rows add
    up to the overall counts."""
    g = {"tensor": PerTensor(), "channel": PerChannel(0), "group": PerGroup(4, -1)}[gran]
    r = run(x, QuantSpec(fmt=fmt, mapping=mapping, granularity=g, convention=conv,
                                 range=CustomRange(float(x.min()) * shrink, float(x.max()) * shrink)))
    xd, xh = r.x.astype(np.float64), r.dequantized.astype(np.float64)
    e = xh - xd
    m = r.metrics
    # The engine forms e = x_hat - x in the working dtype (float32 for torch/gguf: one rounding per
    # element, relative 2**-24) and sums in float64; float64 conventions agree to summation order.
    rel = 1e-9 if conv == "float64" else 2.0**-21
    assert m.n == x.size
    assert m.mse == pytest.approx(np.mean(e * e), rel=rel, abs=1e-300)
    assert m.rmse ** 2 == pytest.approx(m.mse, rel=1e-12, abs=1e-300)
    assert m.mae == pytest.approx(np.mean(np.abs(e)), rel=rel, abs=1e-300)
    assert m.max_abs == pytest.approx(np.abs(e).max(), rel=rel, abs=0)
    sse, ssx = float(np.sum(e * e)), float(np.sum(xd * xd))
    if sse == 0:
        assert m.sqnr_db == math.inf
    else:
        assert m.sqnr_db == pytest.approx(10 * math.log10(ssx / sse), rel=1e-9, abs=1e-5)
    assert m.collapsed == int(((xd != 0) & (xh == 0)).sum())
    assert m.clip_count == m.clipped_low + m.clipped_high
    ch = r.channel_table()
    assert int(ch["n"].sum()) == m.n and int(ch["clip_count"].sum()) == m.clip_count
    assert int(ch["collapsed"].sum()) == m.collapsed
    assert ch["max_abs"].max() == m.max_abs


@SETTINGS
@given(x=tensors(min_dims=1, max_dims=3), bits=st.integers(2, 16), gran=st.sampled_from(["tensor", "channel", "group"]),
       size=st.integers(1, 40), sd=st.sampled_from(["fp32", "fp16", "bf16"]), zd=st.sampled_from(["int32", "int8", "fp16", "none"]))
def test_memory_formula(x, bits, gran, size, sd, zd):
    """total bytes = ceil(elements * bits / 8) + blocks * (scale bytes + zero-point bytes), with one block
    per tensor, one per channel, or ceil(row length / G) per row for per-group (a last, shorter group
    counts as a full block of metadata); bits per weight = 8 * total / elements."""
    g = {"tensor": PerTensor(), "channel": PerChannel(0), "group": PerGroup(size, -1)}[gran]
    r = run(x, QuantSpec(fmt=IntFormat(bits), granularity=g, scale_dtype=sd, zero_point_dtype=zd))
    nbytes = {"fp32": 4, "fp16": 2, "bf16": 2, "int32": 4, "int8": 1, "none": 0}
    n = x.size
    if gran == "tensor":
        blocks = 1
    elif gran == "channel":
        blocks = x.shape[0] if x.ndim > 1 else 1
    else:
        blocks = (n // x.shape[-1]) * -(-x.shape[-1] // size)
    mem = r.memory
    assert mem.n_blocks == blocks
    assert mem.payload_bytes == -(-n * bits // 8)
    assert mem.metadata_bytes == blocks * (nbytes[sd] + nbytes[zd])
    assert mem.total_bytes == mem.payload_bytes + mem.metadata_bytes
    assert mem.bits_per_weight == pytest.approx(8 * mem.total_bytes / n)
    assert mem.ratio_fp32 == pytest.approx(mem.total_bytes / (4 * n))
    assert memory_estimate(n, blocks, bits, sd, zd) == mem


@settings(max_examples=25, deadline=None)
@given(x=tensors(max_side=16), fmt=int_formats(), mapping=st.sampled_from(["affine", "symmetric", "affine_float"]),
       conv=st.sampled_from(EXACT_CONVENTIONS + ("gguf",)), steps=st.integers(1, 24),
       gran=st.sampled_from(["tensor", "channel", "group"]), rounding=st.sampled_from(ALL_ROUNDINGS[:-1]))
def test_mse_optimal_never_worse_than_minmax(x, fmt, mapping, conv, steps, gran, rounding):
    """MSE-optimal clipping searches ratios {1/steps, ..., 1}, which include ratio 1 (= min/max), so its
    squared error is never larger than min/max's, block by block; the reported ratio is in (0, 1] and the
    range it reports is that ratio times the block's min and max."""
    g = {"tensor": PerTensor(), "channel": PerChannel(0), "group": PerGroup(5, -1)}[gran]
    base = QuantSpec(fmt=fmt, mapping=mapping, granularity=g, convention=conv, rounding=rounding)
    mm = run(x, base)
    mo = run(x, base.with_(range=MSEOptimal(steps)))
    sse_mm = mm.block_table()["mse"] * mm.block_table()["n"]
    sse_mo = mo.block_table()["mse"] * mo.block_table()["n"]
    assert (sse_mo <= sse_mm * (1 + 1e-12)).all()
    ratio = np.asarray(mo.clip_ratio)
    assert ((ratio > 0) & (ratio <= 1)).all()
    assert mo.metrics.mse <= mm.metrics.mse * (1 + 1e-12)


@SETTINGS
@given(x=tensors(min_dims=1, max_dims=3), fmt=int_formats(custom=True),
       mapping=st.sampled_from(["affine", "symmetric", "affine_float"]), conv=st.sampled_from(EXACT_CONVENTIONS + ("gguf",)),
       gran=st.sampled_from(["tensor", "channel", "group"]))
def test_percentile_100_is_minmax(x, fmt, mapping, conv, gran):
    """Percentile(100) selects each block's exact min and max, so every result equals MinMax's."""
    g = {"tensor": PerTensor(), "channel": PerChannel(0), "group": PerGroup(7, -1)}[gran]
    base = QuantSpec(fmt=fmt, mapping=mapping, granularity=g, convention=conv)
    mm = run(x, base)
    p = run(x, base.with_(range=Percentile(100)))
    np.testing.assert_array_equal(p.lo, mm.lo)
    np.testing.assert_array_equal(p.hi, mm.hi)
    np.testing.assert_array_equal(p.scale, mm.scale)
    np.testing.assert_array_equal(p.q, mm.q)
    same_metrics(p.metrics, mm.metrics)


@SETTINGS
@given(lengths=st.lists(st.integers(1, 30), min_size=1, max_size=6), seed=st.integers(0, 2**32 - 1),
       fmt=int_formats(), mapping=st.sampled_from(["affine", "symmetric", "affine_float"]),
       conv=st.sampled_from(("float64", "torch-fake", "gguf")), gran=st.sampled_from(["channel", "group"]),
       size=st.integers(1, 8))
def test_ragged_padding_never_leaks(lengths, seed, fmt, mapping, conv, gran, size):
    """Channels of different lengths: each channel's codes, dequantized values and metrics equal those of
    that channel analyzed alone (padding repeats the last value but is masked out of every result), and
    the element count is the sum of the real lengths."""
    rng = np.random.default_rng(seed)
    rows = [rng.standard_normal(n) * np.exp(rng.normal(0, 2)) for n in lengths]
    g = PerChannel(0) if gran == "channel" else PerGroup(size, -1)
    alone_g = PerTensor() if gran == "channel" else PerGroup(size, -1)
    spec = QuantSpec(fmt=fmt, mapping=mapping, granularity=g, convention=conv)
    r = run(rows, spec)
    assert r.metrics.n == sum(lengths)
    table = r.channel_table()
    for i, row in enumerate(rows):
        a = run(row, spec.with_(granularity=alone_g))
        n = lengths[i]
        np.testing.assert_array_equal(r.q[i, :n], a.q.ravel())
        np.testing.assert_array_equal(r.dequantized[i, :n], a.dequantized.ravel())
        assert table["n"][i] == n
        assert table["max_abs"][i] == pytest.approx(a.metrics.max_abs, rel=1e-12, abs=0)
        assert table["mse"][i] == pytest.approx(a.metrics.mse, rel=2e-5, abs=1e-300)  # float32 partial sums
        assert table["clip_count"][i] == a.metrics.clip_count


@SETTINGS
@given(x=tensors(), bits=st.integers(2, 8), signed=st.booleans(), size=st.integers(1, 40),
       conv=st.sampled_from(["matmulnbits", "float64", "torch-fake", "onnx"]))
def test_signed_amax_reproduces_each_blocks_extreme_exactly(x, bits, signed, size, conv):
    """symmetric_scale='signed_amax': scale = m / (qmin - zero_point) with m the block's largest-magnitude
    value with its sign (max if |max| > |min|, else min), so m quantizes to qmin and dequantizes to exactly m
    (dividing by a power of two and multiplying back is exact) wherever the scale is not floored by eps and
    is a normal float."""
    spec = QuantSpec(fmt=IntFormat(bits, signed), mapping="symmetric", granularity=PerGroup(size, -1),
                     convention=conv, symmetric_scale="signed_amax")
    r = run(x, spec)
    lo, hi = r.lo.astype(np.float64), r.hi.astype(np.float64)
    m = np.where(np.abs(hi) > np.abs(lo), hi, lo)
    s = np.asarray(r.scale, np.float64)
    ok = (np.abs(s) > max(get_convention(conv).eps, 2.0 ** -100)) & (m != 0)
    assert np.array_equal(np.sign(s[ok]), -np.sign(m[ok]))
    blocks_x = r.blocks.values.astype(np.float64)
    xhat = r._xhat_b.astype(np.float64)
    at_m = blocks_x == m[:, None]
    assert (xhat[at_m & ok[:, None]] == blocks_x[at_m & ok[:, None]]).all()
    assert (r._q_b[at_m & ok[:, None]] == r.qmin).all()
