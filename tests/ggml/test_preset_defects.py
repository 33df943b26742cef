"""Two defects of the GGUF presets in the analyser, each pinned by the references.

1. A block whose float32 ``d`` is subnormal (one element -3e-39 among zeros): ``1/d`` is inf, so
   ``x/d`` is inf or NaN. llama.cpp's C cast turns that into code 0 (gguf-py's numpy cast does the
   same) and the stored fp16 ``d`` is 0, so every dequantized value is 0. The analyser used to report
   NaN values and Q4_1/Q5_1 codes 15/31.
2. Values near the float32 limit (+-1e38): every GGUF type stores an fp16 scale, which overflows, so
   the format cannot hold the block. The analyser used to print numpy warnings and report NaN
   metrics with exit status 0; it must refuse with one line naming the block instead.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from quantcore import analyze, preset

LEGACY = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1")


def _subnormal_tensor() -> np.ndarray:
    x = np.zeros((2, 64), np.float32)
    x[0, 5] = -3e-39                     # block 0: d = 3e-39/127 (or /8, /15, ...) is a float32 subnormal
    x[1, 40] = 2.5e-39
    x[0, 32:] = np.linspace(-1, 1, 32)   # an ordinary block next to it
    return x


@pytest.mark.parametrize("name", LEGACY)
def test_subnormal_scale_gives_gguf_codes_and_zeros(gguf_quants, ggml_ref, name):
    x = _subnormal_tensor()
    qtype = getattr(gguf_quants.GGMLQuantizationType, name.upper())
    packed = gguf_quants.quants.quantize(x, qtype)
    want = gguf_quants.quants.dequantize(packed, qtype).reshape(x.shape).astype(np.float32)
    c_bytes = ggml_ref.quantize(name.upper(), x)
    np.testing.assert_array_equal(packed.reshape(c_bytes.shape), c_bytes)   # the two references agree
    r = analyze(x, preset(name))
    assert not np.isnan(r.dequantized).any()
    np.testing.assert_array_equal(r.dequantized.view(np.uint32), want.view(np.uint32))
    from quantcore.ggml import get_ggml_type
    codes = get_ggml_type(name).codes(c_bytes).reshape(x.shape)
    np.testing.assert_array_equal(r.q, codes)


@pytest.mark.parametrize("name", LEGACY + ("q4_k", "q6_k", "iq4_nl", "tq2_0", "mxfp4"))
def test_huge_values_are_refused_naming_the_block_without_warnings(tmp_path, name):
    x = np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32)
    x[2, 3] = 1e38
    x[2, 7] = -1e38
    np.save(tmp_path / "w.npy", x)
    p = subprocess.run([sys.executable, "-W", "default", "-m", "quantcore", "analyze", str(tmp_path / "w.npy"),
                        "--preset", name], capture_output=True, text=True)
    assert "Warning" not in p.stderr, p.stderr
    if p.returncode == 0:     # the type held the block (MXFP4's 2^127 scale; Q6_K's search zeroes it)
        assert p.stderr == "" and name in ("mxfp4", "q6_k"), p.stderr
        metrics = next(ln for ln in p.stdout.splitlines() if ln.startswith("MAE"))
        assert "nan" not in metrics.lower() and "inf" not in metrics.lower(), metrics
        return
    assert p.returncode == 2, p.stdout    # an fp16 scale cannot: refused
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "block" in lines[0] and "channel 2" in lines[0], p.stderr
