"""Golden tests: numbers copied from the user's seed documents in /work/shared/seeds/.

Each test names the seed and the table or sentence its expected numbers come from. Values the seeds
print rounded (e.g. "0.00862745") are compared at the printed precision; integers exactly.
"""
from __future__ import annotations

import numpy as np
import pytest

from quantcore import EXAMPLES, IntFormat, PerChannel, PerTensor, analyze, manual, memory_estimate

# Seed 001 (001_00947ab41b581a11.txt), the table:
# | Channel | Min | Max | Sample | Scale | Zero Point | Quantized | Dequantized |
SEED001 = [
    ("filter_0", -1.2, 1.0, 0.73, 0.00862745, 11, 96, 0.73333333),
    ("filter_1", -0.8, 0.9, -0.21, 0.00666667, -8, -40, -0.21333333),
    ("filter_2", -1.5, 1.7, 1.11, 0.01254902, -8, 80, 1.10431373),
    ("filter_3", -0.45, 0.6, 0.18, 0.00411765, -19, 25, 0.18117647),
]


def _s1(convention: str):
    ex = EXAMPLES["s1"]
    return analyze(ex.rows, ex.spec.with_(convention=convention), channel_names=ex.channel_names)


def test_s1_example_is_seed001_table():
    """examples.EXAMPLES['s1'] holds exactly the seed's min, max and sample columns."""
    ex = EXAMPLES["s1"]
    assert ex.channel_names == [row[0] for row in SEED001]
    assert [float(r[0]) for r in ex.rows] == [row[3] for row in SEED001]
    assert ex.spec.range.lo == tuple(row[1] for row in SEED001)
    assert ex.spec.range.hi == tuple(row[2] for row in SEED001)
    assert (ex.spec.fmt.qmin, ex.spec.fmt.qmax, ex.spec.mapping) == (-128, 127, "affine")


@pytest.mark.parametrize("convention", ["float64", "torch"])
def test_seed001_table_all_four_rows(convention):
    """Seed 001's table, all four rows: scale (8 significant digits), zero-point, q and dequantized.

    float64 is the seed's own arithmetic; torch (float32, zp added before rounding with one fused
    multiply-add) reproduces it, including filter_1's tie at -39.5 -> -40 (half to even).
    """
    r = _s1(convention)
    tol = 1e-8 if convention == "float64" else 1e-7  # the seed prints 8 significant digits
    for c, (name, lo, hi, x, scale, zp, q, deq) in enumerate(SEED001):
        assert r.channel_names[c] == name
        assert float(r.scale[c]) == pytest.approx(scale, abs=5e-9), name
        assert int(r.zero_point[c]) == zp, name
        assert int(r.q[c, 0]) == q, name
        assert float(r.dequantized[c, 0]) == pytest.approx(deq, abs=tol + 5e-9), name


def test_seed001_filter1_torch_fake_gives_minus_39_and_tie_flag():
    """Issue 2, 'Conventions': torch.fake_quantize rounds x*inv = -31.499998 first, then adds zp: -39.
    The other three rows are unchanged; filter_1 (and only it) carries the tie flag in every convention."""
    fake, exact = _s1("torch-fake"), _s1("float64")
    assert [int(v) for v in fake.q[:, 0]] == [96, -39, 80, 25]
    np.testing.assert_allclose(fake.dequantized[1, 0], (-39 + 8) * (1.7 / 255), rtol=1e-6)
    for r in (fake, exact, _s1("torch")):
        assert r.ties[:, 0].tolist() == [False, True, False, False]
    table = fake.sample_table()
    assert table["tie"].tolist() == [False, True, False, False]
    assert table["q"].tolist() == [96, -39, 80, 25]


def test_seed001_manual_mode():
    """Seed 001's manual mode (scale, zero-point, sample given per row) reproduces the same table."""
    names = [r[0] for r in SEED001]
    scales = [(r[2] - r[1]) / 255 for r in SEED001]
    out = manual(names, scales, [r[5] for r in SEED001], [r[3] for r in SEED001], IntFormat(8))
    assert out["q"].tolist() == [r[6] for r in SEED001]
    np.testing.assert_allclose(out["dequantized"], [r[7] for r in SEED001], atol=5e-9)
    assert out["clipped"].tolist() == [0, 0, 0, 0]


