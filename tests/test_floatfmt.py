"""Element formats against ml_dtypes 0.7.0 (float8_e4m3fn, float8_e5m2, float6_e2m3fn, float6_e3m2fn,
float4_e2m1fn, float8_e8m0fnu).

ml_dtypes casts use one fixed overflow policy per dtype (E4M3FN -> NaN, E5M2 -> inf, E2M3 / E3M2 / E2M1
-> saturate, E8M0 -> NaN; recorded as ``FloatFormat.cast_overflow``). We compare our encoder under that
policy with the plain cast, and our "saturate" policy with the cast of ``clip(x, -max, max)``.

ml_dtypes 0.6 cast float64 to these formats through float32 (two roundings); 0.7.0 rounds once, as we
do (test_ml_dtypes_agrees_on_former_differences). The comparisons below still feed it float32-exact
inputs, and our float64 behaviour is checked against exact expectations.
"""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcore import floatfmt as ff

ML = {
    "fp8_e4m3fn": ml_dtypes.float8_e4m3fn,
    "fp8_e5m2": ml_dtypes.float8_e5m2,
    "fp4_e2m1": ml_dtypes.float4_e2m1fn,
    "e8m0": ml_dtypes.float8_e8m0fnu,
    "fp6_e2m3": ml_dtypes.float6_e2m3fn,
    "fp6_e3m2": ml_dtypes.float6_e3m2fn,
}
FMTS = [ff.E4M3FN, ff.E5M2, ff.E2M1, ff.E8M0, ff.E2M3, ff.E3M2]
ids = [f.name for f in FMTS]


def ml_cast_codes(x: np.ndarray, fmt: ff.FloatFormat) -> np.ndarray:
    """ml_dtypes cast of float32-representable inputs (asserted), as uint8 codes."""
    x = np.asarray(x)
    x32 = x.astype(np.float32)
    assert np.array_equal(x32.astype(np.float64), x.astype(np.float64), equal_nan=True), "not float32-exact"
    with np.errstate(over="ignore", invalid="ignore"):
        return x32.astype(ML[fmt.name]).view(np.uint8)


def ml_decode(codes: np.ndarray, fmt: ff.FloatFormat) -> np.ndarray:
    return np.asarray(codes, dtype=np.uint8).view(ML[fmt.name]).astype(np.float32)


def finite_grid(fmt):
    """All finite values of fmt, sorted ascending, as float64, with their codes (one zero only)."""
    codes = np.arange(fmt.n_codes)
    vals = ff.decode(codes, fmt).astype(np.float64)
    ok = np.isfinite(vals) & ~((vals == 0) & np.signbit(vals))
    order = np.argsort(vals[ok], kind="stable")
    return vals[ok][order], codes[ok][order]


# ---- decode ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FMTS, ids=ids)
def test_decode_every_code_matches_ml_dtypes(fmt):
    codes = np.arange(fmt.n_codes, dtype=np.uint8)
    ours = ff.decode(codes, fmt)
    ref = ml_decode(codes, fmt)
    assert ours.dtype == np.float32
    assert np.array_equal(ours, ref, equal_nan=True)
    assert np.array_equal(np.signbit(ours[~np.isnan(ours)]), np.signbit(ref[~np.isnan(ref)]))
    assert fmt.max_finite == float(ml_dtypes.finfo(ML[fmt.name]).max)


def test_format_constants():
    assert (ff.E4M3FN.max_finite, ff.E4M3FN.min_positive, ff.E4M3FN.emax) == (448.0, 2.0**-9, 8)
    assert (ff.E5M2.max_finite, ff.E5M2.min_positive, ff.E5M2.emax) == (57344.0, 2.0**-16, 15)
    assert (ff.E2M1.max_finite, ff.E2M1.min_positive, ff.E2M1.emax) == (6.0, 0.5, 2)
    assert (ff.E8M0.max_finite, ff.E8M0.min_positive, ff.E8M0.emax) == (2.0**127, 2.0**-127, 127)
    assert ff.decode(np.arange(8), ff.E2M1).tolist() == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    # OCP MX v1.0 section 5.3 (FP6): E2M3 max 7.5, min normal 1, min subnormal 0.125; E3M2 max 28,
    # min normal 0.25, min subnormal 0.0625; neither has inf or NaN, 64 codes, sign bit 0x20
    assert (ff.E2M3.max_finite, ff.E2M3.min_positive, ff.E2M3.emax, ff.E2M3.emin) == (7.5, 0.125, 2, 0)
    assert (ff.E3M2.max_finite, ff.E3M2.min_positive, ff.E3M2.emax, ff.E3M2.emin) == (28.0, 0.0625, 4, -2)
    for f in (ff.E2M3, ff.E3M2):
        assert (f.bits, f.n_codes, f.sign_bit, f.has_inf, f.has_nan) == (6, 64, 0x20, False, False)


