"""Tensor names: layer index, role, and the llama HF <-> GGUF name mapping.

Roles (:data:`ROLES`): ``attn_q attn_k attn_v attn_o mlp_gate mlp_up mlp_down embedding output norm
other``. Recognised spellings:

==============  ===========================================================  ==========================
role            Hugging Face (llama/mistral/qwen, gpt2/falcon, BERT)          GGUF (llama.cpp)
==============  ===========================================================  ==========================
attn_q/k/v      ``self_attn.q_proj``, ``attention.self.query``, ``attn.q``     ``attn_q attn_k attn_v``
attn_o          ``self_attn.o_proj``, ``attention.output.dense``, ``attn.c_proj``  ``attn_output``
mlp_gate/up     ``mlp.gate_proj``, ``mlp.up_proj``, ``intermediate.dense``      ``ffn_gate ffn_up``
mlp_down        ``mlp.down_proj``, ``output.dense`` (BERT), ``mlp.c_proj``      ``ffn_down``
embedding       ``embed_tokens``, ``word_embeddings``, ``wte``, ...          ``token_embd``
output          ``lm_head``                                                  ``output``
norm            any ``norm`` / ``LayerNorm`` / ``ln_``                         ``*_norm``
==============  ===========================================================  ==========================

Fused ``qkv`` projections (``attn_qkv``, ``c_attn``, ``query_key_value``) are role ``attn_qkv``; MoE
expert stacks (GGUF ``ffn_up_exps`` / ``ffn_down_shexp``, HF ``experts.N.up_proj``) take their MLP role.
The layer index is the number after ``layers.`` / ``layer.`` / ``h.`` / ``blocks.`` / ``blk.``.

HF -> GGUF (:func:`hf_to_gguf`) covers the llama family as llama.cpp's ``convert_hf_to_gguf.py``
names it (``gguf-py/gguf/tensor_mapping.py``); other architectures return None. llama.cpp stores the
llama ``q_proj`` / ``k_proj`` weights with the rows of each head permuted for its RoPE layout
(``LlamaModel.permute`` in ``conversion/llama.py``): :func:`unpermute_rows` undoes it so a shipped
GGUF tensor can be compared element by element with the HF original.
"""
from __future__ import annotations

import re

import numpy as np

ROLES = ("attn_q", "attn_k", "attn_v", "attn_qkv", "attn_o", "mlp_gate", "mlp_up", "mlp_down", "embedding",
         "output", "norm", "other")

_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|blk|block)\.(\d+)\.")
# Checked in order; the first match wins. Patterns see the name lower-cased, without ".weight"/".bias".
_ROLE_PATTERNS = (
    ("norm", r"(norm|layernorm|ln_\w*|\bln\d*)(\.|$)"),
    ("attn_qkv", r"(attn_qkv|c_attn|query_key_value|qkv_proj|wqkv)$"),
    ("attn_q", r"(q_proj|attention\.self\.query|attn_q|\.wq|attn\.q)$"),
    ("attn_k", r"(k_proj|attention\.self\.key|attn_k|\.wk|attn\.k)$"),
    ("attn_v", r"(v_proj|attention\.self\.value|attn_v|\.wv|attn\.v)$"),
    ("attn_o", r"(o_proj|out_proj|attention\.output\.dense|attn_output|attn\.c_proj|\.wo|attn\.o|dense_proj)$"),
    ("mlp_gate", r"(gate_proj|ffn_gate(_exps|_shexp)?|w1|mlp\.gate)$"),
    ("mlp_up", r"(up_proj|ffn_up(_exps|_shexp)?|intermediate\.dense|w3|mlp\.c_fc|fc1|dense_h_to_4h)$"),
    ("mlp_down", r"(down_proj|ffn_down(_exps|_shexp)?|w2|mlp\.c_proj|fc2|dense_4h_to_h|(^|\.)output\.dense)$"),
    ("embedding", r"(embed_tokens|word_embeddings|token_embd|tok_embeddings|wte|embeddings?)$"),
    ("output", r"(^|\.)(lm_head|output|embed_out)$"),
)
_ROLE_RE = tuple((role, re.compile(p)) for role, p in _ROLE_PATTERNS)


