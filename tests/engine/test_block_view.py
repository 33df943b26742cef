"""The one block view: every granularity (per-tensor, per-channel, per-group, per-block tiles) is an
``(n_blocks, block_len)`` array whose blocks are exactly the elements the granularity groups, with padding
masked, and whose statistics rows reduce to per-block and per-channel sums."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcore.granularity import (PerBlock, PerChannel, PerGroup, PerTensor, block_minmax, block_view, canonical,
                                   count_blocks)


def _reference_tiles(x: np.ndarray, rows: int, cols: int) -> list[np.ndarray]:
    """The tiles of a 2-D array in row-major tile order (a loop: the independent reference)."""
    out = []
    for i in range(0, x.shape[0], rows):
        for j in range(0, x.shape[1], cols):
            out.append(x[i:i + rows, j:j + cols].ravel())
    return out


@pytest.mark.parametrize("shape,tile", [((5, 7), (2, 3)), ((128, 256), (128, 128)), ((3, 3), (4, 4)),
                                        ((6, 9), (1, 9)), ((6, 9), (6, 1))])
def test_per_block_tiles_are_the_2d_tiles_with_edges_masked(shape, tile):
    """Each block holds exactly one tile's elements (edge tiles: their real elements, the rest masked
    padding), and each block's min / max are the tile's."""
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    bv = block_view(canonical(x, np.float32, 0, -1), PerBlock(tile))
    ref = _reference_tiles(x, *tile)
    assert bv.n_blocks == len(ref) == count_blocks(PerBlock(tile), shape)
    valid = np.ones(bv.values.shape, bool) if bv.valid is None else bv.valid
    mn, mx = block_minmax(bv.values)
    for b, t in enumerate(ref):
        assert np.array_equal(np.sort(bv.values[b][valid[b]]), np.sort(t))
        assert (mn[b], mx[b]) == (t.min(), t.max())
    assert np.array_equal(bv.to_canonical(bv.values).reshape(shape), x)


GRANS = [PerTensor(), PerChannel(0), PerChannel(1), PerGroup(4, -1), PerGroup(3, 0), PerBlock((2, 4), (0, -1)),
         PerBlock((3, 2), (1, 0))]


@settings(max_examples=40, deadline=None)
@given(shape=st.tuples(st.integers(1, 7), st.integers(1, 9), st.integers(1, 5)), k=st.integers(0, len(GRANS) - 1))
def test_round_trip_counts_and_reductions(shape, k):
    """For every granularity and a 3-D tensor: the view maps back to the canonical tensor exactly, holds
    ``count_blocks`` blocks, and per-block / per-channel sums over its statistics rows equal the sums over
    the elements the block / channel holds (element counts here: the padding is masked)."""
    g = GRANS[k]
    x = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    if isinstance(g, PerChannel):
        ch, grp = g.axis, None
    elif isinstance(g, PerGroup):
        ch, grp = (1 if g.axis % 3 == 0 else 0), g.axis
    elif isinstance(g, PerBlock):
        ch, grp = g.axes
    else:
        ch, grp = 0, None
    t = canonical(x, np.float64, ch, grp)
    bv = block_view(t, g)
    assert np.array_equal(bv.to_canonical(bv.values), t.values)
    assert bv.n_blocks == count_blocks(g, shape)
    valid = np.ones(bv.values.shape, bool) if bv.valid is None else bv.valid
    rows_valid = bv.rows(valid)
    stats = {"n": rows_valid.sum(axis=1), "max_abs": np.where(rows_valid, bv.rows(bv.values), -1).max(axis=1)}
    per_block = bv.block_stats(stats)
    assert np.array_equal(per_block["n"], valid.sum(axis=1))
    per_channel = bv.channel_stats(stats)
    C = t.values.shape[0]
    assert np.array_equal(per_channel["n"], np.full(C, t.values[0].size))
    assert np.array_equal(per_channel["max_abs"], t.values.reshape(C, -1).max(axis=1))


def test_storage_order_is_the_flat_tensor_order():
    """Blocks in storage order are the consecutive runs of the input with the group axis last, whatever axis
    the channels (of the report) are moved from."""
    x = np.arange(2 * 3 * 8, dtype=np.float64).reshape(2, 3, 8)
    for ch in (0, 1):
        t = canonical(x, np.float64, ch, -1)
        bv = block_view(t, PerGroup(4, -1))
        order = bv.storage_order(t)
        assert np.array_equal(bv.values[order], x.reshape(-1, 4))
    t = canonical(x, np.float64, 2, 0)          # groups along axis 0, channels along the last axis
    bv = block_view(t, PerGroup(2, 0))
    assert np.array_equal(bv.values[bv.storage_order(t)], np.moveaxis(x, 0, -1).reshape(-1, 2))


def test_block_minmax_matches_numpy_on_short_and_long_rows():
    rng = np.random.default_rng(3)
    # (200, 4097): tiles of 127 whole rows, the last one partial
    for w, n in [*itertools.product((1, 7, 32, 64, 300), (1, 63, 5000)), (4097, 200)]:
        v = rng.standard_normal((n, w)).astype(np.float32)
        v[n // 2, w // 2] = np.nan
        mn, mx = block_minmax(v)
        assert np.array_equal(mn, v.min(axis=1), equal_nan=True) and np.array_equal(mx, v.max(axis=1), equal_nan=True)


def test_per_block_needs_two_axes():
    with pytest.raises(ValueError, match="block shape must be two positive integers"):
        PerBlock((128,))
    with pytest.raises(ValueError, match="block shape must be two positive integers"):
        PerBlock((0, 4))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        count_blocks(PerBlock(), (10,))