def test_decode_rejects_bad_codes():
    with pytest.raises(ValueError, match=r"code 16 at index \(2,\)"):
        ff.decode(np.array([0, 1, 16]), ff.E2M1)
    with pytest.raises(ValueError, match="integer"):
        ff.decode(np.array([0.5]), ff.E4M3FN)


# ---- encode on the grid, at midpoints, around midpoints -----------------------------------------

@pytest.mark.parametrize("fmt", FMTS, ids=ids)
def test_encode_every_code_value_roundtrips(fmt):
    codes = np.arange(fmt.n_codes, dtype=np.uint8)
    vals = ff.decode(codes, fmt)
    fin = np.isfinite(vals)
    assert np.array_equal(ff.encode(vals[fin], fmt), codes[fin])      # incl. -0.0 -> sign code
    assert np.array_equal(ml_cast_codes(vals[fin], fmt), codes[fin])


@pytest.mark.parametrize("fmt", FMTS, ids=ids)
def test_midpoints_tie_to_even_and_neighbours(fmt):
    grid, codes = finite_grid(fmt)
    lo, hi = grid[:-1], grid[1:]
    clo, chi = codes[:-1], codes[1:]
    mid = (lo + hi) / 2                     # exact in float64 (few significant bits)
    assert np.all((mid > lo) & (mid < hi))
    got = ff.encode(mid, fmt)
    if fmt.man_bits > 0:
        # ties to the neighbour whose code (last mantissa bit) is even; zero is "even" on both sides
        even_hi = (chi & 1) == 0
        expect = np.where(even_hi, chi, clo)
    else:
        expect = chi                        # E8M0: ties up (ml_dtypes), there is no mantissa bit

    def val(c):  # compare values; a result of zero carries the sign of the input (checked below)
        return ff.decode(c, fmt)

    assert np.array_equal(val(got), val(expect))
    zero = val(got) == 0
    assert np.array_equal(np.signbit(val(got))[zero], np.signbit(mid)[zero])
    assert np.array_equal(ml_cast_codes(mid, fmt), got)        # bit-identical codes
    # just below / above the midpoint (float64 nextafter): the lower / upper neighbour
    below = np.nextafter(mid, -np.inf)
    above = np.nextafter(mid, np.inf)
    assert np.array_equal(val(ff.encode(below, fmt)), val(clo))
    assert np.array_equal(val(ff.encode(above, fmt)), val(chi))
    # and from float32 inputs, nextafter in float32
    mid32 = mid.astype(np.float32)
    assert np.array_equal(mid32.astype(np.float64), mid)
    b32, a32 = np.nextafter(mid32, np.float32(-np.inf)), np.nextafter(mid32, np.float32(np.inf))
    assert np.array_equal(val(ff.encode(b32, fmt)), val(clo))
    assert np.array_equal(val(ff.encode(a32, fmt)), val(chi))
    assert np.array_equal(ml_cast_codes(b32, fmt), ff.encode(b32, fmt))
    assert np.array_equal(ml_cast_codes(a32, fmt), ff.encode(a32, fmt))
    assert np.array_equal(ff.encode(mid32, fmt), got)


def test_e4m3_tie_examples():
    # 1.0625 is halfway between 1.0 (code 0x38, mantissa 000) and 1.125 (0x39): goes to even 1.0
    # 1.1875 is halfway between 1.125 (0x39) and 1.25 (0x3A): goes to even 1.25
    assert ff.round_to_format(np.array([1.0625, 1.1875, -1.0625]), ff.E4M3FN).tolist() == [1.0, 1.25, -1.0]
    # smallest subnormal 2**-9: half of it ties to zero, just above half goes to 2**-9
    x = np.array([2.0**-10, np.nextafter(2.0**-10, 1), 3 * 2.0**-10])
    assert ff.round_to_format(x, ff.E4M3FN).tolist() == [0.0, 2.0**-9, 2 * 2.0**-9]


