"""Named schemes: one table, name -> :class:`quantcore.spec.QuantSpec`, shared by the library
(:func:`preset`), the CLI (``--preset`` / ``--format``), the checkpoint scan (:mod:`quantcore.schemes`) and
the app. Every entry is an ordinary spec (element x granularity x scale rule x convention), so a preset
can be inspected, serialised and changed with ``spec.with_(...)`` like any other scheme.

GGUF block types (every type of :mod:`quantcore.ggml`, by llama.cpp's lower-case name: ``q4_0`` ...
``q6_k``, ``iq4_nl``, ``iq4_xs``, ``tq1_0``, ``tq2_0``, ``mxfp4``): blocks of the type's size along the last
axis, quantized exactly as llama.cpp does. A row whose length is not a multiple of the block size gets a
last block padded by repeating its last value (llama.cpp itself requires whole blocks); the padding is
masked out of every metric. Memory is the exact block bytes.

Float schemes (blocks along the last axis, channels along axis 0; all float32 arithmetic):

==========================  ==========  ==============  =====================================================
name                        element     granularity     scale rule
==========================  ==========  ==============  =====================================================
``fp8_e4m3`` / ``_e5m2``    E4M3 / E5M2 per-tensor      absmax, fp32 (torch / torchao float8)
``fp8_e4m3_channel`` ...    E4M3 / E5M2 per-channel 0   absmax, fp32 (torchao rowwise float8)
``fp8_e4m3_onnx``           E4M3        per-tensor      ONNX Runtime std rule (``..._channel_onnx``: per-channel)
``fp8_e4m3_g128``           E4M3        groups of 128   absmax, fp32 (1 x 128: DeepSeek-V3 activations)
``fp8_e4m3_b128``           E4M3        128 x 128 tiles absmax, fp32 (DeepSeek-V3 weights)
``fp8_e4m3_e8m0_g32``       E4M3        groups of 32    E8M0, ``rceil`` (NVIDIA cuBLAS MXFP8 recipe)
``mxfp8`` / ``mxfp8_e5m2``  E4M3 / E5M2 groups of 32    E8M0, ``floor`` (OCP MX v1.0)
``mxfp6_e2m3`` / ``_e3m2``  E2M3 / E3M2 groups of 32    E8M0, ``floor`` (OCP MX v1.0)
``mxfp4_e2m1``              E2M1        groups of 32    E8M0, ``floor`` (OCP MX v1.0; ``mxfp4`` is the GGUF type)
``nvfp4``                   E2M1        groups of 16    E4M3 x fp32 two-level, ``modelopt``
``fp4_e2m1_tensor``         E2M1        per-tensor      absmax, fp32
``fp4_e2m1_channel``        E2M1        per-channel 0   absmax, fp32
``nf4``                     NF4         groups of 64    absmax, fp32, ``reciprocal`` (bitsandbytes / QLoRA)
``nf4_dq``                  NF4         groups of 64    absmax double-quantized in runs of 256 (torchao)
==========================  ==========  ==============  =====================================================

Integer schemes of runtimes: ``onnx_matmulnbits{2,4,8}_{sym,asym}_g{16,32,64,128,256}`` (ONNX Runtime's
MatMulNBits weights; see :func:`_matmulnbits`).
"""
from __future__ import annotations

from . import floatfmt as ff
from .elements import GGUFType
from .formats import IntFormat
from .ggml import BLOCK_FORMATS
from .granularity import PerBlock, PerChannel, PerGroup, PerTensor
from .scales import AbsMax, IntScale, PowerOfTwo, StdScale, TwoLevel
from .spec import QuantSpec


