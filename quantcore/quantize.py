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
    v = values if values.dtype == dt else values.astype(dt)
    divisor = None if conv.reciprocal else s
    inv = reciprocal(s, dt) if conv.reciprocal else None
    t = np.empty(v.shape, dt)
    raw = _round_to_codes(v, t, inv, divisor, np.asarray(zero_point, dtype=dt)[:, None], conv, rounding, rng, fma)
    # Clamp only when needed (np.clip costs more than both checks); ``q is raw`` tells callers
    # that nothing was clipped.
    if raw.min(initial=qmin) < qmin or raw.max(initial=qmax) > qmax:
        return raw, np.clip(raw, qmin, qmax)
    return raw, raw


def reciprocal(scale: np.ndarray, dt: type) -> np.ndarray:
    """``dt(1) / scale`` in the working dtype, 0 where the scale is 0 (MatMulNBits' ``scale ? 1/scale : 0``)."""
    with np.errstate(divide="ignore", over="ignore"):
        return np.where(scale == 0, dt(0), dt(1) / scale).astype(dt, copy=False)


def _round_to_codes(v: np.ndarray, out: np.ndarray, inv, divisor, zp, conv: Convention, rounding: str,
                    rng: np.random.Generator | None, fma: bool) -> np.ndarray:
    """The unclamped codes ``raw`` of the module docstring, written into ``out`` (same shape as ``v``) when the
    arithmetic allows it. ``inv`` (reciprocal conventions) or ``divisor`` and ``zp`` are per-row operands that
    broadcast against ``v`` (a column, a same-shape array or a scalar; the FMA emulation needs columns). A zero
    zero-point is added too: ``-0.0 + 0`` is ``+0.0``, and ``raw`` keeps the sign of zero it always had."""
    # x / scale may overflow to +-inf (tiny scales, huge outliers): it saturates to qmin/qmax later.
    zp_pending = True
    with np.errstate(over="ignore"):
        if inv is not None:
            if fma and conv.zp_before_round:
                out = _fused_multiply_add(v, inv, zp, rounding)
                zp_pending = False
            else:
                np.multiply(v, inv, out=out)
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                np.divide(v, divisor, out=out)
            zero = np.asarray(divisor) == 0
            if zero.any():  # a zero scale (MLAS blocks of zeros) maps every element to the zero-point
                out[np.broadcast_to(zero, out.shape)] = 0
    if zp_pending and conv.zp_before_round:
        out += zp
        zp_pending = False
    raw = apply_rounding(out, rounding, rng, out=out)  # out is ours: round in place
    if zp_pending:
        raw += zp
    return raw


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
# Integer tiles are twice as large: their dozen buffers outgrow L2 either way (L3 serves them), and halving the
# number of tiles halves the per-call overhead of the ~40 numpy calls a tile costs (-20% on 4096 x 4096).
INT_TILE_ELEMENTS = 1 << 17


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
    overwrite), clip masks (None: nothing clipped), the collapse mask (None: the kernel tests x_hat == 0) and,
    for float elements when asked, the boundary flags of :class:`quantcore.floatfmt.Encoded`."""

    q: np.ndarray
    raw: np.ndarray | None
    xhat: np.ndarray
    clip_low: np.ndarray | None
    clip_high: np.ndarray | None
    collapsed: np.ndarray | None
    boundary: np.ndarray | None = None


class RowOperands:
    """Per-row values (one per statistics row) as operands of elementwise steps on a tile of rows.

    numpy runs ``tile * column`` (a ``(rows, 1)`` operand broadcast along the rows) two to three times slower
    than ``tile * scalar`` or ``tile * same_shape``, so a column is copied once per tile into a tile-shaped
    buffer when it is used (one cheap copy, then same-shape steps), and a value shared by every row is a
    scalar. The values are exactly the same: this changes no bit, only numpy's inner loop.
    """

    def __init__(self, values: np.ndarray, dtype: type) -> None:
        self.values = np.asarray(values, dtype=dtype)
        v = self.values
        bits = v.view(f"u{v.itemsize}")      # bitwise: -0.0 and 0.0 differ (x + -0.0 keeps a -0.0 that x + 0.0 does not)
        self.uniform = v.size > 0 and bool((bits == bits[0]).all())
        self.scalar = v.dtype.type(v[0]) if self.uniform else None
        self._buf = np.empty(0, dtype)

    def column(self, r0: int, r1: int) -> np.ndarray:
        return self.values[r0:r1, None]

    def operand(self, r0: int, r1: int, shape: tuple[int, int]):
        """A scalar (every row equal), else rows ``r0:r1`` broadcast to ``shape`` in a reused buffer."""
        if self.uniform:
            return self.scalar
        n = shape[0] * shape[1]
        if self._buf.size < n:
            self._buf = np.empty(max(n, TILE_ELEMENTS), self._buf.dtype)
        out = self._buf[:n].reshape(shape)
        np.copyto(out, self.values[r0:r1, None])
        return out


class IntCodec:
    """Integer element encoder over statistics rows, one scale / zero-point per row (module docstring).

    ``tile`` returns views of buffers reused from tile to tile (valid until the next call).

    ``row_range``: per row, a ``(min, max)`` that contains every value of the row (the block's min and max).
    Every step from ``x`` to ``raw`` is monotone (correctly rounded multiply / divide by a scale >= 0, add,
    round; the FMA emulation rounds to the fused result's integers), so ``raw(min) <= raw(x) <= raw(max)``;
    a tile whose rows all have ``raw(min) >= qmin`` and ``raw(max) <= qmax`` skips the two reductions that
    look for clipped codes. Stochastic rounding (not monotone in this sense) always looks.
    """

    max_tile = INT_TILE_ELEMENTS

    def __init__(self, scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int, conv: Convention,
                 rounding: str, rng: np.random.Generator | None = None, fma: bool = False,
                 row_range: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.conv, self.rounding, self.rng, self.fma = conv, rounding, rng, fma
        self.qmin, self.qmax = qmin, qmax
        self.dtype = dt = conv.dtype
        self.code_dtype = code_dtype(qmin, qmax)
        self.scale = np.asarray(scale, dtype=dt)
        self.zp = np.asarray(zero_point, dtype=dt)
        self.stored = store_scale(self.scale, conv.scale_storage)
        self.zp_all_zero = not self.zp.any()
        # the encoder's per-row operand: 1/scale (reciprocal conventions, computed once) or the scale itself
        self._enc = RowOperands(reciprocal(self.scale, dt) if conv.reciprocal else self.scale, dt)
        self._zp = RowOperands(self.zp, dt)
        self._stored = RowOperands(self.stored, dt)
        self._t = self._xhat = np.empty(0, dt)
        self._unsafe_before = None if row_range is None or rounding == "stochastic" else self._unsafe_rows(row_range)

    def _unsafe_rows(self, row_range: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """Cumulative count of rows whose range may give a code outside [qmin, qmax] (``row_range`` above):
        rows r0..r1-1 are all safe iff ``c[r1] == c[r0]``."""
        dt = self.dtype
        ends = np.stack([np.asarray(a, dt) for a in row_range], axis=1)      # (rows, 2): min, max
        inv = self._enc.values[:, None] if self.conv.reciprocal else None
        divisor = None if self.conv.reciprocal else self._enc.values[:, None]
        with np.errstate(invalid="ignore"):
            raw = _round_to_codes(ends, np.empty_like(ends), inv, divisor, self.zp[:, None], self.conv,
                                  self.rounding, None, self.fma)
            unsafe = ~((raw[:, 0] >= self.qmin) & (raw[:, 1] <= self.qmax))     # NaN: unsafe
        return np.concatenate([[0], np.cumsum(unsafe)])

    def _buffers(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if self._t.size < n:
            self._t, self._xhat = np.empty(max(n, self.max_tile), self.dtype), np.empty(max(n, self.max_tile), self.dtype)
        return self._t[:n], self._xhat[:n]

    def tile(self, v: np.ndarray, r0: int, r1: int, xhat: bool = True) -> Tile:
        """Codes, unclamped codes, clip masks and (``xhat``) the dequantized values of one tile."""
        shape = v.shape
        t, xh = (b.reshape(shape) for b in self._buffers(v.size))
        if v.dtype != self.dtype:
            v = v.astype(self.dtype)
        if self.fma and self.conv.zp_before_round:  # the FMA emulation indexes per-row columns
            enc, zp = self._enc.column(r0, r1), self._zp.column(r0, r1)
        else:
            enc, zp = self._enc.operand(r0, r1, shape), self._zp.operand(r0, r1, shape)
        inv, divisor = (enc, None) if self.conv.reciprocal else (None, enc)
        raw = _round_to_codes(v, t, inv, divisor, zp, self.conv, self.rounding, self.rng, self.fma)
        q, lo, hi = raw, None, None
        safe = self._unsafe_before is not None and self._unsafe_before[r1] == self._unsafe_before[r0]
        if not safe and (raw.min(initial=self.qmin) < self.qmin or raw.max(initial=self.qmax) > self.qmax):
            q = np.clip(raw, self.qmin, self.qmax)   # rare: raw is kept (unclamped) for the caller
            lo, hi = raw < self.qmin, raw > self.qmax
        if not xhat:
            return Tile(q, raw, None, lo, hi, None)
        # x_hat == 0 exactly when q == zero-point: q - zp is an exact small integer and times a stored scale
        # > 0 it cannot round to 0 (|x_hat| >= scale). The kernel tests x_hat == 0 (a same-shape compare).
        with np.errstate(over="ignore"):  # an overflowing x_hat is found and refused by the kernel
            ss = self._stored.operand(r0, r1, shape)
            if self.zp_all_zero:
                np.multiply(q, ss, out=xh)
            else:
                if np.ndim(zp) and zp.shape != shape:   # the FMA path's column
                    zp = self._zp.operand(r0, r1, shape)
                np.subtract(q, zp, out=xh)
                xh *= ss
        return Tile(q, raw, xh, lo, hi, None)

    def dequantize(self, q: np.ndarray, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """``(q - zero_point) * scale_stored`` in the working dtype for the given rows (codes of any dtype; the
        conversion of an integer code is exact), into one new array. Every row: tile by tile, so each tile is
        written once and scaled while in cache."""
        if not (isinstance(rows, slice) and rows == slice(None) and q.ndim == 2 and q.shape[0] == self.scale.size):
            out = np.array(q, dtype=self.dtype)
            out -= self.zp[rows, None]
            with np.errstate(over="ignore"):
                out *= self.stored[rows, None]
            return out
        out = np.empty(q.shape, self.dtype)
        with np.errstate(over="ignore"):
            for r0, r1, c0, c1 in tiles(*q.shape, self.max_tile):
                o = out[r0:r1, c0:c1]
                np.subtract(q[r0:r1, c0:c1], self._zp.operand(r0, r1, o.shape), out=o, dtype=self.dtype)
                o *= self._stored.operand(r0, r1, o.shape)
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
    max_tile = ff.TILE_ELEMENTS

    def __init__(self, element: ff.Format, encode_op: str, encode_scale: np.ndarray, scale: np.ndarray,
                 max_tile: int = ff.TILE_ELEMENTS) -> None:
        self.element = element
        self.op: Callable = np.divide if encode_op == "divide" else np.multiply
        self.encode_scale = np.asarray(encode_scale, np.float32)
        self.scale = np.asarray(scale, np.float32)
        self._encode_scale = RowOperands(self.encode_scale, np.float32)
        self._scale = RowOperands(self.scale, np.float32)
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
            self.op(v, self._encode_scale.operand(r0, r1, v.shape), out=s)
        return s

    def tile(self, v: np.ndarray, r0: int, r1: int, boundary: bool = False, xhat: bool = True,
             codes_out: np.ndarray | None = None, boundary_out: np.ndarray | None = None) -> Tile:
        """Codes, x_hat (``xhat``) and clip masks of one tile; ``boundary``: the boundary flags too, computed by
        the same encoder run from its own intermediates (:class:`quantcore.floatfmt.TileEncoder`).
        ``codes_out`` / ``boundary_out``: contiguous arrays of the tile's size the encoder writes into directly
        (the caller's result arrays: no copy), else reused buffers."""
        n, shape = v.size, v.shape
        for out in (codes_out, boundary_out):
            if out is not None and not (out.flags.c_contiguous and out.size == n):
                raise ValueError("codes_out / boundary_out must be contiguous arrays of the tile's size")
        s = self.scaled(v, r0, r1)
        codes = self._codes[:n] if codes_out is None else codes_out.reshape(-1)
        clipped = self._clipped[:n]
        values = self._values[:n] if xhat else None
        flags = boundary_out.reshape(-1) if boundary_out is not None else self._boundary[:n] if boundary else None
        self._enc.run(s.reshape(-1), codes, clipped, flags, values)
        xh = None
        if xhat:
            xh = values.reshape(shape)
            with np.errstate(over="ignore"):  # an x_hat beyond float32 is found and refused by the kernel
                np.multiply(xh, self._scale.operand(r0, r1, shape), out=xh)
        lo = hi = None
        c = clipped.reshape(shape)
        if c.any():
            lo, hi = c & (v < 0), c & (v > 0)
        return Tile(codes.reshape(shape), s, xh, lo, hi, None, None if flags is None else flags.reshape(shape))

    def clipped(self, v: np.ndarray, r0: int, r1: int) -> np.ndarray:
        """The clip (saturation) mask of one tile as :meth:`tile` computes it, without encoding (a buffer view)."""
        s = self.scaled(v, r0, r1)
        out = self._clipped[:v.size]
        self._enc.saturated(s.reshape(-1), out)
        return out.reshape(v.shape)

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
