"""Scaled low-precision float schemes: per-tensor / per-channel FP8, MXFP8, MXFP4, NVFP4 and NF4.

Every scheme models a float32 weight tensor: the input is converted to float32 once (exact for
float16/float32; a float64 input is rounded to float32 here, like loading it into a runtime) and all
scale arithmetic is float32, in the order given for each scheme below. Element rounding is a single
round-to-nearest-even from that float32 quotient to the element grid (``floatfmt``), with saturation.

Blocks run along ``axis`` (default: last). The tensor is viewed as (n_blocks, block_size) and every
scale is a reduction over axis 1; no Python loop over blocks or elements. A last block shorter than
``block_size`` (K % block_size != 0) keeps its own scale: it is padded with zeros, which change no
block amax, and the padding is dropped again; its scale is still stored and counted. (OCP MX v1.0
defines only full blocks of k = 32; torchao and TensorRT-Model-Optimizer require K % block == 0.)

Documented differences from torchao 0.18 (measured; asserted in tests/test_microscaling.py):

* MX, tiny blocks: torchao's ``to_mx`` clamps the float32 scale it divides by to 2**-126 (a triton
  subnormal workaround), so a block whose E8M0 scale code is 0 (shared exponent -127, i.e. block amax below
  2**(emax_elem - 126): 2**-118 for E4M3, 2**-111 for E5M2, 2**-124 for E2M1) is divided by 2**-126
  instead of 2**-127; its codes are those of ``x * 2**126`` and torchao's decode (``code * 2**-127``)
  returns ``x / 2``. quantcore divides by the spec's X = 2**-127.
* FP8 per-row (``_choose_scale_float8`` with block ``(1, K)``): torchao gives an all-zero row scale 0 and
  NaN codes (0 / 0); quantcore gives it scale 1, codes 0 and x_hat 0. Other rows agree bit for bit.

Memory accounting is exact in bits (``bits_per_weight``); byte counts round up (4-bit codes are
packed two per byte): MXFP8 8 + 8/32 = 8.25, MXFP4 4 + 8/32 = 4.25, NVFP4 4 + 8/16 = 4.5 plus one
float32 per tensor, NF4 4 + 32/64 = 4.5, NF4 with double quantization 4 + 8/64 + 32/(64*256) plus
one float32 mean per tensor (about 4.127).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Optional

import numpy as np

from . import floatfmt as ff
from .kernel import tiles

__all__ = ["FloatScheme", "FloatQuantized", "quantize_float_scheme", "measure_float_scheme", "KINDS",
           "TENSOR_SCALED"]

KINDS = ("fp8_tensor", "fp8_channel", "mxfp8_e4m3", "mxfp8_e5m2", "mxfp4", "nvfp4", "nf4")
TENSOR_SCALED = ("fp8_tensor", "nvfp4")   # kinds with a scale taken from the whole tensor's amax
_DEFAULT_BLOCK = {"mxfp8_e4m3": 32, "mxfp8_e5m2": 32, "mxfp4": 32, "nvfp4": 16, "nf4": 64}
_F32 = np.float32


@dataclass(frozen=True)
class FloatScheme:
    """Spec of a scaled float scheme.

    kind: one of KINDS. block_size: elements per block along ``axis`` (defaults: MX 32, NVFP4 16,
    NF4 64; unused for fp8_tensor / fp8_channel). axis: block axis for block kinds (default -1), the
    channel axis for fp8_channel (default 0, one scale per index along it). element: "e4m3" (default)
    or "e5m2" for the fp8_* kinds. double_quant / dq_block_size: NF4 double quantization of the
    absmax scales (int8, blocks of 256 scales). convention: NVFP4 element arithmetic, "modelopt"
    (x / (block_scale * s_t)) or "torchao" (x * ((1 / s_t) / block_scale)). scale_rule (fp8_tensor /
    fp8_channel, E4M3 only for "onnx_std"): "amax" (scale = amax / max) or "onnx_std" (ONNX Runtime's
    quantization tool: scale = std(x) / std(every finite E4M3 value); see _fp8_std_scaled).
    """

    kind: str
    block_size: Optional[int] = None
    axis: Optional[int] = None
    element: Optional[str] = None
    double_quant: bool = False
    dq_block_size: int = 256
    convention: Literal["modelopt", "torchao"] = "modelopt"
    scale_rule: Literal["amax", "onnx_std"] = "amax"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"FloatScheme kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind in _DEFAULT_BLOCK:
            b = self.block
            if not isinstance(b, (int, np.integer)) or b < 1:
                raise ValueError(f"FloatScheme {self.kind}: block_size must be a positive integer, got {b!r}")
        elif self.block_size is not None:
            raise ValueError(f"FloatScheme {self.kind}: block_size does not apply (got {self.block_size})")
        if self.element is not None:
            if not self.kind.startswith("fp8_"):
                raise ValueError(f"FloatScheme {self.kind}: element is fixed by the kind; only fp8_tensor/"
                                 f"fp8_channel take element='e4m3'|'e5m2'")
            if self.element not in ("e4m3", "e5m2"):
                raise ValueError(f"FloatScheme element must be 'e4m3' or 'e5m2', got {self.element!r}")
        if self.double_quant and self.kind != "nf4":
            raise ValueError(f"double_quant applies to kind='nf4' only, not {self.kind!r}")
        if self.dq_block_size < 1:
            raise ValueError(f"dq_block_size must be >= 1, got {self.dq_block_size}")
        if self.scale_rule not in ("amax", "onnx_std"):
            raise ValueError(f"scale_rule must be 'amax' or 'onnx_std', got {self.scale_rule!r}")
        if self.scale_rule == "onnx_std" and (not self.kind.startswith("fp8_") or self.element == "e5m2"):
            raise ValueError("scale_rule 'onnx_std' (ONNX Runtime's compute_scale_zp_float8) applies to fp8_tensor / "
                             "fp8_channel with element e4m3 only")
        if self.convention not in ("modelopt", "torchao"):
            raise ValueError(f"convention must be 'modelopt' or 'torchao', got {self.convention!r}")

    @property
    def block(self) -> Optional[int]:
        return self.block_size if self.block_size is not None else _DEFAULT_BLOCK.get(self.kind)

    @property
    def block_axis(self) -> Optional[int]:
        if self.kind == "fp8_tensor":
            return None
        if self.axis is not None:
            return self.axis
        return 0 if self.kind == "fp8_channel" else -1

    @property
    def element_format(self) -> ff.Format:
        if self.kind.startswith("fp8_"):
            return ff.E5M2 if self.element == "e5m2" else ff.E4M3FN
        return {"mxfp8_e4m3": ff.E4M3FN, "mxfp8_e5m2": ff.E5M2, "mxfp4": ff.E2M1,
                "nvfp4": ff.E2M1, "nf4": ff.NF4}[self.kind]

    @property
    def label(self) -> str:
        rule = " (onnx std)" if self.scale_rule == "onnx_std" else ""
        if self.kind == "fp8_tensor":
            return f"fp8 {self.element or 'e4m3'} per-tensor{rule}"
        if self.kind == "fp8_channel":
            return f"fp8 {self.element or 'e4m3'} per-channel{rule}"
        name = {"mxfp8_e4m3": "mxfp8 e4m3", "mxfp8_e5m2": "mxfp8 e5m2", "mxfp4": "mxfp4",
                "nvfp4": "nvfp4", "nf4": "nf4"}[self.kind]
        if self.block != _DEFAULT_BLOCK[self.kind]:
            name += f" b{self.block}"
        if self.double_quant:
            name += " dq"
        return name


@dataclass(frozen=True)
class FloatQuantized:
    """Result of :func:`quantize_float_scheme`. Arrays with the input's shape unless stated.

    codes: uint8 element codes (4-bit formats in the low nibble). dequantized: float32 values.
    block_scales: float32, one decoded scale per block (blocks in row-major order of the
    (other axes..., block index) layout; per-tensor: length 1; per-channel: one per channel).
    scale_codes: stored scale codes (E8M0 / E4M3 uint8, NF4-dq int8), or None for float32 scales.
    tensor_scale: NVFP4's float32 per-tensor scale (NF4-dq: None; see ``extra``).
    clipped: bool, elements whose scaled value rounded past the element format's largest finite value
    and were saturated. boundary: bool, elements whose scaled value (the float32 number fed to the
    element encoder) lies within one float32 ulp of a rounding boundary of the element grid, i.e. a
    one-ulp move up or down would change the code (the float analogue of the integer engine's tie
    flags; the overflow threshold does not count, saturation keeps the code). Memory fields use the
    names of quantcore's Memory.
    """

    scheme: FloatScheme
    label: str
    element: str
    x: np.ndarray
    codes: np.ndarray
    dequantized: np.ndarray
    block_scales: np.ndarray
    scale_codes: Optional[np.ndarray]
    tensor_scale: Optional[float]
    clipped: np.ndarray
    boundary: np.ndarray
    clip_count: int
    n_elements: int
    n_blocks: int
    block_size: int
    payload_bits: int
    metadata_bits: int
    extra: dict = field(default_factory=dict)
    _block_ids: Optional[Callable[[], np.ndarray]] = field(default=None, repr=False, compare=False)

    @property
    def payload_bytes(self) -> int:
        return (self.payload_bits + 7) // 8

    @property
    def metadata_bytes(self) -> int:
        return (self.metadata_bits + 7) // 8

    @property
    def total_bytes(self) -> int:
        return self.payload_bytes + self.metadata_bytes

    @property
    def bits_per_weight(self) -> float:
        """(element bits + scale bits) / n_elements, exact (not from rounded bytes)."""
        return (self.payload_bits + self.metadata_bits) / self.n_elements

    @property
    def n_params(self) -> int:
        """Number of stored scale values (block scales, plus tensor scale / dq constants)."""
        return int(self.extra.get("n_params", self.n_blocks))

    @property
    def clip_rate(self) -> float:
        return self.clip_count / self.n_elements

    @property
    def error(self) -> np.ndarray:
        """dequantized - x, float64."""
        return self.dequantized.astype(np.float64) - self.x.astype(np.float64)

    def block_ids(self) -> np.ndarray:
        """int64 block index of every element (input shape), indexing ``block_scales``."""
        return self._block_ids()

    def memory_dict(self) -> dict:
        """Memory in quantcore's Memory field names."""
        return {
            "n_elements": self.n_elements,
            "n_params": self.n_params,
            "payload_bytes": self.payload_bytes,
            "metadata_bytes": self.metadata_bytes,
            "total_bytes": self.total_bytes,
            "bits_per_weight": self.bits_per_weight,
            "ratio_fp32": 4 * self.n_elements / self.total_bytes,
            "ratio_fp16": 2 * self.n_elements / self.total_bytes,
        }


