"""``python -m quantcore scan | diff | plan``: the checkpoint commands (registered by :mod:`quantcore.cli`).

scan PATH... [--schemes q8_0,q4_0,int4-g128,nvfp4] [--out DIR] [--jobs N | --dask ADDRESS]
     [--chunk-mb 64] [--include-1d] [--filter REGEX] [--original PATH...] [--keep-going] [--top 10]
    Every floating tensor with >= 2 dims x every scheme; prints the model summary. With --out, rows are
    appended to DIR/results.jsonl and DIR/results.csv as tensors finish, a rerun resumes, and the
    summary is written to DIR/summary.{json,txt}. With --original, PATH is a shipped (quantized) model:
    each of its tensors is dequantized and measured against the original (rows "shipped:<file>"),
    and the schemes are run on the original's data.
diff A.gguf B.gguf [--original PATH...]
    Tensor by tensor: type and bits/weight in A and B (a recipe diff); with --original, each one's
    relative RMSE against the original.
plan SCAN_OUT_DIR (--bpw 4.8 | --size 3.9GiB) [--objective rel|sse] [--schemes ...] [--json FILE]
     [--llama-types FILE]
    One scheme per tensor under the budget (multiple-choice knapsack; quantcore.plan), compared with
    each uniform scheme; exports JSON and a llama-quantize --tensor-type-file.

Exit status: 0; 1 when --keep-going skipped failing tensors; 2 on bad input (one line naming the file
and tensor; rows already written stay).

Tensor and file names are untrusted: text output prints them through :func:`quantcore.io.printable`
(controls, ANSI sequences and bidi controls as visible ``\\u202e``-style escapes); --out files and --json
keep the exact names.
"""
from __future__ import annotations

import math
import os
import re
import sys
import time

from .io._common import printable

PROGRESS_EVERY = 10.0  # seconds between plain progress lines when stderr is not a terminal


SCHEME_HELP = ("comma-separated: GGUF q8_0 q4_0 q4_1 q5_0 q5_1; float fp8_e4m3 fp8_e5m2 fp8_e4m3_channel mxfp8 "
               "mxfp8_e5m2 mxfp4 nvfp4 nf4 nf4_dq; f16 bf16; int<bits>[-sym|-asym][-g<size>|-channel|-tensor]"
               "[-fp16|-bf16|-fp32], e.g. int4-g128 (default q8_0,q4_0,int4-g128,nvfp4)")
SCAN_EPILOG = r"""examples:
  python -m quantcore scan ckpt/ --jobs 2 --out scan-out          # folder with model.safetensors.index.json
  python -m quantcore scan model.gguf --schemes q8_0,q5_0,q4_0 --filter 'blk\.(0|31)\.'
  python -m quantcore scan model-Q4_K_M.gguf --original ckpt/ --schemes none
  python -m quantcore scan ckpt/ --dask tcp://scheduler:8786 --out scan-out
prints: tensors scanned/skipped (and why), size and error per scheme, the most damaged tensors, the
relative RMSE by role and by layer, time and peak memory. --out DIR keeps results.csv/results.jsonl
(one row per tensor x scheme) and summary.json/txt; rerunning with the same DIR resumes."""


