"""Tensor roles and layers, and the llama HF -> GGUF mapping against gguf-py's own TensorNameMap."""
from __future__ import annotations

import pytest

from quantcore.names import gguf_to_hf, hf_to_gguf, layer_index, tensor_role

from .conftest import LLAMA_SHAPES


def test_hf_to_gguf_matches_gguf_py_tensor_name_map():
    gguf = pytest.importorskip("gguf", reason="gguf-py 0.19 holds llama.cpp's name map")
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
    for name in LLAMA_SHAPES:
        want = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        assert hf_to_gguf(name) == want, name
        assert gguf_to_hf(want) == name


@pytest.mark.parametrize("name, role, layer", [
    ("model.layers.7.self_attn.q_proj.weight", "attn_q", 7), ("blk.7.attn_k.weight", "attn_k", 7),
    ("model.layers.0.self_attn.v_proj.weight", "attn_v", 0), ("blk.12.attn_output.weight", "attn_o", 12),
    ("model.layers.3.mlp.gate_proj.weight", "mlp_gate", 3), ("blk.3.ffn_up.weight", "mlp_up", 3),
    ("blk.31.ffn_down.weight", "mlp_down", 31), ("model.layers.2.post_attention_layernorm.weight", "norm", 2),
    ("blk.2.ffn_norm.weight", "norm", 2), ("token_embd.weight", "embedding", None),
    ("model.embed_tokens.weight", "embedding", None), ("output.weight", "output", None),
    ("lm_head.weight", "output", None), ("output_norm.weight", "norm", None),
    ("encoder.layer.5.attention.self.query.weight", "attn_q", 5),
    ("encoder.layer.5.attention.output.dense.weight", "attn_o", 5),
    ("encoder.layer.5.intermediate.dense.weight", "mlp_up", 5), ("encoder.layer.5.output.dense.weight", "mlp_down", 5),
    ("encoder.layer.5.output.LayerNorm.weight", "norm", 5), ("embeddings.word_embeddings.weight", "embedding", None),
    ("transformer.h.4.attn.c_attn.weight", "attn_qkv", 4), ("pooler.dense.weight", "other", None),
    ("blk.3.ffn_up_exps.weight", "mlp_up", 3), ("blk.3.ffn_down_shexp.weight", "mlp_down", 3),
    ("model.layers.3.mlp.experts.7.gate_proj.weight", "mlp_gate", 3),
])
def test_roles_and_layers(name, role, layer):
    assert (tensor_role(name), layer_index(name)) == (role, layer)