# ---- block views ------------------------------------------------------------------------------------

class _Blocks:
    """x viewed as (n_blocks, width) with a way back to the input shape."""

    def __init__(self, x32: np.ndarray, scheme: FloatScheme):
        self.shape = x32.shape
        self.pad = 0
        if scheme.kind == "fp8_tensor":
            self.mode, self.axis = "tensor", None
            self.blocks = x32.reshape(1, -1)
            return
        ax = scheme.block_axis
        if not -x32.ndim <= ax < x32.ndim:
            raise ValueError(f"{scheme.label}: axis {ax} is out of range for an array with {x32.ndim} dimension(s)")
        self.axis = ax % x32.ndim
        if scheme.kind == "fp8_channel":
            self.mode = "channel"
            moved = np.moveaxis(x32, self.axis, 0)
            self.moved_shape = moved.shape
            self.blocks = moved.reshape(moved.shape[0], -1)
            return
        self.mode = "block"
        b = scheme.block
        moved = np.moveaxis(x32, self.axis, -1)
        self.moved_shape = moved.shape
        k = moved.shape[-1]
        self.pad = (-k) % b
        rows = moved.reshape(-1, k)
        if self.pad:
            rows = np.concatenate([rows, np.zeros((rows.shape[0], self.pad), rows.dtype)], axis=1)
        self.blocks = rows.reshape(-1, b)

    def back(self, arr: np.ndarray) -> np.ndarray:
        """(n_blocks, width) array -> input shape (padding dropped)."""
        if self.mode == "tensor":
            return arr.reshape(self.shape)
        if self.mode == "channel":
            return np.moveaxis(arr.reshape(self.moved_shape), 0, self.axis)
        k = self.moved_shape[-1]
        rows = arr.reshape(-1, k + self.pad)[:, :k]
        return np.moveaxis(rows.reshape(self.moved_shape), -1, self.axis)


