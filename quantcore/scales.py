"""Scale rules: how each block's scale (and zero-point) follows from the block view's reductions.

Every rule is a frozen dataclass. :meth:`ScaleRule.block_scales` takes the per-block reductions of the
one block view (:func:`quantcore.granularity.block_minmax`: min, max, hence amax = max(-min, max); the
ONNX rule also a standard deviation) and returns a :class:`BlockScales`: the dequantization scale of
every block, its zero-point, the stored scale codes, and for float elements the factor the element
encoder applies. The arithmetic of each rule is a pure function named in its docstring.

``IntScale``    integer elements: the range method (:mod:`quantcore.params`: min/max, percentile, MSE,
                KL, custom) gives ``[lo, hi]`` per block, then ``choose_qparams`` (mapping symmetric /
                affine / affine_float, the symmetric-scale rules incl. ``signed_amax``) in the convention's
                dtype. Conventions: :data:`quantcore.conventions.CONVENTIONS`.
``AbsMax``      float / codebook elements: ``scale = amax / element max`` (float32), stored as fp32,
                fp16, bf16 or E4M3; optional double quantization of the scales (``double_quant``, NF4 as
                torchao does it). Conventions ``divide`` (``x / scale``: torch / torchao float8, ONNX
                Runtime, DeepSeek-V3) and ``reciprocal`` (``x * (1 / scale)``: bitsandbytes NF4).
``StdScale``    ONNX Runtime's quantization tool for float8 weights: ``scale = std(x) / std(E4M3 values)``.
``PowerOfTwo``  E8M0 scales (OCP MX): ``X = 2**(e - emax_elem)`` with ``e`` from amax by the mode
                ``floor`` (OCP MX v1.0 6.3), ``ceil``, ``even`` or ``rceil`` (NVIDIA cuBLAS / MXFP8
                recipe), as torchao 0.18's ``ScaleCalculationMode``. Conventions ``ocp`` (the spec's
                exact ``x / X``) and ``torchao`` (``to_mx``'s scale floor 2**-126 / RCEIL reciprocal).
``TwoLevel``    NVFP4: E4M3 block scale times a float32 tensor scale. Conventions ``modelopt`` and
                ``torchao`` (the two published operation orders).
``GGUFScales``  GGUF types: the registered :mod:`quantcore.ggml` class searches its own scales.

Combinations that make no sense (a float element with a zero-point, E8M0 scales on integers, a GGUF
type with another granularity, ...) are refused by :meth:`ScaleRule.check` with a message saying why.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar, Union

import numpy as np

from . import floatfmt as ff
from .calibration import kl_range_steps, mse_optimal_range_steps
from .conventions import CONVENTIONS, ROUNDINGS, Convention, get_convention, store_scale
from .elements import Element, GGUFType, is_float_element
from .formats import IntFormat
from .granularity import BlockView, Canonical, Granularity, PerBlock, PerChannel, PerGroup, PerTensor
from .memory import dtype_bits
from .steps import Steps, run
from .params import (MAPPINGS, SYMMETRIC_SCALES, CustomRange, KLDivergence, MinMax, MSEOptimal, Percentile,
                     RangeMethod, choose_qparams, custom_range, percentile_range)

if TYPE_CHECKING:  # type hints only (spec imports this module)
    from .spec import QuantSpec

_F32 = np.float32


@dataclass(frozen=True)
class BlockScales:
    """What a scale rule decided, per block (arrays of length ``n_blocks``, canonical block order).

    ``scale``         dequantization scale: ``x_hat = (q - zero_point) * scale`` (integers; the convention
                      may still round it for storage, e.g. fp16 for ``gguf``) or ``value(q) * scale``
                      (float elements; NVFP4: block scale times tensor scale, rounded once to float32).
    ``zero_point``    integer elements' zero-point (float offset for ``affine_float``); 0 for float
                      elements, which store none (``zero_point_dtype`` "none").
    ``lo``, ``hi``    the range the block was quantized for (float elements: ``-+ scale * element max``).
    ``encode_op``     float elements: the element encoder's input is ``x / encode_scale`` ("divide") or
    ``encode_scale``  ``x * encode_scale`` ("multiply"), float32.
    ``codes``         stored scale codes: E8M0 / E4M3 bytes (uint8), double-quantized scales (int8); None
                      when the scale is stored as a float (fp32 / fp16 / bf16).
    ``block_scale``   the stored per-block scale decoded, before a tensor scale (NVFP4's E4M3 ``s_b``;
                      double quantization: the dequantized absmax); None when equal to ``scale``.
    ``tensor_scale``  NVFP4's float32 tensor scale.
    ``clip_ratio``    MSE / KL range methods: chosen range / data range per block.
    ``absmax``, ``dq_factors``, ``dq_mean``: double quantization (the exact absmax the elements were
                      quantized with, the per-run factors and the mean; see :func:`double_quantize`).
    ``nan_blocks``    MX with non-finite input allowed: blocks whose scale is NaN (OCP MX 6.3).
    """

    scale: np.ndarray
    zero_point: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    encode_op: str = "divide"
    encode_scale: np.ndarray | None = None
    codes: np.ndarray | None = None
    block_scale: np.ndarray | None = None
    tensor_scale: float | None = None
    clip_ratio: np.ndarray | None = None
    absmax: np.ndarray | None = None
    dq_factors: np.ndarray | None = None
    dq_mean: float | None = None
    nan_blocks: np.ndarray | None = None


@dataclass(frozen=True)
class ScaleInputs:
    """What a rule may read: the block view and its canonical tensor, the reductions per block -- ``min`` and
    ``max`` (working dtype; integer rules) or ``block_amax`` (float32 max |x|; float rules), NaN / inf
    propagating -- and, when the analysed array is a part of a larger tensor, that tensor's min and max (a
    per-tensor block's reductions are then already the tensor's)."""

    blocks: BlockView
    canon: Canonical
    min: np.ndarray | None = None
    max: np.ndarray | None = None
    block_amax: np.ndarray | None = None
    tensor_range: tuple[float, float] | None = None

    def storage_order(self) -> np.ndarray:
        """Block indices in storage order (:meth:`BlockView.storage_order`)."""
        return self.blocks.storage_order(self.canon)

    def amax(self) -> np.ndarray:
        """float32 max |x| per block (NaN if the block holds a NaN)."""
        if self.block_amax is not None:
            return self.block_amax
        return np.maximum(-self.min, self.max).astype(_F32, copy=False)

    def tensor_amax(self, amax: np.ndarray) -> np.float32:
        """float32 max |x| of the whole tensor: from ``tensor_range`` when given, else of the blocks' amax."""
        if self.tensor_range is not None:
            lo, hi = self.tensor_range
            return _F32(max(-lo, hi))
        return _F32(np.max(amax))


