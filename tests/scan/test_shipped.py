"""Reading what was shipped: a quantized GGUF (written by gguf-py 0.19 like convert_hf_to_gguf.py, with
llama's q/k RoPE permutation) measured tensor by tensor against the HF original, and `diff` of two GGUFs."""
from __future__ import annotations

import numpy as np
import pytest

from quantcore.io.checkpoint import open_checkpoint
from quantcore.names import permute_rows, unpermute_rows
from quantcore.scan import Reference, plan_scan, scan
from quantcore.schemes import parse_schemes

from .conftest import N_HEAD, _converter_permute, gguf_module, llama_tensors, run_cli, write_llama_gguf, write_sharded


@pytest.fixture
def model(tmp_path):
    gguf_module()
    tensors = llama_tensors(seed=1)
    write_sharded(tmp_path / "hf", tensors, n_shards=2)
    write_llama_gguf(tmp_path / "q4.gguf", tensors, default="Q4_0",
                     types={"token_embd.weight": "Q8_0", "output.weight": "Q8_0", "blk.0.ffn_down.weight": "Q5_1"})
    write_llama_gguf(tmp_path / "q8.gguf", tensors, default="Q8_0", types={"blk.1.attn_v.weight": "Q4_1"})
    return tmp_path, tensors


def test_unpermute_inverts_the_converter_permutation():
    w = np.arange(64 * 3, dtype=np.float32).reshape(64, 3)
    np.testing.assert_array_equal(permute_rows(w, N_HEAD), _converter_permute(w, N_HEAD, N_HEAD))
    np.testing.assert_array_equal(unpermute_rows(_converter_permute(w, N_HEAD, N_HEAD), N_HEAD), w)
    # whole heads at a time: the inverse applies to any run of heads
    p = _converter_permute(w, N_HEAD, N_HEAD)
    np.testing.assert_array_equal(unpermute_rows(p[16:48], 2), w[16:48])


def test_shipped_error_equals_requantizing_the_original_with_the_same_type(model):
    """quantcore's Q4_0/Q8_0/Q5_1 are bit-exact with gguf-py, and a row permutation does not change
    row-block quantization: so the shipped tensor's error against the original must equal the error of
    quantcore's own scheme on the original (attn_q/attn_k only if the permutation is undone)."""
    tmp, tensors = model
    orig = open_checkpoint([tmp / "hf"])
    shipped = open_checkpoint([tmp / "q4.gguf"])
    assert shipped.arch == "llama" and shipped.metadata["attention.head_count"] == N_HEAD
    rows, plan = scan(orig, parse_schemes("q4_0,q8_0,q5_1"), references=[Reference("q4", shipped)])
    by = {(r.tensor, r.scheme): r for r in rows}
    want = {"model.embed_tokens.weight": "q8_0", "lm_head.weight": "q8_0",
            "model.layers.0.mlp.down_proj.weight": "q5_1"}
    n_checked = 0
    for name in tensors:
        if (name, "shipped:q4") not in by:
            continue
        s, ref = by[(name, "shipped:q4")], by[(name, want.get(name, "q4_0"))]
        assert s.ggml_type == ref.ggml_type and s.bits_per_weight == ref.bits_per_weight
        assert (s.n, s.collapsed, s.max_abs) == (ref.n, ref.collapsed, ref.max_abs), name
        assert s.sse == pytest.approx(ref.sse, rel=1e-12) and s.ssx == pytest.approx(ref.ssx, rel=1e-12)
        n_checked += 1
    assert n_checked == 16


def test_without_head_counts_permuted_tensors_are_skipped_not_mismeasured(model, tmp_path):
    _, tensors = model
    write_llama_gguf(tmp_path / "nohead.gguf", tensors, default="Q4_0", head_count=False)
    plan = plan_scan(open_checkpoint([tmp_path / "hf"]), (), references=[
        Reference("x", open_checkpoint([tmp_path / "nohead.gguf"]))])
    skipped = {s.tensor: s.reason for s in plan.skipped if s.scheme == "shipped:x"}
    assert set(skipped) == {f"model.layers.{i}.self_attn.{k}_proj.weight" for i in range(2) for k in "qk"}
    assert all("head count" in r for r in skipped.values())


def test_cli_scan_of_a_shipped_gguf_against_the_original(model):
    tmp, _ = model
    code, out, err = run_cli("scan", tmp / "q4.gguf", "--original", tmp / "hf", "--schemes", "q4_0", "--no-progress")
    assert code == 0, err
    assert "shipped:q4.gguf" in out and "q4_0" in out


def test_cli_scan_of_a_quantized_gguf_lists_its_stored_types(model):
    tmp, _ = model
    code, out, err = run_cli("scan", tmp / "q4.gguf", "--schemes", "q8_0", "--json", "--no-progress")
    import json
    d = json.loads(out)
    assert code == 0 and d["tensors_scanned"] == 16
    rows = {r["tensor"]: r for r in d["worst"]}
    assert any(r["dtype"] == "Q4_0" and r["stored_bpw"] == 4.5 for r in rows.values())


def test_diff_two_gguf_files(model):
    tmp, _ = model
    code, out, err = run_cli("diff", tmp / "q4.gguf", tmp / "q8.gguf", "--original", tmp / "hf", "--no-progress")
    assert code == 0, err
    lines = {line.split()[0]: line.split() for line in out.splitlines()[4:] if line.strip()}
    assert lines["blk.0.attn_q.weight"][:5] == ["blk.0.attn_q.weight", "Q4_0", "4.500", "Q8_0", "8.500"]
    assert lines["blk.0.attn_q.weight"][-1] == "*"
    assert lines["token_embd.weight"][1] == lines["token_embd.weight"][3] == "Q8_0"
    assert lines["token_embd.weight"][-1] != "*"
    a_err, b_err = float(lines["blk.0.attn_q.weight"][5]), float(lines["blk.0.attn_q.weight"][6])
    assert 5 < a_err / b_err < 40        # Q4_0 vs Q8_0 on the same tensor
    assert "tensors differ in type" in out
    code, out, _ = run_cli("diff", tmp / "q4.gguf", tmp / "q8.gguf")
    assert code == 0 and "rel RMSE" not in out


def test_types_the_reader_cannot_decode_are_skipped_with_the_reason(tmp_path):
    """Q4_K is listed by quantcore.io.gguf but (on this branch) not dequantized: the scan says so per tensor.
    Once the reader's dequantize_blocks handles it, the same file is scanned (the scan calls that entry point)."""
    gguf = gguf_module()
    from quantcore.io import gguf as reader
    w = gguf.GGUFWriter(str(tmp_path / "k.gguf"), "llama")
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 255, size=(4, 144 * 2), dtype=np.uint8)
    raw.reshape(4, 2, 144)[:, :, :4] = np.frombuffer(np.array([0.01, 0.001], "<f2").tobytes(), np.uint8)  # d, dmin
    w.add_tensor("blk.0.ffn_up.weight", raw, raw_dtype=gguf.GGMLQuantizationType.Q4_K)  # 4 x 512 weights
    w.add_tensor("blk.0.ffn_down.weight", rng.standard_normal((4, 64)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    code, out, err = run_cli("scan", tmp_path / "k.gguf", "--schemes", "q8_0", "--no-progress")
    assert code == 0, err
    if "Q4_K" in reader.LOADABLE:
        assert "2 tensors scanned" in out
    else:
        assert "1 tensors scanned, 1 skipped" in out
        assert "Q4_K data cannot be decoded by this version of quantcore.io" in out
