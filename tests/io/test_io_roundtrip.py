"""Round trips against the reference writers: files written by the ``safetensors`` library
(safetensors.numpy.save), by gguf-py's GGUFWriter (plain and quantized with gguf.quants.quantize,
compared bit-for-bit with gguf.quants.dequantize, gguf-py 0.19), and by numpy (np.save/np.savez)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from iocorpus import gguf_writer_bytes
from quantcore.io import list_tensors, load_input, load_tensor, read_metadata

gguf = pytest.importorskip("gguf", reason="gguf-py is the GGUF oracle")
st_numpy = pytest.importorskip("safetensors.numpy", reason="safetensors is the .safetensors oracle")
ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes provides bfloat16 for the oracle")

Q = gguf.GGMLQuantizationType
RNG = np.random.default_rng(20240601)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.int8, np.uint8, np.int16, np.int32])
def test_safetensors_library_file_loads_exactly(dtype, tmp_path):
    x = (RNG.standard_normal((3, 5)) * 50).astype(dtype)
    data = st_numpy.save({"w": x, "other": np.zeros(2, np.float32)}, metadata={"note": "<b>hi</b>"})
    infos = {i.name: i for i in list_tensors(data, filename="m.safetensors")}
    assert infos["w"].shape == (3, 5)
    lt = load_tensor(data, name="w")
    # documented output dtypes: float64 and int32 -> float64, the rest -> float32 (exact)
    want = np.float64 if dtype in (np.float64, np.int32) else np.float32
    assert lt.array.dtype == want and lt.array.flags.c_contiguous
    np.testing.assert_array_equal(lt.array, x.astype(want))
    # same answer from a path
    p = tmp_path / "m.safetensors"
    p.write_bytes(data)
    np.testing.assert_array_equal(load_input(p, tensor="w").data, x.astype(want))
    assert read_metadata(p) == {"note": "<b>hi</b>"}


def test_safetensors_bf16_matches_ml_dtypes():
    x = RNG.standard_normal(1000).astype(ml_dtypes.bfloat16)
    data = st_numpy.save({"b": x})
    got = load_tensor(data, name="b").array
    np.testing.assert_array_equal(got, x.astype(np.float32))


def test_safetensors_many_tensors_and_empty():
    ts = {f"layer.{i}.weight": RNG.standard_normal((i + 1, 4)).astype(np.float32) for i in range(20)}
    ts["empty"] = np.zeros((0, 4), np.float32)
    data = st_numpy.save(ts)
    assert {i.name for i in list_tensors(data)} == set(ts)
    for k, v in ts.items():
        np.testing.assert_array_equal(load_tensor(data, name=k).array, v)


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.F16, Q.BF16])
@pytest.mark.parametrize("shape", [(1, 32), (7, 96), (3, 2, 64)])
def test_gguf_quantized_matches_gguf_py_bit_for_bit(qtype, shape):
    x = (RNG.standard_normal(shape) * RNG.uniform(0.01, 10)).astype(np.float32)
    x.reshape(-1)[::17] = 0.0  # zero blocks/elements exercise the d == 0 paths
    data = gguf_writer_bytes({"t": (x, qtype), "ref": (x, None)})
    infos = {i.name: i for i in list_tensors(data, filename="m.gguf")}
    assert infos["t"].shape == shape and infos["t"].ggml_type == qtype.name
    got = load_tensor(data, name="t").array
    want = gguf.quants.dequantize(gguf.quants.quantize(x, qtype), qtype)
    assert got.dtype == np.float32 and got.shape == shape
    np.testing.assert_array_equal(got.view(np.uint32), want.astype(np.float32).view(np.uint32))
    np.testing.assert_array_equal(load_tensor(data, name="ref").array, x)


def test_gguf_large_quantized_tensor_is_chunked_and_exact():
    x = RNG.standard_normal((300, 1024)).astype(np.float32)  # 9,600 blocks per type; > 1 chunk below
    data = gguf_writer_bytes({"t": (x, Q.Q5_1)})
    import quantcore.io.gguf as g
    old = g.CHUNK_BLOCKS
    g.CHUNK_BLOCKS = 1000
    try:
        got = load_tensor(data).array
    finally:
        g.CHUNK_BLOCKS = old
    np.testing.assert_array_equal(got, gguf.quants.dequantize(gguf.quants.quantize(x, Q.Q5_1), Q.Q5_1))


def test_gguf_metadata_and_gguf_reader_agree(tmp_path):
    x = RNG.standard_normal((4, 64)).astype(np.float32)
    data = gguf_writer_bytes({"a": (x, None), "b": (x, Q.Q8_0)}, {"general.name": "<script>alert(1)</script>"})
    p = tmp_path / "m.gguf"
    p.write_bytes(data)
    ref = gguf.GGUFReader(str(p))
    mine = list_tensors(p)
    assert [t.name for t in ref.tensors] == [t.name for t in mine]
    for rt, mt in zip(ref.tensors, mine):
        assert tuple(int(d) for d in reversed(rt.shape.tolist())) == mt.shape
        assert rt.tensor_type.name == mt.ggml_type
    meta = read_metadata(p)
    assert meta["general.name"] == "<script>alert(1)</script>"  # returned verbatim; renderers escape
    assert meta["general.architecture"] == "llama"


def test_npy_npz_roundtrip(tmp_path):
    x = RNG.standard_normal((4, 6))
    b = io.BytesIO()
    np.savez_compressed(b, first=x, second=x.astype(np.float16))
    np.testing.assert_array_equal(load_input(b.getvalue(), tensor="first").data, x)
    np.testing.assert_array_equal(load_input(b.getvalue(), tensor="second").data, x.astype(np.float16).astype(np.float32))
    p = tmp_path / "x.npy"
    np.save(p, x.T)  # non-C-contiguous source -> C-contiguous result
    got = load_input(p).data
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(got, x.T)
