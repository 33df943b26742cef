"""Per-group parity with torchao 0.18's quant_primitives (block_size (1, G): groups of G along the last axis).

Oracle: ``choose_qparams_affine`` (scale float32, zero-point int32), ``quantize_affine`` and
``dequantize_affine``. quantcore: ``PerGroup(G, -1)`` with convention ``torchao`` (float32,
``rint(x * f32(1/scale)) + zp``, zero-point added after rounding; scale floor ``eps`` = float32's smallest
normal 2**-126, torchao's default ``finfo(input.dtype).smallest_normal``; symmetric zero-point
``int((qmax + qmin + 1) / 2)``).

``torch-fake`` is the same arithmetic with the torch observers' choices, and differs from torchao in exactly
two documented ways (each asserted below):
* eps: the observers clamp the scale at finfo(float32).eps = 2**-23, so a group whose range is below
  about 2**-23 * (qmax - qmin) (~3e-5 for int8, ~1e-6 for int4) gets a larger scale (coarser codes) than
  torchao gives it; with ``eps=2**-23`` passed to torchao the two agree.
* unsigned symmetric zero-point: the observers' rule (128 for 8 bits, ``(qmin + qmax) // 2`` for a custom
  range) instead of ``int((qmax + qmin + 1) / 2)``; they agree on full unsigned ranges.
"""
from __future__ import annotations

import numpy as np
import pytest

from quantcore import IntFormat, PerGroup, QuantSpec, analyze

from .conftest import lognormal_channels

EPS_OBSERVER = float(np.finfo(np.float32).eps)


def torchao_reference(torch, qp, x: np.ndarray, group: int, fmt: IntFormat, mapping: str, eps: float | None = None):
    xt = torch.from_numpy(x)
    mt = qp.MappingType.SYMMETRIC if mapping == "symmetric" else qp.MappingType.ASYMMETRIC
    target = torch.int8 if fmt.signed else torch.uint8
    if fmt.bits > 8:
        target = torch.int16 if fmt.signed else torch.int32
    block = (1,) * (x.ndim - 1) + (group,)
    kw = {} if eps is None else {"eps": eps}
    s, zp = qp.choose_qparams_affine(xt, mt, block, target, fmt.qmin, fmt.qmax, scale_dtype=torch.float32,
                                     zero_point_dtype=torch.int32, **kw)
    q = qp.quantize_affine(xt, block, s, zp, target, fmt.qmin, fmt.qmax)
    y = qp.dequantize_affine(q, block, s, zp, target, fmt.qmin, fmt.qmax, output_dtype=torch.float32)
    return (s.numpy().reshape(-1).astype(np.float32), zp.numpy().reshape(-1).astype(np.int64),
            q.numpy().astype(np.int64), y.numpy())


def assert_torchao_parity(torch, qp, x, group, fmt, mapping, what, eps=None, convention="torchao"):
    r = analyze(x, QuantSpec(fmt=fmt, mapping=mapping, granularity=PerGroup(group, -1), convention=convention))
    s, zp, q, y = torchao_reference(torch, qp, x, group, fmt, mapping, eps)
    np.testing.assert_array_equal(r.scale.view(np.uint32), s.view(np.uint32), err_msg=f"{what}: scale")
    np.testing.assert_array_equal(r.zero_point.astype(np.int64), zp, err_msg=f"{what}: zero-point")
    bad = np.argwhere(r.q != q)
    assert bad.size == 0, f"{what}: {len(bad)} codes differ, first at {tuple(bad[0])}: ours={r.q[tuple(bad[0])]} torchao={q[tuple(bad[0])]}"
    bad = np.argwhere(r.dequantized.view(np.uint32) != y.view(np.uint32))
    assert bad.size == 0, (f"{what}: {len(bad)} dequantized differ, first at {tuple(bad[0])}: "
                           f"ours={r.dequantized[tuple(bad[0])]!r} torchao={y[tuple(bad[0])]!r}")


FORMATS = [IntFormat(8, True), IntFormat(4, True), IntFormat(2, True), IntFormat(6, True),
           IntFormat(8, False), IntFormat(4, False), IntFormat(3, False)]


COMBOS = [(g, f, m) for g in (32, 64, 128) for f in FORMATS for m in ("affine", "symmetric")]


