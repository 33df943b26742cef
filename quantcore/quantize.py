"""Element encoders: integer rounding and the float / codebook encoder, on a block view.

Integer elements (:func:`quantize_blocks`, :func:`dequantize_blocks`). ``scale`` and ``zero_point`` hold one
value per row and broadcast along axis 1. The arithmetic is done in the convention's working dtype (see
:mod:`quantcore.conventions`):

    t     = x * (1/scale)            if convention.reciprocal else x / scale   (t = 0 where scale == 0)
    raw   = round(t + zero_point)    if convention.zp_before_round else round(t) + zero_point
            (with ``fma=True`` the product and the sum are rounded once, as fbgemm's AVX2 kernel)
    q     = clamp(raw, qmin, qmax)
    x_hat = (q - zero_point) * scale_stored

``raw`` is the unclamped integer (kept as a float array: it can exceed every integer type for
outliers far outside the range); ``scale_stored`` is the scale as stored (fp16 for GGUF).

Float and codebook elements (:class:`FloatCodec`), all float32:

    s     = x / encode_scale  or  x * encode_scale     (the scale rule says which; one float32 rounding)
    q     = element code of s: round to nearest, ties to even, saturating (codebook: number of
            thresholds below s), through :class:`quantcore.floatfmt.TileEncoder`
    x_hat = value(q) * scale                           (one float32 multiply)

An element is *clipped* when ``s`` rounded past the element's largest finite value and saturated (low when
``x < 0``). :class:`IntCodec` and :class:`FloatCodec` give the fused kernel (:mod:`quantcore.kernel`) one
interface: ``tile(v, r0, r1)`` -> codes, x_hat, clip masks; ``dequantize``; ``describe`` for messages.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from . import floatfmt as ff
from .conventions import Convention, apply_rounding, fma_f32, store_scale


def quantize_blocks(values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int,
                    conv: Convention, rounding: str, rng: np.random.Generator | None = None,
                    fma: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(raw, q)`` for a block array; see the module docstring for the exact arithmetic."""
    dt = conv.dtype
    s = np.asarray(scale, dtype=dt)[:, None]
    zp = np.asarray(zero_point, dtype=dt)[:, None]
    v = values if values.dtype == dt else values.astype(dt)
    # x / scale may overflow to +-inf (tiny scales, huge outliers): it saturates to qmin/qmax below.
    with np.errstate(over="ignore"):
        if conv.reciprocal:
            with np.errstate(divide="ignore"):
                inv = np.where(s == 0, dt(0), dt(1) / s)
            if fma and conv.zp_before_round:
                t = _fused_multiply_add(v, inv, zp, rounding)
                zp_pending = False
            else:
                t = v * inv
                zp_pending = True
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                t = v / s
            if not s.all():  # a zero scale (MLAS blocks of zeros) maps every element to the zero-point
                t[np.broadcast_to(s == 0, t.shape)] = 0
            zp_pending = True
    if zp_pending and conv.zp_before_round:
        t += zp
        zp_pending = False
    raw = apply_rounding(t, rounding, rng, out=t)  # t is a fresh temporary: round in place
    if zp_pending:
        raw += zp
    # Clamp only when needed (np.clip costs more than both checks); ``q is raw`` tells callers
    # that nothing was clipped.
    if raw.min(initial=qmin) < qmin or raw.max(initial=qmax) > qmax:
        return raw, np.clip(raw, qmin, qmax)
    return raw, raw


HALF_ROUNDINGS = ("half-even", "half-away")
FMA_EXACT_BELOW = float(1 << 21)  # beyond this float32 spacing reaches 1/4: use the exact emulation


