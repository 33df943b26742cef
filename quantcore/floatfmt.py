"""Low-precision float element formats: FP8 E4M3FN, FP8 E5M2, FP4 E2M1, E8M0 and the NF4 codebook.

Every format is a frozen spec; ``encode`` turns real numbers into uint8 codes (one code per byte, 4-bit
formats use the low nibble), ``decode`` turns codes back into float32, ``round_to_format`` does both.

Rounding: round to nearest on the format's own grid, ties to even (the code whose last mantissa bit is
0). E8M0 has no mantissa bit, so "even" is undefined there; it rounds ties *up* to the larger power of
two, which is what ml_dtypes' ``float8_e8m0fnu`` cast does (MX scales never hit this: they use floor).

Input dtype discipline (decides ties): the input is converted to float64, which is exact for float16,
bfloat16-as-float32, float32 and float64, and then rounded ONCE, with integer arithmetic on the float64
bit pattern, straight to the target grid. There is no intermediate float32 step, so a float64 input
is never double-rounded: e.g. x = 1 + 2**-4 + 2**-30 (float64) encodes to E4M3 1.125 (it is above the
1.0/1.125 midpoint), while float32(x) = 1.0625 is exactly the midpoint and encodes to 1.0. Callers who
want the float32 behaviour of a runtime cast to float32 first (the scaled schemes in
``microscaling.py`` do exactly that and say so).

Overflow policy (``overflow=``), applied to finite values whose correctly rounded magnitude exceeds
the largest finite code, and to +-inf inputs:
  "saturate"  -> +-max finite (OCP FP8 spec "saturating" mode; MX/NVFP4 element casts; default)
  "nan"       -> NaN code (E4M3FN / E8M0 plain casts in torch and ml_dtypes); an inf input still
                 becomes inf in formats that have inf (E5M2)
  "inf"       -> +-inf, only for formats with infinities (E5M2 plain cast, IEEE style)
``FloatFormat.cast_overflow`` names the policy a plain ``ml_dtypes``/``torch`` dtype cast uses.

NaN input: NaN code (sign kept) if the format has one; E2M1 and NF4 have none -> ValueError.
E8M0 is unsigned with no zero: zero and negative inputs -> NaN; positive values below 2**-127 round to
2**-127 (ml_dtypes does the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Union

import numpy as np

__all__ = [
    "FloatFormat",
    "Codebook",
    "E4M3FN",
    "E5M2",
    "E2M1",
    "E8M0",
    "NF4",
    "FORMATS",
    "get_format",
    "encode",
    "decode",
    "round_to_format",
    "encode_with_overflow",
]

Overflow = Literal["saturate", "nan", "inf"]
_OVERFLOW_POLICIES = ("saturate", "nan", "inf")


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point element format of at most 8 bits.

    value(code) = (-1)**s * 2**(E - bias) * (1 + M / 2**man_bits) for exponent field E >= 1 (or E >= 0
    without subnormals), and (-1)**s * 2**(1 - bias) * (M / 2**man_bits) for E == 0 with subnormals.

    ``specials``: "ieee" -> the all-ones exponent field is inf (M == 0) or NaN (M != 0) (E5M2);
    "fn" -> only the all-ones magnitude code is NaN, no inf (E4M3FN, E8M0);
    "none" -> every code is a finite number (E2M1).
    """

    name: str
    exp_bits: int
    man_bits: int
    bias: int
    signed: bool = True
    specials: Literal["ieee", "fn", "none"] = "ieee"
    subnormals: bool = True
    cast_overflow: Overflow = "saturate"   # policy of a plain ml_dtypes / torch cast to this dtype

    def __post_init__(self) -> None:
        if self.exp_bits < 1 or self.man_bits < 0 or self.bits > 8:
            raise ValueError(f"FloatFormat {self.name!r}: need exp_bits >= 1, man_bits >= 0, "
                             f"at most 8 bits in total, got e={self.exp_bits} m={self.man_bits}")
        if self.specials not in ("ieee", "fn", "none"):
            raise ValueError(f"FloatFormat {self.name!r}: specials must be ieee|fn|none, got {self.specials!r}")

    # ---- derived constants -------------------------------------------------------------------
    @property
    def bits(self) -> int:
        """Storage bits per element (sign + exponent + mantissa)."""
        return int(self.signed) + self.exp_bits + self.man_bits

    @property
    def n_codes(self) -> int:
        return 1 << self.bits

    @property
    def mag_mask(self) -> int:
        return (1 << (self.exp_bits + self.man_bits)) - 1

    @property
    def sign_bit(self) -> int:
        """Value of the sign bit in a code (0 for unsigned formats)."""
        return (1 << (self.exp_bits + self.man_bits)) if self.signed else 0

    @property
    def has_inf(self) -> bool:
        return self.specials == "ieee"

    @property
    def has_nan(self) -> bool:
        return self.specials != "none"

    @property
    def max_code(self) -> int:
        """Magnitude code of the largest finite value."""
        if self.specials == "ieee":
            return (((1 << self.exp_bits) - 1) << self.man_bits) - 1
        if self.specials == "fn":
            return self.mag_mask - 1
        return self.mag_mask

    @property
    def inf_code(self) -> int | None:
        return (((1 << self.exp_bits) - 1) << self.man_bits) if self.has_inf else None

    @property
    def nan_code(self) -> int | None:
        """Canonical (positive) NaN magnitude code: quiet NaN for ieee, all ones for fn."""
        if self.specials == "ieee":
            return (((1 << self.exp_bits) - 1) << self.man_bits) | (1 << max(self.man_bits - 1, 0))
        if self.specials == "fn":
            return self.mag_mask
        return None

    @property
    def emin(self) -> int:
        """Unbiased exponent of the smallest normal binade (the subnormal quantum is 2**(emin - m))."""
        return 1 - self.bias if self.subnormals else -self.bias

    @property
    def emax(self) -> int:
        """Unbiased exponent of the largest finite binade (OCP MX calls it emax_elem)."""
        return (self.max_code >> self.man_bits) - self.bias

    @property
    def max_finite(self) -> float:
        return float(_table(self)[self.max_code])

    @property
    def min_positive(self) -> float:
        """Smallest positive value (subnormal if the format has subnormals)."""
        return float(_table(self)[0 if not self.subnormals else 1])

    @property
    def label(self) -> str:
        return self.name


