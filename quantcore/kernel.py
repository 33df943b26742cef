"""Fused, cache-tiled quantize + measure pass: the one statistics pass of every integer, float and
codebook scheme (GGUF types, whose bytes come from their own classes, are measured from their
reconstruction with :func:`quantcore.metrics.row_stats`).

Quantizing and measuring a tensor takes about twenty elementwise numpy operations. Run one after the
other over a 64 MB tensor, each streams the whole tensor through memory; run on tiles of ``codec.max_tile``
elements (64 Ki for float elements, 128 Ki for integers: a few hundred KB to a few MB, resident in L2 / L3),
only the first read of each tile touches memory. The
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
can overflow too). Such "wide" rows are looked for only in tiles whose row sums allow one
(:func:`_may_hold_wide_rows`, a sound test on the sums already computed), so ordinary tiles pay for no
per-row maximum of ``|x|``. A dequantized value that is not finite in the working dtype (e.g. code -128 times a
scale of amax / 127.5 with amax near float32's maximum) and a sum that overflows float64 are refused with
a ValueError naming the row (block or channel): no inf or NaN is ever reported as a result.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np

from .quantize import FloatCodec, IntCodec, tiles

Codec = Union[IntCodec, FloatCodec]

PARTIAL = 256  # float32 partial sums run over at most this many elements, then accumulate in float64
F32_SUM_RANGE = (2.0 ** -50, 2.0 ** 56)  # row maxima for which float32 partial sums of squares are exact enough


def _row_sum(a: np.ndarray, square: bool = False) -> np.ndarray:
    """Per-row sum (of squares), returned in float64.

    float32 rows are summed in float32 runs of at most ``PARTIAL`` terms (rows of up to 256 terms
    directly, longer rows whose length is a multiple of 256 in runs of 256) and the partial sums are
    added in float64: relative error at most 256 * 2**-24 (1.5e-5) in the worst case, ~1e-7 in
    practice, at SIMD speed (``einsum``: numpy's ``sum(axis=1)`` walks a short row several times slower).
    Other rows (float64, or odd lengths) are summed in float64.
    """
    rows, n = a.shape
    if a.dtype == np.float32 and n <= PARTIAL:
        part = _sum_squares(a) if square else np.einsum("ij->i", a)
        return part.astype(np.float64)
    if a.dtype == np.float32 and n % PARTIAL == 0:
        p = a.reshape(-1, PARTIAL)
        part = _sum_squares(p) if square else np.einsum("ij->i", p)
        return part.reshape(rows, -1).sum(axis=1, dtype=np.float64)
    if square:
        return np.einsum("ij,ij->i", a, a, dtype=np.float64)
    return a.sum(axis=1, dtype=np.float64)


# Per-row float32 sums of squares. Natively ``vecdot`` runs numpy's BLAS-backed dot (twice as fast as einsum on
# rows of 256); Pyodide's numpy has no BLAS, and there its dot loop is slower than einsum's. Either sums a row
# in float32 in its own order: the bound of _row_sum (at most 256 terms) holds for both.
_sum_squares = ((lambda a: np.einsum("ij,ij->i", a, a)) if sys.platform == "emscripten"
                else (lambda a: np.vecdot(a, a)))


SHORT_ROW = 64  # rows shorter than this are reduced on a transposed copy (contiguous along the reduction)


def _row_abs_max(a: np.ndarray, scratch: np.ndarray, absolute: bool = True) -> np.ndarray:
    """Per-row max of ``|a|`` (``absolute``) or of ``a`` (already non-negative), in ``a``'s dtype. numpy reduces a
    short row one row at a time; below :data:`SHORT_ROW` elements the tile is transposed into ``scratch``
    (at least ``a.size`` elements of ``a``'s dtype) and reduced along its contiguous axis, which is several
    times faster and exact (a maximum does not depend on order)."""
    rows, n = a.shape
    if n >= SHORT_ROW or rows < SHORT_ROW or scratch.dtype != a.dtype:
        return np.abs(a).max(axis=1) if absolute else a.max(axis=1)
    t = scratch[:a.size].reshape(n, rows)
    np.copyto(t, a.T)
    if absolute:
        np.abs(t, out=t)
    return np.maximum.reduce(t, axis=0)


def _row_count(mask: np.ndarray) -> np.ndarray | int:
    """Per-row count of True; a cheap global count first, since most masks are all False.

    ``count_nonzero(axis=1)`` is slow on short and on long rows alike, so: rows of at most 255 elements are
    summed as uint8 (``einsum``; no overflow); rows whose length is a multiple of :data:`COUNT_WORDS` bytes
    are summed as uint64 words of 8 mask bytes, 128 words at a time, so every byte lane of a word sum counts
    at most 128 (no carry into the next lane), and the lanes are then added as bytes. Exact in every case.
    """
    total = np.count_nonzero(mask)
    if total == 0:
        return 0
    rows, n = mask.shape
    if rows == 1:
        return total
    if n <= 255:
        return np.einsum("ij->i", mask.view(np.uint8)).astype(np.int64)
    if n % COUNT_WORDS == 0 and mask.flags.c_contiguous:
        words = np.add.reduce(mask.view(np.uint64).reshape(rows, -1, 128), axis=2)
        return words.view(np.uint8).reshape(rows, -1).sum(axis=1, dtype=np.int64)
    return np.count_nonzero(mask, axis=1)


COUNT_WORDS = 8 * 128  # mask bytes per uint64 word sum of _row_count (each byte lane counts <= 128)


def _total_count(mask: np.ndarray) -> int:
    return np.count_nonzero(mask)


def _may_hold_wide_rows(sse: np.ndarray, ssx: np.ndarray, sae: np.ndarray, n: int, float32: bool) -> bool:
    """Could any row of this tile be a "wide" row (module docstring)? Decided from the per-row sums alone (float32
    partial sums, monotone in their terms: a sum is at least its largest term), as a sound over-approximation:
    a non-finite error makes ``sse`` non-finite; a maximum above ``hi`` makes the sum of squares at least
    ``hi**2``; a nonzero maximum error below ``lo`` makes ``0 < sae < 2 n lo`` (a sum of absolute values
    cannot underflow to 0); a maximum |x| below ``lo`` makes ``ssx < 2 n lo**2`` (including 0: an all-zero
    row, or squares that underflowed). False means no row is wide; True sends the tile to the exact per-row
    test, which then finds the same rows as the per-row pass."""
    if not float32:   # float64 rows: only non-finite values are wide
        return not (np.isfinite(sse).all() and np.isfinite(ssx).all())
    lo, hi = F32_SUM_RANGE
    big = hi * hi
    # maxima and minima of the short per-row arrays (a NaN makes a comparison False: then wide)
    if not (sse.max() < big and ssx.max() < big and ssx.min() >= 2.0 * n * lo * lo):
        return True
    return sae.min() < 2.0 * n * lo and bool(np.any((sae > 0) & (sae < 2.0 * n * lo)))


@dataclass
class PassResult:
    stats: dict[str, np.ndarray]   # additive per-row statistics (see metrics.ROW_FIELDS)
    q: np.ndarray | None           # integer codes, same shape as the rows array
    raw: np.ndarray | None         # unclamped codes in the working dtype (kept only when asked)
    boundary: np.ndarray | None = None  # float elements: boundary flags (kept only when asked)


def quantize_and_measure(rows: np.ndarray, codec: Codec, valid: np.ndarray | None = None, keep_codes: bool = True,
                         keep_raw: bool = False, row_name: Callable[[int], str] = lambda r: f"row {r}",
                         refuse_overflow: bool = True, totals: bool = False, keep_boundary: bool = False
                         ) -> PassResult:
    """Quantize every row of ``rows`` (2-D) with ``codec`` (one scale per row) and accumulate row statistics.

    ``rows`` may be in any float dtype; tiles are cast to the codec's dtype. Statistics are those of
    :func:`quantcore.metrics.row_stats`: ``n, sse, sae, max_abs, ssx, clipped_low, clipped_high,
    collapsed``. ``row_name(i)`` names row ``i`` in error messages ("block 3"). With
    ``refuse_overflow=False`` a row whose x_hat or sums overflow gets ``sse = inf`` instead of an error
    (a search over candidate ranges skips it). ``keep_raw``: the unclamped integer codes (integer
    elements) or the scaled values fed to the element encoder (float elements). ``keep_boundary`` (float and
    codebook codecs): the boundary flags of :class:`quantcore.floatfmt.Encoded` per element, computed in the
    same encoder run (no second pass).

    ``totals=True`` (the scan's metrics-only pass): the statistics are summed over every row (arrays of
    length 1). Each row's float32 partial sums are the same as per row, added in float64 in another order
    (so totals agree to ~1e-16 relative); per-row maxima are computed only in tiles that may hold a wide row
    (:func:`_may_hold_wide_rows`), so the same rows are measured again in float64.
    """
    dt = codec.dtype
    n_rows, row_len = rows.shape
    n_out = 1 if totals else n_rows
    count = _total_count if totals else _row_count
    stats = {k: np.zeros(n_out, dtype=np.float64) for k in ("sse", "sae", "ssx")}
    stats["max_abs"] = np.zeros(n_out, dtype=np.float64)
    for k in ("n", "clipped_low", "clipped_high", "collapsed"):
        stats[k] = np.zeros(n_out, dtype=np.int64)
    q_out = np.empty(rows.shape, dtype=codec.code_dtype) if keep_codes else None
    raw_out = np.empty(rows.shape, dtype=dt) if keep_raw else None
    if keep_boundary and not isinstance(codec, FloatCodec):
        raise ValueError("boundary flags are computed by float and codebook codecs only")
    boundary_out = np.empty(rows.shape, dtype=bool) if keep_boundary else None
    direct = isinstance(codec, FloatCodec)
    tile_len = min(rows.size, codec.max_tile)
    scratch = np.empty(tile_len, dtype=dt) if row_len < SHORT_ROW else np.empty(0, dt)
    masks = [np.empty(tile_len, bool) for _ in range(2)]
    for r0, r1, c0, c1 in tiles(n_rows, row_len, codec.max_tile):
        at = slice(0, 1) if totals else slice(r0, r1)
        v = rows[r0:r1, c0:c1]
        if v.dtype != dt:
            v = v.astype(dt)
        if direct:  # the float encoder writes codes and flags into the results (a tile is contiguous)
            t = codec.tile(v, r0, r1, codes_out=None if q_out is None else q_out[r0:r1, c0:c1],
                           boundary_out=None if boundary_out is None else boundary_out[r0:r1, c0:c1])
        else:
            t = codec.tile(v, r0, r1)
        if raw_out is not None:
            raw_out[r0:r1, c0:c1] = t.raw
        m = None if valid is None else valid[r0:r1, c0:c1]
        if t.clip_low is not None:
            lo_hit, hi_hit = t.clip_low, t.clip_high
            if m is not None:
                lo_hit &= m
                hi_hit &= m
            stats["clipped_low"][at] += count(lo_hit)
            stats["clipped_high"][at] += count(hi_hit)
        if q_out is not None and not direct:
            q_out[r0:r1, c0:c1] = t.q
        xhat = t.xhat
        if t.collapsed is not None:
            collapsed = t.collapsed
        else:
            collapsed = np.equal(xhat, 0, out=masks[0][:xhat.size].reshape(xhat.shape))
        if m is not None:
            collapsed &= m
        if collapsed.any():
            collapsed &= np.not_equal(v, 0, out=masks[1][:v.size].reshape(v.shape))
            stats["collapsed"][at] += count(collapsed)
        with np.errstate(over="ignore", invalid="ignore"):
            err = np.subtract(xhat, v, out=xhat)
            if m is not None:
                err *= m
        if m is not None:
            vm = v * m
            stats["n"][at] += count(m)
        else:
            vm = v
            stats["n"][at] += (c1 - c0) * ((r1 - r0) if totals else 1)
        with np.errstate(over="ignore", invalid="ignore"):
            sse, ssx = _row_sum(err, square=True), _row_sum(vm, square=True)
            np.abs(err, out=err)
            sae = _row_sum(err)
            maybe_wide = _may_hold_wide_rows(sse, ssx, sae, c1 - c0, dt == np.float32)
            if totals and not maybe_wide:
                emax = np.float64(err.max())
            else:
                emax = _row_abs_max(err, scratch, absolute=False).astype(np.float64)
            if maybe_wide:
                wide = ~np.isfinite(emax)
                if dt == np.float32:
                    vmax = _row_abs_max(vm, scratch).astype(np.float64)
                    lo, hi = F32_SUM_RANGE
                    wide |= ((emax > 0) & ((emax < lo) | (emax > hi))) | ((vmax > 0) & ((vmax < lo) | (vmax > hi)))
                if wide.any():  # rare: rows of extreme magnitude, measured again in float64
                    w = np.flatnonzero(wide)
                    sse[w], ssx[w], sae[w], emax[w] = _wide_row_stats(
                        v[w], np.asarray(t.q)[w], codec, r0 + w, None if m is None else m[w],
                        lambda i: row_name(r0 + int(w[i])), refuse_overflow)
        if totals:
            sse, ssx, sae, emax = sse.sum(), ssx.sum(), sae.sum(), emax.max()
        stats["sse"][at] += sse
        stats["ssx"][at] += ssx
        stats["sae"][at] += sae
        np.maximum(stats["max_abs"][at], emax, out=stats["max_abs"][at])
    bad = np.flatnonzero(~(np.isfinite(stats["sse"]) & np.isfinite(stats["ssx"]) & np.isfinite(stats["sae"])))
    if bad.size and not refuse_overflow:
        stats["sse"][bad] = np.inf
    elif bad.size:
        where = "the tensor" if totals else row_name(int(bad[0]))
        raise ValueError(f"{where}: the sum of squared values or errors overflows float64 "
                         f"(largest error {stats['max_abs'][bad[0]]:.3g}); scale the tensor down to measure it")
    return PassResult(stats, q_out, raw_out, boundary_out)


def quantize_codes(rows: np.ndarray, codec: Codec) -> np.ndarray:
    """The codes of :func:`quantize_and_measure` alone (same tiles, same per-element arithmetic), without
    dequantizing or measuring: what an export of the quantized tensor needs."""
    dt = codec.dtype
    q = np.empty(rows.shape, dtype=codec.code_dtype)
    for r0, r1, c0, c1 in tiles(*rows.shape, codec.max_tile):
        v = rows[r0:r1, c0:c1]
        q[r0:r1, c0:c1] = codec.tile(v if v.dtype == dt else v.astype(dt), r0, r1, xhat=False).q
    return q


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
