"""measure() is analyze() without the arrays, and a tensor cut into runs of axis-0 slices quantizes exactly
as the whole tensor (given the whole tensor's range), so chunked totals equal unchunked ones."""
from __future__ import annotations

import numpy as np
import pytest

import quantcore as qc
from quantcore.measure import Stats, TensorRange, measure, measure_reference
from quantcore.schemes import parse_scheme, parse_schemes, scheme_memory

ALL = ("q8_0,q4_0,q4_1,q5_0,q5_1,int4-g128,int4-asym-g32,int8-channel,int8-tensor,int3-asym-tensor-fp32,"
       "int6-g64-bf16,nvfp4,mxfp4,mxfp8,nf4,fp8_e4m3,fp8_e4m3_channel,f16,bf16")
SHAPES = [(64, 256), (37, 96), (3, 5, 128), (16, 100)]  # 96, 100: groups and blocks cut short at the row end


def weights(shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * np.exp(rng.standard_normal(shape[:-1] + (1,)))
    x.reshape(-1)[::97] = 0.0  # exact zeros: the collapsed count must not count them
    return x.astype(np.float32)


def assert_same_stats(a: Stats, b: Stats, rtol=1e-12):
    assert (a.n, a.clipped_low, a.clipped_high, a.collapsed, a.max_abs) == \
           (b.n, b.clipped_low, b.clipped_high, b.collapsed, b.max_abs)
    for f in ("sse", "sae", "ssx"):
        assert getattr(a, f) == pytest.approx(getattr(b, f), rel=rtol, abs=0), f


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("scheme", parse_schemes(ALL), ids=lambda s: s.name)
def test_metrics_only_pass_equals_the_full_analysis(scheme, shape):
    x = weights(shape)
    assert_same_stats(measure(x, scheme), measure_reference(x, scheme))


def test_stats_metrics_match_analyze_metrics():
    x = weights((64, 256))
    for s in parse_schemes("q4_0,int4-g128,nvfp4"):
        m = measure(x, s).metrics()
        r = qc.analyze(x, s.spec).metrics
        assert m["rmse"] == pytest.approx(r.rmse, rel=1e-12)
        assert m["sqnr_db"] == pytest.approx(r.sqnr_db, rel=1e-12)
        # rel_rmse = RMSE / RMS(x), here from the per-element error in float64; the integer kernel sums
        # float32 squares in runs of 256 (quantcore.kernel._row_sum: ~1e-7, at most 1.5e-5 relative).
        exact = np.sqrt(np.sum(qc.analyze(x, s.spec).error.astype(np.float64) ** 2) / np.sum(x.astype(np.float64) ** 2))
        assert m["rel_rmse"] == pytest.approx(exact, rel=1.5e-5)
        assert (m["clip_count"], m["collapsed"], m["max_abs"]) == (r.clip_count, r.collapsed, r.max_abs)


def _dequantized(x, scheme, rng=None):
    if scheme.kind == "float":
        part = (rng.min, rng.max) if (rng is not None and scheme.needs_tensor_range) else None
        return qc.analyze(x, scheme.spec, tensor_range=part).dequantized
    spec = scheme.spec
    if rng is not None and scheme.needs_tensor_range:
        spec = spec.with_(range=qc.CustomRange(rng.min, rng.max))
    return qc.analyze(x, spec).dequantized


SPLITTABLE = [s for s in parse_schemes(ALL) if s.kind != "cast"]


@pytest.mark.parametrize("shape", [(64, 256), (37, 96), (9, 4, 64)])
@pytest.mark.parametrize("scheme", SPLITTABLE, ids=lambda s: s.name)
def test_runs_of_rows_quantize_exactly_as_the_whole_tensor(scheme, shape):
    """Per-group / per-channel / block schemes cut on axis-0 boundaries: every element's dequantized value
    is bit-identical to the unchunked analysis; per-tensor scales come from the whole tensor's range."""
    assert scheme.splits_on_axis0
    x = weights(shape, seed=3)
    rng = TensorRange.of(x)
    whole = _dequantized(x, scheme)
    cuts = [0, 1, 8, 20, shape[0]]
    parts = [x[a:b] for a, b in zip(cuts, cuts[1:]) if a < b]
    joined = np.concatenate([_dequantized(p, scheme, rng) for p in parts])
    np.testing.assert_array_equal(joined.view(np.uint32), whole.astype(np.float32).view(np.uint32))
    total = Stats.combine([measure(p, scheme, rng) for p in parts])
    assert_same_stats(total, measure_reference(x, scheme))


def test_without_the_tensor_range_a_part_gets_its_own_scale():
    """The range is what makes per-tensor schemes chunkable: without it the parts differ (test can fail)."""
    x = weights((32, 64))
    s = parse_scheme("int8-tensor")
    r = int(np.argmax(np.abs(x).max(axis=1)))
    a = 0 if r >= 4 else 28  # four rows without the tensor's largest value
    part = x[a:a + 4]
    assert not np.array_equal(_dequantized(part, s), _dequantized(x, s)[a:a + 4])
    np.testing.assert_array_equal(_dequantized(part, s, TensorRange.of(x)), _dequantized(x, s)[a:a + 4])


def test_combine_is_independent_of_grouping_and_order():
    rng = np.random.default_rng(1)
    parts = [Stats(10, *(rng.random(2) * 10.0 ** rng.integers(-8, 8, 2)), rng.random(),
                   float(rng.random() * 1e6), 1, 2, 3) for _ in range(50)]
    a = Stats.combine(parts)
    b = Stats.combine(parts[::-1])
    assert a == b
    shuffled = [parts[i] for i in rng.permutation(len(parts))]
    assert Stats.combine(shuffled) == a


def test_f16_and_bf16_round_like_ml_dtypes():
    ml = pytest.importorskip("ml_dtypes", reason="ml_dtypes 0.7.0 is the bfloat16 oracle")
    x = weights((16, 64)) * 1e3
    x[0, 0], x[0, 1] = 7e4, -1e5  # beyond float16: saturated and counted as clipped
    st = measure(x, parse_scheme("bf16"))
    ref = x.astype(ml.bfloat16).astype(np.float32)
    assert st.sse == pytest.approx(float(np.sum((ref.astype(np.float64) - x) ** 2)), rel=1e-12)
    st16 = measure(x, parse_scheme("f16"))
    ref16 = np.clip(x, -65504, 65504).astype(np.float16).astype(np.float64)
    assert st16.sse == pytest.approx(float(np.sum((ref16 - x) ** 2)), rel=1e-12)
    assert (st16.clipped_low, st16.clipped_high) == (1, 1)


@pytest.mark.parametrize("shape", [(64, 256), (37, 96), (3, 5, 128), (16, 100), (300,)])
@pytest.mark.parametrize("scheme", parse_schemes(ALL + ",nf4_dq"), ids=lambda s: s.name)
def test_memory_from_the_shape_equals_the_analysis(scheme, shape):
    if scheme.kind == "cast":
        assert scheme_memory(scheme, shape).bits_per_weight == 16
        return
    x = weights(shape)
    assert scheme_memory(scheme, shape) == qc.analyze(x, scheme.spec).memory


@pytest.mark.parametrize("scheme", parse_schemes("int4-g128-fp32,int8-channel-fp32,int8-tensor-fp32,nvfp4,mxfp8,nf4,fp8_e4m3"),
                         ids=lambda s: s.name)
def test_totals_pass_measures_extreme_rows_as_the_per_row_pass(scheme):
    """The metrics-only (totals) pass finds the same "wide" rows as the per-row pass -- rows of magnitude
    below 2**-50 or above 2**56, whose float32 sums are redone in float64 -- also in tiles mixing them with
    ordinary rows, zeros and single tiny elements, so its totals equal analyze's."""
    x = weights((64, 256), seed=11)
    x[3] *= np.float32(1e-20)                  # a whole row below 2**-50
    x[5] *= np.float32(1e-30)                  # ... and one whose float32 squares underflow to 0
    x[7] *= np.float32(1e25)                   # a row above 2**56
    x[9, 5] = np.float32(1e-30)                # one tiny element in an ordinary row
    x[11] = 0.0
    assert_same_stats(measure(x, scheme), measure_reference(x, scheme))


def test_totals_pass_sees_rows_whose_squares_underflow():
    """A tensor of +-2**-80 under MXFP8 is reconstructed exactly (X = 2**-88, x / X = 2**8), so every error is 0
    and every float32 square underflows to 0: the rows look all-zero to their sums of squares and are measured
    again; in float64 their sum of squares is 2**-160 per element, as analyze reports."""
    x = (np.sign(weights((8, 256), seed=12)) * np.float32(2.0 ** -80)).astype(np.float32)
    s = parse_scheme("mxfp8")
    ref = measure_reference(x, s)
    assert ref.sse == 0 and ref.ssx == np.count_nonzero(x) * 2.0 ** -160
    assert_same_stats(measure(x, s), ref)