class ScaleRule:
    """Base class: the facts every rule declares (see the module docstring for the rules)."""

    conventions: ClassVar[tuple[str, ...]]
    scale_dtypes: ClassVar[tuple[str, ...]]        # the first is the default
    zero_point_dtypes: ClassVar[tuple[str, ...]] = ("none",)
    roundings: ClassVar[tuple[str | None, ...]] = (None, "half-even")

    def check(self, element: Element, granularity: Granularity) -> None:
        """Raise ValueError if this rule cannot scale ``element`` blocks of ``granularity``."""
        raise NotImplementedError

    def block_scales(self, inp: ScaleInputs, spec: "QuantSpec") -> BlockScales:
        raise NotImplementedError

    def block_scales_steps(self, inp: ScaleInputs, spec: "QuantSpec") -> Steps[BlockScales]:
        """:meth:`block_scales` as steps (:mod:`quantcore.steps`): one, unless the rule searches (a range
        search takes one per candidate)."""
        yield 0.0
        return self.block_scales(inp, spec)

    @property
    def allowed_scale_dtypes(self) -> tuple[str, ...]:
        """Storage formats of the scale this rule can produce (the first is the default)."""
        return self.scale_dtypes

    def metadata_bits(self, n_blocks: int, scale_dtype: str, zero_point_dtype: str) -> int:
        """Bits of scales and zero-points stored for ``n_blocks`` blocks."""
        return n_blocks * (dtype_bits(scale_dtype) + dtype_bits(zero_point_dtype))

    @property
    def needs_tensor_range(self) -> bool:
        """True when a block's scale depends on the whole tensor's amax (beyond per-tensor granularity)."""
        return False

    @property
    def label(self) -> str:
        raise NotImplementedError


def _require_float(rule: str, element: Element, what: str = "float or codebook") -> None:
    if isinstance(element, IntFormat):
        raise ValueError(f"{rule} scales {what} elements; integer elements take IntScale (mapping symmetric for "
                         f"an absmax scale)")
    if isinstance(element, GGUFType):
        raise ValueError(f"{element.label} is a GGUF block type: it fixes its own scales (GGUFScales)")
    if not is_float_element(element):
        raise ValueError(f"unknown element {element!r}")


