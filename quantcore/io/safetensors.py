"""A .safetensors reader written from the format description (no ``safetensors`` package needed).

Layout: 8-byte little-endian unsigned header length N, then N bytes of UTF-8 JSON, then the data
buffer.  The JSON is an object mapping tensor name -> ``{"dtype", "shape", "data_offsets"}`` plus an
optional ``"__metadata__"`` object of string -> string.  ``data_offsets = [begin, end]`` are byte
offsets into the data buffer (relative to 8 + N).

Validated before any tensor byte is read or any array allocated:
  * N <= Limits.max_header_bytes and 8 + N <= file size; UTF-8; JSON object; no duplicate keys;
    no NaN/Infinity constants; exactly the three fields per tensor.
  * dtype is a known safetensors dtype; shape is a list of ints >= 0 (at most 32 dims);
    data_offsets are two ints with 0 <= begin <= end <= data-buffer length;
    end - begin == prod(shape) * itemsize; no two non-empty tensors overlap (holes are allowed).
  * On load: prod(shape) <= Limits.max_elements, the tensor's bytes and its decoded float bytes
    <= Limits.max_bytes.

Loadable dtypes and their output: F64 -> float64; F32, F16, BF16 (bits shifted into the top half of a
float32, exact), I8, U8, I16 -> float32; I32 -> float64 (exact).  BOOL, U16, U32, I64, U64, F8_*, C64
are listed but refused on load.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

import numpy as np

from ._common import InputError, Limits, quote
from ._source import Source

# name -> (itemsize, numpy dtype in file, output dtype or None when not loadable)
DTYPES: dict[str, tuple[int, str | None, type | None]] = {
    "F64": (8, "<f8", np.float64), "F32": (4, "<f4", np.float32), "F16": (2, "<f2", np.float32),
    "BF16": (2, "<u2", np.float32), "I8": (1, "i1", np.float32), "U8": (1, "u1", np.float32),
    "I16": (2, "<i2", np.float32), "I32": (4, "<i4", np.float64),
    "BOOL": (1, None, None), "U16": (2, None, None), "U32": (4, None, None), "I64": (8, None, None),
    "U64": (8, None, None), "F8_E4M3": (1, None, None), "F8_E5M2": (1, None, None),
    "F8_E8M0": (1, None, None), "C64": (8, None, None),
}
LOADABLE = tuple(k for k, v in DTYPES.items() if v[2] is not None)
MAX_DIMS = 32


@dataclass(frozen=True)
class StEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # relative to the data buffer
    end: int

    @property
    def count(self) -> int:
        return math.prod(self.shape)  # Python ints: no overflow for hostile shapes


@dataclass(frozen=True)
class StHeader:
    entries: dict[str, StEntry]
    metadata: dict[str, str]
    data_start: int


def _no_dupes(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise InputError(f"duplicate key {quote(k)} in the safetensors JSON header")
        out[k] = v
    return out


def _no_constants(name):
    raise InputError(f"{name} is not valid in a safetensors header")


def parse_header(src: Source, limits: Limits) -> StHeader:
    name = src.name
    if src.size < 8:
        raise InputError(f"file is truncated: {src.size} bytes, a .safetensors file starts with an "
                         f"8-byte header length", offset=0, source=name)
    (n,) = struct.unpack("<Q", src.read(0, 8))
    if n > limits.max_header_bytes:
        raise InputError(f"safetensors header declares {n:,} bytes, over the cap of "
                         f"{limits.max_header_bytes:,} (Limits.max_header_bytes)", offset=0, source=name)
    if 8 + n > src.size:
        raise InputError(f"file is truncated: the header declares {n:,} bytes but only "
                         f"{src.size - 8:,} follow", offset=0, source=name)
    raw = src.read(8, n, "header")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError("safetensors header is not valid UTF-8", offset=8 + e.start, source=name) from None
    try:
        obj = json.loads(text, object_pairs_hook=_no_dupes, parse_constant=_no_constants)
    except InputError as e:
        raise e.with_source(name) from None
    except json.JSONDecodeError as e:
        raise InputError(f"safetensors header is not valid JSON: {e.msg}",
                         offset=8 + len(text[:e.pos].encode()), source=name) from None
    except (ValueError, RecursionError, MemoryError) as e:
        raise InputError(f"safetensors header is not valid JSON ({type(e).__name__})", offset=8,
                         source=name) from None
    if not isinstance(obj, dict):
        raise InputError("safetensors header must be a JSON object", offset=8, source=name)
    meta = obj.pop("__metadata__", None)
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise InputError("__metadata__ must be an object of string values", offset=8, source=name)
    data_start = 8 + n
    data_len = src.size - data_start
    entries: dict[str, StEntry] = {}
    for key, e in obj.items():
        where = f"tensor {quote(key)}"
        loc = dict(offset=8, source=name, where=where)
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            got = sorted(e) if isinstance(e, dict) else type(e).__name__
            raise InputError(f"entry must have exactly dtype, shape, data_offsets; got {quote(got)}", **loc)
        dt, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
        if not isinstance(dt, str) or dt not in DTYPES:
            raise InputError(f"unknown dtype {quote(dt)}", **loc)
        if (not isinstance(shape, list) or len(shape) > MAX_DIMS
                or not all(type(d) is int and d >= 0 for d in shape)):
            raise InputError(f"shape must be a list of at most {MAX_DIMS} non-negative ints, got "
                             f"{quote(shape)}", **loc)
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(type(o) is int for o in offs)):
            raise InputError(f"data_offsets must be [begin, end] ints, got {quote(offs)}", **loc)
        b, en = offs
        if b < 0 or en < b:
            raise InputError(f"data_offsets [{b}, {en}] are negative or reversed", **loc)
        if en > data_len:
            raise InputError(f"data_offsets [{b}, {en}] point past the end of the data buffer "
                             f"({data_len:,} bytes; file truncated or header lying)", **loc)
        ent = StEntry(key, dt, tuple(shape), b, en)
        need = ent.count * DTYPES[dt][0]
        if en - b != need:
            raise InputError(f"data_offsets [{b}, {en}] hold {en - b:,} bytes but shape "
                             f"{tuple(shape)} of {dt} needs {need:,}", **loc)
        entries[key] = ent
    spans = sorted((e for e in entries.values() if e.end > e.begin), key=lambda e: (e.begin, e.end))
    for prev, cur in zip(spans, spans[1:]):
        if cur.begin < prev.end:
            raise InputError(f"tensors {quote(prev.name)} [{prev.begin}, {prev.end}] and "
                             f"{quote(cur.name)} [{cur.begin}, {cur.end}] overlap",
                             offset=data_start + cur.begin, source=name)
    return StHeader(entries, meta, data_start)


def load_entry(src: Source, h: StHeader, e: StEntry, limits: Limits) -> np.ndarray:
    loc = dict(offset=h.data_start + e.begin, source=src.name, where=f"tensor {quote(e.name)}")
    size, file_dt, out = DTYPES[e.dtype]
    if out is None:
        raise InputError(f"dtype {e.dtype} cannot be loaded (supported: {', '.join(LOADABLE)})", **loc)
    limits.check_elements(e.count, f"tensor of shape {e.shape}", shape=tuple(e.shape), **loc)
    limits.check_bytes(e.end - e.begin, f"tensor of shape {e.shape} ({e.dtype})", **loc)
    limits.check_bytes(e.count * np.dtype(out).itemsize, f"decoded tensor of shape {e.shape}", **loc)
    raw = src.read(h.data_start + e.begin, e.end - e.begin, f"tensor {quote(e.name)}")
    a = np.frombuffer(raw, dtype=file_dt)
    if e.dtype == "BF16":
        a = (a.astype(np.uint32) << 16).view(np.float32)
    return np.ascontiguousarray(a.astype(out, copy=False).reshape(e.shape))
