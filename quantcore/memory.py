"""Memory accounting: packed payload plus quantization metadata.

``payload_bytes = ceil(n_elements * bits / 8)`` (codes bit-packed), ``metadata_bytes = ceil(n_blocks *
(scale_bits + zero_point_bits) / 8)`` (``uint4``/``uint2`` zero-points are packed, as MatMulNBits does). Seed 000 stores one fp32 scale and one int32 zero-point per
channel (8 bytes); a symmetric scheme needs no zero-point when ``zero_point_dtype='none'``.
Ratios compare the total to the same tensor stored in fp32, fp16 and bf16.
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


def dtype_bytes(name: str) -> float:
    """Bytes per value of a metadata dtype (0.5 for uint4)."""
    return dtype_bits(name) / 8


@dataclass(frozen=True)
class Memory:
    n_elements: int
    n_blocks: int
    bits: float
    payload_bytes: int
    metadata_bytes: int
    total_bytes: int
    bits_per_weight: float
    ratio_fp32: float   # total / fp32 size
    ratio_fp16: float

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
                    zero_point_dtype: str = "int32", extra_bytes: int = 0) -> Memory:
    """Bytes for ``n_elements`` codes of ``bits`` bits and ``n_blocks`` (scale, zero-point) pairs."""
    payload = -(-int(round(n_elements * bits)) // 8)
    meta = -(-n_blocks * (dtype_bits(scale_dtype) + dtype_bits(zero_point_dtype)) // 8) + extra_bytes
    total = payload + meta
    return Memory(n_elements, n_blocks, float(bits), payload, meta, total, 8.0 * total / n_elements,
                  total / (4.0 * n_elements), total / (2.0 * n_elements))
