"""Search-based range selection: MSE-optimal clipping and KL (entropy) calibration.

Both are vectorized over blocks; the only Python loop is over candidate clip ratios or thresholds.
Cost is ``steps x n_elements`` for MSE and ``candidates x n_blocks x bins`` for KL. Each is also written as
steps (:mod:`quantcore.steps`): one per candidate, so a caller can stop a long search between them.
"""
from __future__ import annotations

import numpy as np

from .conventions import Convention
from .formats import IntFormat
from .granularity import BlockView
from .kernel import quantize_and_measure
from .params import choose_qparams
from .quantize import IntCodec, tiles
from .steps import Steps, run

KL_MAX_CANDIDATES = 64
KL_HIST_TILE = 1 << 20  # elements histogrammed per step
KL_MAX_WORK = 1 << 23  # n_blocks * bins: beyond it each block's histogram gets fewer bins (64 MiB per float64
                       # (n_blocks, bins) array; the search holds a few, which also bounds memory in the browser)


def mse_optimal_range(*args, **kwargs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`mse_optimal_range_steps` run to its end."""
    return run(mse_optimal_range_steps(*args, **kwargs))


def mse_optimal_range_steps(blocks: BlockView, lo0: np.ndarray, hi0: np.ndarray, fmt: IntFormat, mapping: str,
                            symmetric_scale: str, conv: Convention, rounding: str, steps: int,
                            per_group: bool = False, fma: bool = False
                            ) -> Steps[tuple[np.ndarray, np.ndarray, np.ndarray]]:
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
        yield (steps - k + 1) / steps
    return (lo0 * best_ratio).astype(dt), (hi0 * best_ratio).astype(dt), best_ratio


def kl_bins(n_blocks: int, bins: int, n_q: int) -> int:
    """Histogram bins per block: ``bins``, fewer when ``n_blocks * bins`` would pass ``KL_MAX_WORK``.

    Raises ValueError when that leaves fewer bins than the ``n_q`` chunks ``Q`` merges them into: the search
    would have no threshold to try below the block's absmax, so its answer would be min/max in disguise."""
    fit = KL_MAX_WORK // max(n_blocks, 1)
    if fit < max(n_q, 16):
        raise ValueError(f"KL calibration of {n_blocks:,} blocks: a histogram of at most {fit} bins per block "
                         f"fits the {KL_MAX_WORK:,}-count budget, fewer than the {max(n_q, 16)} the search needs; "
                         f"use it per tensor or per channel, or fewer, larger groups (MSE-optimal works per group)")
    return int(max(16, min(bins, fit)))


def kl_range(blocks: BlockView, lo0: np.ndarray, hi0: np.ndarray, fmt: IntFormat,
             bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`kl_range_steps` run to its end."""
    return run(kl_range_steps(blocks, lo0, hi0, fmt, bins))


def kl_range_steps(blocks: BlockView, lo0: np.ndarray, hi0: np.ndarray, fmt: IntFormat,
                   bins: int) -> Steps[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """TensorRT-style entropy calibration of a symmetric threshold ``T`` per block.

    Histogram ``|x|`` over ``[0, amax]`` (``h``, float64 counts); for each candidate ``i`` (bins kept), the
    reference ``P`` is the first ``i`` bins with everything beyond folded into bin ``i-1``; ``Q`` merges those
    ``i`` bins into ``n_q = levels // 2`` chunks (bin ``j`` in chunk ``min(j * n_q // i, n_q - 1)``) and
    spreads each chunk's histogram mass evenly over its bins where ``P`` is non-zero. ``T = (i + 0.5) *
    bin_width`` minimizing ``KL(P || Q) = sum_{P_j > 0} p_j log(p_j / q_j)`` over the normalised ``p, q``
    (a ``q_j`` of 0 under a non-zero ``p_j`` counts as 1e-12); ties go to the smaller ``i``. Returns ``(lo,
    hi, T / amax)`` with the range ``[max(min, -T), min(max, T)]`` (``lo0``/``hi0``: the blocks' min and max).

    The sum is evaluated per chunk, not per bin: ``p`` equals ``h`` except in bin ``i-1``, ``q`` is constant
    on a chunk's non-zero bins, ``sum p = sum h`` and ``sum q = sum_{j<i} h_j``, so with ``S = sum_j p_j log
    p_j`` (prefix sums of ``h log h``) and ``m_c`` the mass of ``p`` in chunk ``c``,
    ``KL = S / sum p - log(sum p) - sum_c (m_c / sum p) log(q_c)``. Each candidate then costs
    ``n_blocks x n_q`` instead of ``n_blocks x i``: the same value up to float64 rounding
    (``tests/engine/test_kl_calibration.py`` checks the choice against the per-bin formula).
    """
    n_blocks = blocks.n_blocks
    n_q = max(fmt.levels // 2, 2)
    bins = kl_bins(n_blocks, bins, n_q)
    amax = np.maximum(np.abs(lo0), np.abs(hi0)).astype(np.float64)
    safe = np.where(amax > 0, amax, 1.0)
    # counts (exact in float64), tile by tile: a step per tile, and no float64 copy of the whole tensor
    hist = np.zeros((n_blocks, bins))
    pieces = list(tiles(n_blocks, blocks.values.shape[1], KL_HIST_TILE))
    for done, (r0, r1, c0, c1) in enumerate(pieces, 1):
        v = blocks.values[r0:r1, c0:c1].astype(np.float64)
        idx = np.minimum((np.abs(v) / safe[r0:r1, None] * bins).astype(np.int64), bins - 1)
        idx += np.arange(r1 - r0)[:, None] * bins
        weights = None if blocks.valid is None else blocks.valid[r0:r1, c0:c1].ravel().astype(np.float64)
        hist[r0:r1] += np.bincount(idx.ravel(), weights=weights, minlength=(r1 - r0) * bins).reshape(-1, bins)
        # progress in rough shares of the time: histograms 0.2, prefix sums 0.3, candidates 0.5 (2048 x 1024
        # per channel: 0.4 / 1.2 / 0.1 s; per group of 32: 0.3 / 1.5 / 3 s)
        yield 0.2 * done / len(pieces)
    start = min(n_q, bins)
    stride = max(1, (bins - start) // KL_MAX_CANDIDATES)
    candidates = list(range(start, bins + 1, stride))
    if candidates[-1] != bins:
        candidates.append(bins)

    def prefix(a: np.ndarray) -> np.ndarray:   # prefix[:, k] = sum(a[:, :k])
        out = np.zeros((n_blocks, bins + 1))
        np.cumsum(a, axis=1, out=out[:, 1:])
        return out

    mass = prefix(hist)
    yield 0.3
    nonzero = prefix((hist != 0).astype(np.float64))
    yield 0.4
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = prefix(np.where(hist > 0, hist * np.log(np.where(hist > 0, hist, 1.0)), 0.0))
    yield 0.5
    total = mass[:, bins]
    total_safe = np.where(total > 0, total, 1.0)
    rows = np.arange(n_blocks)
    best_kl = np.full(n_blocks, np.inf)
    best_i = np.full(n_blocks, bins)
    for done, i in enumerate(candidates, 1):
        chunk = np.minimum(np.arange(i) * n_q // i, n_q - 1)
        starts = np.flatnonzero(np.diff(np.concatenate(([-1], chunk))))
        ends = np.append(starts[1:], i)
        last = hist[rows, i - 1]
        p_last = last + (total - mass[:, i])                       # bin i-1 with the tail folded in
        sums = mass[:, ends] - mass[:, starts]                      # histogram mass per chunk
        count = nonzero[:, ends] - nonzero[:, starts]               # bins where p != 0, per chunk ...
        count[:, -1] += (p_last != 0).astype(np.float64) - (last != 0)   # ... bin i-1 counted by p
        p_mass = sums.copy()
        p_mass[:, -1] += p_last - last
        q_sum = mass[:, i]
        with np.errstate(divide="ignore", invalid="ignore"):
            q_norm = np.where(count > 0, sums / count, 0.0) / np.where(q_sum > 0, q_sum, 1.0)[:, None]
            log_q = np.log(np.where(q_norm > 0, q_norm, 1e-12))
            s = plogp[:, i - 1] + np.where(p_last > 0, p_last * np.log(np.where(p_last > 0, p_last, 1.0)), 0.0)
            kl = s / total_safe - np.log(total_safe) - (p_mass * log_q).sum(axis=1) / total_safe
        kl = np.where(total > 0, kl, 0.0)
        better = kl < best_kl
        best_kl = np.where(better, kl, best_kl)
        best_i = np.where(better, i, best_i)
        yield 0.5 + 0.5 * done / len(candidates)
    threshold = np.minimum((best_i + 0.5) / bins, 1.0) * amax
    dt = blocks.values.dtype
    lo = np.maximum(lo0, -threshold.astype(dt))
    hi = np.minimum(hi0, threshold.astype(dt))
    return lo, hi, np.where(amax > 0, threshold / safe, 1.0)
