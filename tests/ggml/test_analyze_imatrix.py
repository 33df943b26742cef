"""``qc.analyze(x, gguf_preset, imatrix=w)``: the analysis of a GGUF type whose scale search is weighted by an
importance matrix, as llama.cpp's ``quantize_<type>(src, dst, nrows, n_per_row, imatrix)`` does.

Its codes and dequantized values equal llama.cpp's own C (ggml-quants.c from the pinned sdist) on the same rows
and importance matrix, for tensors of more rows than one quantizer tile holds and for 3-D tensors (GGUF rows run
along the last axis). Bad importance matrices are refused with a message naming what is wrong.
"""
from __future__ import annotations

import numpy as np
import pytest

import quantcore as qc
from quantcore.ggml import BLOCK_FORMATS

WEIGHTED = sorted(n for n, t in BLOCK_FORMATS.items() if t.uses_weights or t.row_weighted)


def _tensor(rng, shape):
    x = rng.standard_normal(shape) * rng.lognormal(0, 1, shape[:-1] + (1,))
    x[..., 7] *= 20                                     # an outlier column the imatrix may or may not favour
    return x.astype(np.float32)


def _imatrix(rng, n):
    w = (rng.random(n) * 2).astype(np.float32)
    w[rng.random(n) < 0.2] = 0.0                        # columns the calibration never saw
    return w


@pytest.mark.parametrize("name", WEIGHTED)
def test_codes_and_values_equal_llama_cpp_with_the_same_imatrix(ggml_ref, name):
    t = BLOCK_FORMATS[name]
    rng = np.random.default_rng(abs(t.type_id) + 11)
    n_per_row = 1024
    rows = max(3, (1 << 17) // n_per_row + 5)           # more rows than one quantizer tile: several tiles
    x = _tensor(rng, (rows, n_per_row))
    w = _imatrix(rng, n_per_row)
    r = qc.analyze(x, qc.preset(name), imatrix=w)
    want = ggml_ref.quantize(name.upper(), x, w)
    np.testing.assert_array_equal(r.dequantized.view(np.uint32),
                                  ggml_ref.dequantize(name.upper(), want).reshape(x.shape).view(np.uint32))
    np.testing.assert_array_equal(r.q.reshape(-1, t.block_size), t.codes(want))
    assert r.label.endswith("+ imatrix") and r.imatrix is not None
    plain = qc.analyze(x, qc.preset(name))
    assert not np.array_equal(plain.dequantized, r.dequantized)   # the weights did change the search


def test_a_3d_tensor_is_weighted_along_its_last_axis(ggml_ref):
    rng = np.random.default_rng(5)
    x = _tensor(rng, (3, 4, 512))
    w = _imatrix(rng, 512)
    r = qc.analyze(x, qc.preset("q4_k"), imatrix=w)
    want = ggml_ref.dequantize("Q4_K", ggml_ref.quantize("Q4_K", x.reshape(-1, 512), w))
    np.testing.assert_array_equal(r.dequantized, want.reshape(x.shape))


@pytest.mark.parametrize("imatrix, message", [
    (np.ones(100, np.float32), "has 100 weights; the rows of this tensor .* have 512 elements"),
    (np.ones((2, 256), np.float32), r"one real weight per column; got an array of shape \(2, 256\)"),
    (np.r_[np.ones(5), -1.0, np.ones(506)], "importance weight at column 5 is -1"),
    (np.r_[np.ones(9), np.nan, np.ones(502)], "importance weight at column 9 is nan"),
])
def test_bad_importance_matrices_are_refused_with_what_is_wrong(imatrix, message):
    x = np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32)
    with pytest.raises(ValueError, match=message):
        qc.analyze(x, qc.preset("q4_k"), imatrix=imatrix)


def test_types_and_schemes_without_an_importance_matrix_refuse_one():
    x = np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32)
    w = np.ones(512, np.float32)
    with pytest.raises(ValueError, match="Q8_0 takes no importance matrix"):
        qc.analyze(x, qc.preset("q8_0"), imatrix=w)
    with pytest.raises(ValueError, match="does not take one"):
        qc.analyze(x, qc.preset("nvfp4"), imatrix=w)
    with pytest.raises(ValueError, match="needs rows that are whole 256-element blocks"):
        qc.analyze(x[:, :320], qc.preset("q4_k"), imatrix=w[:320])


def test_the_weighted_search_lowers_the_imatrix_weighted_output_error():
    """What the importance matrix is for: ``imatrix_output_mse`` (mean over rows of sum_j w_j e_j^2, the expected
    squared output error of y = W a for inputs with mean squares w) is lower with the weighted search than with
    the same type's unweighted search, while the plain RMSE may rise. Checked against a direct computation."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 1024)).astype(np.float32)
    w = rng.lognormal(0, 2, 1024).astype(np.float32)        # a few input columns carry most of the activation
    for name in ("q4_k", "q4_0", "iq4_xs"):
        weighted = qc.analyze(x, qc.preset(name), imatrix=w)
        plain = qc.analyze(x, qc.preset(name))
        direct = float(np.mean((weighted.dequantized.astype(np.float64) - x) ** 2 @ w.astype(np.float64)))
        assert weighted.imatrix_output_mse == pytest.approx(direct, rel=1e-12)
        plain_output_mse = float(np.mean((plain.dequantized.astype(np.float64) - x) ** 2 @ w.astype(np.float64)))
        assert weighted.imatrix_output_mse < 0.8 * plain_output_mse, name
        d = weighted.to_dict()["imatrix"]
        assert d == {"columns": 1024, "output_mse": weighted.imatrix_output_mse}
    assert plain.imatrix_output_mse is None and plain.to_dict()["imatrix"] is None


def test_the_weighted_output_error_names_what_it_cannot_measure():
    x = np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32)
    with pytest.raises(ValueError, match="measured for GGUF types .* int8 .* is not one"):
        qc.analyze(x, qc.QuantSpec()).weighted_output_mse(np.ones(512))
    with pytest.raises(ValueError, match="100 importance weights do not match the rows of this tensor \\(512"):
        qc.analyze(x, qc.preset("q4_k")).weighted_output_mse(np.ones(100))
