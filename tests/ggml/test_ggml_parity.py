"""Every registered GGML type against llama.cpp's own C quantizers (the strongest check: bytes).

Oracle: ggml-quants.c from the llama-cpp-python 0.3.36 sdist, compiled by tests/oracles/ggml_ref.py
(``quantize_<type>(src, dst, nrows, n_per_row, imatrix)`` and ``dequantize_row_<type>``). For each type
and data set the quantized blocks must be byte-identical (with and without an importance matrix for
the types that take one) and the dequantized float32 values bit-identical, on our bytes and on C's.
Data sets: random normal with log-normal row scales, outlier-heavy blocks, values on a half-integer
grid times powers of two (exact rounding ties) mixed with their float32 neighbours (near-ties),
all-zero / constant / one-nonzero / one-sign blocks, tiny values whose scale is a float32 subnormal,
and large magnitudes (+-1e30, and +-1e38 where float32 intermediates overflow to inf).
"""
from __future__ import annotations

import numpy as np
import pytest

import quantcore.ggml.base as ggml_base
from quantcore import analyze, preset
from quantcore.ggml import BLOCK_FORMATS, GGML_TYPES

NAMES = [t.name for t in BLOCK_FORMATS.values()]
N_PER_ROW = 1024


def _normal(rng, rows=256):
    return rng.standard_normal((rows, N_PER_ROW)) * np.exp(rng.normal(0, 2, (rows, 1)))


def _outliers(rng):
    x = rng.standard_normal((32, N_PER_ROW))
    v = x.reshape(-1, 32)
    for _ in range(2):  # two huge values (50 to 1000 sigma, either sign) in every run of 32
        v[np.arange(len(v)), rng.integers(0, 32, len(v))] = rng.choice([-1, 1], len(v)) * rng.uniform(50, 1000, len(v))
    return x


def _ties(rng):
    """Half-integers times a power of two per row: x/d lands exactly on .5 whenever d is a power of two,
    and equal candidate errors occur in the searches; a third of the elements moved one ulp."""
    x = (rng.integers(-16, 17, (32, N_PER_ROW)) * 0.5 * np.exp2(rng.integers(-8, 8, (32, 1)))).astype(np.float32)
    step = rng.integers(-1, 2, x.shape)
    x = np.where(step < 0, np.nextafter(x, np.float32(-np.inf)), np.where(step > 0, np.nextafter(x, np.float32(np.inf)), x))
    x[::4] = np.round(x[::4])   # some rows exactly on the grid
    return x


