"""A checkpoint as a list of tensors across files, read by byte range, one run of rows at a time.

:func:`open_checkpoint` takes any mix of: a ``.safetensors`` file, a ``.gguf`` file, an ``.npz`` file,
a ``model.safetensors.index.json`` (its ``weight_map`` names the shards, relative to the index), or a
folder (its index if it has one, else every ``*.safetensors``, else its one ``*.gguf``, else its one
``*.npz``). Every header is parsed and validated by :mod:`quantcore.io.safetensors` /
:mod:`quantcore.io.gguf` (offsets inside the file, no overlap, sizes matching shapes) before any
tensor byte is read; the index is checked against the shards (a shard named but missing, a tensor
named but absent from its shard, a tensor in two shards are errors). Those checks across files are pure
functions over parsed headers (:func:`read_index`, :func:`check_index_shards`, :func:`combine_files`), so a
page that knows its files only by byte range (``quantcalc_ui.modelscan.PickedCheckpoint``, each file parsed by
:func:`source_checkpoint`) applies exactly the same ones.

:func:`read_rows` reads axis-0 slices ``[r0, r1)`` of one tensor: exactly their bytes (``pread`` of
``offset + r0 * row_bytes``), decoded to float32 (F32, F16, BF16, and every GGML block type that
:func:`quantcore.io.gguf.dequantize_blocks` dequantizes) or float64 (F64). Before and after each read
the file's size and mtime are compared with those seen when its header was parsed: a file replaced or
truncated in between is an :class:`InputError` naming the file and the tensor, never silently mixed
data. ``.npz`` members (possibly deflated) are read whole, one tensor at a time.

Paths may be fsspec URLs (``s3://...``, ``gcs://...``, ``http://...``) when fsspec is installed; the
identity check then compares the size (and the mtime when the filesystem reports one).

:class:`FileId` is what resuming a scan keys on: the file's display name, size, mtime (ns) and the
SHA-256 of its header bytes.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from . import gguf as _gguf
from . import npy as _npy
from . import safetensors as _st
from ._common import InputError, Limits, quote
from ._source import Source, detect_kind

INDEX_SUFFIX = ".index.json"
# dtype -> (numpy dtype in the file, output dtype); BF16 is widened by a shift (exact).
_FLOAT_DTYPES = {"F32": ("<f4", np.float32), "F16": ("<f2", np.float32), "BF16": ("<u2", np.float32),
                 "F64": ("<f8", np.float64)}
_NPZ_FLOAT = {"float16": 16, "float32": 32, "float64": 64}


def is_url(path: str) -> bool:
    return "://" in path


@dataclass(frozen=True)
class FileId:
    """One file of a checkpoint as seen when its header was parsed."""

    path: str          # what is opened (local path or URL)
    name: str          # display name: path relative to the checkpoint folder, or the base name
    kind: str          # "safetensors", "gguf" or "npz"
    size: int
    mtime_ns: int
    header_sha256: str

    @property
    def key(self) -> str:
        """Identity used to resume a scan: same name, size, mtime and header bytes."""
        return f"{self.name}|{self.size}|{self.mtime_ns}|{self.header_sha256[:16]}"


@dataclass(frozen=True)
class TensorEntry:
    """One tensor: where its bytes are and how to decode them. ``dtype`` is the safetensors dtype,
    the GGML type name, or the numpy dtype name of an .npz member."""

    file: FileId
    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int        # absolute byte offset of the data in the file (-1 for .npz members)
    nbytes: int
    loadable: bool     # read_rows can decode it
    floating: bool     # float or quantized-float data (a weight), not integers or bools

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def n_rows(self) -> int:
        """Slices along axis 0 (1 for a scalar or 1-D tensor: read whole)."""
        return self.shape[0] if len(self.shape) >= 2 else 1

    @property
    def row_bytes(self) -> int:
        return self.nbytes // self.n_rows if self.n_rows else 0

    @property
    def stored_bits_per_weight(self) -> float:
        return 8.0 * self.nbytes / self.n_elements if self.n_elements else 0.0


@dataclass(frozen=True)
class Checkpoint:
    """Tensors of one model across files. ``metadata``: GGUF architecture and head counts when known."""

    files: tuple[FileId, ...]
    tensors: tuple[TensorEntry, ...]
    metadata: dict = field(default_factory=dict)

    def by_name(self) -> dict[str, TensorEntry]:
        return {t.name: t for t in self.tensors}

    @property
    def arch(self) -> str | None:
        return self.metadata.get("general.architecture")

    @property
    def label(self) -> str:
        return self.files[0].name if len(self.files) == 1 else f"{self.files[0].name} (+{len(self.files) - 1} files)"


# --- opening files ---------------------------------------------------------------------------------

def _stat(path: str) -> tuple[int, int]:
    if is_url(path):
        fs, p = _fsspec(path)
        info = fs.info(p)
        mt = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or 0
        try:
            mt_ns = int(float(mt) * 1e9) if not hasattr(mt, "timestamp") else int(mt.timestamp() * 1e9)
        except (TypeError, ValueError):
            mt_ns = 0
        return int(info["size"]), mt_ns
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _fsspec(url: str):
    try:
        import fsspec  # optional: only for URLs
    except ImportError:
        raise InputError("reading a URL needs the fsspec package (pip install fsspec)", source=url) from None
    fs, p = fsspec.core.url_to_fs(url)
    return fs, p


def _open(path: str):
    if is_url(path):
        fs, p = _fsspec(path)
        return fs.open(p, "rb")
    return open(path, "rb")


class _RangeSource(Source):
    """A :class:`Source` over a local file or an fsspec URL (headers are read through it)."""

    def __init__(self, path: str, name: str):
        if not is_url(path):
            super().__init__(path, name)
            return
        self._data, self._path, self.name, self.filename = None, path, name, name
        self.size = _stat(path)[0]

    def read(self, offset: int, n: int, what: str = "data") -> bytes:
        if not is_url(self._path):
            return super().read(offset, n, what)
        if offset < 0 or n < 0 or offset + n > self.size:
            raise InputError(f"file is truncated: {what} needs bytes {offset:,}..{offset + n:,} but "
                             f"the file has {self.size:,} bytes", offset=max(0, min(offset, self.size)),
                             source=self.name)
        with _open(self._path) as f:
            f.seek(offset)
            return f.read(n)


def _file_id(src: _RangeSource, path: str, name: str, kind: str, header_len: int) -> FileId:
    size, mtime = _stat(path)
    sha = hashlib.sha256(src.read(0, min(header_len, size), "header")).hexdigest()
    return FileId(path, name, kind, size, mtime, sha)


def _safetensors_entries(src: Source, fid_of, limits: Limits) -> tuple[FileId, list[TensorEntry]]:
    h = _st.parse_header(src, limits)
    fid = fid_of(h.data_start)
    out = []
    for e in h.entries.values():
        loadable = e.dtype in _FLOAT_DTYPES
        floating = loadable or e.dtype.startswith("F8")  # FP8 weights are listed, not decoded (scales live apart)
        out.append(TensorEntry(fid, e.name, tuple(e.shape), e.dtype, h.data_start + e.begin, e.end - e.begin,
                               loadable, floating))
    return fid, out


def _safetensors_file(path: str, name: str, limits: Limits) -> tuple[FileId, list[TensorEntry]]:
    src = _RangeSource(path, name)
    return _safetensors_entries(src, lambda n: _file_id(src, path, name, "safetensors", n), limits)


def _gguf_entries(src: Source, fid_of, limits: Limits) -> tuple[FileId, list[TensorEntry], dict]:
    g = _gguf.parse(src, limits)
    fid = fid_of(g.data_start)
    out = []
    for t in g.tensors:
        floating = t.type_name in _FLOAT_DTYPES or (t.type_name not in ("I8", "I16", "I32", "I64") and
                                                   t.nbytes is not None)
        loadable = t.nbytes is not None and (t.type_name in _FLOAT_DTYPES or
                                             (floating and t.type_name in _gguf.LOADABLE))
        out.append(TensorEntry(fid, t.name, tuple(t.shape), t.type_name, g.data_start + t.offset,
                               t.nbytes or 0, loadable, floating))
    arch = g.metadata.get("general.architecture")
    meta = {"general.architecture": arch if isinstance(arch, str) else None}
    if isinstance(arch, str):
        for k in ("attention.head_count", "attention.head_count_kv"):
            v = g.metadata.get(f"{arch}.{k}")
            if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
                meta[k] = int(v)
    return fid, out, meta


def _gguf_file(path: str, name: str, limits: Limits) -> tuple[FileId, list[TensorEntry], dict]:
    src = _RangeSource(path, name)
    return _gguf_entries(src, lambda n: _file_id(src, path, name, "gguf", n), limits)


def source_checkpoint(src: Source, name: str, limits: Limits = Limits()) -> Checkpoint:
    """The checkpoint in one ``.safetensors`` or ``.gguf`` file given as a :class:`Source` that is not a
    path (a browser file known by byte ranges, :class:`quantcore.io.ranges.RangeCache`: reading raises
    ``NeedBytes`` until the header's bytes have been added). Its :class:`FileId` has no path (``path``
    "", mtime 0): read its tensors with :func:`decode_rows` over bytes read from the same source, not
    with :func:`read_rows`."""
    kind = detect_kind(src)
    if kind not in ("safetensors", "gguf"):
        raise InputError(f"a checkpoint here is one .safetensors or .gguf file; this looks like {kind}",
                         source=name)

    def fid_of(header_len: int) -> FileId:
        sha = hashlib.sha256(src.read(0, min(header_len, src.size), "header")).hexdigest()
        return FileId("", name, kind, src.size, 0, sha)

    if kind == "safetensors":
        fid, ts = _safetensors_entries(src, fid_of, limits)
        return Checkpoint((fid,), tuple(ts), {})
    fid, ts, meta = _gguf_entries(src, fid_of, limits)
    return Checkpoint((fid,), tuple(ts), meta)


def _npz_file(path: str, name: str, limits: Limits) -> tuple[FileId, list[TensorEntry]]:
    src = _RangeSource(path, name)
    z = _npy.Npz(src, limits)
    fid = _file_id(src, path, name, "npz", min(src.size, 1 << 16))
    out = []
    for key, info in z.members.items():
        h = z.header(key)
        dt = h.dtype.name
        n = math.prod(h.shape)
        floating = dt in _NPZ_FLOAT
        out.append(TensorEntry(fid, key, tuple(h.shape), dt, -1, n * h.dtype.itemsize, floating, floating))
    return fid, out


@dataclass(frozen=True)
class ShardIndex:
    """A safetensors index (``model.safetensors.index.json``): which shard file holds each tensor."""

    name: str                       # the index file's display name (errors name it)
    weight_map: dict[str, str]      # tensor name -> shard file name, relative to the index's folder

    @property
    def shards(self) -> tuple[str, ...]:
        """The shard file names, in order of first appearance in ``weight_map``."""
        return tuple(dict.fromkeys(self.weight_map.values()))


def read_index(src: Source, limits: Limits = Limits()) -> ShardIndex:
    """Parse and check an HF index read whole from ``src`` (a path's or a page's file; at most
    ``Limits.max_header_bytes``): valid UTF-8 JSON with a ``weight_map`` object of tensor name -> shard file
    name, every shard name a file inside the index's folder (not absolute, no ``..``)."""
    name = src.name or "index"
    if src.size > limits.max_header_bytes:
        raise InputError(f"index is {src.size:,} bytes, over the cap of {limits.max_header_bytes:,}", source=name)
    try:
        obj = json.loads(src.read(0, src.size, "index").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"index is not valid JSON: {e}", source=name) from None
    wm = obj.get("weight_map") if isinstance(obj, dict) else None
    if not isinstance(wm, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in wm.items()):
        raise InputError("index has no 'weight_map' object of tensor name -> shard file name", source=name)
    for tensor, shard in wm.items():
        if os.path.isabs(shard) or ".." in shard.replace("\\", "/").split("/") or not shard:
            raise InputError(f"shard {quote(shard)} of tensor {quote(tensor)} is not a file name inside the "
                             f"index's folder", source=name)
    return ShardIndex(name, dict(wm))


