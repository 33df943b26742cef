"""Bounded memory (tracemalloc peak), the progress display, and fsspec URLs."""
from __future__ import annotations

import io
import json
import struct
import tracemalloc

import numpy as np
import pytest

from quantcore.io.checkpoint import open_checkpoint
from quantcore.scan import scan
from quantcore.scancli import Progress
from quantcore.schemes import parse_schemes

from .conftest import safetensors_bytes


def _write_big(path, rows, cols):
    """One float32 tensor written row block by row block (the test process never holds it whole)."""
    n = rows * cols * 4
    h = json.dumps({"w": {"dtype": "F32", "shape": [rows, cols], "data_offsets": [0, n]}}).encode()
    h += b" " * (-len(h) % 8)
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for _ in range(0, rows, 256):
            f.write((rng.standard_normal((256, cols)) * 0.02).astype("<f4").tobytes())


@pytest.mark.slow
def test_peak_memory_is_bounded_by_the_chunk_not_the_tensor(tmp_path):
    """tracemalloc's peak (every numpy buffer and Python object allocated during the scan; deterministic,
    unlike RSS, which moves with the allocator's and the kernel's state) stays under 2 x the chunk plus a
    constant (segment temporaries, ~1 Mi elements), while one chunk holding the tensor costs the tensor."""
    big = tmp_path / "big.safetensors"
    _write_big(big, 8192, 4096)                     # 128 MiB of float32
    schemes = parse_schemes("q8_0,q4_0,int4-g128,nvfp4")
    ckpt = open_checkpoint([big])

    def peak_mib(chunk_mb):
        tracemalloc.start()
        try:
            scan(ckpt, schemes, chunk_mb=chunk_mb)
            return tracemalloc.get_traced_memory()[1] / 2**20
        finally:
            tracemalloc.stop()

    chunked, whole = peak_mib(8), peak_mib(256)
    print(f"traced peak: {chunked:.1f} MiB with 8 MiB chunks, {whole:.1f} MiB in one chunk")
    assert chunked <= 2 * 8 + 16
    assert whole >= 128                    # the same probe sees a whole-tensor read (the bound can fail)


def test_progress_bar_on_a_terminal_and_lines_otherwise():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    tty = Tty()
    p = Progress(tty)
    p(50, 100)
    p(100, 100)
    out = tty.getvalue()
    assert out.startswith("\r[") and "ETA" in out and out.endswith("\n") and "100.0 %" in out
    plain = io.StringIO()
    p = Progress(plain)
    p(1, 100)
    p(2, 100)                              # within PROGRESS_EVERY seconds: no second line
    p(100, 100)
    lines = plain.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("scan: 1.0 %") and "\r" not in plain.getvalue()
    quiet = Tty()
    Progress(quiet, enabled=False)(5, 10)
    assert quiet.getvalue() == ""


def test_fsspec_url_reads_the_same_rows():
    fsspec = pytest.importorskip("fsspec", reason="fsspec is optional (URLs only)")
    rng = np.random.default_rng(0)
    t = {"a.weight": rng.standard_normal((64, 128)).astype(np.float32),
         "b.weight": rng.standard_normal((32, 256)).astype(np.float32)}
    for i, (k, v) in enumerate(t.items()):  # two shards and an index, all behind a URL
        with fsspec.open(f"memory://qc-test/m-{i}.safetensors", "wb") as f:
            f.write(safetensors_bytes({k: v}))
    with fsspec.open("memory://qc-test/model.safetensors.index.json", "w") as f:
        json.dump({"weight_map": {"a.weight": "m-0.safetensors", "b.weight": "m-1.safetensors"}}, f)
    try:
        ckpt = open_checkpoint(["memory://qc-test/model.safetensors.index.json"])
        remote, _ = scan(ckpt, parse_schemes("q4_0,nvfp4"))
    finally:
        fsspec.filesystem("memory").rm("/qc-test", recursive=True)
    assert [f.name for f in ckpt.files] == ["m-0.safetensors", "m-1.safetensors"]
    assert len(remote) == 4
    local_rows = {(r.tensor, r.scheme): r.sse for r in remote}
    from quantcore.measure import measure
    for (name, scheme), sse in local_rows.items():
        assert measure(t[name], parse_schemes(scheme)[0]).sse == sse
