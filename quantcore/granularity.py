"""Granularity as data: which elements share one scale and zero-point.

Every scheme is reduced to one shape, a 2-D *block view* ``(n_blocks, block_len)``: quantization
parameters are then reductions over axis 1 (:func:`block_minmax`), broadcast back with ``keepdims``.
Per-tensor is one block holding everything, per-channel one block per channel, per-group one block per
run of ``size`` consecutive elements along the group axis, per-block one block per ``rows x cols`` tile
of two axes (DeepSeek-V3's 128 x 128 FP8 weight tiles). Integer, float, codebook and GGUF schemes all
quantize this one view.

The input is first put in a *canonical layout* ``(C, R, D)``: C channels (the channel axis moved to
the front), D elements along the group axis (moved to the back), R every other index. A 1-D input is a
single channel. Ragged input (a list of rows of different lengths, as pasted text gives) becomes
``(C, 1, Dmax)`` padded by repeating each row's last value, with a ``valid`` mask; padding by
repetition keeps every block's min and max exact without a mask.

A last, shorter group (D not a multiple of ``size``) is its own block with its own scale: it is padded
to ``size`` by repeating its last element and the padding is masked out of every metric. Per-block tiles
at the edges are padded the same way along both tile axes (repeating the last row / column keeps every
tile's min, max and amax exact).

Statistics rows. Metrics are kept per *statistics row*, the finest cut of the block view in which every
row lies in one block and one channel: a per-tensor block is cut into its C channel rows, a per-block tile
into its ``rows`` channel rows, every other block is one row. Per-block and per-channel statistics are
then sums (maxima) over runs of these rows (:meth:`BlockView.block_stats`, :meth:`BlockView.channel_stats`),
so one pass serves the block table, the channel table and the totals.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

from .metrics import combine_rows


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
        object.__setattr__(self, "size", int(self.size))

    @property
    def label(self) -> str:
        return f"per-group {self.size}"


@dataclass(frozen=True)
class PerBlock:
    """One scale per 2-D tile of ``shape = (rows, cols)`` elements over ``axes = (row_axis, col_axis)``.

    For a weight ``(out, in)`` with the defaults this is DeepSeek-V3's FP8 weight scaling: one scale per
    128 x 128 tile (``weight_scale_inv`` of shape ``(ceil(out/128), ceil(in/128))``). Tiles at the edges
    are smaller and keep their own scale; every other axis indexes separate tiles. Channels (for the
    per-channel table) run along ``row_axis``.
    """

    shape: tuple[int, int] = (128, 128)
    axes: tuple[int, int] = (0, -1)

    def __post_init__(self) -> None:
        shape, axes = tuple(self.shape), tuple(self.axes)
        if len(shape) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0
                                  for v in shape):
            raise ValueError(f"block shape must be two positive integers (rows, cols), got {self.shape!r}")
        if len(axes) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in axes):
            raise ValueError(f"block axes must be two integers (row axis, column axis), got {self.axes!r}")
        object.__setattr__(self, "shape", tuple(int(v) for v in shape))
        object.__setattr__(self, "axes", tuple(int(v) for v in axes))

    @property
    def label(self) -> str:
        return f"per-block {self.shape[0]}x{self.shape[1]}"


Granularity = Union[PerTensor, PerChannel, PerGroup, PerBlock]
GRANULARITIES = (PerTensor, PerChannel, PerGroup, PerBlock)


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

    ``valid`` masks padding (None: no padding). ``channel_of_block`` names the (first) channel each
    block holds (-1 for a per-tensor block spanning all channels). ``tile`` is ``(channels per block,
    elements per channel row)``: a block is ``tile[0]`` statistics rows of ``tile[1]`` elements (module
    docstring). ``pad`` is the padding added along C and along D of the canonical ``(C, R, D)`` layout.
    """

    values: np.ndarray
    valid: np.ndarray | None
    channel_of_block: np.ndarray
    granularity: Granularity
    layout: tuple[int, int, int]   # (C, R, D) of the canonical tensor
    tile: tuple[int, int]          # (channel rows per block, elements per row)
    pad: tuple[int, int] = (0, 0)  # (along C, along D)

    @property
    def n_blocks(self) -> int:
        return self.values.shape[0]

    @property
    def n_data_blocks(self) -> int:
        """Blocks holding at least one real element (ragged rows can leave groups of pure padding)."""
        return self.n_blocks if self.valid is None else int(np.count_nonzero(self.valid.any(axis=1)))

    # --- statistics rows -----------------------------------------------------------------------
    @property
    def rows_shape(self) -> tuple[int, int]:
        """Shape of the statistics rows: ``(n_blocks * tile[0], tile[1])``, a reshape of ``values``."""
        return self.n_blocks * self.tile[0], self.tile[1]

    def rows(self, a: np.ndarray) -> np.ndarray:
        """A block-layout array viewed as statistics rows (no copy)."""
        return a.reshape(self.rows_shape)

    def _leading_channels(self, channels: int) -> int:
        """Channels (padding included) of the smallest prefix of blocks holding channels ``[0, channels)``:
        blocks run channel-major, per-block tiles ``tile[0]`` channels at a time."""
        lead = self.granularity.shape[0] if isinstance(self.granularity, PerBlock) else 1
        return -(-channels // lead) * lead

    def rows_of_channels(self, channels: int) -> int:
        """How many statistics rows -- always a prefix of them -- hold every element of channels
        ``[0, channels)``: what a per-element table of the first channels has to compute."""
        C, R, D = self.layout
        n_elements = self._leading_channels(min(channels, C)) * R * (D + self.pad[1])
        return min(self.rows_shape[0], -(-n_elements // self.tile[1]))

    def block_stats(self, row_stats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per-block statistics from per-row ones: each block is ``tile[0]`` consecutive rows."""
        return row_stats if self.tile[0] == 1 else combine_rows(row_stats, self.n_blocks)

    def channel_stats(self, row_stats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per-channel statistics from per-row ones. Rows are ordered ``(channel block, other indices,
        channel within the block)``: sum (max) over the middle index, drop padded channels."""
        C = self.layout[0]
        k = self.tile[0]
        if k == 1:
            return combine_rows(row_stats, C)
        out = {}
        for key, v in row_stats.items():
            v = v.reshape(-(-C // k), -1, k)
            r = v.max(axis=1) if key == "max_abs" else v.sum(axis=1)
            out[key] = r.reshape(-1)[:C]
        return out

    def row_name(self, r: int) -> str:
        """Where statistics row ``r`` lies, for messages: a channel, or a block and its channel."""
        k = self.tile[0]
        if isinstance(self.granularity, (PerTensor, PerChannel)):
            return f"channel {r}"
        b = r // k
        ch = int(self.channel_of_block[b]) + r % k
        return f"block {b} (channel {ch})"

    # --- back to the tensor --------------------------------------------------------------------
    def to_canonical(self, a: np.ndarray, channels: int | None = None) -> np.ndarray:
        """Inverse of :func:`block_view` for a per-element array: drop padding, return ``(C, R, D)``.

        ``channels``: ``a`` holds only the first :meth:`rows_of_channels` rows (the blocks of channels
        ``[0, channels)``); returns those channels, ``(channels, R, D)``."""
        C, R, D = self.layout
        pc, pd = self.pad
        if channels is not None:
            lead = self._leading_channels(min(channels, C))
            C, pc = min(C, lead), lead - min(C, lead)
            a = a.reshape(-1)[:lead * R * (D + pd)]
            return self._from_blocks(a, C, pc)[:channels]
        return self._from_blocks(a, C, pc)

    def _from_blocks(self, a: np.ndarray, C: int, pc: int) -> np.ndarray:
        _, R, D = self.layout
        pd = self.pad[1]
        if isinstance(self.granularity, PerBlock):
            bo, bi = self.granularity.shape
            a = a.reshape((C + pc) // bo, R, (D + pd) // bi, bo, bi).transpose(0, 3, 1, 2, 4)
            a = a.reshape(C + pc, R, D + pd)
            return a[:C, :, :D] if (pc or pd) else a
        a = a.reshape(C, R, D + pd)
        return a[..., :D] if pd else a

    def storage_order(self, t: "Canonical") -> np.ndarray:
        """Block indices in *storage order*: the input's row-major order with the group (column) axis
        last, as a runtime flattens the tensor (bitsandbytes / torchao: consecutive blocks of the flat
        tensor). Equal to ``arange(n_blocks)`` unless the canonical layout moved the channel axis past
        other axes. Scale rules whose result depends on block order (double quantization) use it."""
        n = self.n_blocks
        if t.perm is None or len(t.perm) <= 2 or isinstance(self.granularity, (PerTensor, PerChannel)):
            return np.arange(n)
        C, R, D = self.layout
        pc, pd = self.pad
        if isinstance(self.granularity, PerBlock):
            lead, nd = (C + pc) // self.granularity.shape[0], (D + pd) // self.granularity.shape[1]
        else:
            lead, nd = C, (D + pd) // self.tile[1]
        rest = [t.input_shape[a] for a in t.perm[1:-1]]
        grid = np.arange(n).reshape(lead, *rest, nd)
        order = np.argsort(t.perm[:-1])   # canonical non-group axes -> their input order
        return np.transpose(grid, (*order, len(t.perm) - 1)).reshape(-1)


def block_view(t: Canonical, g: Granularity) -> BlockView:
    """Reshape a canonical tensor to ``(n_blocks, block_len)`` for granularity ``g`` (a view where possible;
    per-block tiles are a copy)."""
    C, R, D = t.values.shape
    if isinstance(g, PerTensor):
        vals = t.values.reshape(1, -1)
        valid = None if t.valid is None else t.valid.reshape(1, -1)
        return BlockView(vals, valid, np.array([-1]), g, (C, R, D), (C, R * D))
    if isinstance(g, PerChannel):
        vals = t.values.reshape(C, -1)
        valid = None if t.valid is None else t.valid.reshape(C, -1)
        return BlockView(vals, valid, np.arange(C), g, (C, R, D), (1, R * D))
    if isinstance(g, PerGroup):
        size = int(g.size)
        n_groups = -(-D // size)
        vals, valid = _edge_pad(t, 0, n_groups * size - D)
        vals = vals.reshape(-1, size)
        valid = None if valid is None else valid.reshape(-1, size)
        channel = np.repeat(np.arange(C), R * n_groups)
        return BlockView(vals, valid, channel, g, (C, R, D), (1, size), (0, n_groups * size - D))
    if isinstance(g, PerBlock):
        bo, bi = g.shape
        cb, db = -(-C // bo), -(-D // bi)
        vals, valid = _edge_pad(t, cb * bo - C, db * bi - D)
        def tiles_of(a: np.ndarray) -> np.ndarray:
            return a.reshape(cb, bo, R, db, bi).transpose(0, 2, 3, 1, 4).reshape(-1, bo * bi)
        channel = np.repeat(np.arange(cb) * bo, R * db)
        return BlockView(tiles_of(vals), None if valid is None else tiles_of(valid), channel, g, (C, R, D),
                         (bo, bi), (cb * bo - C, db * bi - D))
    raise TypeError(f"unknown granularity {g!r}")


def _edge_pad(t: Canonical, pad_c: int, pad_d: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``t.values`` padded along C and D by repeating the last channel / element (min/max stay exact),
    and the validity mask (None when nothing is padded and every element is real)."""
    if not (pad_c or pad_d):
        return t.values, t.valid
    widths = ((0, pad_c), (0, 0), (0, pad_d))
    vals = np.pad(t.values, widths, mode="edge")
    base = t.valid if t.valid is not None else np.ones(t.values.shape, dtype=bool)
    return vals, np.pad(base, widths, constant_values=False)


def block_minmax(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row min and max of a 2-D block array (padding repeats real elements: no mask needed).

    NaN and inf propagate (a block holding one has a NaN / infinite min or max). Long rows are reduced
    in tiles of whole rows, so the max reads each tile from cache after the min (one pass over memory, not
    two); short rows tile by tile on a transposed copy so the reduction runs along contiguous memory
    (numpy reduces a short contiguous row one row at a time). Either way the result is the same, min and
    max being exact.
    """
    nb, w = values.shape
    if nb < 64:
        return values.min(axis=1), values.max(axis=1)
    mn = np.empty(nb, values.dtype)
    mx = np.empty(nb, values.dtype)
    if w >= 64:
        step = max(1, LONG_ROWS_TILE_ELEMENTS // w)
        for r0 in range(0, nb, step):
            t = values[r0:r0 + step]
            np.minimum.reduce(t, axis=1, out=mn[r0:r0 + step])
            np.maximum.reduce(t, axis=1, out=mx[r0:r0 + step])
        return mn, mx
    step = max(1, TILE_ROWS_ELEMENTS // w)
    buf = np.empty((w, min(step, nb)), values.dtype)
    for r0 in range(0, nb, step):
        r1 = min(r0 + step, nb)
        b = buf[:, :r1 - r0]
        np.copyto(b, values[r0:r1].T)
        np.minimum.reduce(b, axis=0, out=mn[r0:r1])
        np.maximum.reduce(b, axis=0, out=mx[r0:r1])
    return mn, mx


TILE_ROWS_ELEMENTS = 1 << 16   # elements per transposed tile of block_minmax / block_amax (256 KB of float32)
LONG_ROWS_TILE_ELEMENTS = 1 << 19   # block_minmax on rows >= 64: 2 MB of float32, min then max from cache


def block_amax(values: np.ndarray) -> np.ndarray:
    """float32 max |x| per row of a float32 block array; NaN if the row holds a NaN, inf if an inf (and no NaN).

    One reduction instead of min and max: an unsigned max of the magnitude bit patterns, which is monotone
    in |x| for non-negative floats, with NaN patterns above inf. Short rows (< 64) are reduced on
    transposed tiles, as in :func:`block_minmax`.
    """
    if values.dtype != np.float32:
        raise ValueError(f"block_amax takes float32 blocks, got {values.dtype}")
    nb, w = values.shape
    u = values.view(np.uint32)
    out = np.empty(nb, np.uint32)
    step = max(1, TILE_ROWS_ELEMENTS // w)
    if w >= 64 or nb < 64:
        for r0 in range(0, nb, step):
            np.max(np.bitwise_and(u[r0:r0 + step], np.uint32(0x7FFF_FFFF)), axis=1, out=out[r0:r0 + step])
        return out.view(np.float32)
    buf = np.empty((w, min(step, nb)), np.uint32)
    for r0 in range(0, nb, step):
        r1 = min(r0 + step, nb)
        b = buf[:, :r1 - r0]
        np.bitwise_and(u[r0:r1].T, np.uint32(0x7FFF_FFFF), out=b)
        np.maximum.reduce(b, axis=0, out=out[r0:r1])
    return out.view(np.float32)


def count_blocks(g: Granularity, shape: tuple[int, ...]) -> int:
    """Number of blocks ``g`` cuts a dense tensor of ``shape`` into (equal to ``block_view(...).n_blocks``;
    a 1-D or 0-D tensor is one channel)."""
    shape = tuple(shape) or (1,)
    n = math.prod(shape)
    if isinstance(g, PerTensor):
        return 1
    if isinstance(g, PerChannel):
        return shape[_normalize_axis(g.axis, len(shape), "channel axis")] if len(shape) > 1 else 1
    if isinstance(g, PerGroup):
        d = shape[_normalize_axis(g.axis, len(shape), "group axis")]
        return (n // d) * -(-d // g.size)
    if isinstance(g, PerBlock):
        if len(shape) < 2:
            raise ValueError("per-block tiles need a tensor with at least 2 dimensions")
        a0, a1 = (_normalize_axis(a, len(shape), "block axis") for a in g.axes)
        c, d = shape[a0], shape[a1]
        return (n // (c * d)) * -(-c // g.shape[0]) * -(-d // g.shape[1])
    raise TypeError(f"unknown granularity {g!r}")
