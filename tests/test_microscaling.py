"""Scaled float schemes: hand-worked examples from the specifications, and bit-exact comparisons with
torchao 0.18 (to_mx, nvfp4_quantize, NF4Tensor.double_quantize_scalers) and torch float8 casts.

The schemes are specs of the scheme model (element x granularity x scale rule x convention); ``spec(kind)``
names the seven classic ones."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from quantcore import floatfmt as ff
from quantcore.analysis import analyze
from quantcore.granularity import PerChannel, PerGroup, PerTensor
from quantcore.scales import AbsMax, PowerOfTwo, TwoLevel
from quantcore.spec import QuantSpec
from arrays import rand

torch = pytest.importorskip("torch", reason="torch is the oracle for the bit-exact comparisons")

KINDS = ("fp8_tensor", "fp8_channel", "mxfp8_e4m3", "mxfp8_e5m2", "mxfp4", "nvfp4", "nf4")
BLOCK = {"mxfp8_e4m3": 32, "mxfp8_e5m2": 32, "mxfp4": 32, "nvfp4": 16, "nf4": 64}


def spec(kind, element=None, axis=None, block_size=None, double_quant=False, convention=None):
    """The scheme model's spec of a classic float scheme: element x granularity x scale rule x convention."""
    fp8 = ff.E5M2 if element == "e5m2" else ff.E4M3FN
    if kind == "fp8_tensor":
        return QuantSpec(element=fp8, granularity=PerTensor(), scale_rule=AbsMax())
    if kind == "fp8_channel":
        return QuantSpec(element=fp8, granularity=PerChannel(0 if axis is None else axis), scale_rule=AbsMax())
    g = PerGroup(block_size or BLOCK[kind], -1 if axis is None else axis)
    if kind.startswith("mx"):
        el = {"mxfp8_e4m3": ff.E4M3FN, "mxfp8_e5m2": ff.E5M2, "mxfp4": ff.E2M1}[kind]
        return QuantSpec(element=el, granularity=g, scale_rule=PowerOfTwo("floor"))
    if kind == "nvfp4":
        return QuantSpec(element=ff.E2M1, granularity=g, scale_rule=TwoLevel(), convention=convention or "modelopt")
    return QuantSpec(element=ff.NF4, granularity=g, scale_rule=AbsMax(double_quant=256 if double_quant else None),
                     convention="reciprocal")


def q(x, kind, **kw):
    return analyze(np.asarray(x, np.float32), spec(kind, **kw))


def clipped(r):
    """Elements that saturated (bool, input layout)."""
    return r.clipped != 0


# ---- OCP MX v1.0, section 6.3 worked examples ----------------------------------------------------

def test_mx_e4m3_worked_example_section_6_3():
    # OCP MX v1.0 section 6.3: shared_exp = floor(log2(max|V|)) - emax_elem, X = 2**shared_exp,
    # P_i = quantize_to_element_format(V_i / X) with saturation to the element's max normal.
    # Block amax 1000: floor(log2 1000) = 9, emax(E4M3) = 8 -> shared_exp 1, X = 2 (E8M0 code 128).
    #   1000 / 2 = 500 -> nearest E4M3 512 is past 448 -> saturates to 448 -> 896 (clipped)
    #   3.3 / 2 = 1.65 -> E4M3 step 0.125 in [1, 2): 1.625 -> 3.25
    #   -0.01 / 2 = -0.005 -> subnormal step 2**-9: -3 * 2**-9 = -0.005859375 -> -0.01171875
    x = np.zeros(32, np.float32)
    x[:4] = [1000, 3.3, -0.01, 448 * 2]
    r = q(x, "mxfp8_e4m3")
    assert r.scale_codes.tolist() == [128] and r.block_scale.tolist() == [2.0]
    assert r.dequantized[:4].tolist() == [896.0, 3.25, -0.01171875, 896.0]
    assert clipped(r)[:4].tolist() == [True, False, False, False]
    assert r.metrics.clip_count == 1


