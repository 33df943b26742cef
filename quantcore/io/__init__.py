"""quantcore.io -- safe readers for user data: pasted text, CSV, .npy/.npz, .safetensors, .gguf.

Pure numpy + standard library (runs in Pyodide).  Every reader accepts raw ``bytes`` (a browser
upload) or a path (the CLI), and signals bad input ONLY with :class:`InputError` (a ``ValueError``
subclass with ``line``/``column``/``offset``/``source``) whose one-line message says where and what.
Programming errors (an invalid ``nonfinite=`` or ``channels_as=`` option) are plain ``ValueError``.

Formats (details in each module's docstring):
  text (.txt / pasted)  quantcore.io.text       one channel per line or ';', optional ``name:``
  manual lines          quantcore.io.text       ``channel, scale, zero_point, sample``
  CSV (.csv, .tsv)      quantcore.io.text       header auto/True/False, channels as rows or columns
  .npy / .npz           quantcore.io.npy        numeric dtypes only, never pickle
  .safetensors          quantcore.io.safetensors own parser; F64/F32/F16/BF16/I8/U8/I16/I32
  .gguf                 quantcore.io.gguf       own parser (v2/v3); F32/F16/BF16/F64/I8/I16/I32,
                                                and every quantcore.ggml type (Q4_0..Q8_0, Q2_K..Q6_K,
                                                IQ4_NL/XS, TQ1_0/TQ2_0, MXFP4) dequantized as llama.cpp

Limits (:class:`Limits`): element, byte and header caps are checked from DECLARED sizes before any
large allocation; the message states the size found and the cap.

Non-finite values: ``nonfinite="error"`` (default) raises an InputError with the count and the first
5 positions; ``"drop"`` removes them from text channels (a channel left empty is an error).  For
binary tensors ``"drop"`` is refused when non-finite values exist (removing elements would break
the tensor's shape); a tensor without them loads under either policy.

SECURITY: names coming from files -- tensor names, channel labels, CSV headers, GGUF metadata -- are
untrusted text returned as plain ``str``.  They may contain HTML, JavaScript, right-to-left marks and
(in binary formats) control characters; text inputs refuse C0/C1 controls.  Every renderer (HTML,
Bokeh/Panel widgets that render HTML, PDF, CSV export, terminal) must escape them; :func:`printable`
does it for terminal and plain-text output.  InputError messages quote such text with ``repr()`` (one
line), but they are untrusted too and must be escaped when shown in HTML or printed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from . import gguf as _gguf
from . import npy as _npy
from . import safetensors as _st
from ._common import InputError, Limits, check_policy, nonfinite_in_tensor, printable, quote
from ._source import Source, detect_kind
from .text import ManualRows, ParsedText, decode_utf8, parse_manual, parse_text, read_csv

__all__ = [
    "InputError", "Limits", "ParsedText", "ManualRows", "TensorInfo", "LoadedTensor", "LoadedInput",
    "parse_text", "parse_manual", "read_csv", "list_tensors", "load_tensor", "load_input",
    "read_metadata", "detect_kind_of", "printable",
]

SourceLike = bytes | bytearray | memoryview | str | os.PathLike | Source


@dataclass(frozen=True)
class TensorInfo:
    """One tensor in a file.  ``dtype`` is the dtype in the file as a string ("float32", "F16",
    "Q4_0", ...); ``ggml_type`` is the GGML type name for .gguf (else None); ``loadable`` says
    whether :func:`load_tensor` supports it.  ``name`` is untrusted text."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    ggml_type: str | None = None
    loadable: bool = True

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class LoadedTensor:
    """A loaded tensor.  ``array`` is a C-contiguous float32/float64 ndarray -- except for ragged
    text (channels of different lengths), where it is a list of 1-D float64 arrays (the form
    ``quantcore.analyze`` accepts).  ``channel_names`` is set for text/CSV, None for binary."""

    name: str
    array: np.ndarray | list[np.ndarray]
    dtype_in_file: str
    channel_names: list[str] | None = None


@dataclass(frozen=True)
class LoadedInput:
    """What the CLI/app analyses: ``data`` (ndarray, or list of 1-D float64 arrays for ragged text),
    ``channel_names`` (text/CSV) or None, ``name`` (tensor or file name), ``kind`` (detected kind)."""

    data: np.ndarray | list[np.ndarray]
    channel_names: list[str] | None
    name: str
    kind: str = "text"


def detect_kind_of(source: SourceLike, *, filename: str | None = None) -> str:
    """'npy', 'npz', 'safetensors', 'gguf', 'csv' or 'text' (see quantcore.io._source)."""
    return detect_kind(Source(source, filename))


def _open(source: SourceLike, filename: str | None) -> tuple[Source, str]:
    src = source if isinstance(source, Source) else Source(source, filename)
    return src, detect_kind(src)


