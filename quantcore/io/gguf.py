"""A .gguf reader (container versions 2 and 3, little-endian) written from the GGUF spec.

Layout: magic ``GGUF``, uint32 version, uint64 tensor count, uint64 metadata count; metadata
key/values (key = uint64 length + UTF-8 bytes; uint32 value type; value; arrays are uint32 item
type + uint64 count + items); tensor infos (name, uint32 n_dims, n_dims x uint64 ne, uint32 ggml
type, uint64 offset); padding to ``general.alignment`` (default 32, must be a power of two); data.
``ne[0]`` is the fastest-varying dimension, so the numpy shape is ``ne`` reversed.

Validated before any tensor byte is read: the whole header (metadata + tensor table) fits in
Limits.max_header_bytes; every count and length is checked against the bytes left before looping
or allocating; array nesting depth <= 4; n_dims <= 8; no duplicate keys or tensor names; for every
tensor of a known GGML type: ne[0] is a multiple of the type's block size, the offset is aligned,
the data lies inside the file, and no two tensors overlap.  Version 1 and big-endian files are
refused.  On load: elements <= Limits.max_elements, file bytes and float32 output <= Limits.max_bytes.

Loadable types -> output dtype: F32, F16, BF16, I8, I16 -> float32; F64, I32 -> float64; every type of
the GGML registry (:mod:`quantcore.ggml`: Q4_0 ... Q8_0, Q2_K ... Q6_K, IQ4_NL, IQ4_XS, TQ1_0, TQ2_0,
MXFP4) -> float32, dequantized by the type's own class, bit-identical with llama.cpp's
``dequantize_row_*`` and gguf-py 0.19's ``gguf.quants.dequantize`` (tested).  Block-wise work is done
in chunks of 65,536 blocks so temporaries stay small.  Other types (IQ1/2/3, NVFP4, ...) are listed,
not loaded.

Metadata values come back as int/float/bool/str, numpy arrays for numeric arrays, lists otherwise.
Keys, values and tensor names are untrusted text.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np

from ..ggml import GGML_TYPES as BLOCK_TYPES
from ._common import InputError, Limits, quote
from ._source import Source

DEFAULT_ALIGNMENT = 32
MAX_DIMS = 8
MAX_DEPTH = 4
CHUNK_BLOCKS = 65_536

# ggml type id -> (name, block size, type size)
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
}

# GGUF metadata value types: id -> (name, struct format or None)
_VT = {0: ("UINT8", "<B"), 1: ("INT8", "<b"), 2: ("UINT16", "<H"), 3: ("INT16", "<h"),
       4: ("UINT32", "<I"), 5: ("INT32", "<i"), 6: ("FLOAT32", "<f"), 7: ("BOOL", "<?"),
       8: ("STRING", None), 9: ("ARRAY", None), 10: ("UINT64", "<Q"), 11: ("INT64", "<q"),
       12: ("FLOAT64", "<d")}
_VT_NP = {0: "u1", 1: "i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "u1",
          10: "<u8", 11: "<i8", 12: "<f8"}


@dataclass(frozen=True)
class GgufTensor:
    name: str
    shape: tuple[int, ...]       # numpy order (ne reversed)
    type_id: int
    type_name: str
    offset: int                  # relative to the data section
    nbytes: int | None           # None for unknown type ids
    info_offset: int             # byte offset of this tensor's info record

    @property
    def count(self) -> int:
        return math.prod(self.shape)  # Python ints: no overflow for hostile shapes

    @property
    def loadable(self) -> bool:
        return self.type_name in LOADABLE


@dataclass
class Gguf:
    version: int
    metadata: dict
    tensors: list[GgufTensor]
    alignment: int
    data_start: int
    by_name: dict[str, GgufTensor] = field(default_factory=dict)


HEADER_FIRST_READ = 1 << 20  # the header is read in growing prefixes (x4), so a 70 GB model reads MBs, not the cap


class _Grow(Exception):
    """The header continues past the prefix read so far (and the file and the cap allow more)."""


class _Reader:
    def __init__(self, buf: bytes, total: int, cap: int, name: str | None):
        self.buf, self.total, self.cap, self.name, self.pos = buf, total, cap, name, 0

    def need(self, n: int, what: str) -> None:
        if n >= 0 and self.pos + n > len(self.buf) and len(self.buf) < min(self.total, self.cap):
            raise _Grow()
        if n < 0 or self.pos + n > len(self.buf):
            if self.pos + n > self.total or n < 0:
                raise InputError(f"file is truncated: {what} needs {n:,} bytes at offset "
                                 f"{self.pos:,} but the file has {self.total:,}", offset=self.pos,
                                 source=self.name)
            raise InputError(f"GGUF header (metadata + tensor table) is larger than the cap of "
                             f"{self.cap:,} bytes (Limits.max_header_bytes); reading {what} at "
                             f"offset {self.pos:,}", offset=self.pos, source=self.name)

    def left(self) -> int:
        return len(self.buf) - self.pos

    def unpack(self, fmt: str, what: str):
        n = struct.calcsize(fmt)
        self.need(n, what)
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += n
        return v

    def string(self, what: str) -> str:
        at = self.pos
        n = self.unpack("<Q", what + " length")
        if n > self.left():
            self.need(n, f"{what} of {n:,} bytes")
        s = self.buf[self.pos:self.pos + n]
        self.pos += n
        try:
            return s.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{what} is not valid UTF-8", offset=at + 8, source=self.name) from None

    def value(self, vt: int, what: str, depth: int = 0):
        at = self.pos
        if vt not in _VT:
            raise InputError(f"{what}: unknown metadata value type {vt}", offset=at - 4, source=self.name)
        tname, fmt = _VT[vt]
        if fmt is not None:
            return self.unpack(fmt, what)
        if vt == 8:
            return self.string(what)
        if depth >= MAX_DEPTH:
            raise InputError(f"{what}: arrays nested deeper than {MAX_DEPTH}", offset=at, source=self.name)
        it = self.unpack("<I", what + " item type")
        n = self.unpack("<Q", what + " item count")
        if it not in _VT:
            raise InputError(f"{what}: unknown array item type {it}", offset=at, source=self.name)
        if it in _VT_NP:
            size = np.dtype(_VT_NP[it]).itemsize
            self.need(n * size if n <= self.left() else self.left() + 1, f"{what} ({n:,} items)")
            a = np.frombuffer(self.buf, dtype=_VT_NP[it], count=n, offset=self.pos).copy()
            self.pos += n * size
            return a.astype(bool) if it == 7 else a
        min_size = 8 if it == 8 else 12
        if n > self.left() // min_size:
            self.need(self.left() + 1, f"{what} ({n:,} items)")
        return [self.value(it, what, depth + 1) for _ in range(n)]


def parse(src: Source, limits: Limits) -> Gguf:
    """Parse and validate the header and tensor table (no tensor data is read).

    The header is read as a prefix of the file, 1 MiB first and 4x larger while the parse runs past it (up
    to ``Limits.max_header_bytes``): only the header's own bytes (rounded up) are read, which matters when
    they come over the network or from a browser's File by range (:mod:`quantcore.io.ranges`).
    """
    limit = min(src.size, limits.max_header_bytes)
    size = min(limit, HEADER_FIRST_READ)
    while True:
        try:
            return _parse(src, src.read(0, size, "header"), limits)
        except _Grow:
            size = min(limit, size * 4)


def _parse(src: Source, buf: bytes, limits: Limits) -> Gguf:
    name = src.name
    r = _Reader(buf, src.size, limits.max_header_bytes, name)
    r.need(4, "magic")
    magic = buf[:4]
    if magic == b"FUGG":
        raise InputError("big-endian GGUF files are not supported", offset=0, source=name)
    if magic != b"GGUF":
        raise InputError(f"not a GGUF file (magic {magic!r})", offset=0, source=name)
    r.pos = 4
    version = r.unpack("<I", "version")
    if version not in (2, 3):
        swapped = struct.unpack("<I", struct.pack(">I", version))[0]
        if swapped in (2, 3):
            raise InputError("big-endian GGUF files are not supported", offset=4, source=name)
        raise InputError(f"GGUF version {version} is not supported (2 or 3)", offset=4, source=name)
    n_tensors = r.unpack("<Q", "tensor count")
    n_kv = r.unpack("<Q", "metadata count")
    if n_kv > r.left() // 13:
        r.need(r.left() + 1, f"{n_kv:,} metadata entries")
    meta: dict = {}
    for i in range(n_kv):
        at = r.pos
        key = r.string(f"metadata key #{i}")
        vt = r.unpack("<I", f"type of {quote(key)}")
        if key in meta:
            raise InputError(f"duplicate metadata key {quote(key)}", offset=at, source=name)
        meta[key] = r.value(vt, f"metadata {quote(key)}")
    alignment = meta.get("general.alignment", DEFAULT_ALIGNMENT)
    if (not isinstance(alignment, int) or isinstance(alignment, bool) or alignment < 1
            or alignment > 1 << 20 or alignment & (alignment - 1)):
        raise InputError(f"general.alignment must be a power of two <= 2**20, got {quote(alignment)}",
                         source=name)
    if n_tensors > r.left() // 24:
        r.need(r.left() + 1, f"{n_tensors:,} tensor infos")
    tensors: list[GgufTensor] = []
    by_name: dict[str, GgufTensor] = {}
    for i in range(n_tensors):
        at = r.pos
        tname = r.string(f"name of tensor #{i}")
        nd = r.unpack("<I", f"n_dims of {quote(tname)}")
        if nd > MAX_DIMS:
            raise InputError(f"tensor {quote(tname)} has {nd} dimensions (max {MAX_DIMS})",
                             offset=at, source=name)
        r.need(8 * nd, f"dims of {quote(tname)}")
        ne = struct.unpack_from(f"<{nd}Q", buf, r.pos)
        r.pos += 8 * nd
        tid = r.unpack("<I", f"type of {quote(tname)}")
        off = r.unpack("<Q", f"offset of {quote(tname)}")
        if tname in by_name:
            raise InputError(f"duplicate tensor name {quote(tname)}", offset=at, source=name)
        tinfo = GGML_TYPES.get(tid)
        tn = tinfo[0] if tinfo else f"type{tid}"
        nbytes = None
        count = 1
        for d in ne:
            count *= d
        if tinfo:
            _, bs, ts = tinfo
            if (ne[0] if nd else 1) % bs:   # 0 dimensions: one element (a scalar), a row of length 1
                row = f"ne[0]={ne[0]}" if nd else "1 (0 dimensions: one element)"
                raise InputError(f"tensor {quote(tname)}: row length {row} is not a multiple "
                                 f"of the {tn} block size {bs}", offset=at, source=name)
            nbytes = count // bs * ts
        t = GgufTensor(tname, tuple(reversed(ne)), tid, tn, off, nbytes, at)
        tensors.append(t)
        by_name[tname] = t
    data_start = -(-r.pos // alignment) * alignment
    spans = []
    for t in tensors:
        where = f"tensor {quote(t.name)}"
        if t.offset % alignment:
            raise InputError(f"data offset {t.offset} is not a multiple of the alignment {alignment}",
                             offset=t.info_offset, source=name, where=where)
        if t.nbytes is None:
            continue
        end = data_start + t.offset + t.nbytes
        if end > src.size:
            raise InputError(f"data [{data_start + t.offset:,}, {end:,}) lies past the end of the file "
                             f"({src.size:,} bytes; truncated, or the header lies)",
                             offset=t.info_offset, source=name, where=where)
        if t.nbytes:
            spans.append((t.offset, t.offset + t.nbytes, t.name))
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise InputError(f"tensors {quote(n0)} and {quote(n1)} overlap in the data section",
                             offset=data_start + b1, source=name)
    return Gguf(version, meta, tensors, alignment, data_start, by_name)


_PLAIN = {"F32": ("<f4", np.float32), "F16": ("<f2", np.float32), "BF16": ("<u2", np.float32),
          "F64": ("<f8", np.float64), "I8": ("i1", np.float32), "I16": ("<i2", np.float32),
          "I32": ("<i4", np.float64)}
LOADABLE = tuple(_PLAIN) + tuple(t.name for t in sorted(BLOCK_TYPES.values(), key=lambda t: t.type_id))


def dequantize_blocks(type_name: str, raw: np.ndarray) -> np.ndarray:
    """Dequantize ``raw`` (uint8, whole blocks) of a registered GGML type to a flat float32 array."""
    t = BLOCK_TYPES[type_name]
    blocks = raw.reshape((-1, t.type_size))
    out = np.empty((blocks.shape[0], t.block_size), dtype=np.float32)
    for i in range(0, blocks.shape[0], CHUNK_BLOCKS):  # bounded temporaries, not per element
        out[i:i + CHUNK_BLOCKS] = t.dequantize(blocks[i:i + CHUNK_BLOCKS])  # inf/NaN reported by the caller
    return out.reshape(-1)


def load(src: Source, g: Gguf, t: GgufTensor, limits: Limits) -> np.ndarray:
    loc = dict(offset=g.data_start + t.offset, source=src.name, where=f"tensor {quote(t.name)}")
    if not t.loadable:
        raise InputError(f"GGML type {t.type_name} cannot be loaded (supported: {', '.join(LOADABLE)})",
                         **loc)
    out_dt = _PLAIN[t.type_name][1] if t.type_name in _PLAIN else np.float32
    limits.check_elements(t.count, f"tensor of shape {t.shape}", shape=tuple(t.shape), **loc)
    limits.check_bytes(t.nbytes, f"tensor of shape {t.shape} ({t.type_name})", **loc)
    limits.check_bytes(t.count * np.dtype(out_dt).itemsize, f"decoded tensor of shape {t.shape}", **loc)
    raw = src.read(g.data_start + t.offset, t.nbytes, f"tensor {quote(t.name)}")
    if t.type_name in _PLAIN:
        a = np.frombuffer(raw, dtype=_PLAIN[t.type_name][0])
        if t.type_name == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        a = a.astype(out_dt, copy=False)
    else:
        a = dequantize_blocks(t.type_name, np.frombuffer(raw, dtype=np.uint8))
    return np.ascontiguousarray(a.reshape(t.shape))
