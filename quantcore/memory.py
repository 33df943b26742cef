"""Memory accounting: packed payload plus quantization metadata, one :class:`Memory` for every scheme.

``payload_bytes = ceil(n_elements * bits / 8)`` (codes bit-packed: 4-bit elements two per byte),
``metadata_bytes = ceil((n_blocks * (scale_bits + zero_point_bits) + extra_bits) / 8)`` (``uint4``/``uint2``
zero-points are packed, as MatMulNBits does; ``extra_bits``: what a scale rule stores besides one scale per
block, e.g. NVFP4's float32 tensor scale, double quantization's factors and mean). Seed 000 stores one fp32
scale and one int32 zero-point per channel (8 bytes); a symmetric scheme needs no zero-point when
``zero_point_dtype='none'``. GGUF types count their exact block bytes (:func:`block_memory`).

``bits_per_weight = 8 * total_bytes / n_elements`` and the ratios ``ratio_fp32 = total_bytes /
(4 * n_elements)``, ``ratio_fp16 = total_bytes / (2 * n_elements)`` mean the same for every scheme: the
stored size as a *fraction* of the same tensor in fp32 / fp16 (0.125 for 4-bit codes: 8 times smaller).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

DTYPE_BITS = {"fp32": 32, "fp16": 16, "bf16": 16, "int32": 32, "int16": 16, "int8": 8, "uint8": 8, "uint4": 4,
              "uint2": 2, "e8m0": 8, "e4m3": 8, "none": 0}


def dtype_bits(name: str) -> int:
    try:
        return DTYPE_BITS[name]
    except KeyError:
        raise ValueError(f"unknown metadata dtype {name!r}; expected one of {', '.join(DTYPE_BITS)}") from None


@dataclass(frozen=True)
class Memory:
    n_elements: int
    n_blocks: int
    bits: float
    payload_bytes: int
    metadata_bytes: int
    total_bytes: int
    bits_per_weight: float
    ratio_fp32: float   # total_bytes / (4 * n_elements): stored size as a fraction of fp32 (0.125 = 8x smaller)
    ratio_fp16: float   # total_bytes / (2 * n_elements)

    def to_dict(self) -> dict:
        return asdict(self)


def block_memory(n_elements: int, n_blocks: int, type_size: int, meta_bytes: int, code_bits: float) -> Memory:
    """Bytes of ``n_blocks`` fixed-size GGML blocks (``type_size`` bytes each, ``meta_bytes`` of them
    scales/mins): exact, so ``bits_per_weight = 8 * type_size / block_size`` when no block is padded."""
    total = n_blocks * type_size
    meta = n_blocks * meta_bytes
    return Memory(n_elements, n_blocks, float(code_bits), total - meta, meta, total, 8.0 * total / n_elements,
                  total / (4.0 * n_elements), total / (2.0 * n_elements))


def memory_estimate(n_elements: int, n_blocks: int, bits: float, scale_dtype: str = "fp32",
                    zero_point_dtype: str = "int32", extra_bits: int = 0) -> Memory:
    """Bytes for ``n_elements`` codes of ``bits`` bits, ``n_blocks`` (scale, zero-point) pairs and
    ``extra_bits`` more metadata bits (module docstring)."""
    payload = -(-int(round(n_elements * bits)) // 8)
    meta = -(-(n_blocks * (dtype_bits(scale_dtype) + dtype_bits(zero_point_dtype)) + extra_bits) // 8)
    total = payload + meta
    return Memory(n_elements, n_blocks, float(bits), payload, meta, total, 8.0 * total / n_elements,
                  total / (4.0 * n_elements), total / (2.0 * n_elements))