def layer_index(name: str) -> int | None:
    """Layer (block) number in a tensor name, or None (embeddings, final norm, output)."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def tensor_role(name: str) -> str:
    """One of :data:`ROLES` for a tensor name (HF or GGUF spelling)."""
    base = name.lower()
    for suffix in (".weight", ".bias", ".scales", ".qweight"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    for role, rx in _ROLE_RE:
        if rx.search(base):
            return role
    return "other"


_HF_LLAMA_LAYER = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}
_HF_LLAMA_TOP = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
_HF_LAYER_RE = re.compile(r"model\.layers\.(\d+)\.(.+)")


def hf_to_gguf(name: str) -> str | None:
    """llama.cpp's GGUF name of a llama-family HF tensor name (None when not in the mapping)."""
    stem, dot, kind = name.rpartition(".")
    if kind not in ("weight", "bias"):
        return None
    if stem in _HF_LLAMA_TOP:
        return f"{_HF_LLAMA_TOP[stem]}.{kind}"
    m = _HF_LAYER_RE.fullmatch(stem)
    if m and m.group(2) in _HF_LLAMA_LAYER:
        return f"blk.{m.group(1)}.{_HF_LLAMA_LAYER[m.group(2)]}.{kind}"
    return None


_GGUF_TO_HF_LAYER = {v: k for k, v in _HF_LLAMA_LAYER.items()}
_GGUF_TO_HF_TOP = {v: k for k, v in _HF_LLAMA_TOP.items()}
_GGUF_LAYER_RE = re.compile(r"blk\.(\d+)\.(.+)")


def gguf_to_hf(name: str) -> str | None:
    """Inverse of :func:`hf_to_gguf`."""
    stem, dot, kind = name.rpartition(".")
    if kind not in ("weight", "bias"):
        return None
    if stem in _GGUF_TO_HF_TOP:
        return f"{_GGUF_TO_HF_TOP[stem]}.{kind}"
    m = _GGUF_LAYER_RE.fullmatch(stem)
    if m and m.group(2) in _GGUF_TO_HF_LAYER:
        return f"model.layers.{m.group(1)}.{_GGUF_TO_HF_LAYER[m.group(2)]}.{kind}"
    return None


def match_names(names: list[str], other: list[str]) -> dict[str, str]:
    """Map each name of ``names`` to its tensor in ``other``: the same name, else the llama HF <-> GGUF
    counterpart. Names without a counterpart are left out."""
    have = set(other)
    out = {}
    for n in names:
        if n in have:
            out[n] = n
            continue
        for cand in (hf_to_gguf(n), gguf_to_hf(n)):
            if cand is not None and cand in have:
                out[n] = cand
                break
    return out


def rope_permuted(hf_name: str, gguf_arch: str | None) -> bool:
    """True when llama.cpp stores this HF tensor with the RoPE row permutation (llama ``q_proj``/``k_proj``
    weights and biases; ``LlamaModel.undo_permute``). Only the ``llama`` architecture is handled."""
    return gguf_arch == "llama" and hf_name.endswith(("q_proj.weight", "k_proj.weight", "q_proj.bias", "k_proj.bias"))


def permute_heads(n_head: int, n_head_kv: int | None, is_k: bool) -> int:
    """Number of heads the permutation is applied over (``n_head_kv`` for K when it differs)."""
    return n_head_kv if (is_k and n_head_kv is not None and n_head_kv != n_head) else n_head


def unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp's ``permute(w, n_head)``: ``w.reshape(n_head, 2, rows // n_head // 2, ...)
    .swapaxes(1, 2).reshape(w.shape)``. Works on any run of whole heads (``w.shape[0]`` a multiple of
    ``rows_per_head``) when ``n_head`` is the number of heads in ``w``."""
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise ValueError(f"{rows} rows do not split into {n_head} heads of an even size")
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute`` (for tests and for writing GGUF files like the converter)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