def test_no_double_rounding_from_float64():
    x = np.array([1 + 2.0**-4 + 2.0**-30])              # above the 1.0 / 1.125 midpoint
    assert ff.round_to_format(x, ff.E4M3FN)[0] == 1.125
    assert ff.round_to_format(x.astype(np.float32), ff.E4M3FN)[0] == 1.0   # float32(x) is the tie


def test_ml_dtypes_agrees_on_former_differences():
    """Cases where ml_dtypes 0.6 differed and 0.7.0 (the pinned oracle) agrees with us: (1) a float64
    input is rounded once to fp8, not float64 -> float32 -> fp8; (2) a float32 subnormal in
    (2**-127, 2**-126) goes to the nearer power of two in E8M0 (1.2 * 2**-127 -> 2**-127, code 0);
    (3) 1e-300 (below every E8M0 value) rounds to the smallest one, 2**-127, instead of NaN."""
    assert ml_dtypes.__version__ == "0.7.0", "the pinned oracle changed: re-check these cases"
    x = np.array([1.2 * 2.0**-127], dtype=np.float32)
    assert x.astype(ml_dtypes.float8_e8m0fnu).view(np.uint8)[0] == 0 == ff.encode(x, ff.E8M0)[0]
    x = np.array([1 + 2.0**-4 + 2.0**-30, 1e-300])
    with np.errstate(over="ignore", invalid="ignore"):
        ml4 = x[:1].astype(ml_dtypes.float8_e4m3fn).astype(np.float32)
        ml8 = x[1:].astype(ml_dtypes.float8_e8m0fnu).astype(np.float32)
    assert ml4[0] == 1.125 == ff.round_to_format(x[:1], ff.E4M3FN)[0]
    assert ml8[0] == 2.0**-127 == ff.round_to_format(x[1:], ff.E8M0, "nan")[0]


# ---- saturation edge, overflow policies, specials ------------------------------------------------

EDGE = {  # (max finite, first value that rounds past max) as float64
    "fp8_e4m3fn": (448.0, float(np.nextafter(np.float32(464), np.float32(np.inf)))),  # 464 ties to 448
    "fp8_e5m2": (57344.0, 61440.0),                        # 61440 ties to even 65536 -> overflow
    "fp4_e2m1": (6.0, 7.0),                                # 7 ties to even 8 -> overflow
    "e8m0": (2.0**127, 1.5 * 2.0**127),                    # ties up
    "fp6_e2m3": (7.5, 7.75),                               # 7.75 ties to even 8 -> overflow
    "fp6_e3m2": (28.0, 30.0),                              # 30 ties to even 32 -> overflow
}


@pytest.mark.parametrize("fmt", FMTS, ids=ids)
def test_saturation_edge(fmt):
    vmax, first_over = EDGE[fmt.name]
    assert fmt.max_finite == vmax
    last_ok = float(np.nextafter(np.float32(first_over), np.float32(-np.inf)))   # float32-exact
    signs = [1.0, -1.0] if fmt.signed else [1.0]
    for s in signs:
        big = float(np.float32(3e38))
        x = s * np.array([vmax, last_ok, first_over, min(2 * first_over, big), big, np.inf])
        sat = ff.decode(ff.encode(x, fmt, "saturate"), fmt)
        assert sat.tolist() == [s * vmax] * 6
        codes, touched = ff.encode_with_overflow(x, fmt, "saturate")
        assert touched.tolist() == [False, False, True, True, True, True]
        # our saturate == ml_dtypes cast of the clipped value
        assert np.array_equal(codes, ml_cast_codes(np.clip(x, -vmax, vmax), fmt))
        # the plain-cast policy == ml_dtypes plain cast
        assert np.array_equal(ff.encode(x, fmt, fmt.cast_overflow), ml_cast_codes(x, fmt))
        if fmt.has_nan:
            nanpol = ff.decode(ff.encode(x, fmt, "nan"), fmt)
            assert nanpol[:2].tolist() == [s * vmax] * 2
            assert np.all(np.isnan(nanpol[2:5]))
            assert (np.isinf(nanpol[5]) if fmt.has_inf else np.isnan(nanpol[5]))


