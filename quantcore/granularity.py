"""Granularity as data: which elements share one scale and zero-point.

Every scheme is reduced to one shape, a 2-D *block view* ``(n_blocks, block_len)``: quantization
parameters are then reductions over axis 1, broadcast back with ``keepdims``. Per-tensor is one block
holding everything, per-channel one block per channel, per-group one block per run of ``size``
consecutive elements along the group axis.

The input is first put in a *canonical layout* ``(C, R, D)``: C channels (the channel axis moved to
the front), D elements along the group axis (moved to the back), R every other index. A 1-D input is a
single channel. Ragged input (a list of rows of different lengths, as pasted text gives) becomes
``(C, 1, Dmax)`` padded by repeating each row's last value, with a ``valid`` mask; padding by
repetition keeps every block's min and max exact without a mask.

A last, shorter group (D not a multiple of ``size``) is its own block with its own scale: it is padded
to ``size`` by repeating its last element and the padding is masked out of every metric.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np


@dataclass(frozen=True)
class PerTensor:
    """One scale (and zero-point) for the whole tensor."""

    @property
    def label(self) -> str:
        return "per-tensor"


@dataclass(frozen=True)
class PerChannel:
    """One scale per index along ``axis`` (for a weight ``(out, in)``, axis 0 = per output channel)."""

    axis: int = 0

    @property
    def label(self) -> str:
        return "per-channel"


@dataclass(frozen=True)
class PerGroup:
    """One scale per run of ``size`` consecutive elements along ``axis`` within each row.

    For a weight ``(out, in)`` with ``axis=-1`` this is llama.cpp / GPTQ / AWQ / MatMulNBits grouping:
    groups of input features inside each output row.
    """

    size: int = 128
    axis: int = -1

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, (int, np.integer)) or self.size <= 0:
            raise ValueError(f"group size must be a positive integer, got {self.size!r}")

    @property
    def label(self) -> str:
        return f"per-group {self.size}"


Granularity = Union[PerTensor, PerChannel, PerGroup]


def _normalize_axis(axis: int, ndim: int, what: str) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"{what} {axis} is out of range for a tensor with {ndim} dimension(s)")
    return axis % ndim


@dataclass(frozen=True)
class Canonical:
    """A tensor in canonical layout ``(C, R, D)`` plus what is needed to map results back.

    ``values`` has the working dtype; ``valid`` is None when every element is real (not padding).
    """

    values: np.ndarray
    valid: np.ndarray | None
    input_shape: tuple[int, ...]
    perm: tuple[int, ...] | None   # axes permutation applied to the input (None: ragged or 1-D)
    ragged_lengths: np.ndarray | None

    @property
    def n_channels(self) -> int:
        return self.values.shape[0]

    @property
    def n_valid(self) -> int:
        return int(self.values.size if self.valid is None else np.count_nonzero(self.valid))

    def channel_rows(self, a: np.ndarray) -> np.ndarray:
        """View a canonical ``(C, R, D)`` array as ``(C, R*D)``: one row per channel."""
        return a.reshape(a.shape[0], -1)

    def from_input_layout(self, a: np.ndarray) -> np.ndarray:
        """Map a per-element array in the input's shape to the canonical ``(C, R, D)`` layout."""
        if self.perm is None:
            return a.reshape(self.values.shape)
        return np.transpose(a, self.perm).reshape(self.values.shape)

    def to_input_layout(self, a: np.ndarray) -> np.ndarray:
        """Map a canonical per-element array back to the input's shape (ragged: padded ``(C, Dmax)``)."""
        if self.perm is None:
            return a.reshape(a.shape[0], -1) if self.ragged_lengths is not None else a.reshape(self.input_shape)
        moved_shape = tuple(self.input_shape[p] for p in self.perm)
        return np.transpose(a.reshape(moved_shape), np.argsort(self.perm))


def canonical(x: np.ndarray | Sequence[np.ndarray], dtype: np.dtype, channel_axis: int = 0,
              group_axis: int | None = None) -> Canonical:
    """Put ``x`` in the ``(C, R, D)`` layout (see module docstring).

    float32/float64 arrays keep their dtype (a view when no axis moves); other inputs are cast to
    ``dtype``. Ragged rows are checked for NaN/inf here; dense arrays are checked by the caller.

    ``group_axis`` (per-group schemes) is moved last; otherwise the last axis stays last.
    Raises ValueError for empty input, empty channels and non-finite values, naming where.
    """
    if isinstance(x, np.ndarray):
        return _canonical_dense(x, dtype, channel_axis, group_axis)
    return _canonical_ragged(list(x), dtype, channel_axis, group_axis)


def check_finite(a: np.ndarray, where: str) -> None:
    """Raise ValueError naming the count and first positions of NaN/inf values in ``a``."""
    bad = ~np.isfinite(a)
    if bad.any():
        idx = np.argwhere(bad)
        first = ", ".join(str(tuple(int(i) for i in row)) for row in idx[:3])
        raise ValueError(f"{where} contains {int(bad.sum())} non-finite value(s) (NaN or inf), first at index {first}")


