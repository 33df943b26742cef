"""Choosing the range ``[lo, hi]`` of each block, and turning it into a scale and zero-point.

Range selection (one ``lo``/``hi`` per block, computed from the block's real elements):

``MinMax``        the data's min and max.
``CustomRange``   user-given; a scalar pair for the whole tensor, or one pair per channel.
``Percentile``    ``lo = P(100 - pct)``, ``hi = P(pct)`` (linear interpolation): clips outliers.
``MSEOptimal``    ``[a*min, a*max]`` for the ratio ``a`` in ``{1/steps, 2/steps, ..., 1}`` that minimizes
                  the block's squared reconstruction error; the chosen ratio is reported.
``KLDivergence``  TensorRT entropy calibration: histogram ``|x|`` into ``bins`` bins, pick the threshold
                  ``T`` whose clipped-and-requantized histogram has the least KL divergence from the
                  original; the range becomes ``[-T, T]`` intersected with ``[min, max]``.

Quantization parameters from ``[lo, hi]``: the convention names a rule (``Convention.qparams_rule``) and a
symmetric zero-point policy; ``symmetric_scale`` picks the symmetric denominator. All of it is computed in
the convention's ``qparams_dtype``.

``observer`` rule (float64, torch, torch-fake, torchao, gguf; PyTorch's observers and torchao's
``choose_qparams_affine``), with the convention's ``eps`` (2**-23 as the torch observers; torchao 2**-126):

affine        ``lo' = min(lo, 0)``, ``hi' = max(hi, 0)`` (so 0 is exactly representable),
              ``scale = max((hi' - lo') / (qmax - qmin), eps)``,
              ``zero_point = clamp(qmin - round_half_even(lo' / scale), qmin, qmax)``.
symmetric     ``amax = max(|lo|, |hi|)``, ``zero_point`` by the convention's policy (below),
              ``scale = max(amax / d, eps)`` with ``d`` chosen by ``symmetric_scale``:
              ``qmax`` -> ``qmax - zero_point`` (seed 002, seed 003, llama.cpp Q8_0),
              ``half_range`` -> ``(qmax - qmin) / 2`` (PyTorch observers, torchao, ORT: 127.5 for int8),
              ``max_abs_q`` -> ``max(|qmin - zp|, |qmax - zp|)`` (seeds 000/001's formula: 128 for int8),
              ``signed_amax`` -> ``scale = m / (qmin - zero_point)`` where ``m`` is the block's largest-magnitude
              value *with its sign* (``hi`` if ``|hi| > |lo|`` else ``lo``, as MLAS ``range2scale``): the
              largest magnitude lands exactly on ``qmin`` (-8 for 4 bits), and the scale is negative when
              ``m > 0``. GGUF Q4_0 and ONNX Runtime's symmetric MatMulNBits; eps clamps ``|scale|``.
affine_float  a float offset instead of an integer zero-point (GGUF Q4_1, PyTorch's
              ``per_channel_affine_float_qparams``): ``scale = (hi - lo) / (qmax - qmin)`` (1 when
              ``<= eps``, as PyTorch), ``zero_point = qmin - lo / scale`` kept as a float, so
              ``x_hat = lo + scale * (q - qmin)``.

Symmetric zero-point policies (``Convention.symmetric_zero_point``): ``middle`` 0 for signed formats,
``(qmin + qmax + 1) // 2`` for unsigned (MLAS ``kMid``); ``torch`` 0 for signed, unsigned 128 (8 bits:
``1 << (bits - 1)``) or ``(qmin + qmax) // 2`` for a custom range, reduce_range rejected;
``torchao`` ``int((qmin + qmax + 1) / 2)`` (truncated) for every format; ``onnx``
``round_half_even((qmin + qmax) / 2)`` for every format (uint8 128, uint4 8, int8 [-127, 127] 0).

``onnx`` rule: ONNX Runtime 1.32's quantization tool (``onnxruntime.quantization.quant_utils``), fed the
float32 ``rmin``/``rmax`` its calibrators produce (``lo``/``hi`` are rounded to float32 first):

per-tensor /  ``compute_scale_zp``: ``rmin = min(lo, 0)``, ``rmax = max(hi, 0)`` (float32); symmetric:
per-channel   ``rmin, rmax = -amax, amax``; ``s64 = (f64(rmax) - f64(rmin)) / (qmax - qmin)`` in float64;
              if ``s64 < 2**-126`` (float32 tiny): ``scale = 1, zero_point = 0``; otherwise
              ``zero_point = round_half_even(qmin - rmin / s64)`` in float64 with the *unrounded* ``s64``
              (symmetric: the ``onnx`` policy above) and ``scale = f32(s64)``.
per-group     ``compute_scale_zp_blocked`` (opset-21 ``block_size``): ``dr = f64(rmax - rmin)`` (the
(blocked)     difference is rounded in float32 first), ``scale = f32(dr / (qmax - qmin))``; if that float32
              scale is below 2**-126: ``scale = 1`` and ``zero_point = 0`` (symmetric: the policy's
              zero-point is kept, as ORT does); otherwise
              ``zero_point = clamp(round_half_even(qmin - f64(rmin) / f64(scale)), qmin, qmax)`` (the
              *rounded* scale).
              ``symmetric_scale`` other than ``half_range`` replaces ``(qmax - qmin) / 2`` by its own ``d``.

``mlas`` rule: MLAS ``MlasQuantizeBlockwise`` (``range2scalezp`` / ``range2scale``; ORT's MatMulNBits
quantizer), all float32, no scale floor: affine ``lo' = min(lo, 0)``, ``hi' = max(hi, 0)``,
``scale = (hi' - lo') / (qmax - qmin)``, ``z = qmin - lo' / scale`` (``lo'`` when the scale is 0),
``zero_point = qmin if z < qmin, qmax if z > qmax, else roundf(z)`` (half away from zero); symmetric: the
``middle`` zero-point and the ``symmetric_scale`` rule (default ``signed_amax``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from .conventions import FLOAT32_TINY, FLOAT32_EPS, Convention, round_half_away
from .formats import IntFormat
from .granularity import BlockView, PerTensor

EPS = FLOAT32_EPS
MAPPINGS = ("symmetric", "affine", "affine_float")
SYMMETRIC_SCALES = ("qmax", "half_range", "max_abs_q", "signed_amax")
SYMMETRIC_ZERO_POINTS = ("middle", "torch", "torchao", "onnx")


@dataclass(frozen=True)
class MinMax:
    label: str = "min/max"


@dataclass(frozen=True)
class CustomRange:
    """A given range: scalars for the whole tensor, or sequences with one value per channel."""

    lo: float | tuple[float, ...]
    hi: float | tuple[float, ...]

    def __post_init__(self) -> None:
        lo, hi = np.atleast_1d(np.asarray(self.lo, dtype=np.float64)), np.atleast_1d(np.asarray(self.hi, dtype=np.float64))
        if lo.shape != hi.shape:
            raise ValueError(f"custom range: {lo.size} minimum(s) but {hi.size} maximum(s)")
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise ValueError("custom range must be finite")
        bad = np.flatnonzero(lo > hi)
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"custom range for channel {i}: min {lo[i]:g} is greater than max {hi[i]:g}")
        # Store hashable tuples so the spec stays a frozen, comparable value.
        object.__setattr__(self, "lo", float(lo[0]) if lo.size == 1 and np.ndim(self.lo) == 0 else tuple(lo.tolist()))
        object.__setattr__(self, "hi", float(hi[0]) if hi.size == 1 and np.ndim(self.hi) == 0 else tuple(hi.tolist()))

    @property
    def label(self) -> str:
        return "custom range"


@dataclass(frozen=True)
class Percentile:
    pct: float = 99.9

    def __post_init__(self) -> None:
        if not 50.0 < float(self.pct) <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {self.pct}")

    @property
    def label(self) -> str:
        return f"percentile {self.pct:g}"


@dataclass(frozen=True)
class MSEOptimal:
    steps: int = 64

    def __post_init__(self) -> None:
        if not 1 <= int(self.steps) <= 1000:
            raise ValueError(f"MSE search steps must be between 1 and 1000, got {self.steps}")

    @property
    def label(self) -> str:
        return "MSE-optimal clip"


@dataclass(frozen=True)
class KLDivergence:
    bins: int = 2048

    def __post_init__(self) -> None:
        if not 16 <= int(self.bins) <= 1 << 16:
            raise ValueError(f"KL histogram bins must be between 16 and 65536, got {self.bins}")

    @property
    def label(self) -> str:
        return "KL (entropy) calibration"


RangeMethod = Union[MinMax, CustomRange, Percentile, MSEOptimal, KLDivergence]


def _nan_padded(blocks: BlockView) -> np.ndarray:
    if blocks.valid is None:
        return blocks.values
    return np.where(blocks.valid, blocks.values, np.nan)


def percentile_range(blocks: BlockView, pct: float, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """Linear-interpolated percentiles per block, computed on the values cast to ``dtype``."""
    v = _nan_padded(blocks).astype(dtype, copy=False)
    fn = np.percentile if blocks.valid is None else np.nanpercentile
    lo, hi = fn(v, [100.0 - pct, pct], axis=1)
    return lo.astype(dtype), hi.astype(dtype)


def custom_range(blocks: BlockView, r: CustomRange, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.atleast_1d(np.asarray(r.lo, dtype=np.float64)), np.atleast_1d(np.asarray(r.hi, dtype=np.float64))
    if lo.size == 1:
        return (np.full(blocks.n_blocks, lo[0], dtype=dtype), np.full(blocks.n_blocks, hi[0], dtype=dtype))
    channel = blocks.channel_of_block
    if isinstance(blocks.granularity, PerTensor) or blocks.tile[0] != 1:
        raise ValueError(f"a per-channel custom range needs a per-channel or per-group scheme, not "
                         f"{blocks.granularity.label} (its blocks span several channels)")
    n_channels = blocks.layout[0]
    if lo.size != n_channels:
        raise ValueError(f"custom range has {lo.size} channel values but the tensor has {n_channels} channels")
    return lo[channel].astype(dtype), hi[channel].astype(dtype)


def symmetric_zero_point(fmt: IntFormat, policy: str) -> int:
    """The zero-point of a symmetric mapping under ``policy`` (see the module docstring)."""
    qmin, qmax = fmt.qmin, fmt.qmax
    if policy == "middle":
        return 0 if fmt.signed else (qmin + qmax + 1) // 2
    if policy == "torch":
        if fmt.signed:
            return 0
        if fmt.reduce_range and not fmt.is_custom:
            raise ValueError("PyTorch rejects reduce_range for unsigned symmetric quantization "
                             "(its zero-point 128 would lie outside [0, 127]); use the float64 convention")
        return (qmin + qmax) // 2 if fmt.is_custom else 1 << (fmt.bits - 1)
    if policy == "torchao":
        return int((qmax + qmin + 1) / 2)
    if policy == "onnx":
        return int(np.rint((qmin + qmax) / 2.0))
    raise ValueError(f"unknown symmetric zero-point policy {policy!r}; expected one of {SYMMETRIC_ZERO_POINTS}")


def symmetric_scale(lo: np.ndarray, hi: np.ndarray, fmt: IntFormat, zero_point: int, rule: str,
                    dtype: type) -> np.ndarray:
    """Unclamped symmetric scale per block in ``dtype`` (``lo``/``hi`` already in ``dtype``)."""
    qmin, qmax = fmt.qmin, fmt.qmax
    if rule == "signed_amax":
        if qmin >= zero_point:
            raise ValueError(f"format {fmt.label} leaves no codes below the zero-point {zero_point} for the "
                             f"signed_amax scale rule")
        m = np.where(np.abs(hi) > np.abs(lo), hi, lo)
        return (m / dtype(qmin - zero_point)).astype(dtype, copy=False)
    amax = np.maximum(-np.minimum(lo, dtype(0)), np.maximum(hi, dtype(0)))
    if rule == "qmax":
        denom = float(qmax - zero_point)
    elif rule == "half_range":
        denom = (qmax - qmin) / 2.0
    elif rule == "max_abs_q":
        denom = float(max(abs(qmin - zero_point), abs(qmax - zero_point)))
    else:
        raise ValueError(f"unknown symmetric scale rule {rule!r}; expected one of {SYMMETRIC_SCALES}")
    if denom <= 0:
        raise ValueError(f"format {fmt.label} leaves no positive codes for a symmetric mapping")
    return (amax / dtype(denom)).astype(dtype, copy=False)


def _observer_qparams(lo, hi, fmt: IntFormat, mapping: str, sym_rule: str, conv: Convention, per_group: bool):
    dtype = conv.qparams_dtype
    qmin, qmax = fmt.qmin, fmt.qmax
    eps = dtype(conv.eps)
    if mapping == "affine":
        lo_n = np.minimum(lo, dtype(0))
        hi_p = np.maximum(hi, dtype(0))
        scale = np.maximum((hi_p - lo_n) / dtype(qmax - qmin), eps)
        zp = np.clip(dtype(qmin) - np.rint(lo_n / scale), qmin, qmax)
        return scale, zp.astype(dtype)
    if mapping == "symmetric":
        mid = symmetric_zero_point(fmt, conv.symmetric_zero_point)
        scale = symmetric_scale(lo, hi, fmt, mid, sym_rule, dtype)
        # A signed_amax scale keeps its sign; only its magnitude is floored.
        scale = np.copysign(np.maximum(np.abs(scale), eps), scale) if sym_rule == "signed_amax" \
            else np.maximum(scale, eps)
        return scale, np.full_like(scale, mid)
    if mapping == "affine_float":
        scale = (hi - lo) / dtype(qmax - qmin)
        scale = np.where(scale > eps, scale, dtype(1))
        zp = dtype(qmin) - lo / scale
        return scale, zp.astype(dtype)
    raise ValueError(f"unknown mapping {mapping!r}; expected one of {', '.join(MAPPINGS)}")


def _onnx_qparams(lo, hi, fmt: IntFormat, mapping: str, sym_rule: str, conv: Convention, per_group: bool):
    if mapping == "affine_float":
        raise ValueError("the onnx convention has integer zero-points only (mapping affine or symmetric)")
    f32, f64 = np.float32, np.float64
    qmin, qmax = fmt.qmin, fmt.qmax
    rmin = np.minimum(np.asarray(lo).astype(f32), f32(0))
    rmax = np.maximum(np.asarray(hi).astype(f32), f32(0))
    if mapping == "symmetric":
        zp = symmetric_zero_point(fmt, conv.symmetric_zero_point)
        if sym_rule == "half_range":
            amax = np.maximum(np.abs(rmin), np.abs(rmax))
            rmin, rmax = -amax, amax
            dr = (rmax - rmin).astype(f64) if per_group else rmax.astype(f64) - rmin.astype(f64)
            s64 = dr / f64(qmax - qmin)
        else:
            s64 = symmetric_scale(rmin.astype(f64), rmax.astype(f64), fmt, zp, sym_rule, f64)
        zp = np.full(s64.shape, f64(zp))
    elif mapping == "affine":
        dr = (rmax - rmin).astype(f64) if per_group else rmax.astype(f64) - rmin.astype(f64)
        s64 = dr / f64(qmax - qmin)
        zp = None
    else:
        raise ValueError(f"unknown mapping {mapping!r}; expected one of {', '.join(MAPPINGS)}")
    scale32 = s64.astype(f32)
    degenerate = np.abs(scale32 if per_group else s64) < FLOAT32_TINY
    scale = np.where(degenerate, f32(1), scale32)
    if zp is None:
        s_for_zp = scale.astype(f64) if per_group else s64
        with np.errstate(divide="ignore", invalid="ignore"):  # degenerate blocks are replaced below
            zp = np.rint(f64(qmin) - rmin.astype(f64) / s_for_zp)
        if per_group:
            zp = np.clip(zp, qmin, qmax)
    if not (per_group and mapping == "symmetric"):  # the blocked symmetric path keeps its zero-point
        zp = np.where(degenerate, f64(0), zp)
    return scale, zp


def _mlas_qparams(lo, hi, fmt: IntFormat, mapping: str, sym_rule: str, conv: Convention, per_group: bool):
    f32 = np.float32
    qmin, qmax = fmt.qmin, fmt.qmax
    lo, hi = np.asarray(lo).astype(f32), np.asarray(hi).astype(f32)
    if mapping == "symmetric":
        mid = symmetric_zero_point(fmt, "middle")
        scale = symmetric_scale(lo, hi, fmt, mid, sym_rule, f32)
        return scale, np.full(scale.shape, f32(mid))
    if mapping != "affine":
        raise ValueError(f"the matmulnbits convention supports mappings affine and symmetric, not {mapping!r}")
    lo_n = np.minimum(lo, f32(0))
    hi_p = np.maximum(hi, f32(0))
    scale = ((hi_p - lo_n) / f32(qmax - qmin)).astype(f32)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(scale != 0, f32(qmin) - lo_n / scale, lo_n).astype(f32)
    zp = np.clip(round_half_away(z), qmin, qmax)  # z < qmin -> qmin, z > qmax -> qmax, else roundf(z)
    return scale, zp.astype(f32)


QPARAMS_RULES = {"observer": _observer_qparams, "onnx": _onnx_qparams, "mlas": _mlas_qparams}


def choose_qparams(lo: np.ndarray, hi: np.ndarray, fmt: IntFormat, mapping: str, symmetric_scale_rule: str,
                   conv: Convention, per_group: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero-point per block from ``[lo, hi]`` by the convention's rule (module docstring).

    Returns ``(scale, zero_point)`` in the convention's ``qparams_dtype`` (the ``onnx`` rule returns its
    float32 scale); zero_point holds integers except for ``affine_float``. ``per_group`` selects the
    blocked variant of rules that have one (``onnx``).
    """
    try:
        rule = QPARAMS_RULES[conv.qparams_rule]
    except KeyError:
        raise ValueError(f"unknown qparams rule {conv.qparams_rule!r}; expected one of {', '.join(QPARAMS_RULES)}") from None
    dtype = conv.qparams_dtype
    return rule(np.asarray(lo, dtype=dtype), np.asarray(hi, dtype=dtype), fmt, mapping, symmetric_scale_rule,
                conv, per_group)