def test_mxfp4_worked_example_ties_and_clipping():
    # E2M1 emax = 2. Block A amax 5: floor(log2 5) = 2 -> shared_exp 0, X = 1.
    #   5 is the midpoint of 4 (code 6, mantissa 0) and 6 (code 7): ties to even -> 4
    #   7 would not occur in block A; block B amax 7: floor(log2 7) = 2 -> X = 1, 7 rounds past 6
    #   (tie to the even "8") and saturates to 6 (clipped); 0.25 ties between 0 and 0.5 -> 0
    # Block C amax 0.3: floor(log2 0.3) = -2 -> shared_exp -4, X = 1/16; 0.3 * 16 = 4.8 -> 4 -> 0.25
    x = np.zeros((3, 32), np.float32)
    x[0, :2] = [5, -2.5]         # -2.5: midpoint of 2 (code 4, even) and 3 -> -2
    x[1, :2] = [7, 0.25]
    x[2, :1] = [0.3]
    r = q(x, "mxfp4")
    assert r.scale_codes.tolist() == [127, 127, 123]
    assert r.dequantized[0, :2].tolist() == [4.0, -2.0]
    assert r.dequantized[1, :2].tolist() == [6.0, 0.0]
    assert r.dequantized[2, 0] == 0.25
    assert clipped(r).sum() == 1 and clipped(r)[1, 0]


def test_mx_scale_clamps_to_e8m0_range_and_zero_block():
    x = np.zeros((3, 32), np.float32)
    x[1, 0] = 3e38               # floor(log2) = 127 -> 127 - 8 = 119
    x[2, 0] = 1e-40              # subnormal float32: shared_exp would be < -127 -> clamps to -127
    r = q(x, "mxfp8_e4m3")
    assert r.scale_codes.tolist() == [0, 119 + 127, 0]
    assert r.block_scale[0] == np.float32(2.0**-127)
    assert np.all(r.dequantized[0] == 0)
    # 1e-40 / 2**-127 = 1.70..e-2 -> E4M3 grid near 2**-6 (step 2**-9): exact float64 division
    want = float(ff.round_to_format(np.array([np.float32(1e-40) / 2.0**-127]), ff.E4M3FN)[0]) * 2.0**-127
    assert r.dequantized[2, 0] == np.float32(want)


def test_mx_nan_block_is_nan_when_allowed():
    x = rand((2, 64), spread=False)
    x[1, 40] = np.nan
    with pytest.raises(ValueError, match=r"non-finite value.*first at index \(1, 40\)"):
        q(x, "mxfp4")
    r = analyze(x, spec("mxfp4"), allow_nonfinite=True)
    # blocks are (row 0: 0, 1), (row 1: 2, 3); the NaN sits in block 3
    assert r.scale_codes[3] == 255 and np.isnan(r.block_scale[3])
    assert np.all(r.scale_codes[:3] < 255)
    assert np.all(np.isnan(r.dequantized[1, 32:])) and not np.isnan(r.dequantized[1, :32]).any()
    with pytest.raises(ValueError, match="MX schemes only"):
        analyze(x, spec("nvfp4"), allow_nonfinite=True)


# ---- MX against torchao.to_mx (FLOOR mode = the spec's rule) ----------------------------------------

@pytest.mark.parametrize("kind,tdtype", [("mxfp8_e4m3", "float8_e4m3fn"), ("mxfp8_e5m2", "float8_e5m2"),
                                         ("mxfp4", "float4_e2m1fn_x2")])
def test_mx_matches_torchao_to_mx(kind, tdtype):
    mx = pytest.importorskip("torchao.prototype.mx_formats.mx_tensor", reason="torchao MX oracle")
    from torchao.prototype.mx_formats.kernels import unpack_uint4
    x = rand((64, 256), seed=1)
    x[3, :32] = 0.0                                   # an all-zero block
    x[5, 7] = x[5, :32].max() * 1.97                  # an amax just below a power of two
    scale, data = mx.to_mx(torch.from_numpy(x), getattr(torch, tdtype), 32)
    r = q(x, kind)
    assert np.array_equal(r.scale_codes, scale.view(torch.uint8).numpy().reshape(-1))
    if kind == "mxfp4":
        codes = unpack_uint4(data.view(torch.uint8)).numpy().reshape(x.shape)
    else:
        codes = data.view(torch.uint8).numpy()
    assert np.array_equal(r.q, codes)
    assert r.metrics.clip_count > 0                           # floor scale: the largest elements saturate


# ---- NVFP4 ---------------------------------------------------------------------------------------

