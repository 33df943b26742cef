"""NumPy .npy and .npz readers -- never unpickle.

.npy: format versions 1.0, 2.0, 3.0.  The header (at most min(Limits.max_header_bytes, 64 KiB))
is a Python dict literal read with ``ast.literal_eval`` (literals only, no code); it must have
exactly ``descr``, ``fortran_order`` (bool) and ``shape`` (tuple of ints >= 0).  ``descr`` must be a
plain numeric type string: float16/32/64, int8/16/32, uint8/16/32, either byte order.  Object
arrays (``'|O'``, which need pickle), structured/record dtypes, strings, bool, complex, int64 and
datetimes are refused with an InputError.  The data must be exactly prod(shape) * itemsize bytes.

.npz: a zip of .npy members (stored or deflated).  The central directory is capped by
Limits.max_header_bytes and 10,000 members; each member's declared uncompressed size is checked
against Limits.max_bytes before it is read, and reading never goes past the declared size.  A
member is chosen by name with or without ``.npy``.

Output dtype (exact conversions only): float64 -> float64; float16/float32 and 8/16-bit integers ->
float32; 32-bit integers -> float64.  Arrays are returned C-contiguous.
"""

from __future__ import annotations

import ast
import io
import re
import struct
import zipfile
import zlib

import numpy as np

from ._common import InputError, Limits, quote
from ._source import Source

NPY_MAGIC = b"\x93NUMPY"
NPY_HEADER_CAP = 64 * 1024
_DESCR = re.compile(r"[<>|=]?(f2|f4|f8|i1|i2|i4|u1|u2|u4|b1|i8|u8|f16|c8|c16|O|U\d*|S\d*|V\d*|M8.*|m8.*)")
SUPPORTED = {"f2": np.float32, "f4": np.float32, "f8": np.float64, "i1": np.float32,
             "i2": np.float32, "u1": np.float32, "u2": np.float32, "i4": np.float64, "u4": np.float64}
MAX_MEMBERS = 10_000


def out_dtype(kind: str) -> type:
    return SUPPORTED[kind]


class NpyHeader:
    __slots__ = ("descr", "kind", "dtype", "shape", "fortran", "data_offset", "count")

    def __init__(self, descr, kind, dtype, shape, fortran, data_offset):
        self.descr, self.kind, self.dtype, self.shape = descr, kind, dtype, shape
        self.fortran, self.data_offset = fortran, data_offset
        n = 1
        for d in shape:
            n *= d
        self.count = n


