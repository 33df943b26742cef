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

Quantization parameters from ``[lo, hi]`` (``eps = 2**-23``, float32 epsilon, as PyTorch's observers):

affine        ``lo' = min(lo, 0)``, ``hi' = max(hi, 0)`` (so 0 is exactly representable),
              ``scale = max((hi' - lo') / (qmax - qmin), eps)``,
              ``zero_point = clamp(round_half_even(qmin - lo' / scale), qmin, qmax)``.
symmetric     ``amax = max(|lo|, |hi|)``; signed: ``zero_point = 0``; unsigned: ``zero_point`` is the
              middle code (``(qmin + qmax + 1) // 2``; PyTorch: 128 for quint8, ``(qmin+qmax)//2`` for a
              custom range). ``scale = max(amax / d, eps)`` with ``d`` chosen by ``symmetric_scale``:
              ``qmax`` -> ``qmax - zero_point`` (seed 002, seed 003, llama.cpp Q8_0),
              ``half_range`` -> ``(qmax - qmin) / 2`` (PyTorch observers: 127.5 for int8),
              ``max_abs_q`` -> ``max(|qmin|, |qmax|)`` (seeds 000/001's formula: 128 for int8).
affine_float  a float offset instead of an integer zero-point (GGUF Q4_1, PyTorch's
              ``per_channel_affine_float_qparams``): ``scale = (hi - lo) / (qmax - qmin)`` (1 when
              ``<= eps``, as PyTorch), ``zero_point = qmin - lo / scale`` kept as a float, so
              ``x_hat = lo + scale * (q - qmin)``.

All of it is computed in the convention's ``qparams_dtype`` (float32 for ``torch``/``gguf``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from .formats import IntFormat
from .granularity import BlockView

EPS = float(np.finfo(np.float32).eps)
MAPPINGS = ("symmetric", "affine", "affine_float")
SYMMETRIC_SCALES = ("qmax", "half_range", "max_abs_q")


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


def block_minmax(blocks: BlockView) -> tuple[np.ndarray, np.ndarray]:
    """Per-block min and max. Padding repeats real elements, so no mask is needed (see granularity)."""
    return blocks.values.min(axis=1), blocks.values.max(axis=1)


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
    if (channel < 0).any():
        raise ValueError("a per-channel custom range needs a per-channel or per-group scheme, not per-tensor")
    n_channels = blocks.layout[0]
    if lo.size != n_channels:
        raise ValueError(f"custom range has {lo.size} channel values but the tensor has {n_channels} channels")
    return lo[channel].astype(dtype), hi[channel].astype(dtype)


def choose_qparams(lo: np.ndarray, hi: np.ndarray, fmt: IntFormat, mapping: str, symmetric_scale: str,
                   dtype: type, torch_unsigned_zero_point: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero-point per block from ``[lo, hi]`` (formulas in the module docstring).

    Returns ``(scale, zero_point)`` in ``dtype``; zero_point holds integers except for ``affine_float``.
    ``torch_unsigned_zero_point`` selects PyTorch's unsigned symmetric zero-point rule.
    """
    lo = np.asarray(lo, dtype=dtype)
    hi = np.asarray(hi, dtype=dtype)
    qmin, qmax = fmt.qmin, fmt.qmax
    eps = dtype(EPS)
    if mapping == "affine":
        lo_n = np.minimum(lo, dtype(0))
        hi_p = np.maximum(hi, dtype(0))
        scale = np.maximum((hi_p - lo_n) / dtype(qmax - qmin), eps)
        zp = np.clip(dtype(qmin) - np.rint(lo_n / scale), qmin, qmax)
        return scale, zp.astype(dtype)
    if mapping == "symmetric":
        amax = np.maximum(-np.minimum(lo, dtype(0)), np.maximum(hi, dtype(0)))
        if fmt.signed:
            mid = 0
        elif torch_unsigned_zero_point:
            if fmt.reduce_range and not fmt.is_custom:
                raise ValueError("PyTorch rejects reduce_range for unsigned symmetric quantization "
                                 "(its zero-point 128 would lie outside [0, 127]); use the float64 convention")
            mid = (qmin + qmax) // 2 if fmt.is_custom else 1 << (fmt.bits - 1)
        else:
            mid = (qmin + qmax + 1) // 2
        if symmetric_scale == "qmax":
            denom = float(qmax - mid)
        elif symmetric_scale == "half_range":
            denom = (qmax - qmin) / 2.0
        elif symmetric_scale == "max_abs_q":
            denom = float(max(abs(qmin - mid), abs(qmax - mid)))
        else:
            raise ValueError(f"unknown symmetric scale rule {symmetric_scale!r}; expected one of {SYMMETRIC_SCALES}")
        if denom <= 0:
            raise ValueError(f"format {fmt.label} leaves no positive codes for a symmetric mapping")
        scale = np.maximum(amax / dtype(denom), eps)
        return scale, np.full_like(scale, mid)
    if mapping == "affine_float":
        scale = (hi - lo) / dtype(qmax - qmin)
        scale = np.where(scale > eps, scale, dtype(1))
        zp = dtype(qmin) - lo / scale
        return scale, zp.astype(dtype)
    raise ValueError(f"unknown mapping {mapping!r}; expected one of {', '.join(MAPPINGS)}")