@dataclass(frozen=True)
class Codebook:
    """A lookup-table element format: code i means ``values[i]`` (float32).

    Encoding picks code = number of ``thresholds`` strictly below x (``x > t`` comparisons as in the
    reference kernel), so a value exactly on a threshold goes to the lower code.
    """

    name: str
    values: tuple[float, ...]
    thresholds: tuple[float, ...]

    @property
    def bits(self) -> int:
        return int(np.ceil(np.log2(len(self.values))))

    @property
    def n_codes(self) -> int:
        return len(self.values)

    @property
    def max_finite(self) -> float:
        return float(np.max(np.abs(np.asarray(self.values, dtype=np.float32))))

    @property
    def label(self) -> str:
        return self.name


E4M3FN = FloatFormat("fp8_e4m3fn", 4, 3, 7, specials="fn", cast_overflow="nan")
"""OCP FP8 E4M3 ("FN": finite + NaN, no inf). Max 448, min normal 2**-6, min subnormal 2**-9."""
E5M2 = FloatFormat("fp8_e5m2", 5, 2, 15, specials="ieee", cast_overflow="inf")
"""OCP FP8 E5M2 (IEEE-like, has inf). Max 57344, min normal 2**-14, min subnormal 2**-16."""
E2M1 = FloatFormat("fp4_e2m1", 2, 1, 1, specials="none", cast_overflow="saturate")
"""OCP MX FP4 E2M1: values +-{0, 0.5, 1, 1.5, 2, 3, 4, 6}; no inf, no NaN."""
E8M0 = FloatFormat("e8m0", 8, 0, 127, signed=False, specials="fn", subnormals=False, cast_overflow="nan")
"""OCP MX scale format: unsigned power of two 2**(code - 127), code 0..254; 0xFF is NaN; no zero."""

# NF4 code values and decision thresholds from bitsandbytes csrc/kernels.cu (dDequantizeNF4 /
# dQuantizeNF4, "generated by test_normal_map_tree"; the same table is `nf4_data` in the QLoRA
# release). Values are written as in the source and stored as float32; thresholds are the kernel's
# float literals (float32), compared with `x > t`.
NF4 = Codebook(
    "nf4",
    values=(
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ),
    thresholds=(
        -0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544,
        -0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767,
        0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
        0.5016634166240692, 0.6427869200706482, 0.8614784181118011,
    ),
)