def list_tensors(source: SourceLike, *, filename: str | None = None,
                 limits: Limits = Limits()) -> list[TensorInfo]:
    """Tensors in a file (headers only; data is not read).  Text/CSV lists one entry, the channels."""
    src, kind = _open(source, filename)
    try:
        if kind == "npy":
            h = _npy.npy_info(src, limits)
            return [TensorInfo(_stem(src), h.shape, h.dtype.name)]
        if kind == "npz":
            z = _npy.Npz(src, limits)
            out = []
            for key, info in z.members.items():
                h = z.header(key)
                _npy.check_npy_size(h, info.file_size, limits, src.name,
                                    where=f"member {quote(info.filename)}", enforce_limits=False)
                out.append(TensorInfo(key, h.shape, h.dtype.name))
            return out
        if kind == "safetensors":
            h = _st.parse_header(src, limits)
            return [TensorInfo(e.name, e.shape, e.dtype, None, _st.DTYPES[e.dtype][2] is not None)
                    for e in h.entries.values()]
        if kind == "gguf":
            g = _gguf.parse(src, limits)
            return [TensorInfo(t.name, t.shape, t.type_name, t.type_name, t.loadable)
                    for t in g.tensors]
        lt = _load_text(src, kind, limits, "error", allow_nonfinite=True)
        arr = lt.array
        shape = arr.shape if isinstance(arr, np.ndarray) else (len(arr),)
        return [TensorInfo(lt.name, tuple(shape), lt.dtype_in_file)]
    except InputError as e:
        raise e.with_source(src.name) from None


def read_metadata(source: SourceLike, *, filename: str | None = None,
                  limits: Limits = Limits()) -> dict:
    """File-level metadata: GGUF key/values (numbers, strings, lists), safetensors ``__metadata__``;
    {} for other kinds.  Keys and values are untrusted text."""
    src, kind = _open(source, filename)
    if kind == "gguf":
        return dict(_gguf.parse(src, limits).metadata)
    if kind == "safetensors":
        return dict(_st.parse_header(src, limits).metadata)
    return {}


def _stem(src: Source) -> str:
    if not src.filename:
        return "input"
    base = os.path.basename(src.filename)
    return base.rsplit(".", 1)[0] if "." in base else base


def _pick(names: list[str], name: str | None, src: Source) -> str:
    if name is None:
        if len(names) == 1:
            return names[0]
        if not names:
            raise InputError("the file contains no tensors", source=src.name)
        shown = ", ".join(quote(n) for n in names[:10]) + (" ..." if len(names) > 10 else "")
        raise InputError(f"the file has {len(names)} tensors; choose one by name (--tensor NAME): "
                         f"{shown}", source=src.name)
    if name not in names:
        close = [n for n in names if name.lower() in n.lower()][:5]
        hint = f"; similar: {', '.join(quote(n) for n in close)}" if close else ""
        raise InputError(f"no tensor named {quote(name)} ({len(names)} tensors in the file{hint})",
                         source=src.name)
    return name


def _load_text(src: Source, kind: str, limits: Limits, nonfinite: str, *, channels_as: str = "rows",
               allow_nonfinite: bool = False) -> LoadedTensor:
    data = src.whole(limits, "text file", view=True)
    text = decode_utf8(data, src.name)
    del data
    pol = "drop" if allow_nonfinite else nonfinite
    if kind == "csv":
        pt = read_csv(text, channels_as=channels_as, limits=limits, nonfinite=pol, source=src.name)
    else:
        pt = parse_text(text, limits=limits, nonfinite=pol, source=src.name)
    return LoadedTensor(_stem(src), pt.as_array(), "float64 (text)", list(pt.names))


def load_tensor(source: SourceLike, *, name: str | None = None, filename: str | None = None,
                limits: Limits = Limits(), nonfinite: str = "error",
                channels_as: str = "rows") -> LoadedTensor:
    """Load one tensor (chosen by ``name`` when the file has several) as float32/float64.

    Text/CSV: equal-length channels give a 2-D float64 array, ragged ones a list of 1-D arrays.
    """
    check_policy(nonfinite)
    src, kind = _open(source, filename)
    try:
        if kind in ("text", "csv"):
            if name is not None and name != _stem(src):
                raise InputError(f"text files hold one tensor ({quote(_stem(src))}); no tensor named "
                                 f"{quote(name)}", source=src.name)
            return _load_text(src, kind, limits, nonfinite, channels_as=channels_as)
        if kind == "npy":
            stem = _stem(src)
            if name is not None and name != stem:
                raise InputError(f".npy files hold one array ({quote(stem)}); no tensor named "
                                 f"{quote(name)}", source=src.name)
            arr, dt = _npy.load_npy(src, limits)
            tname = stem
        elif kind == "npz":
            z = _npy.Npz(src, limits)
            tname = _pick(list(z.members), name, src)
            arr, dt = z.load(tname)
        elif kind == "safetensors":
            h = _st.parse_header(src, limits)
            tname = _pick(list(h.entries), name, src)
            e = h.entries[tname]
            arr, dt = _st.load_entry(src, h, e, limits), e.dtype
        else:
            g = _gguf.parse(src, limits)
            tname = _pick([t.name for t in g.tensors], name, src)
            t = g.by_name[tname]
            arr, dt = _gguf.load(src, g, t, limits), t.type_name
        nonfinite_in_tensor(arr, tname, nonfinite, source=src.name)
        return LoadedTensor(tname, arr, dt, None)
    except InputError as e:
        raise e.with_source(src.name) from None


def load_input(source: SourceLike, *, tensor: str | None = None, filename: str | None = None,
               limits: Limits = Limits(), nonfinite: str = "error",
               channels_as: str = "rows") -> LoadedInput:
    """The single entry point for any INPUT file (CLI and app): detect the kind, load, return data."""
    src, kind = _open(source, filename)
    lt = load_tensor(source, name=tensor, filename=filename, limits=limits, nonfinite=nonfinite,
                     channels_as=channels_as)
    return LoadedInput(lt.array, lt.channel_names, lt.name, kind)
