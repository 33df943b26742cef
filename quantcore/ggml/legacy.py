"""The 32-element block types Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (``quantize_row_q*_ref`` of ggml-quants.c).

All arithmetic is float32 in the C order (see :mod:`.cmath`):

``Q8_0``  ``d = max|x| / 127``, ``q = (int8)roundf(x * (1/d))``, ``x_hat = q * fp16(d)``.
``Q4_0``  ``m`` = the first element of largest magnitude, with its sign; ``d = m / -8``,
          ``q = min(15, (int8)(x * (1/d) + 8.5))``, ``x_hat = (q - 8) * fp16(d)``.
``Q4_1``  ``d = (max - min) / 15``, ``q = min(15, (int8)((x - min) * (1/d) + 0.5))``,
          ``x_hat = q * fp16(d) + fp16(min)``.
``Q5_0``  as Q4_0 with ``-16``, ``16.5``, 31; ``Q5_1`` as Q4_1 with 31 and ``q = (uint8)(...)``.

``1/d`` is 0 when ``d == 0``. Codes come from the float32 ``d``; dequantization uses the stored fp16
``d`` and ``min``. Where ``d`` is a float32 subnormal, ``1/d`` is inf and ``x * (1/d)`` is inf or NaN:
the C cast then gives INT_MIN, whose low byte is code 0 (gguf-py's numpy cast gives the same), and
the fp16 ``d`` is 0, so every ``x_hat`` is 0.

With an importance matrix (``quantize_rows``; ``quantize_row_q*_impl``): ``sigma2 = sum x^2 / n_per_row``
over the whole row, weights ``qw * sqrtf(sigma2 + x^2)``; Q4_0/Q5_0 take the scale and codes of
:func:`.kquants.make_qx` (nmax 8 / 16), Q4_1/Q5_1 those of :func:`.kquants.make_qkx` (nmax 15 / 31,
(-0.9, 0.05, 36)) with ``m = fp16(-the_min)``. Q8_0 ignores an importance matrix in llama.cpp.

Byte layouts: Q8_0 ``[d:2][qs:32 int8]``; Q4_0 ``[d:2][qs:16]``; Q4_1 ``[d:2][m:2][qs:16]``;
Q5_0 ``[d:2][qh:4][qs:16]``; Q5_1 ``[d:2][m:2][qh:4][qs:16]``. ``qs`` byte j holds element j in its low
nibble and element j+16 in its high nibble; ``qh`` is a little-endian uint32 whose bit i is bit 4 of
element i.
"""
from __future__ import annotations

import numpy as np

from .base import GGMLType, get_u16, pack_bits, put_fp16, unpack_bits, unpack_nibbles
from .cmath import F32, c_int, first_absmax, first_max, first_min, fp16_bits, fp16_value, roundf, seq_sum, to_int8
from .kquants import columns, make_qkx, make_qx


def _inverse(d: np.ndarray) -> np.ndarray:
    """``d ? 1.0f/d : 0.0f``."""
    return np.where(d != 0, F32(1) / np.where(d != 0, d, F32(1)), F32(0)).astype(F32)


def _nibble_bytes(xi: np.ndarray) -> np.ndarray:
    """``qs[j] = xi0 | xi1 << 4`` with uint8 ``xi`` (elements j and j+16), stored as uint8."""
    return ((xi[:, :16] | (xi[:, 16:] << 4)) & 0xFF).astype(np.uint8)


