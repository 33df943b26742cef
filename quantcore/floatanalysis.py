"""Float schemes (FP8, MXFP8/MXFP4, NVFP4, NF4) measured with the same tables as integer schemes.

:mod:`quantcore.microscaling` quantizes; this module puts the result in a :class:`QuantResult` so
metrics, per-channel tables, memory and exports are shared. Rows of the statistics are channels
(``channel_axis``). "Codes" are the element codes (uint8); a saturated element counts as clipped
(below when negative, above when positive). Boundary flags (the ``ties`` column) mark elements
whose scaled value lies within one float32/float64 ulp of a rounding boundary of the element grid.
"""
from __future__ import annotations

from functools import cached_property
from typing import Sequence

import numpy as np

from . import metrics as M
from .analysis import QuantResult
from .granularity import PerChannel, block_view, canonical
from .memory import Memory
from .microscaling import quantize_float_scheme
from .spec import QuantSpec


class FloatResult(QuantResult):
    """A :class:`QuantResult` for a float scheme; ``self.float`` is the microscaling result."""

    def __init__(self, spec: QuantSpec, fq, canon, blocks, xhat_rows: np.ndarray, sign_clip_rows: np.ndarray,
                 codes_rows: np.ndarray, channel_names: Sequence[str] | None) -> None:
        self.float = fq
        C = canon.n_channels
        rows = canon.values.reshape(C, -1)
        stats = M.row_stats(rows, xhat_rows, sign_clip_rows, 0, 0, None)
        mn, mx = rows.min(axis=1), rows.max(axis=1)
        # Effective scale per block: NVFP4's E4M3 block scale times its float32 tensor scale.
        scale = np.asarray(fq.block_scales, np.float64) * (fq.tensor_scale if fq.tensor_scale is not None else 1.0)
        super().__init__(spec, canon, blocks, mn, mx, scale,
                         np.zeros(len(fq.block_scales)), codes_rows, stats, None, channel_names,
                         raw=codes_rows.astype(np.float32), xhat=xhat_rows)

    @property
    def qmin(self) -> int:
        return 0

    @property
    def qmax(self) -> int:
        return (1 << self.float.scheme.element_format.bits) - 1

    @cached_property
    def memory(self) -> Memory:
        fq = self.float
        total = fq.total_bytes
        n = fq.n_elements
        return Memory(n, fq.n_blocks, float(fq.scheme.element_format.bits), fq.payload_bytes, fq.metadata_bytes,
                      total, fq.bits_per_weight, total / (4.0 * n), total / (2.0 * n))

    @cached_property
    def ties_blocks(self) -> np.ndarray:
        return self.canon.from_input_layout(self.float.boundary).reshape(self._q_b.shape) \
            if getattr(self.float, "boundary", None) is not None else np.zeros(self._q_b.shape, dtype=bool)

    def channel_table(self) -> dict[str, np.ndarray]:
        t = super().channel_table()
        kind = self.float.scheme.kind
        C = self.canon.n_channels
        if kind == "fp8_tensor":
            t["scale"] = np.full(C, float(self.scale[0]))
        elif kind == "fp8_channel" and len(self.scale) == C:
            t["scale"] = np.asarray(self.scale, np.float64)
        else:
            t["scale"] = np.full(C, np.nan)
        t["zero_point"] = np.full(C, np.nan)
        # The representable range per channel is +-scale * (largest element value); per block otherwise.
        amax = t["scale"] * float(self.float.scheme.element_format.max_finite)
        t["range_lo"], t["range_hi"] = -amax, amax
        return t


def analyze_float(x, spec: QuantSpec, channel_axis: int = 0,
                  channel_names: Sequence[str] | None = None, tensor_amax: float | None = None) -> FloatResult:
    """Quantize a dense tensor with ``spec.float_scheme`` and measure it per channel.

    ``tensor_amax``: the whole tensor's max |x| when ``x`` is a part of it (fp8 per-tensor, NVFP4;
    see :func:`quantcore.microscaling.quantize_float_scheme`)."""
    if not isinstance(x, np.ndarray):
        lengths = {len(r) for r in x}
        if len(lengths) != 1:
            raise ValueError("float formats need channels of equal length (a rectangular tensor)")
        x = np.asarray([np.asarray(r, dtype=np.float64) for r in x])
    scheme = spec.float_scheme
    if scheme.kind == "fp8_channel":
        channel_axis = scheme.axis if scheme.axis is not None else 0
    fq = quantize_float_scheme(x, scheme, tensor_amax=tensor_amax)  # validates x first (non-finite, > float32)
    canon = canonical(fq.x, np.float32, channel_axis, None)
    blocks = block_view(canon, PerChannel(channel_axis))
    C = canon.n_channels
    def rows(a: np.ndarray) -> np.ndarray:
        return canon.from_input_layout(a).reshape(C, -1)
    sign_clip = np.where(rows(fq.clipped), np.sign(rows(fq.x)), 0).astype(np.float32)
    return FloatResult(spec, fq, canon, blocks, rows(fq.dequantized), sign_clip, rows(fq.codes), channel_names)