def _fused_multiply_add(v: np.ndarray, inv: np.ndarray, zp: np.ndarray, rounding: str) -> np.ndarray:
    """``x*inv + zp`` for rounding to integers as if computed with one float32 rounding (FMA).

    With ``zp == 0`` a plain product already rounds once. Otherwise the plain float32 ``x*inv + zp``
    (two roundings) is within two ulps of the fused result; its nearest integer under a half-way
    rounding rule can differ only when it lies within a few ulps of a half-integer. Those elements
    (and every element once magnitudes reach 2**21) are recomputed with the exact emulation
    :func:`quantcore.conventions.fma_f32`. The returned values therefore round to the same integers
    as the fused ones (they are not bit-identical floats away from the half-integers).
    """
    if not zp.any():
        return v * inv
    if rounding not in HALF_ROUNDINGS:
        return fma_f32(v, inv, zp)
    t = v * inv
    t += zp
    tmax = float(np.max(np.abs(t), initial=0.0))
    if not tmax < FMA_EXACT_BELOW:
        return fma_f32(v, inv, zp)
    # Distance to the nearest half-integer; two ulps of tmax bound both roundings of the plain sum.
    tol = 4.0 * float(np.spacing(np.float32(tmax)))
    near = np.abs(t - np.rint(t))
    suspicious = near >= 0.5 - tol
    if suspicious.any():
        idx = np.flatnonzero(suspicious)
        row = idx // v.shape[1]
        t.reshape(-1)[idx] = fma_f32(v.reshape(-1)[idx], inv[:, 0][row], zp[:, 0][row])
    return t


def dequantize_blocks(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, conv: Convention) -> np.ndarray:
    """``(q - zero_point) * scale_stored`` in the working dtype."""
    dt = conv.dtype
    s = store_scale(np.asarray(scale, dtype=dt), conv.scale_storage)[:, None]
    zp = np.asarray(zero_point, dtype=dt)[:, None]
    out = q - zp
    out *= s
    return out


TILE_ELEMENTS = 1 << 16   # elements per tile of the fused passes (256 KB of float32: resident in L2)


