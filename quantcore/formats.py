"""Integer code formats: which integers a quantized value may take.

An :class:`IntFormat` is the closed integer interval ``[qmin, qmax]``. It is built from a bit width
and signedness, then optionally narrowed:

* ``narrow``: drop the most negative code so the signed range is symmetric around 0
  (int8 -> [-127, 127], int4 -> [-7, 7] as in seed 003). For unsigned formats the top code is
  dropped instead (uint8 -> [0, 254]) so the range has an exact middle (127).
* ``reduce_range``: PyTorch's ``reduce_range=True``: one bit fewer (qint8 -> [-64, 63],
  quint8 -> [0, 127]), used by fbgemm to avoid int16 overflow in vpmaddubsw.
* ``qmin``/``qmax``: an explicit custom interval; overrides everything above (must fit the bits and,
  as in PyTorch, include 0). Unlike PyTorch, ``reduce_range`` does not halve a custom interval.

``[qmin, qmax]`` is the range the scale is chosen for. ``storage_qmin``/``storage_qmax`` are the limits of
the ``bits``-wide integer itself; conventions that saturate to the storage type (``torch``, ``onnx``; see
:mod:`quantcore.conventions`) clamp codes there.
"""
from __future__ import annotations

from dataclasses import dataclass

MIN_BITS = 2
MAX_BITS = 16


@dataclass(frozen=True)
class IntFormat:
    """An integer code range ``[qmin, qmax]`` of a ``bits``-wide signed or unsigned integer."""

    bits: int = 8
    signed: bool = True
    narrow: bool = False
    reduce_range: bool = False
    custom_qmin: int | None = None
    custom_qmax: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int):
            raise ValueError(f"bits must be an integer, got {self.bits!r}")
        if not MIN_BITS <= self.bits <= MAX_BITS:
            raise ValueError(f"bits must be between {MIN_BITS} and {MAX_BITS}, got {self.bits}")
        if (self.custom_qmin is None) != (self.custom_qmax is None):
            raise ValueError("custom qmin and qmax must be given together")
        if self.custom_qmin is not None:
            lo, hi = self._storage_range()
            if not (lo <= self.custom_qmin < self.custom_qmax <= hi):
                raise ValueError(
                    f"custom range [{self.custom_qmin}, {self.custom_qmax}] must satisfy "
                    f"{lo} <= qmin < qmax <= {hi} for {self.bits}-bit {'signed' if self.signed else 'unsigned'}"
                )
            if not self.custom_qmin <= 0 <= self.custom_qmax:
                # As PyTorch's observers: zero must be a code, or the zero-point falls outside the range.
                raise ValueError(f"custom range [{self.custom_qmin}, {self.custom_qmax}] must include 0")

    def _storage_range(self) -> tuple[int, int]:
        if self.signed:
            return -(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1
        return 0, (1 << self.bits) - 1

    @property
    def storage_qmin(self) -> int:
        """Smallest value of the ``bits``-wide integer type (int8: -128), whatever the narrowing."""
        return self._storage_range()[0]

    @property
    def storage_qmax(self) -> int:
        """Largest value of the ``bits``-wide integer type (int8: 127, uint4: 15)."""
        return self._storage_range()[1]

    @property
    def is_custom(self) -> bool:
        """True when qmin/qmax were given explicitly (PyTorch's ``has_customized_qrange``)."""
        return self.custom_qmin is not None

    @property
    def qmin(self) -> int:
        if self.custom_qmin is not None:
            return self.custom_qmin
        bits = self.bits - 1 if self.reduce_range else self.bits
        if self.signed:
            return -(1 << (bits - 1)) + (1 if self.narrow else 0)
        return 0

    @property
    def qmax(self) -> int:
        if self.custom_qmax is not None:
            return self.custom_qmax
        bits = self.bits - 1 if self.reduce_range else self.bits
        if self.signed:
            return (1 << (bits - 1)) - 1
        return (1 << bits) - 1 - (1 if self.narrow else 0)

    @property
    def levels(self) -> int:
        """Number of integer codes in ``[qmin, qmax]``."""
        return self.qmax - self.qmin + 1

    @property
    def label(self) -> str:
        name = f"{'int' if self.signed else 'uint'}{self.bits}"
        if self.is_custom or self.reduce_range:
            return f"{name} [{self.qmin},{self.qmax}]"
        return f"{name} narrow" if self.narrow else name


def torch_dtype_format(name: str, reduce_range: bool = False) -> IntFormat:
    """The PyTorch quantized dtypes by name: ``qint8``, ``quint8``, ``qint32``-like 16-bit is not offered."""
    table = {"qint8": IntFormat(8, True, reduce_range=reduce_range),
             "quint8": IntFormat(8, False, reduce_range=reduce_range)}
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown torch dtype {name!r}; expected one of {sorted(table)}") from None


def onnx_dtype_format(name: str, symmetric: bool = False, reduce_range: bool = False) -> IntFormat:
    """The ``[qmin, qmax]`` ONNX Runtime's quantization tool derives scale and zero-point for
    (``onnxruntime.quantization.quant_utils.get_qmin_qmax_for_qType``, 1.32): ``int8``/``int16`` symmetric
    drop the most negative code ([-127, 127]); ``reduce_range`` uses int8 [-64, 64], uint8 [0, 127],
    int4 [-4, 3], uint4 [0, 7], int16 [-16384, 16384], uint16 [0, 32767]. ``QuantizeLinear`` still
    saturates to the full type (convention ``onnx``)."""
    table = {"int8": (8, True), "uint8": (8, False), "int16": (16, True), "uint16": (16, False),
             "int4": (4, True), "uint4": (4, False)}
    try:
        bits, signed = table[name]
    except KeyError:
        raise ValueError(f"unknown ONNX integer type {name!r}; expected one of {sorted(table)}") from None
    if reduce_range:
        reduced = {"int8": (-64, 64), "int16": (-16384, 16384)}  # one code more than reduce_range gives
        if name in reduced:
            lo, hi = reduced[name]
            return IntFormat(bits, signed, custom_qmin=lo, custom_qmax=hi)
        return IntFormat(bits, signed, reduce_range=True)
    return IntFormat(bits, signed, narrow=symmetric and name in ("int8", "int16"))
