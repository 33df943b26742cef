"""Analyze one scheme on one tensor: parameters, per-element codes, metrics, memory.

Dtype discipline: arithmetic runs in the convention's working dtype (float64 for ``float64``,
float32 for every other convention); a float32/float64 input is not copied but cast tile by
tile inside the fused kernel (:mod:`quantcore.kernel`); codes are stored in the smallest integer dtype;
metric sums are accumulated in float64. Raw codes and dequantized values are recomputed on demand.

GGUF presets (:func:`preset_pass`) run the registered GGML type (:mod:`quantcore.ggml`) on float32
blocks: the bytes llama.cpp would write, then their codes, per-sub-block scales and dequantized values;
their statistics are computed in float64 (a float32 error or square overflows near the float32 limit).
"""
from __future__ import annotations

from dataclasses import replace
from functools import cached_property
from typing import Sequence

import numpy as np

from . import metrics as M
from .ggml import GGMLType, get_ggml_type
from .calibration import kl_range, mse_optimal_range
from .conventions import get_convention, store_scale
from .granularity import BlockView, Canonical, PerChannel, PerGroup, PerTensor, block_view, canonical, check_finite
from .kernel import TILE_ELEMENTS, code_dtype, quantize_and_measure
from .memory import Memory, block_memory, memory_estimate
from .params import CustomRange, KLDivergence, MinMax, MSEOptimal, Percentile, block_minmax, choose_qparams, custom_range, percentile_range
from .quantize import dequantize_blocks, quantize_blocks
from .spec import QuantSpec

ArrayLike = np.ndarray | Sequence[np.ndarray]
TIE_CONVENTIONS = ("float64", "torch", "torch-fake")  # compared for tie flags (same rounding rule)