def test_nvfp4_hand_worked_example():
    # Tensor amax 2688 = 6 * 448 -> s_t = 2688 / (6 * 448) = 1.0 exactly.
    # Block 0 amax 2688: s_b = E4M3(2688 / 6 / 1) = 448; 2688 / 448 = 6 -> 6 * 448 = 2688.
    # Block 1 amax 60:   s_b = E4M3(10) = 10 (1.25 * 2**3); 25 / 10 = 2.5 ties to even 2 -> 20;
    #                    0.4 / 10 = 0.04 -> 0; -60 -> -6 -> -60.
    # Block 2 amax 13:   13 / 6 = 2.1667 -> E4M3 step 0.25 in [2, 4): 2.25; 13 / 2.25 = 5.78 -> 6 -> 13.5
    x = np.zeros(48, np.float32)
    x[0] = 2688
    x[16:19] = [-60, 25, 0.4]
    x[32] = 13
    r = q(x, "nvfp4")
    assert r.tensor_scale == 1.0
    assert r.block_scale.tolist() == [448.0, 10.0, 2.25]
    assert r.dequantized[[0, 16, 17, 18, 32]].tolist() == [2688.0, -60.0, 20.0, 0.0, 13.5]
    assert r.metrics.clip_count == 0


def test_nvfp4_matches_torchao_convention():
    nv = pytest.importorskip("torchao.prototype.mx_formats.nvfp4_tensor", reason="torchao NVFP4 oracle")
    from torchao.prototype.mx_formats.kernels import unpack_uint4
    x = rand((32, 128), seed=2, spread=False) * np.float32(3.7)
    x[0, :16] *= np.float32(1e-6)                    # a block whose scale clamps to 2**-6
    t = torch.from_numpy(x)
    s_t = nv.per_tensor_amax_to_scale(t.abs().max())
    scales, data = nv.nvfp4_quantize(t, 16, per_tensor_scale=s_t)
    r = q(x, "nvfp4", convention="torchao")
    assert r.tensor_scale == float(s_t)
    assert np.array_equal(r.scale_codes, scales.view(torch.uint8).numpy().reshape(-1))
    assert np.array_equal(r.q, unpack_uint4(data.view(torch.uint8)).numpy().reshape(x.shape))


def test_nvfp4_modelopt_formula_with_torch_ops():
    """convention="modelopt": x / (s_b * s_t), computed here with torch float32 ops and torchao's
    independent E2M1 encoder (f32_to_f4_unpacked)."""
    pytest.importorskip("torchao.prototype.mx_formats.kernels", reason="torchao E2M1 encoder")
    from torchao.prototype.mx_formats.kernels import f32_to_f4_unpacked
    x = rand((16, 64), seed=3, spread=False)
    t = torch.from_numpy(x)
    s_t = t.abs().max() / (6.0 * 448.0)
    blocks = t.reshape(-1, 16)
    sb = torch.clamp(blocks.abs().amax(1) / 6.0 / s_t, min=2.0**-6, max=448.0).to(torch.float8_e4m3fn)
    sbf = sb.to(torch.float32)
    codes = f32_to_f4_unpacked(torch.clamp(blocks / (sbf * s_t)[:, None], -6.0, 6.0)).reshape(x.shape)
    r = q(x, "nvfp4")
    assert np.array_equal(r.scale_codes, sb.view(torch.uint8).numpy())
    assert np.array_equal(r.q, codes.numpy())
    deq = (ff.decode(codes.numpy(), ff.E2M1).reshape(-1, 16) * (sbf * s_t).numpy()[:, None]).reshape(x.shape)
    assert np.array_equal(r.dequantized, deq)


# ---- FP8 per-tensor / per-channel ------------------------------------------------------------------

@pytest.mark.parametrize("element,tdtype,vmax", [("e4m3", torch.float8_e4m3fn, 448.0),
                                                 ("e5m2", torch.float8_e5m2, 57344.0)])
def test_fp8_tensor_and_channel_match_torch_cast(element, tdtype, vmax):
    x = rand((8, 300), seed=4)
    t = torch.from_numpy(x)
    # per-tensor: scale = amax / max (float32), codes = cast(clamp(x / scale))
    s = t.abs().max() / vmax
    want = torch.clamp(t / s, -vmax, vmax).to(tdtype).view(torch.uint8).numpy()
    r = q(x, "fp8_tensor", element=element)
    assert r.block_scale.tolist() == [float(s)] and np.array_equal(r.q, want)
    # per-channel along axis 0
    s = t.abs().amax(1, keepdim=True) / vmax
    want = torch.clamp(t / s, -vmax, vmax).to(tdtype).view(torch.uint8).numpy()
    r = q(x, "fp8_channel", element=element)
    assert np.array_equal(r.block_scale, s.numpy().reshape(-1)) and np.array_equal(r.q, want)
    assert r.metrics.clip_count == 0
    # channel axis 1 == transpose
    r1 = q(x.T.copy(), "fp8_channel", element=element, axis=1)
    assert np.array_equal(r1.q, r.q.T)


