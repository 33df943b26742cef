"""``GGMLType.clip_counts`` counts exactly what ``raw_codes`` marks as clipped, for every registered type.

The analyser counts clipped elements with ``clip_counts`` (a float32 prefilter, then exact float64
positions for the candidates only) instead of forming every element's float64 position. The property:
per block, its counts equal ``count(raw_codes(...) > qmax)`` and ``count(... < qmin)``, also for elements
that sit within float32 ulps of a sub-block's clipping boundary, where float64 rounding of
``(x + min) / scale`` decides.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from quantcore.ggml import BLOCK_FORMATS

TYPES = sorted(BLOCK_FORMATS)


def _reference_counts(t, x, scale, mn, valid=None):
    codes = np.full(x.shape, t.qmin, np.int16)          # in range: only the clipped elements leave it
    raw = t.raw_codes(codes, t.position(x, scale, mn))
    lo, hi = raw < t.qmin, raw > t.qmax
    if valid is not None:
        lo, hi = lo & valid, hi & valid
    return np.count_nonzero(lo, axis=1), np.count_nonzero(hi, axis=1)


def _boundary_blocks(t, rng, n_blocks=64):
    """Random float32 sub-block scales (both signs, some 0) and mins, and elements placed on and within
    a few float32 ulps of each sub-block's two clipping ends, plus ordinary and far-out elements."""
    n_sub = t.block_size // t.sub_block_size
    scale = (rng.choice([-1.0, 1.0], (n_blocks, n_sub)) * 10.0 ** rng.uniform(-6, 3, (n_blocks, n_sub))
             ).astype(np.float32)
    scale[rng.random(scale.shape) < 0.05] = 0
    g = np.unique(t.grid_values())
    ends = np.array([g[0] - 0.5 * (g[1] - g[0]), g[-1] + 0.5 * (g[-1] - g[-2])])
    mn = None
    if t.stores_min():
        mn = (rng.standard_normal((n_blocks, n_sub)) * np.abs(scale) * 20).astype(np.float32)
        # a third of the sub-blocks have an end near x = 0: the end cancels, float64 rounding decides
        near_zero = rng.random(mn.shape) < 0.3
        mn = np.where(near_zero, (ends[rng.integers(0, 2, mn.shape)] * scale).astype(np.float32), mn)
    s64 = scale.astype(np.float64)[:, :, None]
    m64 = 0.0 if mn is None else mn.astype(np.float64)[:, :, None]
    end_x = ends[rng.integers(0, 2, (n_blocks, n_sub, t.sub_block_size))] * s64 - m64
    x = end_x.astype(np.float32)
    steps = rng.integers(-3, 4, x.shape)                # walk 0..3 float32 ulps either way
    for k in range(3):
        x = np.where(np.abs(steps) > k, np.nextafter(x, np.where(steps > 0, np.inf, -np.inf).astype(np.float32)), x)
    kind = rng.random(x.shape)
    ordinary = (rng.uniform(g[0], g[-1], x.shape) * s64 - m64).astype(np.float32)
    x = np.where(kind < 0.2, ordinary, x)
    x = np.where(kind > 0.95, (end_x * 3 + np.sign(end_x)).astype(np.float32), x)
    tiny = rng.choice([-1.0, 1.0], x.shape) * np.abs(s64) * 10.0 ** rng.uniform(-20, -6, x.shape)
    x = np.where((kind > 0.2) & (kind < 0.35), tiny.astype(np.float32), x)
    return x.reshape(n_blocks, t.block_size), scale, mn


@pytest.mark.parametrize("name", TYPES)
def test_clip_counts_equal_raw_codes_at_the_boundaries(name):
    t = BLOCK_FORMATS[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    for _ in range(4):
        x, scale, mn = _boundary_blocks(t, rng)
        want = _reference_counts(t, x, scale, mn)
        got = t.clip_counts(x, scale, mn)
        assert sum(int(w.sum()) for w in want) > 0      # the data does clip
        np.testing.assert_array_equal(got[0], want[0], err_msg=f"{name}: clipped low")
        np.testing.assert_array_equal(got[1], want[1], err_msg=f"{name}: clipped high")


@pytest.mark.parametrize("name", ["q4_0", "q5_k", "iq4_nl"])
def test_clip_counts_skip_padding(name):
    t = BLOCK_FORMATS[name]
    x, scale, mn = _boundary_blocks(t, np.random.default_rng(7))
    valid = np.random.default_rng(8).random(x.shape) < 0.7
    want = _reference_counts(t, x, scale, mn, valid)
    got = t.clip_counts(x, scale, mn, valid)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_an_element_a_hair_inside_the_grid_by_float32_but_outside_by_float64_counts():
    """Q5_K sub-block with scale 5.6445312 and min 177.80273: its upper end 31.5*scale - min is ~0 and
    an element of 2.5e-13 lies at position 31.5 + 4e-14 (clipped); a prefilter that widened the in-grid
    interval instead of narrowing it missed such elements."""
    t = BLOCK_FORMATS["q5_k"]
    n_sub = t.block_size // t.sub_block_size
    scale = np.full((1, n_sub), 5.6445312, np.float32)
    mn = np.full((1, n_sub), 177.80273, np.float32)
    x = np.zeros((1, t.block_size), np.float32)
    x[0, :8] = [2.45614428e-13, 9.2e-12, 6.7e-10, 1e-20, -1e-20, 0.0, 3e-13, -3e-13]
    want = _reference_counts(t, x, scale, mn)
    assert want[1][0] > 0
    got = t.clip_counts(x, scale, mn)
    assert (got[0][0], got[1][0]) == (want[0][0], want[1][0])
