"""Low-precision float element formats: FP8 E4M3FN / E5M2, FP6 E2M3 / E3M2, FP4 E2M1, E8M0 and the NF4 codebook.

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
want the float32 behaviour of a runtime cast to float32 first (the scaled float schemes of
:mod:`quantcore.analysis` do exactly that and say so).

Overflow policy (``overflow=``), applied to finite values whose correctly rounded magnitude exceeds
the largest finite code, and to +-inf inputs:
  "saturate"  -> +-max finite (OCP FP8 spec "saturating" mode; MX/NVFP4 element casts; default)
  "nan"       -> NaN code (E4M3FN / E8M0 plain casts in torch and ml_dtypes); an inf input still
                 becomes inf in formats that have inf (E5M2)
  "inf"       -> +-inf, only for formats with infinities (E5M2 plain cast, IEEE style)
``FloatFormat.cast_overflow`` names the policy a plain ``ml_dtypes``/``torch`` dtype cast uses.

NaN input: NaN code (sign kept) if the format has one; E2M3, E3M2, E2M1 and NF4 have none -> ValueError.
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
    "E2M3",
    "E3M2",
    "E2M1",
    "E8M0",
    "NF4",
    "FORMATS",
    "get_format",
    "encode",
    "decode",
    "decode_table",
    "round_to_format",
    "encode_with_overflow",
    "encode_detailed",
    "Encoded",
    "TileEncoder",
    "TILE_ELEMENTS",
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
    "none" -> every code is a finite number (E2M3, E3M2, E2M1).
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
E2M3 = FloatFormat("fp6_e2m3", 2, 3, 1, specials="none", cast_overflow="saturate")
"""OCP MX v1.0 section 5.3 FP6 E2M3: bias 1, no inf, no NaN; max 7.5 (1.875 * 2**2), min normal 1,
min subnormal 0.125 (ml_dtypes ``float6_e2m3fn``; codes in the low 6 bits, sign bit 0x20)."""
E3M2 = FloatFormat("fp6_e3m2", 3, 2, 3, specials="none", cast_overflow="saturate")
"""OCP MX v1.0 section 5.3 FP6 E3M2: bias 3, no inf, no NaN; max 28 (1.75 * 2**4), min normal 0.25,
min subnormal 0.0625 (ml_dtypes ``float6_e3m2fn``)."""
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
    "e2m3": E2M3, "fp6_e2m3": E2M3,
    "e3m2": E3M2, "fp6_e3m2": E3M2,
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


def decode_table(fmt: str | Format) -> np.ndarray:
    """The float32 value of every code of ``fmt`` (read-only): ``decode_table(f)[c] == decode(c, f)``, for callers
    that look up codes they produced themselves (no range check)."""
    fmt = get_format(fmt)
    if isinstance(fmt, Codebook):
        out = np.asarray(fmt.values, dtype=np.float32)
        out.setflags(write=False)
        return out
    return _table(fmt)


def decode(codes: np.ndarray, fmt: str | Format) -> np.ndarray:
    """Codes (any integer dtype, any shape) -> float32 values, same shape. Table lookup, exact."""
    fmt = get_format(fmt)
    if isinstance(fmt, Codebook):
        table = np.asarray(fmt.values, dtype=np.float32)
    else:
        table = _table(fmt)
    c = _check_codes(codes, fmt.n_codes, fmt.name)
    return table[c]


# ---- encode: reference path (float64 bit arithmetic) ----------------------------------------------

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


def _check_overflow_policy(fmt: Format, overflow: str) -> None:
    if overflow not in _OVERFLOW_POLICIES:
        raise ValueError(f"overflow must be one of {_OVERFLOW_POLICIES}, got {overflow!r}")
    if isinstance(fmt, Codebook):
        if overflow != "saturate":
            raise ValueError(f"{fmt.name} has no NaN or inf code: only overflow='saturate' is possible")
        return
    if overflow == "inf" and not fmt.has_inf:
        raise ValueError(f"overflow='inf' is not possible for {fmt.name}: the format has no infinity")
    if overflow == "nan" and not fmt.has_nan:
        raise ValueError(f"overflow='nan' is not possible for {fmt.name}: the format has no NaN")


def _encode_f64(x64: np.ndarray, fmt: FloatFormat, overflow: str) -> tuple[np.ndarray, np.ndarray]:
    """Reference encoder: integer arithmetic on the float64 bit pattern, any FloatFormat."""
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


def _encode_codebook(x64: np.ndarray, fmt: Codebook) -> tuple[np.ndarray, np.ndarray]:
    is_nan = np.isnan(x64)
    if is_nan.any():
        raise ValueError(f"NaN at index {_first_index(is_nan)} cannot be encoded in {fmt.name} (no NaN code)")
    thr = np.asarray(fmt.thresholds, dtype=np.float32).astype(np.float64)
    code = np.searchsorted(thr, x64, side="left")    # number of thresholds t with t < x
    vmax = fmt.max_finite
    return code.astype(np.uint8), np.abs(x64) > vmax


def _encode_ref(x64: np.ndarray, fmt: Format, overflow: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(fmt, Codebook):
        return _encode_codebook(x64, fmt)
    return _encode_f64(x64, fmt, overflow)


# ---- encode: float32 fast path -----------------------------------------------------------------------
#
# Why it is bit-exact with the reference path. A float32 value is rounded ONCE, straight to the element
# grid: float32 -> float64 is exact, so rounding the float32 value and rounding its float64 copy (the
# reference path) are the same single rounding. No intermediate value below is itself rounded except
# the one float32 addition that *is* the rounding:
#
# The "magic add": for |x| in the target binade [2**E, 2**(E+1)) (E = emin in the subnormal range) the
# target quantum is q = 2**(E - m). With M = 2**(E - m + 23) (a float32 built from the exponent bits of
# |x|), M <= M + |x| < 2M because |x| < 2**(E+1) <= M (m <= 22), and the float32 numbers in [M, 2M] are
# exactly the multiples of ulp(M) = q. So y = fl(M + |x|) is M + (|x| rounded to a multiple of q, to
# nearest, ties to the even multiple): IEEE float32 addition rounds the exact sum once, and
# round-to-nearest-even is the rounding mode of numpy and of WebAssembly. The even multiple is the code
# with an even last mantissa bit (m >= 1), i.e. the format's RNE. Then
#     r = y - M                        exact (Sterbenz)      rounded magnitude, float32
#     k = bits(y) - bits(M)            number of quanta in r
#     magnitude code = ((E - emin) << m) + k
# A mantissa carry into the next binade (k = 2**(m+1)) and a subnormal rounding up to 2**emin come out
# right by themselves. Magnitudes above ``a_over`` (the largest float32 whose rounded value is still
# <= max_finite) are clamped to it first: that is saturation, and it keeps M finite.
#
# Boundary flags: the neighbours of |x| (bit pattern +- 1) rounded with the same M give their correct
# rounded values (a neighbour in another binade lies next to a power of two, which is on both grids and
# is what both round to), so "a one-ulp move changes the code" is
#     fl(M + next_up(|x|)) > y  or  fl(M + next_down(|x|)) < y,
# and the first test is dropped at a_over (saturation: no change above the largest finite value: next_up is
# clamped to a_over). fl(M + .) is monotone, so fl(M + next_down) <= y <= fl(M + next_up) and the test is one
# comparison, fl(M + next_up(|x|)) > fl(M + next_down(|x|)). At |x| = 0 the pattern 0 - 1 wraps to a NaN, which
# compares False; the other side, 2**-149, is far below half a quantum of every eligible format (>= 2**-108).
#
# Work is done on tiles of TILE_ELEMENTS (256 KB of float32, resident in L2) with preallocated buffers;
# numpy's minimum/maximum are several times slower with a scalar operand than with an array, so the
# two clamping constants are kept as tile-sized arrays.

TILE_ELEMENTS = 1 << 16
_F32_ABS = 0x7FFF_FFFF
_F32_EXP = 0x7F80_0000
_F32_SIGN = 0x8000_0000
_F32_INF = 0x7F80_0000


def _f32_eligible(fmt: Format) -> bool:
    """Formats the float32 fast path handles: codebooks, and signed formats with subnormals and
    1..7 mantissa bits (E4M3FN, E5M2, E2M3, E3M2, E2M1). E8M0 (no mantissa bit: ties up) uses the reference path."""
    if isinstance(fmt, Codebook):
        return True
    return fmt.signed and fmt.subnormals and 1 <= fmt.man_bits <= 7 and fmt.emin >= -100 and fmt.emax <= 100


@lru_cache(maxsize=None)
def _const_u32(value: int) -> np.ndarray:
    out = np.full(TILE_ELEMENTS, value, dtype=np.uint32)
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class _F32Plan:
    """Integer constants of the magic-add encoder for one FloatFormat."""

    a_over: int       # largest float32 magnitude bit pattern that rounds to <= max_finite
    emin_bits: int    # exponent field of 2**emin, in place: (emin + 127) << 23
    add_bits: int     # (23 - m) << 23: turns the exponent of 2**E into that of M = 2**(E - m + 23)
    shift: int        # 23 - m
    k_off: int        # (emin + 127 + 23 - m) << m: (bits(M) >> shift) - k_off == (E - emin) << m
    sign_shift: int   # 32 - bits: moves the float32 sign bit onto the code's sign bit


@lru_cache(maxsize=None)
def _f32_plan(fmt: FloatFormat) -> _F32Plan:
    m = fmt.man_bits
    mid = np.float32(fmt.max_finite + 2.0 ** (fmt.emax - m) / 2)     # exact: m + 2 significant bits
    mid_bits = int(mid.view(np.uint32))
    # the midpoint above max_finite rounds down to it iff max_code is even (ties to even)
    a_over = mid_bits if fmt.max_code % 2 == 0 else mid_bits - 1
    return _F32Plan(a_over, (fmt.emin + 127) << 23, (23 - m) << 23, 23 - m,
                    (fmt.emin + 127 + 23 - m) << m, 32 - fmt.bits)


@lru_cache(maxsize=None)
def _cb_tables(fmt: Codebook) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """float32 thresholds; per code c: value, t_c (NaN for the top code) and next_up(t_{c-1}) (NaN for
    code 0), the two float32 inputs at which a one-ulp move changes the code; bits of max |value|."""
    thr = np.asarray(fmt.thresholds, dtype=np.float32)
    vals = np.asarray(fmt.values, dtype=np.float32)
    nan = np.float32(np.nan)
    hi = np.append(thr, nan).astype(np.float32)
    lo = np.insert(np.nextafter(thr, np.float32(np.inf)), 0, nan).astype(np.float32)
    vmax_bits = int(np.float32(fmt.max_finite).view(np.uint32))
    for t in (thr, vals, hi, lo):
        t.setflags(write=False)
    return thr, vals, hi, lo, vmax_bits


class TileEncoder:
    """Encode finite float32 tiles into preallocated outputs (the fast path of :func:`encode`).

    ``run(x, codes, clipped, boundary, values)``: ``x`` is a 1-D contiguous float32 array of at most
    ``TILE_ELEMENTS`` elements; outputs are 1-D views of the same length: uint8 codes, bool clipped
    (saturated), bool boundary (or None), float32 decoded values (or None). Overflow policy is
    "saturate"; NaN/inf inputs give garbage here and are the caller's business (:func:`encode` fixes them
    up, the scaled schemes reject or mask them before).
    """

    def __init__(self, fmt: Format, n: int = TILE_ELEMENTS):
        if not _f32_eligible(fmt):
            raise ValueError(f"{fmt.name} has no float32 fast path")
        self.fmt = fmt
        n = max(1, min(n, TILE_ELEMENTS))
        self._u = [np.empty(n, np.uint32) for _ in range(5)]
        self._b = np.empty(n, bool)
        if isinstance(fmt, Codebook):
            self._idx = np.empty(n, np.intp)
            self._f = np.empty(n, np.float32)
            self._cb_vmax_bits = _cb_tables(fmt)[4]
        else:
            p = _f32_plan(fmt)
            self._plan = p
            self._a_over = _const_u32(p.a_over)
            self._emin = _const_u32(p.emin_bits)

    def run(self, x: np.ndarray, codes: np.ndarray, clipped: np.ndarray,
            boundary: np.ndarray | None = None, values: np.ndarray | None = None) -> None:
        if isinstance(self.fmt, Codebook):
            self._run_codebook(x, codes, clipped, boundary, values)
        else:
            self._run_float(x, codes, clipped, boundary, values)

    def saturated(self, x: np.ndarray, clipped: np.ndarray) -> None:
        """The ``clipped`` output of :meth:`run` alone: ``|x|`` rounds past the largest finite value."""
        a = self._u[0][:x.size]
        np.bitwise_and(x.view(np.uint32), _F32_ABS, out=a)
        limit = self._cb_vmax_bits if isinstance(self.fmt, Codebook) else self._plan.a_over
        np.greater(a, limit, out=clipped)

    def _run_float(self, x, codes, clipped, boundary, values) -> None:
        p, n = self._plan, x.size
        u = x.view(np.uint32)
        a, M, y, t, d = (b[:n] for b in self._u)
        a_over = self._a_over[:n]
        f32 = np.float32
        af, Mf, yf, tf, df = a.view(f32), M.view(f32), y.view(f32), t.view(f32), d.view(f32)
        self.saturated(x, clipped)                           # a = |x| bits, clipped = a > a_over
        np.minimum(a, a_over, out=a)                         # saturate (and keep M finite)
        np.bitwise_and(a, _F32_EXP, out=M)
        np.maximum(M, self._emin[:n], out=M)                 # binade E = max(e, emin)
        np.add(M, p.add_bits, out=M)                         # M = 2**(E - m + 23)
        np.add(af, Mf, out=yf)                               # the one rounding
        if boundary is not None:                             # see "Boundary flags" above
            np.add(a, 1, out=t)
            np.minimum(t, a_over, out=t)                     # at a_over the next pattern only saturates: t = a
            np.add(tf, Mf, out=tf)                           # fl(M + next_up)
            np.subtract(a, 1, out=d)                         # a == 0 wraps to a NaN: compares False
            np.add(df, Mf, out=df)                           # fl(M + next_down)
            np.greater(tf, df, out=boundary)
        np.bitwise_and(u, _F32_SIGN, out=t)
        if values is not None:
            np.subtract(yf, Mf, out=values)                  # rounded magnitude, exact
            vu = values.view(np.uint32)
            np.bitwise_or(vu, t, out=vu)
        np.subtract(y, M, out=y)                             # k
        np.right_shift(M, p.shift, out=M)
        np.add(y, M, out=y)
        np.subtract(y, p.k_off, out=y)                       # magnitude code
        np.right_shift(t, p.sign_shift, out=t)
        np.bitwise_or(y, t, out=y)
        np.copyto(codes, y, casting="unsafe")

    def _run_codebook(self, x, codes, clipped, boundary, values) -> None:
        thr, vals, hi, lo, _ = _cb_tables(self.fmt)
        n = x.size
        b = self._b[:n]
        codes[...] = 0
        b8 = b.view(np.uint8)
        for t in thr.tolist():                                # code = number of thresholds t < x
            np.greater(x, t, out=b)       # a Python float: compared in float32 (exact), no scalar overhead
            np.add(codes, b8, out=codes)
        self.saturated(x, clipped)
        if boundary is None and values is None:
            return
        idx = self._idx[:n]
        np.copyto(idx, codes, casting="unsafe")
        if boundary is not None:
            f = self._f[:n]
            np.take(hi, idx, out=f, mode="wrap")
            np.equal(x, f, out=boundary)
            np.take(lo, idx, out=f, mode="wrap")
            np.equal(x, f, out=b)
            np.bitwise_or(boundary, b, out=boundary)
        if values is not None:
            np.take(vals, idx, out=values, mode="wrap")


def _fix_nonfinite_and_policy(flat: np.ndarray, shape: tuple, fmt: Format, overflow: str, codes: np.ndarray,
                              touched: np.ndarray, boundary: np.ndarray | None,
                              values: np.ndarray | None) -> None:
    """After the fast path (which saturates everything it clamps): give NaN inputs the NaN code (or
    reject them), and apply overflow='nan'/'inf' to the touched elements, like the reference path."""
    if not touched.any():
        return
    idx = np.flatnonzero(touched)
    ub = flat[idx].view(np.uint32)
    ab = ub & np.uint32(_F32_ABS)
    is_nan = ab > _F32_INF
    if is_nan.any():
        if isinstance(fmt, Codebook) or not fmt.has_nan:
            first = tuple(int(i) for i in np.unravel_index(int(idx[np.argmax(is_nan)]), shape))
            raise ValueError(f"NaN at index {first} cannot be encoded in {fmt.name} (no NaN code)")
    if isinstance(fmt, Codebook) or (overflow == "saturate" and not is_nan.any()):
        return
    is_inf = ab == _F32_INF
    mag = np.full(idx.size, fmt.max_code, dtype=np.int64)
    if overflow == "inf":
        mag[:] = fmt.inf_code
    elif overflow == "nan":
        mag[:] = fmt.nan_code
        mag[is_inf] = fmt.inf_code if fmt.has_inf else fmt.nan_code
    mag[is_nan] = fmt.nan_code
    code = (mag | np.where(ub >> np.uint32(31), fmt.sign_bit, 0)).astype(np.uint8)
    codes[idx] = code
    touched[idx[is_nan]] = False
    if values is not None:
        values[idx] = _table(fmt)[code]
    if boundary is not None:
        boundary[idx] = False


def _use_f32(a: np.ndarray, fmt: Format) -> bool:
    """float32 fast path when the input converts to float32 exactly (float32, float16, bool and
    integers of at most 16 bits) and the format has one."""
    dt = a.dtype
    exact = dt in (np.float32, np.float16) or (dt.kind in "biu" and dt.itemsize <= 2)
    return exact and _f32_eligible(fmt)


def _encode_impl(x, fmt: Format, overflow: str, want_boundary: bool, want_values: bool):
    """-> codes, touched, boundary (or None), values (or None), all with the input's shape."""
    a = np.asarray(x)
    if a.dtype.kind not in "fiub":
        raise ValueError(f"encode to {fmt.name}: expected a real numeric array, got dtype {a.dtype}")
    _check_overflow_policy(fmt, overflow)
    if not _use_f32(a, fmt):
        return _encode_f64_full(_as_float64(a, f"encode to {fmt.name}"), fmt, overflow, want_boundary, want_values)
    x32 = np.ascontiguousarray(a, dtype=np.float32)
    shape = x32.shape
    flat = x32.reshape(-1)
    n = flat.size
    codes = np.empty(n, np.uint8)
    touched = np.empty(n, bool)
    boundary = np.empty(n, bool) if want_boundary else None
    values = np.empty(n, np.float32) if want_values else None
    enc = TileEncoder(fmt, n)
    for s in range(0, n, TILE_ELEMENTS):
        e = min(s + TILE_ELEMENTS, n)
        enc.run(flat[s:e], codes[s:e], touched[s:e],
                None if boundary is None else boundary[s:e], None if values is None else values[s:e])
    _fix_nonfinite_and_policy(flat, shape, fmt, overflow, codes, touched, boundary, values)
    rs = (lambda v: None if v is None else v.reshape(shape))
    return codes.reshape(shape), touched.reshape(shape), rs(boundary), rs(values)