FORMATS: dict[str, Union[FloatFormat, Codebook]] = {
    "e4m3": E4M3FN, "fp8_e4m3fn": E4M3FN, "e4m3fn": E4M3FN,
    "e5m2": E5M2, "fp8_e5m2": E5M2,
    "e2m1": E2M1, "fp4_e2m1": E2M1, "fp4": E2M1,
    "e8m0": E8M0,
    "nf4": NF4,
}

Format = Union[FloatFormat, Codebook]


def get_format(name: str | Format) -> Format:
    """Look a format up by name ("e4m3", "e5m2", "e2m1", "e8m0", "nf4", ...); specs pass through."""
    if isinstance(name, (FloatFormat, Codebook)):
        return name
    try:
        return FORMATS[str(name).lower()]
    except KeyError:
        raise ValueError(f"unknown float format {name!r}; choose one of {sorted(set(FORMATS))}") from None


# ---- decode --------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _table(fmt: FloatFormat) -> np.ndarray:
    """float32 value of every code 0 .. 2**bits - 1 (read-only)."""
    codes = np.arange(fmt.n_codes, dtype=np.int64)
    mag = codes & fmt.mag_mask
    ef = mag >> fmt.man_bits
    mf = mag & ((1 << fmt.man_bits) - 1)
    if fmt.subnormals:
        sig = np.where(ef == 0, mf, mf + (1 << fmt.man_bits))
        exp = np.maximum(ef, 1) - fmt.bias - fmt.man_bits
    else:
        sig = mf + (1 << fmt.man_bits)
        exp = ef - fmt.bias - fmt.man_bits
    val = np.ldexp(sig.astype(np.float64), exp.astype(np.int32))   # exact: few significant bits
    if fmt.specials == "ieee":
        top = ef == (1 << fmt.exp_bits) - 1
        val = np.where(top & (mf == 0), np.inf, val)
        val = np.where(top & (mf != 0), np.nan, val)
    elif fmt.specials == "fn":
        val = np.where(mag == fmt.mag_mask, np.nan, val)
    if fmt.signed:
        val = np.where(codes & fmt.sign_bit, -val, val)
    out = val.astype(np.float32)
    out.setflags(write=False)
    return out


def _check_codes(codes: np.ndarray, n: int, name: str) -> np.ndarray:
    c = np.asarray(codes)
    if c.dtype.kind not in "ui":
        raise ValueError(f"{name} codes must be an integer array, got dtype {c.dtype}")
    if c.size:
        bad = (c < 0) | (c >= n)
        if bad.any():
            idx = np.unravel_index(int(np.argmax(bad)), c.shape)
            raise ValueError(f"{name} code {int(c[idx])} at index {tuple(int(i) for i in idx)} is out of "
                             f"range 0..{n - 1}")
    return c.astype(np.intp, copy=False)


def decode(codes: np.ndarray, fmt: str | Format) -> np.ndarray:
    """Codes (any integer dtype, any shape) -> float32 values, same shape. Table lookup, exact."""
    fmt = get_format(fmt)
    if isinstance(fmt, Codebook):
        table = np.asarray(fmt.values, dtype=np.float32)
    else:
        table = _table(fmt)
    c = _check_codes(codes, fmt.n_codes, fmt.name)
    return table[c]


# ---- encode --------------------------------------------------------------------------------------

_F64_FRAC = np.uint64((1 << 52) - 1)
_F64_ABS = np.uint64((1 << 63) - 1)
_F64_INF = np.uint64(0x7FF << 52)


