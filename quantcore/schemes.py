"""Scheme names, parsed in one place (CLI, scan, plan and app share them).

A scheme name is one of:

* a named scheme of :data:`quantcore.presets.PRESETS` (case-insensitive): every GGUF block type (``q8_0 q4_0
  ... q6_k iq4_nl mxfp4``), every float scheme (``fp8_e4m3 ... mxfp8 mxfp6_e2m3 mxfp4_e2m1 nvfp4 nf4 nf4_dq``)
  and the MatMulNBits integer schemes;
* plain float storage: ``f16`` (round to nearest even, saturating at +-65504, counted as clipped) and
  ``bf16`` (round to nearest even) -- the "keep it unquantized" choice of a mixed-precision plan;
* a compact integer scheme ``int<bits>[-sym|-asym][-g<size>|-channel|-tensor][-fp16|-bf16|-fp32]``:

  ==============  ==============================================================================
  ``int<bits>``   signed codes, ``bits`` in 2..16 (``int4`` -> [-8, 7])
  ``-sym``        symmetric, ``scale = amax / qmax``, no zero-point (default)
  ``-asym``       affine: ``scale = (max - min) / (qmax - qmin)`` (range widened to include 0),
                  an int8 zero-point per block (int16 above 8 bits)
  ``-g<size>``    one scale per run of ``size`` elements along the last axis (GPTQ/AWQ grouping)
  ``-channel``    one scale per index of axis 0 (per output channel of a ``(out, in)`` weight; default)
  ``-tensor``     one scale for the whole tensor
  ``-fp16``       scales stored (and rounded before quantizing) as fp16 (default); ``-bf16``, ``-fp32``
  ==============  ==============================================================================

  Arithmetic: float32, multiply by the float32 reciprocal of the scale, round half to even (the
  ``torch`` convention of :mod:`quantcore.conventions`) with the ``qmax`` symmetric-scale rule.
  Examples: ``int4-g128`` = ``int4-sym-g128``; ``int8-channel``; ``int4-asym-g32-fp32``.

:func:`parse_scheme` returns a frozen :class:`ScanScheme` with a canonical ``name`` (defaults spelled
out only where they differ: ``int4-g128`` -> ``int4-sym-g128``), the :class:`QuantSpec` (None for
f16/bf16), and the GGML type name when llama.cpp can store the tensor in exactly that scheme.
:func:`scheme_memory` gives the bytes of a tensor of a given shape from the shape alone (equal to
``analyze(x, spec).memory``; tested).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .formats import IntFormat
from .granularity import PerChannel, PerGroup, PerTensor, count_blocks
from .memory import Memory, memory_estimate
from .params import CustomRange, MinMax
from .presets import PRESETS, preset_names
from .scales import AbsMax, IntScale, StdScale
from .spec import QuantSpec

DEFAULT_SCHEMES = ("q8_0", "q4_0", "int4-g128", "nvfp4")
CAST_SCHEMES = {"f16": 16, "bf16": 16}
_INT = re.compile(r"int(?P<bits>\d+)(?:-(?P<map>sym|asym))?(?:-(?P<gran>g\d+|channel|tensor))?"
                  r"(?:-(?P<scale>fp16|bf16|fp32))?")


@dataclass(frozen=True)
class ScanScheme:
    """One named scheme of a scan. ``kind``: "preset" (a GGUF type), "float", "int" or "cast"."""

    name: str
    kind: str
    spec: QuantSpec | None
    ggml_type: str | None

    @property
    def needs_tensor_range(self) -> bool:
        """True when the scale depends on the whole tensor (per-tensor scales, NVFP4's tensor scale): a part
        of the tensor is quantized with the whole tensor's min/max/amax (``analyze(..., tensor_range=...)``)."""
        return self.kind in ("int", "float") and self.spec.needs_tensor_range

    @property
    def splits_on_axis0(self) -> bool:
        """True when runs of axis-0 slices quantize exactly as the whole tensor: every scale block lies inside
        one index of axis 0, and a block's scale depends on nothing but its own elements (and, for
        :attr:`needs_tensor_range` schemes, the whole tensor's min/max/amax). Per-block tiles span rows;
        double-quantized scales, ONNX's std rule and non-min/max ranges of one per-tensor block depend on
        other rows."""
        if self.kind in ("preset", "cast"):
            return True
        spec = self.spec
        g, rule = spec.granularity, spec.scale_rule
        if isinstance(rule, StdScale) and isinstance(g, PerTensor):
            return False
        if isinstance(rule, AbsMax) and rule.double_quant:
            return False
        if isinstance(rule, IntScale) and isinstance(g, PerTensor) and not isinstance(rule.range, (MinMax, CustomRange)):
            return False
        if isinstance(g, PerTensor):
            return True
        if isinstance(g, PerGroup):
            return g.axis == -1
        if isinstance(g, PerChannel):
            return g.axis == 0
        return False  # per-block tiles span several indices of axis 0


def _int_scheme(m: re.Match) -> ScanScheme:
    bits = int(m["bits"])
    fmt = IntFormat(bits)  # validates 2..16
    sym = m["map"] != "asym"
    gran_s = m["gran"] or "channel"
    if gran_s == "channel":
        gran = PerChannel(0)
    elif gran_s == "tensor":
        gran = PerTensor()
    else:
        gran = PerGroup(int(gran_s[1:]), -1)
    scale = m["scale"] or "fp16"
    zp = "none" if sym else ("int8" if bits <= 8 else "int16")
    spec = QuantSpec(element=fmt, granularity=gran, scale_rule=IntScale("symmetric" if sym else "affine",
                                                                        symmetric_scale="qmax"),
                     convention="torch", scale_dtype=scale, zero_point_dtype=zp)
    name = f"int{bits}-{'sym' if sym else 'asym'}-{gran_s}" + ("" if scale == "fp16" else f"-{scale}")
    return ScanScheme(name, "int", spec, None)


def parse_scheme(name: str) -> ScanScheme:
    """The scheme called ``name`` (see the module docstring); ValueError listing the choices otherwise."""
    key = str(name).strip().lower()
    if key in PRESETS:
        spec = PRESETS[key]
        kind = {"gguf": "preset"}.get(spec.kind, spec.kind)
        return ScanScheme(key, kind, spec, spec.element.type.name if spec.kind == "gguf" else None)
    if key in CAST_SCHEMES:
        return ScanScheme(key, "cast", None, key.upper())
    m = _INT.fullmatch(key)
    if m:
        return _int_scheme(m)
    raise ValueError(f"unknown scheme {name!r}: expected a GGUF block format ({', '.join(preset_names('gguf'))}), "
                     f"a float format ({', '.join(preset_names('float'))}), a MatMulNBits scheme, f16, bf16, or "
                     f"int<bits>[-sym|-asym][-g<size>|-channel|-tensor][-fp16|-bf16|-fp32] (e.g. int4-g128)")


def parse_schemes(text: str | None) -> tuple[ScanScheme, ...]:
    """Comma-separated scheme names (default :data:`DEFAULT_SCHEMES`); duplicates are refused."""
    names = DEFAULT_SCHEMES if not text else [t for t in (s.strip() for s in text.split(",")) if t]
    if not names:
        raise ValueError("no scheme given")
    out = tuple(parse_scheme(n) for n in names)
    seen: set[str] = set()
    for s in out:
        if s.name in seen:
            raise ValueError(f"scheme {s.name!r} is given twice")
        seen.add(s.name)
    return out


def scheme_memory(scheme: ScanScheme, shape: tuple[int, ...]) -> Memory:
    """Bytes of a tensor of ``shape`` stored in ``scheme``, from the shape alone (the rules of
    :mod:`quantcore.memory`; :meth:`QuantSpec.memory` with :func:`quantcore.granularity.count_blocks`)."""
    n = math.prod(shape) if shape else 1
    if scheme.kind == "cast":
        return memory_estimate(n, 0, CAST_SCHEMES[scheme.name], "none", "none")
    return scheme.spec.memory(n, count_blocks(scheme.spec.granularity, shape))


__all__ = ["DEFAULT_SCHEMES", "ScanScheme", "parse_scheme", "parse_schemes", "scheme_memory"]