# ---- NF4 ---------------------------------------------------------------------------------------

def test_nf4_hand_example_and_nearest():
    # absmax 2: x / 2 -> NF4 tree; 0.5 * ... values chosen on both sides of thresholds
    x = np.zeros(64, np.float32)
    x[:6] = [2.0, -2.0, 0.5, 0.04, -0.1, 1.0]
    r = q(x, "nf4")
    # 0.5/2 = 0.25 -> nearest 0.24611 (code 10); 0.02 -> 0.0 (7); -0.05 -> -0.09105 (6) since it is
    # below threshold -0.0455; 0.5 is below the 0.4407/0.5626 threshold 0.50166 -> 0.4407 (12)
    assert r.q[:6].tolist() == [15, 0, 10, 7, 6, 12]
    assert r.block_scale.tolist() == [2.0]
    vals = np.asarray(ff.NF4.values, np.float32)
    assert np.array_equal(r.dequantized[:6], vals[r.q[:6]] * np.float32(2.0))
    # on random data the code is the nearest NF4 value except within 1e-6 of a midpoint
    y = rand((64, 64), seed=5, spread=False)
    r = q(y, "nf4")
    blocks = y.reshape(-1, 64)
    scaled = (blocks * (np.float32(1) / np.abs(blocks).max(1))[:, None]).reshape(-1).astype(np.float64)
    nearest = np.argmin(np.abs(scaled[:, None] - vals[None, :].astype(np.float64)), axis=1)
    mids = (vals[:-1].astype(np.float64) + vals[1:]) / 2
    near_mid = np.min(np.abs(scaled[:, None] - mids[None, :]), axis=1) < 1e-6
    assert np.array_equal(r.q.reshape(-1)[~near_mid], nearest[~near_mid])


def test_nf4_double_quant_matches_torchao():
    nf4mod = pytest.importorskip("torchao.quantization.quantize_.workflows.nf4.nf4_tensor",
                                 reason="torchao NF4 double-quant oracle")
    rng = np.random.default_rng(6)
    # multiples of 2**-12 below 4: the float32 sum of the 512 absmax values is exact in any order,
    # so torch's float32 mean and ours agree bit for bit
    x = (np.round(rng.standard_normal((128, 256)) * 4096) / 4096).clip(-3.99, 3.99).astype(np.float32)
    qs, factor, mean = nf4mod.NF4Tensor.double_quantize_scalers(torch.from_numpy(x).flatten(), 64, 256)
    r = q(x, "nf4", double_quant=True)
    assert r.scales.dq_mean == float(mean)
    assert np.array_equal(r.scales.dq_factors, factor.numpy())
    assert np.array_equal(r.scale_codes, qs.numpy())
    # dequantized scales as torchao's dequantize_scalers: q / f + mean in float32
    want = (qs.to(torch.float32).reshape(-1, 256) / factor[:, None]).flatten() + mean
    assert np.array_equal(r.block_scale, want.numpy())


# ---- memory accounting -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,kw,bpw", [
    ("mxfp4", {}, 4.25), ("mxfp8_e4m3", {}, 8.25), ("mxfp8_e5m2", {}, 8.25),
    ("nvfp4", {}, 4.5 + 32 / 4096), ("nf4", {}, 4.5),
    # 64 scales -> one (short) run of the 256-scale double quantization: 8*64 + 32 + 32 (mean) bits
    ("nf4", {"double_quant": True}, 4 + (8 * 64 + 32 + 32) / 4096),
    ("fp8_tensor", {}, 8 + 32 / 4096), ("fp8_channel", {}, 8 + 32 * 16 / 4096),
])
def test_bits_per_weight(kind, kw, bpw):
    r = q(rand((16, 256), spread=False), kind, **kw)
    m = r.memory
    assert m.bits_per_weight == pytest.approx(bpw, rel=0, abs=1e-12)
    assert m.total_bytes * 8 >= m.bits_per_weight * m.n_elements
    assert m.total_bytes == m.payload_bytes + m.metadata_bytes
    # one meaning everywhere (quantcore.memory): the stored size as a fraction of fp32
    assert m.ratio_fp32 == m.total_bytes / (4 * 4096)


def test_qlora_double_quant_figure():
    # QLoRA: 8-bit scales per 64 weights + 32-bit per 256 scales -> 4 + 8/64 + 32/(64*256) = 4.127
    r = q(rand((1024, 1024), spread=False), "nf4", double_quant=True)
    assert round(r.memory.bits_per_weight, 3) == 4.127
    assert r.memory.payload_bytes == 1024 * 1024 // 2 and r.memory.metadata_bytes == 16384 + 64 * 4 + 4


