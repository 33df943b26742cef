"""Checkpoints written for the scan tests: multi-shard safetensors with an index (written byte by byte
from the format description, so headers can also be made to lie), and llama-like GGUF files written
with gguf-py's GGUFWriter (a test oracle, never imported by quantcore)."""
from __future__ import annotations

import io
import json
import os
import struct

import numpy as np
import pytest

from quantcore.cli import main

LLAMA_SHAPES = {  # a tiny llama: hidden 64, 4 heads of 16, 2 KV heads, MLP 96, vocab 80, 2 layers
    "model.embed_tokens.weight": (80, 64),
    **{f"model.layers.{i}.{k}": s for i in range(2) for k, s in {
        "self_attn.q_proj.weight": (64, 64), "self_attn.k_proj.weight": (32, 64),
        "self_attn.v_proj.weight": (32, 64), "self_attn.o_proj.weight": (64, 64),
        "mlp.gate_proj.weight": (96, 64), "mlp.up_proj.weight": (96, 64), "mlp.down_proj.weight": (64, 96),
        "input_layernorm.weight": (64,), "post_attention_layernorm.weight": (64,)}.items()},
    "model.norm.weight": (64,),
    "lm_head.weight": (80, 64),
}
N_HEAD, N_HEAD_KV = 4, 2


def llama_tensors(seed: int = 0, scale_spread: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for i, (name, shape) in enumerate(LLAMA_SHAPES.items()):
        if len(shape) == 1:
            out[name] = (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            s = 0.02 * (1 + i % 5) if scale_spread else 0.02
            w = rng.standard_normal(shape) * s
            w[:, rng.integers(0, shape[1])] *= 8  # an outlier input channel, as real weights have
            out[name] = w.astype(np.float32)
    return out


def safetensors_bytes(tensors: dict[str, np.ndarray], dtype: str = "F32", header_patch=None) -> bytes:
    """A .safetensors file; ``header_patch(header_dict)`` may edit the header to make it lie."""
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        if dtype == "BF16":
            u = np.ascontiguousarray(a, np.float32).view(np.uint32)
            raw = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes()
        elif dtype == "F16":
            raw = a.astype("<f2").tobytes()
        else:
            raw = a.astype("<f4").tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if header_patch is not None:
        header_patch(header)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def write_sharded(folder, tensors: dict[str, np.ndarray], n_shards: int = 2, dtype: str = "F32",
                  index: bool = True) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    names = list(tensors)
    per = -(-len(names) // n_shards)
    paths, wm = [], {}
    for k in range(n_shards):
        part = {n: tensors[n] for n in names[k * per:(k + 1) * per]}
        fname = f"model-{k + 1:05d}-of-{n_shards:05d}.safetensors"
        with open(os.path.join(folder, fname), "wb") as f:
            f.write(safetensors_bytes(part, dtype))
        paths.append(os.path.join(folder, fname))
        wm.update({n: fname for n in part})
    if index:
        with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": 0}, "weight_map": wm}, f)
    return paths


def gguf_module():
    return pytest.importorskip("gguf", reason="gguf-py is the GGUF writer/oracle; install the 'test' extra")


def write_llama_gguf(path, tensors: dict[str, np.ndarray], types: dict[str, str] | None = None,
                     default: str = "Q8_0", head_count: bool = True) -> None:
    """Convert HF-named llama tensors as convert_hf_to_gguf.py does: GGUF names, q/k rows permuted for
    RoPE (conversion/llama.py LlamaModel.permute), quantized with gguf-py's quants (default Q8_0;
    1-D tensors F32)."""
    gguf = gguf_module()
    from gguf.quants import quantize
    from quantcore.names import hf_to_gguf
    w = gguf.GGUFWriter(str(path), "llama")
    if head_count:
        w.add_head_count(N_HEAD)
        w.add_head_count_kv(N_HEAD_KV)
    for name, a in tensors.items():
        g = hf_to_gguf(name)
        if name.endswith("q_proj.weight"):
            a = _converter_permute(a, N_HEAD, N_HEAD)
        elif name.endswith("k_proj.weight"):
            a = _converter_permute(a, N_HEAD, N_HEAD_KV)
        t = (types or {}).get(g, default if a.ndim == 2 else "F32")
        if t == "F32":
            w.add_tensor(g, a.astype(np.float32))
        else:
            qt = getattr(gguf.GGMLQuantizationType, t)
            w.add_tensor(g, quantize(a.astype(np.float32), qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _converter_permute(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """llama.cpp conversion/llama.py (llama-cpp-python 0.3.36 vendor tree), LlamaModel.permute, verbatim
    apart from torch -> numpy."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def sharded(tmp_path):
    tensors = llama_tensors()
    write_sharded(tmp_path / "ckpt", tensors, n_shards=3)
    return tmp_path / "ckpt", tensors