def add_scan_commands(sub) -> None:
    import argparse
    sc = sub.add_parser("scan", help="every tensor of a checkpoint x every scheme: error, size, summary",
                        description="Scan every floating tensor (>= 2 dims) of a checkpoint with every scheme, "
                                    "streaming row chunks from disk.",
                        epilog=SCAN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sc.add_argument("paths", nargs="+", metavar="PATH",
                    help=".safetensors shard(s), model.safetensors.index.json, a folder, .gguf or .npz")
    _common(sc)
    sc.add_argument("--schemes", help=SCHEME_HELP + "; 'none' with --original for the shipped rows only")
    sc.add_argument("--original", nargs="+", metavar="PATH",
                    help="the unquantized model: PATH is then a shipped model measured against it")
    sc.add_argument("--top", type=int, default=10, help="most damaged tensors shown per scheme")
    sc.add_argument("--json", action="store_true", help="print the summary as JSON")
    df = sub.add_parser("diff", help="compare two GGUF files tensor by tensor (types, bits/weight, error)")
    df.add_argument("a")
    df.add_argument("b")
    df.add_argument("--original", nargs="+", metavar="PATH", help="the unquantized model, for errors")
    _common(df)
    pl = sub.add_parser("plan", help="mixed-precision plan from a scan's output folder under a size budget",
                        description="Choose one scheme per tensor under a budget, minimising the total error "
                                    "(exact dynamic programme; Lagrangian + local search for huge cases).",
                        epilog="example: python -m quantcore plan scan-out --bpw 4.8 --schemes q8_0,q5_0,q4_0 "
                               "--json plan.json --llama-types types.txt\nthen: llama-quantize --pure "
                               "--tensor-type-file types.txt in-f16.gguf out.gguf <base type printed>",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    pl.add_argument("results", help="the --out folder of a scan (or its results.jsonl)")
    b = pl.add_mutually_exclusive_group(required=True)
    b.add_argument("--bpw", type=float, help="budget in bits per weight over the scanned tensors")
    b.add_argument("--size", help="budget as a size: 3900000000, 3.9GB, 3.6GiB, 500MiB")
    pl.add_argument("--objective", choices=["rel", "sse"], default="rel",
                    help="rel: sum n*MSE/mean(x^2) (default, scale-invariant); sse: sum n*MSE")
    pl.add_argument("--schemes", help="only these schemes (default: all in the scan)")
    pl.add_argument("--json", metavar="FILE", help="write the plan as JSON")
    pl.add_argument("--llama-types", metavar="FILE", help="write a llama-quantize --tensor-type-file")


def _common(p) -> None:
    p.add_argument("--out", metavar="DIR", help="write results here (CSV + JSON Lines), resuming what is there")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--dask", metavar="ADDRESS", help="run on a dask.distributed scheduler (tcp://host:8786)")
    p.add_argument("--chunk-mb", type=float, default=64.0, help="float32 MiB read and analysed at once (default 64)")
    p.add_argument("--include-1d", action="store_true", help="also scan 1-D tensors (norms, biases)")
    p.add_argument("--filter", metavar="REGEX", help="only tensors whose name matches (re.search)")
    p.add_argument("--keep-going", action="store_true", help="report a failing tensor and go on")
    p.add_argument("--no-progress", action="store_true", help="no progress output on stderr")


class Progress:
    """A bar with ETA on a terminal (redrawn in place); plain lines every PROGRESS_EVERY s otherwise."""

    def __init__(self, stream, enabled: bool = True):
        self.stream = stream
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.enabled = enabled
        self.t0 = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        now = time.monotonic()
        el = now - self.t0
        frac = done / total
        eta = el * (1 - frac) / frac if frac > 0 else math.inf
        eta_s = f"{eta:,.0f} s" if math.isfinite(eta) else "?"
        if self.tty:
            if now - self.last < 0.2 and done < total:
                return
            bar = "#" * int(30 * frac)
            self.stream.write(f"\r[{bar:<30}] {100 * frac:5.1f} %  {done / 1e6:,.0f}/{total / 1e6:,.0f} M weights  "
                              f"ETA {eta_s}   ")
            if done >= total:
                self.stream.write("\n")
        elif now - self.last >= PROGRESS_EVERY or done >= total:
            self.stream.write(f"scan: {100 * frac:.1f} % ({done:,} of {total:,} weights), {el:,.0f} s elapsed, "
                              f"ETA {eta_s}\n")
        else:
            return
        self.last = now
        self.stream.flush()


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]i?b?|b)?\s*", text.lower())
    if not m:
        raise ValueError(f"cannot read the size {text!r} (examples: 3900000000, 3.9GB, 3.6GiB)")
    unit = (m.group(2) or "b").rstrip("b") or "b"
    mult = {"b": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}[unit]
    return int(float(m.group(1)) * mult)


def _run(ckpt, schemes, args, references, stdout, stderr):
    """Plan, run and store a scan; returns (rows of the checkpoint, plan, failures, seconds)."""
    from .scan import ResultStore, iter_scan, make_executor, plan_scan
    store = ResultStore(args.out) if args.out else None
    try:
        plan = plan_scan(ckpt, schemes, include_1d=args.include_1d, name_filter=args.filter, chunk_mb=args.chunk_mb,
                         references=references, done=store.done_keys() if store else ())
        executor = make_executor(args.jobs, args.dask)
        progress = Progress(stderr, not args.no_progress)
        failures = []
        rows = []
        worker_peak = 0.0
        t0 = time.perf_counter()
        try:
            for rep in iter_scan(plan, executor, keep_going=args.keep_going, on_progress=progress):
                worker_peak = max(worker_peak, rep.worker_peak_rss_mib)
                if rep.error:
                    failures.append(rep.error)
                    stderr.write(f"quantcore: skipped: {printable(rep.error)}\n")
                    continue
                rows.extend(rep.rows)
                if store:
                    store.append(rep.rows)
        finally:
            executor.shutdown()
        seconds = time.perf_counter() - t0
        order = [s.name for s in plan.schemes] + [f"shipped:{r.label}" for r in references]
        if store:
            rows = store.current_rows(ckpt, order)
        else:
            idx = {t.name: i for i, t in enumerate(ckpt.tensors)}
            so = {s: i for i, s in enumerate(order)}
            rows.sort(key=lambda r: (idx[r.tensor], so.get(r.scheme, len(so))))
        return rows, plan, failures, seconds, store, (worker_peak if args.jobs > 1 or args.dask else 0.0)
    except BaseException:
        if store:
            store.close()
        raise


def cmd_scan(args, stdout, stderr) -> int:
    from .io.checkpoint import open_checkpoint
    from .scan import Reference, peak_rss_mib, render_summary, summarize
    from .schemes import parse_schemes
    from .report import to_json
    schemes = () if (args.schemes or "").strip().lower() == "none" else parse_schemes(args.schemes)
    if args.original:
        ckpt = open_checkpoint(args.original)
        shipped = open_checkpoint(args.paths)
        references = [Reference(shipped.label, shipped)]
    else:
        ckpt, references = open_checkpoint(args.paths), []
    if not schemes and not references:
        raise ValueError("--schemes none leaves nothing to do without --original")
    rows, plan, failures, seconds, store, worker_peak = _run(ckpt, schemes, args, references, stdout, stderr)
    weights = sum(t.entry.n_elements for t in plan.tasks)
    summary = summarize(rows, plan.skipped, ckpt.label, args.top, peak_rss_mib(worker_peak), seconds, weights)
    if store:
        store.finalize(rows, summary)
        store.close()
    stdout.write((to_json(summary) if args.json else _printable_lines(render_summary(summary, args.top))) + "\n")
    if store:  # after JSON on stderr, so stdout stays one JSON document
        (stderr if args.json else stdout).write(f"results: {printable(os.path.join(args.out, 'results.csv'))} "
                                                f"({len(rows)} rows)\n")
    return 1 if failures else 0


def cmd_diff(args, stdout, stderr) -> int:
    from .io.checkpoint import open_checkpoint
    from .scan import Reference
    from .scanresults import _table
    a, b = open_checkpoint([args.a]), open_checkpoint([args.b])
    la, lb = a.label, b.label if b.label != a.label else b.label + " (B)"
    err: dict[tuple[str, str], float] = {}
    if args.original:
        orig = open_checkpoint(args.original)
        refs = [Reference(la, a), Reference(lb, b)]
        rows, plan, failures, _, store, _ = _run(orig, (), args, refs, stdout, stderr)
        if store:
            store.finalize(rows)
            store.close()
        from .names import match_names
        ma = match_names([t.name for t in orig.tensors], [t.name for t in a.tensors])
        mb = match_names([t.name for t in orig.tensors], [t.name for t in b.tensors])
        for r in rows:
            if r.scheme == f"shipped:{la}" and r.tensor in ma:
                err[(la, ma[r.tensor])] = r.rel_rmse
            if r.scheme == f"shipped:{lb}" and r.tensor in mb:
                err[(lb, mb[r.tensor])] = r.rel_rmse
    ta, tb = a.by_name(), b.by_name()
    names = list(dict.fromkeys([t.name for t in a.tensors] + [t.name for t in b.tensors]))
    head = ["tensor", "A type", "A bits/w", "B type", "B bits/w", ""]
    if args.original:
        head[5:5] = ["A rel RMSE", "B rel RMSE"]
    table = [head]
    changed = 0
    for n in names:
        x, y = ta.get(n), tb.get(n)
        mark = "" if (x and y and x.dtype == y.dtype) else "*"
        changed += bool(mark)
        row = [printable(n), x.dtype if x else "-", f"{x.stored_bits_per_weight:.3f}" if x else "-",
               y.dtype if y else "-", f"{y.stored_bits_per_weight:.3f}" if y else "-", mark]
        if args.original:
            row[5:5] = [f"{err[(la, n)]:.4g}" if (la, n) in err else "",
                        f"{err[(lb, n)]:.4g}" if (lb, n) in err else ""]
        table.append(row)
    size_a = sum(t.nbytes for t in a.tensors)
    size_b = sum(t.nbytes for t in b.tensors)
    na = sum(t.n_elements for t in a.tensors) or 1
    nb = sum(t.n_elements for t in b.tensors) or 1
    stdout.write(_printable_lines(f"A = {la}: {size_a / 2**20:,.1f} MiB, {8 * size_a / na:.3f} bits/weight\n"
                                  f"B = {lb}: {size_b / 2**20:,.1f} MiB, {8 * size_b / nb:.3f} bits/weight\n"
                                  f"{changed} of {len(names)} tensors differ in type (*)\n\n{_table(table)}\n"))
    return 0


def cmd_plan(args, stdout, stderr) -> int:
    import json
    from .plan import llama_quantize_overrides, render_plan, solve_plan
    from .scan import ResultStore
    path = args.results
    folder = os.path.dirname(path) if path.endswith(".jsonl") else path
    if not os.path.exists(os.path.join(folder, "results.jsonl")):
        raise ValueError(f"{folder}: no results.jsonl (run quantcore scan --out {folder} first)")
    store = ResultStore(folder)
    store.close()
    latest = {}
    for r in store.rows:
        latest[(r.tensor, r.scheme)] = r
    schemes = [s.strip() for s in args.schemes.split(",")] if args.schemes else None
    plan = solve_plan(list(latest.values()), budget_bytes=parse_size(args.size) if args.size else None,
                      bits_per_weight=args.bpw, objective=args.objective, schemes=schemes)
    stdout.write(_printable_lines(render_plan(plan)) + "\n")
    base, lines, problems = llama_quantize_overrides(plan)
    d = plan.to_dict()
    if not problems and base:
        d["llama_quantize"] = {"base_type": base, "tensor_type": lines,
                               "command": f"llama-quantize --pure --tensor-type-file TYPES.txt IN-F16.gguf OUT.gguf "
                                          f"{base.upper()}"}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(d, f, indent=1, allow_nan=False)
            f.write("\n")
        stdout.write(f"plan: {printable(args.json)}\n")
    if args.llama_types:
        if problems:
            raise ValueError(f"no llama-quantize file: {problems[0]}" + (f" (+{len(problems) - 1} more)"
                                                                          if len(problems) > 1 else ""))
        with open(args.llama_types, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
        stdout.write(f"llama-quantize --pure --tensor-type-file {printable(args.llama_types)} IN-F16.gguf OUT.gguf "
                     f"{base.upper()}   ({len(lines)} overrides)\n")
    return 0


def _printable_lines(text: str) -> str:
    """printable() line by line (line breaks kept). For text rendered elsewhere (quantcore.scanresults,
    quantcore.plan): a row holding an escaped name is as much wider as its escapes."""
    return "\n".join(printable(line) for line in text.split("\n"))


def run_scan_command(args, stdout=None, stderr=None) -> int:
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    if args.command == "scan":
        return cmd_scan(args, stdout, stderr)
    if args.command == "diff":
        return cmd_diff(args, stdout, stderr)
    return cmd_plan(args, stdout, stderr)