@pytest.mark.parametrize("group,fmt,mapping", COMBOS, ids=lambda v: v.label.replace(" ", "_") if hasattr(v, "label") else str(v))
def test_per_group_parity(torch, torchao_qp, group, fmt, mapping):
    """Random log-normal-row tensors (2-D and 3-D), groups of G along the last axis: scale, zp, codes, x_hat."""
    rng = np.random.default_rng(group * 31 + fmt.bits * 7 + fmt.signed + (mapping == "affine"))
    for i in range(6):
        shape = (int(rng.integers(1, 24)), group * int(rng.integers(1, 5)))
        if i % 3 == 2:
            shape = (int(rng.integers(1, 4)),) + shape
        x = lognormal_channels(rng, shape, 0, loc=float(rng.choice([0.0, 0.0, 1.0, -1.5])))
        assert_torchao_parity(torch, torchao_qp, x, group, fmt, mapping, f"#{i} shape {shape}")


@pytest.mark.parametrize("fmt,mapping", [(IntFormat(8, True), "affine"), (IntFormat(8, True), "symmetric"),
                                         (IntFormat(4, True), "affine"), (IntFormat(4, True), "symmetric"),
                                         (IntFormat(8, False), "affine")], ids=str)
def test_per_group_degenerate_blocks_with_observer_eps(torch, torchao_qp, fmt, mapping):
    """torch-fake == torchao told to use the observers' eps = 2**-23: all-zero, constant, all-positive and
    all-negative groups and one whose scale is clamped to eps."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((8, 4, 32))
    x[0] = 0.0
    x[1] = 0.3
    x[2, :2] = 0.0
    x[3] = np.abs(x[3]) + 1
    x[4] = -np.abs(x[4]) - 1
    x[5, 1] = 1e-9 * x[5, 1]  # scale below eps -> clamped to eps
    x = x.reshape(8, 128).astype(np.float32)
    assert_torchao_parity(torch, torchao_qp, x, 32, fmt, mapping, "degenerate", eps=EPS_OBSERVER,
                          convention="torch-fake")


def _tiny_range_groups(rng: np.random.Generator) -> np.ndarray:
    """(8, 128) float32 in groups of 32 whose ranges run from 1e-4 down to float32 subnormals: all zero,
    constant, 1e-6, 1e-9, 1e-20, 1e-36 spreads (normal scales below 2**-23) and a subnormal one."""
    x = rng.standard_normal((8, 4, 32))
    spread = np.array([1e-4, 1e-6, 1e-9, 1e-20, 1e-36, 3e-39, 0.0, 0.0])
    x = x * spread[:, None, None] + np.array([0.0, 0.5, -2.0, 0, 1e-3, 0, 0.3, 0])[:, None, None]
    x[:, 3] = rng.standard_normal((8, 32))      # one ordinary group per row
    return x.reshape(8, 128).astype(np.float32)


@pytest.mark.parametrize("fmt,mapping", [(IntFormat(8, True), "affine"), (IntFormat(8, True), "symmetric"),
                                         (IntFormat(4, True), "affine"), (IntFormat(4, True), "symmetric"),
                                         (IntFormat(4, False), "affine"), (IntFormat(8, False), "symmetric")], ids=str)
def test_per_group_tiny_ranges_with_torchao_default_eps(torch, torchao_qp, fmt, mapping):
    """Groups whose range is below ~1e-6 (down to subnormal spreads): convention torchao == torchao with its
    default eps (float32 smallest normal), bit for bit. The observers' eps (torch-fake) gives those groups a
    different (larger) scale: the documented difference, asserted on the same data."""
    x = _tiny_range_groups(np.random.default_rng(17))
    assert_torchao_parity(torch, torchao_qp, x, 32, fmt, mapping, "tiny ranges, default eps")
    s, _, q, _ = torchao_reference(torch, torchao_qp, x, 32, fmt, mapping)
    fake = analyze(x, QuantSpec(fmt=fmt, mapping=mapping, granularity=PerGroup(32, -1), convention="torch-fake"))
    differs = fake.scale != s
    tiny = np.maximum(s, 0) < EPS_OBSERVER
    assert differs.any() and (differs == tiny).all()          # exactly the groups torchao scales below 2**-23
    assert (fake.scale[tiny] == np.float32(EPS_OBSERVER)).all()
