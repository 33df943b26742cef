"""Metrics-only measurement of one scheme on (a part of) a tensor, and exact combination of parts.

:func:`measure` returns additive statistics (:class:`Stats`: element count, sums of squared and
absolute errors, sum of squares of the input, max error, clip and collapse counts) of one scheme on
an array, without keeping codes, scales or per-element arrays. Per element the arithmetic is that of
:func:`quantcore.analyze` for the same spec (same codes, same float32/float64 error ``x_hat - x``):

* GGUF presets: the registered GGML type (:mod:`quantcore.ggml`) on tiles of whole blocks (rows
  whose length is not a multiple of 32 fall back to ``analyze``, which pads the last group);
* integer and float schemes: :func:`quantcore.analysis.total_statistics`, the one fused kernel of
  ``analyze`` in its totals mode (no codes, no per-element or per-row arrays);
* ``f16`` / ``bf16``: round to nearest even (saturating), see :mod:`quantcore.schemes`.

Sums are float64. Within one call they are summed in tile order, so they equal ``analyze``'s sums up
to float64 summation order (relative differences ~1e-15; counts and max are identical). Across parts
(:meth:`Stats.combine`) float sums are added with ``math.fsum``, which is correctly rounded and so
independent of the order and grouping of the parts: a scan that cuts a tensor into parts of whole
segments gives bit-identical totals whatever the chunk size, process or machine.

A part of a tensor (a run of axis-0 slices) is quantized exactly as inside the whole tensor when every
scale block lies within one axis-0 index (:attr:`ScanScheme.splits_on_axis0`); schemes whose scale
depends on the whole tensor receive its :class:`TensorRange` (min and max over the whole tensor).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .analysis import analyze, total_statistics
from .ggml import get_ggml_type
from .metrics import sqnr_db
from .schemes import ScanScheme

PRESET_TILE = 1 << 14  # elements per preset tile: 16 Ki float32 temporaries stay in L2 (measured fastest)


@dataclass(frozen=True)
class Stats:
    """Additive error statistics of a scheme over some elements (see :mod:`quantcore.metrics`)."""

    n: int
    sse: float
    sae: float
    max_abs: float
    ssx: float
    clipped_low: int
    clipped_high: int
    collapsed: int

    @classmethod
    def from_dict(cls, d: dict) -> "Stats":
        return cls(int(d["n"]), float(d["sse"]), float(d["sae"]), float(d["max_abs"]), float(d["ssx"]),
                   int(d["clipped_low"]), int(d["clipped_high"]), int(d["collapsed"]))

    @staticmethod
    def combine(parts: "list[Stats] | tuple[Stats, ...]") -> "Stats":
        """Totals of disjoint parts: float sums with ``math.fsum`` (order-independent), max of maxima."""
        if not parts:
            raise ValueError("no parts to combine")
        return Stats(sum(p.n for p in parts), math.fsum(p.sse for p in parts), math.fsum(p.sae for p in parts),
                     max(p.max_abs for p in parts), math.fsum(p.ssx for p in parts),
                     sum(p.clipped_low for p in parts), sum(p.clipped_high for p in parts),
                     sum(p.collapsed for p in parts))

    def to_dict(self) -> dict:
        return asdict(self)

    def metrics(self) -> dict[str, float | int]:
        """``mse, rmse, rel_rmse (= sqrt(sse / ssx) = RMSE / RMS(x)), mae, max_abs, sqnr_db, clip_rate,
        collapsed_rate`` plus the counts; rel_rmse is inf for an all-zero input with error, 0 without."""
        n = self.n
        mse = self.sse / n if n else math.nan
        if self.ssx > 0:
            rel = math.sqrt(self.sse / self.ssx)
        else:
            rel = 0.0 if self.sse == 0 else math.inf
        clip = self.clipped_low + self.clipped_high
        return {"n": n, "mse": mse, "rmse": math.sqrt(mse), "rel_rmse": rel, "mae": self.sae / n if n else math.nan,
                "max_abs": self.max_abs, "sqnr_db": float(sqnr_db(self.ssx, self.sse)), "clip_count": clip,
                "clip_rate": clip / n if n else math.nan, "collapsed": self.collapsed,
                "collapsed_rate": self.collapsed / n if n else math.nan}



@dataclass(frozen=True)
class TensorRange:
    """Min and max over a whole tensor (its values as loaded: float32, or float64 for F64 sources)."""

    min: float
    max: float

    @property
    def amax(self) -> float:
        return max(-self.min, self.max)

    @staticmethod
    def of(x: np.ndarray) -> "TensorRange":
        return TensorRange(float(np.min(x)), float(np.max(x)))

    @staticmethod
    def combine(parts: "list[TensorRange]") -> "TensorRange":
        return TensorRange(min(p.min for p in parts), max(p.max for p in parts))


def _totals(s: dict[str, np.ndarray]) -> Stats:
    """Totals of per-block statistics (float sums in float64, in block order)."""
    return Stats(int(s["n"].sum()), float(s["sse"].sum()), float(s["sae"].sum()), float(s["max_abs"].max()),
                 float(s["ssx"].sum()), int(s["clipped_low"].sum()), int(s["clipped_high"].sum()),
                 int(s["collapsed"].sum()))


def _part_range(scheme: ScanScheme, rng: TensorRange | None) -> tuple[float, float] | None:
    return (rng.min, rng.max) if rng is not None and scheme.needs_tensor_range else None


def measure_reference(x: np.ndarray, scheme: ScanScheme, rng: TensorRange | None = None) -> Stats:
    """The same statistics through :func:`quantcore.analyze` (keeps every array; the oracle of
    :func:`measure`)."""
    if scheme.kind == "cast":
        return _cast_stats(x, scheme.name)
    return _totals(analyze(x, scheme.spec, tensor_range=_part_range(scheme, rng))._block_stats)


def sum_of_squares(x: np.ndarray) -> float:
    """``sum(x**2)`` in float64 (exact products of float32 values), in tiles of 64 Ki elements."""
    flat = x.reshape(-1)
    step = 1 << 16
    return math.fsum(float(np.einsum("i,i->", flat[i:i + step], flat[i:i + step], dtype=np.float64))
                     for i in range(0, flat.size, step))


def measure(x: np.ndarray, scheme: ScanScheme, rng: TensorRange | None = None, ssx: float | None = None) -> Stats:
    """Statistics of ``scheme`` on ``x`` (finite float32/float64, non-empty). ``rng``: the whole
    tensor's range when ``x`` is a part of it (needed by :attr:`ScanScheme.needs_tensor_range`).
    ``ssx``: :func:`sum_of_squares` of ``x`` when measuring several schemes on the same ``x``; GGUF
    presets then use it instead of their own pass (equal up to float64 summation order); integer and
    float schemes keep their kernel's own sum, as ``analyze`` reports it."""
    if scheme.kind == "preset":
        if x.ndim >= 1 and x.shape[-1] % get_ggml_type(scheme.name).block_size == 0 and x.dtype == np.float32:
            return _preset_stats(x, scheme.name, ssx)
        return measure_reference(x, scheme, rng)
    if scheme.kind == "cast":
        return _cast_stats(x, scheme.name)
    return _totals(total_statistics(x, scheme.spec, tensor_range=_part_range(scheme, rng)))