def _as_float32(x: np.ndarray, scheme: FloatScheme) -> tuple[np.ndarray, np.ndarray]:
    """-> (original array, contiguous float32 copy or the input itself)."""
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{scheme.label}: expected a real numeric array, got dtype {a.dtype}")
    if a.size == 0:
        raise ValueError(f"{scheme.label}: input is empty (shape {a.shape})")
    if a.ndim == 0:
        a = a.reshape(1)
    with np.errstate(over="ignore"):  # values beyond float32 become inf here and are reported by the caller
        return a, np.ascontiguousarray(a, dtype=_F32)


def _check_nonfinite(a: np.ndarray, x32: np.ndarray, scheme: FloatScheme, allow_nonfinite: bool) -> None:
    """Called when some block amax is not finite: raise with the first bad index, unless allowed."""
    if allow_nonfinite:
        if not scheme.kind.startswith("mx"):
            raise ValueError(f"{scheme.label}: allow_nonfinite applies to MX schemes only (OCP MX 6.3 NaN scale)")
        return
    bad = ~np.isfinite(x32)
    idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), x32.shape))
    what = "NaN" if np.isnan(x32[idx]) else ("inf" if np.isinf(a[idx]) else "a value beyond float32 range")
    raise ValueError(f"{scheme.label}: input has {what} at index {idx}")


