"""The C-arithmetic helpers the quantizers are built on, against their definitions in C terms."""
from __future__ import annotations

import numpy as np

from quantcore.ggml.cmath import best_index, c_int, first_absmax, nearest_int, seq_sum


def test_seq_sum_is_sequential():
    """``seq_sum`` over axis 0 equals ``float s = 0; for (...) s += t[i];`` column by column, on data where
    pairwise or any reordered summation gives other float32 results (large cancelling terms)."""
    rng = np.random.default_rng(0)
    t = (rng.standard_normal((32, 4000)) * np.exp2(rng.integers(-20, 30, (32, 4000)))).astype(np.float32)
    want = np.zeros(t.shape[1], np.float32)
    for i in range(t.shape[0]):                       # the C loop, one float32 add per position
        want = (want + t[i]).astype(np.float32)
    got = seq_sum(t)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    pairwise = np.ascontiguousarray(t.T).sum(axis=1)
    assert (pairwise.view(np.uint32) != want.view(np.uint32)).any()   # the data does tell the orders apart


def test_nearest_int_is_round_half_even_below_2_22_and_the_bit_trick_beyond():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 2.4999998, 4194303.0, -4194303.0], np.float32)
    np.testing.assert_array_equal(nearest_int(x), np.rint(x).astype(np.int32))
    big = np.array([1e30, np.inf, np.nan], np.float32)
    t = (big + np.float32(12582912.0)).view(np.int32)
    np.testing.assert_array_equal(nearest_int(big), (t & 0x7FFFFF) - 0x400000)


def test_c_int_truncates_and_gives_int_min_for_nan_inf_and_overflow():
    x = np.array([2.9, -2.9, np.nan, np.inf, -np.inf, 3e9, -3e9], np.float32)
    assert c_int(x).tolist() == [2, -2] + [-(1 << 31)] * 5


def test_first_absmax_keeps_the_first_and_skips_nan():
    x = np.array([[1.0, -3.0, 3.0, np.nan], [-0.0, 0.0, -0.0, 0.0]], np.float32)
    amax, m = first_absmax(x)
    assert amax[:, 0].tolist() == [3.0, 0.0] and m[0, 0] == -3.0
    assert np.signbit(m[1, 0]) == False  # noqa: E712  (C starts from max = +0.0)


def test_best_index_matches_the_c_binary_search():
    """Against a direct transcription of ``best_index_int8`` on values, midpoints and their neighbours."""
    v = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.int8)

    def c(x):
        if x <= v[0]:
            return 0
        if x >= v[-1]:
            return 15
        ml, mu = 0, 15
        while mu - ml > 1:
            mav = (ml + mu) // 2
            if x < v[mav]:
                mu = mav
            else:
                ml = mav
        return mu - 1 if np.float32(x - np.float32(v[mu - 1])) < np.float32(np.float32(v[mu]) - x) else mu

    mids = (v[:-1].astype(np.float32) + v[1:]) / 2
    x = np.concatenate([v.astype(np.float32), mids, np.nextafter(mids, np.float32(-1e9)), np.nextafter(mids, np.float32(1e9)),
                        np.linspace(-140, 130, 2001, dtype=np.float32), [np.nan]]).astype(np.float32)
    assert best_index(v, x).tolist() == [c(xi) if not np.isnan(xi) else 15 for xi in x]
