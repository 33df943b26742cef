"""Bad input: every rejection is a ValueError whose message says what is wrong and where.

Each case asserts on the message content (the offending value, index, channel, axis or row), not only
on the exception type.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from quantcore import (CustomRange, IntFormat, MSEOptimal, PerChannel, PerGroup, PerTensor, Percentile, QuantSpec,
                       analyze, manual, preset)

X = np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5


def _with(value, index):
    x = X.copy()
    x[index] = value
    return x


@pytest.mark.parametrize("gran", [PerTensor(), PerChannel(0), PerChannel(1), PerGroup(2, -1), PerGroup(2, 0)],
                         ids=lambda g: g.label + str(getattr(g, "axis", "")))
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_dense(gran, value):
    """NaN/inf in an array: the message gives the count and the index of the first one, in input coordinates."""
    x = _with(value, (1, 2))
    with pytest.raises(ValueError, match=re.escape("1 non-finite value(s) (NaN or inf), first at index (1, 2)")):
        analyze(x, QuantSpec(granularity=gran))


def test_non_finite_many_and_presets():
    x = np.zeros((2, 64), np.float32)
    x[1, 40:43] = np.nan
    with pytest.raises(ValueError, match=r"3 non-finite value\(s\).*\(1, 40\)"):
        analyze(x, preset("q4_0"))


def test_non_finite_ragged_names_channel_and_position():
    """Ragged rows (pasted text): the message names the channel and the position inside it."""
    rows = [np.array([1.0, 2.0]), np.array([3.0, 4.0, np.inf])]
    with pytest.raises(ValueError, match=r"1 non-finite.*channel 1 at value index 2"):
        analyze(rows, QuantSpec())


@pytest.mark.parametrize("x,msg", [
    (np.array([], np.float32), r"tensor is empty \(shape \(0,\)\)"),
    (np.zeros((3, 0), np.float32), r"tensor is empty \(shape \(3, 0\)\)"),
    ([], r"no channels given"),
])
def test_empty(x, msg):
    with pytest.raises(ValueError, match=msg):
        analyze(x, QuantSpec())


def test_zero_length_channel():
    """A ragged channel with no values is named by its index."""
    with pytest.raises(ValueError, match=r"channel 2 has no values"):
        analyze([np.array([1.0]), np.array([2.0, 3.0]), np.array([])], QuantSpec(granularity=PerChannel(0)))


@pytest.mark.parametrize("bits", [0, 1, 17, 64])
def test_bits_out_of_range(bits):
    with pytest.raises(ValueError, match=rf"bits must be between 2 and 16, got {bits}"):
        IntFormat(bits)


def test_bits_not_integer_and_bad_custom_range():
    with pytest.raises(ValueError, match=r"bits must be an integer, got 8\.0"):
        IntFormat(8.0)
    with pytest.raises(ValueError, match=r"custom range \[5, 3\] must satisfy -128 <= qmin < qmax <= 127 for 8-bit signed"):
        IntFormat(8, custom_qmin=5, custom_qmax=3)
    with pytest.raises(ValueError, match=r"custom range \[0, 300\] .* 0 <= qmin < qmax <= 255 for 8-bit unsigned"):
        IntFormat(8, False, custom_qmin=0, custom_qmax=300)


@pytest.mark.parametrize("size", [0, -1, -128])
def test_group_size_not_positive(size):
    with pytest.raises(ValueError, match=rf"group size must be a positive integer, got {size}"):
        PerGroup(size)


@pytest.mark.parametrize("gran,x,msg", [
    (PerChannel(2), X, r"channel axis 2 is out of range for a tensor with 2 dimension\(s\)"),
    (PerChannel(-3), X, r"channel axis -3 is out of range for a tensor with 2 dimension\(s\)"),
    (PerChannel(1), X[0], r"channel axis 1 is out of range for a tensor with 1 dimension\(s\)"),
    (PerGroup(2, 5), X, r"group axis 5 is out of range for a tensor with 2 dimension\(s\)"),
    (PerGroup(2, -4), X.reshape(2, 3, 2), r"group axis -4 is out of range for a tensor with 3 dimension\(s\)"),
    (PerGroup(2, 1), X[0], r"group axis 1 is out of range for a tensor with 1 dimension\(s\)"),
])
def test_axis_out_of_range(gran, x, msg):
    with pytest.raises(ValueError, match=msg):
        analyze(x, QuantSpec(granularity=gran))


def test_channel_axis_out_of_range_for_reporting():
    with pytest.raises(ValueError, match=r"channel axis 3 is out of range for a tensor with 2 dimension\(s\)"):
        analyze(X, QuantSpec(), channel_axis=3)


NAMES = ["filter_0", "filter_1", "filter_2"]


@pytest.mark.parametrize("scale,zp,sample,msg", [
    ([0.1, 0.2], [0, 0, 0], [1, 2, 3], r"3 names, 2 scales, 3 zero-points and 3 samples"),
    ([0.1, 0.2, 0.3], [0, 0, 0], [1, 2], r"3 names, 3 scales, 3 zero-points and 2 samples"),
    ([0.1, 0.0, 0.3], [0, 0, 0], [1, 2, 3], r"manual row 2 \(filter_1\): scale must be > 0, got 0"),
    ([0.1, 0.2, -0.3], [0, 0, 0], [1, 2, 3], r"manual row 3 \(filter_2\): scale must be > 0, got -0\.3"),
    ([0.1, 0.2, 0.3], [0, 300, 0], [1, 2, 3], r"manual row 2 \(filter_1\): zero-point 300 must be an integer in \[-128, 127\]"),
    ([0.1, 0.2, 0.3], [0, 0, 2.5], [1, 2, 3], r"manual row 3 \(filter_2\): zero-point 2\.5 must be an integer"),
    ([0.1, np.inf, 0.3], [0, 0, 0], [1, 2, 3], r"manual row 2 \(filter_1\): scale is not finite"),
    ([0.1, 0.2, 0.3], [0, 0, 0], [np.nan, 2, 3], r"manual row 1 \(filter_0\): sample is not finite"),
])
def test_inconsistent_manual_parameters(scale, zp, sample, msg):
    """Seed 001's manual mode: the message names the row (1-based, as a user counts lines) and the channel."""
    with pytest.raises(ValueError, match=msg):
        manual(NAMES, scale, zp, sample, IntFormat(8))