# ---- layout: partial blocks, axis ----------------------------------------------------------------

@pytest.mark.parametrize("kind", ["mxfp4", "mxfp8_e4m3", "nvfp4", "nf4"])
def test_partial_last_block_equals_zero_padding(kind):
    x = rand((5, 100), seed=7)
    r = q(x, kind)
    b = BLOCK[kind]
    padded = np.concatenate([x, np.zeros((5, (-100) % b), np.float32)], axis=1)
    rp = q(padded, kind)
    assert np.array_equal(r.q, rp.q[:, :100])
    assert np.array_equal(r.dequantized, rp.dequantized[:, :100])
    assert r.memory.n_blocks == 5 * -(-100 // b)
    assert r.memory.payload_bytes == -(-500 * r.spec.element.bits // 8)     # padding is not stored
    ids = r.block_index
    assert ids[0, -1] == ids[0, 0] + (100 - 1) // b and ids[1, 0] == -(-100 // b)


@pytest.mark.parametrize("kind", ["mxfp4", "nvfp4", "nf4", "mxfp8_e5m2"])
def test_axis_is_transpose(kind):
    x = rand((64, 48), seed=8)
    r0 = q(x, kind, axis=0)
    rT = q(x.T.copy(), kind)
    assert np.array_equal(r0.q, rT.q.T) and np.array_equal(r0.dequantized, rT.dequantized.T)
    x3 = rand((2, 3, 64), seed=9)
    r3 = q(x3, kind)
    assert np.array_equal(r3.q, q(x3.reshape(6, 64), kind).q.reshape(2, 3, 64))


def test_validation_messages():
    """Bad input is refused naming what and where. (The closed menu's refusals -- unknown kind, a block size
    for per-tensor, double quantization outside NF4 -- are now unrepresentable or refused by the scheme
    model: tests/engine/test_scheme_model.py.)"""
    with pytest.raises(ValueError, match="empty"):
        q(np.zeros((0, 4)), "mxfp4")
    with pytest.raises(ValueError, match=r"non-finite value.*first at index \(0, 2\)"):
        q(np.array([[1, 2, np.inf]]), "nf4")
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        q(np.ones((2, 2)), "nvfp4", axis=2)
    with pytest.raises(ValueError, match="real numeric"):
        analyze(np.array(["a"]), spec("nf4"))


def test_labels_unique():
    specs = [spec(k) for k in KINDS] + [spec("nf4", double_quant=True), spec("fp8_tensor", element="e5m2")]
    labels = [s.label for s in specs]
    assert len(set(labels)) == len(labels)
    assert spec("mxfp4", block_size=16).label != spec("mxfp4").label
    assert "per-group 16" in spec("mxfp4", block_size=16).label


# ---- properties -------------------------------------------------------------------------------------

arrays = hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 70)),
                    elements=st.floats(-1e6, 1e6, width=32, allow_subnormal=True))


@settings(max_examples=60, deadline=None)
@given(x=arrays, kind=st.sampled_from(["mxfp8_e4m3", "mxfp8_e5m2", "mxfp4"]))
def test_property_mx_elements_are_nearest_on_scaled_grid(x, kind):
    """For MX, every dequantized value is X * (the element-format value nearest to x / X, saturated),
    X is a power of two, and amax / X lies in [2**emax, 2**(emax + 1)) unless X was clamped."""
    r = q(x, kind)
    fmt = spec(kind).element
    X = r.block_scale[r.block_index].astype(np.float64)
    assert np.all(np.frexp(X)[0] == 0.5)
    want = ff.round_to_format(x.astype(np.float64) / X, fmt).astype(np.float64) * X
    assert np.array_equal(r.dequantized.astype(np.float64), want)
    amax = np.zeros(r.blocks.n_blocks)
    np.maximum.at(amax, r.block_index.reshape(-1), np.abs(x.astype(np.float64)).reshape(-1))
    ok = (amax > 2.0**-100)
    ratio = amax[ok] / r.block_scale[ok].astype(np.float64)
    assert np.all((ratio >= 2.0**fmt.emax) & (ratio < 2.0 ** (fmt.emax + 1)))


