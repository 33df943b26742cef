"""Plot data the app ships comes from the engine: per-channel values, grids, histograms."""
from __future__ import annotations

import numpy as np
import pytest

import quantcore as qc


@pytest.mark.parametrize("spec", [
    qc.QuantSpec(fmt=qc.IntFormat(4), mapping="symmetric", granularity=qc.PerTensor()),
    qc.QuantSpec(fmt=qc.IntFormat(4), mapping="affine", granularity=qc.PerChannel(0), convention="torch"),
    qc.QuantSpec(fmt=qc.IntFormat(3, False), mapping="affine_float", granularity=qc.PerGroup(16)),
    qc.preset("q4_1"), qc.preset("q4_0"), qc.preset("q8_0"),
], ids=lambda s: s.label)
def test_every_dequantized_value_lies_on_its_blocks_grid(spec):
    """Each x_hat of a channel is one of the grid levels of the block that holds it."""
    x = qc.synthetic(6, 64, seed=5)
    r = qc.analyze(x, spec)
    xhat = r.dequantized.astype(np.float64)
    block_len = r.blocks.values.shape[1]
    for ch in range(6):
        xs, xh = r.channel_values(ch)
        np.testing.assert_array_equal(xs, x[ch].astype(np.float64))
        np.testing.assert_array_equal(xh, xhat[ch])
        first = r.block_of_channel(ch)
        n_blocks = 1 if isinstance(spec.granularity, qc.PerTensor) else -(-64 // block_len)
        for k in range(n_blocks):
            codes, levels = r.grid(first + k)
            part = xh if n_blocks == 1 else xh[k * block_len:(k + 1) * block_len]
            assert np.isin(part, levels).all()
            assert codes[0] == r.qmin and codes[-1] == r.qmax


def test_ragged_channel_values_drop_padding_and_histogram_counts_real_elements():
    ex = qc.get_example("s0")
    rows = ex.rows[:3] + [ex.rows[3][:2]]      # a shorter last channel
    r = qc.analyze(rows, ex.spec)
    x, xh = r.channel_values(3)
    assert x.tolist() == rows[3].tolist() and xh.shape == (2,)
    h = r.histogram(bins=7)
    assert int(h["count"].sum()) == sum(len(v) for v in rows)
    assert len(h["left"]) == len(h["right"]) == 7


def test_channel_out_of_range_is_a_clear_error():
    r = qc.analyze(qc.get_example("s3").rows, qc.get_example("s3").spec)
    with pytest.raises(ValueError, match="channel 2 is out of range \\(the tensor has 2 channels\\)"):
        r.channel_values(2)


def test_float_formats_have_no_uniform_grid():
    r = qc.analyze(qc.synthetic(2, 64), qc.preset("mxfp4_e2m1"))
    assert r.grid(0) is None
