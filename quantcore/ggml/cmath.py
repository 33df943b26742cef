"""The C arithmetic of llama.cpp's ``ggml-quants.c``, reproduced bit for bit in numpy.

Every function here is elementwise (or a reduction along the last axis) over whole arrays of blocks.
The reference is ggml compiled for x86-64 with SSE float arithmetic: every ``float`` operation rounds
to float32 (``FLT_EVAL_METHOD == 0``), no FMA contraction, no reassociation. So every expression below
is evaluated in float32, one operation at a time, in the order the C source writes it
(``w*l*x`` is ``(w*l)*x``), and every sum the C code accumulates in a loop is a *sequential* float32
sum (:func:`seq_sum`), never numpy's pairwise ``sum``: pairwise summation rounds differently and
changes the last bit of a sum, which can flip a comparison in a scale search and so change a code.

C conversions whose result the reference relies on are reproduced as gcc/x86-64 performs them:
``(int)f`` is ``cvttss2si`` (truncation; NaN, inf and out-of-range give INT_MIN), and a narrowing to
``int8_t``/``uint8_t`` keeps the low byte (:func:`c_int`).
"""
from __future__ import annotations

import numpy as np

F32 = np.float32
_INT_MIN = -(1 << 31)


def f32(v: float) -> np.float32:
    """A C float constant (``0.1f`` is ``F32(0.1)``, the float32 nearest to 0.1)."""
    return F32(v)


def seq_sum(terms: np.ndarray, start_at_zero: bool = True) -> np.ndarray:
    """Sequential float32 sum over axis 0, exactly ``float s = 0; for (i...) s += t[i];`` per column.

    The searches keep their data *position-major*, ``(positions in a sub-block, sub-blocks)``, so the
    sum over a sub-block runs along axis 0. numpy reduces a non-innermost axis slice by slice in index
    order, one elementwise add per position (its pairwise summation applies only along the innermost,
    contiguous axis), which is exactly the C loop; ``test_seq_sum_is_sequential`` guards this
    property, and 32 vector adds are ~30x faster than ``np.add.accumulate`` along a last axis of 32.
    ``start_at_zero`` adds the C ``0.0f`` start: it only changes an all ``-0.0`` sum to ``+0.0``.
    With ``start_at_zero=False`` the sum starts from the first term (``float s = t[0]; for i >= 1``).
    """
    s = np.add.reduce(np.asarray(terms, F32), axis=0)
    return s + F32(0) if start_at_zero else s


def nearest_int(v: np.ndarray) -> np.ndarray:
    """ggml's ``nearest_int``: ``bits(v + 12582912.f) & 0x7fffff) - 0x400000`` as int32.

    For ``|v| < 2**22`` this is round half to even; outside that range (where the C code asserts, but
    release builds do not check) the same bit trick is applied, so the result matches there too.
    """
    t = (np.asarray(v, F32) + F32(12582912.0)).view(np.int32)
    return (t & np.int32(0x007FFFFF)) - np.int32(0x00400000)


def c_int(v: np.ndarray) -> np.ndarray:
    """``(int)v`` for float32 ``v`` on x86-64 (``cvttss2si``): truncation toward zero; NaN, +-inf and
    values outside int32 give INT_MIN. Returned as int64; ``& 0xFF`` then gives ``(uint8_t)v``."""
    v = np.asarray(v, F32)
    ok = np.isfinite(v) & (v >= F32(-2.0 ** 31)) & (v < F32(2.0 ** 31))
    return np.where(ok, np.trunc(np.where(ok, v, 0)), _INT_MIN).astype(np.int64)


def to_int8(i: np.ndarray) -> np.ndarray:
    """C conversion of an integer to ``int8_t`` (two's complement wrap), as int64."""
    return ((np.asarray(i, np.int64) + 128) & 0xFF) - 128


def roundf(t: np.ndarray) -> np.ndarray:
    """C ``roundf`` (half away from zero) on float32, exact: ``floor(a) + floor(2 (a - floor(a)))``."""
    a = np.abs(t)
    fl = np.floor(a)
    return np.copysign(fl + np.floor(F32(2) * (a - fl)), t)


