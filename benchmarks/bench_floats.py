"""Time each float scheme on a 4096 x 4096 float32 tensor, as a ratio to np.copyto (the memory floor).

Prints numbers, never asserts. Run: .venv/bin/python benchmarks/bench_floats.py [--n 4096] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from quantcore import floatfmt as ff
from quantcore.microscaling import FloatScheme, quantize_float_scheme

SCHEMES = [
    FloatScheme("fp8_tensor"),
    FloatScheme("fp8_channel"),
    FloatScheme("mxfp8_e4m3"),
    FloatScheme("mxfp8_e5m2"),
    FloatScheme("mxfp4"),
    FloatScheme("nvfp4"),
    FloatScheme("nf4"),
    FloatScheme("nf4", double_quant=True),
]


def best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=4096, help="tensor is n x n float32")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    args = ap.parse_args()
    x = np.random.default_rng(0).standard_normal((args.n, args.n)).astype(np.float32)
    dst = np.empty_like(x)
    floor = best_of(lambda: np.copyto(dst, x), max(args.repeat, 5))
    print(f"tensor {args.n}x{args.n} float32 ({x.nbytes / 2**20:.0f} MiB); np.copyto {floor * 1e3:.1f} ms")
    print(f"{'scheme':<22}{'ms':>10}{'x copyto':>10}{'bits/w':>10}{'rmse':>12}")
    for fmt in (ff.E4M3FN, ff.E2M1):
        t = best_of(lambda: ff.encode(x, fmt), args.repeat)
        print(f"{'encode ' + fmt.name:<22}{t * 1e3:>10.1f}{t / floor:>10.1f}{fmt.bits:>10}{'':>12}")
    for s in SCHEMES:
        res = {}
        t = best_of(lambda: res.setdefault("r", quantize_float_scheme(x, s)), args.repeat)
        r = res["r"]
        rmse = float(np.sqrt(np.mean(r.error ** 2)))
        print(f"{s.label:<22}{t * 1e3:>10.1f}{t / floor:>10.1f}{r.bits_per_weight:>10.4f}{rmse:>12.5f}")


if __name__ == "__main__":
    main()