def _check_scaling(scheme: FloatScheme, op: Callable, op_scale: np.ndarray, amax: np.ndarray) -> None:
    """A block with data whose float32 scaling factor is 0 or not finite would turn its elements into inf or
    NaN (x / 0, x * inf, 0 * inf): refuse it, naming the block. Happens only at the ends of float32: a block
    amax near its bottom (fp8 amax / 448 underflows below ~6e-43, NF4 1 / absmax overflows below 2**-128),
    a constant under the std rule (std 0), or a float32 std that overflows (values near 1e38)."""
    bad = ~np.isfinite(op_scale) | ((op_scale == 0) & (op is np.divide))
    bad &= amax > 0
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        where = {"fp8_tensor": "the tensor", "fp8_channel": f"channel {i}"}.get(scheme.kind, f"block {i}")
        what = "scale" if op is np.divide else "reciprocal scale"
        std = scheme.scale_rule == "onnx_std"
        if op_scale[i] == 0:
            why = "a constant has no spread" if std else "values this small cannot be scaled in float32"
        else:
            why = "its float32 standard deviation overflows" if std else "values this small cannot be scaled in float32"
        raise ValueError(f"{scheme.label}: {where}: its {what} is {float(op_scale[i]):g} in float32 (amax "
                         f"{float(amax[i]):.3g}): {why}")


# ---- tiled passes -------------------------------------------------------------------------------------
#
# The tensor is processed in tiles of about ff.TILE_ELEMENTS elements (whole rows of the (n_blocks,
# width) view, or a column slice of one long row), so the dozen elementwise steps per element run on
# data resident in L2 and each element is read from memory twice (amax pass, quantize pass). Results do
# not depend on the tiling: every step is elementwise or a per-block max.

_TILE = ff.TILE_ELEMENTS
_ABS = 0x7FFF_FFFF
_INF_BITS = 0x7F80_0000


def _block_amax(blocks: np.ndarray) -> np.ndarray:
    """float32 max |x| per row of ``blocks``; NaN if the row holds a NaN, inf if an inf (and no NaN).

    Computed as an unsigned max of the magnitude bit patterns (monotone in |x| for non-negative floats,
    and NaN patterns sort above inf). Short rows (blocks of < 64) are transposed per tile so the max runs
    along contiguous memory.
    """
    nb, w = blocks.shape
    out = np.zeros(nb, np.uint32)
    u = blocks.view(np.uint32)
    cap = min(blocks.size, _TILE)
    buf = np.empty(cap, np.uint32)
    tbuf = np.empty(cap, np.uint32) if w < 64 else None
    for r0, r1, c0, c1 in tiles(nb, w, _TILE):
        t = u[r0:r1, c0:c1]
        a = buf[:t.size].reshape(t.shape)
        np.bitwise_and(t, _ABS, out=a)
        if tbuf is not None:
            at = tbuf[:t.size].reshape(t.shape[1], t.shape[0])
            np.copyto(at, a.T)
            np.maximum.reduce(at, axis=0, out=out[r0:r1])
        else:
            np.maximum(out[r0:r1], np.max(a, axis=1), out=out[r0:r1])
    return out.view(_F32)


def _quantize_pass(blocks: np.ndarray, fmt: ff.Format, op: Callable, op_scale: np.ndarray,
                   deq_scale: np.ndarray):
    """codes, dequantized, clipped, boundary (each shaped like ``blocks``) for

        scaled  = op(blocks, op_scale[:, None])          float32 (op: np.divide or np.multiply)
        codes   = fmt(scaled), saturating RNE (codebook: number of thresholds below)
        deq     = decode(codes) * deq_scale[:, None]       float32
        clipped = scaled rounded past fmt's largest finite value
        boundary = a one-ulp (float32) move of ``scaled`` changes the code (see ff.Encoded)
    """
    nb, w = blocks.shape
    codes = np.empty((nb, w), np.uint8)
    deq = np.empty((nb, w), _F32)
    clipped = np.empty((nb, w), bool)
    boundary = np.empty((nb, w), bool)
    cap = min(blocks.size, _TILE)
    enc = ff.TileEncoder(fmt, cap)
    sbuf = np.empty(cap, _F32)
    op_scale = np.asarray(op_scale, _F32)
    deq_scale = np.asarray(deq_scale, _F32)
    for r0, r1, c0, c1 in tiles(nb, w, _TILE):
        t = blocks[r0:r1, c0:c1]
        s = sbuf[:t.size].reshape(t.shape)
        op(t, op_scale[r0:r1, None], out=s)
        d = deq[r0:r1, c0:c1]
        enc.run(s.reshape(-1), codes[r0:r1, c0:c1].reshape(-1), clipped[r0:r1, c0:c1].reshape(-1),
                boundary[r0:r1, c0:c1].reshape(-1), d.reshape(-1))
        np.multiply(d, deq_scale[r0:r1, None], out=d)
    return codes, deq, clipped, boundary