def check_index_shards(index: ShardIndex, present: Callable[[str], bool]) -> None:
    """InputError naming the first shard of ``index`` for which ``present(shard file name)`` is false (a file
    that does not exist, or was not among the files picked), and one tensor the index puts there."""
    for shard in index.shards:
        if not present(shard):
            first = next(t for t, sh in index.weight_map.items() if sh == shard)
            raise InputError(f"shard {quote(os.path.basename(shard))} named in the index (tensor {quote(first)}, ...) "
                             f"is missing", source=index.name)


def combine_files(parts: Sequence[Checkpoint], indexes: Sequence[ShardIndex] = ()) -> Checkpoint:
    """One checkpoint from the checkpoints of single files (their order kept), checked as a whole: a tensor
    name in two files is an InputError naming both; so is a tensor of an index that is not in the shard the
    index names (compared by base name: a page knows files by base name only). ``metadata``: the first
    non-empty one (a GGUF's)."""
    files: list[FileId] = []
    tensors: list[TensorEntry] = []
    meta: dict = {}
    seen: dict[str, str] = {}
    for part in parts:
        files.extend(part.files)
        meta = meta or part.metadata
        for t in part.tensors:
            if t.name in seen:
                raise InputError(f"tensor {quote(t.name)} is in both {quote(seen[t.name])} and "
                                 f"{quote(t.file.name)}", source=t.file.name)
            seen[t.name] = t.file.name
            tensors.append(t)
    for index in indexes:
        for t, shard in index.weight_map.items():
            if t not in seen:
                raise InputError(f"the index names tensor {quote(t)} in shard {quote(shard)}, but that shard has "
                                 f"no such tensor", source=index.name)
            if os.path.basename(seen[t]) != os.path.basename(shard):
                raise InputError(f"the index puts tensor {quote(t)} in {quote(shard)} but it is in "
                                 f"{quote(seen[t])}", source=index.name)
    return Checkpoint(tuple(files), tuple(tensors), meta)