def lroundf(t: np.ndarray) -> np.ndarray:
    """glibc ``lroundf`` then ``(int)`` of the long, as int64: NaN/inf give LONG_MIN, whose low 32 bits
    are 0 (so ``lroundf(v) + 1`` is 1 after narrowing to int)."""
    t = np.asarray(t, F32)
    ok = np.isfinite(t) & (np.abs(t) < F32(2.0 ** 63))
    r = np.where(ok, roundf(np.where(ok, t, 0)), 0).astype(np.int64)
    return np.where(ok, r, np.iinfo(np.int64).min)


def fp16_bits(v: np.ndarray) -> np.ndarray:
    """``GGML_FP32_TO_FP16``: round to nearest even (subnormals included), overflow to inf, NaN to
    0x7E00 with the sign kept; as uint16 bit patterns."""
    v = np.asarray(v, F32)
    with np.errstate(over="ignore"):
        bits = v.astype(np.float16).view(np.uint16)
    nan = np.isnan(v)
    if nan.any():
        sign = (v.view(np.uint32) >> 16).astype(np.uint16) & np.uint16(0x8000)
        bits = np.where(nan, sign | np.uint16(0x7E00), bits)
    return bits


def fp16_value(bits: np.ndarray) -> np.ndarray:
    """``GGML_FP16_TO_FP32`` of uint16 bit patterns (exact)."""
    return np.ascontiguousarray(bits, dtype=np.uint16).view(np.float16).astype(F32)


def round_fp16(v: np.ndarray) -> np.ndarray:
    """``GGML_FP16_TO_FP32(GGML_FP32_TO_FP16(v))``: the float32 value a stored fp16 field holds."""
    return fp16_value(fp16_bits(v))


def first_absmax(x: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """``(amax, max)`` of the C idiom ``if (amax < fabsf(v)) { amax = fabsf(v); max = v; }`` from 0:
    the largest magnitude and the signed value of its *first* occurrence; ``max = +0.0`` when all
    elements are zero (even ``-0.0``). NaN is never taken (``amax < NaN`` is false). Along ``axis``,
    keepdims."""
    a = np.abs(x)
    i = np.expand_dims(np.where(np.isnan(a), F32(0), a).argmax(axis=axis), axis)
    amax = np.take_along_axis(a, i, axis=axis)
    amax = np.where(np.isnan(amax), F32(0), amax)
    m = np.take_along_axis(x, i, axis=axis)
    return amax, np.where(amax > 0, m, F32(0))


def first_min(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``float m = x[0]; for (...) if (x[i] < m) m = x[i];`` along ``axis``: the minimum, and of
    equal minima (``-0.0`` and ``+0.0``) the first, whose sign numpy's ``min`` does not promise."""
    return np.take_along_axis(x, np.expand_dims(x.argmin(axis=axis), axis), axis=axis).squeeze(axis)


def first_max(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``if (x[i] > m) m = x[i];`` from ``x[0]``: the maximum, the first of equal maxima."""
    return np.take_along_axis(x, np.expand_dims(x.argmax(axis=axis), axis), axis=axis).squeeze(axis)


def best_index(values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """ggml's ``best_index_int8(n, values, x)`` for a sorted table of integers (``kvalues_iq4nl``).

    C: 0 if ``x <= v[0]``, n-1 if ``x >= v[n-1]`` (and for NaN, where its binary search ends), else
    with ``v[mu-1] <= x < v[mu]`` the lower entry iff ``x - v[mu-1] < v[mu] - x`` (both differences
    float32; exact midpoints go up). ``mu`` is read from a table over ``floor(x)``, exact because
    the entries are integers (``v[k] > x`` iff ``v[k] > floor(x)``); ~10x faster than searchsorted.
    """
    v = np.asarray(values, F32)
    lo0, hi0 = int(v[0]), int(v[-1])
    assert np.array_equal(v, np.round(v)) and np.all(np.diff(v) > 0)
    mu_of = np.clip(np.searchsorted(v, np.arange(lo0, hi0 + 1, dtype=F32), side="right"), 1, len(v) - 1)
    x = np.asarray(x, F32)
    xs = np.where(np.isnan(x), v[-1], x)
    mu = mu_of[(np.floor(np.clip(xs, v[0], v[-1])) - v[0]).astype(np.intp)]
    lo, hi = v[mu - 1], v[mu]
    pick = np.where((xs - lo) < (hi - xs), mu - 1, mu)
    return np.where(xs <= v[0], 0, np.where(xs >= v[-1], len(v) - 1, pick))