def _measure_pass(blocks: np.ndarray, fmt: ff.Format, op: Callable, op_scale: np.ndarray,
                  deq_scale: np.ndarray, want_ssx: bool = True) -> dict[str, float | int]:
    """Totals of :func:`quantcore.metrics.row_stats` over ``blocks`` without keeping any per-element array.

    Per element exactly :func:`_quantize_pass` (same float32 ``scaled``, codes and ``deq``), then
    ``err = deq - x`` in float32 as :class:`quantcore.floatanalysis.FloatResult` forms it; sums of
    ``err**2``, ``|err|`` and ``x**2`` are accumulated in float64 per tile (so they equal the per-channel
    sums of the full analysis up to float64 summation order). A saturated element counts as clipped
    low when ``x < 0`` and high when ``x > 0``; ``collapsed`` counts ``deq == 0`` where ``x != 0``.
    Zero padding of a short last block changes no sum (its ``x`` and ``deq`` are 0); it is not counted
    in ``n`` (the caller passes the real element count).
    """
    nb, w = blocks.shape
    cap = min(blocks.size, _TILE)
    enc = ff.TileEncoder(fmt, cap)
    sbuf, dbuf = np.empty(cap, _F32), np.empty(cap, _F32)
    codes, clipped, zero = np.empty(cap, np.uint8), np.empty(cap, bool), np.empty(cap, bool)
    op_scale = np.asarray(op_scale, _F32)
    deq_scale = np.asarray(deq_scale, _F32)
    sse = sae = ssx = 0.0
    max_abs = 0.0
    lo = hi = collapsed = 0
    for r0, r1, c0, c1 in tiles(nb, w, _TILE):
        t = blocks[r0:r1, c0:c1]
        k = t.size
        s = sbuf[:k].reshape(t.shape)
        op(t, op_scale[r0:r1, None], out=s)
        d = dbuf[:k].reshape(t.shape)
        enc.run(s.reshape(-1), codes[:k], clipped[:k], None, d.reshape(-1))
        np.multiply(d, deq_scale[r0:r1, None], out=d)
        z = zero[:k].reshape(t.shape)
        np.equal(d, 0, out=z)
        if z.any():
            z &= t != 0
            collapsed += int(np.count_nonzero(z))
        c = clipped[:k].reshape(t.shape)
        if c.any():
            neg = int(np.count_nonzero(c & (t < 0)))
            lo += neg
            hi += int(np.count_nonzero(c)) - neg
        if want_ssx:
            ssx += float(np.einsum("ij,ij->", t, t, dtype=np.float64))
        np.subtract(d, t, out=d)                                  # err, float32
        sse += float(np.einsum("ij,ij->", d, d, dtype=np.float64))
        np.abs(d, out=d)
        sae += float(d.sum(dtype=np.float64))
        max_abs = max(max_abs, float(d.max()))
    return {"sse": sse, "sae": sae, "max_abs": max_abs, "ssx": ssx, "clipped_low": lo, "clipped_high": hi,
            "collapsed": collapsed}


# ---- schemes ----------------------------------------------------------------------------------------
#
# Each scheme turns the per-block amax into scales and says how the element encoder's input is formed
# (op, op_scale) and how the decoded elements are scaled back (deq_scale); _quantize_pass does the rest.

def _fp8_scaled(amax: np.ndarray, fmt: ff.FloatFormat):
    """scale = amax / fmt.max (float32; amax == 0 -> scale 1); elements = fmt(x / scale), saturating;
    x_hat = fmt value * scale."""
    scale = amax / _F32(fmt.max_finite)
    scale = np.where(amax == 0, _F32(1), scale).astype(_F32)
    return np.divide, scale, scale, scale, None, 32 * scale.size, {}


def _fp8_std_scaled(blocks: np.ndarray, fmt: ff.FloatFormat):
    """ONNX Runtime 1.32's quantization tool for float8 weights (``compute_data_quant_params`` ->
    ``quant_utils.compute_scale_zp_float8``): ``scale = float32(std(x) / std_f8)`` with ``std`` numpy's
    float32 ``np.std`` of the tensor (per channel: of the channel) and ``std_f8`` the float32 ``np.std`` of
    every finite E4M3FN value in code order; elements = E4M3FN(x / scale) saturating (``QuantizeLinear``
    with ``saturate=1``), x_hat = value * scale. Same numpy reductions on the same float32 rows, so the
    same bits. A constant tensor has std 0 and is refused (x / 0)."""
    values = ff.decode(np.arange(256), ff.E4M3FN)
    std_f8 = np.std(values[np.isfinite(values)].astype(_F32))
    with np.errstate(over="ignore", invalid="ignore"):  # a std beyond float32 is refused by _check_scaling
        scale = (np.std(blocks, axis=1) / std_f8).astype(_F32)
    scale = np.where(np.isnan(scale), _F32(np.inf), scale)
    return np.divide, scale, scale, scale, None, 32 * scale.size, {}


