"""Bit-exact parity with ONNX Runtime 1.32 (CPU execution provider, graph optimizations off).

Oracles:

* ``QuantizeLinear`` / ``DequantizeLinear`` (opset 21) in graphs built with ``onnx.helper`` and run in
  ``onnxruntime.InferenceSession``: the codes (read through a ``Cast`` to int8/uint8/int16/uint16, which is
  exact) and the dequantized float32 values, per-tensor, per-axis and blocked (``block_size``), for int8,
  uint8, int4, uint4, int16 and uint16. quantcore: convention ``onnx``.
* ``onnxruntime.quantization.quant_utils.compute_scale_zp`` (per-tensor / per-channel) and
  ``compute_scale_zp_blocked`` (blocked weights), with the ranges of ``get_qmin_qmax_for_qType``
  (quantcore: ``formats.onnx_dtype_format``), and one end-to-end ``quantize_static`` run.
* The MatMulNBits weight quantizer (the pybind ``quantize_matmul_{2,4,8}bits`` that
  ``matmul_nbits_quantizer`` calls, i.e. MLAS ``MlasQuantizeBlockwise``) and the ``com.microsoft``
  ``MatMulNBits`` operator. quantcore: convention ``matmulnbits``.

Every comparison is element for element (float32 bit patterns for scales and dequantized values); each
test prints ``elements compared, mismatches`` per case (``pytest -s``).
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from quantcore import CustomRange, IntFormat, PerChannel, PerGroup, PerTensor, QuantSpec, analyze
from quantcore.conventions import get_convention
from quantcore.formats import onnx_dtype_format
from quantcore.quantize import dequantize_blocks, quantize_blocks

from .conftest import lognormal_channels

QTYPES = ("int8", "uint8", "int4", "uint4", "int16", "uint16")


# --- oracle graphs ---------------------------------------------------------------------------------------
def _tensor_type(onnx, qtype: str) -> int:
    return getattr(onnx.TensorProto, qtype.upper())


def _cast_type(onnx, qtype: str) -> int:
    """int4/uint4 cannot be returned to numpy: read them through an exact Cast to int8/uint8 (float8 to
    float32, also exact)."""
    if qtype.startswith("float8"):
        return onnx.TensorProto.FLOAT
    signed = not qtype.startswith("u")
    wide = "16" if qtype.endswith("16") else "8"
    return getattr(onnx.TensorProto, ("INT" if signed else "UINT") + wide)


def _session(ort, model):
    onnxruntime, _ = ort
    so = onnxruntime.SessionOptions()
    so.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    return onnxruntime.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def ort_qdq(ort, x: np.ndarray, scale, zero_point, qtype: str, axis: int | None = None,
            block_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(codes int64, dequantized float32) of QuantizeLinear -> DequantizeLinear with the given parameters."""
    _, onnx = ort
    h = onnx.helper
    attrs = {}
    if axis is not None:
        attrs["axis"] = axis
    if block_size is not None:
        attrs["block_size"] = block_size
    scale = np.asarray(scale, np.float32)
    zero_point = np.asarray(zero_point).astype(np.int64)
    inits = [onnx.numpy_helper.from_array(scale, "scale"),
             h.make_tensor("zero_point", _tensor_type(onnx, qtype), list(zero_point.shape), zero_point.ravel().tolist())]
    cast_to = _cast_type(onnx, qtype)
    nodes = [h.make_node("QuantizeLinear", ["x", "scale", "zero_point"], ["q"], **attrs),
             h.make_node("DequantizeLinear", ["q", "scale", "zero_point"], ["y"], **attrs),
             h.make_node("Cast", ["q"], ["codes"], to=cast_to)]
    graph = h.make_graph(nodes, "qdq", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(x.shape))],
                         [h.make_tensor_value_info("codes", cast_to, list(x.shape)),
                          h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, list(x.shape))], initializer=inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 21)], ir_version=10)
    codes, y = _session(ort, model).run(None, {"x": np.ascontiguousarray(x, np.float32)})
    return (codes if qtype.startswith("float8") else codes.astype(np.int64)), y


def count_mismatches(what: str, ours_q, ours_y, codes, y) -> int:
    """Assert codes and float32 bit patterns are identical; print and return the element count."""
    assert ours_q.shape == codes.shape, what
    bad_q = np.argwhere(ours_q != codes)
    bad_y = np.argwhere(np.asarray(ours_y, np.float32).view(np.uint32) != np.asarray(y, np.float32).view(np.uint32))
    print(f"{what}: {codes.size} elements compared, {len(bad_q)} code / {len(bad_y)} value mismatches")
    assert bad_q.size == 0, (f"{what}: {len(bad_q)} codes differ, first at {tuple(bad_q[0])}: "
                             f"ours={ours_q[tuple(bad_q[0])]} onnxruntime={codes[tuple(bad_q[0])]}")
    assert bad_y.size == 0, (f"{what}: {len(bad_y)} dequantized values differ, first at {tuple(bad_y[0])}: "
                             f"ours={ours_y[tuple(bad_y[0])]!r} onnxruntime={y[tuple(bad_y[0])]!r}")
    return codes.size


