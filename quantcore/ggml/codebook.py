"""Codebook and ternary types: IQ4_NL, IQ4_XS (non-linear ``kvalues_iq4nl``), TQ1_0, TQ2_0, MXFP4.

Bit-exact with ggml-quants.c (llama.cpp vendored by llama-cpp-python 0.3.36); float32 arithmetic in
the C order, sequential sums, see :mod:`.cmath`.

IQ4_NL / IQ4_XS (``quantize_iq4_nl`` / ``quantize_iq4_xs``, which both run
``quantize_row_iq4_nl_impl`` with ``ntry = 7``, with or without an importance matrix). Per 32-element
sub-block with ``max`` the first element of largest magnitude: ``d = -max / -127``; each element
gets the nearest codebook entry of ``x / d`` (:func:`~.cmath.best_index`), ``d`` is refit by
weighted least squares (``sumqx / sumq2``), then 15 candidates ``id = (itry - 127) / max``,
``itry = -7..7``, each refit, keep the best ``sumqx^2 / sumq2``. Weights: ``x^2`` without an importance
matrix, ``qw * sqrtf(sigma2 + x^2)`` with one, ``sigma2 = 2 sum x^2 / super_block_size``.
IQ4_NL stores ``fp16(d)`` and requantizes with ``1/d``; IQ4_XS stores ``D = -max_scale / 32`` (the
sub-block scale of largest magnitude), 6-bit ``l = nearest_int(d / D)`` per sub-block and
requantizes with ``1 / (D * l)`` (float32 ``D``, not its fp16 rounding, as in C).

TQ2_0 / TQ1_0 (ternary, ``quantize_row_tq*_ref``; an importance matrix is ignored by llama.cpp):
``d = max|x|``, ``t = lroundf(x / d) + 1`` in {0, 1, 2}; TQ2_0 stores 2 bits per element, TQ1_0 five
trits per byte as ``ceil(256 * t4t3t2t1t0_base3 / 243)`` and decodes trit ``n`` as
``(uint8(q * 3^n) * 3) >> 8``.

MXFP4 (``quantize_row_mxfp4_ref``): shared exponent ``e = (uint8)(floorf(log2f(max|x|)) - 2 + 127)``
(0 for an all-zero block), scale ``2^(e - 128)`` (ggml's ``GGML_E8M0_TO_FP32_HALF``: the element
table ``kvalues_mxfp4`` holds *doubled* E2M1 values {0, 1, 2, 3, 4, 6, 8, 12} and negatives, so the
scale is half of OCP's ``2^(e - 127)``), each element the nearest table entry of ``x`` by
``|k*scale - x|``, first index on ties. This is ggml's rule, not OCP MX's round-to-nearest-even of
``x / 2^E``: a tie between two entries goes to the lower index here. ``log2f`` is glibc's; we take the
float64 ``log2`` of the float32 ``max|x|`` rounded to float32 (identical wherever the two agree on
the floor, which the tests check at every power of two and its neighbours).
"""
from __future__ import annotations

import numpy as np

from .base import GGMLType, get_u16, put_fp16, unpack_nibbles
from .cmath import F32, best_index, c_int, first_absmax, fp16_bits, fp16_value, lroundf, nearest_int, seq_sum
from .kquants import GROUP_MAX_EPS, QK_K, columns

KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.int8)
KVALUES_MXFP4 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.int8)


def _nibble_pack(L: np.ndarray) -> np.ndarray:
    """``q[16i + j] = L[32i + j] | L[32i + 16 + j] << 4``."""
    q = L.reshape(L.shape[0], -1, 2, 16).astype(np.uint8)
    return ((q[:, :, 0] & 0x0F) | (q[:, :, 1] << 4)).reshape(L.shape[0], -1)


def _inv(d: np.ndarray) -> np.ndarray:
    """``d ? 1/d : 0``."""
    return np.where(d != 0, F32(1) / np.where(d != 0, d, F32(1)), F32(0)).astype(F32)