def _expand(path: str) -> list[tuple[str, str]]:
    """(kind, path) items for one command-line argument."""
    if not is_url(path) and os.path.isdir(path):
        entries = sorted(os.listdir(path))
        idx = [e for e in entries if e.endswith(".safetensors" + INDEX_SUFFIX)]
        if len(idx) > 1:
            raise InputError(f"the folder has {len(idx)} safetensors index files; give one", source=path)
        if idx:
            return [("index", os.path.join(path, idx[0]))]
        for ext, kind in ((".safetensors", "safetensors"), (".gguf", "gguf"), (".npz", "npz")):
            files = [os.path.join(path, e) for e in entries if e.endswith(ext)]
            if files:
                if kind != "safetensors" and len(files) > 1:
                    raise InputError(f"the folder has {len(files)} {ext} files; give them as separate paths",
                                     source=path)
                return [(kind, f) for f in files]
        raise InputError("the folder has no .safetensors, .gguf or .npz file", source=path)
    if path.endswith(INDEX_SUFFIX) or path.endswith(".json"):
        return [("index", path)]
    if is_url(path):
        for ext in ("safetensors", "gguf", "npz"):
            if path.endswith("." + ext):
                return [(ext, path)]
        raise InputError("a URL must end in .safetensors, .gguf, .npz or .index.json", source=path)
    if not os.path.exists(path):
        raise InputError("no such file or folder", source=path)
    kind = detect_kind(Source(path))
    if kind not in ("safetensors", "gguf", "npz"):
        raise InputError(f"a checkpoint is .safetensors, .gguf or .npz; this looks like {kind}", source=path)
    return [(kind, path)]