def _preset_stats(x: np.ndarray, name: str, ssx_given: float | None = None) -> Stats:
    """GGUF block type on float32 ``x`` whose last axis is a multiple of its block size: per tile of whole
    blocks, the type's bytes, codes and ``x_hat`` (as :func:`quantcore.analysis.gguf_pass`), errors in
    float64, clipped = raw code outside [qmin, qmax] (:meth:`GGMLType.clip_counts`). A block the type
    cannot hold (its fp16 scale overflows) is refused, as :func:`quantcore.analysis.analyze` does."""
    t = get_ggml_type(name)
    blocks = np.ascontiguousarray(x).reshape(-1, t.block_size)
    step = max(1, PRESET_TILE // t.block_size)
    sse = sae = ssx = 0.0
    max_abs = 0.0
    lo = hi = collapsed = 0
    for b0 in range(0, blocks.shape[0], step):
        tile = blocks[b0:b0 + step]
        data = t.quantize(tile)
        codes = t.codes(data)
        with np.errstate(all="ignore"):
            sc, mn = t.sub_scales(data)
            d = t.reconstruct(codes, sc, mn)
        if not np.isfinite(d).all():
            bad = b0 + int(np.flatnonzero(~np.isfinite(d).all(axis=1))[0])
            raise ValueError(f"block {bad}: {t.name} cannot hold values of magnitude up to "
                             f"{float(np.abs(blocks[bad]).max()):.3g}: its scale overflows")
        low, high = t.clip_counts(tile, sc, mn)
        lo += int(low.sum())
        hi += int(high.sum())
        z = d == 0
        if z.any():
            collapsed += int(np.count_nonzero(z & (tile != 0)))
        if ssx_given is None:
            ssx += float(np.einsum("ij,ij->", tile, tile, dtype=np.float64))
        err = np.subtract(d, tile, dtype=np.float64)
        sse += float(np.einsum("ij,ij->", err, err))
        np.abs(err, out=err)
        sae += float(err.sum())
        max_abs = max(max_abs, float(err.max()))
    return Stats(int(x.size), sse, sae, max_abs, ssx if ssx_given is None else float(ssx_given), lo, hi, collapsed)


_F16_OVERFLOW = 65520.0  # float16 max 65504 + half an ulp (16): from here on, RNE gives inf


def _cast_stats(x: np.ndarray, name: str) -> Stats:
    """Plain float storage: f16 = ``float16(x)`` saturated at +-65504 (elements with |x| >= 65520,
    which would round to inf, count as clipped); bf16 = round to nearest even of the float32 bits
    (``(u + 0x7FFF + ((u >> 16) & 1)) >> 16``, as ml_dtypes / torch), saturated likewise."""
    x32 = np.asarray(x, dtype=np.float32)
    if name == "f16":
        over = np.abs(x32) >= _F16_OVERFLOW
        xhat = np.clip(x32, -65504.0, 65504.0).astype(np.float16).astype(np.float32)
    else:
        u = x32.view(np.uint32)
        r = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)) << np.uint32(16)
        xhat = r.astype(np.uint32).view(np.float32)
        over = ~np.isfinite(xhat)
        if over.any():
            bf16_max = np.uint32(0x7F7F0000).view(np.float32)
            xhat = np.where(over, np.copysign(bf16_max, x32), xhat).astype(np.float32)
    return compare_stats(x32, xhat, clipped=over)


