"""Quantize a 4096 x 4096 float32 tensor with every GGML type: ours (numpy) next to llama.cpp's C.

Per type: best-of-N wall time of ``GGMLType.quantize_rows`` (without and, for the types that take one, with
an importance matrix), throughput in MB/s of float32 input, the C reference's single-thread time
through ctypes on the same data (``quantize_<type>`` of ggml-quants.c, llama-cpp-python 0.3.36 sdist,
built by tests/oracles/ggml_ref.py with -O2 -ffp-contract=off, no -march), whether the bytes are
identical, and our peak traced memory (tracemalloc, one extra run). Prints numbers, never asserts.

Run: .venv/bin/python benchmarks/bench_gguf.py [--n 4096] [--repeat 2] [--types Q4_K,Q6_K]
"""
from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from quantcore.ggml import BLOCK_FORMATS, GGML_TYPES

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def peak_mb(fn) -> float:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4096, help="tensor is n x n float32 (n a multiple of 256)")
    ap.add_argument("--repeat", type=int, default=2, help="best of this many runs")
    ap.add_argument("--types", default=",".join(t.name for t in BLOCK_FORMATS.values()))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((args.n, args.n)) * np.exp(rng.normal(0, 1, (args.n, 1)))).astype(np.float32)
    imatrix = (rng.random(args.n) * 2).astype(np.float32)
    mb = x.nbytes / 2**20
    try:
        from oracles.ggml_ref import load
        ref = load()
        print("C reference: ggml-quants.c (llama-cpp-python 0.3.36), one thread, through ctypes")
    except Exception as e:  # noqa: BLE001 (the reason is printed)
        ref = None
        print(f"C reference unavailable: {e}")
    print(f"tensor {args.n} x {args.n} float32 ({mb:.0f} MB), best of {args.repeat}\n")
    head = f"{'type':8s} {'imatrix':7s} {'ours s':>8s} {'MB/s':>7s} {'C s':>7s} {'C MB/s':>7s} {'ours/C':>7s} {'bytes':>9s} {'peak MB':>8s}"
    print(head)
    print("-" * len(head))
    for name in args.types.split(","):
        t = GGML_TYPES[name]
        for im in ([None, imatrix] if t.uses_weights or t.row_weighted else [None]):
            ours_s, ours = best_of(lambda: t.quantize_rows(x, im), args.repeat)
            c_s, same = float("nan"), "n/a"
            if ref is not None:
                c_s, theirs = best_of(lambda: ref.quantize(name, x, im), args.repeat)
                same = "identical" if np.array_equal(ours.reshape(theirs.shape), theirs) else "DIFFER"
            peak = peak_mb(lambda: t.quantize_rows(x, im))
            print(f"{name:8s} {'yes' if im is not None else 'no':7s} {ours_s:8.2f} {mb / ours_s:7.0f} {c_s:7.2f} "
                  f"{mb / c_s:7.0f} {ours_s / c_s:7.1f} {same:>9s} {peak:8.1f}", flush=True)


if __name__ == "__main__":
    main()