def _require_signed_float(rule: str, element: Element) -> None:
    _require_float(rule, element, "float")
    if isinstance(element, ff.Codebook):
        raise ValueError(f"{rule} scales float elements (FP8/FP6/FP4), not the codebook {element.name}")
    if not element.signed:
        raise ValueError(f"{element.name} is unsigned (a scale format): it cannot be an element of {rule}")


def _float_range(scale: np.ndarray, element: Element) -> tuple[np.ndarray, np.ndarray]:
    top = np.asarray(scale, np.float64) * float(element.max_finite)
    return -top, top


def _no_zero_point(n: int) -> np.ndarray:
    """Float elements store no zero-point: x_hat = value * scale, i.e. a zero-point of 0."""
    return np.zeros(n)


# --- integers ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IntScale(ScaleRule):
    """Integer scale and zero-point from a range per block (module docstring of :mod:`quantcore.params`).

    ``mapping``: ``symmetric``, ``affine`` or ``affine_float``; ``range``: the range method;
    ``symmetric_scale``: the symmetric denominator rule (None: the convention's). The convention
    (``QuantSpec.convention``) decides the qparams rule, its dtype and ``eps``.
    """

    mapping: str = "affine"
    range: RangeMethod = MinMax()
    symmetric_scale: str | None = None

    conventions: ClassVar[tuple[str, ...]] = tuple(CONVENTIONS)
    scale_dtypes: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "bf16")
    roundings: ClassVar[tuple[str | None, ...]] = (None, *ROUNDINGS)

    def __post_init__(self) -> None:
        if self.mapping not in MAPPINGS:
            raise ValueError(f"unknown mapping {self.mapping!r}; expected one of {', '.join(MAPPINGS)}")
        if self.symmetric_scale is not None and self.symmetric_scale not in SYMMETRIC_SCALES:
            raise ValueError(f"unknown symmetric scale rule {self.symmetric_scale!r}; expected one of "
                             f"{SYMMETRIC_SCALES}")
        if not isinstance(self.range, (MinMax, CustomRange, Percentile, MSEOptimal, KLDivergence)):
            raise ValueError(f"unknown range method {self.range!r}")

    def check(self, element: Element, granularity: Granularity) -> None:
        if not isinstance(element, IntFormat):
            what = element.label if hasattr(element, "label") else repr(element)
            raise ValueError(f"IntScale (integer scale and zero-point) needs an integer element, not {what}: "
                             f"float elements have no zero-point (use AbsMax, PowerOfTwo or TwoLevel)")

    def convention(self, name: str) -> Convention:
        """The named convention adjusted to the mapping: ``affine_float`` adds its float offset before
        rounding (``q = round(x / scale + zp)``, as GGUF Q4_1 and torch's float-qparams kernels), whatever
        the convention; added after rounding, the codes would not be integers."""
        conv = get_convention(name)
        if self.mapping == "affine_float" and not conv.zp_before_round:
            conv = replace(conv, zp_before_round=True)
        return conv

    def effective_symmetric_scale(self, convention: str) -> str:
        return self.symmetric_scale or get_convention(convention).symmetric_scale

    def block_scales(self, inp: ScaleInputs, spec: "QuantSpec") -> BlockScales:
        return run(self.block_scales_steps(inp, spec))

    def block_scales_steps(self, inp: ScaleInputs, spec: "QuantSpec") -> Steps[BlockScales]:
        conv = self.convention(spec.convention)
        bv = inp.blocks
        lo, hi, ratio = yield from self._select_range(inp, spec, conv)
        blocked = isinstance(bv.granularity, (PerGroup, PerBlock))
        with np.errstate(over="ignore", invalid="ignore"):  # an overflowing range is reported just below
            scale, zp = choose_qparams(lo, hi, spec.element, self.mapping,
                                       self.effective_symmetric_scale(spec.convention), conv, blocked)
            scale = store_scale(scale, spec.scale_dtype)
        if not np.isfinite(scale).all():
            i = int(np.flatnonzero(~np.isfinite(scale))[0])
            where = "the tensor" if isinstance(bv.granularity, PerTensor) else bv.row_name(i * bv.tile[0])
            raise ValueError(f"{where}: range [{float(lo[i]):.3g}, {float(hi[i]):.3g}] is too wide: its scale "
                             f"overflows {np.dtype(np.asarray(scale).dtype).name}")
        return BlockScales(scale, zp, lo, hi, clip_ratio=ratio)

    def _select_range(self, inp: ScaleInputs, spec: "QuantSpec", conv: Convention) -> Steps[tuple]:
        """Each block's range ``(lo, hi, clip ratio or None)``; the searches step once per candidate."""
        r, bv = self.range, inp.blocks
        dt = conv.qparams_dtype
        yield 0.0
        if isinstance(r, MinMax):
            return inp.min.astype(dt), inp.max.astype(dt), None
        if isinstance(r, CustomRange):
            lo, hi = custom_range(bv, r, dt)
            return lo, hi, None
        if isinstance(r, Percentile):
            lo, hi = percentile_range(bv, float(r.pct), conv.dtype)
            return lo.astype(dt), hi.astype(dt), None
        if isinstance(r, MSEOptimal):
            return (yield from mse_optimal_range_steps(
                bv, inp.min, inp.max, spec.element, self.mapping, self.effective_symmetric_scale(spec.convention),
                conv, spec.effective_rounding, int(r.steps), isinstance(bv.granularity, (PerGroup, PerBlock)),
                uses_fma(conv, bv)))
        lo, hi, ratio = yield from kl_range_steps(bv, inp.min, inp.max, spec.element, int(r.bins))
        return lo.astype(dt), hi.astype(dt), ratio

    @property
    def label(self) -> str:
        return {"affine_float": "affine (float offset)"}.get(self.mapping, self.mapping)