def _mx(amax: np.ndarray, fmt: ff.FloatFormat):
    """OCP MX v1.0 section 6.3: shared_exp = floor(log2(amax)) - emax_elem, clamped to E8M0's
    [-127, 127]; X = 2**shared_exp; P_i = quantize(V_i / X) with saturation to the element max.

    floor(log2(amax)) is the float32 exponent field of amax minus 127 (a zero or subnormal amax
    gives <= -127 and clamps to -127). V_i / X is computed as the float32 product V_i * 2**-shared_exp.
    That product is exact (so equal to the exact quotient the spec means) except where it falls below
    2**-126, into float32's subnormal range; there it is rounded, but any value below 2**-126 encodes to
    a zero of the same sign in every MX element format (their smallest half-step is 2**-17), so the
    codes are those of the exact quotient. 2**-shared_exp itself is a normal float32: shared_exp <= 125
    because amax < 2**128 and emax_elem >= 2. The dequantized value fmt_value * X is one float32
    multiply: the exact product rounded once, as in float64-then-cast.
    A NaN or inf amax makes X NaN (code 0xFF) and every element of that block decodes to NaN (spec: a
    NaN scale makes the whole block NaN); its element codes are set to 0.
    """
    ef = ((amax.view(np.uint32) >> np.uint32(23)) & np.uint32(0xFF)).astype(np.int32)
    floor_log2 = ef - 127
    shared = np.clip(floor_log2 - fmt.emax, -127, 127)
    nan_scale = ~np.isfinite(amax)
    scale_codes = np.where(nan_scale, 0xFF, shared + 127).astype(np.uint8)
    scales = ff.decode(scale_codes, ff.E8M0)                       # exact powers of two, float32
    inv = np.where(nan_scale, 1.0, np.ldexp(1.0, -shared)).astype(_F32)   # exact: 2**-127 .. 2**125
    return np.multiply, inv, scales, scales, scale_codes, 8 * scales.size, {"nan_rows": nan_scale}


def _nvfp4(amax_b: np.ndarray, convention: str, tensor_amax: float | None = None):
    """NVFP4, two-level scaling, all arithmetic float32:

        s_t   = amax(|x| over the tensor) / (6 * 448)                      (per-tensor float32 scale)
        s_b   = E4M3( clamp((amax_block / 6) / s_t, 2**-6, 448) )           (per block of 16)
        q     = E2M1( x / (s_b * s_t) )            convention="modelopt"  (saturating, RNE)
                E2M1( x * ((1 / s_t) / s_b) )      convention="torchao"
        x_hat = q * s_b * s_t

    Source: NVIDIA TensorRT-Model-Optimizer NVFP4QTensor (weights_scaling_factor_2 =
    amax / (6 * 448); per-block scale = block_amax / (6 * weights_scaling_factor_2) cast to
    float8_e4m3fn; quantize x / (per_block_scale * weights_scaling_factor_2)); cuBLAS documents the
    same 16-element E4M3 block scale times a float32 tensor scale. The clamp of the block scale to
    [2**-6 (E4M3 smallest normal), 448] before the E4M3 cast is torchao's nvfp4_quantize (0.18), which
    is also where convention="torchao" comes from (reciprocal multiply, as its Triton kernel). An
    all-zero tensor uses s_t = 1 (every code 0).
    """
    amax_t = _F32(np.max(amax_b)) if tensor_amax is None else _F32(tensor_amax)
    s_t = _F32(amax_t / _F32(6.0 * 448.0)) if amax_t > 0 else _F32(1.0)
    if s_t == 0:
        raise ValueError(f"nvfp4: the tensor scale amax / 2688 underflows float32 (tensor amax {float(amax_t):.3g})")
    with np.errstate(over="ignore"):  # a subnormal s_t: the clamp to 448 below handles the overflow
        sb = (amax_b / _F32(6.0)) / s_t
    sb = np.clip(sb, _F32(ff.E4M3FN.min_positive * 8), _F32(448.0)).astype(_F32)   # 2**-9 * 8 = 2**-6
    scale_codes = ff.encode(sb, ff.E4M3FN)
    s_b = ff.decode(scale_codes, ff.E4M3FN)
    denom = (s_b * s_t).astype(_F32)
    if convention == "modelopt":
        op, op_scale = np.divide, denom
    else:
        with np.errstate(over="ignore"):  # 1 / s_t beyond float32: refused by the caller's scale check
            op, op_scale = np.multiply, ((_F32(1.0) / s_t) / s_b).astype(_F32)
    return (op, op_scale, denom, s_b, scale_codes, 8 * s_b.size + 32,
            {"n_params": s_b.size + 1, "tensor_scale": float(s_t)})


