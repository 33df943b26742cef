"""The quantize / dequantize kernel on a block view ``(n_blocks, block_len)``.

``scale`` and ``zero_point`` hold one value per block and broadcast along axis 1. The arithmetic is
done in the convention's working dtype (see :mod:`quantcore.conventions`):

    t     = x * (1/scale)            if convention.reciprocal else x / scale
    raw   = round(t + zero_point)    if convention.zp_before_round else round(t) + zero_point
            (with ``fma=True`` the product and the sum are rounded once, as fbgemm's AVX2 kernel)
    q     = clamp(raw, qmin, qmax)
    x_hat = (q - zero_point) * scale_stored

``raw`` is the unclamped integer (kept as a float array: it can exceed every integer type for
outliers far outside the range); ``scale_stored`` is the scale as stored (fp16 for GGUF).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .conventions import Convention, apply_rounding, fma_f32, store_scale


@dataclass(frozen=True)
class Quantized:
    """Per-element results in block layout (all arrays ``(n_blocks, block_len)``)."""

    raw: np.ndarray          # unclamped integer code (float dtype, integral values)
    q: np.ndarray            # clamped integer code (float dtype, integral values)
    dequantized: np.ndarray  # x_hat in the working dtype


def quantize_blocks(values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int,
                    conv: Convention, rounding: str, rng: np.random.Generator | None = None,
                    fma: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(raw, q)`` for a block array; see the module docstring for the exact arithmetic."""
    dt = conv.dtype
    s = np.asarray(scale, dtype=dt)[:, None]
    zp = np.asarray(zero_point, dtype=dt)[:, None]
    v = values if values.dtype == dt else values.astype(dt)
    if conv.reciprocal:
        with np.errstate(divide="ignore"):
            inv = np.where(s == 0, dt(0), dt(1) / s)
        if fma and conv.zp_before_round:
            t = fma_f32(v, inv, zp)
            zp_pending = False
        else:
            t = v * inv
            zp_pending = True
    else:
        t = v / s
        zp_pending = True
    if zp_pending and conv.zp_before_round:
        t += zp
        zp_pending = False
    raw = apply_rounding(t, rounding, rng, out=t)  # t is a fresh temporary: round in place
    if zp_pending:
        raw += zp
    # Clamp only when needed (np.clip costs more than both checks); ``q is raw`` tells callers
    # that nothing was clipped.
    if raw.min(initial=qmin) < qmin or raw.max(initial=qmax) > qmax:
        return raw, np.clip(raw, qmin, qmax)
    return raw, raw


def dequantize_blocks(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, conv: Convention) -> np.ndarray:
    """``(q - zero_point) * scale_stored`` in the working dtype."""
    dt = conv.dtype
    s = store_scale(np.asarray(scale, dtype=dt), conv.scale_storage)[:, None]
    zp = np.asarray(zero_point, dtype=dt)[:, None]
    out = q - zp
    out *= s
    return out


def fake_quantize_blocks(values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int,
                         conv: Convention, rounding: str, rng: np.random.Generator | None = None,
                         fma: bool = False) -> Quantized:
    raw, q = quantize_blocks(values, scale, zero_point, qmin, qmax, conv, rounding, rng, fma)
    return Quantized(raw, q, dequantize_blocks(q, scale, zero_point, conv))