@settings(max_examples=60, deadline=None)
@given(x=arrays, kind=st.sampled_from(list(KINDS)))
def test_property_sign_and_bounded_error(x, kind):
    """No scheme flips a sign (x_hat is 0 or has x's sign), and the error of an unclipped element is
    at most its block scale times the element format's largest gap (half of it for round-to-nearest,
    NF4's largest gap is 0.3038). Blocks of subnormals whose float32 scale underflows (fp8: amax / 448 = 0,
    NF4: 1 / absmax = inf, NVFP4: amax / 2688 = 0) are refused by design (test_tiny_scales_are_refused)."""
    try:
        r = q(x, kind)
    except ValueError as e:
        assume("cannot be scaled in float32" not in str(e) and "underflows float32" not in str(e))
        raise
    xh = r.dequantized.astype(np.float64)
    x64 = x.astype(np.float64)
    assert np.all((xh == 0) | (np.sign(xh) == np.sign(x64)))
    fmt = r.spec.element
    vals = ff.decode(np.arange(fmt.n_codes), fmt).astype(np.float64)
    vals = np.unique(vals[np.isfinite(vals)])
    gap = np.max(np.diff(vals))
    scale = r.block_scale[r.block_index].astype(np.float64)
    if r.tensor_scale is not None:
        scale = scale * r.tensor_scale
    err = np.abs(xh - x64)[~clipped(r)]
    assert np.all(err <= gap / 2 * scale[~clipped(r)] * (1 + 1e-5) + 1e-30)


# ---- boundary flags ---------------------------------------------------------------------------------

def _scaled_reference(x, r):
    """The float32 element-encoder input of each scheme, recomputed from the stored scales."""
    rule = r.spec.scale_rule
    s = r.block_scale[r.block_index]
    if isinstance(rule, PowerOfTwo):
        return (x.astype(np.float64) / s.astype(np.float64)).astype(np.float32)   # exact: power of two
    if isinstance(rule, TwoLevel):
        return (x / (s * np.float32(r.tensor_scale))).astype(np.float32)
    if r.spec.element is ff.NF4:
        absmax = (r.block_scale if r.scales.absmax is None else r.scales.absmax)[r.block_index]
        with np.errstate(divide="ignore"):
            recip = np.where(absmax > 0, np.float32(1) / absmax, np.float32(0)).astype(np.float32)
        return (x * recip).astype(np.float32)
    return (x / s).astype(np.float32)


def _brute_boundary(scaled, fmt):
    """One float32 ulp up or down changes the (saturated) magnitude code."""
    mag = (lambda c: c) if isinstance(fmt, ff.Codebook) else (lambda c: c & fmt.mag_mask)
    enc = lambda v: mag(ff.encode(v.astype(np.float64), fmt))
    c0 = enc(scaled)
    return (enc(np.nextafter(scaled, np.float32(np.inf))) != c0) | (enc(np.nextafter(scaled, np.float32(-np.inf))) != c0)


@pytest.mark.parametrize("kind,kw", [("fp8_tensor", {}), ("fp8_channel", {"element": "e5m2"}), ("mxfp8_e4m3", {}),
                                     ("mxfp8_e5m2", {}), ("mxfp4", {}), ("nvfp4", {}),
                                     ("nvfp4", {"convention": "torchao"}), ("nf4", {})])
def test_boundary_matches_one_ulp_definition(kind, kw):
    """r.ties == "a one-float32-ulp move of the scaled value changes the code", on random data
    (a few natural boundaries) plus elements planted exactly on midpoints."""
    x = rand((32, 96), seed=12)
    r = q(x, kind, **kw)
    fmt = r.spec.element
    scaled = _scaled_reference(x, r)
    assert np.array_equal(r.ties, _brute_boundary(scaled, fmt))
    assert r.ties.shape == x.shape and r.ties.dtype == bool