def _special(rng):
    rows = np.zeros((16, N_PER_ROW))
    rows[1] = 0.75                                  # constant positive
    rows[2] = -3.25                                 # constant negative
    rows[3, ::32] = rng.normal(size=N_PER_ROW // 32)      # one nonzero per 32
    rows[4, 100] = -2.0                             # one nonzero in the row
    rows[5] = np.where(np.arange(N_PER_ROW) % 2, 1.0, -1.0)
    rows[6] = np.abs(rng.normal(size=N_PER_ROW)) + 0.1    # all positive (min > 0)
    rows[7] = -np.abs(rng.normal(size=N_PER_ROW)) - 0.1   # all negative
    rows[8, ::256] = 1.0
    rows[9] = rng.integers(0, 2, N_PER_ROW)         # zeros and ones
    rows[10] = -0.0                                 # negative zeros
    rows[11, :512] = rng.normal(size=512)           # half the row zero
    rows[12] = rng.normal(size=N_PER_ROW) * 1e-20   # small but normal
    rows[13] = np.linspace(-1, 1, N_PER_ROW)
    rows[14] = np.repeat(rng.normal(size=N_PER_ROW // 16), 16)  # constant sub-blocks of 16
    rows[15] = np.repeat(rng.normal(size=N_PER_ROW // 32), 32)  # constant sub-blocks of 32
    return rows


def _tiny(rng):
    x = rng.standard_normal((16, N_PER_ROW)) * np.exp2(rng.integers(-150, -120, (16, 1)))
    x[0] = 0.0
    x[0, 5] = -3e-39
    x[1] = 0.0
    x[1, ::40] = 1e-45                              # the smallest subnormal
    return x


def _huge(rng):
    x = rng.standard_normal((8, N_PER_ROW)) * 1e30
    x[1] = np.sign(x[1]) * 1e30
    x[2, ::17] = 3e38                               # squares and sums overflow to inf in float32
    x[3] = rng.uniform(-3.4e38, 3.4e38, N_PER_ROW)       # up to the float32 limit
    return x


DATASETS = {"normal": _normal, "outliers": _outliers, "ties": _ties, "special": _special, "tiny": _tiny,
            "huge": _huge}


def _imatrices(rng):
    dense = (rng.random(N_PER_ROW) * 2).astype(np.float32)
    sparse = dense.copy()
    sparse[rng.random(N_PER_ROW) < 0.3] = 0.0      # columns llama.cpp's imatrix never saw
    return {"imatrix": dense, "imatrix-sparse": sparse}


def _first_diff(a: np.ndarray, b: np.ndarray) -> str:
    bad = np.flatnonzero((a != b).any(axis=1))
    if not bad.size:
        return ""
    i = bad[0]
    return f"{bad.size} of {len(a)} blocks differ, first block {i} at bytes {np.flatnonzero(a[i] != b[i])[:12].tolist()}"


@pytest.mark.parametrize("dataset", list(DATASETS))
@pytest.mark.parametrize("name", NAMES)
def test_bytes_and_values_match_llama_cpp(ggml_ref, name, dataset):
    t = GGML_TYPES[name]
    rng = np.random.default_rng([t.type_id, list(DATASETS).index(dataset)])
    x = DATASETS[dataset](rng).astype(np.float32)
    cases = {"no imatrix": None}
    if t.uses_weights or t.row_weighted:
        cases.update(_imatrices(rng))
    for what, im in cases.items():
        want = ggml_ref.quantize(name, x, im)
        got = t.quantize_rows(x, im).reshape(-1, t.type_size)
        assert got.shape == want.shape
        assert not _first_diff(got, want), f"{name} {dataset} {what}: {_first_diff(got, want)}"
        ours, theirs = t.dequantize(got), ggml_ref.dequantize(name, got)
        np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32),
                                      err_msg=f"{name} {dataset} {what}: dequantized values")
        print(f"{name:7s} {dataset:9s} {what:15s} {len(got):6d} blocks, 0 byte mismatches")


@pytest.mark.parametrize("name", ["MXFP4"])
def test_mxfp4_shared_exponent_at_every_power_of_two(ggml_ref, name):
    """floorf(log2f(max|x|)) at 2^k and one ulp either side, k = -149..127: our float64 log2 rounded
    to float32 agrees with glibc's log2f on every one of them (the floor is what the byte stores)."""
    t = GGML_TYPES[name]
    p = np.exp2(np.arange(-149, 128, dtype=np.float64)).astype(np.float32)
    amax = np.concatenate([p, np.nextafter(p, np.float32(0)), np.nextafter(p, np.float32(np.inf))])
    amax = amax[np.isfinite(amax) & (amax > 0)]
    x = np.zeros((len(amax), 32), np.float32)
    x[:, 0] = amax
    x[:, 1:] = amax[:, None] * np.linspace(-0.9, 0.9, 31, dtype=np.float32)
    want = ggml_ref.quantize(name, x.reshape(1, -1))
    got = t.quantize(x)
    assert not _first_diff(got, want), _first_diff(got, want)


@pytest.mark.parametrize("name", NAMES)
def test_quantize_does_not_depend_on_the_tile(ggml_ref, name, monkeypatch):
    t = GGML_TYPES[name]
    x = _normal(np.random.default_rng(3), rows=8).astype(np.float32)
    want = ggml_ref.quantize(name, x)
    monkeypatch.setattr(ggml_base, "QUANT_TILE_ELEMENTS", t.block_size * 3)   # 3 blocks per tile
    assert not _first_diff(t.quantize(x.reshape(-1, t.block_size)), want)


@pytest.mark.parametrize("name", NAMES)
def test_gguf_py_decodes_our_bytes(gguf_quants, name):
    """gguf-py 0.19's ``gguf.quants.dequantize`` reads our bytes to the same float32 values, and where
    gguf-py can quantize (Q4_0..Q8_0, TQ1_0, TQ2_0, MXFP4) it writes the same bytes."""
    t = GGML_TYPES[name]
    qtype = getattr(gguf_quants.GGMLQuantizationType, name)
    assert gguf_quants.GGML_QUANT_SIZES[qtype] == (t.block_size, t.type_size) and int(qtype) == t.type_id
    rng = np.random.default_rng(t.type_id)
    x = np.concatenate([_normal(rng, 16), _special(rng), _outliers(rng)[:8]]).astype(np.float32)
    ours = t.quantize(x.reshape(-1, t.block_size))
    theirs = gguf_quants.quants.dequantize(ours.reshape(x.shape[0], -1), qtype).reshape(-1, t.block_size)
    np.testing.assert_array_equal(t.dequantize(ours).view(np.uint32), theirs.astype(np.float32).view(np.uint32))
    try:
        packed = gguf_quants.quants.quantize(x, qtype).reshape(ours.shape)
    except NotImplementedError:
        return
    # All-zero blocks aside: on a block of zeros holding a -0.0, C keeps max = +0.0 (``amax < fabsf(v)``
    # never holds) and stores d = 0/-8 = -0.0, gguf-py takes the -0.0 and stores +0.0 (Q4_0, Q5_0).
    nonzero = (x.reshape(-1, t.block_size) != 0).any(axis=1)
    assert not _first_diff(ours[nonzero], packed[nonzero])


@pytest.mark.parametrize("name", NAMES)
def test_gguf_writer_file_loads_through_quantcore_io(gguf_quants, name, tmp_path):
    """A .gguf written by gguf-py's GGUFWriter with our raw quantized bytes loads through quantcore.io
    to exactly our dequantized values."""
    from quantcore.io import list_tensors, load_tensor
    t = GGML_TYPES[name]
    qtype = getattr(gguf_quants.GGMLQuantizationType, name)
    x = _normal(np.random.default_rng(7), rows=6).astype(np.float32)
    raw = t.quantize(x.reshape(-1, t.block_size)).reshape(x.shape[0], -1)
    path = tmp_path / "m.gguf"
    w = gguf_quants.GGUFWriter(str(path), "llama")
    w.add_tensor("t", raw, raw_dtype=qtype)
    w.add_tensor("ref", x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    data = path.read_bytes()
    info = {i.name: i for i in list_tensors(data, filename="m.gguf")}
    assert info["t"].ggml_type == name and info["t"].shape == x.shape
    got = load_tensor(data, name="t").array
    want = t.dequantize(raw).reshape(x.shape)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    np.testing.assert_array_equal(load_tensor(data, name="ref").array, x)


def test_registry_facts_match_ggml_and_the_reader():
    """Block and type sizes are those of ggml's block structs (ggml-common.h static_asserts); bits per
    weight = 8 * type_size / block_size, the values llama.cpp documents for each type."""
    from quantcore.io.gguf import GGML_TYPES as READER_TYPES
    from oracles.ggml_ref import TYPES as C_TYPES
    bpw = {"Q4_0": 4.5, "Q4_1": 5.0, "Q5_0": 5.5, "Q5_1": 6.0, "Q8_0": 8.5, "Q2_K": 2.625, "Q3_K": 3.4375,
           "Q4_K": 4.5, "Q5_K": 5.5, "Q6_K": 6.5625, "IQ4_NL": 4.5, "IQ4_XS": 4.25, "TQ1_0": 1.6875,
           "TQ2_0": 2.0625, "MXFP4": 4.25}
    assert set(bpw) == set(GGML_TYPES) == set(C_TYPES)
    for name, t in GGML_TYPES.items():
        assert t.bits_per_weight() == bpw[name]
        assert C_TYPES[name][:3] == (t.type_id, t.block_size, t.type_size)
        assert READER_TYPES[t.type_id] == (name, t.block_size, t.type_size)


@pytest.mark.parametrize("name", NAMES)
def test_analyser_reports_the_c_reference(ggml_ref, name):
    """``analyze(x, preset(name))``: codes, x_hat and memory are those of llama.cpp's bytes."""
    t = GGML_TYPES[name]
    x = _normal(np.random.default_rng(11), rows=4).astype(np.float32)
    want = ggml_ref.quantize(name, x)
    r = analyze(x, preset(name.lower()))
    np.testing.assert_array_equal(r.q, t.codes(want).reshape(x.shape))
    np.testing.assert_array_equal(r.dequantized.view(np.uint32), ggml_ref.dequantize(name, want).reshape(x.shape).view(np.uint32))
    assert r.memory.total_bytes == want.nbytes and r.memory.bits_per_weight == t.bits_per_weight()
    sub = r.sub_block_table()
    scale, mn = t.sub_scales(want)
    np.testing.assert_array_equal(sub["scale"], scale.reshape(-1).astype(np.float64))
    assert np.isfinite(r.metrics.rmse) and r.metrics.clip_count >= 0


def test_ragged_rows_pad_the_last_super_block():
    """A row of 300 values under Q4_K is one whole super-block plus one padded by repeating the last value;
    the padding is not counted and the first super-block is exactly llama.cpp's."""
    x = _normal(np.random.default_rng(5), rows=2)[:, :300].astype(np.float32)
    r = analyze(x, preset("q4_k"))
    assert r.dequantized.shape == x.shape and r.metrics.n == x.size
    first = GGML_TYPES["Q4_K"].dequantize(GGML_TYPES["Q4_K"].quantize(x[:, :256]))
    np.testing.assert_array_equal(r.dequantized[:, :256], first)


def test_bad_calls_are_clear_errors():
    q8, q4k = GGML_TYPES["Q8_0"], GGML_TYPES["Q4_K"]
    with pytest.raises(ValueError, match=r"Q4_K quantizes blocks of shape \(n, 256\), got \(2, 32\)"):
        q4k.quantize(np.zeros((2, 32), np.float32))
    x = np.zeros((3, 256), np.float32)
    x[2, 17] = np.nan
    with pytest.raises(ValueError, match=r"Q4_K: block 2 has a non-finite value at position 17"):
        q4k.quantize(x)
    with pytest.raises(ValueError, match=r"Q8_0 takes no importance matrix"):
        q8.quantize(np.zeros((1, 32), np.float32), np.ones((1, 32), np.float32))
    with pytest.raises(ValueError, match=r"Q4_1 with an importance matrix needs whole rows .* use quantize_rows"):
        GGML_TYPES["Q4_1"].quantize(np.zeros((1, 32), np.float32), np.ones((1, 32), np.float32))
    with pytest.raises(ValueError, match=r"not a whole number of 144-byte blocks"):
        q4k.dequantize(np.zeros(100, np.uint8))
    with pytest.raises(ValueError, match=r"Q4_K rows must have a multiple of 256 values, got shape \(2, 300\)"):
        q4k.quantize_rows(np.zeros((2, 300), np.float32))
    with pytest.raises(ValueError, match=r"expected one weight per column \(512,\)"):
        q4k.quantize_rows(np.zeros((2, 512), np.float32), np.ones(256, np.float32))
