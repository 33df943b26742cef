"""Fused, cache-tiled quantize + measure pass: the one statistics pass of every integer, float and
codebook scheme (GGUF types, whose bytes come from their own classes, are measured from their
reconstruction with :func:`quantcore.metrics.row_stats`).

Quantizing and measuring a tensor takes about twenty elementwise numpy operations. Run one after the
other over a 64 MB tensor, each streams the whole tensor through memory; run on tiles of about 64 Ki
elements (a few hundred KB, resident in L2), only the first read of each tile touches memory. The
Python loop is over tiles, never over channels or elements; every tile is a rectangle of whole
"stat rows" (channels or blocks) or, for very long rows, a column slice of one row, and the per-row
statistics are accumulated across column slices.

The element encoder is a *codec* (:class:`quantcore.quantize.IntCodec`: integer rounding by the
convention; :class:`quantcore.quantize.FloatCodec`: the float / codebook encoder of
:mod:`quantcore.floatfmt`). Per element the arithmetic is exactly the codec's (same dtype, same
operation order), so results do not depend on the tiling.

Range safety. float32 squares overflow above 2**64 and lose precision below 2**-63, so a float32 row
whose largest ``|x|`` or ``|x_hat - x|`` lies outside ``[2**-50, 2**56]`` (and is not 0) has its statistics
recomputed in float64, with ``x_hat - x`` formed in float64 (the float32 difference of two finite values
can overflow too). A dequantized value that is not finite in the working dtype (e.g. code -128 times a
scale of amax / 127.5 with amax near float32's maximum) and a sum that overflows float64 are refused with
a ValueError naming the row (block or channel): no inf or NaN is ever reported as a result.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import numpy as np

from .quantize import FloatCodec, IntCodec

Codec = Union[IntCodec, FloatCodec]

TILE_ELEMENTS = 1 << 16
PARTIAL = 256  # float32 partial sums run over at most this many elements, then accumulate in float64
F32_SUM_RANGE = (2.0 ** -50, 2.0 ** 56)  # row maxima for which float32 partial sums of squares are exact enough


def _row_sum(a: np.ndarray, square: bool = False) -> np.ndarray:
    """Per-row sum (of squares), returned in float64.

    float32 rows are summed in float32 runs of at most ``PARTIAL`` terms (rows of up to 256 terms
    directly, longer rows whose length is a multiple of 256 in runs of 256) and the partial sums are
    added in float64: relative error at most 256 * 2**-24 (1.5e-5) in the worst case, ~1e-7 in
    practice, at SIMD speed. Other rows (float64, or odd lengths) are summed in float64.
    """
    rows, n = a.shape
    if a.dtype == np.float32 and n <= PARTIAL:
        part = np.einsum("ij,ij->i", a, a) if square else a.sum(axis=1)
        return part.astype(np.float64)
    if a.dtype == np.float32 and n % PARTIAL == 0:
        p = a.reshape(-1, PARTIAL)
        part = np.einsum("ij,ij->i", p, p) if square else p.sum(axis=1)
        return part.reshape(rows, -1).sum(axis=1, dtype=np.float64)
    if square:
        return np.einsum("ij,ij->i", a, a, dtype=np.float64)
    return a.sum(axis=1, dtype=np.float64)


def _row_count(mask: np.ndarray) -> np.ndarray | int:
    """Per-row count of True; a cheap global count first, since most masks are all False."""
    total = np.count_nonzero(mask)
    if total == 0:
        return 0
    if mask.shape[0] == 1:
        return total
    return np.count_nonzero(mask, axis=1)


@dataclass
class PassResult:
    stats: dict[str, np.ndarray]   # additive per-row statistics (see metrics.ROW_FIELDS)
    q: np.ndarray | None           # integer codes, same shape as the rows array
    raw: np.ndarray | None         # unclamped codes in the working dtype (kept only when asked)


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


def quantize_and_measure(rows: np.ndarray, codec: Codec, valid: np.ndarray | None = None, keep_codes: bool = True,
                         keep_raw: bool = False, row_name: Callable[[int], str] = lambda r: f"row {r}",
                         refuse_overflow: bool = True) -> PassResult:
    """Quantize every row of ``rows`` (2-D) with ``codec`` (one scale per row) and accumulate row statistics.

    ``rows`` may be in any float dtype; tiles are cast to the codec's dtype. Statistics are those of
    :func:`quantcore.metrics.row_stats`: ``n, sse, sae, max_abs, ssx, clipped_low, clipped_high,
    collapsed``. ``row_name(i)`` names row ``i`` in error messages ("block 3"). With
    ``refuse_overflow=False`` a row whose x_hat or sums overflow gets ``sse = inf`` instead of an error
    (a search over candidate ranges skips it). ``keep_raw``: the unclamped integer codes (integer
    elements) or the scaled values fed to the element encoder (float elements).
    """
    dt = codec.dtype
    n_rows, row_len = rows.shape
    stats = {k: np.zeros(n_rows, dtype=np.float64) for k in ("sse", "sae", "ssx")}
    stats["max_abs"] = np.zeros(n_rows, dtype=np.float64)
    for k in ("n", "clipped_low", "clipped_high", "collapsed"):
        stats[k] = np.zeros(n_rows, dtype=np.int64)
    q_out = np.empty(rows.shape, dtype=codec.code_dtype) if keep_codes else None
    raw_out = np.empty(rows.shape, dtype=dt) if keep_raw else None
    for r0, r1, c0, c1 in tiles(n_rows, row_len):
        v = rows[r0:r1, c0:c1]
        if v.dtype != dt:
            v = v.astype(dt)
        t = codec.tile(v, r0, r1)
        if raw_out is not None:
            raw_out[r0:r1, c0:c1] = t.raw
        m = None if valid is None else valid[r0:r1, c0:c1]
        if t.clip_low is not None:
            lo_hit, hi_hit = t.clip_low, t.clip_high
            if m is not None:
                lo_hit &= m
                hi_hit &= m
            stats["clipped_low"][r0:r1] += _row_count(lo_hit)
            stats["clipped_high"][r0:r1] += _row_count(hi_hit)
        if q_out is not None:
            q_out[r0:r1, c0:c1] = t.q
        xhat = t.xhat
        collapsed = t.collapsed if t.collapsed is not None else xhat == 0
        if m is not None:
            collapsed &= m
        if collapsed.any():
            collapsed &= v != 0
            stats["collapsed"][r0:r1] += _row_count(collapsed)
        with np.errstate(over="ignore", invalid="ignore"):
            err = np.subtract(xhat, v, out=xhat)
            if m is not None:
                err *= m
        if m is not None:
            vm = v * m
            stats["n"][r0:r1] += _row_count(m)
        else:
            vm = v
            stats["n"][r0:r1] += c1 - c0
        with np.errstate(over="ignore", invalid="ignore"):
            sse, ssx = _row_sum(err, square=True), _row_sum(vm, square=True)
            np.abs(err, out=err)
            sae, emax = _row_sum(err), err.max(axis=1).astype(np.float64)
        wide = ~np.isfinite(emax)
        if dt == np.float32:
            vmax = np.maximum(vm.max(axis=1), -vm.min(axis=1)).astype(np.float64)
            lo, hi = F32_SUM_RANGE
            wide |= ((emax > 0) & ((emax < lo) | (emax > hi))) | ((vmax > 0) & ((vmax < lo) | (vmax > hi)))
        if wide.any():  # rare: rows of extreme magnitude, measured again in float64
            w = np.flatnonzero(wide)
            sse[w], ssx[w], sae[w], emax[w] = _wide_row_stats(v[w], np.asarray(t.q)[w], codec, r0 + w,
                                                              None if m is None else m[w],
                                                              lambda i: row_name(r0 + int(w[i])), refuse_overflow)
        stats["sse"][r0:r1] += sse
        stats["ssx"][r0:r1] += ssx
        stats["sae"][r0:r1] += sae
        np.maximum(stats["max_abs"][r0:r1], emax, out=stats["max_abs"][r0:r1])
    bad = np.flatnonzero(~(np.isfinite(stats["sse"]) & np.isfinite(stats["ssx"]) & np.isfinite(stats["sae"])))
    if bad.size and not refuse_overflow:
        stats["sse"][bad] = np.inf
    elif bad.size:
        raise ValueError(f"{row_name(int(bad[0]))}: the sum of squared values or errors overflows float64 "
                         f"(largest error {stats['max_abs'][bad[0]]:.3g}); scale the tensor down to measure it")
    return PassResult(stats, q_out, raw_out)


def _wide_row_stats(v: np.ndarray, q: np.ndarray, codec: Codec, rows: np.ndarray, mask: np.ndarray | None,
                    name: Callable[[int], str], refuse: bool = True):
    """Per row (sse, ssx, sae, max |e|) with ``e = x_hat - x`` formed and summed in float64.

    ``x_hat`` itself is computed exactly as the kernel does (the codec's dtype); where it is not finite in
    that dtype the row is refused (ValueError naming it; with ``refuse=False`` its sums are inf): its
    dequantized values do not exist.
    """
    xhat = codec.dequantize(q, rows)
    bad = ~np.isfinite(xhat)
    if mask is not None:
        bad &= mask
    if bad.any() and refuse:
        i, j = (int(k) for k in np.argwhere(bad)[0])
        raise ValueError(f"{name(i)}: {codec.describe(q[i, j], int(rows[i]), float(xhat[i, j]))}")
    x64 = v.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        e = xhat.astype(np.float64) - x64
        if mask is not None:
            e, x64 = np.where(mask, e, 0.0), np.where(mask, x64, 0.0)
        ae = np.abs(e)
        return (np.einsum("ij,ij->i", e, e), np.einsum("ij,ij->i", x64, x64), ae.sum(axis=1),
                ae.max(axis=1, initial=0.0))
