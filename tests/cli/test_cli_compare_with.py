"""`analyze --compare --with SCHEMES` (issue 12, item 10): GGUF, float and compact integer schemes named as in
quantcore.schemes join the per-tensor / per-channel / per-group comparison, and no text output prints ``nan``
where a scheme has no single scale (block and float schemes, per-group integers)."""
from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest

import quantcore as qc
from quantcore.cli import main
from quantcore.schemes import parse_scheme
from quantcore.presets import preset_names

NAN = re.compile(r"(?<![\w.])[+-]?nan(?![\w])", re.IGNORECASE)


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def weights(tmp_path):
    x = np.random.default_rng(3).standard_normal((8, 256)).astype(np.float32)
    x[1] *= 0.01
    np.save(tmp_path / "w.npy", x)
    return tmp_path / "w.npy", x


def test_with_adds_gguf_float_and_int_schemes_to_the_comparison(weights):
    path, x = weights
    code, out, err = run("analyze", path, "--compare", "--bits", "4", "--mapping", "symmetric", "--group-size", "32",
                         "--with", "q4_0,nvfp4,q4_k,int4-asym-g64")
    assert code == 0, err
    labels = [ln.split("  ")[0].strip() for ln in out.strip().splitlines()[1:-1]]
    assert labels == ["int4 symmetric per-tensor", "int4 symmetric per-channel", "int4 symmetric per-group 32",
                      "Q4_0", "nvfp4", "Q4_K", "int4-asym-g64"]
    assert not NAN.search(out), out


def test_with_rows_are_the_named_schemes_measured_on_the_tensor(weights):
    path, x = weights
    code, out, _ = run("analyze", path, "--with", "q4_0,nvfp4,q4_k,int8-tensor", "--json")
    assert code == 0
    summary = {r["label"]: r for r in json.loads(out)["summary"]}
    for name in ("q4_0", "nvfp4", "q4_k", "int8-tensor"):
        s = parse_scheme(name)
        spec = s.spec.with_(name=s.name) if s.kind == "int" else s.spec
        ref = qc.analyze(x, spec)
        assert summary[spec.label]["rmse"] == ref.metrics.rmse
        assert summary[spec.label]["total_bytes"] == ref.memory.total_bytes


def test_with_q4_0_row_matches_gguf_py(weights):
    """Oracle: gguf-py 0.19's own Q4_0 quantize + dequantize of the same float32 tensor."""
    gguf = pytest.importorskip("gguf", reason="gguf-py (test oracle) is not installed")
    from gguf.quants import dequantize, quantize
    path, x = weights
    code, out, _ = run("analyze", path, "--compare", "--with", "q4_0", "--json")
    assert code == 0
    row = next(r for r in json.loads(out)["summary"] if r["label"] == "Q4_0")
    qt = gguf.GGMLQuantizationType.Q4_0
    xhat = dequantize(quantize(x, qt), qt).reshape(x.shape).astype(np.float64)
    assert row["rmse"] == pytest.approx(float(np.sqrt(np.mean((xhat - x.astype(np.float64)) ** 2))), rel=1e-12)


def test_with_alone_implies_compare_and_skips_a_scheme_already_listed():
    code, out, err = run("analyze", "--example", "s0", "--preset", "q4_0", "--with", "q4_0,nf4")
    assert code == 0, err
    labels = [ln.split("  ")[0].strip() for ln in out.strip().splitlines()[1:-1]]
    assert labels.count("Q4_0") == 1 and "nf4" in labels and "int4 symmetric per-tensor" in labels


@pytest.mark.parametrize("value, needle", [
    ("q4_9", "unknown scheme 'q4_9'"),
    ("q4_0,q4_0", "scheme 'q4_0' is given twice"),
    ("f16", "f16 is plain float storage, not a quantization scheme"),
    ("", "--with needs at least one scheme name"),
])
def test_bad_with_values_exit_2_with_one_line(value, needle):
    code, out, err = run("analyze", "--example", "s0", "--with", value)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and needle in err, err


@pytest.mark.parametrize("flag, name", [("--preset", p) for p in preset_names()[:15]] +
                         [("--format", f) for f in preset_names("float")] + [("--granularity", "group")])
def test_single_scheme_report_prints_no_nan_scale(flag, name):
    code, out, err = run("analyze", "--example", "s0", flag, name, "--group-size", "2")
    assert code == 0, err
    assert not NAN.search(out), out
    table = out.splitlines()
    head = next(i for i, ln in enumerate(table) if ln.startswith("name "))
    cells = table[head + 1].split()
    if "–" in cells:
        assert any(ln.startswith("– ") for ln in table[head:]), out   # the note says what "–" means


def test_compare_table_shows_one_scale_or_the_block_count(weights):
    path, x = weights
    code, out, _ = run("analyze", path, "--compare", "--bits", "4", "--group-size", "32", "--with", "q4_k")
    assert code == 0
    rows = {ln.split("  ")[0].strip(): ln for ln in out.strip().splitlines()[1:-1]}
    per_tensor = qc.analyze(x, qc.QuantSpec(fmt=qc.IntFormat(4), granularity=qc.PerTensor()))
    assert f"{float(per_tensor.scale[0]):.6g}" in rows["int4 affine per-tensor"]
    assert "per channel (8)" in rows["int4 affine per-channel"]
    assert "per block (64)" in rows["int4 affine per-group 32"]            # 8 rows x 256 / 32
    assert "per sub-block (64)" in rows["Q4_K"]                             # 8 blocks of 256 x 8 sub-blocks