class _Legacy(GGMLType):
    block_size = 32
    sub_block_size = 32
    qmin = 0
    has_min = False
    has_qh = False

    @classmethod
    def _layout(cls) -> tuple[int, int]:
        """Byte offsets of qh and qs."""
        qh_at = 4 if cls.has_min else 2
        return qh_at, qh_at + (4 if cls.has_qh else 0)

    @classmethod
    def codes(cls, data: np.ndarray) -> np.ndarray:
        data = cls._as_blocks(data)
        qh_at, qs_at = cls._layout()
        q = unpack_nibbles(data[:, qs_at:qs_at + 16], 16).astype(np.int16)
        if cls.has_qh:
            q |= unpack_bits(data[:, qh_at:qh_at + 4]).astype(np.int16) << 4
        return q

    @classmethod
    def sub_scales(cls, data: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        data = cls._as_blocks(data)
        d = fp16_value(get_u16(data, 0))[:, None]
        return d, (-fp16_value(get_u16(data, 2))[:, None] if cls.has_min else None)

    @classmethod
    def _write(cls, d: np.ndarray, m: np.ndarray | None, xi: np.ndarray) -> np.ndarray:
        out = np.zeros((xi.shape[0], cls.type_size), np.uint8)
        put_fp16(out, 0, fp16_bits(d))
        if m is not None:
            put_fp16(out, 2, fp16_bits(m))
        qh_at, qs_at = cls._layout()
        if cls.has_qh:
            out[:, qs_at:qs_at + 16] = ((xi[:, :16] & 0x0F) | ((xi[:, 16:] & 0x0F) << 4)).astype(np.uint8)
            out[:, qh_at:qh_at + 4] = pack_bits((xi & 0x10) >> 4)
        else:
            out[:, qs_at:qs_at + 16] = _nibble_bytes(xi)
        return out


class Q8_0(_Legacy, type_id=8):
    type_size = 34
    meta_bytes = 2
    qmin, qmax = -127, 127

    @classmethod
    def _quantize(cls, x, w):
        d = np.abs(x).max(axis=1, keepdims=True) / F32(127)
        q = to_int8(c_int(roundf(x * _inverse(d))))
        out = np.empty((x.shape[0], cls.type_size), np.uint8)
        put_fp16(out, 0, fp16_bits(d))
        out[:, 2:] = q.astype(np.int8).view(np.uint8)
        return out

    @classmethod
    def codes(cls, data):
        return cls._as_blocks(data)[:, 2:].view(np.int8).astype(np.int16)


def _row_weights(x: np.ndarray, imatrix: np.ndarray, block: int) -> np.ndarray:
    """``qw[j] * sqrtf(sigma2 + x[j]^2)`` with ``sigma2 = (sequential sum of x^2 over the row) / n_per_row``,
    position-major ``(block, n_blocks)`` like the searches."""
    r, n = x.shape
    sigma2 = seq_sum(np.ascontiguousarray((x * x).T)) / F32(n)
    xc = columns(x, block)
    qw = columns(np.broadcast_to(imatrix, x.shape), block)
    return qw * np.sqrt(np.repeat(sigma2, n // block) + xc * xc)


class _Sym(_Legacy):
    """Q4_0 / Q5_0: ``d = m / -half``, ``q = min(qmax, (int8)(x/d + half + 0.5))``."""
    row_weighted = True

    @classmethod
    def _quantize(cls, x, w):
        half = cls.code_offset
        _, m = first_absmax(x)
        d = m / F32(-half)
        xi = np.minimum(cls.qmax, to_int8(c_int(x * _inverse(d) + F32(half + 0.5)))) & 0xFF
        return cls._write(d, None, xi)

    @classmethod
    def _quantize_weighted(cls, x, imatrix):
        d, L = make_qx(columns(x, 32), cls.code_offset, _row_weights(x, imatrix, 32))
        return cls._write(d[:, None], None, L.T)


class _Affine(_Legacy):
    """Q4_1 / Q5_1: ``d = (max - min) / qmax``, ``q = (x - min)/d + 0.5`` truncated."""
    has_min = True
    row_weighted = True

    @classmethod
    def _quantize_weighted(cls, x, imatrix):
        d, the_min, L = make_qkx(columns(x, 32), _row_weights(x, imatrix, 32), cls.qmax, -0.9, 0.05, 36, False)
        return cls._write(d[:, None], -the_min[:, None], L.T)

    @classmethod
    def _quantize(cls, x, w):
        mn = first_min(x)[:, None]   # the C loop keeps the first of -0.0/+0.0: the sign reaches fp16(min)
        mx = first_max(x)[:, None]
        d = (mx - mn) / F32(cls.qmax)
        xi = cls._narrow(c_int((x - mn) * _inverse(d) + F32(0.5)))
        return cls._write(d, mn, xi)


class Q4_0(_Sym, type_id=2):
    type_size = 18
    meta_bytes = 2
    qmax = 15
    code_offset = 8


class Q4_1(_Affine, type_id=3):
    type_size = 20
    meta_bytes = 4
    qmax = 15

    @staticmethod
    def _narrow(i):
        return np.minimum(15, to_int8(i)) & 0xFF    # MIN(15, (int8_t)(...)) stored as uint8


class Q5_0(_Sym, type_id=6):
    type_size = 22
    meta_bytes = 2
    qmax = 31
    code_offset = 16
    has_qh = True


class Q5_1(_Affine, type_id=7):
    type_size = 24
    meta_bytes = 4
    qmax = 31
    has_qh = True

    @staticmethod
    def _narrow(i):
        return i & 0xFF                               # (uint8_t)(...), no MIN in the C code
