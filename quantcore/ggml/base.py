"""One registry of GGML block types: each class owns its byte layout, quantizer and dequantizer.

Modelled on gguf-py's ``gguf/quants.py`` (``class Q8_0(__Quant, qtype=GGMLQuantizationType.Q8_0)``):
a subclass declares ``type_id`` in its class statement and is registered under its name; adding a
format touches one class. A class provides

* facts: ``name``, ``type_id`` (the GGML type number in .gguf files), ``block_size`` (elements per
  block), ``type_size`` (bytes per block), ``bits_per_weight = 8 * type_size / block_size`` (exact),
  ``sub_block_size`` (elements sharing one effective scale), ``qmin``/``qmax`` (the integer codes the
  quantizer writes);
* ``quantize(blocks, weights=None)``: ``(n_blocks, block_size)`` float32 -> ``(n_blocks, type_size)``
  uint8, the exact GGUF bytes llama.cpp writes (``quantize_<type>`` of ggml-quants.c, with
  ``weights`` the importance matrix spread over the blocks, or ``None`` for what llama.cpp does
  without one);
* ``quantize_rows(x, imatrix=None)``: the same for a ``(nrows, n_per_row)`` tensor with llama.cpp's
  one-weight-per-column importance matrix (the only way in for Q4_0/Q4_1/Q5_0/Q5_1, whose weighted
  search uses the whole row's mean square: ``row_weighted``);
* ``dequantize(data)``: bytes -> ``(n_blocks, block_size)`` float32, exactly ``dequantize_row_<type>``;
* accessors for analysis: ``codes(data)`` (per-element integer codes as stored), ``sub_scales(data)``
  (per-sub-block effective scale and min, ``x_hat = scale * value(code) - min``), ``value_of(codes)``.

Dequantization is the same formula for every type, ``x_hat = scale[sub] * value(code) - min[sub]``
in float32, which is exactly what each ``dequantize_row_*`` computes (``a - (-b) == a + b`` in IEEE
arithmetic, so the ``+ m`` of Q4_1/Q5_1 is ``- (-m)``).

Quantizing runs over tiles of blocks (``QUANT_TILE_ELEMENTS``) so temporaries stay bounded; each tile is
processed with whole-array operations (no loop over blocks or elements).
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from .cmath import F32

QUANT_TILE_ELEMENTS = 1 << 17
GGML_TYPES: dict[str, type["GGMLType"]] = {}       # by upper-case name ("Q4_K")
GGML_TYPES_BY_ID: dict[int, type["GGMLType"]] = {}


class GGMLType:
    """Base class of a registered GGML block type (never instantiated: all methods are classmethods)."""

    name: ClassVar[str]
    type_id: ClassVar[int]
    block_size: ClassVar[int]
    type_size: ClassVar[int]
    sub_block_size: ClassVar[int]
    qmin: ClassVar[int]
    qmax: ClassVar[int]
    meta_bytes: ClassVar[int]               # bytes per block holding scales/mins (the rest holds codes)
    uses_weights: ClassVar[bool] = False    # does quantize() take an importance matrix?
    row_weighted: ClassVar[bool] = False    # imatrix path needs whole rows (quantize_rows only)
    linear: ClassVar[bool] = True           # value(code) = code - code_offset (else a codebook)
    code_offset: ClassVar[int] = 0
    codebook: ClassVar[np.ndarray | None] = None

    def __init_subclass__(cls, type_id: int | None = None, **kw) -> None:
        super().__init_subclass__(**kw)
        if type_id is None:
            return
        cls.type_id = type_id
        cls.name = cls.__name__
        assert cls.block_size % cls.sub_block_size == 0
        GGML_TYPES[cls.name] = cls
        GGML_TYPES_BY_ID[type_id] = cls

    # --- facts ---------------------------------------------------------------------------------
    @classmethod
    def bits_per_weight(cls) -> float:
        return 8.0 * cls.type_size / cls.block_size

    @classmethod
    def levels(cls) -> int:
        return cls.qmax - cls.qmin + 1

    @classmethod
    def code_bits(cls) -> float:
        """Bits per element spent on codes, ``8 * (type_size - meta_bytes) / block_size`` (TQ1_0: 1.625)."""
        return 8.0 * (cls.type_size - cls.meta_bytes) / cls.block_size

    @classmethod
    def stores_min(cls) -> bool:
        return cls.sub_scales(np.zeros((1, cls.type_size), np.uint8))[1] is not None

    @classmethod
    def grid_values(cls) -> np.ndarray:
        """value(code) for code = qmin..qmax (float64), the multipliers of a sub-block's scale."""
        return cls.value_of(np.arange(cls.qmin, cls.qmax + 1)).astype(np.float64)

    # --- the two array functions ---------------------------------------------------------------
    @classmethod
    def quantize(cls, blocks: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """``(n_blocks, block_size)`` float32 -> ``(n_blocks, type_size)`` uint8 (GGUF bytes).

        ``weights`` (float32) is the importance matrix laid over the blocks: ``(n_blocks, block_size)``,
        or ``(k, block_size)`` with ``n_blocks`` a multiple of ``k``, repeated cyclically (llama.cpp's
        one weight per column: ``k`` blocks per row, the same for every row; gathered tile by tile, so
        it is never expanded to the tensor's size). Types that ignore it in llama.cpp (Q8_0, TQ1_0,
        TQ2_0, MXFP4) refuse it rather than silently drop it.
        """
        blocks = np.asarray(blocks)
        if blocks.ndim != 2 or blocks.shape[1] != cls.block_size:
            raise ValueError(f"{cls.name} quantizes blocks of shape (n, {cls.block_size}), got {blocks.shape}")
        blocks = blocks.astype(F32, copy=False)
        _check_finite(blocks, cls.name, "value")
        if weights is not None:
            if cls.row_weighted:
                raise ValueError(f"{cls.name} with an importance matrix needs whole rows (llama.cpp weights by "
                                 f"the row's mean square): use quantize_rows(x, imatrix)")
            if not cls.uses_weights:
                raise ValueError(f"{cls.name} takes no importance matrix (llama.cpp ignores it for this type)")
            weights = np.asarray(weights, F32)
            if weights.ndim != 2 or weights.shape[1] != cls.block_size or blocks.shape[0] % weights.shape[0]:
                raise ValueError(f"{cls.name}: weights of shape {weights.shape} do not tile blocks of shape {blocks.shape}")
            _check_finite(weights, cls.name, "importance weight")
        out = np.empty((blocks.shape[0], cls.type_size), np.uint8)
        step = max(1, QUANT_TILE_ELEMENTS // cls.block_size)
        with np.errstate(all="ignore"):  # inf/NaN intermediates follow IEEE rules exactly as in C
            for b0 in range(0, blocks.shape[0], step):
                b1 = min(b0 + step, blocks.shape[0])
                w = None if weights is None else weights[np.arange(b0, b1) % weights.shape[0]]
                out[b0:b1] = cls._quantize(blocks[b0:b1], w)
        return out

    @classmethod
    def quantize_rows(cls, x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
        """llama.cpp's ``quantize_<type>(src, dst, nrows, n_per_row, imatrix)``: ``x`` ``(nrows, n_per_row)``
        float32, ``imatrix`` one importance weight per column (``n_per_row``) or None ->
        ``(nrows, n_per_row // block_size * type_size)`` uint8, the rows of a GGUF tensor."""
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] % cls.block_size:
            raise ValueError(f"{cls.name} rows must have a multiple of {cls.block_size} values, got shape {x.shape}")
        w = None
        if imatrix is not None:
            imatrix = np.asarray(imatrix, F32)
            if imatrix.shape != (x.shape[1],):
                raise ValueError(f"imatrix has shape {imatrix.shape}; expected one weight per column ({x.shape[1]},)")
            w = imatrix.reshape(-1, cls.block_size)          # the blocks of one row, repeated for every row
            if cls.row_weighted:
                return cls._quantize_rows_weighted(x, imatrix)
        return cls.quantize(x.reshape(-1, cls.block_size), w).reshape(x.shape[0], -1)

    @classmethod
    def _quantize_rows_weighted(cls, x: np.ndarray, imatrix: np.ndarray) -> np.ndarray:
        """Row tiles through ``cls._quantize_weighted(rows, imatrix)`` (types whose search needs the row)."""
        x = x.astype(F32, copy=False)
        _check_finite(x.reshape(-1, cls.block_size), cls.name, "value")
        _check_finite(imatrix.reshape(1, -1), cls.name, "importance weight")
        out = np.empty((x.shape[0], x.shape[1] // cls.block_size * cls.type_size), np.uint8)
        step = max(1, QUANT_TILE_ELEMENTS // x.shape[1])
        with np.errstate(all="ignore"):
            for r0 in range(0, x.shape[0], step):
                out[r0:r0 + step] = cls._quantize_weighted(x[r0:r0 + step], imatrix).reshape(-1, out.shape[1])
        return out

    @classmethod
    def dequantize(cls, data: np.ndarray) -> np.ndarray:
        """``(n_blocks, type_size)`` uint8 -> ``(n_blocks, block_size)`` float32, ``scale*value - min``."""
        data = cls._as_blocks(data)
        with np.errstate(all="ignore"):  # a foreign file's inf/NaN scale gives inf/NaN, as in C
            return cls.reconstruct(cls.codes(data), *cls.sub_scales(data))

    @classmethod
    def reconstruct(cls, codes: np.ndarray, scale: np.ndarray, mn: np.ndarray | None) -> np.ndarray:
        """``scale[sub] * value(code) - min[sub]`` in float32 from already unpacked parts."""
        n_sub = cls.block_size // cls.sub_block_size
        v = cls.value_of(codes).reshape(-1, n_sub, cls.sub_block_size)
        with np.errstate(all="ignore"):  # a foreign file's inf/NaN scale gives inf/NaN, as in C
            x = scale[:, :, None] * v
            if mn is not None:
                x = x - mn[:, :, None]
        return x.reshape(-1, cls.block_size)

    # --- analysis helpers (float64; not part of the byte format) ---------------------------------
    @classmethod
    def position(cls, x: np.ndarray, scale: np.ndarray, mn: np.ndarray | None) -> np.ndarray:
        """Where ``x`` lies in units of its sub-block's scale, ``(x + min) / scale`` (float64, (n, bs));
        NaN where the scale is 0."""
        n_sub = cls.block_size // cls.sub_block_size
        s = np.repeat(np.asarray(scale, np.float64), cls.sub_block_size, axis=1)
        t = np.asarray(x, np.float64)
        if mn is not None:
            t = t + np.repeat(np.asarray(mn, np.float64), cls.sub_block_size, axis=1)
        with np.errstate(all="ignore"):
            return np.where(s != 0, t / np.where(s != 0, s, 1.0), np.nan).reshape(-1, n_sub * cls.sub_block_size)

    @classmethod
    def raw_codes(cls, codes: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Unclamped codes for clip statistics: the stored code, except where the element lies more
        than half a grid step beyond the sub-block's grid (its nearest level would be outside the
        format), where it is ``qmax + excess`` (``qmin - excess``), the excess counted in steps of the
        grid's end spacing (one code for the linear types). Sub-blocks with scale 0 report their codes."""
        g = np.unique(cls.grid_values())
        top = (pos - g[-1]) / (g[-1] - g[-2])
        bottom = (pos - g[0]) / (g[1] - g[0])
        raw = np.where(top > 0.5, cls.qmax + top, np.where(bottom < -0.5, cls.qmin + bottom, codes))
        return np.where(np.isnan(pos), codes, raw)

    @classmethod
    def clip_counts(cls, x: np.ndarray, scale: np.ndarray, mn: np.ndarray | None,
                    valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per block ``(n,)``, how many elements :meth:`raw_codes` puts below ``qmin`` and above ``qmax``
        (``x`` float32 ``(n, block_size)``; ``valid`` excludes padding): exactly those counts, without
        forming every element's float64 position.

        The position is monotone in ``x`` within a sub-block, so its in-grid elements are one interval of
        ``x``. That interval, computed in float64 and narrowed by 2**-40 of its magnitude (float64 rounding
        moves its ends by ~2**-52), then rounded to float32, leaves outside it every element that may clip:
        the few candidates, found in one float32 pass, whose positions are then computed exactly as
        :meth:`position` does and tested as :meth:`raw_codes` does."""
        n_sub = cls.block_size // cls.sub_block_size
        g = np.unique(cls.grid_values())
        end_hi, end_lo = g[-1] + 0.5 * (g[-1] - g[-2]), g[0] - 0.5 * (g[1] - g[0])
        s = np.asarray(scale, np.float64)
        m = 0.0 if mn is None else np.asarray(mn, np.float64)
        a, b = end_lo * s - m, end_hi * s - m
        slack = 2.0 ** -40 * (max(abs(end_lo), abs(end_hi)) * np.abs(s) + np.abs(m))
        f32_max = float(np.finfo(np.float32).max)
        # rounded to nearest and compared with <= / >=: no float32 lies between an end and its rounding
        lo = np.clip(np.minimum(a, b) + slack, -f32_max, f32_max).astype(np.float32)
        hi = np.clip(np.maximum(a, b) - slack, -f32_max, f32_max).astype(np.float32)
        lo[s == 0], hi[s == 0] = -np.inf, np.inf           # position NaN: raw_codes reports the stored code
        xs = x.reshape(-1, n_sub, cls.sub_block_size)
        cand = (xs <= lo[:, :, None]) | (xs >= hi[:, :, None])
        if valid is not None:
            cand &= valid.reshape(xs.shape)
        idx = np.flatnonzero(cand)
        n = x.shape[0]
        if idx.size == 0:
            return np.zeros(n, np.int64), np.zeros(n, np.int64)
        block, col = np.divmod(idx, cls.block_size)
        sub = col // cls.sub_block_size
        s_c = s[block, sub]
        t = x.reshape(-1)[idx].astype(np.float64)
        if mn is not None:
            t = t + m[block, sub]
        with np.errstate(all="ignore"):
            pos = np.where(s_c != 0, t / np.where(s_c != 0, s_c, 1.0), np.nan)
            high = (pos - g[-1]) / (g[-1] - g[-2]) > 0.5
            low = ~high & ((pos - g[0]) / (g[1] - g[0]) < -0.5)
        return np.bincount(block[low], minlength=n), np.bincount(block[high], minlength=n)

    @classmethod
    def near_boundary(cls, pos: np.ndarray, rel: float = 2.0 ** -20) -> np.ndarray:
        """Elements within ``rel`` (relative, about 8 float32 ulps) of a rounding boundary between two
        neighbouring grid values: float32 arithmetic and the fp16 rounding of the scale decide their code."""
        g = np.unique(cls.grid_values())
        mid = (g[:-1] + g[1:]) / 2
        p = np.nan_to_num(pos, nan=np.inf)
        i = np.clip(np.searchsorted(mid, p), 1, len(mid) - 1)
        dist = np.minimum(np.abs(p - mid[i - 1]), np.abs(p - mid[np.minimum(i, len(mid) - 1)]))
        return np.isfinite(p) & (p >= g[0]) & (p <= g[-1]) & (dist <= rel * np.maximum(np.abs(p), 1.0))

    # --- accessors ---------------------------------------------------------------------------------
    @classmethod
    def value_of(cls, codes: np.ndarray) -> np.ndarray:
        """The float32 multiplier each integer code stands for."""
        codes = np.asarray(codes)
        if cls.linear:
            return (codes.astype(np.int32) - cls.code_offset).astype(F32)
        return cls.codebook.astype(F32)[codes.astype(np.intp) - cls.qmin]

    @classmethod
    def codes(cls, data: np.ndarray) -> np.ndarray:
        """Per-element integer codes ``(n_blocks, block_size)`` as stored (int16)."""
        raise NotImplementedError

    @classmethod
    def sub_scales(cls, data: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Per sub-block ``(scale, min)``, each ``(n_blocks, block_size // sub_block_size)`` float32, as
        the dequantizer computes them (``min`` None when the type has none)."""
        raise NotImplementedError

    @classmethod
    def _quantize(cls, x: np.ndarray, w: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def _as_blocks(cls, data: np.ndarray) -> np.ndarray:
        data = np.asarray(data, np.uint8)
        if data.size % cls.type_size:
            raise ValueError(f"{cls.name} data of {data.size} bytes is not a whole number of "
                             f"{cls.type_size}-byte blocks")
        return data.reshape(-1, cls.type_size)


def _check_finite(a: np.ndarray, name: str, what: str) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        b, j = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}: block {b} has a non-finite {what} at position {j} ({a[b, j]!r})")


def get_ggml_type(name: str) -> type[GGMLType]:
    """The registered type named ``name`` (case-insensitive: ``"q4_k"``, ``"Q4_K"``)."""
    try:
        return GGML_TYPES[name.upper()]
    except KeyError:
        names = (t.name.lower() for t in sorted(GGML_TYPES.values(), key=lambda t: t.type_id))
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(names)}") from None


# --- byte-layout helpers shared by the types ---------------------------------------------------
def put_fp16(out: np.ndarray, at: int, bits: np.ndarray) -> None:
    """Write uint16 little-endian fields (one per block) at byte ``at``."""
    out[:, at:at + 2] = bits.astype("<u2").reshape(-1, 1).view(np.uint8)


def get_u16(data: np.ndarray, at: int) -> np.ndarray:
    return np.ascontiguousarray(data[:, at:at + 2]).view("<u2")[:, 0]


def pack_nibbles(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Bytes ``lo | hi << 4`` (both (n, k) integer arrays with values < 16)."""
    return (np.asarray(lo, np.uint8) & 0x0F) | ((np.asarray(hi, np.uint8) & 0x0F) << 4)


def unpack_nibbles(q: np.ndarray, group: int) -> np.ndarray:
    """Inverse of the common layout: every ``group`` bytes hold ``2*group`` codes, the low nibbles the
    first ``group`` and the high nibbles the next ``group``."""
    n = q.shape[0]
    q = q.reshape(n, -1, 1, group)
    return np.concatenate([q & 0x0F, q >> 4], axis=2).reshape(n, -1)


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """(n, 8*k) of 0/1 -> (n, k) bytes, little-endian bit order within a byte."""
    return np.packbits(np.asarray(bits, np.uint8), axis=1, bitorder="little")


def unpack_bits(b: np.ndarray) -> np.ndarray:
    return np.unpackbits(b, axis=1, bitorder="little")
