"""K-quants Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: super-blocks of 256 with quantized sub-block scales.

Each class reproduces ggml-quants.c (llama.cpp as vendored by llama-cpp-python 0.3.36) bit for bit:
without an importance matrix ``quantize_row_qX_K_ref`` (what ``quantize_qX_K(..., imatrix=NULL)``
calls), with one ``quantize_row_qX_K_impl``. The scale searches below are the C functions of the same
name, run on every sub-block of a tile at once:

* :func:`make_qkx` (``make_qkx2_quants`` / ``make_qkx3_quants``): scale and min of an affine sub-block
  by a fixed ``nstep`` sweep of candidate inverse scales, each refit by weighted least squares;
* :func:`make_qx` (``make_qx_quants``, rmse_type 1): symmetric scale, 18 candidates around ``-nmax/max``;
* :func:`make_q3` (``make_q3_quants``): symmetric scale refined by coordinate descent over elements;
* :func:`make_qp` (``make_qp_quants``): the 6/4-bit quantization of the sub-block scales themselves.

Operation order matters for bit-exactness: every ``float`` expression is float32 and evaluated in
the C order; every loop-carried sum (``sumlx += w*x[i]*l``) is a sequential float32 sum
(:func:`~quantcore.ggml.cmath.seq_sum`), because pairwise summation rounds differently and one ulp
can flip ``cur_error < best_error``. The searches loop in Python over their fixed candidate steps
(and :func:`make_q3`/:func:`make_qp` over the in-sub-block positions, because each position's update
changes the sums the next one sees); everything inside a step is one numpy operation over all
sub-blocks. A search step that changes a later step's input (``make_qkx`` updates ``min``, which
moves the next candidate grid) is carried per sub-block exactly as in C.

Sub-blocks whose final scale is 0 keep the codes of the search (the C ``if (!d) continue;``).
"""
from __future__ import annotations

import numpy as np

from .base import GGMLType, get_u16, put_fp16, unpack_bits
from .cmath import F32, first_absmax, first_max, first_min, fp16_bits, fp16_value, nearest_int, seq_sum, to_int8

QK_K = 256
GROUP_MAX_EPS = F32(1e-15)


# --- scale searches (position-major: x is (n positions, M sub-blocks)) ---------------------------------
def columns(x: np.ndarray, n: int) -> np.ndarray:
    """Blocks ``(N, k*n)`` -> the position-major ``(n, N*k)`` layout the searches use (a copy)."""
    return np.ascontiguousarray(x.reshape(-1, n).T)


def rows(L: np.ndarray, n_blocks: int) -> np.ndarray:
    """Inverse of :func:`columns` for per-element results: ``(n, N*k)`` -> ``(N, k, n)``."""
    return L.T.reshape(n_blocks, -1, L.shape[0])


