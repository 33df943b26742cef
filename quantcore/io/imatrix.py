"""llama.cpp importance-matrix files (the output of ``llama-imatrix``), read as ``llama-quantize`` reads them.

Two formats (llama.cpp ``common/imatrix-loader.cpp`` and ``tools/quantize/quantize.cpp``, sdist 0.3.36):

* **GGUF** (current): per weight tensor ``NAME``, two F32 tensors ``NAME.in_sum2`` (sums of squared input
  activations, ``ne0`` per expert) and ``NAME.counts`` (tokens seen, one per expert). Importance =
  ``in_sum2 / count`` per expert, in float32, and 1 where the count is 0.
* **legacy** ``.dat``: int32 entry count; per entry int32 name length, the name, int32 ``ncall``, int32
  ``nval``, ``nval`` float32 values; optionally an int32 chunk count and an int32 length + dataset name.
  Importance = ``value / ncall`` in float32 when ``ncall > 0``, else the value.

Every length and count is checked against the bytes left before it is used; errors name the byte offset.
"""
from __future__ import annotations

import struct

import numpy as np

from . import gguf as _gguf
from ._common import InputError, Limits, quote
from ._source import Source

SUMS, COUNTS = ".in_sum2", ".counts"


def read_imatrix(source, *, filename: str | None = None, limits: Limits = Limits()) -> dict[str, np.ndarray]:
    """Importance vectors by weight-tensor name (float32, 1-D; ``n_expert * ne0`` values for expert tensors)
    from a llama.cpp imatrix file (path or bytes), GGUF or legacy. Raises InputError naming what and where."""
    src = source if isinstance(source, Source) else Source(source, filename)
    head = src.read(0, min(4, src.size), "the file's first bytes")
    try:
        entries = _read_gguf(src, limits) if head == b"GGUF" else _read_legacy(src, limits)
    except InputError as e:
        raise e.with_source(src.name) from None
    if not entries:
        raise InputError("the importance-matrix file holds no entries", source=src.name)
    return entries


def _read_gguf(src: Source, limits: Limits) -> dict[str, np.ndarray]:
    g = _gguf.parse(src, limits)
    sums = {t.name[:-len(SUMS)]: t for t in g.tensors if t.name.endswith(SUMS)}
    counts = {t.name[:-len(COUNTS)]: t for t in g.tensors if t.name.endswith(COUNTS)}
    if not sums and not counts:
        raise InputError(f"a GGUF file without '*{SUMS}' / '*{COUNTS}' tensors is not an importance matrix "
                         f"(is it a model?)")
    out = {}
    for name in sorted(set(sums) | set(counts)):
        if name not in sums or name not in counts:
            missing = SUMS if name not in sums else COUNTS
            raise InputError(f"tensor {quote(name + missing)} is missing: sums and counts come in pairs")
        s_t, c_t = sums[name], counts[name]
        for t in (s_t, c_t):
            if t.type_name != "F32":
                raise InputError(f"tensor {quote(t.name)} is {t.type_name}; an importance matrix stores F32",
                                 offset=t.info_offset)
        s = _gguf.load(src, g, s_t, limits).astype(np.float32).reshape(-1)
        c = _gguf.load(src, g, c_t, limits).astype(np.float32).reshape(-1)
        if c.size == 0 or s.size % c.size:
            raise InputError(f"{quote(name)}: {s.size} sums do not split into {c.size} experts",
                             offset=s_t.info_offset)
        c64 = c.astype(np.float64)                          # llama.cpp keeps lround(count): half away from 0
        count = np.trunc(c64 + np.copysign(0.5, c64)).astype(np.float32)
        per_expert = s.reshape(c.size, -1)
        with np.errstate(divide="ignore", invalid="ignore"):
            e = np.where(count[:, None] > 0, per_expert / count[:, None], np.float32(1))
        out[name] = e.astype(np.float32).reshape(-1)
    return out


def _read_legacy(src: Source, limits: Limits) -> dict[str, np.ndarray]:
    pos = 0

    def int32(what: str) -> int:
        nonlocal pos
        v = struct.unpack("<i", src.read(pos, 4, what))[0]
        pos += 4
        return v

    n = int32("the entry count")
    if n < 1:
        raise InputError(f"the entry count is {n}; a legacy imatrix file starts with a positive int32 "
                         f"(or is this not an imatrix file?)", offset=0)
    if 4 + n * 17 > src.size:   # an entry is at least a 1-byte name, its 3 int32 and one float32 value
        raise InputError(f"{n:,} entr{'y' if n == 1 else 'ies'} cannot fit in {src.size:,} bytes", offset=0)
    out: dict[str, np.ndarray] = {}
    for i in range(n):
        at = pos
        length = int32(f"entry {i + 1}'s name length")
        if not 0 < length <= 4096 or pos + length > src.size:
            raise InputError(f"entry {i + 1}: name length {length} is impossible here", offset=at)
        raw = src.read(pos, length, f"entry {i + 1}'s name")
        pos += length
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"entry {i + 1}: the name is not UTF-8", offset=at + 4) from None
        ncall = int32(f"entry {quote(name)}'s call count")
        at_n = pos
        nval = int32(f"entry {quote(name)}'s value count")
        if nval < 1 or pos + 4 * nval > src.size:
            raise InputError(f"entry {quote(name)}: {nval:,} values do not fit in the "
                             f"{src.size - pos:,} bytes left", offset=at_n)
        limits.check_elements(nval, f"entry {quote(name)}", offset=at_n)
        v = np.frombuffer(src.read(pos, 4 * nval, f"entry {quote(name)}'s values"), "<f4").astype(np.float32)
        pos += 4 * nval
        if name in out:
            raise InputError(f"entry {quote(name)} appears twice", offset=at)
        out[name] = (v / np.float32(ncall)).astype(np.float32) if ncall > 0 else v
    return out


def pick_imatrix(entries: dict[str, np.ndarray], names: list[str]) -> tuple[str, np.ndarray]:
    """The entry for the first of ``names`` (a tensor's own name, then other spellings) the file holds, or the
    only entry of a one-entry file; else InputError listing a few entries."""
    for name in names:
        if name and name in entries:
            return name, entries[name]
    if len(entries) == 1:
        return next(iter(entries.items()))
    shown = ", ".join(quote(k) for k in list(entries)[:5])
    wanted = " or ".join(quote(n) for n in names if n) or "(no tensor name given)"
    raise InputError(f"the importance matrix has no entry for {wanted}; it has {len(entries)} entries: "
                     f"{shown}{', ...' if len(entries) > 5 else ''}")


def default_entry(entries: dict[str, np.ndarray], names: list[str | None], row_length: int | None) -> str | None:
    """The entry to use first for a tensor: one named as the tensor (``names``: its name, other spellings),
    the only entry, else the first whose length is the tensor's row length; None when none fits."""
    for name in names:
        if name and name in entries:
            return name
    if len(entries) == 1:
        return next(iter(entries))
    return next((k for k, v in entries.items() if row_length is not None and v.size == row_length), None)
