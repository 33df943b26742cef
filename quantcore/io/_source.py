"""Byte sources (raw bytes from a browser upload, or a file path) and file-kind detection.

A path is never read whole unless the format needs it (text, CSV, .npy, .npz: capped by
Limits.max_bytes); .safetensors and .gguf read the header (capped by Limits.max_header_bytes) and
then only the bytes of the requested tensor.

Kind detection: the file-name extension decides when it is known (``.npy .npz .safetensors .gguf
.csv .tsv .txt``), and a binary kind's magic bytes must then match; without a known extension the
magic bytes decide (``\\x93NUMPY``, ``PK\\x03\\x04``, ``GGUF``, safetensors' 8-byte length + ``{``),
else the input is pasted text.
"""

from __future__ import annotations

import os
import struct

from ._common import InputError, Limits

KINDS = ("npy", "npz", "safetensors", "gguf", "csv", "text")
_EXT = {".npy": "npy", ".npz": "npz", ".safetensors": "safetensors", ".gguf": "gguf",
        ".csv": "csv", ".tsv": "csv", ".txt": "text", ".text": "text"}
_MAGIC_NAME = {"npy": "\\x93NUMPY", "npz": "PK (zip)", "gguf": "GGUF",
               "safetensors": "<8-byte header length>{"}


class Source:
    """Random access to bytes or a file, with a display name for error messages."""

    def __init__(self, source, filename: str | None = None):
        self._data: memoryview | None = None
        self._path: str | None = None
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._data = memoryview(source).cast("B") if isinstance(source, memoryview) else memoryview(source)
            self.size = len(self._data)
            self.name = filename
        elif isinstance(source, (str, os.PathLike)):
            path = os.fspath(source)
            if not isinstance(path, str):
                path = os.fsdecode(path)
            try:
                st = os.stat(path)
            except OSError as e:
                raise InputError(f"cannot open file: {e.strerror or e}", source=path) from None
            if not os.path.isfile(path):
                raise InputError("not a regular file", source=path)
            self._path = path
            self.size = st.st_size
            self.name = filename or os.path.basename(path)
        else:
            raise InputError(f"expected bytes or a file path, got {type(source).__name__}",
                             source=filename)
        self.filename = filename if filename is not None else (
            os.path.basename(self._path) if self._path else None)

    def read(self, offset: int, n: int, what: str = "data") -> bytes:
        """Exactly n bytes at offset, or an InputError saying the file is truncated."""
        if offset < 0 or n < 0 or offset + n > self.size:
            raise InputError(f"file is truncated: {what} needs bytes {offset:,}..{offset + n:,} but "
                             f"the file has {self.size:,} bytes", offset=min(max(offset, 0), self.size),
                             source=self.name)
        if self._data is not None:
            return bytes(self._data[offset:offset + n])
        try:
            with open(self._path, "rb") as f:
                f.seek(offset)
                out = f.read(n)
        except OSError as e:
            raise InputError(f"cannot read file: {e.strerror or e}", source=self.name) from None
        if len(out) != n:
            raise InputError(f"file shrank while reading ({what})", offset=offset, source=self.name)
        return out

    def head(self, n: int) -> bytes:
        return self.read(0, min(n, self.size))

    def whole(self, limits: Limits, what: str = "file", view: bool = False) -> bytes | memoryview:
        """All bytes (capped by Limits.max_bytes); ``view=True`` avoids copying an in-memory upload."""
        if self.size > limits.max_bytes:
            raise InputError(f"{what} is {self.size:,} bytes, over the cap of {limits.max_bytes:,} "
                             f"bytes (Limits.max_bytes)", source=self.name)
        if view and self._data is not None:
            return self._data
        return self.read(0, self.size, what)


def sniff(head: bytes, size: int) -> str | None:
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "npz"
    if head.startswith((b"GGUF", b"FUGG")):
        return "gguf"
    if len(head) >= 9 and head[8:9] == b"{":
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n <= size - 8:
            return "safetensors"
    return None


def detect_kind(src: Source) -> str:
    """One of KINDS, from the extension and/or magic bytes (see module docstring)."""
    head = src.head(16)
    magic = sniff(head, src.size)
    ext = None
    if src.filename:
        lower = src.filename.lower()
        for e, k in _EXT.items():
            if lower.endswith(e):
                ext = k
                break
    if ext in ("npy", "npz", "safetensors", "gguf"):
        if magic != ext:
            raise InputError(f"the file name says .{ext} but the content does not start like one "
                             f"(expected {_MAGIC_NAME[ext]}, found {head[:8]!r})", offset=0,
                             source=src.name)
        return ext
    if ext in ("csv", "text"):
        return ext
    return magic or "text"