def _canonical_dense(x: np.ndarray, dtype: np.dtype, channel_axis: int, group_axis: int | None) -> Canonical:
    if x.dtype.kind not in "fiub":
        raise ValueError(f"tensor dtype {x.dtype} is not numeric")
    if x.ndim == 0:
        x = x.reshape(1)
    if x.size == 0:
        raise ValueError(f"tensor is empty (shape {x.shape})")
    # Float inputs keep their dtype (no full-size cast): kernels cast tile by tile. Finiteness is
    # checked by the caller on block min/max (NaN and inf propagate there), which costs no extra pass.
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else dtype
    if x.ndim == 1:
        values = np.asarray(x, dtype=dtype).reshape(1, 1, -1)
        _normalize_axis(channel_axis, 1, "channel axis")
        if group_axis is not None:
            _normalize_axis(group_axis, 1, "group axis")
        return Canonical(values, None, x.shape, None, None)
    c = _normalize_axis(channel_axis, x.ndim, "channel axis")
    if group_axis is None:
        # No grouping: D is just the trailing axis; when the channel axis is the last one, the one
        # before it plays that role (per-channel along the last axis must not collide with D).
        g = x.ndim - 1 if c != x.ndim - 1 else x.ndim - 2
    else:
        g = _normalize_axis(group_axis, x.ndim, "group axis")
    if g == c:
        raise ValueError(f"group axis {group_axis} is the channel axis {channel_axis}; choose different axes")
    rest = [a for a in range(x.ndim) if a not in (c, g)]
    perm = (c, *rest, g)
    moved = np.transpose(x, perm) if perm != tuple(range(x.ndim)) else x
    C, D = x.shape[c], x.shape[g]
    values = np.ascontiguousarray(moved, dtype=dtype).reshape(C, -1, D)
    return Canonical(values, None, x.shape, perm, None)


def _canonical_ragged(rows: list, dtype: np.dtype, channel_axis: int, group_axis: int | None) -> Canonical:
    if not rows:
        raise ValueError("no channels given (input is empty)")
    if channel_axis not in (0, -2):
        raise ValueError(f"channel axis {channel_axis} is out of range for channels given as rows (use 0)")
    arrays = [np.asarray(r, dtype=np.float64).reshape(-1) for r in rows]
    lengths = np.array([a.size for a in arrays], dtype=np.int64)
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        raise ValueError(f"channel {int(empty[0])} has no values")
    if group_axis is not None and group_axis not in (-1, 1):
        raise ValueError(f"ragged channels can only be grouped along their values (axis -1), got axis {group_axis}")
    kmax = int(lengths.max())
    flat = np.concatenate(arrays)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    bad = np.flatnonzero(~np.isfinite(flat))
    if bad.size:
        ch = int(np.searchsorted(starts, bad[0], side="right")) - 1
        raise ValueError(f"input contains {bad.size} non-finite value(s) (NaN or inf), first in channel {ch} "
                         f"at value index {int(bad[0] - starts[ch])} (0-based)")
    col = np.arange(kmax)
    valid = col[None, :] < lengths[:, None]
    # Pad each row with its own last value: keeps row min/max exact without masking.
    src = starts[:, None] + np.minimum(col[None, :], lengths[:, None] - 1)
    values = flat[src].astype(dtype, copy=False).reshape(len(arrays), 1, kmax)
    all_valid = bool(valid.all())
    return Canonical(values, None if all_valid else valid.reshape(len(arrays), 1, kmax),
                     (len(arrays), kmax), None, lengths)


@dataclass(frozen=True)
class BlockView:
    """The 2-D block view ``(n_blocks, block_len)`` of a canonical tensor for one granularity.

    ``valid`` masks padding (None: no padding). ``channel_of_block`` names the channel each block lies
    in (-1 for a per-tensor block spanning all channels).
    """

    values: np.ndarray
    valid: np.ndarray | None
    channel_of_block: np.ndarray
    pad: int                     # elements of padding added along D per (C, R) row
    layout: tuple[int, int, int]  # (C, R, D) of the canonical tensor

    @property
    def n_blocks(self) -> int:
        return self.values.shape[0]

    @property
    def n_data_blocks(self) -> int:
        """Blocks holding at least one real element (ragged rows can leave groups of pure padding)."""
        return self.n_blocks if self.valid is None else int(np.count_nonzero(self.valid.any(axis=1)))

    def to_canonical(self, a: np.ndarray) -> np.ndarray:
        """Inverse of :func:`block_view` for a per-element array: drop padding, return ``(C, R, D)``."""
        C, R, D = self.layout
        a = a.reshape(C, R, D + self.pad)
        return a[..., :D] if self.pad else a


def block_view(t: Canonical, g: Granularity) -> BlockView:
    """Reshape a canonical tensor to ``(n_blocks, block_len)`` for granularity ``g`` (a view where possible)."""
    C, R, D = t.values.shape
    if isinstance(g, PerTensor):
        vals = t.values.reshape(1, -1)
        valid = None if t.valid is None else t.valid.reshape(1, -1)
        return BlockView(vals, valid, np.array([-1]), 0, (C, R, D))
    if isinstance(g, PerChannel):
        vals = t.values.reshape(C, -1)
        valid = None if t.valid is None else t.valid.reshape(C, -1)
        return BlockView(vals, valid, np.arange(C), 0, (C, R, D))
    if isinstance(g, PerGroup):
        size = int(g.size)
        n_groups = -(-D // size)
        pad = n_groups * size - D
        if pad:
            vals = np.pad(t.values, ((0, 0), (0, 0), (0, pad)), mode="edge")
            base_valid = t.valid if t.valid is not None else np.ones((C, R, D), dtype=bool)
            valid = np.pad(base_valid, ((0, 0), (0, 0), (0, pad)), constant_values=False)
        else:
            vals, valid = t.values, t.valid
        vals = vals.reshape(-1, size)
        valid = None if valid is None else valid.reshape(-1, size)
        channel = np.repeat(np.arange(C), R * n_groups)
        return BlockView(vals, valid, channel, pad, (C, R, D))
    raise TypeError(f"unknown granularity {g!r}")
