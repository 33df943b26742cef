"""Scan throughput and a >= 2 GB checkpoint scanned with bounded memory. Prints numbers, never asserts.

1. Weights per second per core of each default scheme on a 4096 x 4096 float32 tensor (measure(), the
   metrics-only path the scan uses), and of the 4-scheme set together.
2. A TinyLlama-shaped bf16 checkpoint (hidden 2048, 22 layers, MLP 5632, 32 heads / 4 KV heads,
   vocab 32000: 1.1 B parameters, 2.2 GB) written as shards + model.safetensors.index.json to a temp
   dir, scanned by the CLI with --jobs N (default: every core), peak RSS printed; deleted afterwards.
3. The time extrapolated to a 7 B-parameter model on this machine.

Run: PYTHONPATH=. .venv/bin/python benchmarks/bench_scan.py [--jobs 2] [--layers 22] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

from quantcore.measure import measure, sum_of_squares
from quantcore.schemes import DEFAULT_SCHEMES, parse_schemes


def throughput(repeat: int = 3) -> dict[str, float]:
    """Weights/s of each scheme as the scan runs it: per 1 Mi-element segment, with the segment's sum of
    squares computed once for all schemes (the "sum of squares" line)."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4096, 4096)) * 0.02).astype(np.float32)
    segs = [x[i:i + 256] for i in range(0, 4096, 256)]
    ssx = [sum_of_squares(p) for p in segs]
    out = {"sum of squares": x.size / min(_timed(lambda: [sum_of_squares(p) for p in segs]) for _ in range(repeat))}
    for s in parse_schemes(",".join(DEFAULT_SCHEMES)):
        best = min(_timed(lambda: [measure(p, s, None, q) for p, q in zip(segs, ssx)]) for _ in range(repeat))
        out[s.name] = x.size / best
    return out


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def llama_shapes(layers: int, hidden=2048, mlp=5632, heads=32, kv_heads=4, vocab=32000):
    kv = hidden // heads * kv_heads
    yield "model.embed_tokens.weight", (vocab, hidden)
    for i in range(layers):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (hidden,)
        yield p + "self_attn.q_proj.weight", (hidden, hidden)
        yield p + "self_attn.k_proj.weight", (kv, hidden)
        yield p + "self_attn.v_proj.weight", (kv, hidden)
        yield p + "self_attn.o_proj.weight", (hidden, hidden)
        yield p + "post_attention_layernorm.weight", (hidden,)
        yield p + "mlp.gate_proj.weight", (mlp, hidden)
        yield p + "mlp.up_proj.weight", (mlp, hidden)
        yield p + "mlp.down_proj.weight", (hidden, mlp)
    yield "model.norm.weight", (hidden,)
    yield "lm_head.weight", (vocab, hidden)


def write_checkpoint(folder: str, layers: int, shard_bytes: int = 600 << 20) -> tuple[int, int]:
    """bf16 shards written tensor by tensor (never the whole model in memory); returns (params, bytes)."""
    rng = np.random.default_rng(0)
    shards, cur, size = [], [], 0
    for name, shape in llama_shapes(layers):
        n = int(np.prod(shape)) * 2
        if cur and size + n > shard_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append((name, shape))
        size += n
    shards.append(cur)
    wm, params, total = {}, 0, 0
    for k, tensors in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        header, off = {}, 0
        for name, shape in tensors:
            n = int(np.prod(shape)) * 2
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
            off += n
            wm[name] = fname
        h = json.dumps(header).encode()
        h += b" " * (-len(h) % 8)
        with open(os.path.join(folder, fname), "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h)
            for name, shape in tensors:
                if len(shape) == 1:
                    a = np.ones(shape, np.float32)
                else:  # rows of different scale, as trained weights have
                    a = rng.standard_normal(shape, dtype=np.float32)
                    a *= np.float32(0.02) * np.exp(rng.standard_normal((shape[0], 1), dtype=np.float32) * 0.5)
                f.write((a.view(np.uint32) >> 16).astype("<u2").tobytes())
                params += a.size
                total += 2 * a.size
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": wm}, f)
    return params, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--chunk-mb", type=float, default=64)
    ap.add_argument("--keep", help="write the checkpoint here and keep it")
    args = ap.parse_args()

    tp = throughput()
    print("1. metrics-only throughput, one core, 4096 x 4096 float32:")
    for k, v in tp.items():
        print(f"   {k:16s} {v / 1e6:7.1f} M weights/s  ({1e9 / v:5.1f} ns/weight)")
    per_weight = sum(1 / v for v in tp.values())
    print(f"   all {len(tp) - 1} schemes     {1 / per_weight / 1e6:7.1f} M weights/s per core")

    folder = args.keep or tempfile.mkdtemp(prefix="quantcalc-bench-")
    os.makedirs(folder, exist_ok=True)
    try:
        t0 = time.perf_counter()
        index = os.path.join(folder, "model.safetensors.index.json")
        if os.path.exists(index):  # --keep DIR from an earlier run: reuse it
            with open(index) as f:
                nbytes = json.load(f)["metadata"]["total_size"]
            params = nbytes // 2
            shutil.rmtree(os.path.join(folder, "scan-out"), ignore_errors=True)
        else:
            params, nbytes = write_checkpoint(folder, args.layers)
        print(f"\n2. wrote {params / 1e9:.2f} B parameters, {nbytes / 1e9:.2f} GB bf16 in "
              f"{len(os.listdir(folder)) - 1} shards + index ({time.perf_counter() - t0:.0f} s)")
        out = os.path.join(folder, "scan-out")
        cmd = [sys.executable, "-m", "quantcore", "scan", folder, "--jobs", str(args.jobs), "--chunk-mb",
               str(args.chunk_mb), "--out", out, "--json", "--no-progress"]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            print("   scan failed:", r.stderr.strip())
            return
        s = json.loads(r.stdout)
        scanned = sum(t["n"] for t in s["totals"][:1])
        print(f"   scan --jobs {args.jobs} --chunk-mb {args.chunk_mb:g}: {wall:.1f} s wall "
              f"({s['seconds']:.1f} s in the scan loop), {scanned / 1e9:.2f} B weights x {len(s['totals'])} schemes, "
              f"{scanned / wall / 1e6:.1f} M weights/s ({scanned / wall / args.jobs / 1e6:.1f} per core)")
        print("   peak RSS: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in s["peak_rss_mib"].items()) +
              f"  (chunk budget {args.chunk_mb:g} MiB float32 per worker)")
        for t in s["totals"]:
            print(f"   {t['scheme']:16s} {t['bytes'] / 1e9:6.2f} GB  {t['bits_per_weight']:.3f} bits/weight  "
                  f"rel RMSE {t['rel_rmse']:.4g}")
        est = 7e9 / (scanned / wall)
        print(f"\n3. 7 B parameters x {len(s['totals'])} schemes at this rate: {est:.0f} s ({est / 60:.1f} min) "
              f"with {args.jobs} jobs; target 300 s: {'met' if est <= 300 else 'NOT met'}")
        print(f"   compute alone (section 1, {args.jobs} cores, no I/O): {7e9 * per_weight / args.jobs:.0f} s")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