def test_e5m2_inf_policy_and_e4m3_nan_policy():
    x = np.array([np.inf, -np.inf, 1e6, -1e6])
    assert ff.round_to_format(x, ff.E5M2, "inf").tolist() == [np.inf, -np.inf, np.inf, -np.inf]
    e4 = ff.encode(x, ff.E4M3FN, "nan")
    assert e4.tolist() == [0x7F, 0xFF, 0x7F, 0xFF]
    with pytest.raises(ValueError, match="no infinity"):
        ff.encode(x, ff.E4M3FN, "inf")
    with pytest.raises(ValueError, match="overflow must be"):
        ff.encode(x, ff.E4M3FN, "clip")
    with pytest.raises(ValueError, match="no NaN"):
        ff.encode(x, ff.E2M1, "nan")


@pytest.mark.parametrize("fmt", [ff.E4M3FN, ff.E5M2, ff.E8M0], ids=["e4m3", "e5m2", "e8m0"])
def test_nan_input(fmt):
    x = np.array([np.nan, -np.nan, 1.0])
    got = ff.decode(ff.encode(x, fmt), fmt)
    assert np.isnan(got[:2]).all() and got[2] == 1.0
    assert np.isnan(ml_decode(ml_cast_codes(x[:2], fmt), fmt)).all()


def test_nan_rejected_where_no_nan_code():
    with pytest.raises(ValueError, match=r"NaN at index \(1, 0\).*fp4_e2m1"):
        ff.encode(np.array([[1.0, 2.0], [np.nan, 0.0]]), ff.E2M1)
    with pytest.raises(ValueError, match="NaN at index"):
        ff.encode(np.array([np.nan]), ff.NF4)
    for fmt in (ff.E2M3, ff.E3M2):
        with pytest.raises(ValueError, match=rf"NaN at index \(0,\).*{fmt.name}"):
            ff.encode(np.array([np.nan], np.float32), fmt)


@pytest.mark.parametrize("fmt", [ff.E4M3FN, ff.E5M2, ff.E2M3, ff.E3M2, ff.E2M1],
                         ids=["e4m3", "e5m2", "e2m3", "e3m2", "e2m1"])
def test_zeros_and_denormals(fmt):
    tiny = fmt.min_positive
    x = np.array([0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, tiny, -tiny,
                  tiny / 2, -tiny / 2, np.nextafter(tiny / 2, 1), np.nextafter(-tiny / 2, -1),
                  float(np.float32(1e-45))])
    got = ff.round_to_format(x, fmt)
    expect = [0.0, -0.0, 0.0, -0.0, 0.0, tiny, -tiny, 0.0, -0.0, tiny, -tiny, 0.0]
    assert got.tolist() == expect
    assert np.array_equal(np.signbit(got), np.signbit(np.array(expect)))
    f32 = x.astype(np.float32).astype(np.float64) == x      # ml_dtypes only on float32-exact inputs
    assert f32.sum() == 7
    assert np.array_equal(ff.encode(x[f32], fmt), ml_cast_codes(x[f32], fmt))
    # every subnormal of the format round-trips (they are on the grid)
    sub = np.arange(1, 1 << fmt.man_bits) * 2.0 ** (fmt.emin - fmt.man_bits)
    assert np.array_equal(ff.round_to_format(sub, fmt), sub.astype(np.float32))


def test_e8m0_unsigned_rules():
    x = np.array([0.0, -0.0, -1.0, -np.inf, 2.0**-128, 2.0**-140, 1.5, 3.0, 0.75, 2.0**-127])
    got = ff.round_to_format(x, ff.E8M0, "nan")
    assert np.isnan(got[:4]).all()
    assert got[4:].tolist() == [2.0**-127, 2.0**-127, 2.0, 4.0, 1.0, 2.0**-127]
    assert np.array_equal(ff.encode(x, ff.E8M0, "nan"), ml_cast_codes(x, ff.E8M0))
    assert ff.round_to_format(np.array([1e-300]), ff.E8M0)[0] == 2.0**-127   # below range: smallest


def test_integer_and_float16_inputs_and_shape():
    x16 = np.array([[1.0, -3.5], [300.0, 0.1]], dtype=np.float16)
    got = ff.encode(x16, ff.E4M3FN)
    assert got.shape == (2, 2) and got.dtype == np.uint8
    assert np.array_equal(got, ml_cast_codes(x16.astype(np.float64), ff.E4M3FN))
    assert ff.round_to_format(np.array([5, -7, 100]), ff.E2M1).tolist() == [4.0, -6.0, 6.0]
    with pytest.raises(ValueError, match="real numeric"):
        ff.encode(np.array([1 + 2j]), ff.E4M3FN)


# ---- NF4 codebook ---------------------------------------------------------------------------------

