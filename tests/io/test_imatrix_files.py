"""llama.cpp importance-matrix files: both formats read as llama-quantize reads them, bad files refused with
the byte offset, and the CLI's ``--imatrix`` giving exactly the analysis of ``qc.analyze(..., imatrix=w)``.

The GGUF files are written by gguf-py 0.19 (llama.cpp's own Python writer, a test oracle); legacy ``.dat``
files are built from the layout of llama.cpp's ``common/imatrix-loader.cpp``.
"""
from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest

import quantcore as qc
from quantcore import cli
from quantcore.io import InputError
from quantcore.io.imatrix import pick_imatrix, read_imatrix

NCALL = 7


def _legacy(entries: dict[str, np.ndarray], ncall: int = NCALL, trailer: bool = True) -> bytes:
    out = struct.pack("<i", len(entries))
    for name, v in entries.items():
        b = name.encode()
        out += struct.pack("<i", len(b)) + b + struct.pack("<ii", ncall, v.size)
        out += (v * np.float32(ncall if ncall > 0 else 1)).astype("<f4").tobytes()
    if trailer:
        out += struct.pack("<ii", 100, 4) + b"wiki"
    return out


def _gguf_file(path, sums: dict[str, np.ndarray], counts: dict[str, np.ndarray]) -> str:
    gguf = pytest.importorskip("gguf", reason="gguf-py writes the GGUF imatrix files; install the 'test' extra")
    w = gguf.GGUFWriter(str(path), arch="imatrix")
    for name, v in sums.items():
        w.add_tensor(f"{name}.in_sum2", v.astype(np.float32))
    for name, c in counts.items():
        w.add_tensor(f"{name}.counts", np.asarray(c, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


def test_legacy_values_are_divided_by_the_call_count_in_float32():
    rng = np.random.default_rng(0)
    v = rng.lognormal(0, 2, 512).astype(np.float32)
    got = read_imatrix(_legacy({"blk.0.ffn_down.weight": v, "blk.0.attn_q.weight": np.ones(64, np.float32)}))
    assert list(got) == ["blk.0.ffn_down.weight", "blk.0.attn_q.weight"]
    stored = (v * np.float32(NCALL)).astype(np.float32)
    np.testing.assert_array_equal(got["blk.0.ffn_down.weight"], stored / np.float32(NCALL))
    assert got["blk.0.ffn_down.weight"].dtype == np.float32
    no_calls = read_imatrix(_legacy({"w": v}, ncall=0, trailer=False))
    np.testing.assert_array_equal(no_calls["w"], v)          # ncall 0: the values as stored


def test_gguf_sums_are_divided_by_each_experts_count_and_unseen_experts_weigh_one(tmp_path):
    rng = np.random.default_rng(1)
    dense = rng.random(256).astype(np.float32) * 50
    experts = rng.random((3, 128)).astype(np.float32) * 50
    path = _gguf_file(tmp_path / "imatrix.gguf", {"blk.0.ffn_down.weight": dense, "blk.1.ffn_down_exps.weight": experts},
                      {"blk.0.ffn_down.weight": [10.0], "blk.1.ffn_down_exps.weight": [4.0, 0.0, 2.5]})
    got = read_imatrix(path)
    np.testing.assert_array_equal(got["blk.0.ffn_down.weight"], dense / np.float32(10))
    want = np.concatenate([experts[0] / np.float32(4), np.ones(128, np.float32), experts[2] / np.float32(3)])
    np.testing.assert_array_equal(got["blk.1.ffn_down_exps.weight"], want)   # lround(2.5) = 3, as llama.cpp


@pytest.mark.parametrize("data, message", [
    (b"", "file is truncated"),
    (struct.pack("<i", 0), "the entry count is 0"),
    (struct.pack("<i", 1_000_000) + b"\0" * 16, "1,000,000 entries cannot fit in 20 bytes"),
    (struct.pack("<ii", 1, 99) + b"abc" + b"\0" * 12, "entry 1: name length 99 is impossible here"),
    (struct.pack("<i", 1) + b"\0" * 12, "1 entry cannot fit in 16 bytes"),
    (struct.pack("<ii", 1, 2) + b"\xff\xfe" + struct.pack("<iii", 1, 1, 0), "entry 1: the name is not UTF-8"),
    (struct.pack("<ii", 1, 1) + b"w" + struct.pack("<ii", 1, 1000) + b"\0" * 8, "1,000 values do not fit"),
])
def test_bad_legacy_files_are_refused_with_the_byte_offset(data, message):
    with pytest.raises(InputError, match=message) as e:
        read_imatrix(data, filename="imatrix.dat")
    assert str(e.value).startswith("imatrix.dat")
    assert "byte offset" in str(e.value)


def test_a_gguf_model_or_an_unpaired_sum_is_not_an_importance_matrix(tmp_path):
    gguf = pytest.importorskip("gguf", reason="gguf-py writes the GGUF files; install the 'test' extra")
    model = tmp_path / "model.gguf"
    w = gguf.GGUFWriter(str(model), arch="llama")
    w.add_tensor("blk.0.ffn_down.weight", np.ones((4, 32), np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    with pytest.raises(InputError, match="is not an importance matrix"):
        read_imatrix(str(model))
    unpaired = _gguf_file(tmp_path / "u.gguf", {"a": np.ones(32, np.float32)}, {})
    with pytest.raises(InputError, match="'a.counts' is missing"):
        read_imatrix(unpaired)


def test_picking_an_entry_by_name_or_the_only_one():
    entries = {"blk.0.ffn_down.weight": np.ones(4, np.float32), "blk.0.ffn_up.weight": np.zeros(4, np.float32)}
    assert pick_imatrix(entries, [None, "blk.0.ffn_up.weight"])[0] == "blk.0.ffn_up.weight"
    assert pick_imatrix({"only": np.ones(2)}, ["other"])[0] == "only"
    with pytest.raises(InputError, match="no entry for 'model.x'; it has 2 entries: 'blk.0.ffn_down.weight'"):
        pick_imatrix(entries, ["model.x"])


def _cli(argv):
    out, err = io.StringIO(), io.StringIO()
    return cli.main(argv, stdout=out, stderr=err), out.getvalue(), err.getvalue()


def test_cli_imatrix_gives_the_library_analysis_for_every_file_kind(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((16, 512)).astype(np.float32)
    w = rng.lognormal(0, 2, 512).astype(np.float32)
    np.save(tmp_path / "w.npy", x)
    np.save(tmp_path / "imp.npy", w)
    (tmp_path / "imatrix.dat").write_bytes(_legacy({"blk.3.ffn_down.weight": w, "blk.3.ffn_up.weight": w[::-1]}))
    from_file = read_imatrix(str(tmp_path / "imatrix.dat"))["blk.3.ffn_down.weight"]
    for imatrix, entry, weights in [("imp.npy", None, w), ("imatrix.dat", "blk.3.ffn_down.weight", from_file)]:
        argv = ["analyze", str(tmp_path / "w.npy"), "--preset", "q4_k", "--imatrix", str(tmp_path / imatrix), "--json"]
        code, out, err = _cli(argv + (["--imatrix-entry", entry] if entry else []))
        assert code == 0, err
        want = qc.analyze(x, qc.preset("q4_k"), imatrix=weights)
        got = json.loads(out)
        assert got["label"] == "Q4_K + imatrix"
        assert got["metrics"]["rmse"] == pytest.approx(want.metrics.rmse, rel=1e-12)
        assert got["imatrix"]["output_mse"] == pytest.approx(want.imatrix_output_mse, rel=1e-12)
    code, out, err = _cli(["analyze", str(tmp_path / "w.npy"), "--preset", "q4_k", "--imatrix",
                           str(tmp_path / "imatrix.dat")])
    assert code == 2 and err.count("\n") == 1
    assert "imatrix.dat" in err and "no entry for (no tensor name given); it has 2 entries" in err
    code, out, err = _cli(["analyze", str(tmp_path / "w.npy"), "--preset", "q4_k", "--compare", "--imatrix",
                           str(tmp_path / "imp.npy")])
    assert code == 2 and "does not combine with --compare" in err
