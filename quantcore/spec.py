"""The full description of one quantization scheme, as a frozen value."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from .conventions import ROUNDINGS, get_convention
from .formats import IntFormat
from .ggml import BLOCK_FORMATS, get_ggml_type
from .granularity import Granularity, PerChannel, PerGroup, PerTensor
from .memory import dtype_bytes
from .microscaling import FloatScheme
from .params import MAPPINGS, SYMMETRIC_SCALES, MinMax, RangeMethod


@dataclass(frozen=True)
class QuantSpec:
    """What to do: format, mapping, granularity, range method, rounding and arithmetic convention.

    ``rounding`` and ``symmetric_scale`` default to the convention's (``None``). ``scale_dtype`` /
    ``zero_point_dtype`` describe how metadata is stored: they count in the memory estimate, and an
    fp16/bf16 scale is also rounded to that precision before quantizing (so codes match what a
    runtime holding that scale would produce). ``preset`` names a GGUF block format (see
    :func:`preset`) and ``float_scheme`` a low-precision float scheme (FP8, MXFP8/4, NVFP4, NF4; see
    :mod:`quantcore.microscaling`); either fixes everything else. ``name`` is the display name of a
    named integer scheme (see ``SCHEME_PRESETS``); it changes nothing but the label.
    """

    fmt: IntFormat = field(default_factory=IntFormat)
    mapping: str = "affine"
    granularity: Granularity = field(default_factory=PerTensor)
    range: RangeMethod = field(default_factory=MinMax)
    rounding: str | None = None
    seed: int = 0
    convention: str = "float64"
    symmetric_scale: str | None = None
    scale_dtype: str = "fp32"
    zero_point_dtype: str = "int32"
    preset: str | None = None
    float_scheme: FloatScheme | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.mapping not in MAPPINGS:
            raise ValueError(f"unknown mapping {self.mapping!r}; expected one of {', '.join(MAPPINGS)}")
        conv = get_convention(self.convention)  # validates the name
        if self.mapping == "affine_float" and conv.qparams_rule != "observer" and self.float_scheme is None:
            raise ValueError(f"the {self.convention} convention has integer zero-points: use mapping affine or "
                             f"symmetric, not affine_float")
        if self.rounding is not None and self.rounding not in ROUNDINGS:
            raise ValueError(f"unknown rounding {self.rounding!r}; expected one of {', '.join(ROUNDINGS)}")
        if self.symmetric_scale is not None and self.symmetric_scale not in SYMMETRIC_SCALES:
            raise ValueError(f"unknown symmetric scale rule {self.symmetric_scale!r}; expected one of {SYMMETRIC_SCALES}")
        dtype_bytes(self.scale_dtype)
        dtype_bytes(self.zero_point_dtype)
        if self.scale_dtype not in ("fp32", "fp16", "bf16"):
            raise ValueError(f"scale dtype must be fp32, fp16 or bf16, got {self.scale_dtype!r}")
        if not isinstance(self.granularity, (PerTensor, PerChannel, PerGroup)):
            raise ValueError(f"unknown granularity {self.granularity!r}")
        if self.preset is not None:
            get_ggml_type(self.preset)

    @property
    def effective_rounding(self) -> str:
        return self.rounding or get_convention(self.convention).rounding

    @property
    def effective_symmetric_scale(self) -> str:
        return self.symmetric_scale or get_convention(self.convention).symmetric_scale

    @property
    def label(self) -> str:
        if self.name is not None:
            return self.name
        if self.preset is not None:
            return get_ggml_type(self.preset).name
        if self.float_scheme is not None:
            return self.float_scheme.label
        mapping = {"affine_float": "affine (float offset)"}.get(self.mapping, self.mapping)
        return f"{self.fmt.label} {mapping} {self.granularity.label}"

    def with_(self, **changes) -> "QuantSpec":
        """A copy with ``changes``; it loses ``name`` (a changed preset is another scheme) unless given."""
        changes.setdefault("name", None)
        return replace(self, **changes)


def _matmulnbits(bits: int, symmetric: bool, block: int) -> QuantSpec:
    """ONNX Runtime's MatMulNBits weights (matmul_nbits_quantizer, MLAS blockwise): unsigned ``bits``-bit
    codes in blocks of ``block`` along the last axis of a (out_features, in_features) weight, i.e. along K of
    ONNX MatMul's (K, N) B; fp32 scales, zero-points packed at ``bits`` bits (asymmetric only)."""
    return QuantSpec(fmt=IntFormat(bits, signed=False), mapping="symmetric" if symmetric else "affine",
                     granularity=PerGroup(block, -1), convention="matmulnbits", scale_dtype="fp32",
                     zero_point_dtype="none" if symmetric else f"uint{bits}",
                     name=f"MatMulNBits {bits}-bit {'sym' if symmetric else 'asym'} g{block}")