def test_nf4_values_and_thresholds():
    vals = ff.decode(np.arange(16), ff.NF4)
    assert vals.dtype == np.float32 and vals[0] == -1 and vals[7] == 0 and vals[15] == 1
    assert np.all(np.diff(vals) > 0)
    # every value encodes to its own code
    assert np.array_equal(ff.encode(vals, ff.NF4), np.arange(16))
    # kernel thresholds are the midpoints of neighbouring values (to float32 precision)
    thr = np.asarray(ff.NF4.thresholds, np.float32).astype(np.float64)
    mids = (vals[:-1].astype(np.float64) + vals[1:]) / 2
    assert np.max(np.abs(thr - mids)) < 1e-7
    # a value exactly on a threshold goes to the lower code (`x > t` in dQuantizeNF4), just above: upper
    assert np.array_equal(ff.encode(thr, ff.NF4), np.arange(15))
    assert np.array_equal(ff.encode(np.nextafter(thr.astype(np.float32), np.float32(2)), ff.NF4), np.arange(1, 16))
    assert ff.encode(np.array([-3.0, 3.0]), ff.NF4).tolist() == [0, 15]
    _, clipped = ff.encode_with_overflow(np.array([-3.0, 1.0, 3.0]), ff.NF4)
    assert clipped.tolist() == [True, False, True]


def test_get_format_names():
    assert ff.get_format("E4M3") is ff.E4M3FN and ff.get_format("nf4") is ff.NF4
    assert ff.get_format("fp6_e2m3") is ff.E2M3 and ff.get_format("E3M2") is ff.E3M2
    with pytest.raises(ValueError, match="unknown float format 'e3m4'"):
        ff.get_format("e3m4")


# ---- properties -------------------------------------------------------------------------------------

finite64 = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=300, deadline=None)
@given(x=st.lists(finite64, min_size=1, max_size=50), k=st.sampled_from(range(3)))
def test_property_nearest_value_and_matches_ml_dtypes(x, k):
    """Inside the range, encode returns a value at least as close to x as every other finite value
    of the format; for float32 inputs it is the same code as ml_dtypes' cast (E4M3/E5M2/E2M1)."""
    fmt = FMTS[k]
    x = np.asarray(x, dtype=np.float64)
    x = x[np.abs(x) <= fmt.max_finite]
    if x.size == 0:
        return
    r = ff.round_to_format(x, fmt).astype(np.float64)
    grid, _ = finite_grid(fmt)
    best = np.min(np.abs(x[:, None] - grid[None, :]), axis=1)
    assert np.all(np.abs(x - r) == best)
    x32 = x.astype(np.float32)
    assert np.array_equal(ff.encode(x32, fmt), ml_cast_codes(x32, fmt))


@settings(max_examples=200, deadline=None)
@given(a=finite64, b=finite64, k=st.sampled_from(range(3)))
def test_property_monotone_and_odd(a, b, k):
    """Rounding is monotone (a <= b implies r(a) <= r(b)) and odd (r(-a) == -r(a), codes differ in the
    sign bit only)."""
    fmt = FMTS[k]
    lo, hi = min(a, b), max(a, b)
    r = ff.round_to_format(np.array([lo, hi]), fmt)
    assert r[0] <= r[1]
    c = ff.encode(np.array([a, -a]), fmt)
    assert int(c[0]) ^ int(c[1]) == fmt.sign_bit


@settings(max_examples=300, deadline=None)
@given(x=st.lists(st.floats(allow_nan=False, width=32), min_size=1, max_size=50),
       fmt=st.sampled_from([ff.E2M3, ff.E3M2]))
def test_property_fp6_float32_codes_equal_ml_dtypes_cast(x, fmt):
    """For any float32 input (infinities included) an FP6 code is ml_dtypes 0.7.0's saturating cast, code
    for code, and inside the range its value is a nearest FP6 value."""
    x32 = np.asarray(x, dtype=np.float32)
    assert np.array_equal(ff.encode(x32, fmt), x32.astype(ML[fmt.name]).view(np.uint8))
    inside = x32[np.abs(x32) <= fmt.max_finite].astype(np.float64)
    grid, _ = finite_grid(fmt)
    r = ff.round_to_format(inside, fmt).astype(np.float64)
    assert np.all(np.abs(inside - r) == np.min(np.abs(inside[:, None] - grid[None, :]), axis=1))