def _double_quant(absmax: np.ndarray, dq_block: int):
    """torchao NF4Tensor.double_quantize_scalers (0.18), float32 arithmetic:

        mean = mean(absmax);  c = absmax - mean
        per run of ``dq_block`` consecutive scales: f = 256 / (2 * amax(|c|))  (amax 0 -> f = 1)
        q = clamp(round_half_even(c * f), -128, 127) as int8;   scale_hat = q / f + mean

    The mean is float32(sum in float64 / n); torch sums in float32 in its own order, so the mean can
    differ from torch's in the last bit unless the sum is exact. A last shorter run keeps its own f.
    Storage: 8 bits per scale, 32 bits per run (f), 32 bits (mean).
    """
    n = absmax.size
    mean = _F32(np.sum(absmax, dtype=np.float64) / n)
    c = (absmax - mean).astype(_F32)
    pad = (-n) % dq_block
    runs = np.concatenate([c, np.zeros(pad, _F32)]).reshape(-1, dq_block)
    ramax = np.max(np.abs(runs), axis=1)
    with np.errstate(divide="ignore", over="ignore"):
        f = np.where(ramax > 0, _F32(256.0) / (_F32(2.0) * ramax), _F32(1.0)).astype(_F32)
    bad = np.flatnonzero(~np.isfinite(f) | (f == 0))
    if bad.size:
        k = int(bad[0])
        raise ValueError(f"nf4 dq: scale run {k} (blocks {k * dq_block}..{min(n, (k + 1) * dq_block) - 1}): its "
                         f"factor 256 / (2 * {float(ramax[k]):.3g}) is not a finite nonzero float32 (torchao's "
                         f"double quantization gives NaN scales here); use nf4 without double quantization")
    q = np.clip(np.rint(runs * f[:, None]), -128, 127).astype(np.int8)
    deq = ((q.astype(_F32) / f[:, None]) + mean).astype(_F32).reshape(-1)[:n]
    q = q.reshape(-1)[:n]
    meta_bits = 8 * n + 32 * f.size + 32
    return q, deq, f, mean, meta_bits


def _nf4(absmax: np.ndarray, double_quant: bool, dq_block: int):
    """NF4 (QLoRA / bitsandbytes), float32: absmax per block; q = dQuantizeNF4(x * (1 / absmax))
    (reciprocal multiply as bitsandbytes' kQuantizeBlockwise; absmax 0 -> reciprocal 0 -> code of 0.0);
    x_hat = NF4[q] * scale, scale = absmax, or its double-quantized value (see _double_quant; the
    elements are still quantized with the exact absmax, as bitsandbytes and torchao do).
    Absmax scaling cannot clip: scaled values are within [-1, 1] up to one float32 ulp, which the
    codebook maps to +-1, so ``clipped`` is all False."""
    with np.errstate(divide="ignore"):
        with np.errstate(over="ignore"):  # 1 / absmax beyond float32: refused by the caller's scale check
            recip = np.where(absmax > 0, _F32(1.0) / absmax, _F32(0.0)).astype(_F32)
    extra: dict = {}
    if double_quant:
        q, scale, f, mean, meta_bits = _double_quant(absmax, dq_block)
        scale_codes = q
        extra = {"dq_factors": f, "dq_mean": float(mean), "absmax": absmax,
                 "n_params": absmax.size + f.size + 1}
    else:
        scale, scale_codes, meta_bits = absmax.astype(_F32), None, 32 * absmax.size
    return np.multiply, recip, scale, scale, scale_codes, meta_bits, extra


def _check_tensor_amax(scheme: FloatScheme, tensor_amax: float | None) -> None:
    if tensor_amax is None:
        return
    if scheme.kind not in TENSOR_SCALED:
        raise ValueError(f"{scheme.label}: tensor_amax applies to {', '.join(TENSOR_SCALED)} only")
    if not (np.isfinite(tensor_amax) and tensor_amax >= 0):
        raise ValueError(f"{scheme.label}: tensor_amax must be finite and >= 0, got {tensor_amax!r}")


