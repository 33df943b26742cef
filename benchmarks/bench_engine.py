"""Engine benchmark (prints, never asserts): speed relative to the memory floor, torch, and peak memory.

Input: a 4096 x 4096 float32 weight with log-normal channel (row) scales (quantcore.synthetic).
For each scheme it prints

* time / time(np.copyto of the same tensor)  -- the memory-bandwidth floor (targets from issue 2:
  per-channel int8 analysis <= 4x, per-tensor + per-channel + per-group-128 trio <= 12x; issue 11 item 6:
  per-channel int8 quantize-to-codes <= 4x). "quantize to codes" is ``prepare`` (min/max, scales) plus the
  encoder alone (``Prepared.codes``: int8 codes, no x_hat, no statistics); "analysis" is ``qc.analyze`` (codes,
  x_hat, per-channel error statistics). np.copy (which also allocates its output) is printed for reference;
* the same per-channel int8 work done by torch with one thread (PerChannelMinMaxObserver +
  quantize_per_channel + dequantize + error metrics): target quantcore >= 2x faster;
* peak extra memory during the call (tracemalloc, numpy allocations included) / input size
  (target <= 3x).

Run:  .venv/bin/python benchmarks/bench_engine.py [--size 4096] [--repeat 3] [--cpu-time]
Timings are the best of ``--repeat`` runs, one thread (OMP/MKL/OpenBLAS threads pinned to 1); ``--cpu-time``
times with the process CPU clock instead of the wall clock (steadier on a shared machine).
"""
from __future__ import annotations

import argparse
import gc
import os
import time
import tracemalloc

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402

import quantcore as qc  # noqa: E402
from quantcore import IntFormat, PerChannel, QuantSpec  # noqa: E402
from quantcore.analysis import prepare  # noqa: E402


CLOCK = time.perf_counter


def best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t0 = CLOCK()
        fn()
        best = min(best, CLOCK() - t0)
    return best


def peak_extra(fn) -> int:
    """Peak bytes allocated (and traced) while fn runs, above what was live before it."""
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    out = fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    del out
    return peak


def torch_per_channel(torch, xt):
    """What quantcore's per-channel int8 analysis delivers, done with torch ops (one thread)."""
    obs = torch.ao.quantization.PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8,
                                                         qscheme=torch.per_channel_affine)
    obs(xt)
    s, zp = obs.calculate_qparams()
    q = torch.quantize_per_channel(xt, s.double(), zp.long(), 0, torch.qint8)
    xh = q.dequantize()
    e = xh - xt
    # float32 reductions (torch's fastest path; quantcore accumulates in float64, which torch would make
    # ~2x slower here: e.double() alone costs about as much as the quantization)
    sse = (e * e).sum(1)
    ssx = (xt * xt).sum(1)
    ae = e.abs()
    mae = ae.sum(1)
    mx = ae.amax(1)
    # clip count: codes at qmin/qmax whose input lies beyond the grid (as quantcore counts raw codes)
    codes = q.int_repr()
    clipped = ((codes == -128) | (codes == 127)).sum(1)
    sqnr = 10 * torch.log10(ssx.sum() / sse.sum())
    return q, xh, sse, mae, mx, clipped, sqnr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cpu-time", action="store_true", help="process CPU time instead of wall time")
    args = ap.parse_args()
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time
    n = args.size
    x = qc.synthetic(n, n, channel_spread=1.0, seed=0)  # float32, log-normal row scales
    mb = x.nbytes / 2**20
    print(f"input: {n} x {n} float32 ({mb:.0f} MiB), log-normal channel scales; numpy {np.__version__}, 1 thread")

    dst = np.empty_like(x)
    t_copy = best_time(lambda: np.copyto(dst, x), args.repeat + 2)
    t_np_copy = best_time(lambda: np.copy(x), args.repeat + 2)
    print(f"np.copyto (memory floor): {t_copy * 1e3:.1f} ms  ({x.nbytes / t_copy / 1e9:.2f} GB/s); "
          f"np.copy (allocating): {t_np_copy * 1e3:.1f} ms; ratios below are to np.copyto "
          f"({'CPU' if args.cpu_time else 'wall'} time)\n")

    int8 = IntFormat(8, True)
    pc_torch = QuantSpec(fmt=int8, mapping="affine", granularity=PerChannel(0), convention="torch")
    base = QuantSpec(fmt=int8, mapping="symmetric", convention="torch")
    schemes = {}
    if hasattr(prepare(x[:1], pc_torch), "codes"):  # absent before issue 11 item 6 (to time an older tree)
        schemes["per-channel int8 quantize to codes (torch)"] = lambda: prepare(x, pc_torch).codes()
    schemes |= {
        "per-channel int8 analysis (torch conv.)": lambda: qc.analyze(x, pc_torch),
        "  ... + materialize x_hat": lambda: qc.analyze(x, pc_torch).dequantized,
        "per-channel int8 analysis (float64 conv.)": lambda: qc.analyze(x, pc_torch.with_(convention="float64")),
        "trio: tensor + channel + group-128": lambda: qc.compare(x, qc.standard_schemes(base, (128,))),
        "GGUF Q4_0 preset": lambda: qc.analyze(x, qc.preset("q4_0")),
        "GGUF Q8_0 preset": lambda: qc.analyze(x, qc.preset("q8_0")),
    }
    targets = {"per-channel int8 quantize to codes (torch)": 4.0, "per-channel int8 analysis (torch conv.)": 4.0,
               "trio: tensor + channel + group-128": 12.0}
    print(f"{'scheme':44s} {'time ms':>9s} {'x copy':>8s} {'target':>7s} {'peak extra':>11s}")
    times = {}
    for name, fn in schemes.items():
        t = best_time(fn, args.repeat)
        times[name] = t
        peak = peak_extra(fn)
        tgt = f"<= {targets[name]:g}x" if name in targets else ""
        print(f"{name:44s} {t * 1e3:9.1f} {t / t_copy:7.1f}x {tgt:>7s} {peak / x.nbytes:10.2f}x")

    try:
        import torch
    except ImportError:
        print("\ntorch not installed: torch comparison skipped (pip install the 'test' extra)")
        return
    import warnings
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(1)
    xt = torch.from_numpy(x)
    t_torch = best_time(lambda: torch_per_channel(torch, xt), args.repeat)
    ours = times["per-channel int8 analysis (torch conv.)"]
    ours_x = times["  ... + materialize x_hat"]
    print(f"\ntorch {torch.__version__} 1 thread, per-channel int8 (observer + quantize_per_channel + dequantize "
          f"+ metrics): {t_torch * 1e3:.1f} ms = {t_torch / t_copy:.1f}x copy")
    print(f"speed-up of quantcore over torch: {t_torch / ours:.2f}x (analysis), {t_torch / ours_x:.2f}x "
          f"(analysis + x_hat materialized); target >= 2x")
    peak_t = peak_extra(lambda: torch_per_channel(torch, xt))
    print(f"torch peak extra memory (tracemalloc sees only numpy/Python allocations, not torch's): "
          f"{peak_t / x.nbytes:.2f}x")


if __name__ == "__main__":
    main()