def uses_fma(conv: Convention, bv: BlockView) -> bool:
    """torch's per-tensor kernel fuses x*inv + zp (fbgemm AVX2); its per-channel kernel does not."""
    return conv.fma_per_tensor and isinstance(bv.granularity, PerTensor)


# --- float elements: absmax ----------------------------------------------------------------------------
ABSMAX_STORAGE = ("fp32", "fp16", "bf16", "e4m3")


@dataclass(frozen=True)
class AbsMax(ScaleRule):
    """``scale = amax / element max`` per block, float32; stored as ``QuantSpec.scale_dtype``.

    Arithmetic (float32): ``s = amax / max_finite`` (NF4: ``/ 1.0``, i.e. the absmax itself), rounded to
    its storage format (fp16 / bf16 round to nearest even, E4M3 saturating RNE; fp32 kept), and the
    element encoder gets ``x / s`` (convention ``divide``) or ``x * (1 / s)`` (``reciprocal``, the
    reciprocal rounded to float32 once); ``x_hat = value(q) * s``. An all-zero block has ``s = 1`` under
    ``divide`` and ``s = 0``, reciprocal 0, under ``reciprocal`` (bitsandbytes stores absmax 0); either way
    its codes are those of 0 and ``x_hat = 0``. A block with data whose float32 ``s`` is 0 (amax below
    ~6e-43 for E4M3) or whose reciprocal overflows is refused (its codes would be NaN / inf).

    ``double_quant``: quantize the scales again in runs of that many consecutive blocks (storage order),
    torchao's ``NF4Tensor.double_quantize_scalers`` (see :func:`double_quantize`; QLoRA uses 256); the
    scales are then stored as int8 codes (``scale_dtype="int8"``) plus one float32 factor per run and one
    float32 mean. The elements are still encoded with the exact ``s``, as bitsandbytes and torchao do;
    ``x_hat`` uses the double-quantized scale.
    """

    double_quant: int | None = None

    conventions: ClassVar[tuple[str, ...]] = ("divide", "reciprocal")
    scale_dtypes: ClassVar[tuple[str, ...]] = ABSMAX_STORAGE

    def __post_init__(self) -> None:
        dq = self.double_quant
        if dq is not None and (isinstance(dq, bool) or not isinstance(dq, (int, np.integer)) or dq < 1):
            raise ValueError(f"double_quant is the number of scales per run (a positive integer), got {dq!r}")
        if dq is not None:
            object.__setattr__(self, "double_quant", int(dq))

    @property
    def allowed_scale_dtypes(self) -> tuple[str, ...]:
        return ("int8",) if self.double_quant else ABSMAX_STORAGE

    def check(self, element: Element, granularity: Granularity) -> None:
        _require_float("AbsMax", element)
        if isinstance(element, ff.FloatFormat) and not element.signed:
            raise ValueError(f"{element.name} is unsigned (a scale format): it cannot be an element")

    def metadata_bits(self, n_blocks: int, scale_dtype: str, zero_point_dtype: str) -> int:
        bits = super().metadata_bits(n_blocks, scale_dtype, zero_point_dtype)
        if self.double_quant:
            bits += 32 * -(-n_blocks // self.double_quant) + 32
        return bits

    def block_scales(self, inp: ScaleInputs, spec: "QuantSpec") -> BlockScales:
        amax = inp.amax()
        reciprocal = spec.convention == "reciprocal"
        storage = "fp32" if self.double_quant else spec.scale_dtype
        s, codes, op_scale = absmax_scales(amax, spec.element, storage, reciprocal)
        out = dict(encode_op="multiply" if reciprocal else "divide", encode_scale=op_scale, codes=codes)
        if self.double_quant:
            order = inp.storage_order()
            q, deq, factors, mean = double_quantize(s[order], self.double_quant)
            dq_codes, dq_scale = np.empty_like(q), np.empty_like(deq)
            dq_codes[order], dq_scale[order] = q, deq
            lo, hi = _float_range(dq_scale, spec.element)
            return BlockScales(dq_scale, _no_zero_point(s.size), lo, hi, **{**out, "codes": dq_codes},
                               block_scale=dq_scale, absmax=s, dq_factors=factors, dq_mean=float(mean))
        lo, hi = _float_range(s, spec.element)
        return BlockScales(s, _no_zero_point(s.size), lo, hi, **out)

    @property
    def label(self) -> str:
        return "absmax" + (f", double-quantized in runs of {self.double_quant}" if self.double_quant else "")


def absmax_scales(amax: np.ndarray, element: Element, storage: str, reciprocal: bool):
    """-> ``(scale, stored codes or None, encoder factor)``, float32 (see :class:`AbsMax`)."""
    with np.errstate(under="ignore"):
        s = (amax / _F32(element.max_finite)).astype(_F32)
    if reciprocal:
        s = np.where(amax > 0, s, _F32(0)).astype(_F32)
    else:
        s = np.where(amax == 0, _F32(1), s).astype(_F32)
    codes = None
    if storage == "e4m3":
        codes = ff.encode(s, ff.E4M3FN)
        s = ff.decode(codes, ff.E4M3FN)
    else:
        s = store_scale(s, storage)
    if not reciprocal:
        return s, codes, s
    with np.errstate(divide="ignore", over="ignore"):  # 1 / s beyond float32: refused by check_encoder_scale
        op = np.where(s > 0, _F32(1) / np.where(s > 0, s, _F32(1)), _F32(0)).astype(_F32)
    return s, codes, op


def double_quantize(absmax: np.ndarray, dq_block: int):
    """torchao NF4Tensor.double_quantize_scalers (0.18), float32 arithmetic:

        mean = mean(absmax);  c = absmax - mean
        per run of ``dq_block`` consecutive scales: f = 256 / (2 * amax(|c|))  (amax 0 -> f = 1)
        q = clamp(round_half_even(c * f), -128, 127) as int8;   scale_hat = q / f + mean

    The mean is float32(sum in float64 / n); torch sums in float32 in its own order, so the mean can
    differ from torch's in the last bit unless the sum is exact. A last shorter run keeps its own f.
    Returns ``(q int8, scale_hat float32, f per run, mean)``; a run whose f is not a finite nonzero
    float32 is refused (torchao would give NaN scales).
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
        raise ValueError(f"double quantization: scale run {k} (blocks {k * dq_block}..{min(n, (k + 1) * dq_block) - 1}): "
                         f"its factor 256 / (2 * {float(ramax[k]):.3g}) is not a finite nonzero float32 (torchao's "
                         f"double quantization gives NaN scales here); use absmax scales without double quantization")
    q = np.clip(np.rint(runs * f[:, None]), -128, 127).astype(np.int8)
    deq = ((q.astype(_F32) / f[:, None]) + mean).astype(_F32).reshape(-1)[:n]
    return q.reshape(-1)[:n], deq, f, mean


# --- float elements: ONNX Runtime's std rule -------------------------------------------------------------
@dataclass(frozen=True)
class StdScale(ScaleRule):
    """ONNX Runtime 1.32's quantization tool for float8 weights (``compute_data_quant_params`` ->
    ``quant_utils.compute_scale_zp_float8``): ``scale = float32(std(x) / std_f8)``, ``std`` numpy's float32
    ``np.std`` of the block (the tensor, or one channel) in canonical order (the input's order when the
    channel axis is 0, as ORT flattens it) and ``std_f8`` the float32 ``np.std`` of every finite E4M3FN
    value in code order; elements E4M3FN(x / scale), saturating (``QuantizeLinear`` with ``saturate=1``).
    A constant block has std 0 and is refused. E4M3FN elements, per-tensor or per-channel only."""

    conventions: ClassVar[tuple[str, ...]] = ("divide",)
    scale_dtypes: ClassVar[tuple[str, ...]] = ("fp32",)

    def check(self, element: Element, granularity: Granularity) -> None:
        if element != ff.E4M3FN:
            raise ValueError(f"StdScale is ONNX Runtime's float8 E4M3FN rule; the element must be fp8_e4m3fn, not "
                             f"{getattr(element, 'label', element)!r}")
        if not isinstance(granularity, (PerTensor, PerChannel)):
            raise ValueError(f"StdScale (ONNX Runtime) is per-tensor or per-channel, not {granularity.label}")

    def block_scales(self, inp: ScaleInputs, spec: "QuantSpec") -> BlockScales:
        values = ff.decode(np.arange(256), ff.E4M3FN)
        std_f8 = np.std(values[np.isfinite(values)].astype(_F32))
        with np.errstate(over="ignore", invalid="ignore"):  # a std beyond float32 is refused by the caller
            s = (np.std(inp.blocks.values, axis=1) / std_f8).astype(_F32)
        s = np.where(np.isnan(s), _F32(np.inf), s)
        lo, hi = _float_range(s, spec.element)
        return BlockScales(s, _no_zero_point(s.size), lo, hi, encode_op="divide", encode_scale=s)

    @property
    def label(self) -> str:
        return "onnx std"


# --- float elements: E8M0 powers of two (MX) ---------------------------------------------------------------
POW2_MODES = ("floor", "ceil", "even", "rceil")


@dataclass(frozen=True)
class PowerOfTwo(ScaleRule):
    """E8M0 block scales ``X = 2**e`` (OCP MX v1.0 section 6.3 and torchao 0.18's ``ScaleCalculationMode``).

    With ``E = floor(log2(amax))`` (the float32 exponent field of amax minus 127; a zero or subnormal
    amax gives -127 or less) and ``emax`` the element's largest binade (E4M3 8, E5M2 15, E2M3 2, E3M2 4,
    E2M1 2):

    ``floor``  ``e = E - emax`` (the spec's rule: the largest elements may saturate);
    ``ceil``   ``e = E + (amax not a power of two) - emax``;
    ``even``   ``E`` of amax rounded to ``m`` mantissa bits first (add ``2**(22 - m)`` to its bit pattern,
               clear the mantissa): ``e = E' - emax``;
    ``rceil``  ``e = ceil(log2(amax / max_finite))`` with ``amax / max_finite`` rounded to float32 (NVIDIA
               cuBLAS "UE8M0" scale, the MXFP8 training recipe): nothing saturates. The ceil is exact (torchao's
               eager fallback takes a float32 ``log2``, which rounds to the integer just above a power of
               two; see tests/test_compositions.py).

    ``e`` is clamped to [-127, 127], stored as the E8M0 code ``e + 127``. Elements: ``quantize(x / X)``,
    saturating; ``x_hat = value * X``, one float32 multiply. Convention ``ocp``: ``x / X`` is computed as the
    exact ``x * 2**-e`` (a float32 product; below 2**-126 it rounds, but such values encode to zero in every
    element format). Convention ``torchao`` (``to_mx``): floor / ceil / even divide by ``max(X, 2**-126)``
    (a Triton workaround: a block with code 0 is divided by 2**-126, and decodes to x / 2); rceil multiplies
    by ``2**(127 - code)``, or by 1 for code 0 (TransformerEngine's reciprocal). A NaN or inf amax (allowed
    non-finite input) gives the NaN scale code 0xFF: the whole block decodes to NaN (OCP MX 6.3).
    """

    mode: str = "floor"

    conventions: ClassVar[tuple[str, ...]] = ("ocp", "torchao")
    scale_dtypes: ClassVar[tuple[str, ...]] = ("e8m0",)

    def __post_init__(self) -> None:
        if self.mode not in POW2_MODES:
            raise ValueError(f"unknown power-of-two scale mode {self.mode!r}; expected one of {POW2_MODES}")

    def check(self, element: Element, granularity: Granularity) -> None:
        if isinstance(element, IntFormat):
            raise ValueError("E8M0 (power-of-two) scales are modelled for float elements only (OCP MXINT8, an "
                             "int8 element with an implicit 2**-6, is not implemented); integer elements take "
                             "IntScale")
        _require_signed_float("PowerOfTwo", element)

    def block_scales(self, inp: ScaleInputs, spec: "QuantSpec") -> BlockScales:
        amax = inp.amax()
        codes, nan_blocks = e8m0_codes(amax, spec.element, self.mode)
        X = ff.decode(codes, ff.E8M0)                                   # exact powers of two, float32
        e = codes.astype(np.int32) - 127
        if spec.convention == "torchao" and self.mode == "rceil":
            inv = np.where(codes == 0, 1.0, np.ldexp(1.0, -e))
        elif spec.convention == "torchao":
            inv = np.ldexp(1.0, -np.maximum(e, -126))
        else:
            inv = np.ldexp(1.0, -e)
        inv = np.where(nan_blocks, 1.0, inv).astype(_F32)              # exact: 2**-127 .. 2**127
        lo, hi = _float_range(X, spec.element)
        return BlockScales(X, _no_zero_point(X.size), lo, hi, encode_op="multiply", encode_scale=inv, codes=codes,
                           nan_blocks=nan_blocks if nan_blocks.any() else None)

    @property
    def label(self) -> str:
        return f"e8m0 ({self.mode})"


def e8m0_codes(amax: np.ndarray, element: ff.FloatFormat, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """E8M0 scale codes per block from the float32 ``amax`` (see :class:`PowerOfTwo`), and the mask of
    blocks whose amax is NaN or inf (code 0xFF)."""
    bits = np.asarray(amax, _F32).view(np.uint32)
    nonfinite = ~np.isfinite(amax)
    if mode == "rceil":
        with np.errstate(over="ignore", under="ignore"):
            d = (amax / _F32(element.max_finite)).astype(_F32)
        e = _ceil_log2(d)
    else:
        if mode == "even":
            m = element.man_bits
            bits = ((bits + np.uint32(1 << (23 - m - 1))) & np.uint32(0x1FF << 23)).astype(np.uint32)
        field = ((bits >> np.uint32(23)) & np.uint32(0xFF)).astype(np.int32)
        e = field - 127
        if mode == "ceil":
            e = e + ((bits & np.uint32(0x7FFFFF)) != 0)
        e = e - element.emax
    codes = (np.clip(e, -127, 127) + 127).astype(np.uint8)
    return np.where(nonfinite, np.uint8(0xFF), codes), nonfinite


def _ceil_log2(d: np.ndarray) -> np.ndarray:
    """Exact ``ceil(log2(d))`` of non-negative float32 values as int32 (-150 for 0; subnormals exact)."""
    mant, exp = np.frexp(d.astype(np.float64))        # d = mant * 2**exp, mant in [0.5, 1)
    return np.where(d > 0, exp - (mant == 0.5), -150).astype(np.int32)


# --- float elements: NVFP4 two-level ----------------------------------------------------------------------
@dataclass(frozen=True)
class TwoLevel(ScaleRule):
    """Two-level scaling (NVFP4): an E4M3 scale per block times one float32 scale per tensor, all float32:

        s_t   = amax(|x| over the tensor) / (max_elem * 448)                 (6 * 448 = 2688 for E2M1)
        s_b   = E4M3( clamp((amax_block / max_elem) / s_t, 2**-6, 448) )
        q     = elem( x / (s_b * s_t) )            convention "modelopt"  (saturating, RNE)
                elem( x * ((1 / s_t) / s_b) )      convention "torchao"
        x_hat = q * f32(s_b * s_t)

    Source: NVIDIA TensorRT-Model-Optimizer NVFP4QTensor (weights_scaling_factor_2 = amax / (6 * 448);
    per-block scale = block_amax / (6 * weights_scaling_factor_2) cast to float8_e4m3fn; quantize
    x / (per_block_scale * weights_scaling_factor_2)); cuBLAS documents the same 16-element E4M3 block
    scale times a float32 tensor scale. The clamp of the block scale to [2**-6 (E4M3 smallest normal),
    448] before the E4M3 cast is torchao's nvfp4_quantize (0.18), which is also where convention
    "torchao" comes from (reciprocal multiply, as its Triton kernel). An all-zero tensor uses s_t = 1.
    """

    conventions: ClassVar[tuple[str, ...]] = ("modelopt", "torchao")
    scale_dtypes: ClassVar[tuple[str, ...]] = ("e4m3",)

    def check(self, element: Element, granularity: Granularity) -> None:
        _require_signed_float("TwoLevel", element)
        if isinstance(granularity, PerTensor):
            raise ValueError("TwoLevel puts block scales under one tensor scale: a per-tensor granularity leaves "
                             "one block (use AbsMax)")

    def metadata_bits(self, n_blocks: int, scale_dtype: str, zero_point_dtype: str) -> int:
        return super().metadata_bits(n_blocks, scale_dtype, zero_point_dtype) + 32   # the tensor scale

    @property
    def needs_tensor_range(self) -> bool:
        return True

    def block_scales(self, inp: ScaleInputs, spec: "QuantSpec") -> BlockScales:
        amax_b = inp.amax()
        emax = _F32(spec.element.max_finite)
        amax_t = inp.tensor_amax(amax_b)
        s_t = _F32(amax_t / (emax * _F32(448.0))) if amax_t > 0 else _F32(1.0)
        if s_t == 0:
            raise ValueError(f"two-level scales: the tensor scale amax / {float(emax * 448):g} underflows float32 "
                             f"(tensor amax {float(amax_t):.3g})")
        with np.errstate(over="ignore"):  # a subnormal s_t: the clamp to 448 below handles the overflow
            sb = (amax_b / emax) / s_t
        sb = np.clip(sb, _F32(ff.E4M3FN.min_positive * 8), _F32(448.0)).astype(_F32)   # 2**-9 * 8 = 2**-6
        codes = ff.encode(sb, ff.E4M3FN)
        s_b = ff.decode(codes, ff.E4M3FN)
        denom = (s_b * s_t).astype(_F32)
        if spec.convention == "modelopt":
            op, op_scale = "divide", denom
        else:
            with np.errstate(over="ignore"):  # 1 / s_t beyond float32: refused by check_encoder_scale
                op, op_scale = "multiply", ((_F32(1.0) / s_t) / s_b).astype(_F32)
        lo, hi = _float_range(denom, spec.element)
        return BlockScales(denom, _no_zero_point(denom.size), lo, hi, encode_op=op, encode_scale=op_scale,
                           codes=codes, block_scale=s_b, tensor_scale=float(s_t))

    @property
    def label(self) -> str:
        return "e4m3 x fp32 two-level"


# --- GGUF ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GGUFScales(ScaleRule):
    """The scale search of a GGUF type's registered :mod:`quantcore.ggml` class (quantize exactly as
    llama.cpp; see :func:`quantcore.analysis.gguf_pass`). Only with a :class:`GGUFType` element."""

    conventions: ClassVar[tuple[str, ...]] = ("gguf",)
    scale_dtypes: ClassVar[tuple[str, ...]] = ("fp16", "e8m0")
    zero_point_dtypes: ClassVar[tuple[str, ...]] = ("none", "fp16")
    roundings: ClassVar[tuple[str | None, ...]] = (None,)

    def check(self, element: Element, granularity: Granularity) -> None:
        if not isinstance(element, GGUFType):
            raise ValueError("GGUFScales belongs to GGUF block types (GGUFType elements) only")
        want = PerGroup(element.type.block_size, -1)
        if granularity != want:
            raise ValueError(f"{element.label} fixes its blocks: {want.label} along the last axis, not "
                             f"{granularity.label}")

    @property
    def label(self) -> str:
        return "gguf"


ScaleRuleT = Union[IntScale, AbsMax, StdScale, PowerOfTwo, TwoLevel, GGUFScales]
SCALE_RULES = (IntScale, AbsMax, StdScale, PowerOfTwo, TwoLevel, GGUFScales)


def check_encoder_scale(bs: BlockScales, amax: np.ndarray, bv: BlockView, what: str, storage: str = "fp32") -> None:
    """A block with data whose float32 encoder factor is 0 (divide) or not finite would turn its elements
    into inf or NaN (x / 0, x * inf, 0 * inf): refuse it, naming the block. Happens at the ends of float32
    (an amax near its bottom: E4M3 amax / 448 underflows below ~6e-43, 1 / absmax overflows below 2**-128;
    a constant block under the std rule; a float32 std that overflows) and when a scale ``storage`` format
    rounds a small scale to 0 (an absmax scale stored as fp16, bf16 or E4M3)."""
    op_scale = bs.encode_scale
    bad = ~np.isfinite(op_scale) | ((op_scale == 0) & (bs.encode_op == "divide"))
    bad &= amax > 0
    if bs.nan_blocks is not None:
        bad &= ~bs.nan_blocks
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        where = "the tensor" if isinstance(bv.granularity, PerTensor) else (
            f"channel {i}" if isinstance(bv.granularity, PerChannel) else f"block {i}")
        name = "scale" if bs.encode_op == "divide" else "reciprocal scale"
        std = what == "onnx std"
        if op_scale[i] == 0 and storage not in ("fp32", "e8m0", "int8") and not std:
            why = f"the scale underflows to 0 in its {storage} storage; store scales as fp32"
        elif op_scale[i] == 0:
            why = "a constant has no spread" if std else "values this small cannot be scaled in float32"
        else:
            why = "its float32 standard deviation overflows" if std else "values this small cannot be scaled in float32"
        raise ValueError(f"{where}: its {name} is {float(op_scale[i]):g} in float32 (amax {float(amax[i]):.3g}): {why}")
