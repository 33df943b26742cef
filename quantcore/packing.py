"""Bit packing of integer codes into runtime layouts: ONNX Runtime's ``MatMulNBits`` initializers.

``MatMulNBits`` (``com.microsoft``) computes ``Y = A @ W_hat`` for a weight ``W`` of shape ``(K, N)`` (ONNX
MatMul's ``B``) quantized in blocks of ``block_size`` consecutive elements along ``K`` (MLAS
``MlasQuantizeBlockwise``, column-wise). Its three initializers, as ``matmul_nbits_quantizer`` writes them:

``B``            uint8 ``(N, k_blocks, block_size * bits / 8)``: column ``n``, block ``j``, the block's codes
                 packed ``8 / bits`` per byte, the first code in the lowest bits; codes past ``K`` (the
                 ragged last block) are 0.
``scales``       ``(N, k_blocks)``, the dtype of the weights (float32 here).
``zero_points``  uint8 ``(N, ceil(k_blocks * bits / 8))``: each column's block zero-points packed the same
                 way, a last partial byte filled with the middle code ``2**(bits - 1)``; absent for
                 symmetric weights (the operator then uses ``2**(bits - 1)``).

``k_blocks = ceil(K / block_size)``. A quantcore result maps onto it when it quantized a 2-D weight with
``PerGroup(block_size, axis)`` and an unsigned 2-, 4- or 8-bit format: ``axis`` is ``K`` (0 for ONNX's
``(K, N)`` ``B``, -1 for PyTorch's ``(out_features, in_features) = (N, K)`` weight).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .granularity import PerGroup

PACKED_BITS = (2, 4, 8)


def pack_low_bits_first(codes: np.ndarray, bits: int, fill: int = 0) -> np.ndarray:
    """Pack unsigned codes along the last axis, ``8 // bits`` per byte, the first code in the lowest bits.

    The last axis is padded with ``fill`` to a whole number of bytes. Returns uint8 with the last axis
    ``ceil(n * bits / 8)`` long.
    """
    if bits not in PACKED_BITS:
        raise ValueError(f"packing supports {PACKED_BITS} bits per code, got {bits}")
    per_byte = 8 // bits
    c = np.asarray(codes).astype(np.uint8)
    pad = (-c.shape[-1]) % per_byte
    if pad:
        c = np.concatenate([c, np.full(c.shape[:-1] + (pad,), fill, np.uint8)], axis=-1)
    c = c.reshape(c.shape[:-1] + (-1, per_byte))
    shifts = (np.arange(per_byte, dtype=np.uint8) * bits)
    return np.bitwise_or.reduce(c << shifts, axis=-1).astype(np.uint8)


@dataclass(frozen=True)
class MatMulNBitsWeights:
    """The ``MatMulNBits`` initializers and attributes for one quantized weight (module docstring)."""

    B: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray | None
    K: int
    N: int
    bits: int
    block_size: int


def matmulnbits_weights(result) -> MatMulNBitsWeights:
    """Pack a :class:`quantcore.QuantResult` of a 2-D weight into ``MatMulNBits`` initializers.

    The result must come from an unsigned 2/4/8-bit format and ``PerGroup(block_size, axis)`` along ``K``;
    ``zero_points`` is None when every block's zero-point is the middle code (a symmetric mapping).
    Raises ValueError otherwise, saying what does not fit.
    """
    spec = result.spec
    if spec.kind != "int":
        raise ValueError("MatMulNBits packs integer schemes, not GGUF presets or float formats")
    fmt, g = spec.element, spec.granularity
    if fmt.signed or fmt.bits not in PACKED_BITS or (result.qmin, result.qmax) != (0, (1 << fmt.bits) - 1):
        raise ValueError(f"MatMulNBits stores unsigned 2/4/8-bit codes over their full range, not {fmt.label}")
    if not isinstance(g, PerGroup):
        raise ValueError(f"MatMulNBits quantizes in blocks along K: use PerGroup(block_size, axis), not {g.label}")
    q = result.q
    if q.ndim != 2:
        raise ValueError(f"MatMulNBits weights are 2-D (K, N), got shape {q.shape}")
    zp = np.asarray(result.zero_point, np.float64)
    if (zp != np.round(zp)).any():
        raise ValueError("MatMulNBits zero-points are integers (use mapping affine or symmetric)")
    nk = np.moveaxis(q, g.axis, -1)                       # (N, K)
    N, K = nk.shape
    bs = int(g.size)
    kb = -(-K // bs)
    codes = np.zeros((N, kb * bs), np.uint8)
    codes[:, :K] = nk
    B = pack_low_bits_first(codes.reshape(N, kb, bs), fmt.bits)
    scales = np.asarray(result.scale).reshape(N, kb)
    mid = 1 << (fmt.bits - 1)
    zps = zp.reshape(N, kb).astype(np.uint8)
    zero_points = None if (zps == mid).all() and spec.mapping == "symmetric" else \
        pack_low_bits_first(zps, fmt.bits, fill=mid)
    return MatMulNBitsWeights(B, scales, zero_points, K, N, fmt.bits, bs)
