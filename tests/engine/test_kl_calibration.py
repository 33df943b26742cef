"""KL (entropy) calibration: the per-chunk evaluation in ``quantcore.calibration.kl_range`` chooses the same
threshold as the per-bin definition of ``KL(P || Q)`` it replaced (kept below, verbatim, as the reference)."""
from __future__ import annotations

import numpy as np
import pytest

from quantcore.calibration import KL_MAX_CANDIDATES, kl_range
from quantcore.formats import IntFormat
from quantcore.granularity import BlockView, PerChannel


def kl_reference(hist: np.ndarray, n_q: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Per block and candidate ``i``: ``KL(P || Q)`` bin by bin (quantcore 0.x's loop, before the per-chunk
    rewrite). Returns the chosen ``i``, the KL of every candidate, and the candidates."""
    n_blocks, bins = hist.shape
    start = min(n_q, bins)
    stride = max(1, (bins - start) // KL_MAX_CANDIDATES)
    candidates = list(range(start, bins + 1, stride))
    if candidates[-1] != bins:
        candidates.append(bins)
    best_kl = np.full(n_blocks, np.inf)
    best_i = np.full(n_blocks, bins)
    tail = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]
    every = []
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
        every.append(kl)
        better = kl < best_kl
        best_kl = np.where(better, kl, best_kl)
        best_i = np.where(better, i, best_i)
    return best_i, np.stack(every, axis=1), candidates


def _blocks(x: np.ndarray, valid: np.ndarray | None = None) -> BlockView:
    n, length = x.shape
    return BlockView(x, valid, np.arange(n), PerChannel(0), (n, 1, length), (1, length))


def _histogram(x: np.ndarray, valid: np.ndarray | None, bins: int) -> np.ndarray:
    amax = np.abs(x.astype(np.float64)).max(axis=1)
    safe = np.where(amax > 0, amax, 1.0)
    idx = np.minimum((np.abs(x.astype(np.float64)) / safe[:, None] * bins).astype(np.int64), bins - 1)
    w = None if valid is None else valid.astype(np.float64)
    return np.stack([np.bincount(idx[b], weights=None if w is None else w[b], minlength=bins)
                     for b in range(x.shape[0])])


def _data(kind: str, rng: np.random.Generator) -> np.ndarray:
    shape = (24, 3000)
    if kind == "normal":
        return rng.standard_normal(shape).astype(np.float32)
    if kind == "heavy":        # outliers: the search clips hard
        return rng.standard_t(2.0, shape).astype(np.float32)
    if kind == "sparse":       # most values 0, a few spikes: empty chunks, tail-only bins
        x = np.zeros(shape, np.float32)
        x[rng.random(shape) < 0.01] = rng.standard_normal(int((rng.random(shape) < 0.01).sum()) or 1)[0]
        x[:, 0] = 1.0
        x[:, 1] = rng.uniform(0.5, 1.0, shape[0])
        return x
    if kind == "few":          # a handful of distinct values: exact ties between candidates are common
        return rng.choice(np.array([-3.0, -1.0, 0.0, 0.5, 2.0, 8.0], np.float32), shape)
    x = rng.standard_normal(shape).astype(np.float32)   # "mixed": constant, all-zero, one-value rows
    x[0] = 0.0
    x[1] = 2.5
    x[2, 1:] = 0.0
    return x


@pytest.mark.parametrize("kind", ["normal", "heavy", "sparse", "few", "mixed"])
@pytest.mark.parametrize("bits,bins", [(8, 2048), (4, 256), (8, 128), (2, 64)])
def test_per_chunk_kl_chooses_the_per_bin_threshold(kind, bits, bins):
    rng = np.random.default_rng(abs(hash((kind, bits, bins))) % 2**32)
    x = _data(kind, rng)
    valid = None
    if kind == "mixed":
        valid = rng.random(x.shape) < 0.9
        x = np.where(valid, x, 0).astype(np.float32)
    fmt = IntFormat(bits, True, narrow=True)
    lo0, hi0 = x.min(axis=1), x.max(axis=1)
    lo, hi, ratio = kl_range(_blocks(x, valid), lo0, hi0, fmt, bins)
    hist = _histogram(x, valid, bins)
    want_i, every, candidates = kl_reference(hist, max(fmt.levels // 2, 2))
    amax = np.maximum(np.abs(lo0), np.abs(hi0)).astype(np.float64)
    got_i = np.rint(np.where(amax > 0, ratio, 1.0) * bins - 0.5).astype(int)
    got_i = np.where(amax > 0, got_i, want_i)      # an all-zero row has no threshold to choose
    differ = np.flatnonzero(got_i != want_i)
    for b in differ:   # only where two candidates' KL agree to rounding may the two evaluations part
        k_got, k_want = every[b, candidates.index(got_i[b])], every[b, candidates.index(want_i[b])]
        assert k_got == pytest.approx(k_want, rel=1e-12, abs=1e-15), (b, got_i[b], want_i[b], k_got, k_want)
    threshold = np.minimum((want_i + 0.5) / bins, 1.0) * amax
    keep = got_i == want_i
    assert np.array_equal(lo[keep], np.maximum(lo0, -threshold.astype(np.float32))[keep])
    assert np.array_equal(hi[keep], np.minimum(hi0, threshold.astype(np.float32))[keep])


def test_kl_clips_outliers_and_keeps_a_plain_normal():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 20000)).astype(np.float32)
    x[1, :5] = 60.0                                  # five far outliers in row 1
    lo, hi, ratio = kl_range(_blocks(x), x.min(axis=1), x.max(axis=1), IntFormat(8, True, narrow=True), 2048)
    assert hi[1] < 10.0 < 60.0                       # the outliers are clipped ...
    assert ratio[0] > 0.5                            # ... a plain normal row keeps most of its range


def test_kl_on_more_blocks_than_the_histogram_budget_allows_is_refused_not_turned_into_minmax():
    # Before: 131,072 groups of 32 got 512 bins each (1 GiB arrays, minutes); at 4096 x 4096, 16 bins each,
    # below int8's 127 chunks: the only candidate was the absmax, i.e. min/max presented as KL
    import quantcore as qc
    from quantcore.calibration import KL_MAX_WORK, kl_bins
    assert kl_bins(4096, 2048, 127) == 2048                      # per channel of a 4096-row weight: as asked
    assert kl_bins(KL_MAX_WORK // 256, 2048, 127) == 256         # fewer bins, still more than the chunks
    with pytest.raises(ValueError, match=r"KL calibration of 131,072 blocks: .* at most 64 bins"):
        kl_bins(131_072, 2048, 127)
    x = np.random.default_rng(1).standard_normal((2048, 2048)).astype(np.float32)
    spec = qc.QuantSpec(qc.IntFormat(8, True, narrow=True), qc.PerGroup(32, axis=-1),
                        qc.IntScale("symmetric", range=qc.KLDivergence()))
    with pytest.raises(ValueError, match="use it per tensor or per channel"):
        qc.analyze(x, spec)