@settings(max_examples=200, deadline=None)
@given(x=st.floats(min_value=2.0**-200, max_value=2.0**200, allow_nan=False))
def test_property_e8m0_is_nearest_power_of_two(x):
    """E8M0 picks the nearer of the two powers of two around x (ties up), within [2**-127, 2**127]."""
    r = float(ff.round_to_format(np.array([x]), ff.E8M0)[0])
    e = int(np.floor(np.log2(x)))            # test-side only; the encoder uses bits
    while 2.0**e > x:
        e -= 1
    while 2.0 ** (e + 1) <= x:
        e += 1
    lo, hi = 2.0**e, 2.0 ** (e + 1)
    want = hi if x - lo >= hi - x else lo
    want = min(max(want, 2.0**-127), 2.0**127)
    assert r == want


# ---- float32 fast path and boundary flags ------------------------------------------------------------

def _special_f32_patterns(fmt, rng, n_random=1 << 17):
    """Every grid value and midpoint (and the overflow midpoint) of fmt, every power of two, each +-3
    bit patterns, both signs; plus random bit patterns anywhere and near the grid's binades."""
    if isinstance(fmt, ff.Codebook):
        g = np.concatenate([np.asarray(fmt.values, np.float32), np.asarray(fmt.thresholds, np.float32)])
    else:
        v, _ = finite_grid(fmt)
        g = np.concatenate([v, (v[1:] + v[:-1]) / 2, [fmt.max_finite + 2.0 ** (fmt.emax - fmt.man_bits) / 2]])
    g = np.concatenate([g, 2.0 ** np.arange(-149, 128)]).astype(np.float32)
    base = np.concatenate([g, -g]).view(np.uint32).astype(np.int64)
    around = (base[:, None] + np.arange(-3, 4)[None, :]).ravel()
    around = around[(around >= 0) & (around < 2**32)]
    anywhere = rng.integers(0, 2**32, size=n_random, dtype=np.uint64)
    near = rng.integers(0x3000_0000, 0x4800_0000, size=n_random, dtype=np.uint64)
    near |= rng.integers(0, 2, size=n_random, dtype=np.uint64) << np.uint64(31)
    return np.concatenate([around, anywhere, near]).astype(np.uint32).view(np.float32)


def _brute_boundary(x32, fmt):
    """Reference: encode next_up / next_down (float32) with the float64 reference encoder, saturating,
    and compare magnitude codes."""
    fin = np.isfinite(x32)
    xs = np.where(fin, x32, 0).astype(np.float32)
    mag = (lambda c: c) if isinstance(fmt, ff.Codebook) else (lambda c: c & fmt.mag_mask)
    enc = lambda v: mag(ff._encode_ref(v.astype(np.float64), fmt, "saturate")[0])
    c0 = enc(xs)
    cu = enc(np.nextafter(xs, np.float32(np.inf)))
    cd = enc(np.nextafter(xs, np.float32(-np.inf)))
    return fin & ((cu != c0) | (cd != c0))


@pytest.mark.parametrize("fmt", [ff.E4M3FN, ff.E5M2, ff.E2M3, ff.E3M2, ff.E2M1, ff.NF4],
                         ids=["e4m3", "e5m2", "e2m3", "e3m2", "e2m1", "nf4"])
def test_float32_fast_path_equals_float64_reference(fmt):
    """The tiled float32 encoder (magic-add rounding on bit patterns) gives the same codes, overflow
    masks and decoded values as the float64 reference encoder, for every overflow policy, on every grid
    value / midpoint +-3 ulps, every power of two +-3 ulps (incl. float32 subnormals), inf, NaN and
    random bit patterns; and its boundary flags equal the brute-force definition."""
    x = _special_f32_patterns(fmt, np.random.default_rng(11))
    has_nan = isinstance(fmt, ff.FloatFormat) and fmt.has_nan
    if not has_nan:
        x = x[~np.isnan(x)]
    policies = ["saturate"] + ([] if isinstance(fmt, ff.Codebook) else
                               [p for p in ("nan", "inf") if (p == "nan" and fmt.has_nan) or (p == "inf" and fmt.has_inf)])
    assert ff._use_f32(x, fmt)
    for pol in policies:
        e = ff.encode_detailed(x, fmt, pol)
        with np.errstate(invalid="ignore"):
            rc, rt = ff._encode_ref(x.astype(np.float64), fmt, pol)
        assert np.array_equal(e.codes, rc), pol
        assert np.array_equal(e.touched, rt), pol
        assert np.array_equal(e.values, ff.decode(rc, fmt), equal_nan=True), pol
        assert np.array_equal(e.boundary, _brute_boundary(x, fmt)), pol
        assert e.boundary.sum() > 0
    # tile edges: a length that is not a multiple of the tile, in 2-D
    y = x[: 2 * ff.TILE_ELEMENTS + 6].reshape(2, -1)
    with np.errstate(invalid="ignore"):                  # signalling-NaN patterns warn when cast
        y64 = y.astype(np.float64)
    assert np.array_equal(ff.encode(y, fmt), ff.encode(y64, fmt))


