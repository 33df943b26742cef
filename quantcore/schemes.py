"""Scheme names, parsed in one place (CLI, scan, plan and app share them).

A scheme name is one of:

* a GGUF block format: ``q8_0 q4_0 q4_1 q5_0 q5_1`` (:func:`quantcore.spec.preset`; case-insensitive);
* a float scheme: ``fp8_e4m3 fp8_e5m2 fp8_e4m3_channel mxfp8 mxfp8_e5m2 mxfp4 nvfp4 nf4 nf4_dq``
  (:data:`quantcore.spec.FLOAT_SCHEMES`);
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

from .ggml import BLOCK_FORMATS
from .memory import block_memory
from .formats import IntFormat
from .granularity import PerChannel, PerGroup, PerTensor
from .memory import Memory, memory_estimate
from .microscaling import TENSOR_SCALED
from .spec import FLOAT_SCHEMES, QuantSpec, float_spec, preset

DEFAULT_SCHEMES = ("q8_0", "q4_0", "int4-g128", "nvfp4")
CAST_SCHEMES = {"f16": 16, "bf16": 16}
_INT = re.compile(r"int(?P<bits>\d+)(?:-(?P<map>sym|asym))?(?:-(?P<gran>g\d+|channel|tensor))?"
                  r"(?:-(?P<scale>fp16|bf16|fp32))?")


@dataclass(frozen=True)
class ScanScheme:
    """One named scheme of a scan. ``kind``: "preset", "float", "int" or "cast"."""

    name: str
    kind: str
    spec: QuantSpec | None
    ggml_type: str | None

    @property
    def needs_tensor_range(self) -> bool:
        """True when the scale depends on the whole tensor (per-tensor int, fp8 per-tensor, NVFP4's
        tensor scale): a part of the tensor is quantized with the whole tensor's min/max/amax."""
        if self.kind == "int":
            return isinstance(self.spec.granularity, PerTensor)
        return self.kind == "float" and self.spec.float_scheme.kind in TENSOR_SCALED

    @property
    def splits_on_axis0(self) -> bool:
        """True when every scale block lies inside one index of axis 0 (given the tensor range for
        :attr:`needs_tensor_range` schemes), so runs of axis-0 slices quantize exactly as the whole."""
        if self.kind in ("preset", "cast"):
            return True
        if self.kind == "int":
            g = self.spec.granularity
            return isinstance(g, PerTensor) or (isinstance(g, PerGroup) and g.axis == -1) or \
                (isinstance(g, PerChannel) and g.axis == 0)
        fs = self.spec.float_scheme
        if fs.kind in ("fp8_tensor", "nvfp4") or fs.kind.startswith("mx") or fs.kind == "nf4":
            return fs.block_axis in (None, -1) and not fs.double_quant
        return fs.kind == "fp8_channel" and fs.block_axis == 0


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
    spec = QuantSpec(fmt=fmt, mapping="symmetric" if sym else "affine", granularity=gran, convention="torch",
                     symmetric_scale="qmax", scale_dtype=scale, zero_point_dtype=zp)
    name = f"int{bits}-{'sym' if sym else 'asym'}-{gran_s}" + ("" if scale == "fp16" else f"-{scale}")
    return ScanScheme(name, "int", spec, None)


def parse_scheme(name: str) -> ScanScheme:
    """The scheme called ``name`` (see the module docstring); ValueError listing the choices otherwise."""
    key = str(name).strip().lower()
    if key in BLOCK_FORMATS:
        return ScanScheme(key, "preset", preset(key), BLOCK_FORMATS[key].name)
    if key in FLOAT_SCHEMES:
        return ScanScheme(key, "float", float_spec(key), None)
    if key in CAST_SCHEMES:
        return ScanScheme(key, "cast", None, key.upper())
    m = _INT.fullmatch(key)
    if m:
        return _int_scheme(m)
    raise ValueError(f"unknown scheme {name!r}: expected a GGUF block format ({', '.join(BLOCK_FORMATS)}), "
                     f"a float format ({', '.join(FLOAT_SCHEMES)}), f16, bf16, or "
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


def _rows_and_len(shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, row length) of the 2-D view with the last axis kept: blocks along the last axis."""
    if len(shape) == 0:
        return 1, 1
    return math.prod(shape[:-1]), shape[-1]


def scheme_memory(scheme: ScanScheme, shape: tuple[int, ...]) -> Memory:
    """Bytes of a tensor of ``shape`` stored in ``scheme``, from the shape alone (the rules of
    :mod:`quantcore.memory` and :mod:`quantcore.microscaling`)."""
    n = math.prod(shape) if shape else 1
    rows, k = _rows_and_len(shape)
    if scheme.kind == "cast":
        return memory_estimate(n, 0, CAST_SCHEMES[scheme.name], "none", "none")
    if scheme.kind == "preset":
        t = BLOCK_FORMATS[scheme.name]
        return block_memory(n, rows * -(-k // t.block_size), t.type_size, t.meta_bytes, t.code_bits())
    spec = scheme.spec
    if scheme.kind == "int":
        g = spec.granularity
        if isinstance(g, PerTensor):
            blocks = 1
        elif isinstance(g, PerChannel):
            blocks = shape[g.axis] if len(shape) > 1 else 1
        else:
            blocks = rows * -(-k // g.size)
        return memory_estimate(n, blocks, spec.fmt.bits, spec.scale_dtype, spec.zero_point_dtype)
    fs = spec.float_scheme
    bits = fs.element_format.bits
    if fs.kind == "fp8_tensor":
        nb, meta = 1, 32
    elif fs.kind == "fp8_channel":
        nb = shape[fs.block_axis] if len(shape) > 1 else shape[0] if shape else 1
        meta = 32 * nb
    else:
        nb = rows * -(-k // fs.block)
        if fs.kind.startswith("mx"):
            meta = 8 * nb
        elif fs.kind == "nvfp4":
            meta = 8 * nb + 32
        elif fs.double_quant:
            meta = 8 * nb + 32 * -(-nb // fs.dq_block_size) + 32
        else:
            meta = 32 * nb
    payload, metadata = (n * bits + 7) // 8, (meta + 7) // 8
    total = payload + metadata
    return Memory(n, nb, float(bits), payload, metadata, total, (n * bits + meta) / n, total / (4.0 * n),
                  total / (2.0 * n))


__all__ = ["DEFAULT_SCHEMES", "ScanScheme", "parse_scheme", "parse_schemes", "scheme_memory"]