def iq4_sub_scales(x: np.ndarray, w: np.ndarray | None, ntry: int = 7) -> np.ndarray:
    """The per-32 scales of ``quantize_row_iq4_nl_impl`` for super-blocks ``x`` (N, S): (N, S // 32).

    Position-major like the K-quant searches (:func:`.kquants.columns`), so the sequential sums run
    over axis 0."""
    N, S = x.shape
    v = KVALUES_IQ4NL.astype(F32)
    xc = columns(x, 32)                                           # (32, N * S/32)
    if w is None:
        wt = xc * xc
    else:
        sigma2 = np.repeat(seq_sum(columns(x * x, S)) * (F32(2) / F32(S)), S // 32)
        wt = columns(w, 32) * np.sqrt(sigma2 + xc * xc)
    amax, mx = first_absmax(xc, axis=0)
    amax, mx = amax[0], mx[0]

    def fit(idv):
        q = v[best_index(v, idv * xc)]
        wq = wt * q
        return seq_sum(wq * xc), seq_sum(wq * q)

    sumqx, sumq2 = fit(F32(1) / ((-mx) / v[0]))          # float id = 1/d, no zero test in C
    d = np.where(sumq2 > 0, sumqx / sumq2, F32(0))
    best = d * sumqx
    for itry in range(-ntry, ntry + 1):  # the C candidate loop (d is refit; codes are not kept)
        sumqx, sumq2 = fit(F32(itry + int(KVALUES_IQ4NL[0])) / mx)
        win = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
        d = np.where(win, sumqx / sumq2, d)
        best = np.where(win, d * sumqx, best)
    return np.where(amax < GROUP_MAX_EPS, F32(0), d).reshape(N, S // 32)


class IQ4_NL(GGMLType, type_id=20):
    """``[d:2][qs:16]``, ``x_hat = fp16(d) * kvalues_iq4nl[code]``."""
    block_size = 32
    type_size = 18
    meta_bytes = 2
    sub_block_size = 32
    qmin, qmax = 0, 15
    linear = False
    codebook = KVALUES_IQ4NL
    uses_weights = True

    @classmethod
    def _quantize(cls, x, w):
        d = iq4_sub_scales(x, w)                                    # (N, 1)
        L = best_index(KVALUES_IQ4NL.astype(F32), _inv(d) * x)
        out = np.empty((x.shape[0], cls.type_size), np.uint8)
        put_fp16(out, 0, fp16_bits(d[:, 0]))
        out[:, 2:] = _nibble_pack(L)
        return out

    @classmethod
    def codes(cls, data):
        return unpack_nibbles(cls._as_blocks(data)[:, 2:], 16).astype(np.int16)

    @classmethod
    def sub_scales(cls, data):
        return fp16_value(get_u16(cls._as_blocks(data), 0))[:, None], None


class IQ4_XS(GGMLType, type_id=23):
    """``[d:2][scales_h:2][scales_l:4][qs:128]``, ``x_hat = d * (ls - 32) * kvalues_iq4nl[code]`` with the
    6-bit ``ls`` of sub-block ``ib``: low 4 bits in nibble ``ib % 2`` of ``scales_l[ib // 2]``, high 2
    bits at bit ``2 ib`` of the little-endian ``scales_h``."""
    block_size = QK_K
    type_size = 136
    meta_bytes = 8
    sub_block_size = 32
    qmin, qmax = 0, 15
    linear = False
    codebook = KVALUES_IQ4NL
    uses_weights = True

    @classmethod
    def _quantize(cls, x, w):
        N = x.shape[0]
        scales = iq4_sub_scales(x, w)                               # (N, 8)
        _, max_scale = first_absmax(scales)
        D = (-max_scale[:, 0]) / F32(32)
        l = np.clip(nearest_int(_inv(D)[:, None] * scales), -32, 31)
        dl = D[:, None] * l.astype(F32)
        L = best_index(KVALUES_IQ4NL.astype(F32), _inv(dl)[..., None] * x.reshape(N, 8, 32)).reshape(N, QK_K)
        l = l + 32
        out = np.empty((N, cls.type_size), np.uint8)
        put_fp16(out, 0, fp16_bits(D))
        put_fp16(out, 2, ((l >> 4) << (2 * np.arange(8))).sum(axis=1) & 0xFFFF)
        out[:, 4:8] = (l[:, 0::2] & 0xF) | ((l[:, 1::2] & 0xF) << 4)
        out[:, 8:] = _nibble_pack(L)
        return out

    @classmethod
    def codes(cls, data):
        return unpack_nibbles(cls._as_blocks(data)[:, 8:], 16).astype(np.int16)

    @classmethod
    def sub_scales(cls, data):
        data = cls._as_blocks(data)
        ib = np.arange(8)
        ls = ((data[:, 4 + ib // 2] >> (4 * (ib % 2))) & 0xF).astype(np.int32) \
            | (((get_u16(data, 2)[:, None].astype(np.int32) >> (2 * ib)) & 3) << 4)
        return fp16_value(get_u16(data, 0))[:, None] * (ls - 32).astype(F32), None


def _ternary(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(d, t)``: ``d = max|x|``, ``t = lroundf(x * (d ? 1/d : 0)) + 1`` (int64; {0,1,2} for finite x)."""
    d = np.abs(x).max(axis=1)
    return d, lroundf(x * _inv(d)[:, None]) + 1


class TQ2_0(GGMLType, type_id=35):
    """``[qs:64][d:2]``: element ``128c + 32n + m`` in bits ``2n`` of ``qs[32c + m]``; ``x_hat = (t-1)*d``."""
    block_size = QK_K
    type_size = 66
    meta_bytes = 2
    sub_block_size = QK_K
    qmin, qmax = 0, 2
    code_offset = 1

    @classmethod
    def _quantize(cls, x, w):
        d, t = _ternary(x)
        t = (t & 3).reshape(-1, 2, 4, 32)
        out = np.empty((x.shape[0], cls.type_size), np.uint8)
        out[:, :64] = (t << (2 * np.arange(4))[None, None, :, None]).sum(axis=2).reshape(-1, 64) & 0xFF
        put_fp16(out, 64, fp16_bits(d))
        return out

    @classmethod
    def codes(cls, data):
        q = cls._as_blocks(data)[:, :64].reshape(-1, 2, 1, 32)
        return ((q >> (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]) & 3).reshape(-1, QK_K).astype(np.int16)

    @classmethod
    def sub_scales(cls, data):
        return fp16_value(get_u16(cls._as_blocks(data), 64))[:, None], None


_POW3 = np.array([1, 3, 9, 27, 81], np.int64)


def _trits_to_byte(t: np.ndarray, pad_trit: bool = False) -> np.ndarray:
    """Fold trits along axis 1 (most significant first) in uint8 arithmetic, ``q = q*3 + t``, then
    ``ceil(q * 256 / 243)`` stored as uint8. ``pad_trit``: the 4-trit qh bytes get one more ``q *= 3``."""
    q = np.zeros(t.shape[0:1] + t.shape[2:], np.int64)
    for n in range(t.shape[1]):  # a fixed 4 or 5 trits per byte, in the C order
        q = (q * 3 + t[:, n]) & 0xFF
    if pad_trit:
        q = (q * 3) & 0xFF
    return ((q * 256 + 242) // 243) & 0xFF


class TQ1_0(GGMLType, type_id=34):
    """``[qs:48][qh:4][d:2]``, 1.6875 bits/weight: elements 0..159 as five trits in ``qs[m]``
    (element ``32n + m``), 160..239 in ``qs[32 + m]`` (element ``160 + 16n + m``), 240..255 as four
    trits in ``qh[j]`` (element ``240 + 4n + j``); ``x_hat = (t - 1) * d``."""
    block_size = QK_K
    type_size = 54
    meta_bytes = 2
    sub_block_size = QK_K
    qmin, qmax = 0, 2
    code_offset = 1

    @classmethod
    def _quantize(cls, x, w):
        d, t = _ternary(x)
        N = x.shape[0]
        out = np.empty((N, cls.type_size), np.uint8)
        out[:, :32] = _trits_to_byte(t[:, :160].reshape(N, 5, 32))
        out[:, 32:48] = _trits_to_byte(t[:, 160:240].reshape(N, 5, 16))
        out[:, 48:52] = _trits_to_byte(t[:, 240:].reshape(N, 4, 4), pad_trit=True)
        put_fp16(out, 52, fp16_bits(d))
        return out

    @classmethod
    def codes(cls, data):
        data = cls._as_blocks(data).astype(np.int64)

        def trits(b, n):
            return (((b[:, None, :] * _POW3[:n, None]) & 0xFF) * 3) >> 8     # (N, n, bytes)
        N = data.shape[0]
        return np.concatenate([trits(data[:, :32], 5).reshape(N, -1), trits(data[:, 32:48], 5).reshape(N, -1),
                               trits(data[:, 48:52], 4).reshape(N, -1)], axis=1).astype(np.int16)

    @classmethod
    def sub_scales(cls, data):
        return fp16_value(get_u16(cls._as_blocks(data), 52))[:, None], None


def e8m0_half(e: np.ndarray) -> np.ndarray:
    """``GGML_E8M0_TO_FP32_HALF(e)`` = ``2^(e - 128)`` as float32 (subnormal for e < 2)."""
    e = np.asarray(e).astype(np.uint32)
    bits = np.where(e < 2, np.uint32(0x00200000) << e, (e - 1) << 23)
    return bits.astype(np.uint32).view(F32)


class MXFP4(GGMLType, type_id=39):
    """``[e:1][qs:16]``, ``x_hat = kvalues_mxfp4[code] * 2^(e - 128)`` (nibble layout of Q4_0)."""
    block_size = 32
    type_size = 17
    meta_bytes = 1
    sub_block_size = 32
    qmin, qmax = 0, 15
    linear = False
    codebook = KVALUES_MXFP4

    @classmethod
    def _quantize(cls, x, w):
        amax = np.abs(x).max(axis=1)
        log2 = np.log2(np.where(amax > 0, amax, F32(1)).astype(np.float64)).astype(F32)
        e = np.where(amax > 0, c_int(np.floor(log2) - F32(2) + F32(127)) & 0xFF, 0)
        d = e8m0_half(e)[:, None]
        k = KVALUES_MXFP4.astype(F32)
        best = np.zeros(x.shape, np.int64)
        best_err = np.abs(k[0] * d - x)
        for i in range(1, 16):  # best_index_mxfp4: the 16 entries in order, first minimum kept
            err = np.abs(k[i] * d - x)
            take = err < best_err
            best = np.where(take, i, best)
            best_err = np.where(take, err, best_err)
        out = np.empty((x.shape[0], cls.type_size), np.uint8)
        out[:, 0] = e
        out[:, 1:] = ((best[:, :16] | (best[:, 16:] << 4)) & 0xFF).astype(np.uint8)
        return out

    @classmethod
    def codes(cls, data):
        return unpack_nibbles(cls._as_blocks(data)[:, 1:], 16).astype(np.int16)

    @classmethod
    def sub_scales(cls, data):
        return e8m0_half(cls._as_blocks(data)[:, 0])[:, None], None