# Integer schemes of runtimes, as data: name -> QuantSpec. ORT's quantizer accepts these block sizes only.
SCHEME_PRESETS: dict[str, QuantSpec] = {
    f"onnx_matmulnbits{bits}_{'sym' if sym else 'asym'}_g{block}": _matmulnbits(bits, sym, block)
    for bits in (2, 4, 8) for sym in (True, False) for block in (16, 32, 64, 128, 256)
}


def preset(name: str) -> QuantSpec:
    """A named scheme as a spec: an entry of ``SCHEME_PRESETS``, or a GGUF block type (:mod:`quantcore.ggml`,
    e.g. ``"q4_k"``): blocks of its block size (32 or 256) along the last axis, quantized exactly as llama.cpp
    does; the type fixes everything else.

    For a GGUF type, ``fmt`` only describes the stored codes (their bit width, signed for Q8_0);
    ``scale_dtype`` and ``zero_point_dtype`` name the scale fields (fp16, E8M0 for MXFP4). Memory is the exact
    block bytes. A row whose length is not a multiple of the block size gets a last block padded by repeating
    its last value (llama.cpp itself requires whole blocks); the padding is masked out of every metric.
    """
    key = name.lower()
    if key in SCHEME_PRESETS:
        return SCHEME_PRESETS[key]
    if key not in BLOCK_FORMATS:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(preset_names())}")
    t = get_ggml_type(key)
    affine = t.stores_min()
    bits = max(2, (t.levels() - 1).bit_length())
    fmt = IntFormat(bits, True, narrow=True) if t.qmin < 0 else IntFormat(bits, False)
    return QuantSpec(fmt=fmt, mapping="affine_float" if affine else "symmetric",
                     granularity=PerGroup(t.block_size, -1), convention="gguf",
                     scale_dtype="fp16", zero_point_dtype="fp16" if affine else "none", preset=t.name.lower())


def preset_names() -> list[str]:
    """Every name :func:`preset` accepts: GGUF block types, then the runtime schemes."""
    return list(BLOCK_FORMATS) + list(SCHEME_PRESETS)


FLOAT_SCHEMES = {
    "fp8_e4m3": FloatScheme("fp8_tensor", element="e4m3"),
    "fp8_e5m2": FloatScheme("fp8_tensor", element="e5m2"),
    "fp8_e4m3_channel": FloatScheme("fp8_channel", element="e4m3"),
    "fp8_e4m3_onnx": FloatScheme("fp8_tensor", element="e4m3", scale_rule="onnx_std"),
    "fp8_e4m3_channel_onnx": FloatScheme("fp8_channel", element="e4m3", scale_rule="onnx_std"),
    "mxfp8": FloatScheme("mxfp8_e4m3"),
    "mxfp8_e5m2": FloatScheme("mxfp8_e5m2"),
    "mxfp4": FloatScheme("mxfp4"),
    "nvfp4": FloatScheme("nvfp4"),
    "nf4": FloatScheme("nf4"),
    "nf4_dq": FloatScheme("nf4", double_quant=True),
}


def float_spec(name: str) -> QuantSpec:
    """A named float scheme as a spec (see ``FLOAT_SCHEMES``): blocks along the last axis."""
    try:
        return QuantSpec(float_scheme=FLOAT_SCHEMES[name.lower()], convention="float64")
    except KeyError:
        raise ValueError(f"unknown float format {name!r}; expected one of {', '.join(FLOAT_SCHEMES)}") from None
