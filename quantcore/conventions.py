"""Conventions that decide the last bit, and rounding rules.

Two implementations of the same formula ``q = round(x / scale) + zero_point`` can disagree on an
element that sits (almost) exactly half-way between two codes. What decides it:

* the working dtype: float32 (PyTorch, llama.cpp) or float64 (textbook);
* divide by ``scale`` or multiply by its reciprocal ``1/scale`` (computed in the working dtype);
* whether the zero-point is added before rounding (``round(x*inv + zp)``, fbgemm's LEGACY path used
  by ``torch.quantize_per_tensor``) or after (``round(x*inv) + zp``, ``torch.fake_quantize_*``);
* the rounding rule (half-to-even, half-away-from-zero, ...);
* the precision in which the scale is stored (GGUF stores fp16 scales, but quantizes with fp32 ones);
* whether codes saturate at the format's range or the storage type's (``saturate``, below).

How scale and zero-point follow from the range belongs to the convention as well (``qparams_rule``, the
scale floor ``eps``, the symmetric zero-point policy): :mod:`quantcore.params` states each rule.

Named conventions:

``float64``   textbook, seeds 000-002: float64, divide, ``round(x/scale + zp)``, half-to-even.
``torch``     ``torch.quantize_per_tensor`` / ``quantize_per_channel`` and the ``torch.ao`` MinMax
              observers: float32, ``inv = float32(1) / float32(scale)``, ``rint(x*inv + zp)``
              (half-to-even, zero-point added before rounding); per-tensor qint8/quint8 goes through
              fbgemm's AVX2 kernel, which forms ``x*inv + zp`` with one fused multiply-add (a single
              rounding), while ``quantize_per_channel`` rounds the product and the sum separately;
              observer qparams computed in float32 (measured on torch 2.13, x86).
``torch-fake`` ``torch.fake_quantize_per_tensor_affine`` / ``_per_channel_affine``: as ``torch`` but
              ``nearbyint(x*inv) + zp``.
``gguf``      llama.cpp / gguf-py: float32, multiply by reciprocal, round half away from zero, fp16 scales.
``torchao``   torchao 0.18 ``choose_qparams_affine`` / ``quantize_affine`` / ``dequantize_affine``: the
              ``torch-fake`` arithmetic, but the scale floor is float32's smallest normal 2**-126 (torchao's
              default ``eps = finfo(input.dtype).smallest_normal``) instead of the observers' 2**-23, and the
              symmetric zero-point is ``int((qmin + qmax + 1) / 2)`` for every format.
``onnx``      ONNX Runtime 1.32 ``QuantizeLinear`` / ``DequantizeLinear`` (CPU, MLAS): float32, **divide** by
              the scale (no reciprocal), round half to even, add the zero-point after rounding, saturate to
              the output type's full range (int8 [-128, 127], uint4 [0, 15], ...) whatever range the scale
              was chosen for. Scale and zero-point follow ORT's quantization tool (``qparams_rule="onnx"``,
              see :mod:`quantcore.params`). Dequantize: ``(q - zp) * scale`` in float32.
``matmulnbits`` ONNX Runtime's ``MatMulNBits`` weights as ``matmul_nbits_quantizer`` makes them (MLAS
              ``MlasQuantizeBlockwise``, 2/4/8 bits, unsigned codes): float32, multiply by the reciprocal
              (``scale ? 1/scale : 0``), ``q = clamp(roundf(x * inv + zp), 0, 2**b - 1)`` (zero-point added
              before rounding, half away from zero); symmetric scale ``signed_amax`` (see params), no scale
              floor (an all-zero block has scale 0 and codes = zero-point).

Saturation (``saturate``): codes are clamped to the format's ``[qmin, qmax]`` (``"format"``), or to the full
range of the ``bits``-wide integer the codes are stored in (``"storage"``). The two differ when the scale was
chosen for a narrower range than the storage type: PyTorch's ``reduce_range`` (measured on torch 2.13: the
observer derives qparams from qint8 [-64, 63], ``torch.quantize_per_tensor`` / ``quantize_per_channel`` clamp
to [-128, 127], so x*inv = 63.5 gives code 64 and outliers reach -128/127), a custom or narrow range, and
ONNX Runtime's symmetric int8 ([-127, 127] for the scale, [-128, 127] for ``QuantizeLinear``).
``torch.fake_quantize_*`` clamp to the ``quant_min``/``quant_max`` they are given, and
``torch.ao.quantization.FakeQuantize`` hands them its observer's ``quant_min``/``quant_max``, which torch 2.13
stores already reduced ([-64, 63]): ``torch-fake`` saturates to the format's range.

Example (seed 001, filter_1): x = -0.21, scale = 1.7/255, zp = -8. In float32 x*inv = -31.499998, so
``round(x*inv) + zp = -39`` (torch-fake) while ``x*inv + zp`` rounds to the float32 -39.5 exactly and
half-to-even gives ``-40`` (torch, and the seed's table).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROUNDINGS = ("half-even", "half-away", "floor", "ceil", "trunc", "stochastic")
FLOAT32_EPS = 2.0 ** -23    # torch observers' default eps (finfo(float32).eps)
FLOAT32_TINY = 2.0 ** -126  # finfo(float32).smallest_normal: torchao's default eps, ORT's smallest scale


@dataclass(frozen=True)
class Convention:
    name: str
    dtype: type            # working float dtype of quantize/dequantize arithmetic
    reciprocal: bool       # multiply by 1/scale (computed in dtype) instead of dividing
    zp_before_round: bool  # round(x*inv + zp) instead of round(x*inv) + zp
    rounding: str          # default rounding rule
    symmetric_scale: str   # default symmetric scale rule (see params.SYMMETRIC_SCALES)
    qparams_dtype: type    # dtype in which scale and zero-point are derived from the range
    scale_storage: str | None  # scale rounded to this storage format for dequantization only ("fp16")
    fma_per_tensor: bool = False  # per-tensor: x*inv + zp with one rounding (fbgemm AVX2 FMA)
    saturate: str = "format"      # clamp codes to the format's [qmin, qmax] or the storage integer's range
    qparams_rule: str = "observer"  # how scale/zero-point follow from [lo, hi] (params.QPARAMS_RULES)
    eps: float = FLOAT32_EPS        # smallest scale of the "observer" rule
    symmetric_zero_point: str = "middle"  # params.SYMMETRIC_ZERO_POINTS

    def code_range(self, fmt) -> tuple[int, int]:
        """The interval codes are clamped to for ``fmt`` (an IntFormat) under this convention."""
        if self.saturate == "storage":
            return fmt.storage_qmin, fmt.storage_qmax
        return fmt.qmin, fmt.qmax


_F32, _F64 = np.float32, np.float64
CONVENTIONS: dict[str, Convention] = {
    "float64": Convention("float64", _F64, False, True, "half-even", "qmax", _F64, None),
    "torch": Convention("torch", _F32, True, True, "half-even", "half_range", _F32, None, fma_per_tensor=True,
                        saturate="storage", symmetric_zero_point="torch"),
    "torch-fake": Convention("torch-fake", _F32, True, False, "half-even", "half_range", _F32, None,
                             symmetric_zero_point="torch"),
    "torchao": Convention("torchao", _F32, True, False, "half-even", "half_range", _F32, None,
                          eps=FLOAT32_TINY, symmetric_zero_point="torchao"),
    "gguf": Convention("gguf", _F32, True, False, "half-away", "qmax", _F32, "fp16"),
    "onnx": Convention("onnx", _F32, False, False, "half-even", "half_range", _F64, None, saturate="storage",
                       qparams_rule="onnx", symmetric_zero_point="onnx"),
    "matmulnbits": Convention("matmulnbits", _F32, True, True, "half-away", "signed_amax", _F32, None,
                              qparams_rule="mlas", eps=0.0),
}


def get_convention(name: str) -> Convention:
    try:
        return CONVENTIONS[name]
    except KeyError:
        raise ValueError(f"unknown convention {name!r}; expected one of {', '.join(CONVENTIONS)}") from None


def round_half_away(t: np.ndarray) -> np.ndarray:
    """Round half away from zero exactly (C ``roundf``), without the ``x + 0.5`` double rounding.

    Same formula as gguf-py's ``np_roundf``: ``floor(a) + floor(2*(a - floor(a)))`` on ``a = |t|``.
    """
    a = np.abs(t)
    f = np.floor(a)
    return np.copysign(f + np.floor(2 * (a - f)), t)


def apply_rounding(t: np.ndarray, rule: str, rng: np.random.Generator | None = None,
                   out: np.ndarray | None = None) -> np.ndarray:
    """Round ``t`` to integers (same dtype) by ``rule``; ``stochastic`` needs ``rng``.

    Stochastic rounding rounds up with probability ``frac(t)``: unbiased, ``E[round(t)] = t``.
    ``out`` may be ``t`` itself for the elementwise rules.
    """
    if rule == "half-even":
        return np.rint(t, out=out)
    if rule == "half-away":
        r = round_half_away(t)
        if out is not None:
            out[...] = r
            return out
        return r
    if rule == "floor":
        return np.floor(t, out=out)
    if rule == "ceil":
        return np.ceil(t, out=out)
    if rule == "trunc":
        return np.trunc(t, out=out)
    if rule == "stochastic":
        if rng is None:
            raise ValueError("stochastic rounding needs a seeded random generator")
        f = np.floor(t)
        u = rng.random(t.shape, dtype=np.float64 if t.dtype == np.float64 else np.float32)
        r = f + (u < (t - f))
        if out is not None:
            out[...] = r
            return out
        return r
    raise ValueError(f"unknown rounding {rule!r}; expected one of {', '.join(ROUNDINGS)}")


def fma_f32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Correctly rounded float32 ``a*b + c`` (one rounding, as ``fmaf`` / ``_mm256_fmadd_ps``).

    ``a*b`` of two float32 is exact in float64 (48 <= 53 bits). The sum is formed with TwoSum and
    rounded to odd in float64 (53 >= 24 + 2 bits), so the final cast to float32 rounds only once.
    """
    p = np.asarray(a, np.float32).astype(np.float64) * np.asarray(b, np.float32).astype(np.float64)
    c = np.asarray(c, np.float32).astype(np.float64)
    s = p + c
    bp = s - p
    err = (p - (s - bp)) + (c - bp)  # exact: p + c == s + err
    fix = (err != 0) & ((s.view(np.int64) & 1) == 0) & np.isfinite(s)
    if fix.any():
        with np.errstate(invalid="ignore"):
            s = np.where(fix, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
    with np.errstate(over="ignore"):
        return s.astype(np.float32)


def store_scale(scale: np.ndarray, storage: str | None) -> np.ndarray:
    """Round a scale to its storage format (``fp16``/``bf16``) and back; ``None``/``fp32`` keep it."""
    if storage in (None, "fp32", "none"):
        return scale
    if storage == "fp16":
        with np.errstate(over="ignore"):
            out = np.asarray(scale).astype(np.float16).astype(scale.dtype)
        _check_stored(scale, out, storage)
        return out
    if storage == "bf16":
        # Round to nearest even on the upper 16 bits of the float32 pattern.
        bits = np.asarray(scale, dtype=np.float32).view(np.uint32).astype(np.uint64)
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        out = bits.astype(np.uint32).view(np.float32).astype(scale.dtype)
        _check_stored(scale, out, storage)
        return out
    raise ValueError(f"unknown scale storage {storage!r}; expected fp32, fp16 or bf16")


def _check_stored(scale: np.ndarray, stored: np.ndarray, storage: str) -> None:
    """A finite scale that overflows its storage format would turn every x_hat into inf/NaN: refuse it."""
    bad = np.flatnonzero(np.isinf(stored) & np.isfinite(scale))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"scale {float(np.ravel(scale)[i]):g} of block {i} overflows {storage} "
                         f"(largest finite {float(np.finfo(np.float16).max) if storage == 'fp16' else 3.39e38:g}); "
                         f"store scales as fp32 or narrow the range")
