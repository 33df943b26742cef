"""Test oracle: llama.cpp's own C quantizers (ggml-quants.c), compiled once and called through ctypes.

Source: the ``llama-cpp-python`` sdist on PyPI, pinned exactly at 0.3.36 (it vendors llama.cpp). The
sdist is looked for in ``~/.cache/quantcalc/`` (or at ``$QUANTCALC_LLAMA_SDIST``) and downloaded
there with ``pip download llama-cpp-python==0.3.36 --no-deps --no-binary :all:`` when missing; its
sha256 is checked before anything is extracted. Only the files below are extracted, and
``ggml-quants.c`` is compiled with Debian's gcc together with four stub functions it links against
(``ggml_abort``, ``ggml_row_size``, ``ggml_type_size``, ``ggml_type_name``; only the row size is used).

Compiler flags (why each):
  -O2                     the optimisation level of a release build;
  -ffp-contract=off       no a*b+c fused into an FMA, which would round once instead of twice and
                          change last bits (x86-64 gcc contracts only with -march=...+fma, but say it);
  -fno-fast-math          IEEE semantics: no reassociation of the float sums the scale searches use;
  no -march               plain x86-64 SSE2: float ops round to float32, no F16C/AVX code paths;
  -DNDEBUG                asserts off, as in llama.cpp's release builds (nearest_int asserts |x|<2^22).
This is the arithmetic of ``llama-quantize`` on x86-64 (its SIMD code lives in ggml-cpu, not in the
quantizers used to write model files).

Nothing here is imported by quantcore. If gcc or the sdist is unavailable, :func:`load` raises
``OracleUnavailable`` with the reason and the tests skip with it.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

VERSION = "0.3.36"
SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
SDIST = f"llama_cpp_python-{VERSION}.tar.gz"
CACHE = Path(os.environ.get("QUANTCALC_CACHE", Path.home() / ".cache" / "quantcalc"))
FLAGS = ["-O2", "-ffp-contract=off", "-fno-fast-math", "-DNDEBUG", "-fPIC", "-shared", "-std=gnu11"]
_PREFIX = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/ggml/"
_MEMBERS = ["src/ggml-quants.c", "src/ggml-quants.h", "src/ggml-common.h", "src/ggml-impl.h",
            "src/ggml-cpu/ggml-cpu-impl.h", "include/ggml.h", "include/gguf.h", "include/ggml-cpu.h",
            "include/ggml-backend.h", "include/ggml-alloc.h"]

# name -> (ggml type id, block size, type size, C name), from ggml.c's type_traits in the same sdist
TYPES = {
    "Q4_0": (2, 32, 18, "q4_0"), "Q4_1": (3, 32, 20, "q4_1"), "Q5_0": (6, 32, 22, "q5_0"),
    "Q5_1": (7, 32, 24, "q5_1"), "Q8_0": (8, 32, 34, "q8_0"), "Q2_K": (10, 256, 84, "q2_K"),
    "Q3_K": (11, 256, 110, "q3_K"), "Q4_K": (12, 256, 144, "q4_K"), "Q5_K": (13, 256, 176, "q5_K"),
    "Q6_K": (14, 256, 210, "q6_K"), "IQ4_NL": (20, 32, 18, "iq4_nl"), "IQ4_XS": (23, 256, 136, "iq4_xs"),
    "TQ1_0": (34, 256, 54, "tq1_0"), "TQ2_0": (35, 256, 66, "tq2_0"), "MXFP4": (39, 32, 17, "mxfp4"),
}

_STUBS = """
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <stdint.h>
void ggml_abort(const char * file, int line, const char * fmt, ...) {
    fprintf(stderr, "ggml_abort %%s:%%d\\n", file, line); abort();
}
static int64_t blck(int t) { switch (t) { %(blck)s default: return 1; } }
static size_t tsize(int t) { switch (t) { %(tsize)s default: return 4; } }
size_t ggml_type_size(int t) { return tsize(t); }
size_t ggml_row_size(int t, int64_t ne) { return tsize(t) * ne / blck(t); }
const char * ggml_type_name(int t) { (void) t; return "?"; }
"""


class OracleUnavailable(RuntimeError):
    """The C reference cannot be built here (the message says why)."""


def _sdist() -> Path:
    env = os.environ.get("QUANTCALC_LLAMA_SDIST")
    path = Path(env) if env else CACHE / SDIST
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", f"llama-cpp-python=={VERSION}", "--no-deps",
               "--no-binary", ":all:", "-d", str(CACHE)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        path = CACHE / SDIST
        if r.returncode or not path.exists():
            raise OracleUnavailable(f"could not download {SDIST}: {(r.stderr or r.stdout).strip()[-300:]}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SHA256:
        raise OracleUnavailable(f"{path} has sha256 {digest}, expected {SHA256} (llama-cpp-python {VERSION})")
    return path


def _build() -> Path:
    out = CACHE / f"ggml-ref-{VERSION}"
    lib = out / "libggmlref.so"
    if lib.exists():
        return lib
    if shutil.which("gcc") is None:
        raise OracleUnavailable("gcc is not installed (apt-get install gcc)")
    src = out / "ggml"
    with tarfile.open(_sdist()) as tf:
        for m in _MEMBERS:
            data = tf.extractfile(_PREFIX + m).read()
            (src / m).parent.mkdir(parents=True, exist_ok=True)
            (src / m).write_bytes(data)
    stubs = _STUBS % {"blck": " ".join(f"case {t}: return {b};" for t, b, _, _ in TYPES.values()),
                      "tsize": " ".join(f"case {t}: return {s};" for t, _, s, _ in TYPES.values())}
    (src / "stubs.c").write_text(stubs)
    tmp = out / "libggmlref.so.tmp"
    cmd = ["gcc", *FLAGS, f"-I{src / 'include'}", f"-I{src / 'src'}", "-o", str(tmp),
           str(src / "src/ggml-quants.c"), str(src / "stubs.c"), "-lm"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise OracleUnavailable(f"gcc failed: {r.stderr.strip()[-500:]}")
    tmp.rename(lib)
    return lib


class GgmlRef:
    """ctypes front end: ``quantize(name, rows, imatrix)`` and ``dequantize(name, data)``."""

    def __init__(self, lib: Path):
        self.lib = ctypes.CDLL(str(lib))
        f32p, vp = ctypes.POINTER(ctypes.c_float), ctypes.c_void_p
        for _, _, _, c in TYPES.values():
            q = getattr(self.lib, f"quantize_{c}")
            q.argtypes = [f32p, vp, ctypes.c_int64, ctypes.c_int64, f32p]
            q.restype = ctypes.c_size_t
            d = getattr(self.lib, f"dequantize_row_{c}")
            d.argtypes = [vp, f32p, ctypes.c_int64]
            d.restype = None

    def quantize(self, name: str, rows: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
        """``quantize_<type>(src, dst, nrows, n_per_row, imatrix)`` on a 2-D float32 array ->
        ``(n_blocks, type_size)`` uint8 in row-major block order."""
        _, bs, ts, c = TYPES[name]
        rows = np.ascontiguousarray(rows, np.float32)
        nrow, n_per_row = rows.shape
        assert n_per_row % bs == 0
        out = np.zeros((nrow * n_per_row // bs, ts), np.uint8)
        f32p = ctypes.POINTER(ctypes.c_float)
        qw = None
        if imatrix is not None:
            imatrix = np.ascontiguousarray(imatrix, np.float32)
            assert imatrix.shape == (n_per_row,)
            qw = imatrix.ctypes.data_as(f32p)
        n = getattr(self.lib, f"quantize_{c}")(rows.ctypes.data_as(f32p), out.ctypes.data, nrow, n_per_row, qw)
        assert n == out.nbytes, (n, out.nbytes)
        return out

    def dequantize(self, name: str, data: np.ndarray) -> np.ndarray:
        _, bs, ts, c = TYPES[name]
        data = np.ascontiguousarray(data, np.uint8).reshape(-1, ts)
        y = np.empty((data.shape[0], bs), np.float32)
        getattr(self.lib, f"dequantize_row_{c}")(data.ctypes.data, y.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                                                 y.size)
        return y


_CACHED: GgmlRef | OracleUnavailable | None = None


def load() -> GgmlRef:
    """The compiled reference (built on first use); raises OracleUnavailable with the reason."""
    global _CACHED
    if _CACHED is None:
        try:
            _CACHED = GgmlRef(_build())
        except OracleUnavailable as e:
            _CACHED = e
    if isinstance(_CACHED, OracleUnavailable):
        raise _CACHED
    return _CACHED
