"""Analyze one scheme on one tensor: parameters, per-element codes, metrics, memory -- one path for all.

Every scheme runs the same steps (see the README's engine map):

1. :func:`quantcore.granularity.canonical` and :func:`~quantcore.granularity.block_view`: the tensor as one
   ``(n_blocks, block_len)`` view; :func:`~quantcore.granularity.block_minmax`: its reductions;
2. ``spec.scale_rule.block_scales``: each block's scale (:mod:`quantcore.scales`);
3. :func:`quantcore.kernel.quantize_and_measure`: the fused, tiled element encoder (integer rounding or the
   float / codebook encoder) and the statistics rows, in one pass;
4. :class:`QuantResult`: tables, memory, exports; per-element arrays recomputed on demand.

GGUF types replace steps 2-3 by their registered :mod:`quantcore.ggml` class (:func:`gguf_pass`): the bytes
llama.cpp would write, then their codes, per-sub-block scales and dequantized values; their statistics are
computed from that reconstruction in float64 (:func:`quantcore.metrics.row_stats`).

Dtype discipline: integer elements compute in the convention's working dtype (float64 for ``float64``,
float32 for every other convention); a float32/float64 input is not copied but cast tile by tile inside
the kernel. Float and codebook elements model a float32 weight: the input is converted to float32 once
(exact for float16/float32; a float64 input is rounded to float32 here, like loading it into a runtime)
and every scale and element step is float32. Codes are stored in the smallest integer dtype; metric sums
are accumulated in float64.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import numpy as np

from . import metrics as M
from .conventions import Convention, get_convention
from .elements import GGUFType
from .export import jsonable
from .ggml import GGMLType
from .ggml.base import QUANT_TILE_ELEMENTS
from .granularity import (BlockView, Canonical, PerBlock, PerChannel, PerGroup, PerTensor, block_amax, block_minmax,
                          block_view, canonical, check_finite)
from .kernel import quantize_and_measure, quantize_codes
from .memory import Memory
from .quantize import TILE_ELEMENTS, FloatCodec, IntCodec, code_dtype, tiles
from .scales import BlockScales, IntScale, PowerOfTwo, ScaleInputs, TwoLevel, check_encoder_scale, uses_fma
from .spec import QuantSpec
from .steps import Steps, run

ArrayLike = np.ndarray | Sequence[np.ndarray]
TIE_CONVENTIONS = ("float64", "torch", "torch-fake")  # compared for tie flags (same rounding rule)


@dataclass(frozen=True)
class Prepared:
    """Steps 1-2 of the module docstring for one (tensor, spec): everything the kernel needs.

    ``work`` / ``work_valid`` are what the kernel quantizes and measures: the block view itself, except
    for MX blocks whose scale is NaN (non-finite input allowed), which are zeroed and left out of the
    statistics.
    """

    spec: QuantSpec
    canon: Canonical
    blocks: BlockView
    scales: BlockScales
    work: np.ndarray
    work_valid: np.ndarray | None
    data_range: tuple[np.ndarray, np.ndarray] | None = None  # integer schemes: each block's data (min, max)

    @property
    def conv(self) -> Convention | None:
        rule = self.spec.scale_rule
        return rule.convention(self.spec.convention) if isinstance(rule, IntScale) else None

    def _rows(self, a: np.ndarray | None) -> np.ndarray | None:
        """A per-block array repeated for every statistics row of its block."""
        return None if a is None else np.repeat(np.asarray(a), self.blocks.tile[0])

    def codec(self) -> IntCodec | FloatCodec:
        """A fresh element encoder over the statistics rows (fresh: stochastic rounding restarts its stream)."""
        spec, bs = self.spec, self.scales
        if isinstance(spec.scale_rule, IntScale):
            conv = self.conv
            qmin, qmax = conv.code_range(spec.element)
            rng = np.random.default_rng(spec.seed) if spec.effective_rounding == "stochastic" else None
            rng_rows = None if self.data_range is None else tuple(self._rows(a) for a in self.data_range)
            return IntCodec(self._rows(bs.scale), self._rows(bs.zero_point), qmin, qmax, conv,
                            spec.effective_rounding, rng, uses_fma(conv, self.blocks), row_range=rng_rows)
        return FloatCodec(spec.element, bs.encode_op, self._rows(bs.encode_scale), self._rows(bs.scale),
                          min(self.work.size, TILE_ELEMENTS))

    def run(self, keep_codes: bool = True, keep_raw: bool = False, totals: bool = False,
            keep_boundary: bool = False, n_rows: int | None = None):
        """The fused kernel over the statistics rows (:func:`quantcore.kernel.quantize_and_measure`); over the
        first ``n_rows`` of them only when given (element-wise results are the same for those rows; not for
        stochastic rounding, whose random stream restarts)."""
        bv = self.blocks
        rows = slice(None, n_rows)
        valid = None if self.work_valid is None else bv.rows(self.work_valid)[rows]
        return quantize_and_measure(bv.rows(self.work)[rows], self.codec(), valid, keep_codes=keep_codes,
                                    keep_raw=keep_raw, row_name=bv.row_name, totals=totals,
                                    keep_boundary=keep_boundary)


    def codes(self) -> np.ndarray:
        """The codes alone, statistics-row layout (:func:`quantcore.kernel.quantize_codes`): no x_hat, no
        statistics."""
        return quantize_codes(self.blocks.rows(self.work), self.codec())


def prepare(x: ArrayLike, spec: QuantSpec, channel_axis: int = 0, tensor_range: tuple[float, float] | None = None,
            allow_nonfinite: bool = False) -> Prepared:
    """Canonical layout, block view, reductions and block scales of ``x`` under ``spec`` (not for GGUF types):
    :func:`prepare_steps` run to its end."""
    return run(prepare_steps(x, spec, channel_axis, tensor_range, allow_nonfinite))


def prepare_steps(x: ArrayLike, spec: QuantSpec, channel_axis: int = 0,
                  tensor_range: tuple[float, float] | None = None, allow_nonfinite: bool = False) -> Steps[Prepared]:
    """:func:`prepare` as steps (:mod:`quantcore.steps`): a range search steps once per candidate.

    ``tensor_range``: ``(min, max)`` of the whole tensor when ``x`` is a part of it (a run of axis-0 slices):
    per-tensor scales and NVFP4's tensor scale then come from it. ``allow_nonfinite``: E8M0 (MX) scales only,
    OCP MX 6.3 -- a block holding NaN or inf gets the NaN scale and decodes to NaN; it is left out of every
    metric. Raises ValueError naming what is wrong and where.
    """
    if not isinstance(spec, QuantSpec):
        raise ValueError(f"spec must be a QuantSpec, got {type(spec).__name__}")
    yield 0.0
    rule = spec.scale_rule
    if allow_nonfinite and not isinstance(rule, PowerOfTwo):
        raise ValueError(f"{spec.label}: allow_nonfinite applies to MX schemes only (E8M0 scales: the OCP MX 6.3 "
                         f"NaN scale)")
    if tensor_range is not None:
        lo, hi = (float(v) for v in tensor_range)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
            raise ValueError(f"tensor_range must be a finite (min, max) pair, got {tensor_range!r}")
        tensor_range = (lo, hi)
    canon, bv = _layout(x, spec, channel_axis)
    per_tensor = tensor_range is not None and isinstance(bv.granularity, PerTensor)
    if isinstance(rule, IntScale):
        mn, mx = block_minmax(bv.values)
        if not (np.isfinite(mn).all() and np.isfinite(mx).all()):
            check_finite(canon.to_input_layout(canon.values), "tensor")
        _check_working_range(canon, mn, mx, rule.convention(spec.convention))
        data_range = (mn, mx)
        if per_tensor:
            mn, mx = np.full(1, tensor_range[0], mn.dtype), np.full(1, tensor_range[1], mx.dtype)
        scales = yield from rule.block_scales_steps(ScaleInputs(bv, canon, mn, mx, tensor_range=tensor_range), spec)
        return Prepared(spec, canon, bv, scales, bv.values, bv.valid, data_range)
    amax = block_amax(bv.values)
    if not np.isfinite(amax).all() and not allow_nonfinite:
        check_finite(canon.to_input_layout(canon.values), "tensor")
    if per_tensor:
        amax = np.full(1, max(-tensor_range[0], tensor_range[1]), np.float32)
    try:  # float scales: the message names the scheme (the integer ones name the range instead)
        scales = rule.block_scales(ScaleInputs(bv, canon, block_amax=amax, tensor_range=tensor_range), spec)
        work, work_valid = bv.values, bv.valid
        if scales.nan_blocks is not None:
            nan = scales.nan_blocks
            work = np.where(nan[:, None], np.zeros((), bv.values.dtype), bv.values)
            base = np.ones(bv.values.shape, bool) if bv.valid is None else bv.valid
            work_valid = base & ~nan[:, None]
            amax = np.where(nan, 0, amax)
        check_encoder_scale(scales, amax, bv, rule.label, spec.scale_dtype)
    except ValueError as e:
        raise ValueError(f"{spec.label}: {e}") from None
    return Prepared(spec, canon, bv, scales, work, work_valid)


def _layout(x: ArrayLike, spec: QuantSpec, channel_axis: int) -> tuple[Canonical, BlockView]:
    """Canonical tensor and block view: channels along ``channel_axis`` (per-channel: its own axis; per-block:
    the tile's row axis), groups / tile columns last."""
    g = spec.granularity
    group_axis = None
    if isinstance(g, PerChannel):
        channel_axis = g.axis
    elif isinstance(g, PerGroup):
        group_axis = g.axis
        if isinstance(x, np.ndarray) and x.ndim >= 2:
            nd = x.ndim
            if -nd <= group_axis < nd and -nd <= channel_axis < nd and group_axis % nd == channel_axis % nd:
                channel_axis = 0 if group_axis % nd != 0 else 1
    elif isinstance(g, PerBlock):
        if isinstance(x, np.ndarray) and x.ndim < 2:
            raise ValueError(f"{g.label} tiles need a tensor with at least 2 dimensions, got shape {x.shape}")
        channel_axis, group_axis = g.axes
    if spec.kind == "float":
        x = _as_float32(x)
        dtype = np.float32
    elif spec.kind == "gguf":
        dtype = get_convention("gguf").dtype
    else:
        dtype = spec.scale_rule.convention(spec.convention).dtype
    canon = canonical(x, dtype, channel_axis, group_axis)
    return canon, block_view(canon, g)


def _as_float32(x: ArrayLike) -> np.ndarray:
    """The float32 copy a float element format quantizes (no copy for float32 input). Ragged rows are
    refused; a finite value beyond float32 is refused naming its index."""
    if not isinstance(x, np.ndarray):
        rows = list(x)
        if len({len(r) for r in rows}) > 1:
            raise ValueError("float formats need channels of equal length (a rectangular tensor)")
        x = np.asarray([np.asarray(r, dtype=np.float64) for r in rows])
    if x.dtype.kind not in "fiub":
        raise ValueError(f"tensor dtype {x.dtype} is not numeric (expected a real numeric array)")
    if x.dtype == np.float32:
        return x
    with np.errstate(over="ignore", invalid="ignore"):
        x32 = np.asarray(x, dtype=np.float32)
    if x.dtype.kind == "f" and x.size:
        beyond = np.isinf(x32) & np.isfinite(x)
        if beyond.any():
            i = tuple(int(k) for k in np.argwhere(beyond)[0])
            raise ValueError(f"tensor value {float(x[i]):.3g} at index {i} is beyond the float32 range that float "
                             f"element formats quantize from")
    return x32


def _check_working_range(canon: Canonical, mn: np.ndarray, mx: np.ndarray, conv: Convention) -> None:
    work_max = float(np.finfo(conv.dtype).max)
    if max(float(np.max(-mn)), float(np.max(mx))) > work_max:
        x_in = canon.to_input_layout(canon.values)
        first = tuple(int(i) for i in np.argwhere(np.abs(x_in) > work_max)[0])
        raise ValueError(f"tensor value {float(x_in[first]):.3g} at index {first} is beyond the "
                         f"{np.dtype(conv.dtype).name} range of the {conv.name!r} convention; use the float64 "
                         f"convention")


class QuantResult:
    """Everything one scheme does to one tensor (every kind of scheme). Arrays are computed once; tables on
    demand. ``scales`` is the scale rule's :class:`quantcore.scales.BlockScales`."""

    def __init__(self, spec: QuantSpec, canon: Canonical, blocks: BlockView, scales: BlockScales,
                 q_rows: np.ndarray, stats: dict[str, np.ndarray], channel_names: Sequence[str] | None,
                 prepared: Prepared | None = None, raw: np.ndarray | None = None, xhat: np.ndarray | None = None,
                 sub_scale: np.ndarray | None = None, sub_min: np.ndarray | None = None,
                 ties: np.ndarray | None = None, imatrix: np.ndarray | None = None) -> None:
        self.spec = spec
        self.imatrix = imatrix   # GGUF types: the importance matrix the scale search was weighted by
        self.label = spec.label if imatrix is None else f"{spec.label} + imatrix"
        self.canon = canon
        self.blocks = blocks
        self.scales = scales
        self._prep = prepared
        self.sub_scale, self.sub_min = sub_scale, sub_min   # GGUF types: (n_blocks, n_sub) float32
        self._q_rows = q_rows
        n_ch = canon.n_channels
        self.channel_names = list(channel_names) if channel_names is not None else [f"ch{i}" for i in range(n_ch)]
        if len(self.channel_names) != n_ch:
            raise ValueError(f"{len(self.channel_names)} channel names for {n_ch} channels")
        if raw is not None:
            self.__dict__["_raw_b"] = raw
        if xhat is not None:
            self.__dict__["_xhat_b"] = xhat
        if ties is not None:
            self.__dict__["ties_blocks"] = ties
        self._block_stats = blocks.block_stats(stats)
        self._channel_stats = blocks.channel_stats(stats)
        self.metrics = M.overall(self._block_stats)

    # --- per-block parameters -------------------------------------------------------------------
    @property
    def scale(self) -> np.ndarray:
        """Per block, the dequantization scale (float elements: block scale times tensor scale)."""
        return self.scales.scale

    @property
    def zero_point(self) -> np.ndarray:
        """Per block (0 for float elements, which store none; NaN for non-linear GGUF types)."""
        return self.scales.zero_point

    @property
    def lo(self) -> np.ndarray:
        return self.scales.lo

    @property
    def hi(self) -> np.ndarray:
        return self.scales.hi

    @property
    def clip_ratio(self) -> np.ndarray | None:
        return self.scales.clip_ratio

    @property
    def scale_codes(self) -> np.ndarray | None:
        """Stored scale codes per block (E8M0 / E4M3 bytes, int8 double-quantized scales), or None."""
        return self.scales.codes

    @property
    def block_scale(self) -> np.ndarray:
        """The stored per-block scale decoded, before any tensor scale (NVFP4's E4M3 ``s_b``)."""
        return self.scales.scale if self.scales.block_scale is None else self.scales.block_scale

    @property
    def tensor_scale(self) -> float | None:
        return self.scales.tensor_scale

    # --- format facts ---------------------------------------------------------------------------
    @property
    def ggml_type(self) -> type[GGMLType] | None:
        return self.spec.element.type if isinstance(self.spec.element, GGUFType) else None

    @property
    def qmin(self) -> int:
        """Smallest code: the integer format's qmin (or its storage type's, for conventions that saturate
        there), a GGUF type's, 0 for float elements (codes 0 .. 2**bits - 1)."""
        return self._code_range[0]

    @property
    def qmax(self) -> int:
        return self._code_range[1]

    @cached_property
    def _code_range(self) -> tuple[int, int]:
        spec = self.spec
        if spec.kind == "gguf":
            return self.ggml_type.qmin, self.ggml_type.qmax
        if spec.kind == "float":
            return 0, spec.element.n_codes - 1
        return self._prep.conv.code_range(spec.element)

    @property
    def levels(self) -> int:
        return self.qmax - self.qmin + 1

    # --- per-element arrays in block layout, recomputed on demand ------------------------------
    @property
    def _q_b(self) -> np.ndarray:
        return self._q_rows.reshape(self.blocks.values.shape)

    @cached_property
    def _codec(self):
        return self._prep.codec()

    @cached_property
    def _xhat_b(self) -> np.ndarray:
        if self.spec.kind == "gguf":
            return self._gguf_xhat(None)
        return self._codec.dequantize(self._q_rows).reshape(self.blocks.values.shape)

    @cached_property
    def _raw_b(self) -> np.ndarray:
        """Unclamped codes (integers: the quantization pass run again, same arithmetic and random stream;
        GGUF: :meth:`GGMLType.raw_codes`); float elements: the scaled value fed to the element encoder."""
        if self.spec.kind == "gguf":
            return self._gguf_raw(None)
        return self._raw_rows().reshape(self.blocks.values.shape)

    def _raw_rows(self, n_rows: int | None = None) -> np.ndarray:
        """:attr:`_raw_b` as statistics rows, the first ``n_rows`` only (computed for those rows alone unless
        the whole array is at hand)."""
        if "_raw_b" in self.__dict__ or (n_rows is None and self.spec.kind == "gguf"):
            return self.blocks.rows(self._raw_b)[:n_rows]
        if self.spec.kind == "gguf":
            return self._gguf_raw(n_rows)
        p = self._prep
        if self.spec.kind == "float":
            bs = self.scales
            op = np.divide if bs.encode_op == "divide" else np.multiply
            with np.errstate(over="ignore", under="ignore", invalid="ignore"):
                return op(p.blocks.rows(p.work)[:n_rows],
                          np.asarray(p._rows(bs.encode_scale), np.float32)[:n_rows, None]).astype(np.float32)
        return p.run(keep_codes=False, keep_raw=True, n_rows=n_rows).raw

    def _xhat_rows(self, n_rows: int | None = None) -> np.ndarray:
        """:attr:`_xhat_b` as statistics rows, the first ``n_rows`` only (computed for those rows alone unless
        the whole array is at hand)."""
        if "_xhat_b" in self.__dict__ or n_rows is None:
            return self.blocks.rows(self._xhat_b)[:n_rows]
        if self.spec.kind == "gguf":
            return self._gguf_xhat(n_rows)
        return self._codec.dequantize(self._q_rows.reshape(self.blocks.rows_shape)[:n_rows], rows=slice(0, n_rows))

    def _gguf_xhat(self, n_blocks: int | None) -> np.ndarray:
        """GGUF: x_hat (float32, ``GGMLType.reconstruct``) of the first ``n_blocks`` blocks (None: all; a GGUF
        type's statistics rows are its blocks) from the stored codes and sub-block scales: exactly what the
        quantization pass computed, without quantizing again (an importance matrix is already in the codes)."""
        mn = None if self.sub_min is None else self.sub_min[:n_blocks]
        return self.ggml_type.reconstruct(self._q_b[:n_blocks], self.sub_scale[:n_blocks], mn)

    def _gguf_raw(self, n_blocks: int | None) -> np.ndarray:
        """GGUF: raw codes (float64, ``GGMLType.raw_codes``) of the first ``n_blocks`` blocks, as :meth:`_gguf_xhat`."""
        t, sc = self.ggml_type, self.sub_scale[:n_blocks]
        mn = None if self.sub_min is None else self.sub_min[:n_blocks]
        x = self.blocks.values[:n_blocks].astype(np.float32, copy=False)
        return t.raw_codes(self._q_b[:n_blocks], t.position(x, sc, mn))

    def _float_rows_pass(self, step, n_rows: int | None = None) -> np.ndarray:
        """Float elements: ``step(codec, tile, r0, r1)`` (a bool mask of the tile) over the statistics rows (the
        first ``n_rows``), tile by tile, into one bool array of those rows."""
        p = self._prep
        codec = p.codec()
        rows = p.blocks.rows(p.work)[:n_rows]
        out = np.empty(rows.shape, bool)
        for r0, r1, c0, c1 in tiles(*rows.shape):
            out[r0:r1, c0:c1] = step(codec, rows[r0:r1, c0:c1], r0, r1)
        return out

    @cached_property
    def _clip_sign_b(self) -> np.ndarray:
        """-1 / +1 where an element was clipped below / above, 0 elsewhere (block layout)."""
        return self._clip_sign_rows().reshape(self.blocks.values.shape)

    def _clip_sign_rows(self, n_rows: int | None = None) -> np.ndarray:
        """:attr:`_clip_sign_b` as statistics rows, the first ``n_rows`` only."""
        if "_clip_sign_b" in self.__dict__:
            return self.blocks.rows(self._clip_sign_b)[:n_rows]
        if self.spec.kind == "float":  # saturated elements: scale and compare only, no encoder pass
            clipped = self._float_rows_pass(lambda codec, v, r0, r1: codec.clipped(v, r0, r1), n_rows)
            return np.where(clipped, np.sign(self._prep.blocks.rows(self._prep.work)[:n_rows]), 0).astype(np.int64)
        raw = self._raw_rows(n_rows)
        return np.sign(np.clip(raw, self.qmin - 1, self.qmax + 1) - np.clip(raw, self.qmin, self.qmax)).astype(np.int64)

    @cached_property
    def memory(self) -> Memory:
        return self.spec.memory(self.canon.n_valid, self.blocks.n_data_blocks)

    @cached_property
    def utilization(self) -> float:
        """Mean over blocks of the fraction of the format's codes that are used."""
        used = M.codes_used(self._q_b, self.qmin, self.levels, self.blocks.valid)
        has_data = np.ones(self.blocks.n_blocks, bool) if self.blocks.valid is None else self.blocks.valid.any(axis=1)
        return float(np.mean(used[has_data] / self.levels))

    # --- per-element arrays (canonical (C, R, D) layout and input layout) ---------------------
    def _canon(self, a: np.ndarray) -> np.ndarray:
        return self.blocks.to_canonical(a)

    def _input(self, a: np.ndarray) -> np.ndarray:
        return self.canon.to_input_layout(self._canon(a))

    @property
    def valid(self) -> np.ndarray | None:
        v = self.canon.valid
        return None if v is None else self.canon.to_input_layout(v)

    @property
    def x(self) -> np.ndarray:
        return self.canon.to_input_layout(self.canon.values)

    @property
    def raw_q(self) -> np.ndarray:
        return self._input(self._raw_b)

    @property
    def q(self) -> np.ndarray:
        return self._input(self._q_b).astype(np.int64)

    @property
    def dequantized(self) -> np.ndarray:
        return self._input(self._xhat_b)

    @property
    def error(self) -> np.ndarray:
        return self.dequantized - self.x

    @property
    def clipped(self) -> np.ndarray:
        """Per element: -1 / +1 where the value was clipped (saturated) below / above, else 0."""
        return self._input(self._clip_sign_b)

    @property
    def block_index(self) -> np.ndarray:
        """Per element (input layout), the index of its block: ``r.scale[r.block_index]`` is its scale."""
        ids = np.broadcast_to(np.arange(self.blocks.n_blocks)[:, None], self.blocks.values.shape)
        return self._input(np.ascontiguousarray(ids))

    @cached_property
    def ties_blocks(self) -> np.ndarray:
        """Elements whose code depends on the last bit of the arithmetic.

        Integers: the code differs under another named convention's arithmetic (same scale and
        zero-point, same rounding rule; only float32 vs float64, reciprocal vs division, zero-point before
        or after rounding change): for example ``torch`` vs ``torch-fake`` on seed 001's filter_1. Float
        elements: the scaled value lies within one float32 ulp of a rounding boundary of the element grid
        (a one-ulp move changes the code; :class:`quantcore.floatfmt.Encoded`). GGUF types (whose scale
        searches have no float64 twin): within 2^-20 (relative) of the rounding boundary between two
        neighbouring grid values of its sub-block (:meth:`GGMLType.near_boundary`). Always False for
        stochastic rounding.
        """
        return self._ties_rows().reshape(self._q_b.shape)

    def _ties_rows(self, n_rows: int | None = None) -> np.ndarray:
        """:attr:`ties_blocks` as statistics rows, the first ``n_rows`` only (computed for those alone)."""
        if "ties_blocks" in self.__dict__:
            return self.blocks.rows(self.ties_blocks)[:n_rows]
        spec = self.spec
        if spec.kind == "gguf":  # one statistics row per block
            t, b = self.ggml_type, slice(None, n_rows)
            return t.near_boundary(t.position(self.blocks.values[b], self.sub_scale[b],
                                              None if self.sub_min is None else self.sub_min[b]))
        if spec.kind == "float":  # kept by analyze() from its encoder pass; else one encoder pass here
            return self._float_rows_pass(lambda codec, v, r0, r1: codec.tile(v, r0, r1, boundary=True).boundary,
                                         n_rows)
        p = self._prep
        rows = p.blocks.rows(p.work)[:n_rows]
        if spec.effective_rounding == "stochastic":
            return np.zeros(rows.shape, dtype=bool)
        q_rows = self._q_rows.reshape(p.blocks.rows_shape)[:n_rows]
        ties = np.zeros(rows.shape, dtype=bool)
        mn, mx = p.data_range
        data_max = max(-float(np.min(mn)), float(np.max(mx)))
        rule = spec.scale_rule
        for name in TIE_CONVENTIONS:
            if name == spec.convention:
                continue
            conv = rule.convention(name)
            if data_max > float(np.finfo(conv.dtype).max):
                continue  # this convention cannot hold the data (values beyond float32): no comparison
            # the other convention's codes, tile by tile (IntCodec: same arithmetic as quantize_blocks)
            other = IntCodec(p._rows(self.scale), p._rows(self.zero_point), self.qmin, self.qmax, conv,
                             spec.effective_rounding, fma=uses_fma(conv, self.blocks),
                             row_range=tuple(p._rows(a) for a in p.data_range))
            for r0, r1, c0, c1 in tiles(*rows.shape, other.max_tile):
                v = rows[r0:r1, c0:c1]
                q = other.tile(v if v.dtype == conv.dtype else v.astype(conv.dtype), r0, r1, xhat=False).q
                ties[r0:r1, c0:c1] |= q != q_rows[r0:r1, c0:c1]
        return ties

    @property
    def ties(self) -> np.ndarray:
        return self._input(self.ties_blocks)

    # --- plot data (the app ships these, never its own arithmetic) ----------------------------
    def block_of_channel(self, channel: int) -> int:
        """Index of the first block holding ``channel`` (per-tensor: 0; per-channel: the channel)."""
        C = self.canon.n_channels
        if not 0 <= channel < C:
            raise ValueError(f"channel {channel} is out of range (the tensor has {C} channels)")
        owners = self.blocks.channel_of_block
        if owners.size == 1 and owners[0] < 0:
            return 0
        k = self.blocks.tile[0]
        return int(np.flatnonzero((owners <= channel) & (channel < owners + k))[0])

    def channel_values(self, channel: int) -> tuple[np.ndarray, np.ndarray]:
        """``(x, x_hat)`` of one channel as float64, in canonical order, padding removed."""
        C = self.canon.n_channels
        self.block_of_channel(channel)  # validates the index
        x = self.canon.values.reshape(C, -1)[channel]
        xhat = self._canon(self._xhat_b).reshape(C, -1)[channel]
        if self.canon.valid is not None:
            keep = self.canon.valid.reshape(C, -1)[channel]
            x, xhat = x[keep], xhat[keep]
        return x.astype(np.float64), xhat.astype(np.float64)

    def grid(self, block: int, max_levels: int = 4096) -> tuple[np.ndarray, np.ndarray] | None:
        """Every code of ``block`` and its dequantized value, computed with the scheme's own arithmetic.

        None when the format has more than ``max_levels`` codes or for float formats (their grid is
        not uniform; see :mod:`quantcore.floatfmt`).
        """
        if self.spec.kind == "float" or self.levels > max_levels:
            return None
        codes = np.arange(self.qmin, self.qmax + 1, dtype=np.float64)
        if self.spec.kind == "gguf":
            t = self.ggml_type
            if self.sub_scale.shape[1] != 1:
                return None  # one grid per sub-block: see sub_block_table()
            levels = t.value_of(codes.astype(np.int64)) * self.sub_scale[block, 0]
            if self.sub_min is not None:
                levels = levels - self.sub_min[block, 0]
            return codes.astype(np.int64), levels.astype(np.float64)
        row = block * self.blocks.tile[0]
        levels = self._codec.dequantize(codes[None, :], slice(row, row + 1))[0]
        return codes.astype(np.int64), levels.astype(np.float64)

    def histogram(self, bins: int = 80) -> dict[str, np.ndarray]:
        """Counts of the input values in ``bins`` equal-width bins: ``left``, ``right``, ``count``."""
        x = self.canon.values
        x = x[self.canon.valid] if self.canon.valid is not None else x.reshape(-1)
        count, edges = np.histogram(x.astype(np.float64), bins=bins)
        return {"left": edges[:-1], "right": edges[1:], "count": count}

    def sub_block_table(self) -> dict[str, np.ndarray] | None:
        """GGUF types: one row per sub-block with its effective ``scale`` and ``min`` as the
        dequantizer computes them (``x_hat = scale * value(code) - min``); None for other schemes."""
        if self.sub_scale is None:
            return None
        n_blocks, n_sub = self.sub_scale.shape
        mn = np.zeros_like(self.sub_scale) if self.sub_min is None else self.sub_min
        return {"block": np.repeat(np.arange(n_blocks), n_sub), "sub_block": np.tile(np.arange(n_sub), n_blocks),
                "channel": np.repeat(self.blocks.channel_of_block, n_sub),
                "scale": self.sub_scale.reshape(-1).astype(np.float64), "min": mn.reshape(-1).astype(np.float64)}

    # --- tables -------------------------------------------------------------------------------
    def block_table(self) -> dict[str, np.ndarray]:
        m = M.metrics_from_stats(self._block_stats)
        t = {"block": np.arange(self.blocks.n_blocks), "channel": self.blocks.channel_of_block,
             "lo": np.asarray(self.lo, np.float64), "hi": np.asarray(self.hi, np.float64),
             "scale": np.asarray(self.scale, np.float64), "zero_point": np.asarray(self.zero_point, np.float64)}
        if self.clip_ratio is not None:
            t["clip_ratio"] = np.asarray(self.clip_ratio, np.float64)
        if self.scale_codes is not None:
            t["scale_code"] = np.asarray(self.scale_codes, np.int64)
        t.update(m)
        return t

    def channel_table(self) -> dict[str, np.ndarray]:
        """One row per channel: data min/max, the quantization range ``range_lo``/``range_hi`` and
        scale/zero-point (NaN when the scheme has several blocks per channel), metrics, tie count."""
        C = self.canon.n_channels
        rows = self.canon.values.reshape(C, -1)
        cmin, cmax = rows.min(axis=1).astype(np.float64), rows.max(axis=1).astype(np.float64)
        g = self.spec.granularity
        per_block = [np.asarray(a, np.float64) for a in (self.scale, self.zero_point, self.lo, self.hi)]
        if isinstance(g, PerChannel):
            scale, zp, lo, hi = per_block
        elif isinstance(g, PerTensor):
            scale, zp, lo, hi = (np.full(C, a[0]) for a in per_block)
        else:
            scale, zp, lo, hi = (np.full(C, np.nan) for _ in per_block)
        if self.spec.kind == "float":
            zp = np.full(C, np.nan)   # float elements have no zero-point
        ties = self.blocks.channel_stats({"t": np.count_nonzero(self._real_ties_rows(), axis=1)})["t"]
        with np.errstate(over="ignore"):  # a span beyond float64 (e.g. +-1.7e308) is reported as inf
            span = cmax - cmin
        t = {"channel": np.arange(C), "name": np.array(self.channel_names, dtype=object), "min": cmin, "max": cmax,
             "range": span, "range_lo": lo, "range_hi": hi, "scale": scale, "zero_point": zp}
        t.update(M.metrics_from_stats(self._channel_stats))
        t["ties"] = ties
        return t

    def _real_ties_rows(self) -> np.ndarray:
        """Tie flags of real elements (padding never counts), statistics rows."""
        t = self.ties_blocks
        if self.blocks.valid is not None:
            t = t & self.blocks.valid
        return self.blocks.rows(t)

    def sample_table(self, limit: int = 10_000) -> dict[str, np.ndarray]:
        """Per element, flattened in channel order (real elements only), at most ``limit`` rows. ``raw_q`` is
        the unclamped code (integers), the scaled value fed to the element encoder (float elements).

        Only the channels holding those rows are computed (their statistics rows, a prefix of the block
        view): on a large tensor the table costs what its rows cost, not another pass over the tensor."""
        C = self.canon.n_channels
        valid = None if self.canon.valid is None else self.canon.valid.reshape(C, -1)
        per_channel = (np.full(C, self.canon.values[0].size) if valid is None else valid.sum(axis=1))
        k = min(C, int(np.searchsorted(np.cumsum(per_channel), limit)) + 1)   # channels [0, k) hold them
        n_rows = self.blocks.rows_of_channels(k)

        def head(a_rows: np.ndarray) -> np.ndarray:   # the first n_rows statistics rows -> channels [0, k)
            return self.blocks.to_canonical(a_rows[:n_rows], channels=k).reshape(k, -1)

        x = self.canon.values[:k].reshape(k, -1)
        valid = np.ones(x.shape, bool) if valid is None else valid[:k]
        sel = np.flatnonzero(valid.ravel())[:limit]
        channel = np.broadcast_to(np.arange(k)[:, None], x.shape).ravel()[sel]
        index = (np.cumsum(valid, axis=1) - 1).ravel()[sel]
        raw = head(self._raw_rows(n_rows)).ravel()[sel]
        q = head(self._q_rows.reshape(self.blocks.rows_shape)).ravel()[sel]
        xh = head(self._xhat_rows(n_rows)).ravel()[sel].astype(np.float64)
        xs = x.ravel()[sel].astype(np.float64)
        abs_err = np.abs(xh - xs)
        return {"channel": channel, "index": index, "x": xs, "raw_q": raw.astype(np.float64),
                "q": q.astype(np.int64), "dequantized": xh, "abs_error": abs_err, "pct_error": M.pct_error(xs, abs_err),
                "clipped": head(self._clip_sign_rows(n_rows)).ravel()[sel],
                "tie": head(self._ties_rows(n_rows)).ravel()[sel]}

    def scheme_facts(self) -> dict:
        """The scheme as run, in readable form: element, granularity, scale rule, storage dtypes, convention."""
        spec, e, rule = self.spec, self.spec.element, self.spec.scale_rule
        facts = {"label": self.label, "kind": spec.kind, "element": e.label, "bits": float(e.bits),
                 "granularity": spec.granularity.label, "scale_rule": rule.label, "convention": spec.convention,
                 "rounding": spec.effective_rounding, "scale_dtype": spec.scale_dtype,
                 "zero_point_dtype": spec.zero_point_dtype, "qmin": self.qmin, "qmax": self.qmax}
        if spec.kind == "int":
            facts.update(signed=e.signed, mapping=rule.mapping, range=rule.range.label,
                         symmetric_scale=rule.effective_symmetric_scale(spec.convention) if rule.mapping == "symmetric"
                         else None)
        elif spec.kind == "float":
            facts.update(signed=bool(getattr(e, "signed", True)), element_max=e.max_finite,
                         saturating=True, tensor_scale_dtype="fp32" if isinstance(rule, TwoLevel) else None)
            facts.pop("qmin"), facts.pop("qmax")
        else:
            facts["gguf_type"] = self.ggml_type.name
        return facts

    @cached_property
    def imatrix_output_mse(self) -> float | None:
        """:meth:`weighted_output_mse` with the importance matrix the search was weighted by (None without)."""
        return None if self.imatrix is None else self.weighted_output_mse(self.imatrix)

    def weighted_output_mse(self, w: np.ndarray) -> float:
        """With importance weights ``w`` (the mean squared activation of each input column; GGUF types, one per
        element of a row): the mean over rows of ``sum_j w_j e_j**2`` (float64), the expected squared error of
        each output of ``y = W a`` caused by the error ``e`` of its weight row, for inputs with those mean
        squares and uncorrelated with each other: the error llama.cpp's weighted search aims to reduce."""
        if self.spec.kind != "gguf":
            raise ValueError(f"importance-weighted output error is measured for GGUF types (rows along the last "
                             f"axis); {self.label} is not one")
        w = np.asarray(w, np.float64)
        n = w.size
        if w.ndim != 1 or self.canon.values.shape[-1] != n:
            raise ValueError(f"{w.size} importance weights do not match the rows of this tensor "
                             f"({self.canon.values.shape[-1]} elements)")
        e = np.subtract(self._xhat_b.reshape(-1, n), self.blocks.values.reshape(-1, n), dtype=np.float64)
        return float(np.mean(np.square(e, out=e) @ w))

    def to_dict(self, max_blocks: int = 100_000) -> dict:
        """The JSON export: ``scheme`` (readable facts), ``spec`` (:meth:`QuantSpec.to_dict`, exact), per-block
        scales (and stored scale codes), metrics, memory and the per-channel table; with an importance matrix
        its length and :attr:`imatrix_output_mse`."""
        return jsonable({
            "label": self.label,
            "scheme": self.scheme_facts(),
            "spec": self.spec.to_dict(),
            "scale": np.asarray(self.scale, np.float64)[:max_blocks],
            "zero_point": np.asarray(self.zero_point, np.float64)[:max_blocks],
            "scale_codes": None if self.scale_codes is None else np.asarray(self.scale_codes)[:max_blocks],
            "tensor_scale": self.tensor_scale,
            "clip_ratio": None if self.clip_ratio is None else np.asarray(self.clip_ratio)[:max_blocks],
            "metrics": {**self.metrics.to_dict(), "utilization": self.utilization},
            "memory": self.memory.to_dict(),
            "channels": self.channel_table(),
            "imatrix": None if self.imatrix is None else {"columns": int(self.imatrix.size),
                                                          "output_mse": self.imatrix_output_mse},
        })


def analyze(x: ArrayLike, spec: QuantSpec, channel_axis: int = 0, channel_names: Sequence[str] | None = None, *,
            tensor_range: tuple[float, float] | None = None, allow_nonfinite: bool = False,
            imatrix: ArrayLike | None = None) -> QuantResult:
    """Quantize ``x`` with ``spec`` and measure it.

    ``x`` is an array of any shape (1-D: one channel) or a list of 1-D arrays (ragged channels; integer and
    GGUF schemes). ``channel_axis`` picks the channels reported in the per-channel table; a per-channel
    scheme uses its own axis, a per-block scheme its tile's row axis. ``tensor_range`` / ``allow_nonfinite``:
    see :func:`prepare`. ``imatrix``: GGUF types whose llama.cpp quantizer takes one, an importance matrix
    (one non-negative weight per element of a GGUF row, i.e. along the last axis; llama.cpp's ``imatrix``
    tool writes the mean squared activation of each input column) weighting the scale search. Raises
    ValueError naming what is wrong and where.
    """
    return run(analyze_steps(x, spec, channel_axis, channel_names, tensor_range=tensor_range,
                             allow_nonfinite=allow_nonfinite, imatrix=imatrix))


def analyze_steps(x: ArrayLike, spec: QuantSpec, channel_axis: int = 0, channel_names: Sequence[str] | None = None,
                  *, tensor_range: tuple[float, float] | None = None, allow_nonfinite: bool = False,
                  imatrix: ArrayLike | None = None) -> Steps[QuantResult]:
    """:func:`analyze` as steps (:mod:`quantcore.steps`): the fractions are those of the range search (KL and
    MSE-optimal ranges step once per candidate; a 4096 x 4096 search runs for seconds), then one last step
    before the quantization pass. The same arithmetic and result as :func:`analyze`."""
    if spec.kind == "gguf":
        yield 0.0
        return _analyze_gguf(x, spec, channel_axis, channel_names, imatrix)
    if imatrix is not None:
        raise ValueError(f"an importance matrix (imatrix) weights the scale search of llama.cpp's GGUF types; "
                         f"{spec.label} does not take one")
    p = yield from prepare_steps(x, spec, channel_axis, tensor_range, allow_nonfinite)
    yield 1.0
    # float elements: the boundary flags (the ties column) come from the same encoder run, for a bool per element
    res = p.run(keep_raw=spec.effective_rounding == "stochastic", keep_boundary=spec.kind == "float")
    shape = p.blocks.values.shape
    raw = None if res.raw is None else res.raw.reshape(shape)
    ties = None if res.boundary is None else res.boundary.reshape(shape)
    return QuantResult(spec, p.canon, p.blocks, p.scales, res.q, res.stats, channel_names, prepared=p, raw=raw,
                       ties=ties)


def total_statistics(x: ArrayLike, spec: QuantSpec, *, tensor_range: tuple[float, float] | None = None
                     ) -> dict[str, np.ndarray]:
    """The statistics (:data:`quantcore.metrics.ROW_FIELDS`) of :func:`analyze` summed over the tensor, as
    arrays of length 1, without codes or any per-element or per-row array: the same pass in its totals
    mode (:func:`quantcore.kernel.quantize_and_measure`), for the checkpoint scan. Integer, float and
    codebook schemes."""
    if spec.kind == "gguf":
        raise ValueError("total_statistics runs integer and float schemes; GGUF types use gguf_pass")
    return prepare(x, spec, 0, tensor_range).run(keep_codes=False, totals=True).stats


def _analyze_gguf(x: ArrayLike, spec: QuantSpec, channel_axis: int, channel_names,
                  imatrix: ArrayLike | None = None) -> QuantResult:
    canon, bv = _layout(x, spec, channel_axis)
    t = spec.element.type
    weights = None if imatrix is None else check_imatrix(imatrix, t, canon, bv)
    mn, mx = block_minmax(bv.values)
    if not (np.isfinite(mn).all() and np.isfinite(mx).all()):
        check_finite(canon.to_input_layout(canon.values), "tensor")
    _check_working_range(canon, mn, mx, get_convention("gguf"))
    p = gguf_pass(bv, t, weights)
    scales = BlockScales(p["scale"], p["zero_point"], mn, mx)
    return QuantResult(spec, canon, bv, scales, p["q"], p["stats"], channel_names, sub_scale=p["sub_scale"],
                       sub_min=p["sub_min"], imatrix=weights)


def check_imatrix(imatrix: ArrayLike, t: type[GGMLType], canon: Canonical, bv: BlockView) -> np.ndarray:
    """The importance matrix as float32, one weight per element of a GGUF row (the canonical last axis),
    or a ValueError saying what is wrong: a type whose llama.cpp quantizer ignores it, rows that are not
    whole blocks, a wrong length, a non-finite or negative weight (its column named)."""
    if not (t.uses_weights or t.row_weighted):
        raise ValueError(f"{t.name} takes no importance matrix (llama.cpp ignores it for this type)")
    w = np.asarray(imatrix)
    if w.ndim != 1 or not np.issubdtype(w.dtype, np.number) or np.issubdtype(w.dtype, np.complexfloating):
        raise ValueError(f"an importance matrix is one real weight per column; got an array of shape {w.shape} "
                         f"and dtype {w.dtype}")
    row_len = canon.values.shape[-1]
    if bv.valid is not None or row_len % t.block_size:
        raise ValueError(f"{t.name} with an importance matrix needs rows that are whole {t.block_size}-element "
                         f"blocks; the rows of this tensor have {row_len} elements")
    if w.size != row_len:
        raise ValueError(f"the importance matrix has {w.size} weights; the rows of this tensor (its last axis) "
                         f"have {row_len} elements")
    w = w.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if bad.size:
        j = int(bad[0])
        raise ValueError(f"importance weight at column {j} is {float(w[j]):g}: weights must be finite and >= 0 "
                         f"({bad.size} such weights)")
    return w


def gguf_pass(bv: BlockView, t: type[GGMLType], imatrix: np.ndarray | None = None) -> dict:
    """Run GGML type ``t`` over the block view (blocks of ``t.block_size``) in tiles of its quantizer.

    Per tile: float32 blocks -> GGUF bytes (``t.quantize``) -> codes, per-sub-block scale/min and
    ``x_hat`` (``t.reconstruct``, i.e. exactly ``t.dequantize`` of those bytes). A block whose ``x_hat``
    is not finite (its fp16 scale overflowed: the format cannot hold such values) is refused with a
    ValueError naming it. Row statistics sum float64 errors (:func:`quantcore.metrics.row_stats`); clip
    counts are :meth:`GGMLType.clip_counts`.

    Returns per block ``scale`` (the sub-block scale for single-scale types, else the sub-block scale
    of largest magnitude) and ``zero_point`` (``x_hat = (q - zero_point) * scale`` for single-scale
    linear types, NaN for the others), ``sub_scale``/``sub_min`` ``(n_blocks, n_sub)``, codes ``q``,
    and row statistics.

    ``imatrix`` (float32, one importance weight per element of a row, checked by :func:`check_imatrix`)
    weights the scale search as llama.cpp's ``quantize_<type>(..., imatrix)`` does; the block view's blocks
    are then whole rows of ``imatrix.size`` elements, quantized a tile of rows at a time.
    """
    n_blocks, width = bv.values.shape
    if width != t.block_size:
        raise ValueError(f"{t.name} needs blocks of {t.block_size} elements, the view has {width}")
    n_sub = t.block_size // t.sub_block_size
    step = max(1, QUANT_TILE_ELEMENTS // width)   # one quantizer call per tile (per-call overhead dominates)
    if imatrix is not None:   # tiles of whole rows
        row_len = imatrix.size
        step = max(1, QUANT_TILE_ELEMENTS // row_len) * (row_len // width)
    q = np.empty(bv.values.shape, dtype=code_dtype(t.qmin, t.qmax))
    sub_scale = np.empty((n_blocks, n_sub), np.float32)
    sub_min = np.empty((n_blocks, n_sub), np.float32) if t.stores_min() else None
    parts = []
    for b0 in range(0, n_blocks, step):
        b1 = min(b0 + step, n_blocks)
        tile = bv.values[b0:b1].astype(np.float32, copy=False)
        if imatrix is None:
            data = t.quantize(tile)
        else:
            data = t.quantize_rows(tile.reshape(-1, imatrix.size), imatrix).reshape(-1, t.type_size)
        codes = t.codes(data)
        with np.errstate(all="ignore"):  # an overflowed fp16 scale is refused just below
            sc, mn = t.sub_scales(data)
            xh = t.reconstruct(codes, sc, mn)
        _check_representable(bv, t, b0, tile, xh)
        q[b0:b1], sub_scale[b0:b1] = codes, sc
        if sub_min is not None:
            sub_min[b0:b1] = mn
        valid = None if bv.valid is None else bv.valid[b0:b1]
        parts.append(M.row_stats(tile, xh, *t.clip_counts(tile, sc, mn, valid), valid))
    stats = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if n_sub == 1:
        scale = sub_scale[:, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            shift = np.zeros_like(scale) if sub_min is None else np.where(scale != 0, sub_min[:, 0] / scale, 0)
        zp = (t.code_offset + shift).astype(np.float32) if t.linear else np.full(n_blocks, np.nan, np.float32)
    else:
        scale = np.take_along_axis(sub_scale, np.abs(sub_scale).argmax(axis=1)[:, None], axis=1)[:, 0]
        zp = np.full(n_blocks, np.nan, np.float32)
    return {"scale": scale, "zero_point": zp, "q": q, "stats": stats, "sub_scale": sub_scale, "sub_min": sub_min}


def _check_representable(bv: BlockView, t: type[GGMLType], b0: int, tile: np.ndarray, xhat: np.ndarray) -> None:
    """Refuse the first block whose dequantized values are not finite (an fp16 scale overflowed)."""
    if np.isfinite(xhat).all():   # the common case, decided without numpy's slow reduction of short rows
        return
    bad = ~np.isfinite(xhat).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        b = b0 + i
        ch = int(bv.channel_of_block[b]) if bv.channel_of_block.size > b else -1
        where = f"block {b}" + (f" (channel {ch})" if ch >= 0 else "")
        raise ValueError(f"{where}: {t.name} cannot hold values of magnitude up to "
                         f"{float(np.abs(tile[i]).max()):.3g}: its fp16 scale overflows (largest fp16 is 65504)")
