"""The quantize / dequantize kernel on a block view ``(n_blocks, block_len)``.

``scale`` and ``zero_point`` hold one value per block and broadcast along axis 1. The arithmetic is
done in the convention's working dtype (see :mod:`quantcore.conventions`):

    t     = x * (1/scale)            if convention.reciprocal else x / scale   (t = 0 where scale == 0)
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
    # x / scale may overflow to +-inf (tiny scales, huge outliers): it saturates to qmin/qmax below.
    with np.errstate(over="ignore"):
        if conv.reciprocal:
            with np.errstate(divide="ignore"):
                inv = np.where(s == 0, dt(0), dt(1) / s)
            if fma and conv.zp_before_round:
                t = _fused_multiply_add(v, inv, zp, rounding)
                zp_pending = False
            else:
                t = v * inv
                zp_pending = True
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                t = v / s
            if not s.all():  # a zero scale (MLAS blocks of zeros) maps every element to the zero-point
                t[np.broadcast_to(s == 0, t.shape)] = 0
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


HALF_ROUNDINGS = ("half-even", "half-away")
FMA_EXACT_BELOW = float(1 << 21)  # beyond this float32 spacing reaches 1/4: use the exact emulation


def _fused_multiply_add(v: np.ndarray, inv: np.ndarray, zp: np.ndarray, rounding: str) -> np.ndarray:
    """``x*inv + zp`` for rounding to integers as if computed with one float32 rounding (FMA).

    With ``zp == 0`` a plain product already rounds once. Otherwise the plain float32 ``x*inv + zp``
    (two roundings) is within two ulps of the fused result; its nearest integer under a half-way
    rounding rule can differ only when it lies within a few ulps of a half-integer. Those elements
    (and every element once magnitudes reach 2**21) are recomputed with the exact emulation
    :func:`quantcore.conventions.fma_f32`. The returned values therefore round to the same integers
    as the fused ones (they are not bit-identical floats away from the half-integers).
    """
    if not zp.any():
        return v * inv
    if rounding not in HALF_ROUNDINGS:
        return fma_f32(v, inv, zp)
    t = v * inv
    t += zp
    tmax = float(np.max(np.abs(t), initial=0.0))
    if not tmax < FMA_EXACT_BELOW:
        return fma_f32(v, inv, zp)
    # Distance to the nearest half-integer; two ulps of tmax bound both roundings of the plain sum.
    tol = 4.0 * float(np.spacing(np.float32(tmax)))
    near = np.abs(t - np.rint(t))
    suspicious = near >= 0.5 - tol
    if suspicious.any():
        idx = np.flatnonzero(suspicious)
        row = idx // v.shape[1]
        t.reshape(-1)[idx] = fma_f32(v.reshape(-1)[idx], inv[:, 0][row], zp[:, 0][row])
    return t


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
