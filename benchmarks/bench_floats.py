"""Time each float scheme on a 4096 x 4096 float32 tensor, as a ratio to np.copyto (the memory floor).

Per float preset (quantcore.presets) it prints the time of

* ``analyze``: scales, codes and every statistic in the one fused pass (what the app and CLI run);
* ``+ x_hat, ties``: the same plus the dequantized tensor and the boundary flags materialized (what the
  former ``quantize_float_scheme`` returned: codes, x_hat, clipped and boundary arrays);
* ``metrics``: the metrics-only pass of the checkpoint scan (``analysis.total_statistics``: no codes, no per-row arrays).

``+ x_hat, ties`` costs one decode of the codes on top of ``analyze``: the boundary flags come from analyze's own
encoder run. Prints numbers, never asserts. Run: .venv/bin/python benchmarks/bench_floats.py [--n 4096]
[--repeat 3] [--cpu-time] (``--cpu-time``: process CPU time instead of wall time, steadier on a shared machine).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import quantcore as qc
from quantcore import floatfmt as ff
from quantcore.analysis import total_statistics

SCHEMES = ("fp8_e4m3", "fp8_e4m3_channel", "fp8_e4m3_g128", "fp8_e4m3_b128", "fp8_e4m3_e8m0_g32", "mxfp8",
           "mxfp8_e5m2", "mxfp6_e2m3", "mxfp4_e2m1", "nvfp4", "fp4_e2m1_channel", "nf4", "nf4_dq")


CLOCK = time.perf_counter


def best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = CLOCK()
        fn()
        best = min(best, CLOCK() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=4096, help="tensor is n x n float32")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    ap.add_argument("--cpu-time", action="store_true", help="process CPU time instead of wall time")
    args = ap.parse_args()
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time
    x = np.random.default_rng(0).standard_normal((args.n, args.n)).astype(np.float32)
    dst = np.empty_like(x)
    floor = best_of(lambda: np.copyto(dst, x), max(args.repeat, 5))
    print(f"tensor {args.n}x{args.n} float32 ({x.nbytes / 2**20:.0f} MiB); np.copyto {floor * 1e3:.1f} ms")
    print(f"{'scheme':<20}{'analyze ms':>11}{'x copy':>8}{'+x_hat,ties':>12}{'x copy':>8}{'metrics ms':>11}"
          f"{'x copy':>8}{'bits/w':>8}{'rmse':>10}")
    for fmt in (ff.E4M3FN, ff.E2M1):
        t = best_of(lambda: ff.encode(x, fmt), args.repeat)
        print(f"{'encode ' + fmt.name:<20}{t * 1e3:>11.1f}{t / floor:>8.1f}")
    for name in SCHEMES:
        spec = qc.preset(name)
        res = {}
        t_a = best_of(lambda: res.__setitem__("r", qc.analyze(x, spec)), args.repeat)

        def full():
            r = qc.analyze(x, spec)
            return r.dequantized, r.ties
        t_f = best_of(full, args.repeat)
        t_m = best_of(lambda: total_statistics(x, spec), args.repeat)
        r = res["r"]
        print(f"{name:<20}{t_a * 1e3:>11.1f}{t_a / floor:>8.1f}{t_f * 1e3:>12.1f}{t_f / floor:>8.1f}"
              f"{t_m * 1e3:>11.1f}{t_m / floor:>8.1f}{r.memory.bits_per_weight:>8.4f}{r.metrics.rmse:>10.5f}")


if __name__ == "__main__":
    main()
