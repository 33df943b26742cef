"""Regression (found by hypothesis fuzzing of .gguf bytes): a tensor with a zero dimension has no
elements, so the element cap passed, but a huge other dimension made numpy's reshape raise its own
ValueError. Every reader must refuse such a shape with an InputError naming the dimension."""
from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest

from quantcore.io import InputError, load_tensor


def safetensors_bytes(shape: list[int]) -> bytes:
    header = json.dumps({"t": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}}).encode()
    return struct.pack("<Q", len(header)) + header


def npy_bytes(shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue()


@pytest.mark.parametrize("data, filename", [
    (safetensors_bytes([0, 1 << 40]), "w.safetensors"),
    (npy_bytes((0, 1 << 40)), "w.npy"),
])
def test_empty_tensor_with_huge_dimension_is_refused(data, filename):
    with pytest.raises(InputError, match=r"dimension of 1,099,511,627,776, over the cap"):
        load_tensor(data, filename=filename)