def test_nan_in_fast_path_reports_global_index():
    x = np.ones((3, ff.TILE_ELEMENTS), np.float32)
    x[2, 5] = np.nan
    with pytest.raises(ValueError, match=r"NaN at index \(2, 5\).*fp4_e2m1"):
        ff.encode(x, ff.E2M1)
    with pytest.raises(ValueError, match=r"NaN at index \(2, 5\).*nf4"):
        ff.encode(x, ff.NF4)


@pytest.mark.parametrize("fmt", [ff.E4M3FN, ff.E5M2, ff.E2M3, ff.E3M2, ff.E2M1],
                         ids=["e4m3", "e5m2", "e2m3", "e3m2", "e2m1"])
def test_boundary_constructed_midpoints(fmt):
    """Every midpoint between two finite neighbours is a boundary; of its float32 neighbours exactly the
    one on the side the tie does NOT go to is a boundary too (moving it onto the midpoint flips it);
    grid values and quarter points are not. The overflow midpoint is not (saturation keeps the code)."""
    grid, codes = finite_grid(fmt)
    lo, hi = grid[:-1], grid[1:]
    mid = ((lo + hi) / 2).astype(np.float32)
    up = np.nextafter(mid, np.float32(np.inf))
    dn = np.nextafter(mid, np.float32(-np.inf))
    ties_up = (codes[1:] & 1) == 0                   # tie goes to the even (upper) neighbour
    zero_pair = (lo == 0) | (hi == 0)                # zero is "even" on both sides: tie goes to zero
    ties_up = np.where(zero_pair, hi == 0, ties_up)
    for s in (1, -1):
        assert ff.encode_detailed(s * mid, fmt).boundary.all()
        assert np.array_equal(ff.encode_detailed(s * up, fmt).boundary, ~ties_up)
        assert np.array_equal(ff.encode_detailed(s * dn, fmt).boundary, ties_up)
        far = np.concatenate([grid, (3 * lo + hi) / 4, (lo + 3 * hi) / 4]).astype(np.float32)
        assert not ff.encode_detailed(s * far, fmt).boundary.any()
    over_mid = np.float32(fmt.max_finite + 2.0 ** (fmt.emax - fmt.man_bits) / 2)
    near = np.array([np.nextafter(over_mid, np.float32(-np.inf)), over_mid,
                     np.nextafter(over_mid, np.float32(np.inf)), np.float32(1e30)])
    assert not ff.encode_detailed(near, fmt).boundary.any()
    # float64 inputs: judged in float64 ulps (a float64 one ulp off a midpoint is still a boundary)
    mid64 = (lo + hi) / 2
    assert ff.encode_detailed(mid64, fmt).boundary.all()
    assert not ff.encode_detailed(mid64 + (hi - lo) / 8, fmt).boundary.any()


def test_boundary_nf4_thresholds():
    """NF4 (x > t rule): t and next_up(t) are boundaries (a one-ulp move crosses t), the codebook
    values and next_down(t) are not; float64 inputs likewise with float64 ulps."""
    thr = np.asarray(ff.NF4.thresholds, np.float32)
    vals = np.asarray(ff.NF4.values, np.float32)
    assert ff.encode_detailed(thr, ff.NF4).boundary.all()
    assert ff.encode_detailed(np.nextafter(thr, np.float32(2)), ff.NF4).boundary.all()
    assert not ff.encode_detailed(np.nextafter(thr, np.float32(-2)), ff.NF4).boundary.any()
    assert not ff.encode_detailed(vals, ff.NF4).boundary.any()
    t64 = thr.astype(np.float64)
    assert ff.encode_detailed(t64, ff.NF4).boundary.all()
    assert not ff.encode_detailed(np.nextafter(t64, -2), ff.NF4).boundary.any()