# Seed 003 (003_58b5669b11beee3f.txt), sections 2-4: int4 [-7, 7] symmetric, Row A and Row B.
def test_seed003_per_tensor_collapses_row_a():
    """Section 2: shared scale 3.10/7 = 0.4429; Row A -> [0, 0, 0, 0] ("the entire small row collapses")."""
    ex = EXAMPLES["s3"]
    assert (ex.spec.fmt.qmin, ex.spec.fmt.qmax) == (-7, 7)
    r = analyze(ex.rows, ex.spec)
    assert float(r.scale[0]) == pytest.approx(3.10 / 7)
    assert round(float(r.scale[0]), 4) == 0.4429
    assert r.q[0].tolist() == [0, 0, 0, 0]
    assert r.metrics.collapsed == 4
    ch = r.channel_table()
    assert ch["collapsed"].tolist() == [4, 0]
    # Section 4 table: per-tensor Row A MAE "about 0.10"; Row B reconstructed [2.21, -3.10, 1.77, -2.66], MAE 0.09
    assert ch["mae"][0] == pytest.approx(0.10, abs=0.005)
    np.testing.assert_allclose(r.dequantized[1], [2.21, -3.10, 1.77, -2.66], atol=0.005)
    assert ch["mae"][1] == pytest.approx(0.09, abs=0.005)


def test_seed003_per_channel_rescues_row_a():
    """Section 3: Row A scale 0.15/7 = 0.0214, codes [2, -4, 6, -7], reconstruction
    [0.0429, -0.0857, 0.1286, -0.1500]; section 4: Row A MAE about 0.005 (0.0054), Row B unchanged (0.09)."""
    ex = EXAMPLES["s3"]
    r = analyze(ex.rows, ex.spec.with_(granularity=PerChannel(0)))
    assert round(float(r.scale[0]), 4) == 0.0214
    assert r.q[0].tolist() == [2, -4, 6, -7]
    np.testing.assert_allclose(r.dequantized[0], [0.0429, -0.0857, 0.1286, -0.1500], atol=5e-5)
    ch = r.channel_table()
    assert ch["mae"][0] == pytest.approx(0.0054, abs=5e-5)
    assert ch["mae"][1] == pytest.approx(0.09, abs=0.005)
    assert ch["collapsed"].tolist() == [0, 0]
    np.testing.assert_allclose(r.dequantized[1], [2.21, -3.10, 1.77, -2.66], atol=0.005)


# Seed 000 (000_ce5a6c6daf0efad4.txt), "Memory Estimate":
#   quantized_payload = elements * bit_width / 8
#   per_tensor_total = quantized_payload + 8 bytes metadata
#   per_channel_total = quantized_payload + channels * 8 bytes metadata
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_seed000_memory_formula(bits):
    ex = EXAMPLES["s0"]
    n, channels = 20, 4  # the seed's table: 4 channels x 5 values
    fmt = IntFormat(bits, True)
    pt = analyze(ex.rows, ex.spec.with_(fmt=fmt, granularity=PerTensor()))
    pc = analyze(ex.rows, ex.spec.with_(fmt=fmt, granularity=PerChannel(0)))
    payload = n * bits / 8
    assert pt.memory.payload_bytes == payload == pc.memory.payload_bytes
    assert pt.memory.total_bytes == payload + 8
    assert pc.memory.total_bytes == payload + channels * 8
    assert memory_estimate(n, channels, bits).total_bytes == payload + channels * 8


def test_seed000_table_local_ranges():
    """Seed 000's example table: local min, max and range per channel."""
    r = analyze(EXAMPLES["s0"].rows, EXAMPLES["s0"].spec.with_(granularity=PerChannel(0)))
    ch = r.channel_table()
    np.testing.assert_allclose(ch["min"], [-0.33, 0.88, -1.70, -0.06])
    np.testing.assert_allclose(ch["max"], [0.91, 1.44, -0.94, 0.11])
    np.testing.assert_allclose(ch["range"], [1.24, 0.56, 0.76, 0.17], atol=1e-12)


# Seed 002 (002_a6744f63ae7d6c8f.txt): ten activations, suggested range -1.50 to 1.50, 8-bit symmetric signed,
# "Symmetric signed: scale = max(|real_min|, |real_max|) / q_max", "zero_point = 0", q = clamp(round(x/scale + zp)).
def test_seed002_symmetric_8bit():
    ex = EXAMPLES["s2"]
    x = [-1.25, -0.92, -0.51, -0.10, 0, 0.14, 0.37, 0.79, 1.12, 1.46]
    assert ex.rows[0].tolist() == x
    r = analyze(ex.rows, ex.spec)
    assert float(r.scale[0]) == 1.5 / 127
    assert int(r.zero_point[0]) == 0
    # round(x * 127 / 1.5), computed by hand: -105.83 -> -106, -77.89 -> -78, -43.18 -> -43, -8.47 -> -8, 0,
    # 11.85 -> 12, 31.33 -> 31, 66.89 -> 67, 94.83 -> 95, 123.61 -> 124
    assert r.q[0].tolist() == [-106, -78, -43, -8, 0, 12, 31, 67, 95, 124]
    np.testing.assert_allclose(r.dequantized[0], np.array([-106, -78, -43, -8, 0, 12, 31, 67, 95, 124]) * 1.5 / 127)
    assert r.metrics.clip_count == 0  # "nothing clips because the range covers every sample"
    assert r.metrics.max_abs <= 1.5 / 127 / 2
