"""The numpy floor of per-channel int8 analysis (prints, never asserts).

Issue 2 / 11 set "per-channel int8 analysis <= 4x np.copyto". This script times, on the benchmark's 4096 x 4096
float32 tensor, only the elementwise numpy passes that no formulation of that analysis avoids, each on
cache-resident tiles of 32 rows with operands as columns and no bookkeeping (scales are given, not computed;
no clip or collapse counting; no range-safety checks; sums of squares through numpy's BLAS dot), and prints
each cumulative level as a multiple of the copy. The engine's own time (``qc.analyze``) is printed last.

Run: .venv/bin/python benchmarks/bench_numpy_floor.py [--repeat 9]
"""
from __future__ import annotations

import argparse
import gc
import time

import numpy as np

import quantcore as qc
from quantcore import IntFormat, PerChannel, QuantSpec
from quantcore.analysis import prepare

ROWS = 32


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=9)
    args = ap.parse_args()
    x = qc.synthetic(4096, 4096, channel_spread=1.0, seed=0)
    spec = QuantSpec(fmt=IntFormat(8, True), mapping="affine", granularity=PerChannel(0), convention="torch")
    sc = prepare(x, spec).scales
    scale = np.asarray(sc.scale, np.float32)[:, None]
    inv = (np.float32(1) / scale).astype(np.float32)
    zp = np.asarray(sc.zero_point, np.float32)[:, None]
    codes = np.empty(x.shape, np.int8)
    t, e = np.empty((ROWS, x.shape[1]), np.float32), np.empty((ROWS, x.shape[1]), np.float32)
    copy_out = np.empty_like(x)

    def passes(level: int) -> None:
        for r0 in range(0, x.shape[0], ROWS):
            r = slice(r0, r0 + ROWS)
            v = x[r]
            np.multiply(v, inv[r], out=t)       # 1. x / scale (torch: times the reciprocal)
            np.add(t, zp[r], out=t)             # 2. + zero-point
            np.rint(t, out=t)                   # 3. round half to even
            if level >= 1:
                codes[r] = t                    # 4. store the int8 codes
            if level >= 2:
                np.subtract(t, zp[r], out=e)    # 5-6. x_hat = (q - zp) * scale
                np.multiply(e, scale[r], out=e)
            if level >= 3:
                np.subtract(e, v, out=e)        # 7. e = x_hat - x
                np.vecdot(e.reshape(-1, 256), e.reshape(-1, 256))   # 8. sum e^2
                np.vecdot(v.reshape(-1, 256), v.reshape(-1, 256))   # 9. sum x^2
            if level >= 4:
                np.abs(e, out=e)                # 10. |e|
                np.einsum("ij->i", e)           # 11. sum |e|
                e.max(axis=1)                   # 12. max |e|

    def best(f) -> float:
        b = float("inf")
        for _ in range(args.repeat):
            gc.collect()
            t0 = time.process_time()
            f()
            b = min(b, time.process_time() - t0)
        return b * 1e3

    copy_ms = best(lambda: np.copyto(copy_out, x))
    print(f"4096 x 4096 float32, tiles of {ROWS} rows, CPU time, best of {args.repeat}; np.copyto {copy_ms:.1f} ms")
    names = ["scale, zero-point, round", "+ store int8 codes", "+ dequantize", "+ error, sum e^2, sum x^2",
             "+ |e|, sum |e|, max |e|"]
    for level, name in enumerate(names):
        ms = best(lambda: passes(level))
        print(f"  floor: {name:28s} {ms:6.1f} ms  {ms / copy_ms:4.1f}x copy")
    ms = best(lambda: qc.analyze(x, spec))
    print(f"  quantcore analyze (scales, clip and collapse counts, range safety, result) "
          f"{ms:6.1f} ms  {ms / copy_ms:4.1f}x copy")


if __name__ == "__main__":
    main()