def parse_npy_header(head: bytes, total_size: int, limits: Limits, name: str | None,
                     where: str | None = None) -> NpyHeader:
    """Parse the .npy preamble + header dict from ``head`` (the first bytes of the file)."""
    loc = dict(source=name, where=where)
    if len(head) < 10 or not head.startswith(NPY_MAGIC):
        raise InputError("not a .npy file (missing \\x93NUMPY magic or truncated preamble)",
                         offset=0, **loc)
    major, minor = head[6], head[7]
    if major == 1:
        (hlen,) = struct.unpack("<H", head[8:10])
        start = 10
    elif major in (2, 3):
        if len(head) < 12:
            raise InputError("truncated .npy preamble", offset=len(head), **loc)
        (hlen,) = struct.unpack("<I", head[8:12])
        start = 12
    else:
        raise InputError(f".npy format version {major}.{minor} is not supported (1.0, 2.0, 3.0)",
                         offset=6, **loc)
    cap = min(limits.max_header_bytes, NPY_HEADER_CAP)
    if hlen > cap:
        raise InputError(f".npy header declares {hlen:,} bytes, over the cap of {cap:,}", offset=8, **loc)
    if start + hlen > total_size or start + hlen > len(head):
        raise InputError(f"file is truncated inside the .npy header (needs {start + hlen:,} bytes, "
                         f"has {min(total_size, len(head)):,})", offset=start, **loc)
    raw = head[start:start + hlen]
    try:
        text = raw.decode("utf-8" if major == 3 else "latin1")
    except UnicodeDecodeError as e:
        raise InputError(".npy header is not valid UTF-8", offset=start + e.start, **loc) from None
    try:
        d = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, OverflowError) as e:
        raise InputError(f".npy header is not a Python literal ({type(e).__name__})", offset=start,
                         **loc) from None
    if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
        keys = sorted(map(str, d)) if isinstance(d, dict) else type(d).__name__
        raise InputError(f".npy header must be a dict with keys descr, fortran_order, shape; got "
                         f"{quote(keys)}", offset=start, **loc)
    descr, fortran, shape = d["descr"], d["fortran_order"], d["shape"]
    if not isinstance(descr, str):
        raise InputError("structured (record) .npy arrays are not supported; save a plain numeric "
                         "array", offset=start, **loc)
    if descr.lstrip("<>|=") in ("O", "O8", "O4"):
        raise InputError("object arrays are refused: loading them needs pickle, which can run code; "
                         "save a numeric array", offset=start, **loc)
    kind = descr.lstrip("<>|=")
    if kind not in SUPPORTED or not _DESCR.fullmatch(descr):
        raise InputError(f".npy dtype {quote(descr)} is not supported (float16/32/64, int8/16/32, "
                         f"uint8/16/32)", offset=start, **loc)
    if not isinstance(fortran, bool):
        raise InputError(f"fortran_order must be True or False, got {quote(fortran)}", offset=start, **loc)
    if not isinstance(shape, tuple) or not all(type(s) is int and s >= 0 for s in shape):
        raise InputError(f".npy shape must be a tuple of non-negative ints, got {quote(shape)}",
                         offset=start, **loc)
    if len(shape) > 32:
        raise InputError(f".npy shape has {len(shape)} dimensions (max 32)", offset=start, **loc)
    byteorder = "<" if descr[0] not in "<>|=" else descr[0]
    dtype = np.dtype(byteorder + kind if byteorder != "|" else kind)
    h = NpyHeader(descr, kind, dtype, shape, fortran, start + hlen)
    return h


def check_npy_size(h: NpyHeader, total_size: int, limits: Limits, name: str | None,
                   where: str | None = None, enforce_limits: bool = True) -> int:
    """Declared sizes vs limits and vs the bytes actually present; returns payload byte count."""
    loc = dict(source=name, where=where)
    nbytes = h.count * h.dtype.itemsize
    if enforce_limits:
        limits.check_elements(h.count, f"array of shape {h.shape}", shape=tuple(h.shape), offset=h.data_offset, **loc)
        limits.check_bytes(nbytes, f"array of shape {h.shape} ({h.descr})", offset=h.data_offset, **loc)
        limits.check_bytes(h.count * np.dtype(out_dtype(h.kind)).itemsize,
                           f"decoded array of shape {h.shape}", offset=h.data_offset, **loc)
    have = total_size - h.data_offset
    if have < nbytes:
        raise InputError(f"file is truncated: shape {h.shape} of {h.descr} needs {nbytes:,} data "
                         f"bytes but only {have:,} follow the header", offset=h.data_offset, **loc)
    if have > nbytes:
        raise InputError(f"{have - nbytes:,} unexpected bytes after the array data (the header's "
                         f"shape {h.shape} declares {nbytes:,} bytes)",
                         offset=h.data_offset + nbytes, **loc)
    return nbytes


def decode_npy(h: NpyHeader, payload: bytes) -> np.ndarray:
    a = np.frombuffer(payload, dtype=h.dtype, count=h.count)
    a = a.reshape(h.shape[::-1]).T if h.fortran else a.reshape(h.shape)
    return np.ascontiguousarray(a, dtype=out_dtype(h.kind))


def npy_info(src: Source, limits: Limits):
    head = src.head(12 + min(limits.max_header_bytes, NPY_HEADER_CAP))
    h = parse_npy_header(head, src.size, limits, src.name)
    check_npy_size(h, src.size, limits, src.name, enforce_limits=False)
    return h