class QuantResult:
    """Everything one scheme does to one tensor. Arrays are computed once; tables on demand."""

    def __init__(self, spec: QuantSpec, canon: Canonical, blocks: BlockView, lo: np.ndarray, hi: np.ndarray,
                 scale: np.ndarray, zero_point: np.ndarray, q_rows: np.ndarray, stats: dict[str, np.ndarray],
                 clip_ratio: np.ndarray | None, channel_names: Sequence[str] | None,
                 raw: np.ndarray | None = None, xhat: np.ndarray | None = None,
                 sub_scale: np.ndarray | None = None, sub_min: np.ndarray | None = None) -> None:
        self.spec = spec
        self.label = spec.label
        self.canon = canon
        self.blocks = blocks
        self.lo, self.hi, self.scale, self.zero_point = lo, hi, scale, zero_point
        self.clip_ratio = clip_ratio
        self.sub_scale, self.sub_min = sub_scale, sub_min   # GGUF presets: (n_blocks, n_sub) float32
        self._q_rows = q_rows
        n_ch = canon.n_channels
        self.channel_names = list(channel_names) if channel_names is not None else [f"ch{i}" for i in range(n_ch)]
        if len(self.channel_names) != n_ch:
            raise ValueError(f"{len(self.channel_names)} channel names for {n_ch} channels")
        if raw is not None:
            self.__dict__["_raw_b"] = raw
        if xhat is not None:
            self.__dict__["_xhat_b"] = xhat
        self._set_stats(stats)

    # --- format facts -------------------------------------------------------------------------
    @property
    def ggml_type(self) -> type[GGMLType] | None:
        return get_ggml_type(self.spec.preset) if self.spec.preset else None

    @property
    def qmin(self) -> int:
        """Smallest code: the format's qmin, or its storage type's for conventions that saturate there."""
        return self._code_range[0]

    @property
    def qmax(self) -> int:
        return self._code_range[1]

    @cached_property
    def _code_range(self) -> tuple[int, int]:
        if self.spec.preset:
            return self.ggml_type.qmin, self.ggml_type.qmax
        return _convention(self.spec).code_range(self.spec.fmt)

    @property
    def levels(self) -> int:
        return self.qmax - self.qmin + 1

    # --- statistics ---------------------------------------------------------------------------
    def _set_stats(self, stats: dict[str, np.ndarray]) -> None:
        """``stats`` are per stat row: channels for per-tensor, blocks otherwise (see _stat_rows)."""
        C = self.canon.n_channels
        g = self.spec.granularity
        if isinstance(g, PerTensor):
            self._channel_stats, self._block_stats = stats, M.combine_rows(stats, 1)
        else:
            self._block_stats = stats
            self._channel_stats = stats if isinstance(g, PerChannel) else M.combine_rows(stats, C)
        self.metrics = M.overall(self._block_stats)

    # --- per-element arrays in block layout, recomputed on demand ------------------------------
    @property
    def _q_b(self) -> np.ndarray:
        return self._q_rows.reshape(self.blocks.values.shape)

    @cached_property
    def _xhat_b(self) -> np.ndarray:
        if self.spec.preset:
            return preset_pass(self.blocks, self.ggml_type, keep=True)["dequantized"]
        conv = _convention(self.spec)
        return dequantize_blocks(self._q_b.astype(conv.dtype), self.scale, self.zero_point, conv)

    @cached_property
    def _raw_b(self) -> np.ndarray:
        """Unclamped codes: the quantization pass run again, same arithmetic and random stream."""
        spec = self.spec
        if spec.preset:
            return preset_pass(self.blocks, self.ggml_type, keep=True)["raw"]
        conv = _convention(spec)
        rows, row_scale, row_zp, valid = _stat_rows(self.blocks, spec, self.scale, self.zero_point)
        res = quantize_and_measure(rows, row_scale, row_zp, self.qmin, self.qmax, conv, spec.effective_rounding,
                                   _rng(spec), _uses_fma(conv, spec), valid, keep_codes=False, keep_raw=True)
        return res.raw.reshape(self.blocks.values.shape)

    @cached_property
    def memory(self) -> Memory:
        spec = self.spec
        n = self.canon.n_valid
        if spec.preset:
            t = self.ggml_type
            return block_memory(n, self.blocks.n_data_blocks, t.type_size, t.meta_bytes, t.code_bits())
        return memory_estimate(n, self.blocks.n_data_blocks, spec.fmt.bits, spec.scale_dtype, spec.zero_point_dtype)

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

    @cached_property
    def ties_blocks(self) -> np.ndarray:
        """Elements whose integer code differs under another named convention's arithmetic.

        Same scale and zero-point, same rounding rule; only the arithmetic changes (float32 vs
        float64, reciprocal vs division, zero-point added before or after rounding): for example
        ``torch`` vs ``torch-fake`` on seed 001's filter_1. For GGUF presets (whose scale searches have
        no float64 twin) a tie is an element within 2^-20 (relative) of the rounding boundary between
        two neighbouring grid values of its sub-block (:meth:`GGMLType.near_boundary`). Always False
        for stochastic rounding.
        """
        spec = self.spec
        if spec.effective_rounding == "stochastic":
            return np.zeros(self._q_b.shape, dtype=bool)
        if spec.preset:
            t = self.ggml_type
            return t.near_boundary(t.position(self.blocks.values, self.sub_scale, self.sub_min))
        ties = np.zeros(self._q_b.shape, dtype=bool)
        data_max = float(np.max(np.abs(self.blocks.values)))
        for name in TIE_CONVENTIONS:
            if name == spec.convention:
                continue
            conv = _convention(spec, name)
            if data_max > float(np.finfo(conv.dtype).max):
                continue  # this convention cannot hold the data (values beyond float32): no comparison
            _, other = quantize_blocks(self.blocks.values, self.scale, self.zero_point, self.qmin, self.qmax,
                                       conv, spec.effective_rounding, fma=_uses_fma(conv, spec))
            ties |= other != self._q_b
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
        return int(np.flatnonzero(owners == channel)[0])

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
        if self.spec.float_scheme is not None or self.levels > max_levels:
            return None
        codes = np.arange(self.qmin, self.qmax + 1, dtype=np.float64)
        if self.spec.preset:
            t = self.ggml_type
            if self.sub_scale.shape[1] != 1:
                return None  # one grid per sub-block: see sub_block_table()
            levels = t.value_of(codes.astype(np.int64)) * self.sub_scale[block, 0]
            if self.sub_min is not None:
                levels = levels - self.sub_min[block, 0]
            return codes.astype(np.int64), levels.astype(np.float64)
        conv = _convention(self.spec)
        levels = dequantize_blocks(codes[None, :].astype(conv.dtype), np.asarray(self.scale)[block:block + 1],
                                   np.asarray(self.zero_point)[block:block + 1], conv)[0]
        return codes.astype(np.int64), levels.astype(np.float64)

    def histogram(self, bins: int = 80) -> dict[str, np.ndarray]:
        """Counts of the input values in ``bins`` equal-width bins: ``left``, ``right``, ``count``."""
        x = self.canon.values
        x = x[self.canon.valid] if self.canon.valid is not None else x.reshape(-1)
        count, edges = np.histogram(x.astype(np.float64), bins=bins)
        return {"left": edges[:-1], "right": edges[1:], "count": count}

    def sub_block_table(self) -> dict[str, np.ndarray] | None:
        """GGUF presets: one row per sub-block with its effective ``scale`` and ``min`` as the
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
             "lo": self.lo.astype(np.float64), "hi": self.hi.astype(np.float64),
             "scale": np.asarray(self.scale, np.float64), "zero_point": np.asarray(self.zero_point, np.float64)}
        if self.clip_ratio is not None:
            t["clip_ratio"] = np.asarray(self.clip_ratio, np.float64)
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
        ties = M.combine_rows({"t": np.count_nonzero(self._ties_rows(), axis=1)}, C)["t"] \
            if not isinstance(g, PerTensor) else np.count_nonzero(self._ties_rows(), axis=1)
        with np.errstate(over="ignore"):  # a span beyond float64 (e.g. +-1.7e308) is reported as inf
            span = cmax - cmin
        t = {"channel": np.arange(C), "name": np.array(self.channel_names, dtype=object), "min": cmin, "max": cmax,
             "range": span, "range_lo": lo, "range_hi": hi, "scale": scale, "zero_point": zp}
        t.update(M.metrics_from_stats(self._channel_stats))
        t["ties"] = ties
        return t

    def _ties_rows(self) -> np.ndarray:
        t = self.ties_blocks
        if self.blocks.valid is not None:
            t = t & self.blocks.valid
        if isinstance(self.spec.granularity, PerTensor):
            return t.reshape(self.canon.n_channels, -1)
        return t

    def sample_table(self, limit: int = 10_000) -> dict[str, np.ndarray]:
        """Per element, flattened in channel order (real elements only), at most ``limit`` rows."""
        C = self.canon.n_channels
        def rows(a: np.ndarray) -> np.ndarray:
            return self._canon(a).reshape(C, -1)
        x = self.canon.values.reshape(C, -1)
        valid = np.ones(x.shape, bool) if self.canon.valid is None else self.canon.valid.reshape(C, -1)
        channel = np.broadcast_to(np.arange(C)[:, None], x.shape)
        index = np.cumsum(valid, axis=1) - 1
        sel = np.flatnonzero(valid.ravel())[:limit]
        raw, q, xhat = rows(self._raw_b).ravel()[sel], rows(self._q_b).ravel()[sel], rows(self._xhat_b).ravel()[sel]
        xs = x.ravel()[sel].astype(np.float64)
        xh = xhat.astype(np.float64)
        abs_err = np.abs(xh - xs)
        return {"channel": channel.ravel()[sel], "index": index.ravel()[sel], "x": xs, "raw_q": raw.astype(np.float64),
                "q": q.astype(np.int64), "dequantized": xh, "abs_error": abs_err, "pct_error": M.pct_error(xs, abs_err),
                "clipped": np.sign(np.clip(raw, self.qmin - 1, self.qmax + 1) - np.clip(raw, self.qmin, self.qmax)).astype(np.int64),
                "tie": rows(self.ties_blocks).ravel()[sel]}

    def to_dict(self, max_blocks: int = 100_000) -> dict:
        from .report import jsonable
        spec = self.spec
        return jsonable({
            "label": self.label,
            "scheme": {"bits": spec.fmt.bits, "signed": spec.fmt.signed, "qmin": self.qmin, "qmax": self.qmax,
                       "mapping": spec.mapping, "granularity": spec.granularity.label, "range": spec.range.label,
                       "rounding": spec.effective_rounding, "convention": spec.convention, "preset": spec.preset,
                       "scale_dtype": spec.scale_dtype, "zero_point_dtype": spec.zero_point_dtype},
            "scale": np.asarray(self.scale, np.float64)[:max_blocks],
            "zero_point": np.asarray(self.zero_point, np.float64)[:max_blocks],
            "clip_ratio": None if self.clip_ratio is None else np.asarray(self.clip_ratio)[:max_blocks],
            "metrics": {**self.metrics.to_dict(), "utilization": self.utilization},
            "memory": self.memory.to_dict(),
            "channels": self.channel_table(),
        })


def _convention(spec: QuantSpec, name: str | None = None):
    """The named convention (default: the spec's), adjusted to the mapping.

    ``affine_float`` has a float offset as zero-point (``x_hat = lo + scale * (q - qmin)``): it must be
    added before rounding (``q = round(x / scale + zp)``, as GGUF Q4_1 and torch's float-qparams
    kernels do), whatever the convention; added after rounding, the codes would not be integers.
    """
    conv = get_convention(name or spec.convention)
    if spec.mapping == "affine_float" and not conv.zp_before_round:
        conv = replace(conv, zp_before_round=True)
    return conv


def _uses_fma(conv, spec: QuantSpec) -> bool:
    """torch's per-tensor kernel fuses x*inv + zp (fbgemm AVX2); its per-channel kernel does not."""
    return conv.fma_per_tensor and isinstance(spec.granularity, PerTensor)


def _select_range(bv: BlockView, spec: QuantSpec, conv, mn: np.ndarray, mx: np.ndarray):
    r = spec.range
    dt = conv.qparams_dtype
    if isinstance(r, MinMax):
        return mn.astype(dt), mx.astype(dt), None
    if isinstance(r, CustomRange):
        lo, hi = custom_range(bv, r, dt)
        return lo, hi, None
    if isinstance(r, Percentile):
        lo, hi = percentile_range(bv, float(r.pct), conv.dtype)
        return lo.astype(dt), hi.astype(dt), None
    if isinstance(r, MSEOptimal):
        return mse_optimal_range(bv, spec.fmt, spec.mapping, spec.effective_symmetric_scale, conv,
                                 spec.effective_rounding, int(r.steps), isinstance(spec.granularity, PerGroup),
                                 _uses_fma(conv, spec))
    if isinstance(r, KLDivergence):
        lo, hi, ratio = kl_range(bv, spec.fmt, int(r.bins))
        return lo.astype(dt), hi.astype(dt), ratio
    raise ValueError(f"unknown range method {r!r}")


def analyze(x: ArrayLike, spec: QuantSpec, channel_axis: int = 0,
            channel_names: Sequence[str] | None = None) -> QuantResult:
    """Quantize ``x`` with ``spec`` and measure it.

    ``x`` is an array of any shape (1-D: one channel) or a list of 1-D arrays (ragged channels).
    ``channel_axis`` picks the channels reported in the per-channel table; a per-channel scheme uses
    its own axis. Raises ValueError naming what is wrong and where.
    """
    if spec.float_scheme is not None:
        from .floatanalysis import analyze_float
        return analyze_float(x, spec, channel_axis, channel_names)
    conv = _convention(spec)
    g = spec.granularity
    if isinstance(g, PerChannel):
        channel_axis = g.axis
    group_axis = g.axis if isinstance(g, PerGroup) else None
    if isinstance(x, np.ndarray) and x.ndim >= 2 and group_axis is not None:
        nd = x.ndim
        if -nd <= group_axis < nd and -nd <= channel_axis < nd and group_axis % nd == channel_axis % nd:
            channel_axis = 0 if group_axis % nd != 0 else 1
    canon = canonical(x, conv.dtype, channel_axis, group_axis)
    bv = block_view(canon, g)
    mn, mx = block_minmax(bv)
    if not (np.isfinite(mn).all() and np.isfinite(mx).all()):
        check_finite(canon.to_input_layout(canon.values), "tensor")
    work_max = float(np.finfo(conv.dtype).max)
    if max(float(np.max(-mn)), float(np.max(mx))) > work_max:
        x_in = canon.to_input_layout(canon.values)
        first = tuple(int(i) for i in np.argwhere(np.abs(x_in) > work_max)[0])
        raise ValueError(f"tensor value {float(x_in[first]):.3g} at index {first} is beyond the "
                         f"{np.dtype(conv.dtype).name} range of the {conv.name!r} convention; use the float64 "
                         f"convention")
    if spec.preset:
        p = preset_pass(bv, get_ggml_type(spec.preset))
        return QuantResult(spec, canon, bv, mn, mx, p["scale"], p["zero_point"], p["q"], p["stats"], None,
                           channel_names, sub_scale=p["sub_scale"], sub_min=p["sub_min"])
    lo, hi, ratio = _select_range(bv, spec, conv, mn, mx)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowing range is reported just below
        scale, zp = choose_qparams(lo, hi, spec.fmt, spec.mapping, spec.effective_symmetric_scale, conv,
                                   isinstance(g, PerGroup))
        scale = store_scale(scale, spec.scale_dtype)
    if not np.isfinite(scale).all():
        i = int(np.flatnonzero(~np.isfinite(scale))[0])
        where = "the tensor" if isinstance(g, PerTensor) else _row_namer(spec, bv)(i)
        raise ValueError(f"{where}: range [{float(lo[i]):.3g}, {float(hi[i]):.3g}] is too wide: its scale overflows "
                         f"{np.dtype(np.asarray(scale).dtype).name}")
    rows, row_scale, row_zp, valid = _stat_rows(bv, spec, scale, zp)
    qmin, qmax = conv.code_range(spec.fmt)
    res = quantize_and_measure(rows, row_scale, row_zp, qmin, qmax, conv, spec.effective_rounding,
                               _rng(spec), _uses_fma(conv, spec), valid,
                               keep_raw=spec.effective_rounding == "stochastic", row_name=_row_namer(spec, bv))
    raw = None if res.raw is None else res.raw.reshape(bv.values.shape)
    return QuantResult(spec, canon, bv, lo, hi, scale, zp, res.q, res.stats, ratio, channel_names, raw=raw)


def preset_pass(bv: BlockView, t: type[GGMLType], keep: bool = False) -> dict:
    """Run GGML type ``t`` over the block view (blocks of ``t.block_size``) in cache-sized tiles.

    Per tile: float32 blocks -> GGUF bytes (``t.quantize``) -> codes, per-sub-block scale/min and
    ``x_hat`` (``t.reconstruct``, i.e. exactly ``t.dequantize`` of those bytes). A block whose ``x_hat``
    is not finite (its fp16 scale overflowed: the format cannot hold such values) is refused with a
    ValueError naming it. Row statistics are computed from float64 copies of ``x`` and ``x_hat``.

    Returns per block ``scale`` (the sub-block scale for single-scale types, else the sub-block scale
    of largest magnitude) and ``zero_point`` (``x_hat = (q - zero_point) * scale`` for single-scale
    linear types, NaN for the others), ``sub_scale``/``sub_min`` ``(n_blocks, n_sub)``, codes ``q``,
    row statistics, and with ``keep`` ``raw`` (float64, see ``GGMLType.raw_codes``) and
    ``dequantized`` (float32), block layout.
    """
    n_blocks, width = bv.values.shape
    if width != t.block_size:
        raise ValueError(f"{t.name} needs blocks of {t.block_size} elements, the view has {width}")
    n_sub = t.block_size // t.sub_block_size
    step = max(1, TILE_ELEMENTS // width)
    q = np.empty(bv.values.shape, dtype=code_dtype(t.qmin, t.qmax))
    sub_scale = np.empty((n_blocks, n_sub), np.float32)
    sub_min = np.empty((n_blocks, n_sub), np.float32) if t.stores_min() else None
    raw = np.empty(bv.values.shape, np.float64) if keep else None
    xhat = np.empty(bv.values.shape, np.float32) if keep else None
    parts = []
    for b0 in range(0, n_blocks, step):
        b1 = min(b0 + step, n_blocks)
        tile = bv.values[b0:b1].astype(np.float32, copy=False)
        data = t.quantize(tile)
        codes = t.codes(data)
        with np.errstate(all="ignore"):  # an overflowed fp16 scale is refused just below
            sc, mn = t.sub_scales(data)
            xh = t.reconstruct(codes, sc, mn)
        _check_representable(bv, t, b0, tile, xh)
        q[b0:b1], sub_scale[b0:b1] = codes, sc
        if sub_min is not None:
            sub_min[b0:b1] = mn
        r = t.raw_codes(codes, t.position(tile, sc, mn))
        if keep:
            raw[b0:b1], xhat[b0:b1] = r, xh
        valid = None if bv.valid is None else bv.valid[b0:b1]
        parts.append(M.row_stats(tile.astype(np.float64), xh.astype(np.float64), r, t.qmin, t.qmax, valid))
    stats = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if n_sub == 1:
        scale = sub_scale[:, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            shift = np.zeros_like(scale) if sub_min is None else np.where(scale != 0, sub_min[:, 0] / scale, 0)
        zp = (t.code_offset + shift).astype(np.float32) if t.linear else np.full(n_blocks, np.nan, np.float32)
    else:
        scale = np.take_along_axis(sub_scale, np.abs(sub_scale).argmax(axis=1)[:, None], axis=1)[:, 0]
        zp = np.full(n_blocks, np.nan, np.float32)
    return {"scale": scale, "zero_point": zp, "q": q, "stats": stats, "raw": raw, "dequantized": xhat,
            "sub_scale": sub_scale, "sub_min": sub_min}


def _check_representable(bv: BlockView, t: type[GGMLType], b0: int, tile: np.ndarray, xhat: np.ndarray) -> None:
    """Refuse the first block whose dequantized values are not finite (an fp16 scale overflowed)."""
    bad = ~np.isfinite(xhat).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        b = b0 + i
        ch = int(bv.channel_of_block[b]) if bv.channel_of_block.size > b else -1
        where = f"block {b}" + (f" (channel {ch})" if ch >= 0 else "")
        raise ValueError(f"{where}: {t.name} cannot hold values of magnitude up to "
                         f"{float(np.abs(tile[i]).max()):.3g}: its fp16 scale overflows (largest fp16 is 65504)")


def _rng(spec: QuantSpec) -> np.random.Generator | None:
    return np.random.default_rng(spec.seed) if spec.effective_rounding == "stochastic" else None


def _row_namer(spec: QuantSpec, bv: BlockView):
    """Names a statistics row (see _stat_rows) in messages: a channel, or a block and its channel."""
    if isinstance(spec.granularity, PerGroup):
        return lambda r: f"block {r} (channel {int(bv.channel_of_block[r])})"
    return lambda r: f"channel {r}"


def _stat_rows(bv: BlockView, spec: QuantSpec, scale: np.ndarray, zp: np.ndarray):
    """The 2-D rows statistics are kept for, with a scale and zero-point per row.

    Per-tensor: one row per channel (the single block viewed as ``(C, -1)``), so per-channel errors of
    the per-tensor scheme come from the same pass. Otherwise: one row per block.
    """
    if isinstance(spec.granularity, PerTensor):
        C = bv.layout[0]
        rows = bv.values.reshape(C, -1)
        valid = None if bv.valid is None else bv.valid.reshape(C, -1)
        return rows, np.repeat(np.asarray(scale), C), np.repeat(np.asarray(zp), C), valid
    return bv.values, scale, zp, bv.valid
