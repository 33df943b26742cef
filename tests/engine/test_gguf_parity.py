"""Bit-exact parity with gguf-py 0.19 (llama.cpp's Python reference) for Q8_0, Q4_0, Q4_1, Q5_0, Q5_1.

Oracle: ``gguf.quants.quantize(x, qtype)`` (packed bytes) and ``gguf.quants.dequantize``. The packed
blocks are unpacked here into the fp16 scale ``d``, the fp16 minimum ``m`` (Q4_1/Q5_1) and the 32
integer codes, following the byte layout in gguf/quants.py:

Q8_0 ``[d:2][qs: 32 x int8]``; Q4_0 ``[d:2][qs:16]``; Q4_1 ``[d:2][m:2][qs:16]``;
Q5_0 ``[d:2][qh:4][qs:16]``; Q5_1 ``[d:2][m:2][qh:4][qs:16]``. In ``qs`` byte j holds element j in its
low nibble and element j+16 in its high nibble; ``qh`` is a little-endian 32-bit word whose bit i is
bit 4 of element i.
"""
from __future__ import annotations

import numpy as np
import pytest

from quantcore import analyze, preset

PRESETS = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1")


def unpack(gguf, packed: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(codes (n_blocks, 32) int64, d float16 (n_blocks,), m float16 or None) from gguf's packed bytes."""
    b = packed.reshape(-1, gguf.GGML_QUANT_SIZES[getattr(gguf.GGMLQuantizationType, name.upper())][1])
    d = b[:, 0:2].copy().view(np.float16)[:, 0]
    if name == "q8_0":
        return b[:, 2:].copy().view(np.int8).astype(np.int64), d, None
    off = 2
    m = None
    if name in ("q4_1", "q5_1"):
        m = b[:, 2:4].copy().view(np.float16)[:, 0]
        off = 4
    qh = None
    if name in ("q5_0", "q5_1"):
        qh = b[:, off:off + 4].copy().view("<u4")[:, 0].astype(np.int64)
        off += 4
    qs = b[:, off:off + 16].astype(np.int64)
    codes = np.concatenate([qs & 0x0F, qs >> 4], axis=1)
    if qh is not None:
        codes |= ((qh[:, None] >> np.arange(32)) & 1) << 4
    return codes, d, m


def gguf_reference(gguf, x: np.ndarray, name: str):
    qtype = getattr(gguf.GGMLQuantizationType, name.upper())
    packed = gguf.quants.quantize(x, qtype)
    deq = gguf.quants.dequantize(packed, qtype).reshape(x.shape).astype(np.float32)
    codes, d, m = unpack(gguf, packed, name)
    return codes.reshape(x.shape), d, m, deq


def _tensor(rng: np.random.Generator, i: int) -> np.ndarray:
    """Random float32 tensors (rows a multiple of 32 wide) with log-normal row scales and special blocks."""
    rows, blocks = int(rng.integers(1, 24)), int(rng.integers(1, 9))
    x = rng.standard_normal((rows, 32 * blocks)) * np.exp(rng.normal(0, 2, (rows, 1)))
    if i % 3 == 1:
        x = np.abs(x) + 0.1          # all-positive blocks
    elif i % 3 == 2:
        x = -np.abs(x) * 5           # all-negative: the max-magnitude element is negative
    v = x.reshape(-1, 32)
    n = v.shape[0]
    pick = rng.permutation(n)
    v[pick[: max(1, n // 8)]] = 0.0                               # all-zero blocks
    k = pick[n // 8: n // 4]
    v[k, rng.integers(0, 32, k.size)] = -50.0 * np.abs(v[k]).max(axis=1)  # max magnitude negative
    k = pick[n // 4: n // 3]
    v[k] = rng.normal()                                           # constant blocks
    return v.reshape(x.shape).astype(np.float32)


def _ties(name: str, rng: np.random.Generator, n_blocks: int = 64) -> np.ndarray:
    """Blocks whose scale is exactly 1 (d = 1, 1/d = 1), filled with values on the rounding boundary.

    Q8_0: max |x| = 127, other elements k + 0.5 (roundf ties, away from zero).
    Q4_0/Q5_0: max-magnitude element -8 / -16 (d = 1), elements k + 0.5 so ``x/d + 8.5`` is an integer
    (trunc boundary). Q4_1/Q5_1: min 0, max 15 / 31, elements k + 0.5 so ``(x - min)/d + 0.5`` is an integer.
    Neighbouring float32 values (one ulp off) are mixed in.
    """
    if name == "q8_0":
        v = rng.integers(-127, 127, (n_blocks, 32)) + 0.5
        v[:, 0] = np.where(rng.random(n_blocks) < 0.5, 127.0, -127.0)
    elif name in ("q4_0", "q5_0"):
        h = 8 if name == "q4_0" else 16
        v = rng.integers(-h, h - 1, (n_blocks, 32)) + 0.5
        v[:, 0] = -h
    else:
        top = 15 if name == "q4_1" else 31
        v = rng.integers(0, top, (n_blocks, 32)) + 0.5
        v[:, 0], v[:, 1] = 0.0, float(top)
    v = v.astype(np.float32)
    ulp = rng.integers(-1, 2, v.shape)
    nb = np.where(ulp < 0, np.nextafter(v, np.float32(-np.inf)), np.where(ulp > 0, np.nextafter(v, np.float32(np.inf)), v))
    nb[:, :2] = v[:, :2]
    scale = np.exp2(rng.integers(-10, 9, (n_blocks, 1))).astype(np.float32)  # powers of two keep ties exact
    return (nb * scale).reshape(-1, 64 if n_blocks % 2 == 0 else 32)


def assert_gguf_parity(gguf, x: np.ndarray, name: str, what: str) -> None:
    r = analyze(x, preset(name))
    codes, d, m, deq = gguf_reference(gguf, x, name)
    bad = np.argwhere(r.q != codes)
    assert bad.size == 0, (f"{name} {what}: {len(bad)} codes differ, first at {tuple(bad[0])}: x={x[tuple(bad[0])]!r} "
                           f"ours={r.q[tuple(bad[0])]} gguf={codes[tuple(bad[0])]}")
    d_ours = np.asarray(r.scale, np.float32).astype(np.float16)
    np.testing.assert_array_equal(d_ours.view(np.uint16), d.view(np.uint16), err_msg=f"{name} {what}: fp16 d")
    if m is not None:
        m_ours = r.lo.astype(np.float32).astype(np.float16)
        np.testing.assert_array_equal(m_ours.view(np.uint16), m.view(np.uint16), err_msg=f"{name} {what}: fp16 m")
    assert r.dequantized.dtype == np.float32
    bad = np.argwhere(r.dequantized.view(np.uint32) != deq.view(np.uint32))
    assert bad.size == 0, (f"{name} {what}: {len(bad)} dequantized values differ, first at {tuple(bad[0])}: "
                           f"ours={r.dequantized[tuple(bad[0])]!r} gguf={deq[tuple(bad[0])]!r}")


@pytest.mark.parametrize("name", PRESETS)
def test_parity_random(gguf_quants, name):
    """Many random tensors incl. all-zero, constant, all-positive/negative blocks, negative max-magnitude."""
    rng = np.random.default_rng(sum(map(ord, name)))
    for i in range(40):
        x = _tensor(rng, i)
        assert_gguf_parity(gguf_quants, x, name, f"tensor #{i} shape {x.shape}")


@pytest.mark.parametrize("name", PRESETS)
def test_parity_ties(gguf_quants, name):
    """Elements exactly on the rounding/truncation boundary (and one float32 ulp either side)."""
    rng = np.random.default_rng(1 + sum(map(ord, name)))
    x = _ties(name, rng)
    assert_gguf_parity(gguf_quants, x, name, "ties")


@pytest.mark.parametrize("name", PRESETS)
def test_parity_3d_and_1d(gguf_quants, name):
    """Groups run along the last axis whatever the rank."""
    rng = np.random.default_rng(5)
    x3 = (rng.standard_normal((3, 4, 96)) * 0.05).astype(np.float32)
    assert_gguf_parity(gguf_quants, x3, name, "3-D")
    x1 = (rng.standard_normal(128) * 3).astype(np.float32)
    assert_gguf_parity(gguf_quants, x1, name, "1-D")


@pytest.mark.parametrize("name", PRESETS)
def test_ties_are_real(name):
    """The constructed blocks really sit on the boundaries (else test_parity_ties would prove nothing):
    at least a fifth of the elements are exactly on a rounding (Q8_0: frac = 1/2) or truncation
    (Q4/Q5: integer) boundary, evaluated exactly in float64 where d is a power of two."""
    x = _ties(name, np.random.default_rng(1 + sum(map(ord, name)))).reshape(-1, 32).astype(np.float64)
    if name == "q8_0":
        d = np.abs(x).max(axis=1, keepdims=True) / 127
        t = np.abs(x / d)
        on = (t - np.floor(t)) == 0.5
    elif name in ("q4_0", "q5_0"):
        h = 8 if name == "q4_0" else 16
        m = np.take_along_axis(x, np.abs(x).argmax(axis=1)[:, None], axis=1)
        t = x / (m / -h) + h + 0.5
        on = t == np.floor(t)
    else:
        top = 15 if name == "q4_1" else 31
        mn, mx = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
        t = (x - mn) / ((mx - mn) / top) + 0.5
        on = (t == np.floor(t)) & (x != mn) & (x != mx)
    assert on.mean() > 0.2, on.mean()