def _matmulnbits(bits: int, symmetric: bool, block: int) -> QuantSpec:
    """ONNX Runtime's MatMulNBits weights (matmul_nbits_quantizer, MLAS blockwise): unsigned ``bits``-bit
    codes in blocks of ``block`` along the last axis of a (out_features, in_features) weight, i.e. along K of
    ONNX MatMul's (K, N) B; fp32 scales, zero-points packed at ``bits`` bits (asymmetric only)."""
    return QuantSpec(element=IntFormat(bits, signed=False), granularity=PerGroup(block, -1),
                     scale_rule=IntScale("symmetric" if symmetric else "affine"), convention="matmulnbits",
                     scale_dtype="fp32", zero_point_dtype="none" if symmetric else f"uint{bits}",
                     name=f"MatMulNBits {bits}-bit {'sym' if symmetric else 'asym'} g{block}")


def _float(name: str, element: ff.Format, granularity, rule=None, **kw) -> QuantSpec:
    return QuantSpec(element=element, granularity=granularity, scale_rule=rule or AbsMax(), name=name, **kw)


_FLOAT = [
    _float("fp8_e4m3", ff.E4M3FN, PerTensor()),
    _float("fp8_e5m2", ff.E5M2, PerTensor()),
    _float("fp8_e4m3_channel", ff.E4M3FN, PerChannel(0)),
    _float("fp8_e5m2_channel", ff.E5M2, PerChannel(0)),
    _float("fp8_e4m3_onnx", ff.E4M3FN, PerTensor(), StdScale()),
    _float("fp8_e4m3_channel_onnx", ff.E4M3FN, PerChannel(0), StdScale()),
    _float("fp8_e4m3_g128", ff.E4M3FN, PerGroup(128, -1)),
    _float("fp8_e4m3_b128", ff.E4M3FN, PerBlock((128, 128), (0, -1))),
    _float("fp8_e4m3_e8m0_g32", ff.E4M3FN, PerGroup(32, -1), PowerOfTwo("rceil")),
    _float("mxfp8", ff.E4M3FN, PerGroup(32, -1), PowerOfTwo("floor")),
    _float("mxfp8_e5m2", ff.E5M2, PerGroup(32, -1), PowerOfTwo("floor")),
    _float("mxfp6_e2m3", ff.E2M3, PerGroup(32, -1), PowerOfTwo("floor")),
    _float("mxfp6_e3m2", ff.E3M2, PerGroup(32, -1), PowerOfTwo("floor")),
    _float("mxfp4_e2m1", ff.E2M1, PerGroup(32, -1), PowerOfTwo("floor")),
    _float("nvfp4", ff.E2M1, PerGroup(16, -1), TwoLevel(), convention="modelopt"),
    _float("fp4_e2m1_tensor", ff.E2M1, PerTensor()),
    _float("fp4_e2m1_channel", ff.E2M1, PerChannel(0)),
    _float("nf4", ff.NF4, PerGroup(64, -1), convention="reciprocal"),
    _float("nf4_dq", ff.NF4, PerGroup(64, -1), AbsMax(double_quant=256), convention="reciprocal"),
]

# The one table of named schemes. GGUF types first (by type id), then float schemes, then runtime integer
# schemes; names are unique (llama.cpp's "mxfp4" is the GGUF type; OCP MXFP4 is "mxfp4_e2m1").
PRESETS: dict[str, QuantSpec] = {
    **{name: QuantSpec(element=GGUFType(name)) for name in BLOCK_FORMATS},
    **{s.name: s for s in _FLOAT},
    **{f"onnx_matmulnbits{bits}_{'sym' if sym else 'asym'}_g{block}": _matmulnbits(bits, sym, block)
       for bits in (2, 4, 8) for sym in (True, False) for block in (16, 32, 64, 128, 256)},
}
KINDS = ("gguf", "float", "int")


def preset(name: str) -> QuantSpec:
    """The named scheme (see the module docstring; case-insensitive)."""
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}") from None


def preset_names(kind: str | None = None) -> list[str]:
    """Every preset name, or those of one ``kind``: ``"gguf"`` (GGUF block types), ``"float"`` (float and
    codebook elements), ``"int"`` (integer runtime schemes)."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown preset kind {kind!r}; expected one of {', '.join(KINDS)}")
    return [n for n, s in PRESETS.items() if kind is None or s.kind == kind]