def test_boundary_constructed_e4m3_e5m2_e2m1():
    # fp8 per-tensor E4M3 with amax 448 -> scale exactly 1: scaled values are the inputs
    x = np.zeros(8, np.float32)
    x[:6] = [448, 1.0625, -1.1875, 1.0, 1.03125, 3 * 2.0**-10]   # midpoints: 1.0625, 1.1875, 1.5*2**-9
    r = q(x, "fp8_tensor")
    assert r.block_scale.tolist() == [1.0]
    assert r.ties.tolist() == [False, True, True, False, False, True, False, False]
    # the float32 neighbours of the 1.0 / 1.125 midpoint: the tie goes down to 1.0 (even), so the one
    # just above is a boundary (one ulp down lands on the tie, which rounds down), the one below is not
    x[1:3] = [np.nextafter(np.float32(1.0625), np.float32(2)), np.nextafter(np.float32(1.0625), np.float32(0))]
    assert q(x, "fp8_tensor").ties[1:3].tolist() == [True, False]
    # MXFP8 E5M2: amax 40000 -> shared_exp = 15 - 15 = 0, X = 1; 1.125 is the 1 / 1.25 midpoint
    y = np.zeros(32, np.float32)
    y[:4] = [40000, 1.125, 1.0625, 1.25]
    r = q(y, "mxfp8_e5m2")
    assert r.block_scale[0] == 1.0
    assert r.ties[:4].tolist() == [False, True, False, False]
    # MXFP4 (E2M1): amax 5 -> X = 1; 5 (4/6 midpoint), 2.5 (2/3), -0.25 (0/-0.5) are boundaries
    z = np.zeros(32, np.float32)
    z[:6] = [5, 2.5, -0.25, 4, 3.25, 0.375]         # 3.25 and 0.375 are quarter points
    r = q(z, "mxfp4")
    assert r.ties[:6].tolist() == [True, True, True, False, False, False]
    # NVFP4 with s_t = 1 and s_b = 448 (block amax 2688): 5 * 448 is the 4/6 midpoint
    w = np.zeros(16, np.float32)
    w[:3] = [2688, 5 * 448, 4.5 * 448]
    r = q(w, "nvfp4")
    assert r.tensor_scale == 1.0 and r.block_scale[0] == 448
    assert r.ties[:3].tolist() == [False, True, False]


def test_boundary_constructed_nf4():
    # absmax 1 -> reciprocal 1: scaled values are the inputs; thresholds (and next_up) are boundaries
    thr = np.asarray(ff.NF4.thresholds, np.float32)
    vals = np.asarray(ff.NF4.values, np.float32)
    x = np.zeros(64, np.float32)
    x[:15] = thr
    x[15:30] = np.nextafter(thr, np.float32(2))
    x[30:46] = vals
    r = q(x, "nf4")
    assert r.block_scale.tolist() == [1.0]
    assert r.ties[:30].all() and not r.ties[30:].any()
    assert q(x, "nf4", double_quant=True).ties[:30].all()


def test_mx_nan_block_has_no_boundary_or_clip():
    x = rand((1, 64), spread=False)
    x[0, 40] = np.nan
    r = analyze(x, spec("mxfp4"), allow_nonfinite=True)
    assert not r.ties[0, 32:].any() and not clipped(r)[0, 32:].any() and np.all(r.q[0, 32:] == 0)


# ---- documented differences from torchao 0.18 (asserted, not implemented) ------------------------------

@pytest.mark.parametrize("kind,tdtype,fmt", [("mxfp8_e4m3", "float8_e4m3fn", ff.E4M3FN),
                                             ("mxfp8_e5m2", "float8_e5m2", ff.E5M2),
                                             ("mxfp4", "float4_e2m1fn_x2", ff.E2M1)])
def test_mx_tiny_blocks_torchao_divides_by_2_pow_minus_126(kind, tdtype, fmt):
    """torchao 0.18 to_mx clamps the dividing scale to float32's smallest normal (a triton workaround), so a
    block whose E8M0 scale code is 0 (shared exponent -127: amax < 2**(emax - 126), i.e. 2**-118 for E4M3,
    2**-111 for E5M2, 2**-124 for E2M1) is divided by 2**-126 instead of X = 2**-127: its element codes are
    those of x * 2**126, and torchao's own decode (code * 2**-127) returns x / 2. quantcore follows OCP MX
    v1.0 section 6.3 (x / 2**-127). Scale codes agree everywhere, element codes on every other block."""
    mx = pytest.importorskip("torchao.prototype.mx_formats.mx_tensor", reason="torchao MX oracle")
    from torchao.prototype.mx_formats.kernels import unpack_uint4
    rng = np.random.default_rng(8)
    exps = np.arange(-100, -150, -1)
    x = (rng.uniform(-1, 1, (exps.size, 32)) * 2.0 ** exps[:, None]).astype(np.float32)
    x[np.arange(exps.size), rng.integers(0, 32, exps.size)] = np.float32(1.5) * (2.0 ** exps).astype(np.float32)
    x[-1] = 0.0
    scale, data = mx.to_mx(torch.from_numpy(x), getattr(torch, tdtype), 32)
    theirs = (unpack_uint4(data.view(torch.uint8)).numpy() if kind == "mxfp4" else data.view(torch.uint8).numpy())
    r = q(x, kind)
    assert np.array_equal(r.scale_codes, scale.view(torch.uint8).numpy().reshape(-1))
    amax = np.abs(x).max(axis=1)
    code0 = r.scale_codes == 0
    assert np.array_equal(code0, amax < 2.0 ** (fmt.emax - 126))
    assert np.array_equal(r.q[~code0], theirs.reshape(x.shape)[~code0])
    want = ff.encode((x[code0].astype(np.float64) * 2.0**126).astype(np.float32), fmt)
    assert np.array_equal(theirs.reshape(x.shape)[code0], want)
    ours = ff.encode((x[code0].astype(np.float64) * 2.0**127).astype(np.float32), fmt)
    assert np.array_equal(r.q[code0], ours) and not np.array_equal(ours, want)