def compare_stats(x: np.ndarray, xhat: np.ndarray, clipped: np.ndarray | None = None) -> Stats:
    """Statistics of a given reconstruction ``xhat`` of ``x`` (same shape; error ``xhat - x`` formed in
    float64, exactly, as for GGUF presets), in flat tiles so temporaries stay small. Used for casts and
    for shipped tensors (a dequantized GGUF tensor against the original)."""
    if x.shape != xhat.shape:
        raise ValueError(f"shapes differ: {x.shape} vs {xhat.shape}")
    xf, hf = x.reshape(-1), xhat.reshape(-1)
    cf = None if clipped is None else clipped.reshape(-1)
    sse = sae = ssx = 0.0
    max_abs = 0.0
    lo = hi = collapsed = 0
    step = 1 << 16
    for i in range(0, xf.size, step):
        t, h = xf[i:i + step], hf[i:i + step]
        err = h.astype(np.float64) - t
        sse += float(np.dot(err, err))
        ssx += float(np.einsum("i,i->", t, t, dtype=np.float64))
        np.abs(err, out=err)
        sae += float(err.sum(dtype=np.float64))
        max_abs = max(max_abs, float(err.max()))
        z = h == 0
        if z.any():
            collapsed += int(np.count_nonzero(z & (t != 0)))
        if cf is not None:
            c = cf[i:i + step]
            if c.any():
                neg = int(np.count_nonzero(c & (t < 0)))
                lo += neg
                hi += int(np.count_nonzero(c)) - neg
    return Stats(int(xf.size), sse, sae, max_abs, ssx, lo, hi, collapsed)
