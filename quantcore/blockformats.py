"""llama.cpp block formats Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 as named presets, bit-exact with gguf-py.

Each works on blocks of 32 consecutive float32 values along the last axis and mirrors
``gguf/quants.py`` (gguf-py 0.19) operation for operation, in float32:

``Q8_0``  ``d = max|x| / 127``, ``q = roundf(x / d)`` (multiply by ``1/d``, half away from zero),
          codes in [-127, 127], ``x_hat = q * fp16(d)``.
``Q4_0``  ``m`` = the element of largest magnitude *with its sign* (first one on ties),
          ``d = m / -8``, ``q = min(trunc(x / d + 8.5), 15)`` in [0, 15], ``x_hat = (q - 8) * fp16(d)``.
``Q4_1``  ``d = (max - min) / 15``, ``q = min(trunc((x - min) / d + 0.5), 15)``,
          ``x_hat = q * fp16(d) + fp16(min)``.
``Q5_0``  as Q4_0 with ``-16``, ``16.5`` and codes [0, 31].
``Q5_1``  as Q4_1 with 31 levels.

``1/d`` is ``0`` for an all-zero block. Codes are computed with the float32 ``d``; dequantization uses
the fp16-stored ``d`` (and ``min``), exactly as the C reference does.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK = 32


@dataclass(frozen=True)
class BlockFormat:
    name: str
    bits: int
    kind: str          # "sym8" (Q8_0), "sym" (Q4_0/Q5_0), "affine" (Q4_1/Q5_1)
    metadata_bytes_per_block: int

    @property
    def qmax(self) -> int:
        return 127 if self.kind == "sym8" else (1 << self.bits) - 1

    @property
    def qmin(self) -> int:
        return -127 if self.kind == "sym8" else 0

    @property
    def bits_per_weight(self) -> float:
        return self.bits + 8.0 * self.metadata_bytes_per_block / BLOCK


BLOCK_FORMATS = {
    "q8_0": BlockFormat("Q8_0", 8, "sym8", 2),
    "q4_0": BlockFormat("Q4_0", 4, "sym", 2),
    "q4_1": BlockFormat("Q4_1", 4, "affine", 4),
    "q5_0": BlockFormat("Q5_0", 5, "sym", 2),
    "q5_1": BlockFormat("Q5_1", 5, "affine", 4),
}


def get_block_format(name: str) -> BlockFormat:
    try:
        return BLOCK_FORMATS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(BLOCK_FORMATS)}") from None


def _fp16(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float16).astype(a.dtype)


def _inverse(d: np.ndarray) -> np.ndarray:
    one = d.dtype.type(1)
    with np.errstate(divide="ignore"):
        return np.where(d == 0, d.dtype.type(0), one / d).astype(d.dtype)


def quantize_block_format(blocks: np.ndarray, fmt: BlockFormat, dtype: type = np.float32) -> dict[str, np.ndarray]:
    """Quantize float32 blocks ``(n_blocks, 32)``; returns raw/q codes, dequantized values, d, zero-point.

    ``zero_point`` is expressed so that ``x_hat = (q - zero_point) * fp16(d)`` for every format
    (for Q4_1/Q5_1 it is ``-fp16(min)/fp16(d)``, a float). ``dtype=np.float64`` evaluates the same
    formulas in float64: used only to flag elements whose code depends on float32 rounding.
    """
    f = dtype
    b = np.asarray(blocks, dtype=f)
    half = f((1 << (fmt.bits - 1)))
    if fmt.kind == "sym8":
        d = (np.abs(b).max(axis=1, keepdims=True) / f(127)).astype(f)
        t = b * _inverse(d)
        a = np.abs(t)
        fl = np.floor(a)
        # roundf; "+ 0" turns -0.0 into +0.0: codes are integers (gguf stores int8), so x_hat of a
        # small negative x is +0.0 as in gguf-py, not -0.0.
        raw = np.copysign(fl + np.floor(2 * (a - fl)), t) + f(0)
        q = np.clip(raw, -127, 127)
        zp = np.zeros_like(d)
        xhat = q * _fp16(d)
    elif fmt.kind == "sym":
        imax = np.abs(b).argmax(axis=1)[:, None]
        m = np.take_along_axis(b, imax, axis=1)
        d = (m / -half).astype(f)
        raw = np.trunc(b * _inverse(d) + (half + f(0.5)))
        q = np.clip(raw, 0, fmt.qmax)
        zp = np.full_like(d, half)
        xhat = (q - half) * _fp16(d)
    else:
        mx = b.max(axis=1, keepdims=True)
        mn = b.min(axis=1, keepdims=True)
        d = ((mx - mn) / f(fmt.qmax)).astype(f)
        raw = np.trunc((b - mn) * _inverse(d) + f(0.5))
        q = np.clip(raw, 0, fmt.qmax)
        d16, m16 = _fp16(d), _fp16(mn)
        xhat = q * d16 + m16
        with np.errstate(divide="ignore", invalid="ignore"):
            zp = np.where(d16 == 0, f(0), -m16 / d16)
    return {"raw": raw, "q": q, "dequantized": xhat.astype(f), "scale": d[:, 0], "zero_point": zp[:, 0]}