def test_fp8_rowwise_all_zero_row_torchao_gives_nan():
    """torchao 0.18 rowwise float8 (_choose_scale_float8 with block (1, K), _quantize_affine_float8): an
    all-zero row gets scale 0 and 0 / 0 = NaN codes. quantcore's fp8_channel gives it scale 1, codes 0 and
    x_hat 0. Every other row is identical, bit for bit."""
    qp = pytest.importorskip("torchao.quantization.quant_primitives", reason="torchao float8 oracle")
    x = rand((6, 64), seed=9)
    x[2] = 0.0
    t = torch.from_numpy(x)
    s = qp._choose_scale_float8(t, [1, 64], torch.float8_e4m3fn)
    codes = qp._quantize_affine_float8(t, s, torch.float8_e4m3fn).view(torch.uint8).numpy()
    deq = qp._dequantize_affine_float8(qp._quantize_affine_float8(t, s, torch.float8_e4m3fn), s).numpy()
    r = q(x, "fp8_channel", element="e4m3")
    assert float(s.reshape(-1)[2]) == 0.0 and np.isnan(deq[2]).all()
    assert r.block_scale[2] == 1.0 and not r.q[2].any() and not r.dequantized[2].any()
    keep = np.arange(6) != 2
    assert np.array_equal(r.block_scale[keep], s.numpy().reshape(-1)[keep])
    assert np.array_equal(r.q[keep], codes[keep])
    assert np.array_equal(r.dequantized[keep].view(np.uint32), deq[keep].view(np.uint32))


@pytest.mark.parametrize("kind,kw,msg", [
    ("fp8_tensor", {}, "fp8_e4m3fn per-tensor, absmax: the tensor: its scale is 0 in float32 (amax 1.4e-45)"),
    ("fp8_channel", {"element": "e5m2"},
     "fp8_e5m2 per-channel, absmax: channel 1: its scale is 0 in float32 (amax 1.4e-45)"),
    ("nf4", {}, "nf4 per-group 64, absmax (reciprocal): block 1: its reciprocal scale is inf in float32 (amax 1.4e-45)"),
    ("nvfp4", {}, "fp4_e2m1 per-group 16, e4m3 x fp32 two-level: two-level scales: the tensor scale amax / 2688 "
                  "underflows float32 (tensor amax 1.4e-45)"),
])
def test_tiny_scales_are_refused(kind, kw, msg):
    """A block of float32 subnormals whose scale underflows to 0 (or whose reciprocal overflows) would make
    its codes inf/NaN (torch's x / 0): refused with a message naming the block. MX scales are exact powers
    of two down to 2**-127, so MX takes any finite input."""
    x = np.zeros((2, 64), np.float32)
    x[1, :] = np.float32(1e-45)
    x[0, :] = 0.0 if kind != "fp8_tensor" else np.float32(1e-45)
    with pytest.raises(ValueError) as e:
        q(x, kind, **kw)
    assert msg in str(e.value)
    for mx_kind in ("mxfp8_e4m3", "mxfp4"):
        r = q(x, mx_kind)
        assert np.isfinite(r.dequantized).all()


def test_nf4_double_quant_factor_overflow_is_refused():
    """torchao's double quantization computes 256 / (2 * amax(|absmax - mean|)): with one absmax near
    float32's maximum, 2 * amax overflows, the factor is 0 and its scales are NaN. Refused, naming the run."""
    x = rand((4, 64), seed=2, spread=False)
    x[0, 1] = np.float32(-3.4e38)
    with pytest.raises(ValueError, match=r"nf4 .*double quantization: scale run 0 \(blocks 0\.\.3\)"):
        q(x, "nf4", double_quant=True)
    assert np.isfinite(q(x, "nf4").dequantized).all()
