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


def _table_from_whole_tensor(r, limit: int) -> dict[str, np.ndarray]:
    """The per-sample table built from the per-element arrays of the whole tensor (what sample_table did
    before it computed only the channels its rows need)."""
    C = r.canon.n_channels

    def rows(a):
        return r.blocks.to_canonical(a).reshape(C, -1)

    x = r.canon.values.reshape(C, -1)
    valid = np.ones(x.shape, bool) if r.canon.valid is None else r.canon.valid.reshape(C, -1)
    sel = np.flatnonzero(valid.ravel())[:limit]
    return {"channel": np.broadcast_to(np.arange(C)[:, None], x.shape).ravel()[sel],
            "index": (np.cumsum(valid, axis=1) - 1).ravel()[sel], "x": x.ravel()[sel].astype(np.float64),
            "raw_q": rows(r._raw_b).ravel()[sel].astype(np.float64), "q": rows(r._q_b).ravel()[sel],
            "dequantized": rows(r._xhat_b).ravel()[sel].astype(np.float64),
            "clipped": rows(r._clip_sign_b).ravel()[sel], "tie": rows(r.ties_blocks).ravel()[sel]}


RAGGED = [np.linspace(-1, 1, n).astype(np.float32) * (k + 1) for k, n in enumerate((70, 3, 41, 70, 12))]


@pytest.mark.parametrize("spec", [
    qc.QuantSpec(fmt=qc.IntFormat(4), mapping="symmetric", granularity=qc.PerTensor()),
    qc.QuantSpec(fmt=qc.IntFormat(4), mapping="affine", granularity=qc.PerChannel(0), convention="torch"),
    qc.QuantSpec(fmt=qc.IntFormat(3, False), mapping="affine", granularity=qc.PerGroup(16), convention="torch-fake"),
    qc.QuantSpec(fmt=qc.IntFormat(4), mapping="symmetric", granularity=qc.PerGroup(16), rounding="stochastic",
                 seed=3),
    qc.QuantSpec(fmt=qc.IntFormat(8), mapping="symmetric", granularity=qc.PerBlock((3, 16))),
    qc.preset("fp8_e4m3_b128").with_(granularity=qc.PerBlock((3, 16))),
    qc.preset("nvfp4"), qc.preset("fp8_e4m3_channel"), qc.preset("q4_1"), qc.preset("q4_k"),
], ids=lambda s: s.label)
@pytest.mark.parametrize("limit", [1, 37, 300, 10_000])
def test_sample_table_computes_only_its_rows_and_equals_the_whole_tensors(spec, limit):
    """The table of the first ``limit`` values equals the one cut from whole-tensor arrays, for every kind
    of scheme and layout: 2-D tiles whose channels do not fill the last tile, padded groups, ragged rows,
    stochastic rounding (its raw codes come from the pass itself)."""
    data = qc.synthetic(11, 256 if spec.kind == "gguf" else 70, seed=2) * np.float32(3)
    for x in (data, RAGGED) if spec.kind == "int" and not isinstance(spec.granularity, qc.PerBlock) else (data,):
        got = qc.analyze(x, spec).sample_table(limit)
        want = _table_from_whole_tensor(qc.analyze(x, spec), limit)
        for key, value in want.items():
            np.testing.assert_array_equal(got[key], value, err_msg=key)
        assert len(got["x"]) == min(limit, sum(np.size(v) for v in x))