def test_manual_empty():
    with pytest.raises(ValueError, match="no rows given"):
        manual([], [], [], [], IntFormat(8))


def test_custom_range_errors_name_the_channel():
    with pytest.raises(ValueError, match=r"custom range for channel 1: min 1 is greater than max 0\.5"):
        CustomRange((0.0, 1.0), (1.0, 0.5))
    with pytest.raises(ValueError, match=r"custom range has 2 channel values but the tensor has 3 channels"):
        analyze(X, QuantSpec(granularity=PerChannel(0), range=CustomRange((0.0, 1.0), (1.0, 2.0))))
    with pytest.raises(ValueError, match=r"per-channel custom range needs a per-channel or per-group scheme"):
        analyze(X, QuantSpec(range=CustomRange((0, 1, 2), (1, 2, 3))))
    with pytest.raises(ValueError, match=r"custom range must be finite"):
        CustomRange(0.0, np.inf)


@pytest.mark.parametrize("kwargs,msg", [
    ({"mapping": "asym"}, r"unknown mapping 'asym'; expected one of symmetric, affine, affine_float"),
    ({"convention": "tflite"}, r"unknown convention 'tflite'; expected one of float64, torch, torch-fake, torchao, gguf, onnx, matmulnbits"),
    ({"rounding": "up"}, r"unknown rounding 'up'; expected one of half-even, half-away"),
    ({"scale_dtype": "int8"}, r"scale dtype must be fp32, fp16 or bf16, got 'int8'"),
    ({"zero_point_dtype": "int3"}, r"unknown metadata dtype 'int3'"),
])
def test_bad_spec_fields(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        QuantSpec(**kwargs)


def test_bad_range_methods_and_presets():
    with pytest.raises(ValueError, match=r"percentile must be in \(50, 100\], got 40"):
        Percentile(40)
    with pytest.raises(ValueError, match=r"MSE search steps must be between 1 and 1000, got 0"):
        MSEOptimal(0)
    with pytest.raises(ValueError, match=r"unknown preset 'q7_k'; expected one of q4_0, q4_1, q5_0, q5_1, q8_0, "
                                         r"q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, iq4_xs, tq1_0, tq2_0, mxfp4"):
        preset("q7_k")


def test_symmetric_without_positive_codes():
    fmt = IntFormat(4, True, custom_qmin=-8, custom_qmax=0)
    with pytest.raises(ValueError, match=r"format int4 \[-8,0\] leaves no positive codes for a symmetric mapping"):
        analyze(X, QuantSpec(fmt=fmt, mapping="symmetric"))


def test_scale_overflowing_fp16_storage_names_the_block():
    """A finite scale above fp16's 65504 would make every x_hat inf/NaN: refused, naming the block."""
    x = np.array([[1.0, -1.0], [1e8, -5e7]], np.float32)
    with pytest.raises(ValueError, match=r"scale 588235 of block 1 overflows fp16 \(largest finite 65504\)"):
        analyze(x, QuantSpec(granularity=PerChannel(0), scale_dtype="fp16"))


def test_non_numeric_tensor():
    with pytest.raises(ValueError, match=r"tensor dtype <U1 is not numeric"):
        analyze(np.array(["a", "b"]), QuantSpec())


def test_custom_range_must_include_zero():
    """As PyTorch's observers require: without code 0 the zero-point would lie outside [qmin, qmax]."""
    with pytest.raises(ValueError, match=r"custom range \[1, 2\] must include 0"):
        IntFormat(3, True, custom_qmin=1, custom_qmax=2)


def test_signed_amax_without_codes_below_the_zero_point():
    """signed_amax maps the block's extreme to qmin: a format whose qmin is the zero-point cannot."""
    fmt = IntFormat(4, True, custom_qmin=0, custom_qmax=7)
    with pytest.raises(ValueError, match=r"format int4 \[0,7\] leaves no codes below the zero-point 0 for the "
                                         r"signed_amax scale rule"):
        analyze(X, QuantSpec(fmt=fmt, mapping="symmetric", symmetric_scale="signed_amax"))


@pytest.mark.parametrize("convention", ["onnx", "matmulnbits"])
def test_float_zero_point_is_not_an_option_for_integer_zero_point_runtimes(convention):
    with pytest.raises(ValueError, match=rf"the {convention} convention has integer zero-points: use mapping affine "
                                         r"or symmetric, not affine_float"):
        QuantSpec(mapping="affine_float", convention=convention)


def test_dequantized_value_beyond_float32_names_the_channel():
    """torch symmetric on a channel reaching -3.4e38: code -128 x (amax / 127.5) is beyond float32, as
    torch's own dequantize (-inf) would be: refused, naming the channel and the code."""
    x = np.array([[1.0, -2.0], [3.4e38, -3.4e38]], np.float32)
    with pytest.raises(ValueError, match=r"channel 1: code -128 \(zero-point 0, scale 2\.667e\+36\) dequantizes to "
                                         r"-inf, beyond the float32 range"):
        analyze(x, QuantSpec(mapping="symmetric", granularity=PerChannel(0), convention="torch"))
