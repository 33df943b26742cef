"""Reading by byte range (quantcore.io.ranges): what the browser does with File.slice, driven synchronously.

Every reader gives the same result on a RangeCache fed range by range as on the whole file's bytes, and for
.safetensors / .gguf only the header and the chosen tensor's bytes are ever fetched.
"""
from __future__ import annotations

import io

import numpy as np
import pytest

import quantcore.io as qio
from quantcore.io.ranges import PIECE, NeedBytes, RangeCache, fetch_span, resolve


def _files(tmp_path) -> dict[str, bytes]:
    from gguf import GGUFWriter
    from safetensors.numpy import save

    rng = np.random.default_rng(0)
    big = rng.normal(size=(512, 4096)).astype(np.float16)          # 4 MiB
    small = rng.normal(size=(3, 8)).astype(np.float32)
    out = {"model.safetensors": save({"a.weight": small, "big.weight": big, "z.bias": small[0]})}
    path = tmp_path / "m.gguf"
    w = GGUFWriter(str(path), "llama")
    w.add_tensor("tok_embd.weight", small)
    w.add_tensor("blk.0.attn_q.weight", big.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    out["m.gguf"] = path.read_bytes()
    buf = io.BytesIO()
    np.save(buf, small)
    out["x.npy"] = buf.getvalue()
    buf = io.BytesIO()
    np.savez_compressed(buf, w=small, v=small[0])
    out["x.npz"] = buf.getvalue()
    out["x.csv"] = b"name,a,b\nr0,1,2\nr1,3,4\n"
    out["x.txt"] = b"0.1, 0.2, -0.3\n1 2 3\n"
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return _files(tmp_path_factory.mktemp("ranges"))


def _ranged(data: bytes, name: str):
    cache = RangeCache(len(data), name)
    fetched = []

    def fetch(start: int, stop: int) -> bytes:
        assert 0 <= start < stop <= len(data) and stop - start <= PIECE
        fetched.append((start, stop))
        return data[start:stop]
    return cache, fetch, fetched


@pytest.mark.parametrize("name", ["model.safetensors", "m.gguf", "x.npy", "x.npz", "x.csv", "x.txt"])
def test_every_reader_gives_the_same_result_range_by_range(files, name):
    data = files[name]
    want = qio.list_tensors(data, filename=name)
    cache, fetch, _ = _ranged(data, name)
    got = resolve(lambda c: qio.list_tensors(c, filename=name), cache, fetch)
    assert got == want
    for info in want:
        if not info.loadable:
            continue
        a = qio.load_tensor(data, name=info.name, filename=name)
        b = resolve(lambda c: qio.load_tensor(c, name=info.name, filename=name), cache, fetch)
        assert b.name == a.name and b.dtype_in_file == a.dtype_in_file
        np.testing.assert_array_equal(np.asarray(b.array), np.asarray(a.array))


@pytest.mark.parametrize("name,tensor", [("model.safetensors", "a.weight"), ("m.gguf", "tok_embd.weight")])
def test_header_and_one_small_tensor_never_fetch_the_big_one(files, name, tensor):
    data = files[name]
    cache, fetch, fetched = _ranged(data, name)
    resolve(lambda c: qio.list_tensors(c, filename=name), cache, fetch)
    resolve(lambda c: qio.load_tensor(c, name=tensor, filename=name), cache, fetch)
    # the 4 MiB (safetensors) / 8 MiB (gguf) tensor is never read: a header, read ahead 1 MiB, and 96 bytes
    assert cache.cached_bytes <= (1 << 20) + 4096 and sum(b - a for a, b in fetched) < len(data) / 3


def test_a_big_tensor_comes_in_pieces_and_can_be_dropped_after_decoding(files):
    data = files["model.safetensors"]
    cache, fetch, fetched = _ranged(data, "model.safetensors")
    resolve(lambda c: qio.list_tensors(c, filename="model.safetensors"), cache, fetch)
    header_end = max(b for _, b in fetched)
    t = resolve(lambda c: qio.load_tensor(c, name="big.weight", filename="model.safetensors"), cache, fetch)
    assert t.array.shape == (512, 4096)
    assert all(b - a <= PIECE for a, b in fetched)
    cache.drop(header_end)
    assert cache.cached_bytes <= header_end


def test_range_cache_merges_and_names_what_is_missing():
    c = RangeCache(100, "f")
    c.add(10, b"a" * 10)
    c.add(30, b"b" * 10)
    with pytest.raises(NeedBytes) as e:
        c.read(15, 20)
    assert (e.value.offset, e.value.n) == (20, 15)      # the first missing byte, to the end of the range
    c.add(18, b"c" * 14)                                 # bridges both chunks
    assert c.read(10, 30) == b"a" * 8 + b"c" * 14 + b"b" * 8
    assert c.cached_bytes == 30
    with pytest.raises(qio.InputError, match="truncated"):
        c.read(95, 10)
    with pytest.raises(ValueError, match="outside a file of 100 bytes"):
        c.add(95, b"x" * 10)
    assert fetch_span(NeedBytes(90, 4), 100) == (90, 100)
    assert fetch_span(NeedBytes(0, 4), 1 << 30) == (0, 1 << 20)
    assert fetch_span(NeedBytes(0, 1 << 30), 1 << 31) == (0, PIECE)


def test_a_missing_range_names_the_cache_that_lacks_it():
    """NeedBytes says which file it is for: a reader of several files (a sharded checkpoint) fetches from that one."""
    cache = RangeCache(100, "model-00002-of-00003.safetensors")
    cache.add(0, bytes(10))
    with pytest.raises(NeedBytes) as e:
        cache.read(5, 20)
    assert (e.value.offset, e.value.n, e.value.source) == (10, 15, "model-00002-of-00003.safetensors")
    with pytest.raises(NeedBytes) as e:
        RangeCache(100).read(50, 1)
    assert (e.value.offset, e.value.n, e.value.source) == (50, 1, None)