def _encode_f64_full(x64: np.ndarray, fmt: Format, overflow: str, want_boundary: bool, want_values: bool):
    codes, touched = _encode_ref(x64, fmt, overflow)
    boundary = values = None
    if want_boundary:
        # one float64 ulp either way, rounded with saturation; compare magnitudes (+-0 are one value)
        mag = (lambda c: c if isinstance(fmt, Codebook) else c & np.uint8(fmt.mag_mask))
        finite = np.isfinite(x64)
        with np.errstate(invalid="ignore"):
            xs = np.where(finite, x64, 0.0)
            c0 = mag(_encode_ref(xs, fmt, "saturate")[0])
            cu = mag(_encode_ref(np.nextafter(xs, np.inf), fmt, "saturate")[0])
            cd = mag(_encode_ref(np.nextafter(xs, -np.inf), fmt, "saturate")[0])
        boundary = finite & ((cu != c0) | (cd != c0))
    if want_values:
        values = decode(codes, fmt)
    return codes, touched, boundary, values


@dataclass(frozen=True)
class Encoded:
    """Result of :func:`encode_detailed`; every array has the input's shape.

    codes: uint8. touched: bool, elements the overflow policy touched (see :func:`encode_with_overflow`).
    boundary: bool, the input lies within one ulp of a rounding boundary of the element grid: moving it
    one ulp up or down (in its own dtype: float32 for float32/float16/small-integer inputs, float64
    otherwise) changes the rounded value. Judged with saturation (crossing the overflow threshold is not
    a rounding boundary) and on magnitudes (+0 and -0 are one value); NaN and inf inputs are False.
    values: float32, decode(codes).
    """

    codes: np.ndarray
    touched: np.ndarray
    boundary: np.ndarray
    values: np.ndarray