def open_checkpoint(paths: list[str] | tuple[str, ...] | str, limits: Limits = Limits()) -> Checkpoint:
    """Parse and validate every header of a checkpoint given as files, folders and/or an index (the checks
    across files: :func:`check_index_shards`, then :func:`combine_files`)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    items: list[tuple[str, str]] = []   # (kind, path)
    indexes: list[ShardIndex] = []
    for p in map(os.fspath, paths):
        for kind, f in _expand(p):
            if kind != "index":
                items.append((kind, f))
                continue
            index = read_index(_RangeSource(f, os.path.basename(f)), limits)
            base = f[: -len(os.path.basename(f))] if not is_url(f) else f.rsplit("/", 1)[0] + "/"
            check_index_shards(index, lambda shard: is_url(base + shard) or os.path.isfile(base + shard))
            items.extend(("safetensors", base + s) for s in index.shards)
            indexes.append(index)
    parts: list[Checkpoint] = []
    seen_paths: set[str] = set()
    roots = {os.path.dirname(os.path.abspath(p)) for _, p in items if not is_url(p)}
    common = os.path.commonpath(list(roots)) if roots else ""
    for kind, path in items:
        key = path if is_url(path) else os.path.abspath(path)
        if key in seen_paths:
            continue
        seen_paths.add(key)
        name = os.path.relpath(os.path.abspath(path), common) if (common and not is_url(path)) else \
            os.path.basename(path.rstrip("/"))
        meta: dict = {}
        if kind == "safetensors":
            fid, ts = _safetensors_file(path, name, limits)
        elif kind == "gguf":
            fid, ts, meta = _gguf_file(path, name, limits)
        else:
            fid, ts = _npz_file(path, name, limits)
        parts.append(Checkpoint((fid,), tuple(ts), meta))
    return combine_files(parts, indexes)


# --- reading rows ----------------------------------------------------------------------------------

def check_unchanged(fid: FileId, where: str) -> None:
    """InputError when the file's size or mtime differ from those seen at header time."""
    try:
        size, mtime = _stat(fid.path)
    except OSError as e:
        raise InputError(f"cannot open file: {e.strerror or e}", source=fid.name, where=where) from None
    if size != fid.size or (mtime != fid.mtime_ns and fid.mtime_ns and mtime):
        raise InputError(f"file changed since its header was read (size {fid.size:,} -> {size:,} bytes, "
                         f"mtime {'changed' if mtime != fid.mtime_ns else 'same'}); rerun the scan",
                         source=fid.name, where=where)