def tiles(n_rows: int, row_len: int, tile: int = TILE_ELEMENTS):
    """``(r0, r1, c0, c1)`` rectangles covering ``(n_rows, row_len)``, each about ``tile`` elements:
    whole rows when rows are short, column slices of one row when a row alone exceeds ``tile``."""
    if row_len >= tile:
        for r in range(n_rows):
            for c in range(0, row_len, tile):
                yield r, r + 1, c, min(c + tile, row_len)
    else:
        step = max(1, tile // row_len)
        for r in range(0, n_rows, step):
            yield r, min(r + step, n_rows), 0, row_len


def code_dtype(qmin: float, qmax: float) -> type:
    """Smallest integer dtype holding every code in ``[qmin, qmax]``."""
    for dt in (np.int8, np.uint8, np.int16, np.uint16, np.int32):
        info = np.iinfo(dt)
        if info.min <= qmin and qmax <= info.max:
            return dt
    return np.int64


class Tile(NamedTuple):
    """One tile of a codec: codes, unclamped codes / scaled values (or None), x_hat (a buffer the kernel may
    overwrite), clip masks (None: nothing clipped) and the collapse mask (None: the kernel tests x_hat == 0)."""

    q: np.ndarray
    raw: np.ndarray | None
    xhat: np.ndarray
    clip_low: np.ndarray | None
    clip_high: np.ndarray | None
    collapsed: np.ndarray | None


class IntCodec:
    """Integer element encoder over statistics rows, one scale / zero-point per row (module docstring)."""

    def __init__(self, scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int, conv: Convention,
                 rounding: str, rng: np.random.Generator | None = None, fma: bool = False) -> None:
        self.conv, self.rounding, self.rng, self.fma = conv, rounding, rng, fma
        self.qmin, self.qmax = qmin, qmax
        self.dtype = conv.dtype
        self.code_dtype = code_dtype(qmin, qmax)
        self.scale = np.asarray(scale, dtype=self.dtype)
        self.zp = np.asarray(zero_point, dtype=self.dtype)
        self.stored = store_scale(self.scale, conv.scale_storage)
        self.zp_all_zero = not self.zp.any()
        self.scales_positive = bool((self.stored > 0).all())  # a stored scale can underflow to 0 (fp16)

    def tile(self, v: np.ndarray, r0: int, r1: int) -> Tile:
        raw, q = quantize_blocks(v, self.scale[r0:r1], self.zp[r0:r1], self.qmin, self.qmax, self.conv,
                                 self.rounding, self.rng, self.fma)
        lo = hi = None
        if q is not raw:  # something was clamped (see quantize_blocks)
            lo, hi = raw < self.qmin, raw > self.qmax
        ss = self.stored[r0:r1, None]
        # x_hat == 0 exactly when q == zero-point (scale > 0): test the codes, then x != 0 only there.
        with np.errstate(over="ignore"):  # an overflowing x_hat is found and refused by the kernel
            if self.zp_all_zero:
                xhat = q * ss
                collapsed = q == 0 if self.scales_positive else xhat == 0
            else:
                z = self.zp[r0:r1, None]
                xhat = q - z
                xhat *= ss
                collapsed = q == z if self.scales_positive else xhat == 0
        return Tile(q, raw, xhat, lo, hi, collapsed)

    def dequantize(self, q: np.ndarray, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """``(q - zero_point) * scale_stored`` in the working dtype for the given rows (codes of any dtype);
        computed in place in one new array."""
        out = np.array(q, dtype=self.dtype)
        out -= self.zp[rows, None]
        with np.errstate(over="ignore"):
            out *= self.stored[rows, None]
        return out

    def describe(self, q: float, row: int, xhat: float) -> str:
        return (f"code {int(q)} (zero-point {float(self.zp[row]):g}, scale {float(self.stored[row]):.4g}) "
                f"dequantizes to {xhat:g}, beyond the {np.dtype(self.dtype).name} range; narrow the range or use "
                f"the float64 convention")


class FloatCodec:
    """Float / codebook element encoder over statistics rows (module docstring), float32 throughout.

    ``encode_op`` is "divide" or "multiply", ``encode_scale`` and ``scale`` (dequantization) one float32
    per row. Tiles are at most :data:`quantcore.floatfmt.TILE_ELEMENTS` elements; the returned arrays are
    views of reused buffers, valid until the next call.
    """

    dtype = np.float32
    code_dtype = np.uint8

    def __init__(self, element: ff.Format, encode_op: str, encode_scale: np.ndarray, scale: np.ndarray,
                 max_tile: int = ff.TILE_ELEMENTS) -> None:
        self.element = element
        self.op: Callable = np.divide if encode_op == "divide" else np.multiply
        self.encode_scale = np.asarray(encode_scale, np.float32)
        self.scale = np.asarray(scale, np.float32)
        n = max(1, min(max_tile, ff.TILE_ELEMENTS))
        self._enc = ff.TileEncoder(element, n)
        self._s = np.empty(n, np.float32)
        self._codes = np.empty(n, np.uint8)
        self._clipped = np.empty(n, bool)
        self._boundary = np.empty(n, bool)
        self._values = np.empty(n, np.float32)

    def scaled(self, v: np.ndarray, r0: int, r1: int) -> np.ndarray:
        """The element encoder's float32 input ``x / encode_scale`` or ``x * encode_scale`` (a buffer view)."""
        s = self._s[:v.size].reshape(v.shape)
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            self.op(v, self.encode_scale[r0:r1, None], out=s)
        return s

    def tile(self, v: np.ndarray, r0: int, r1: int, boundary: bool = False) -> Tile:
        n, shape = v.size, v.shape
        s = self.scaled(v, r0, r1)
        codes, clipped, values = self._codes[:n], self._clipped[:n], self._values[:n]
        self._enc.run(s.reshape(-1), codes, clipped, self._boundary[:n] if boundary else None, values)
        xhat = values.reshape(shape)
        with np.errstate(over="ignore"):  # an x_hat beyond float32 is found and refused by the kernel
            np.multiply(xhat, self.scale[r0:r1, None], out=xhat)
        lo = hi = None
        c = clipped.reshape(shape)
        if c.any():
            lo, hi = c & (v < 0), c & (v > 0)
        return Tile(codes.reshape(shape), s, xhat, lo, hi, None)

    def flags(self, v: np.ndarray, r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
        """(boundary, clipped) of one tile, fresh arrays (see :class:`quantcore.floatfmt.Encoded`)."""
        self.tile(v, r0, r1, boundary=True)
        return self._boundary[:v.size].reshape(v.shape).copy(), self._clipped[:v.size].reshape(v.shape).copy()

    def dequantize(self, q: np.ndarray, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """``value(q) * scale`` in float32 for the given rows: the code table looked up tile by tile into one
        new array (no index array of the codes' full size), then scaled in place."""
        table = ff.decode_table(self.element)
        scale = self.scale[rows]
        out = np.empty(q.shape, np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            for r0, r1, c0, c1 in tiles(*q.shape):
                o = out[r0:r1, c0:c1]
                np.take(table, q[r0:r1, c0:c1], out=o)
                o *= scale[r0:r1, None]
        return out

    def describe(self, q: float, row: int, xhat: float) -> str:
        value = float(ff.decode(np.array([int(q)]), self.element)[0])
        return (f"element value {value:g} times its scale {float(self.scale[row]):.4g} is {xhat:g}, beyond the "
                f"float32 range")