def load_npy(src: Source, limits: Limits) -> tuple[np.ndarray, str]:
    head = src.head(12 + min(limits.max_header_bytes, NPY_HEADER_CAP))
    h = parse_npy_header(head, src.size, limits, src.name)
    nbytes = check_npy_size(h, src.size, limits, src.name)
    return decode_npy(h, src.read(h.data_offset, nbytes, "array data")), h.dtype.name


# ---------------------------------------------------------------------------------------------

_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError,
               zlib.error, EOFError, OSError, struct.error, UnicodeDecodeError, KeyError,
               OverflowError, IndexError, TypeError, ValueError)


class Npz:
    """An opened .npz: member table validated, members read on demand."""

    def __init__(self, src: Source, limits: Limits):
        self.src, self.limits, self.name = src, limits, src.name
        data = src.whole(limits, ".npz file")
        self._check_eocd(data)
        try:
            self.zf = zipfile.ZipFile(io.BytesIO(data))
            infos = self.zf.infolist()
        except InputError:
            raise
        except _ZIP_ERRORS as e:
            raise InputError(f"not a readable .npz (zip) file: {_zmsg(e)}", source=self.name) from None
        self.members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if not info.filename or info.filename.endswith("/"):
                continue
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if key in self.members:
                raise InputError(f"duplicate member {quote(info.filename)} in .npz", source=self.name)
            self.members[key] = info

    def _check_eocd(self, data: bytes) -> None:
        i = data.rfind(b"PK\x05\x06", max(0, len(data) - 65_557))
        if i < 0 or i + 22 > len(data):
            raise InputError("not a readable .npz (zip) file: end-of-central-directory record not "
                             "found (truncated?)", source=self.name)
        entries, cd_size = struct.unpack("<HI", data[i + 10:i + 16])
        if entries > MAX_MEMBERS and entries != 0xFFFF:
            raise InputError(f".npz declares {entries:,} members, over the cap of {MAX_MEMBERS:,}",
                             offset=i + 10, source=self.name)
        if cd_size != 0xFFFFFFFF and cd_size > self.limits.max_header_bytes:
            raise InputError(f".npz central directory is {cd_size:,} bytes, over the cap of "
                             f"{self.limits.max_header_bytes:,} (Limits.max_header_bytes)",
                             offset=i + 12, source=self.name)

    def _read(self, info: zipfile.ZipInfo, n: int | None = None) -> bytes:
        where = f"member {quote(info.filename)}"
        if n is None:
            self.limits.check_bytes(info.file_size, f".npz member {quote(info.filename)} "
                                    f"(declared uncompressed size)", source=self.name, where=where)
        try:
            with self.zf.open(info) as f:
                return f.read(info.file_size if n is None else min(n, info.file_size))
        except InputError:
            raise
        except _ZIP_ERRORS as e:
            raise InputError(f"cannot read .npz member: {_zmsg(e)}", source=self.name,
                             where=where) from None

    def header(self, key: str) -> NpyHeader:
        info = self.members[key]
        cap = 12 + min(self.limits.max_header_bytes, NPY_HEADER_CAP)
        head = self._read(info, cap)
        return parse_npy_header(head, info.file_size, self.limits, self.name,
                                where=f"member {quote(info.filename)}")

    def load(self, key: str) -> tuple[np.ndarray, str]:
        info = self.members[key]
        where = f"member {quote(info.filename)}"
        h = self.header(key)
        check_npy_size(h, info.file_size, self.limits, self.name, where=where)
        data = self._read(info)
        if len(data) != info.file_size:
            raise InputError(f"member is truncated ({len(data):,} of {info.file_size:,} bytes)",
                             source=self.name, where=where)
        return decode_npy(h, data[h.data_offset:]), h.dtype.name


def _zmsg(e: BaseException) -> str:
    s = str(e).replace("\n", " ")[:120]
    return f"{type(e).__name__}: {s}" if s else type(e).__name__