def _scratch(scratch: dict | None, key: str, n: int, dtype) -> np.ndarray:
    """``n`` elements of a buffer kept in ``scratch`` (grown when too small), or a new array."""
    if scratch is None:
        return np.empty(n, dtype)
    a = scratch.get(key)
    if a is None or a.size < n or a.dtype != dtype:
        a = scratch[key] = np.empty(n, dtype)
    return a[:n]


def read_rows(t: TensorEntry, r0: int, r1: int, scratch: dict | None = None) -> np.ndarray:
    """Axis-0 slices ``[r0, r1)`` of tensor ``t`` decoded to float32 (float64 for F64), shape
    ``(r1 - r0, *t.shape[1:])`` (the whole tensor for 0-D/1-D). InputError naming the file and tensor
    when the file changed, is truncated, or the type cannot be decoded.

    ``scratch``: a dict owned by the caller in which the byte and decode buffers are kept and reused
    from call to call (no fresh pages to fault in per chunk); the result is then a view of those
    buffers, valid until the next call with the same dict."""
    where = f"tensor {quote(t.name)}"
    if not t.loadable:
        raise InputError(f"{t.dtype} data cannot be decoded", source=t.file.name, where=where)
    if not 0 <= r0 < r1 <= t.n_rows:
        raise ValueError(f"rows [{r0}, {r1}) outside the {t.n_rows} rows of {t.name!r}")
    if t.file.kind == "npz":
        check_unchanged(t.file, where)
        z = _npy.Npz(_RangeSource(t.file.path, t.file.name), Limits(max_bytes=max(Limits().max_bytes, t.nbytes),
                                                                     max_elements=max(Limits().max_elements,
                                                                                      t.n_elements)))
        arr, _ = z.load(t.name)
        check_unchanged(t.file, where)
        return np.ascontiguousarray(arr[r0:r1] if len(t.shape) >= 2 else arr)
    start, n = row_span(t, r0, r1)
    check_unchanged(t.file, where)
    buf = _scratch(scratch, "raw", n, np.uint8)
    try:
        with _open(t.file.path) as f:
            f.seek(start)
            got = f.readinto(memoryview(buf)) if hasattr(f, "readinto") else None
            if got is None:
                data = f.read(n)
                got = len(data)
                buf[:got] = np.frombuffer(data, np.uint8)
    except OSError as e:
        raise InputError(f"cannot read file: {e.strerror or e}", source=t.file.name, where=where,
                         offset=start) from None
    if got != n:
        raise InputError(f"file is truncated: rows {r0}..{r1} need bytes {start:,}..{start + n:,} but only "
                         f"{got:,} could be read", source=t.file.name, where=where, offset=start + got)
    check_unchanged(t.file, where)
    return decode_rows(t, buf, r0, r1, scratch)


def row_span(t: TensorEntry, r0: int, r1: int) -> tuple[int, int]:
    """``(offset, nbytes)`` in the file of axis-0 slices ``[r0, r1)`` of ``t``."""
    return t.offset + r0 * t.row_bytes, (r1 - r0) * t.row_bytes


def decode_rows(t: TensorEntry, raw, r0: int, r1: int, scratch: dict | None = None) -> np.ndarray:
    """Decode the stored bytes of axis-0 slices ``[r0, r1)`` of ``t`` (``raw``: bytes or a uint8 array,
    exactly :func:`row_span`'s ``nbytes``) to float32 (float64 for F64), as :func:`read_rows` returns them;
    ``scratch`` as there."""
    shape = (r1 - r0, *t.shape[1:]) if len(t.shape) >= 2 else t.shape
    buf = raw if isinstance(raw, np.ndarray) else np.frombuffer(raw, np.uint8)
    if buf.size != (r1 - r0) * t.row_bytes:
        raise ValueError(f"rows [{r0}, {r1}) of {t.name!r} are {(r1 - r0) * t.row_bytes:,} bytes, got {buf.size:,}")
    if t.dtype in _FLOAT_DTYPES:
        file_dt, out_dt = _FLOAT_DTYPES[t.dtype]
        a = buf.view(file_dt)
        if t.dtype == "BF16":  # widen in place: raw bytes + one float32 chunk, no third buffer
            u = _scratch(scratch, "wide", a.size, np.uint32)
            np.copyto(u, a)
            u <<= np.uint32(16)
            a = u.view(np.float32)
        elif a.dtype != out_dt:
            out = _scratch(scratch, "wide32", a.size, out_dt)
            np.copyto(out, a)
            a = out
    else:
        a = _gguf.dequantize_blocks(t.dtype, buf)
    return a.reshape(shape)
