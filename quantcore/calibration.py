"""Search-based range selection: MSE-optimal clipping and KL (entropy) calibration.

Both are vectorized over blocks; the only Python loop is over candidate clip ratios or thresholds.
Cost is ``steps x n_elements`` for MSE and ``candidates x n_blocks x bins`` for KL.
"""
from __future__ import annotations

import numpy as np

from .conventions import Convention
from .formats import IntFormat
from .granularity import BlockView
from .kernel import quantize_and_measure
from .params import choose_qparams
from .quantize import IntCodec

KL_MAX_CANDIDATES = 64
KL_MAX_WORK = 1 << 26  # n_blocks * bins: beyond it the histogram gets fewer bins (stated in the result)


def mse_optimal_range(blocks: BlockView, lo0: np.ndarray, hi0: np.ndarray, fmt: IntFormat, mapping: str,
                      symmetric_scale: str, conv: Convention, rounding: str, steps: int, per_group: bool = False,
                      fma: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per block, the ratio ``a`` in ``{k/steps}`` minimizing ``sum((x_hat - x)^2)`` over ``[a*min, a*max]``.

    Returns ``(lo, hi, ratio)``. Ties between ratios go to the larger ratio (less clipping). Stochastic
    rounding is searched with half-to-even so the choice does not depend on the random stream. A candidate
    whose scale or dequantized values overflow counts as infinitely wrong (if every candidate of a block
    does, the ratio stays 1 and the analysis refuses that block).
    """
    dt = conv.qparams_dtype
    search_rounding = "half-even" if rounding == "stochastic" else rounding
    best_err = np.full(blocks.n_blocks, np.inf)
    best_ratio = np.ones(blocks.n_blocks)
    qmin, qmax = conv.code_range(fmt)
    for k in range(steps, 0, -1):
        ratio = k / steps
        lo, hi = (lo0 * dt(ratio)).astype(dt), (hi0 * dt(ratio)).astype(dt)
        with np.errstate(over="ignore", invalid="ignore"):  # a candidate whose scale overflows is skipped
            scale, zp = choose_qparams(lo, hi, fmt, mapping, symmetric_scale, conv, per_group)
        finite = np.isfinite(scale)
        if not finite.all():
            scale, zp = np.where(finite, scale, 1), np.where(finite, zp, 0)
        codec = IntCodec(scale, zp, qmin, qmax, conv, search_rounding, fma=fma)
        err = quantize_and_measure(blocks.values, codec, valid=blocks.valid, keep_codes=False,
                                   refuse_overflow=False).stats["sse"]
        err = np.where(finite, err, np.inf)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_ratio = np.where(better, ratio, best_ratio)
    return (lo0 * best_ratio).astype(dt), (hi0 * best_ratio).astype(dt), best_ratio


def kl_range(blocks: BlockView, lo0: np.ndarray, hi0: np.ndarray, fmt: IntFormat,
             bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TensorRT-style entropy calibration of a symmetric threshold ``T`` per block.

    Histogram ``|x|`` over ``[0, amax]``; for each candidate ``i`` (bins kept), the reference ``P`` is
    the first ``i`` bins with everything beyond folded into bin ``i-1``; ``Q`` merges those ``i`` bins
    into ``n_q = levels // 2`` chunks and spreads each chunk's mass evenly over its non-empty bins.
    ``T = (i + 0.5) * bin_width`` minimizing ``KL(P || Q)``. Returns ``(lo, hi, T / amax)`` with the
    range ``[max(min, -T), min(max, T)]`` (``lo0``/``hi0``: the blocks' min and max).
    """
    v = blocks.values.astype(np.float64)
    amax = np.maximum(np.abs(lo0), np.abs(hi0)).astype(np.float64)
    n_blocks = blocks.n_blocks
    bins = int(max(16, min(bins, KL_MAX_WORK // max(n_blocks, 1))))
    n_q = max(fmt.levels // 2, 2)
    safe = np.where(amax > 0, amax, 1.0)
    idx = np.minimum((np.abs(v) / safe[:, None] * bins).astype(np.int64), bins - 1)
    weights = None if blocks.valid is None else blocks.valid.ravel().astype(np.float64)
    flat = (idx + np.arange(n_blocks)[:, None] * bins).ravel()
    hist = np.bincount(flat, weights=weights, minlength=n_blocks * bins).reshape(n_blocks, bins)
    start = min(n_q, bins)
    stride = max(1, (bins - start) // KL_MAX_CANDIDATES)
    candidates = list(range(start, bins + 1, stride))
    if candidates[-1] != bins:
        candidates.append(bins)
    best_kl = np.full(n_blocks, np.inf)
    best_i = np.full(n_blocks, bins)
    tail = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]  # tail[:, i] = sum(hist[:, i:])
    for i in candidates:
        p = hist[:, :i].copy()
        if i < bins:
            p[:, i - 1] += tail[:, i]
        chunk = np.minimum(np.arange(i) * n_q // i, n_q - 1)
        starts = np.flatnonzero(np.diff(np.concatenate(([-1], chunk))))
        sums = np.add.reduceat(hist[:, :i], starts, axis=1)
        nonzero = np.add.reduceat((p != 0).astype(np.float64), starts, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_bin = np.where(nonzero > 0, sums / nonzero, 0.0)
        q = np.where(p != 0, per_bin[:, chunk], 0.0)
        psum, qsum = p.sum(axis=1, keepdims=True), q.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            pn = p / np.where(psum > 0, psum, 1)
            qn = q / np.where(qsum > 0, qsum, 1)
            terms = np.where(pn > 0, pn * np.log(pn / np.where(qn > 0, qn, 1e-12)), 0.0)
        kl = terms.sum(axis=1)
        better = kl < best_kl
        best_kl = np.where(better, kl, best_kl)
        best_i = np.where(better, i, best_i)
    threshold = np.minimum((best_i + 0.5) / bins, 1.0) * amax
    dt = blocks.values.dtype
    lo = np.maximum(lo0, -threshold.astype(dt))
    hi = np.minimum(hi0, threshold.astype(dt))
    return lo, hi, np.where(amax > 0, threshold / safe, 1.0)