# --- QuantizeLinear / DequantizeLinear ---------------------------------------------------------------------
# name: (quantcore granularity, shape maker, ORT axis, ORT block_size)
GRANS = {
    "tensor": (PerTensor(), lambda r: (int(r.integers(2, 30)), int(r.integers(1, 200))), None, None),
    "axis0": (PerChannel(0), lambda r: (int(r.integers(2, 30)), int(r.integers(1, 200))), 0, None),
    "axis1": (PerChannel(1), lambda r: (int(r.integers(1, 30)), int(r.integers(2, 60))), 1, None),
    "axis1-3d": (PerChannel(1), lambda r: (int(r.integers(1, 5)), int(r.integers(2, 9)), int(r.integers(1, 40))), 1, None),
    "block32-last": (PerGroup(32, -1), lambda r: (int(r.integers(1, 20)), int(r.integers(1, 200))), 1, 32),
    "block16-first": (PerGroup(16, 0), lambda r: (int(r.integers(1, 90)), int(r.integers(1, 20))), 0, 16),
    "block24-3d": (PerGroup(24, -1), lambda r: (int(r.integers(1, 4)), int(r.integers(1, 6)), int(r.integers(1, 80))), 2, 24),
}


def onnx_layout(params: np.ndarray, shape: tuple[int, ...], gran) -> np.ndarray:
    """quantcore's per-block parameters in the layout ONNX expects (scalar, 1-D per axis, or x's rank with
    ceil(D / block_size) along the block axis). Blocks are numbered in quantcore's canonical order."""
    p = np.asarray(params)
    if isinstance(gran, PerTensor):
        return p.reshape(())
    if isinstance(gran, PerChannel):
        return p.reshape(-1)
    axis = gran.axis % len(shape)
    n_groups = -(-shape[axis] // gran.size)
    if axis == len(shape) - 1:
        return p.reshape(*shape[:-1], n_groups)
    assert len(shape) == 2 and axis == 0  # grouped along axis 0: quantcore's channels are the columns
    return p.reshape(shape[1], n_groups).T


def per_element(params_onnx: np.ndarray, shape: tuple[int, ...], axis: int | None, block: int | None) -> np.ndarray:
    """Broadcast ONNX-layout parameters to one value per element."""
    p = np.asarray(params_onnx, np.float64)
    if axis is None:
        return np.broadcast_to(p, shape)
    if block is None:
        bshape = [1] * len(shape)
        bshape[axis] = shape[axis]
        return np.broadcast_to(p.reshape(bshape), shape)
    return np.take(np.repeat(p, block, axis=axis), np.arange(shape[axis]), axis=axis)


def exact_ties(x: np.ndarray, scale_el: np.ndarray, lo_el: np.ndarray, hi_el: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
    """Replace every element that is not its block's min or max by a float32 v in [lo, hi] with
    ``float32(v) / float32(scale) == k + 0.5`` exactly (or its float32 neighbour when no exact tie exists)."""
    s32 = scale_el.astype(np.float32)
    k = np.floor(lo_el / scale_el + rng.random(x.shape) * (hi_el - lo_el) / scale_el - 0.5)
    v = ((k + 0.5) * scale_el).astype(np.float32)
    best = v
    for cand in (np.nextafter(v, np.float32(np.inf)), np.nextafter(v, np.float32(-np.inf)), v):
        best = np.where(cand / s32 == (k + 0.5).astype(np.float32), cand, best)
    best = np.clip(best, lo_el.astype(np.float32), hi_el.astype(np.float32))
    keep = (x == lo_el) | (x == hi_el)
    return np.where(keep, x, best).astype(np.float32)


def _edge_rows(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows (along axis 0) that are all positive (zero-point qmin), all negative (qmax), zero, constant."""
    x = x.copy()
    n = x.shape[0]
    kinds = [lambda s: np.abs(rng.standard_normal(s)) + 0.25, lambda s: -np.abs(rng.standard_normal(s)) * 3 - 0.1,
             lambda s: np.zeros(s), lambda s: np.full(s, rng.normal())]
    for i, row in enumerate(rng.choice(n, size=min(4, n), replace=False)):
        x[row] = kinds[i](x[row].shape)
    return x.astype(np.float32)


def assert_qdq_parity(ort, x: np.ndarray, qtype: str, mapping: str, gran_name: str, what: str,
                      rng: np.random.Generator | None = None, range_=None) -> int:
    """analyze(x) with the onnx convention, then QuantizeLinear/DequantizeLinear in ORT with our scale and
    zero-point: identical codes and dequantized values. With ``rng``, also on exact ties built from them."""
    gran, _, axis, block = GRANS[gran_name]
    spec = QuantSpec(fmt=onnx_dtype_format(qtype, symmetric=mapping == "symmetric"), mapping=mapping,
                     granularity=gran, convention="onnx", **({} if range_ is None else {"range": range_}))
    r = analyze(x, spec)
    assert r.scale.dtype == np.float32
    s, z = onnx_layout(r.scale, x.shape, gran), onnx_layout(r.zero_point, x.shape, gran)
    codes, y = ort_qdq(ort, x, s, z, qtype, axis, block)
    n = count_mismatches(what, r.q, r.dequantized, codes, y)
    if rng is not None:
        t = exact_ties(x, per_element(s, x.shape, axis, block), per_element(onnx_layout(r.lo, x.shape, gran), x.shape, axis, block),
                       per_element(onnx_layout(r.hi, x.shape, gran), x.shape, axis, block), rng)
        rt = analyze(t, spec)
        np.testing.assert_array_equal(rt.scale, r.scale)  # the ties kept every block's min and max
        codes, y = ort_qdq(ort, t, s, z, qtype, axis, block)
        n += count_mismatches(what + " ties", rt.q, rt.dequantized, codes, y)
    return n


QDQ_COMBOS = [(q, m, g) for q in QTYPES for m in ("affine", "symmetric") for g in GRANS]


@pytest.mark.parametrize("qtype,mapping,gran", QDQ_COMBOS)
def test_quantize_linear_parity(ort, qtype, mapping, gran):
    """Random log-normal tensors, rows that are all positive / all negative / zero / constant (zero-points at
    both ends of the range), and constructed exact float32 ties x/scale = k + 0.5."""
    rng = np.random.default_rng(zlib.crc32(repr((qtype, mapping, gran)).encode()))
    total = 0
    for i in range(4):
        shape = GRANS[gran][1](rng)
        x = lognormal_channels(rng, shape, 0, loc=float(rng.choice([0.0, 0.0, 1.5, -2.0])))
        total += assert_qdq_parity(ort, x, qtype, mapping, gran, f"{qtype} {mapping} {gran} #{i} {shape}", rng)
        if shape[0] >= 4:
            total += assert_qdq_parity(ort, _edge_rows(x, rng), qtype, mapping, gran, f"edge rows #{i} {shape}")
    print(f"{qtype} {mapping} {gran}: {total} elements in all, 0 mismatches")


@pytest.mark.parametrize("qtype", ["int8", "uint8", "int4", "uint4"])
def test_quantize_linear_large_tensor_parity(ort, qtype):
    """A 256 x 1024 tensor, per-tensor and per-axis: long enough for ORT's vectorized and threaded paths."""
    rng = np.random.default_rng(5)
    x = lognormal_channels(rng, (256, 1024), 0)
    for mapping in ("affine", "symmetric"):
        for gran in ("tensor", "axis0"):
            assert_qdq_parity(ort, x, qtype, mapping, gran, f"{qtype} {mapping} {gran} 256x1024", rng)


@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("gran", ["tensor", "axis0"])
def test_quantize_linear_saturation_parity(ort, qtype, gran):
    """Scale and zero-point calibrated on x (a custom range), applied to 3 x wider data with ±1e30 and ±3e38
    outliers: every code beyond the range saturates exactly as QuantizeLinear does (to the full type: the
    symmetric int8/int16 ranges [-127, 127] still reach -128 / -32768)."""
    rng = np.random.default_rng(zlib.crc32(repr((qtype, gran)).encode()))
    x = lognormal_channels(rng, (8, 50), 0)
    for mapping in ("affine", "symmetric"):
        if gran == "tensor":
            rng_ = CustomRange(float(x.min()), float(x.max()))
        else:
            rng_ = CustomRange(tuple(x.min(axis=1).tolist()), tuple(x.max(axis=1).tolist()))
        wide = x * np.float32(3)
        wide[:, :4] = np.float32([1e30, -1e30, 3e38, -3e38])
        fmt = onnx_dtype_format(qtype, mapping == "symmetric")
        r = analyze(wide, QuantSpec(fmt=fmt, mapping=mapping, granularity=GRANS[gran][0], convention="onnx",
                                    range=rng_))
        assert r.q.min() == fmt.storage_qmin and r.q.max() == fmt.storage_qmax
        assert_qdq_parity(ort, wide, qtype, mapping, gran, f"{qtype} {mapping} {gran} saturating", range_=rng_)


SCALES = np.float32([2.0**-126, 1e-38, 3e-45, 1e-30, 0.013, 1.0, 7.5, 1e10, 1e30, 3e38])


@pytest.mark.parametrize("qtype", QTYPES)
def test_quantize_linear_given_parameters(ort, qtype):
    """The element arithmetic alone (quantcore.quantize with the onnx convention) for given scales from the
    smallest normal and subnormal float32 to 3e38, with the zero-point at qmin, at qmax and in the middle:
    one row per (scale, zero-point), run through QuantizeLinear per-axis. Values: exact ties k + 0.5 (in
    float32 division), random multiples of the scale, ±0, ±1e-45, ±1e30, ±3.4e38."""
    fmt = onnx_dtype_format(qtype)
    conv = get_convention("onnx")
    qmin, qmax = conv.code_range(fmt)
    rng = np.random.default_rng(zlib.crc32(qtype.encode()))
    zps = [qmin, qmax, (qmin + qmax) // 2]
    scale = np.repeat(SCALES, len(zps))
    zp = np.tile(np.float64(zps), len(SCALES))
    m = 64
    k = rng.integers(-(qmax - qmin), qmax - qmin, (scale.size, m)).astype(np.float64)
    x = ((k + 0.5) * scale[:, None].astype(np.float64))
    x[:, m // 2:] = (k[:, m // 2:] + rng.random((scale.size, m - m // 2))) * scale[:, None]
    with np.errstate(over="ignore"):
        x = x.astype(np.float32)
    x[:, :8] = np.float32([0.0, -0.0, 1e-45, -1e-45, 1e30, -1e30, 3.4e38, -3.4e38])
    x = np.where(np.isfinite(x), x, np.float32(3.4e38)).astype(np.float32)
    raw, q = quantize_blocks(x, scale, zp, qmin, qmax, conv, "half-even")
    with np.errstate(over="ignore"):
        xhat = dequantize_blocks(q, scale, zp, conv)
    codes, y = ort_qdq(ort, x, scale, zp.astype(np.int64), qtype, axis=0)
    count_mismatches(f"{qtype} given parameters", q.astype(np.int64), xhat, codes, y)


# --- ORT's quantization tool: scale and zero-point ---------------------------------------------------------
def _ranges(rng: np.random.Generator) -> np.ndarray:
    """(rmin, rmax) pairs in float32: random spans of every magnitude plus degenerate and edge ranges."""
    mag = 10.0 ** rng.uniform(-40, 37, 300)
    lo = -mag * rng.random(300) * rng.choice([0, 1, 1, 1], 300)
    hi = mag * rng.random(300) * rng.choice([0, 1, 1, 1], 300)
    edge = [(0, 0), (0, 1e-45), (-1e-45, 0), (-1e-40, 1e-40), (-1.1e-38, 1.1e-38), (-3e-36, 2e-36), (5, 7),
            (-7, -5), (-1, 1), (-1, 0.0), (0, 1e38), (-1e38, 0), (-1.7e38, 1.7e38), (-255, 0), (0, 127.5),
            (-0.5, 127), (-2.0**-120, 2.0**-121)]
    # Wider ranges (up to ±3.4e38) get the same parameters, but their grid ends dequantize beyond float32
    # (DequantizeLinear gives ±inf there): analyze refuses them (test_extremes).
    pairs = np.concatenate([np.stack([lo, hi], 1), np.array(edge, np.float64)])
    return np.sort(pairs, axis=1).astype(np.float32)


TOOL_COMBOS = [(q, sym, rr) for q in QTYPES for sym in (False, True) for rr in (False, True)]


@pytest.mark.parametrize("qtype,symmetric,reduce_range", TOOL_COMBOS)
def test_tool_qparams_match_compute_scale_zp(ort, qtype, symmetric, reduce_range):
    """Per-channel analyze with the onnx convention == quant_utils.compute_scale_zp(rmin, rmax, qmin, qmax,
    symmetric) on each channel's float32 min/max, with qmin/qmax from get_qmin_qmax_for_qType(qtype,
    reduce_range, symmetric): scale (float32 bits) and zero-point. Includes ranges whose float64 scale is
    below float32's smallest normal (ORT: scale 1, zero-point 0), one-sided and zero ranges, and ranges up to
    ±3.4e38."""
    from onnxruntime.quantization import quant_utils as qu
    onnx = ort[1]
    qt = _tensor_type(onnx, qtype)
    qmin, qmax = qu.get_qmin_qmax_for_qType(qt, reduce_range=reduce_range, symmetric=symmetric)
    fmt = onnx_dtype_format(qtype, symmetric, reduce_range)
    assert (fmt.qmin, fmt.qmax) == (int(qmin), int(qmax))
    pairs = _ranges(np.random.default_rng(zlib.crc32(repr((qtype, symmetric, reduce_range)).encode())))
    want_s = np.empty(len(pairs), np.float32)
    want_z = np.empty(len(pairs), np.int64)
    for i, (lo, hi) in enumerate(pairs):
        z, s = qu.compute_scale_zp(np.float32(lo), np.float32(hi), qmin, qmax, symmetric)
        want_s[i], want_z[i] = np.float32(s), int(z)
    r = analyze(pairs, QuantSpec(fmt=fmt, mapping="symmetric" if symmetric else "affine", granularity=PerChannel(0),
                                 convention="onnx"))
    bad = np.flatnonzero((r.scale.view(np.uint32) != want_s.view(np.uint32)) | (r.zero_point != want_z))
    print(f"compute_scale_zp {qtype} sym={symmetric} rr={reduce_range}: {len(pairs)} ranges, {bad.size} mismatches")
    assert bad.size == 0, (f"range {pairs[bad[0]]}: ours scale={r.scale[bad[0]]!r} zp={r.zero_point[bad[0]]}, "
                           f"ORT scale={want_s[bad[0]]!r} zp={want_z[bad[0]]}")


@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("axis,block", [(0, 16), (0, 32), (1, 32), (1, 24), (0, 128)])
def test_tool_qparams_match_compute_scale_zp_blocked(ort, qtype, symmetric, axis, block):
    """PerGroup(block, axis) analyze with the onnx convention == quant_utils.compute_scale_zp_blocked(weight,
    qtype, axis, block, symmetric) on 2-D weights with a ragged last block, all-zero, constant and tiny
    blocks: scale bits and zero-point."""
    from onnxruntime.quantization import quant_utils as qu
    rng = np.random.default_rng(zlib.crc32(repr((qtype, symmetric, axis, block)).encode()))
    shape = (block * 3 + 5, 7) if axis == 0 else (7, block * 3 + 5)
    w = lognormal_channels(rng, shape, 1 - axis)
    w = np.moveaxis(w, axis, 0)
    w[:block, 0] = 0.0                          # an all-zero block: scale 1 (zero-point 0 when affine)
    w[block:2 * block, 1] = 0.7                 # constant
    w[:block, 2] *= np.float32(1e-40)           # subnormal range: degenerate
    w[:block, 3] *= np.float32(1e-36)
    w[:block, 4] = np.abs(w[:block, 4])         # one-sided
    w = np.ascontiguousarray(np.moveaxis(w, 0, axis))
    z, s = qu.compute_scale_zp_blocked(w, _tensor_type(ort[1], qtype), axis, block, symmetric)
    gran = PerGroup(block, axis)
    r = analyze(w, QuantSpec(fmt=onnx_dtype_format(qtype, symmetric), mapping="symmetric" if symmetric else "affine",
                             granularity=gran, convention="onnx"))
    ours_s, ours_z = onnx_layout(r.scale, w.shape, gran), onnx_layout(r.zero_point, w.shape, gran)
    bad = np.argwhere((ours_s.view(np.uint32) != np.asarray(s, np.float32).view(np.uint32))
                      | (ours_z != np.asarray(z).astype(np.int64)))
    print(f"compute_scale_zp_blocked {qtype} sym={symmetric} axis={axis} block={block}: {s.size} blocks, "
          f"{len(bad)} mismatches")
    assert bad.size == 0, f"block {tuple(bad[0])}: ours {ours_s[tuple(bad[0])]!r}/{ours_z[tuple(bad[0])]}, ORT {s[tuple(bad[0])]!r}/{z[tuple(bad[0])]}"


@pytest.mark.parametrize("act,act_sym,wgt,wgt_sym", [("uint8", False, "int8", True), ("int8", True, "int8", True),
                                                    ("uint8", False, "uint8", False), ("int8", False, "int8", False)])
def test_quantize_static_end_to_end(ort, tmp_path, act, act_sym, wgt, wgt_sym):
    """ORT's quantization tool itself (quantize_static, QDQ, MinMax calibration over five batches, per-channel
    weights): the activation X's scale/zero-point equal analyze(all calibration data, per-tensor, onnx) and
    the MatMul weight's per-column scales, zero-points and int8/uint8 codes equal analyze(W, PerChannel(1)).
    The QDQ quantizer makes every per-channel weight symmetric whatever WeightSymmetric says (qdq_quantizer:
    "always quantize per-channel initializers as symmetric"), so the weight side is compared as symmetric."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    onnx = ort[1]
    h = onnx.helper
    rng = np.random.default_rng(zlib.crc32(repr((act, act_sym, wgt, wgt_sym)).encode()))
    K, N = 48, 10
    w = lognormal_channels(rng, (K, N), 1, loc=0.3)
    graph = h.make_graph([h.make_node("MatMul", ["X", "W"], ["Y"])], "mm",
                         [h.make_tensor_value_info("X", onnx.TensorProto.FLOAT, [None, K])],
                         [h.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, [None, N])],
                         initializer=[onnx.numpy_helper.from_array(w, "W")])
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 21)], ir_version=10), tmp_path / "f.onnx")
    batches = [(rng.standard_normal((4, K)) * 3 + 0.5).astype(np.float32) for _ in range(5)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(batches)

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {"X": b}

    qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=qtype[act], weight_type=qtype[wgt],
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": act_sym, "WeightSymmetric": wgt_sym})
    init = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "q.onnx")).graph.initializer}
    ra = analyze(np.concatenate(batches), QuantSpec(fmt=onnx_dtype_format(act, act_sym), convention="onnx",
                                                   mapping="symmetric" if act_sym else "affine"))
    assert ra.scale.view(np.uint32)[0] == init["X_scale"].view(np.uint32)
    assert int(ra.zero_point[0]) == int(init["X_zero_point"])
    rw = analyze(w, QuantSpec(fmt=onnx_dtype_format(wgt, True), mapping="symmetric", granularity=PerChannel(1),
                              convention="onnx"))
    np.testing.assert_array_equal(rw.scale.view(np.uint32), init["W_scale"].view(np.uint32))
    np.testing.assert_array_equal(rw.zero_point.astype(np.int64), init["W_zero_point"].astype(np.int64))
    count_mismatches(f"quantize_static {wgt} weight", rw.q, rw.q, init["W_quantized"].astype(np.int64), rw.q)


# --- MatMulNBits weights (MLAS blockwise quantization) -------------------------------------------------------
MNB_BLOCKS = (16, 32, 64, 128, 256)
MNB_COMBOS = [(b, sym, bs) for b in (2, 4, 8) for sym in (True, False) for bs in MNB_BLOCKS]


def ort_matmulnbits_quantize(W: np.ndarray, bits: int, block: int, symmetric: bool):
    """(B, scales, zero_points) exactly as matmul_nbits_quantizer.DefaultWeightOnlyQuantizer.qbits_block_quant
    (QOperator format) makes them: W padded with zero rows to whole blocks, then the pybind quantizer."""
    from onnxruntime.capi import _pybind_state as ps
    K, N = W.shape
    per_byte = 8 // bits
    kb = -(-K // block)
    padded = np.pad(W, ((0, kb * block - K), (0, 0)))
    B = np.zeros((N, kb, block // per_byte), np.uint8)
    zp = np.zeros((N, -(-kb // per_byte)), np.uint8)
    scales = np.zeros((N, kb), np.float32)
    fn = {2: ps.quantize_matmul_2bits, 4: ps.quantize_matmul_4bits, 8: ps.quantize_matmul_8bits}[bits]
    fn(B, np.ascontiguousarray(padded), scales, zp, block, N, K, symmetric)
    return B, scales, zp


def ort_matmulnbits(ort, A: np.ndarray, B, scales, zero_points, K: int, N: int, bits: int, block: int) -> np.ndarray:
    """Y = A @ W_hat from a com.microsoft MatMulNBits node (float32, accuracy_level unset)."""
    _, onnx = ort
    h = onnx.helper
    inits = [onnx.numpy_helper.from_array(B, "B"), onnx.numpy_helper.from_array(scales.reshape(-1), "scales")]
    inputs = ["A", "B", "scales"]
    if zero_points is not None:
        inits.append(onnx.numpy_helper.from_array(zero_points.reshape(-1), "zero_points"))
        inputs.append("zero_points")
    node = h.make_node("MatMulNBits", inputs, ["Y"], domain="com.microsoft", K=K, N=N, bits=bits, block_size=block)
    graph = h.make_graph([node], "mnb", [h.make_tensor_value_info("A", onnx.TensorProto.FLOAT, list(A.shape))],
                         [h.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, [A.shape[0], N])], initializer=inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 21), h.make_opsetid("com.microsoft", 1)],
                         ir_version=10)
    return _session(ort, model).run(None, {"A": np.ascontiguousarray(A, np.float32)})[0]


def mlas_ties(W: np.ndarray, r, rng: np.random.Generator) -> np.ndarray:
    """Replace the non-extreme elements of every (block, column) by float32 x with
    f32(f32(x * f32(1 / scale)) + zero_point) == k + 0.5 exactly: roundf's half-away-from-zero cases."""
    gran = r.spec.granularity
    s = per_element(onnx_layout(r.scale, W.shape, gran), W.shape, 0, gran.size).astype(np.float32)
    z = per_element(onnx_layout(r.zero_point, W.shape, gran), W.shape, 0, gran.size).astype(np.float32)
    lo = per_element(onnx_layout(r.lo, W.shape, gran), W.shape, 0, gran.size)
    hi = per_element(onnx_layout(r.hi, W.shape, gran), W.shape, 0, gran.size)
    with np.errstate(divide="ignore"):
        inv = np.where(s != 0, np.float32(1) / s, np.float32(0)).astype(np.float32)
    k = rng.integers(0, r.qmax, W.shape).astype(np.float64)
    v = ((k + 0.5 - z) * s.astype(np.float64)).astype(np.float32)
    best = v
    for cand in (np.nextafter(v, np.float32(np.inf)), np.nextafter(v, np.float32(-np.inf)), v):
        best = np.where((cand * inv).astype(np.float32) + z == (k + 0.5).astype(np.float32), cand, best)
    best = np.clip(best, np.minimum(lo, hi).astype(np.float32), np.maximum(lo, hi).astype(np.float32))
    keep = (W == lo) | (W == hi) | (s == 0)
    return np.where(keep, W, best).astype(np.float32)


def unpack_low_bits_first(packed: np.ndarray, bits: int) -> np.ndarray:
    """(N, k_blocks, bytes) -> (N, k_blocks * codes per block): the inverse of the MatMulNBits packing."""
    shifts = np.arange(8 // bits, dtype=np.uint8) * bits
    codes = (packed[..., None] >> shifts) & np.uint8((1 << bits) - 1)
    return codes.reshape(packed.shape[0], -1)


def assert_same_packed_codes(ours: np.ndarray, theirs: np.ndarray, bits: int, K: int, what: str) -> None:
    """Every code of the K real rows is identical. Past K, quantcore writes 0; ORT's quantizer leaves whole
    bytes past K at 0 but, in the byte holding the last real code, keeps the previous pack group's codes in
    the unused slots (MLAS BlockwiseQuantizer reuses its ``vi[]`` buffer). MatMulNBits never reads them."""
    assert ours.shape == theirs.shape, what
    a, b = unpack_low_bits_first(ours, bits), unpack_low_bits_first(theirs, bits)
    np.testing.assert_array_equal(a[:, :K], b[:, :K], err_msg=what)
    assert not a[:, K:].any(), what
    first_unused_byte = -(-K * bits // 8)
    assert not theirs.reshape(theirs.shape[0], -1)[:, first_unused_byte:].any(), what


def _mnb_weight(rng: np.random.Generator, block: int) -> np.ndarray:
    """(K, N) float32 weights, K = 3 blocks + a ragged tail, with special blocks: all zero, constant, tiny,
    one containing both +a and -a as its largest magnitudes (MLAS picks -a), one all positive."""
    K, N = 3 * block + 5, 9
    W = lognormal_channels(rng, (K, N), 1, loc=float(rng.choice([0.0, 0.4])))
    W[:block, 0] = 0.0
    W[:block, 1] = np.float32(-0.37)
    W[:block, 2] *= np.float32(1e-30)
    W[:block, 3] = np.clip(W[:block, 3], -1, 1)
    W[:2, 3] = np.float32([1.0, -1.0])
    W[block:2 * block, 4] = np.abs(W[block:2 * block, 4])
    return W


@pytest.mark.parametrize("bits,symmetric,block", MNB_COMBOS)
def test_matmulnbits_weights_match_ort_quantizer(ort, bits, symmetric, block):
    """analyze(W, unsigned bits, PerGroup(block, 0), convention matmulnbits) packed by
    quantcore.packing.matmulnbits_weights == ORT's quantize_matmul_{bits}bits: B bytes, scale bits and packed
    zero-points; on random weights, special blocks and constructed roundf ties. Then a MatMulNBits node with
    A = identity returns exactly our dequantized weights (as values: a sum with +0 terms turns -0 into +0)."""
    from quantcore.packing import matmulnbits_weights
    rng = np.random.default_rng(zlib.crc32(repr((bits, symmetric, block)).encode()))
    spec = QuantSpec(fmt=IntFormat(bits, signed=False), mapping="symmetric" if symmetric else "affine",
                     granularity=PerGroup(block, 0), convention="matmulnbits")
    W = _mnb_weight(rng, block)
    for what, w in (("random", W), ("ties", mlas_ties(W, analyze(W, spec), rng))):
        r = analyze(w, spec)
        ours = matmulnbits_weights(r)
        B, scales, zp = ort_matmulnbits_quantize(w, bits, block, symmetric)
        case = f"MatMulNBits {bits}-bit {'sym' if symmetric else 'asym'} g{block} {what}"
        np.testing.assert_array_equal(ours.scales.view(np.uint32), scales.view(np.uint32), err_msg=case)
        assert_same_packed_codes(ours.B, B, bits, ours.K, case)
        if symmetric:
            assert ours.zero_points is None
        else:
            np.testing.assert_array_equal(ours.zero_points, zp, err_msg=case)
        Y = ort_matmulnbits(ort, np.eye(w.shape[0], dtype=np.float32), B, scales, None if symmetric else zp,
                            ours.K, ours.N, bits, block)
        bad = np.argwhere(Y != r.dequantized)
        print(f"{case}: {w.size} codes, {scales.size} scales, {w.size} dequantized values compared, "
              f"{len(bad)} mismatches")
        assert bad.size == 0, f"{case}: W_hat differs at {tuple(bad[0])}: ours {r.dequantized[tuple(bad[0])]!r} ORT {Y[tuple(bad[0])]!r}"


@pytest.mark.parametrize("bits,symmetric", [(4, True), (4, False), (8, True), (2, False)])
def test_matmulnbits_random_activations(ort, bits, symmetric):
    """A MatMulNBits node on a random A (7 x K) agrees with A @ W_hat computed in float64 from quantcore's
    dequantized weights to float32 accumulation accuracy (ORT sums in its own order)."""
    from quantcore.packing import matmulnbits_weights
    rng = np.random.default_rng(3 * bits + symmetric)
    W = _mnb_weight(rng, 32)
    r = analyze(W, QuantSpec(fmt=IntFormat(bits, signed=False), mapping="symmetric" if symmetric else "affine",
                             granularity=PerGroup(32, 0), convention="matmulnbits"))
    p = matmulnbits_weights(r)
    A = rng.standard_normal((7, W.shape[0])).astype(np.float32)
    Y = ort_matmulnbits(ort, A, p.B, p.scales, p.zero_points, p.K, p.N, bits, 32)
    ref = A.astype(np.float64) @ r.dequantized.astype(np.float64)
    bound = np.abs(A).astype(np.float64) @ np.abs(r.dequantized).astype(np.float64) * W.shape[0] * 2.0**-23
    assert (np.abs(Y - ref) <= bound).all()


@pytest.mark.parametrize("name", ["onnx_matmulnbits4_sym_g32", "onnx_matmulnbits4_asym_g128", "onnx_matmulnbits8_sym_g64",
                                  "onnx_matmulnbits2_asym_g16"])
def test_matmulnbits_presets_on_a_torch_layout_weight(ort, name):
    """The presets quantize a PyTorch-layout (out_features, in_features) = (N, K) weight in blocks along its
    last axis: exactly ORT's quantizer on the ONNX MatMul B = W.T."""
    from quantcore import preset
    from quantcore.packing import matmulnbits_weights
    spec = preset(name)
    bits, block, symmetric = spec.fmt.bits, spec.granularity.size, spec.mapping == "symmetric"
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    W = np.ascontiguousarray(_mnb_weight(rng, block).T)          # (N, K)
    ours = matmulnbits_weights(analyze(W, spec))
    B, scales, zp = ort_matmulnbits_quantize(np.ascontiguousarray(W.T), bits, block, symmetric)
    assert_same_packed_codes(ours.B, B, bits, ours.K, name)
    np.testing.assert_array_equal(ours.scales.view(np.uint32), scales.view(np.uint32))
    if not symmetric:
        np.testing.assert_array_equal(ours.zero_points, zp)
    assert spec.label == f"MatMulNBits {bits}-bit {'sym' if symmetric else 'asym'} g{block}"


def test_matmulnbits_block_sizes_ort_accepts():
    """ORT's quantizer (MlasQuantizeBlockwise) takes block sizes 16..256 (powers of two) only; quantcore
    computes any PerGroup size with the same arithmetic, e.g. 48, with no oracle to compare against."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is a test oracle; install the 'test' extra")
    W = np.random.default_rng(0).standard_normal((100, 4)).astype(np.float32)
    for block in (8, 48, 512):
        with pytest.raises(Exception):
            ort_matmulnbits_quantize(W, 4, block, True)
    r = analyze(W, QuantSpec(fmt=IntFormat(4, signed=False), mapping="symmetric", granularity=PerGroup(48, 0),
                             convention="matmulnbits"))
    blocks = np.pad(W.T, ((0, 0), (0, 44)), mode="edge").reshape(4, 3, 48)  # edge: the ragged block's own values
    mx, mn = blocks.max(axis=2), blocks.min(axis=2)
    m = np.where(np.abs(mx) > np.abs(mn), mx, mn)
    np.testing.assert_array_equal(r.scale, (m / np.float32(-8)).astype(np.float32).reshape(-1))



# --- float8: compute_scale_zp_float8 and QuantizeLinear to FLOAT8E4M3FN ------------------------------------
@pytest.mark.parametrize("per_channel", [False, True])
def test_fp8_onnx_std_scale_and_quantize_linear(ort, per_channel):
    """Presets fp8_e4m3_onnx / fp8_e4m3_channel_onnx == ORT's tool for float8 weights
    (compute_data_quant_params -> compute_scale_zp_float8: scale = std(x) / std(E4M3FN values), per tensor
    or per channel of the flattened data), scale bits; and QuantizeLinear to FLOAT8E4M3FN (saturate=1) with
    that scale, read through an exact Cast to float32, == our element values; DequantizeLinear == x_hat.
    Data: log-normal rows with ±1e4 outliers that saturate at ±448 * scale."""
    from onnxruntime.quantization import quant_utils as qu
    from quantcore import preset
    onnx = ort[1]
    rng = np.random.default_rng(11 + per_channel)
    x = lognormal_channels(rng, (12, 200), 0)
    x[:, :2] = np.float32([1e4, -1e4])
    name = "fp8_e4m3_channel_onnx" if per_channel else "fp8_e4m3_onnx"
    r = analyze(x, preset(name))
    rows = [x[i].ravel() for i in range(x.shape[0])] if per_channel else [x.flatten()]
    want = np.array([qu.compute_data_quant_params(d, onnx.TensorProto.FLOAT8E4M3FN, True)[1] for d in rows],
                    np.float32)
    np.testing.assert_array_equal(np.asarray(r.scale, np.float32).view(np.uint32), want.view(np.uint32))
    zp = np.zeros(want.shape[0] if per_channel else (), np.float32)
    values, y = ort_qdq_float8(ort, x, want if per_channel else want[0], zp, axis=0 if per_channel else None)
    from quantcore import floatfmt as ff
    ours = ff.decode(r.q, ff.E4M3FN)
    assert np.abs(ours).max() == 448.0  # the outliers saturate
    count_mismatches(f"{name} QuantizeLinear float8", ours.view(np.uint32), r.dequantized, values.view(np.uint32), y)


def ort_qdq_float8(ort, x: np.ndarray, scale, zero_point, axis: int | None = None):
    """(element values as float32, dequantized float32) of QuantizeLinear/DequantizeLinear to FLOAT8E4M3FN."""
    _, onnx = ort
    h = onnx.helper
    attrs = {} if axis is None else {"axis": axis}
    zp = np.asarray(zero_point, np.float32)
    inits = [onnx.numpy_helper.from_array(np.asarray(scale, np.float32), "scale"),
             h.make_tensor("zero_point", onnx.TensorProto.FLOAT8E4M3FN, list(zp.shape), zp.ravel().tolist())]
    nodes = [h.make_node("QuantizeLinear", ["x", "scale", "zero_point"], ["q"], **attrs),
             h.make_node("DequantizeLinear", ["q", "scale", "zero_point"], ["y"], **attrs),
             h.make_node("Cast", ["q"], ["values"], to=onnx.TensorProto.FLOAT)]
    graph = h.make_graph(nodes, "qdq8", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(x.shape))],
                         [h.make_tensor_value_info("values", onnx.TensorProto.FLOAT, list(x.shape)),
                          h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, list(x.shape))], initializer=inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 21)], ir_version=10)
    return tuple(_session(ort, model).run(None, {"x": np.ascontiguousarray(x, np.float32)}))