def encode_detailed(x: np.ndarray | float, fmt: str | Format, overflow: Overflow = "saturate") -> Encoded:
    """:func:`encode` plus overflow mask, boundary flags and decoded values, in one pass."""
    fmt = get_format(fmt)
    return Encoded(*_encode_impl(x, fmt, overflow, True, True))


def encode_with_overflow(x: np.ndarray | float, fmt: str | Format,
                         overflow: Overflow = "saturate") -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`encode`, and also return a bool mask of the elements the overflow policy touched
    (finite values that rounded past the largest finite value, and +-inf inputs)."""
    fmt = get_format(fmt)
    codes, touched, _, _ = _encode_impl(x, fmt, overflow, False, False)
    return codes, touched


def encode(x: np.ndarray | float, fmt: str | Format, overflow: Overflow = "saturate") -> np.ndarray:
    """Real values -> uint8 codes of ``fmt`` (same shape), rounding to nearest, ties to even.

    See the module docstring for the dtype discipline (single rounding from float64) and the overflow
    policies. NF4 (a codebook) saturates by construction (|x| > 1 -> +-1) and rejects NaN.
    float32 (and float16, small-integer) inputs take a tiled float32 path that gives the same codes.
    """
    return encode_with_overflow(x, fmt, overflow)[0]


def round_to_format(x: np.ndarray | float, fmt: str | Format, overflow: Overflow = "saturate") -> np.ndarray:
    """decode(encode(x)): the nearest value of ``fmt`` as float32 (every format value is exact in float32)."""
    return decode(encode(x, fmt, overflow), fmt)
