"""GGML block types (llama.cpp's GGUF quantization formats), one registered class per type.

See :mod:`quantcore.ggml.base` for the class contract and :mod:`quantcore.ggml.cmath` for the C
arithmetic every quantizer reproduces. Importing this package registers every type.
"""
from . import codebook, kquants, legacy  # noqa: F401  (importing registers the types)
from .base import GGML_TYPES, GGML_TYPES_BY_ID, GGMLType, get_ggml_type

BLOCK_FORMATS: dict[str, type[GGMLType]] = {t.name.lower(): t for t in sorted(GGML_TYPES.values(),
                                                                              key=lambda t: t.type_id)}

__all__ = ["BLOCK_FORMATS", "GGML_TYPES", "GGML_TYPES_BY_ID", "GGMLType", "get_ggml_type"]
