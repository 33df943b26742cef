"""Element formats: what one quantized value can be.

A scheme's element is one of

* :class:`quantcore.formats.IntFormat` -- integer codes ``[qmin, qmax]`` (int N signed / unsigned, narrow,
  ``reduce_range``, custom ranges);
* :class:`quantcore.floatfmt.FloatFormat` -- a low-precision float: FP8 E4M3FN / E5M2, FP6 E2M3 / E3M2,
  FP4 E2M1 (``floatfmt.E4M3FN`` ...), encoded by rounding to nearest, ties to even, saturating;
* :class:`quantcore.floatfmt.Codebook` -- a lookup table (the NF4 codebook, or any sorted table with its
  decision thresholds);
* :class:`GGUFType` -- a llama.cpp block type (Q4_0 ... Q6_K, IQ4_NL, TQ1_0, MXFP4). GGUF types do not
  decompose into element x scale: each is its registered :mod:`quantcore.ggml` class (gguf-py's pattern),
  which fixes its block size, codes, scales and search. In a :class:`quantcore.spec.QuantSpec` it comes with
  the granularity ``PerGroup(block_size, -1)`` and the scale rule :class:`quantcore.scales.GGUFScales`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from .floatfmt import Codebook, FloatFormat
from .formats import IntFormat
from .ggml import GGMLType, get_ggml_type


@dataclass(frozen=True)
class GGUFType:
    """The llama.cpp block type called ``name`` (case-insensitive, stored lower-case: ``"q4_k"``)."""

    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise ValueError(f"GGUF type name must be a string, got {self.name!r}")
        object.__setattr__(self, "name", get_ggml_type(self.name).name.lower())  # validates

    @property
    def type(self) -> type[GGMLType]:
        """The registered :mod:`quantcore.ggml` class."""
        return get_ggml_type(self.name)

    @property
    def bits(self) -> float:
        """Bits per element spent on codes (``GGMLType.code_bits``: 4 for Q4_0, 1.625 for TQ1_0)."""
        return self.type.code_bits()

    @property
    def label(self) -> str:
        return self.type.name


Element = Union[IntFormat, FloatFormat, Codebook, GGUFType]
FLOAT_ELEMENTS = (FloatFormat, Codebook)


def is_float_element(e: object) -> bool:
    """True for a float format or a codebook (elements scaled by an absmax / power-of-two / two-level rule)."""
    return isinstance(e, FLOAT_ELEMENTS)