def make_qkx(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int,
             use_mad: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``make_qkx2_quants`` / ``make_qkx3_quants`` on the columns of ``x`` with weights ``w`` ((n, M)).

    Returns ``(scale, the_min, L)``: ``x ~ scale * L - the_min`` with ``L`` in [0, nmax]. (The two C
    functions differ only in ``max == min`` vs ``max <= min``, the same test once ``min <= 0 <= ...``.)
    """
    def err(d):
        return np.abs(d) if use_mad else d * d

    mn = first_min(x, axis=0)
    mx = first_max(x, axis=0)
    sum_w = seq_sum(w, start_at_zero=False)
    sum_x = seq_sum(w * x, start_at_zero=False)
    mn = np.where(mn > 0, F32(0), mn)
    flat = mx == mn
    iscale = F32(nmax) / (mx - mn)
    scale = F32(1) / iscale
    L = np.clip(nearest_int(iscale * (x - mn)), 0, nmax)
    best = seq_sum(w * err(scale * L.astype(F32) + mn - x))
    for step in range(nstep + 1):  # the C candidate loop; min (and so the grid) moves when one wins
        iscale = (F32(rmin) + F32(rdelta) * F32(step) + F32(nmax)) / (mx - mn)
        laux = np.clip(nearest_int(iscale * (x - mn)), 0, nmax)
        lf = laux.astype(F32)
        wl = w * lf
        sum_l, sum_l2, sum_xl = seq_sum(wl), seq_sum(wl * lf), seq_sum(wl * x)
        D = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
        pos = this_min > 0
        this_min = np.where(pos, F32(0), this_min)
        this_scale = np.where(pos, sum_xl / sum_l2, this_scale)
        cur = seq_sum(w * err(this_scale * lf + this_min - x))
        win = (D > 0) & (cur < best) & ~flat
        L = np.where(win, laux, L)
        best = np.where(win, cur, best)
        scale = np.where(win, this_scale, scale)
        mn = np.where(win, this_min, mn)
    return np.where(flat, F32(0), scale), -mn, np.where(flat, 0, L)


def make_qx(x: np.ndarray, nmax: int, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``make_qx_quants(n, nmax, x, L, rmse_type=1, qw)`` on columns: ``(scale, L)`` with ``L = l + nmax``
    in [0, 2*nmax - 1] and ``x ~ scale * l``; weights ``qw`` or ``x*x``."""
    amax, mx = first_absmax(x, axis=0)
    amax, mx = amax[0], mx[0]
    zero = amax < GROUP_MAX_EPS
    if w is None:
        w = x * x
    wx = w * x

    def fit(iscale):
        l = np.clip(nearest_int(iscale * x), -nmax, nmax - 1)
        lf = l.astype(F32)
        return l, seq_sum(wx * lf), seq_sum((w * lf) * lf)

    l, sumlx, suml2 = fit(F32(-nmax) / mx)
    L = l + nmax
    scale = np.where(suml2 != 0, sumlx / suml2, F32(0))
    best = scale * sumlx
    for step in range(-9, 10):  # the 18 candidate scales of the C loop, in its order
        if step == 0:
            continue
        l, sumlx, suml2 = fit(-(F32(nmax) + F32(0.1) * F32(step)) / mx)
        win = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        L = np.where(win, l + nmax, L)
        scale = np.where(win, sumlx / suml2, scale)
        best = np.where(win, scale * sumlx, best)
    return np.where(zero, F32(0), scale), np.where(zero, 0, L)


def make_q3(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """``make_q3_quants(n, nmax, x, L, do_rmse=true)`` on columns: ``(scale, L)``, ``L = l + nmax`` (0 for
    an all-zero sub-block). Up to 5 coordinate-descent passes; within a pass positions are visited in
    order because each accepted change updates the sums the next position sees."""
    amax, mx = first_absmax(x, axis=0)
    amax, mx = amax[0], mx[0]
    zero = amax < GROUP_MAX_EPS
    L = np.clip(nearest_int((F32(-nmax) / mx) * x), -nmax, nmax - 1)
    w = x * x
    wx = w * x
    lf = L.astype(F32)
    sumlx, suml2 = seq_sum(wx * lf), seq_sum((w * lf) * lf)
    for _ in range(5):
        changed = np.zeros(x.shape[1], bool)
        for i in range(x.shape[0]):
            wi, xi, wxi, li = w[i], x[i], wx[i], L[i].astype(F32)
            slx = sumlx - wxi * li
            sl2 = suml2 - (wi * li) * li
            new_l = np.clip(nearest_int(xi * sl2 / slx), -nmax, nmax - 1)
            nf = new_l.astype(F32)
            slx_n = slx + wxi * nf
            sl2_n = sl2 + (wi * nf) * nf
            take = (slx > 0) & (new_l != L[i]) & (sl2_n > 0) & (slx_n * slx_n * suml2 > sumlx * sumlx * sl2_n)
            L[i] = np.where(take, new_l, L[i])
            sumlx = np.where(take, slx_n, sumlx)
            suml2 = np.where(take, sl2_n, suml2)
            changed |= take
        if not changed.any():  # a pass without change leaves the state as it was: later passes are no-ops
            break
    scale = np.where(suml2 > 0, sumlx / suml2, F32(0))
    return np.where(zero, F32(0), scale), np.where(zero, 0, L + nmax)


def make_qp(x: np.ndarray, nmax: int, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``make_qp_quants(n, nmax, x, L, quant_weights)`` on columns: ``(scale, L)``, ``L`` uint8 values in
    [0, nmax] (a negative ``nearest_int`` wraps as the C ``uint8_t`` store does)."""
    mx = np.zeros(x.shape[1], F32)
    for i in range(x.shape[0]):  # max = MAX(max, x[i]) = max > x[i] ? max : x[i]: a NaN x[i] is taken
        mx = np.where(mx > x[i], mx, x[i])
    zero = mx < GROUP_MAX_EPS
    wx = w * x
    iscale = F32(nmax) / mx
    L = nearest_int(iscale * x) & 0xFF
    scale = F32(1) / iscale
    diff = x - scale * L.astype(F32)
    best = seq_sum((w * diff) * diff)
    for step in range(-4, 5):
        if step == 0:
            continue
        iscale_s = (F32(0.1) * F32(step) + F32(nmax)) / mx
        l = np.minimum(nmax, nearest_int(iscale_s * x))
        diff = x - (F32(1) / iscale_s) * l.astype(F32)
        mse = seq_sum((w * diff) * diff)
        win = mse < best
        best = np.where(win, mse, best)
        iscale = np.where(win, iscale_s, iscale)
    l = np.minimum(nmax, nearest_int(iscale * x))
    L = l & 0xFF
    lf = l.astype(F32)
    sumlx, suml2 = seq_sum(wx * lf), seq_sum((w * lf) * lf)
    for _ in range(5):
        changed = np.zeros(x.shape[1], bool)
        for i in range(x.shape[0]):
            wi, xi, wxi, li = w[i], x[i], wx[i], L[i].astype(F32)
            slx = sumlx - wxi * li
            sl2 = suml2 - (wi * li) * li
            new_l = np.minimum(nmax, nearest_int(xi * sl2 / slx))
            nf = new_l.astype(F32)
            slx_n = slx + wxi * nf
            sl2_n = sl2 + (wi * nf) * nf
            take = (slx > 0) & (sl2 > 0) & (new_l != L[i]) & (slx_n * slx_n * suml2 > sumlx * sumlx * sl2_n)
            L[i] = np.where(take, new_l & 0xFF, L[i])
            sumlx = np.where(take, slx_n, sumlx)
            suml2 = np.where(take, sl2_n, suml2)
            changed |= take
        if not changed.any():
            break
    scale = np.where(suml2 > 0, sumlx / suml2, F32(0))
    return np.where(zero, F32(0), scale), np.where(zero, 0, L)


# --- shared pieces of the super-block types ---------------------------------------------------------
def _max0(a: np.ndarray) -> np.ndarray:
    """``float m = 0; for (...) if (a[j] > m) m = a[j];`` along the last axis: +0.0 if none is > 0,
    NaN skipped (a scale search returns NaN when float32 sums of huge values overflow)."""
    m = np.where(np.isnan(a), F32(0), a).max(axis=-1)
    return np.where(m > 0, m, F32(0))


def _requantize(x: np.ndarray, d: np.ndarray, dm: np.ndarray | None, lo: int, hi: int, L: np.ndarray,
                offset: int = 0) -> np.ndarray:
    """The final pass: ``l = clamp(nearest_int((x + dm) / d), lo, hi) + offset`` per sub-block, except
    where ``d == 0`` (the search's codes ``L`` stay). ``x``: (N, n_sub, sub); ``d``, ``dm``: (N, n_sub)."""
    t = x if dm is None else x + dm[..., None]
    l = np.clip(nearest_int(t / d[..., None]), lo, hi) + offset
    return np.where((d != 0)[..., None], l, L)


def _two_bit_planes(L: np.ndarray) -> np.ndarray:
    """``qs[32c + l] = L[128c+l] | L[128c+l+32] << 2 | L[..+64] << 4 | L[..+96] << 6`` (Q2_K, Q3_K)."""
    q = (L.reshape(-1, 2, 4, 32) & 3).astype(np.uint8)
    return (q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)).reshape(-1, 64)


def _from_two_bit_planes(qs: np.ndarray) -> np.ndarray:
    q = qs.reshape(-1, 2, 1, 32) >> (np.arange(4, dtype=np.uint8) * 2)[None, None, :, None]
    return (q & 3).reshape(-1, QK_K)


def _k4_scale_bytes(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """The 12-byte 6-bit scale/min packing of Q4_K/Q5_K (uint8 stores wrap, as in C)."""
    ls, lm = ls.astype(np.int64), lm.astype(np.int64)
    out = np.empty((ls.shape[0], 12), np.uint8)
    out[:, 0:4] = (ls[:, :4] | ((ls[:, 4:] >> 4) << 6)) & 0xFF
    out[:, 4:8] = (lm[:, :4] | ((lm[:, 4:] >> 4) << 6)) & 0xFF
    out[:, 8:12] = ((ls[:, 4:] & 0xF) | ((lm[:, 4:] & 0xF) << 4)) & 0xFF
    return out


def _k4_scales(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``get_scale_min_k4`` for j = 0..7: ``(sc, m)`` as (N, 8) uint8."""
    sc = np.concatenate([q[:, 0:4] & 63, (q[:, 8:12] & 0xF) | ((q[:, 0:4] >> 6) << 4)], axis=1)
    m = np.concatenate([q[:, 4:8] & 63, (q[:, 8:12] >> 4) | ((q[:, 4:8] >> 6) << 4)], axis=1)
    return sc, m


class _Affine32(GGMLType):
    """Q4_K and Q5_K: 8 sub-blocks of 32, ``x_hat = d*sc * q - dmin*m`` with 6-bit ``sc``, ``m``.

    Without weights (``quantize_row_qX_K_ref``): per sub-block ``av_x = sqrtf(sum x^2 / 32)``,
    weights ``av_x + |x|``, :func:`make_qkx` with (rmin, rdelta, nstep) = ``ref_search``; ``d =
    max_scale/63``, ``sc = min(63, nearest_int(63/max_scale * scale))`` (same for mins).
    With weights (``_impl``): ``sigma2 = 2 sum x^2 / 256`` over the super-block, weights
    ``qw * sqrtf(sigma2 + x^2)``, :func:`make_qkx` with (-0.9, 0.05, 36), then :func:`make_qp` (nmax 63)
    quantizes the 8 scales and the 8 mins against the sub-block weight sums.
    """
    block_size = QK_K
    sub_block_size = 32
    qmin = 0
    uses_weights = True
    ref_search: tuple[float, float, int]
    clamp_impl_scales: bool

    @classmethod
    def _search(cls, x, w):
        N = x.shape[0]
        xc = columns(x, 32)                                   # (32, N*8)
        if w is None:
            av_x = np.sqrt(seq_sum(xc * xc) / F32(32))
            wts = av_x + np.abs(xc)
            rmin, rdelta, nstep = cls.ref_search
        else:
            sigma2 = np.repeat(F32(2) * seq_sum(columns(x * x, QK_K)) / F32(QK_K), 8)
            wts = columns(w, 32) * np.sqrt(sigma2 + xc * xc)
            rmin, rdelta, nstep = -0.9, 0.05, 36
        scales, mins, L = make_qkx(xc, wts, cls.qmax, rmin, rdelta, nstep, False)
        scales, mins, L = scales.reshape(N, 8), mins.reshape(N, 8), rows(L, N)
        if w is None:
            max_scale, max_min = _max0(scales), _max0(mins)
            inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0))
            inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0))
            ls = np.minimum(63, nearest_int(inv_scale[:, None] * scales) & 0xFF)
            lm = np.minimum(63, nearest_int(inv_min[:, None] * mins) & 0xFF)
            d, dmin = max_scale / F32(63), max_min / F32(63)
        else:
            sw = columns(seq_sum(wts), 8)
            d, ls = make_qp(columns(scales, 8), 63, sw)
            dmin, lm = make_qp(columns(mins, 8), 63, sw)
            ls, lm = ls.T, lm.T
            if cls.clamp_impl_scales:
                ls, lm = np.minimum(63, ls), np.minimum(63, lm)
        head = np.empty((N, 16), np.uint8)
        d16, dmin16 = fp16_bits(d), fp16_bits(dmin)
        put_fp16(head, 0, d16)
        put_fp16(head, 2, dmin16)
        head[:, 4:16] = _k4_scale_bytes(ls, lm)
        sc, m = _k4_scales(head[:, 4:16])
        L = _requantize(x.reshape(N, 8, 32), fp16_value(d16)[:, None] * sc, fp16_value(dmin16)[:, None] * m, 0,
                        cls.qmax, L)
        return head, L.reshape(N, QK_K)

    @classmethod
    def sub_scales(cls, data):
        data = cls._as_blocks(data)
        sc, m = _k4_scales(data[:, 4:16])
        return fp16_value(get_u16(data, 0))[:, None] * sc, fp16_value(get_u16(data, 2))[:, None] * m


class Q4_K(_Affine32, type_id=12):
    """``[d:2][dmin:2][scales:12][qs:128]``; ``qs[32c + l] = L[64c + l] | L[64c + 32 + l] << 4``."""
    type_size = 144
    meta_bytes = 16
    qmax = 15
    ref_search = (-1.0, 0.1, 20)
    clamp_impl_scales = False  # quantize_row_q4_K_impl stores make_qp's codes as they are

    @classmethod
    def _quantize(cls, x, w):
        head, L = cls._search(x, w)
        q = L.reshape(-1, 4, 2, 32).astype(np.uint8)
        return np.concatenate([head, (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128)], axis=1)

    @classmethod
    def codes(cls, data):
        q = cls._as_blocks(data)[:, 16:].reshape(-1, 4, 1, 32)
        return np.concatenate([q & 0x0F, q >> 4], axis=2).reshape(-1, QK_K).astype(np.int16)


class Q5_K(_Affine32, type_id=13):
    """``[d:2][dmin:2][scales:12][qh:32][qs:128]``; low nibbles as Q4_K, bit 4 of ``L[64c + l]`` in
    bit 2c of ``qh[l]`` and of ``L[64c + 32 + l]`` in bit 2c+1."""
    type_size = 176
    meta_bytes = 16
    qmax = 31
    ref_search = (-0.5, 0.1, 15)
    clamp_impl_scales = True

    @classmethod
    def _quantize(cls, x, w):
        head, L = cls._search(x, w)
        q = L.reshape(-1, 4, 2, 32).astype(np.uint8)
        ql = ((q[:, :, 0] & 15) | ((q[:, :, 1] & 15) << 4)).reshape(-1, 128)
        hi = (q >> 4).reshape(-1, 8, 32)                        # plane 2c + h, element l
        qh = (hi << np.arange(8, dtype=np.uint8)[None, :, None]).sum(axis=1, dtype=np.uint8)
        return np.concatenate([head, qh, ql], axis=1)

    @classmethod
    def codes(cls, data):
        data = cls._as_blocks(data)
        q = data[:, 48:].reshape(-1, 4, 1, 32)
        low = np.concatenate([q & 0x0F, q >> 4], axis=2).reshape(-1, 8, 32)
        hi = (data[:, 16:48, None] >> np.arange(8, dtype=np.uint8)) & 1   # (N, 32 elements, 8 planes)
        return (low | (hi.transpose(0, 2, 1) << 4)).reshape(-1, QK_K).astype(np.int16)


class Q6_K(GGMLType, type_id=14):
    """``[ql:128][qh:64][scales:16 int8][d:2]``, 16 sub-blocks of 16, ``x_hat = d*sc * (q - 32)``.

    Per sub-block :func:`make_qx` (nmax 32; weights ``x^2``, or the importance matrix itself with
    one); ``d = 1/(-128/max_scale)`` (the scale of largest magnitude, sign kept);
    ``sc = (int8)min(127, nearest_int(-128/max_scale * scale))``. A super-block whose scales are all
    below 1e-15 is stored as zeros.
    """
    block_size = QK_K
    type_size = 210
    meta_bytes = 18
    sub_block_size = 16
    qmin, qmax = 0, 63
    code_offset = 32
    uses_weights = True

    @classmethod
    def _quantize(cls, x, w):
        N = x.shape[0]
        scales, L = make_qx(columns(x, 16), 32, None if w is None else columns(w, 16))
        scales, L = scales.reshape(N, 16), rows(L, N)
        amax, max_scale = first_absmax(scales)
        amax, max_scale = amax[:, 0], max_scale[:, 0]
        iscale = F32(-128) / max_scale
        d16 = fp16_bits(F32(1) / iscale)
        sc = to_int8(np.minimum(127, nearest_int(iscale[:, None] * scales)))
        L = _requantize(x.reshape(N, 16, 16), fp16_value(d16)[:, None] * sc.astype(F32), None, -32, 31, L, 32)
        q = L.reshape(N, 2, 4, 32).astype(np.uint8)
        ql = np.concatenate([(q[:, :, 0] & 0xF) | ((q[:, :, 2] & 0xF) << 4),
                             (q[:, :, 1] & 0xF) | ((q[:, :, 3] & 0xF) << 4)], axis=2).reshape(N, 128)
        qh = ((q[:, :, 0] >> 4) | ((q[:, :, 1] >> 4) << 2) | ((q[:, :, 2] >> 4) << 4)
              | ((q[:, :, 3] >> 4) << 6)).reshape(N, 64)
        out = np.empty((N, cls.type_size), np.uint8)
        out[:, :128], out[:, 128:192] = ql, qh
        out[:, 192:208] = sc.astype(np.int8).view(np.uint8)
        put_fp16(out, 208, d16)
        out[amax < GROUP_MAX_EPS] = 0
        return out

    @classmethod
    def codes(cls, data):
        data = cls._as_blocks(data)
        ql = data[:, :128].reshape(-1, 2, 2, 32)                    # chunk c, half h (+0 / +32)
        qh = data[:, 128:192].reshape(-1, 2, 1, 32) >> (np.arange(4, dtype=np.uint8) * 2)[None, None, :, None]
        low = np.concatenate([ql & 0xF, ql >> 4], axis=2)            # quarters 0,1 low nibbles; 2,3 high
        return (low | ((qh & 3) << 4)).reshape(-1, QK_K).astype(np.int16)

    @classmethod
    def sub_scales(cls, data):
        data = cls._as_blocks(data)
        sc = data[:, 192:208].view(np.int8).astype(F32)
        return fp16_value(get_u16(data, 208))[:, None] * sc, None


class Q3_K(GGMLType, type_id=11):
    """``[hmask:32][qs:64][scales:12][d:2]``, 16 sub-blocks of 16, ``x_hat = d*(s - 32) * (q - 4)``.

    Without weights: :func:`make_q3` per sub-block, ``d = 1/(-32/max_scale)``,
    ``s = clamp((int8)nearest_int(-32/max_scale * scale), -32, 31) + 32``. With weights
    (``_impl``): ``sigma2 = 2 sum x^2 / 256``, weights ``qw * sqrtf(sigma2 + x^2)``, :func:`make_qx`
    (nmax 4) per sub-block, then :func:`make_qx` (nmax 32) on the 16 scales against the weight sums.
    Codes: 2 low bits in ``qs`` (as Q2_K), bit 2 of element ``j`` in bit ``j // 32`` of ``hmask[j % 32]``.
    """
    block_size = QK_K
    type_size = 110
    meta_bytes = 14
    sub_block_size = 16
    qmin, qmax = 0, 7
    code_offset = 4
    uses_weights = True

    @classmethod
    def _quantize(cls, x, w):
        N = x.shape[0]
        xs = x.reshape(N, 16, 16)
        if w is None:
            scales, L = make_q3(columns(x, 16), 4)
            scales = scales.reshape(N, 16)
            _, max_scale = first_absmax(scales)
            max_scale = max_scale[:, 0]
            iscale = F32(-32) / max_scale
            ls = np.clip(to_int8(nearest_int(iscale[:, None] * scales)), -32, 31) + 32
            nz = max_scale != 0
            ls = np.where(nz[:, None], ls, 0)
            d = np.where(nz, F32(1) / iscale, F32(0))
        else:
            xc = columns(x, 16)
            sigma2 = np.repeat(F32(2) * seq_sum(columns(x * x, QK_K)) / F32(QK_K), 16)
            wts = columns(w, 16) * np.sqrt(sigma2 + xc * xc)
            scales, L = make_qx(xc, 4, wts)
            d, ls = make_qx(columns(scales, 16), 32, columns(seq_sum(wts), 16))
            ls = ls.T
        sb = np.zeros((N, 12), np.int64)
        sb[:, :8] = ls[:, :8] & 0xF
        sb[:, :8] |= (ls[:, 8:] & 0xF) << 4
        hi2 = (ls >> 4).reshape(N, 4, 4)                             # [j // 4, j % 4]
        sb[:, 8:] = (hi2 << (2 * np.arange(4))[None, :, None]).sum(axis=1)
        sb &= 0xFF
        d16 = fp16_bits(d)
        out = np.empty((N, cls.type_size), np.uint8)
        out[:, 96:108] = sb
        put_fp16(out, 108, d16)
        dl, _ = cls.sub_scales(out)
        L = _requantize(xs, dl, None, -4, 3, rows(L, N), 4).reshape(N, QK_K)
        out[:, 0:32] = np.packbits((L.reshape(N, 8, 32) > 3).astype(np.uint8), axis=1, bitorder="little")[:, 0]
        out[:, 32:96] = _two_bit_planes(L)
        return out

    @classmethod
    def codes(cls, data):
        data = cls._as_blocks(data)
        hbit = unpack_bits(data[:, 0:32]).reshape(-1, 32, 8).transpose(0, 2, 1).reshape(-1, QK_K)
        return (_from_two_bit_planes(data[:, 32:96]) | (hbit << 2)).astype(np.int16)

    @classmethod
    def sub_scales(cls, data):
        data = cls._as_blocks(data)
        s = data[:, 96:108].astype(np.int64)
        low = np.concatenate([s[:, :8] & 0xF, s[:, :8] >> 4], axis=1)
        hi = (s[:, 8:12][:, None, :] >> (2 * np.arange(4))[None, :, None]) & 3   # [j // 4, j % 4]
        sc = (low | (hi.reshape(-1, 16) << 4)) - 32
        return fp16_value(get_u16(data, 108))[:, None] * sc.astype(F32), None


class Q2_K(GGMLType, type_id=10):
    """``[scales:16][qs:64][d:2][dmin:2]``, 16 sub-blocks of 16, ``x_hat = d*(s & 15) * q - dmin*(s >> 4)``.

    Without weights: :func:`make_qkx` (nmax 3, weights ``|x|``, (-0.5, 0.1, 15), mean absolute
    error), scales and mins to 4 bits against their maxima over 15. With weights (``_impl``):
    ``sigma2 = sum x^2 / 256``, weights ``qw * sqrtf(sigma2 + x^2)``, :func:`make_qkx` (-0.9, 0.05, 36,
    squared error), then :func:`make_qp` (nmax 15) on scales and mins.
    """
    block_size = QK_K
    type_size = 84
    meta_bytes = 20
    sub_block_size = 16
    qmin, qmax = 0, 3
    uses_weights = True

    @classmethod
    def _quantize(cls, x, w):
        N = x.shape[0]
        xc = columns(x, 16)
        if w is None:
            scales, mins, L = make_qkx(xc, np.abs(xc), 3, -0.5, 0.1, 15, True)
            scales, mins = scales.reshape(N, 16), mins.reshape(N, 16)
            max_scale, max_min = _max0(scales), _max0(mins)
            lo = np.where((max_scale > 0)[:, None], nearest_int((F32(15) / max_scale)[:, None] * scales), 0)
            hi = np.where((max_min > 0)[:, None], nearest_int((F32(15) / max_min)[:, None] * mins), 0)
            sb = ((lo & 0xFF) | (hi << 4)) & 0xFF
            d = np.where(max_scale > 0, max_scale / F32(15), F32(0))
            dmin = np.where(max_min > 0, max_min / F32(15), F32(0))
        else:
            sigma2 = np.repeat(seq_sum(columns(x * x, QK_K)) / F32(QK_K), 16)
            wts = columns(w, 16) * np.sqrt(sigma2 + xc * xc)
            scales, mins, L = make_qkx(xc, wts, 3, -0.9, 0.05, 36, False)
            sw = columns(seq_sum(wts), 16)
            d, ls = make_qp(columns(scales, 16), 15, sw)
            dmin, lm = make_qp(columns(mins, 16), 15, sw)
            sb = (ls.T | (lm.T << 4)) & 0xFF
        out = np.empty((N, cls.type_size), np.uint8)
        out[:, :16] = sb
        put_fp16(out, 80, fp16_bits(d))
        put_fp16(out, 82, fp16_bits(dmin))
        dl, ml = cls.sub_scales(out)
        L = _requantize(x.reshape(N, 16, 16), dl, ml, 0, 3, rows(L, N))
        out[:, 16:80] = _two_bit_planes(L)
        return out

    @classmethod
    def codes(cls, data):
        return _from_two_bit_planes(cls._as_blocks(data)[:, 16:80]).astype(np.int16)

    @classmethod
    def sub_scales(cls, data):
        data = cls._as_blocks(data)
        s = data[:, :16]
        return (fp16_value(get_u16(data, 80))[:, None] * (s & 0xF).astype(F32),
                fp16_value(get_u16(data, 82))[:, None] * (s >> 4).astype(F32))