def _scales(x, scheme: FloatScheme, allow_nonfinite: bool, tensor_amax: float | None):
    """Shared first half of quantize/measure: float32 copy, block view, per-block amax, the scheme's
    scales (``tensor_amax`` replaces the amax of the given part for the tensor-scaled kinds)."""
    if not isinstance(scheme, FloatScheme):
        raise ValueError(f"scheme must be a FloatScheme, got {type(scheme).__name__}")
    _check_tensor_amax(scheme, tensor_amax)
    a, x32 = _as_float32(x, scheme)
    view = _Blocks(x32, scheme)
    fmt = scheme.element_format
    kind = scheme.kind
    amax = _block_amax(view.blocks)
    if not (amax.view(np.uint32) < _INF_BITS).all():
        _check_nonfinite(a, x32, scheme, allow_nonfinite)
    if kind == "fp8_tensor" and tensor_amax is not None:
        amax = np.array([tensor_amax], _F32)
    if kind in ("fp8_tensor", "fp8_channel"):
        out = _fp8_std_scaled(view.blocks, fmt) if scheme.scale_rule == "onnx_std" else _fp8_scaled(amax, fmt)
    elif kind.startswith("mx"):
        out = _mx(amax, fmt)
    elif kind == "nvfp4":
        out = _nvfp4(amax, scheme.convention, tensor_amax)
    else:
        out = _nf4(amax, scheme.double_quant, scheme.dq_block_size)
    _check_scaling(scheme, out[0], out[1], amax)
    return a, x32, view, fmt, out


def quantize_float_scheme(x: np.ndarray, scheme: FloatScheme, allow_nonfinite: bool = False,
                          tensor_amax: float | None = None) -> FloatQuantized:
    """Quantize ``x`` (any real dtype, any shape, non-empty) with a scaled float scheme.

    Non-finite inputs raise ValueError naming the first index, except for MX schemes with
    ``allow_nonfinite=True`` (OCP MX 6.3: a block whose amax is NaN gets a NaN scale).
    ``tensor_amax`` (``fp8_tensor``, ``nvfp4``): the float32 max |x| of the whole tensor when ``x`` is
    a part of it (a run of rows), so the part is quantized with the whole tensor's scale; default:
    the amax of ``x`` itself.
    """
    a, x32, view, fmt, out = _scales(x, scheme, allow_nonfinite, tensor_amax)
    blocks = view.blocks
    op, op_scale, deq_scale, scales, scale_codes, meta_bits, extra = out
    codes_b, deq_b, clipped_b, boundary_b = _quantize_pass(blocks, fmt, op, op_scale, deq_scale)
    nan_rows = extra.pop("nan_rows", None)
    if nan_rows is not None and nan_rows.any():
        codes_b[nan_rows] = 0
        deq_b[nan_rows] = np.nan
        clipped_b[nan_rows] = False
        boundary_b[nan_rows] = False
    clipped = view.back(clipped_b)
    n = x32.size
    n_blocks, width = blocks.shape

    def block_ids() -> np.ndarray:
        return view.back(np.broadcast_to(np.arange(n_blocks, dtype=np.int64)[:, None], blocks.shape))

    return FloatQuantized(
        scheme=scheme,
        label=scheme.label,
        element=fmt.name,
        x=x32,
        codes=view.back(codes_b),
        dequantized=view.back(deq_b),
        block_scales=np.asarray(scales, dtype=_F32),
        scale_codes=scale_codes,
        tensor_scale=extra.pop("tensor_scale", None),
        clipped=clipped,
        boundary=view.back(boundary_b),
        clip_count=int(np.count_nonzero(clipped)),
        n_elements=n,
        n_blocks=n_blocks,
        block_size=int(scheme.block) if scheme.block else int(width),
        payload_bits=n * fmt.bits,
        metadata_bits=int(meta_bits),
        extra=extra,
        _block_ids=block_ids,
    )


def measure_float_scheme(x: np.ndarray, scheme: FloatScheme, tensor_amax: float | None = None,
                         ssx: float | None = None) -> dict[str, float | int]:
    """Metrics-only :func:`quantize_float_scheme`: additive statistics (``n, sse, sae, max_abs, ssx,
    clipped_low, clipped_high, collapsed``; see :func:`_measure_pass`) without per-element outputs.

    Same scales and per-element arithmetic as :func:`quantize_float_scheme` with the same
    ``tensor_amax``; non-finite input raises ValueError (no ``allow_nonfinite``). ``ssx``: the float64
    sum of squares of ``x`` when the caller already has it (that pass is then skipped).
    """
    a, x32, view, fmt, out = _scales(x, scheme, False, tensor_amax)
    op, op_scale, deq_scale = out[0], out[1], out[2]
    stats = _measure_pass(view.blocks, fmt, op, op_scale, deq_scale, want_ssx=ssx is None)
    if ssx is not None:
        stats["ssx"] = float(ssx)
    return {"n": int(x32.size), **stats}
