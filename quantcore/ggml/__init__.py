"""GGML block types (llama.cpp's GGUF quantization formats), one registered class per type.

See :mod:`quantcore.ggml.base` for the class contract and :mod:`quantcore.ggml.cmath` for the C
arithmetic every quantizer reproduces. Importing this package registers every type.
"""
from . import codebook, kquants, legacy  # noqa: F401  (registers the types)
from .base import GGML_TYPES, GGML_TYPES_BY_ID, GGMLType, get_ggml_type

__all__ = ["GGML_TYPES", "GGML_TYPES_BY_ID", "GGMLType", "get_ggml_type"]