def _as_float64(x: np.ndarray | float, what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "fiub":
        raise ValueError(f"{what}: expected a real numeric array, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float64)


def _first_index(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


def encode_with_overflow(x: np.ndarray | float, fmt: str | Format,
                         overflow: Overflow = "saturate") -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`encode`, and also return a bool mask of the elements the overflow policy touched
    (finite values that rounded past the largest finite value, and +-inf inputs)."""
    fmt = get_format(fmt)
    if overflow not in _OVERFLOW_POLICIES:
        raise ValueError(f"overflow must be one of {_OVERFLOW_POLICIES}, got {overflow!r}")
    x64 = _as_float64(x, f"encode to {fmt.name}")
    if isinstance(fmt, Codebook):
        return _encode_codebook(x64, fmt, overflow)
    if overflow == "inf" and not fmt.has_inf:
        raise ValueError(f"overflow='inf' is not possible for {fmt.name}: the format has no infinity")
    if overflow == "nan" and not fmt.has_nan:
        raise ValueError(f"overflow='nan' is not possible for {fmt.name}: the format has no NaN")

    bits = x64.view(np.uint64)
    a = bits & _F64_ABS
    neg = (bits >> np.uint64(63)).astype(bool)
    is_nan = a > _F64_INF
    is_inf = a == _F64_INF
    if is_nan.any() and not fmt.has_nan:
        raise ValueError(f"NaN at index {_first_index(is_nan)} cannot be encoded in {fmt.name} (no NaN code)")

    # float64 -> (sig, e) with value = sig * 2**(e - 52), sig < 2**53.
    ef64 = (a >> np.uint64(52)).astype(np.int64)
    frac = a & _F64_FRAC
    normal64 = ef64 > 0
    sig = np.where(normal64, frac | np.uint64(1 << 52), frac)
    e = np.where(normal64, ef64 - 1023, -1022)
    m = fmt.man_bits
    E = np.maximum(e, fmt.emin)                      # binade of the target grid (subnormal: emin)
    # Quantum of the target grid is 2**(E - m); sig * 2**(e-52) / quantum = sig >> shift.
    shift = np.minimum((52 - m) + (E - e), 62).astype(np.uint64)
    q = sig >> shift
    rem = sig & ((np.uint64(1) << shift) - np.uint64(1))
    half = np.uint64(1) << (shift - np.uint64(1))
    round_up = (rem > half) | ((rem == half) & ((q & np.uint64(1)) == np.uint64(1)))
    q = q + round_up.astype(np.uint64)
    # Code of the rounded magnitude; a carry out of the mantissa (q == 2**(m+1)) lands in the next
    # binade automatically, and a subnormal rounding up to 2**m becomes the smallest normal.
    mag = ((E + (fmt.bias - 1)) << m) + q.astype(np.int64)
    if not fmt.subnormals:
        mag = np.maximum(mag, 0)                     # below the smallest value: round to it (E8M0)

    finite = ~(is_nan | is_inf)
    over = finite & (mag > fmt.max_code)
    touched = over | is_inf
    if overflow == "saturate":
        mag = np.where(touched, fmt.max_code, mag)
    elif overflow == "inf":
        mag = np.where(touched, fmt.inf_code, mag)
    else:  # "nan": finite overflow -> NaN; inf stays inf where the format has one
        mag = np.where(over, fmt.nan_code, mag)
        mag = np.where(is_inf, fmt.inf_code if fmt.has_inf else fmt.nan_code, mag)
    mag = np.where(is_nan, fmt.nan_code if fmt.has_nan else 0, mag)

    if fmt.signed:
        code = mag | np.where(neg, fmt.sign_bit, 0)
    else:
        # unsigned, no zero (E8M0): zero and negative inputs have no code -> NaN
        bad = neg | (a == 0)
        code = np.where(bad, fmt.nan_code, mag)
    return code.astype(np.uint8), touched


def _encode_codebook(x64: np.ndarray, fmt: Codebook, overflow: str) -> tuple[np.ndarray, np.ndarray]:
    if overflow != "saturate":
        raise ValueError(f"{fmt.name} has no NaN or inf code: only overflow='saturate' is possible")
    is_nan = np.isnan(x64)
    if is_nan.any():
        raise ValueError(f"NaN at index {_first_index(is_nan)} cannot be encoded in {fmt.name} (no NaN code)")
    thr = np.asarray(fmt.thresholds, dtype=np.float32).astype(np.float64)
    code = np.searchsorted(thr, x64, side="left")    # number of thresholds t with t < x
    vmax = fmt.max_finite
    return code.astype(np.uint8), np.abs(x64) > vmax


def encode(x: np.ndarray | float, fmt: str | Format, overflow: Overflow = "saturate") -> np.ndarray:
    """Real values -> uint8 codes of ``fmt`` (same shape), rounding to nearest, ties to even.

    See the module docstring for the dtype discipline (single rounding from float64) and the overflow
    policies. NF4 (a codebook) saturates by construction (|x| > 1 -> +-1) and rejects NaN.
    """
    return encode_with_overflow(x, fmt, overflow)[0]


def round_to_format(x: np.ndarray | float, fmt: str | Format, overflow: Overflow = "saturate") -> np.ndarray:
    """decode(encode(x)): the nearest value of ``fmt`` as float32 (every format value is exact in float32)."""
    return decode(encode(x, fmt, overflow), fmt)
