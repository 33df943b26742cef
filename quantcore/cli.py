"""Command line: ``python -m quantcore analyze INPUT``, ``list FILE``, and the checkpoint commands
``scan``, ``diff``, ``plan`` (:mod:`quantcore.scancli`).

INPUT is a .npy/.npz/.safetensors/.gguf/.csv file or a text file in the seeds' paste format (one
channel per line or per semicolon; values separated by commas and/or spaces), or ``--example s0..s3``.
Exit status 0 on success, 2 on bad input or options with a one-line message and no traceback.

Tensor names, channel labels and file names are untrusted: every text output (tables, the result header,
error messages) prints them through :func:`quantcore.io.printable`, so control characters, ANSI escape
sequences and bidi controls appear as visible ``\\u001b``-style escapes; ``--json`` prints JSON (every
non-ASCII character escaped by ``json.dumps``), which keeps the exact names.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Sequence

import numpy as np

from . import report
from .analysis import QuantResult, analyze
from .conventions import CONVENTIONS, ROUNDINGS
from .examples import EXAMPLES, get_example
from .formats import IntFormat
from .granularity import PerChannel, PerGroup, PerTensor
from .io import detect_kind_of, list_tensors, load_input, load_tensor, printable  # the io layer parses every file kind
from .io import InputError
from .io.imatrix import pick_imatrix, read_imatrix
from .memory import DTYPE_BITS
from .names import hf_to_gguf
from .params import SYMMETRIC_SCALES, CustomRange, KLDivergence, MinMax, MSEOptimal, Percentile
from .presets import preset, preset_names
from .scancli import add_scan_commands, run_scan_command
from .schemes import parse_schemes
from .spec import QuantSpec

MAX_PRINTED_CHANNELS = 20
NO_VALUE = "–"  # a table cell with no single value (a scale per block, a scheme without zero-point)


class UsageError(Exception):
    """Bad options: reported in one line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage + message otherwise)
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m quantcore", description="Per-tensor / per-channel / per-group quantization analysis.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    a = sub.add_parser("analyze", help="quantize a tensor and report scales, errors and memory")
    a.add_argument("input", nargs="?", help="tensor file (.npy .npz .safetensors .gguf .csv .txt)")
    a.add_argument("--example", choices=sorted(EXAMPLES), help="use a built-in example instead of INPUT")
    a.add_argument("--tensor", help="tensor name inside .npz/.safetensors/.gguf")
    a.add_argument("--bits", type=int, default=None, help="bit width 2..16 (default: 8, or the example's)")
    sg = a.add_mutually_exclusive_group()
    sg.add_argument("--signed", dest="signed", action="store_true", default=None)
    sg.add_argument("--unsigned", dest="signed", action="store_false")
    a.add_argument("--mapping", choices=["symmetric", "affine", "affine_float"], default=None)
    a.add_argument("--granularity", choices=["tensor", "channel", "group"], default=None)
    a.add_argument("--axis", type=int, default=None, help="channel axis (per-channel) or group axis (per-group)")
    a.add_argument("--channel-axis", type=int, default=0, help="axis of the per-channel report (default 0)")
    a.add_argument("--group-size", type=int, default=128)
    a.add_argument("--narrow", action="store_true", default=None, help="symmetric narrow range, e.g. int8 [-127, 127]")
    a.add_argument("--reduce-range", action="store_true", default=None, help="PyTorch reduce_range: one bit fewer")
    a.add_argument("--qmin", type=int, help="custom qmin (with --qmax)")
    a.add_argument("--qmax", type=int, help="custom qmax (with --qmin)")
    a.add_argument("--range", dest="range_method", choices=["minmax", "percentile", "mse", "kl", "custom"], default=None)
    a.add_argument("--percentile", type=float, default=99.9)
    a.add_argument("--range-min", type=float, help="custom range minimum (with --range custom)")
    a.add_argument("--range-max", type=float, help="custom range maximum (with --range custom)")
    a.add_argument("--rounding", choices=list(ROUNDINGS), default=None)
    a.add_argument("--seed", type=int, default=0, help="seed for stochastic rounding")
    a.add_argument("--convention", choices=list(CONVENTIONS), default=None)
    a.add_argument("--symmetric-scale", choices=list(SYMMETRIC_SCALES), default=None,
                   help="symmetric scale rule; signed_amax: the largest-magnitude value with its sign / (qmin - zp)")
    a.add_argument("--scale-dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    a.add_argument("--zero-point-dtype", choices=[d for d in DTYPE_BITS if d not in ("e8m0", "e4m3")], default="int32")
    a.add_argument("--preset", choices=preset_names(), metavar="PRESET",
                   help="a named scheme (quantcore.presets): a GGUF block type, bit-exact with llama.cpp ("
                        + " ".join(preset_names("gguf")) + "), a float scheme (" + " ".join(preset_names("float"))
                        + ") or an ONNX Runtime MatMulNBits scheme onnx_matmulnbits{2,4,8}_{sym,asym}_g{16,32,64,128,"
                        "256}; fixes all other options")
    a.add_argument("--format", dest="float_format", choices=preset_names("float"), metavar="FORMAT",
                   help="a float scheme (the float entries of --preset): " + " ".join(preset_names("float")))
    a.add_argument("--compare", action="store_true", help="per-tensor vs per-channel vs per-group side by side")
    a.add_argument("--with", dest="with_schemes", metavar="SCHEMES",
                   help="comma-separated schemes added to the comparison (implies --compare): GGUF types "
                        "(q4_0, q4_k, mxfp4, ...), float formats (fp8_e4m3, mxfp4_e2m1, nvfp4, nf4, ...) and "
                        "int<bits>[-sym|-asym][-g<size>|-channel|-tensor][-fp16|-bf16|-fp32], e.g. "
                        "--with q4_0,nvfp4,q4_k,int4-g128 (names as in `scan --schemes`)")
    a.add_argument("--imatrix", metavar="FILE",
                   help="llama.cpp importance matrix (llama-imatrix's .gguf or legacy .dat, or a 1-D .npy) "
                        "weighting the scale search of a GGUF --preset, as llama-quantize --imatrix does")
    a.add_argument("--imatrix-entry", metavar="NAME",
                   help="the entry of --imatrix to use (default: --tensor's name, its GGUF name, or the only entry)")
    a.add_argument("--json", action="store_true", help="print JSON instead of text")
    a.add_argument("--save", metavar="OUT.npz", help="save q, dequantized, scale, zero_point arrays")
    lst = sub.add_parser("list", help="list the tensors in a file")
    lst.add_argument("file")
    add_scan_commands(sub)
    return p


def _load(args) -> tuple[object, list[str] | None, QuantSpec | None, str]:
    """Return (data, channel names, the example's spec or None, name)."""
    if args.example:
        if args.input:
            raise UsageError("give either INPUT or --example, not both")
        ex = get_example(args.example)
        return ex.rows, ex.channel_names, ex.spec, ex.key
    if not args.input:
        raise UsageError("INPUT is required (or --example s0..s3)")
    loaded = load_input(args.input, tensor=args.tensor)
    return loaded.data, loaded.channel_names, None, loaded.name or args.input


def _imatrix(args) -> np.ndarray | None:
    """--imatrix FILE: a 1-D .npy, or the entry of a llama.cpp imatrix file for this tensor."""
    if not args.imatrix:
        return None
    if detect_kind_of(args.imatrix) == "npy":
        return load_tensor(args.imatrix).array
    entries = read_imatrix(args.imatrix)
    tensor = args.tensor or ""
    try:
        _, w = pick_imatrix(entries, [args.imatrix_entry, tensor, hf_to_gguf(tensor) if tensor else None])
    except InputError as e:
        raise e.with_source(args.imatrix) from None
    return w


def spec_from_args(args, base: QuantSpec | None) -> QuantSpec:
    if args.preset and args.float_format:
        raise UsageError("give either --preset or --format, not both")
    if args.preset or args.float_format:
        return preset(args.preset or args.float_format)
    base = base or QuantSpec()
    f = base.fmt
    bits = args.bits if args.bits is not None else f.bits
    signed = args.signed if args.signed is not None else f.signed
    narrow = args.narrow if args.narrow is not None else (f.narrow and bits == f.bits)
    reduce_range = bool(args.reduce_range) if args.reduce_range is not None else f.reduce_range
    if (args.qmin is None) != (args.qmax is None):
        raise UsageError("--qmin and --qmax go together")
    fmt = IntFormat(bits, signed, narrow, reduce_range, args.qmin, args.qmax)
    gran = base.granularity
    if args.granularity == "tensor":
        gran = PerTensor()
    elif args.granularity == "channel":
        gran = PerChannel(args.axis if args.axis is not None else 0)
    elif args.granularity == "group":
        gran = PerGroup(args.group_size, args.axis if args.axis is not None else -1)
    rng = base.range
    method = args.range_method
    if method == "minmax":
        rng = MinMax()
    elif method == "percentile":
        rng = Percentile(args.percentile)
    elif method == "mse":
        rng = MSEOptimal()
    elif method == "kl":
        rng = KLDivergence()
    elif method == "custom" or args.range_min is not None or args.range_max is not None:
        if args.range_min is None or args.range_max is None:
            raise UsageError("a custom range needs both --range-min and --range-max")
        rng = CustomRange(args.range_min, args.range_max)
    return base.with_(fmt=fmt, mapping=args.mapping or base.mapping, granularity=gran, range=rng,
                      rounding=args.rounding or base.rounding, seed=args.seed,
                      convention=args.convention or base.convention, symmetric_scale=args.symmetric_scale,
                      scale_dtype=args.scale_dtype, zero_point_dtype=args.zero_point_dtype)


def extra_schemes(text: str | None) -> list[QuantSpec]:
    """The specs of ``--with`` (quantcore.schemes names; compact integer schemes keep their name as label)."""
    if text is None:
        return []
    if not text.strip(" ,"):
        raise UsageError("--with needs at least one scheme name (e.g. --with q4_0,nvfp4)")
    out = []
    for s in parse_schemes(text):
        if s.spec is None:
            raise UsageError(f"--with {s.name}: {s.name} is plain float storage, not a quantization scheme to "
                             f"compare here (the scan and plan commands take it)")
        out.append(s.spec.with_(name=s.name) if s.kind == "int" else s.spec)
    return out


def scale_count(r: QuantResult) -> tuple[int, str]:
    """How many scales a result has and what each covers: (n, "sub-block" | "block" | "channel")."""
    sub = r.sub_block_table()
    if sub is not None and len(sub["scale"]) > r.blocks.n_blocks:
        return len(sub["scale"]), "sub-block"
    return r.blocks.n_blocks, "channel" if isinstance(r.spec.granularity, PerChannel) else "block"


def scale_cell(r: QuantResult) -> str:
    """The scale of a scheme as one table cell: the value when there is one, else how many there are."""
    n, unit = scale_count(r)
    return _fmt(float(np.asarray(r.scale, np.float64)[0])) if n == 1 else f"per {unit} ({n:,})"


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.6g}"
    return str(v)


def _table(rows: list[dict], cols: Sequence[str]) -> str:
    """Aligned plain-text table; every cell goes through printable() (names and labels are untrusted)."""
    cells = [[printable(c) for c in cols]] + [[printable(_fmt(r[c])) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "\n".join("  ".join(s.ljust(w) for s, w in zip(row, widths)).rstrip() for row in cells)


def render_result(r: QuantResult, name: str) -> str:
    m, mem = r.metrics, r.memory
    if r.spec.kind == "float":
        how = (f"element format {r.spec.element.label}, {r.spec.granularity.label}, {r.spec.scale_rule.label} "
               f"scales ({r.spec.scale_dtype}), convention {r.spec.convention}, round to nearest even, saturating")
    else:
        how = f"rounding {r.spec.effective_rounding}, convention {r.spec.convention}, codes [{r.qmin}, {r.qmax}]"
    out = [f"{printable(name)}: {printable(r.label)}  ({how})"]
    sub = r.sub_block_table()
    if sub is not None:  # GGUF presets: x_hat = scale * value(code) - min per sub-block
        n = len(sub["scale"])
        shown = ", ".join(f"{float(s):.6g}/{float(z):.6g}" for s, z in zip(sub["scale"][:8], sub["min"][:8]))
        out.append(f"scale/min ({n} sub-block{'s' if n != 1 else ''} of {r.ggml_type.sub_block_size}): "
                   f"{shown}{' ...' if n > 8 else ''}")
    else:
        n_blocks = len(r.scale)
        shown = ", ".join(f"{float(s):.6g}/{float(z):.6g}" for s, z in zip(r.scale[:8], r.zero_point[:8]))
        out.append(f"scale/zero-point ({n_blocks} block{'s' if n_blocks != 1 else ''}): {shown}{' ...' if n_blocks > 8 else ''}")
    out.append(f"MAE {m.mae:.6g}  RMSE {m.rmse:.6g}  max error {m.max_abs:.6g}  SQNR {m.sqnr_db:.2f} dB  "
               f"clipped {m.clip_count} ({100 * m.clip_rate:.2f} %)  collapsed to zero {m.collapsed}  "
               f"grid utilization {100 * r.utilization:.1f} %")
    if r.imatrix is not None:
        out.append(f"importance-weighted output error (mean over rows of sum_j imatrix_j * e_j^2, "
                   f"{r.imatrix.size} columns): {r.imatrix_output_mse:.6g}")
    out.append(f"memory: payload {mem.payload_bytes:,} B + metadata {mem.metadata_bytes:,} B = {mem.total_bytes:,} B, "
               f"{mem.bits_per_weight:.3f} bits/weight, {100 * mem.ratio_fp32:.1f} % of fp32")
    t = r.channel_table()
    n = len(t["channel"])
    rows = [{k: t[k][i] for k in ("name", "min", "max", "scale", "zero_point", "mae", "rmse", "sqnr_db", "clip_count",
                                  "collapsed", "ties")} for i in range(min(n, MAX_PRINTED_CHANNELS))]
    no_scale, no_zp = bool(np.isnan(t["scale"]).any()), bool(np.isnan(t["zero_point"]).any())
    for row in rows:  # NaN here means "no single value for this channel", never a failed computation
        for k in ("scale", "zero_point"):
            if np.isnan(row[k]):
                row[k] = NO_VALUE
    out.append(_table(rows, list(rows[0])))
    if n > MAX_PRINTED_CHANNELS:
        out.append(f"... {n - MAX_PRINTED_CHANNELS} more channels (use --json for all)")
    if no_scale:
        k, unit = scale_count(r)
        out.append(f"{NO_VALUE} scale, zero_point: per block, not per channel: {printable(r.label)} has {k:,} "
                   f"{unit} scales for {n:,} channel{'s' if n != 1 else ''} (the scale line above lists the first "
                   f"8; --json has all)")
    elif no_zp:
        out.append(f"{NO_VALUE} zero_point: {printable(r.label)} has no zero-point")
    return "\n".join(out)


def cmd_analyze(args, stdout) -> int:
    data, names, example_spec, name = _load(args)
    spec = spec_from_args(args, example_spec)
    extra = extra_schemes(args.with_schemes)
    if (args.compare or extra) and (args.imatrix or args.imatrix_entry):
        raise UsageError("--imatrix weights one GGUF scheme (--preset); it does not combine with --compare or --with")
    if args.imatrix_entry and not args.imatrix:
        raise UsageError("--imatrix-entry picks an entry of --imatrix FILE; give the file too")
    if args.compare or extra:
        group = [args.group_size]
        if spec.kind != "int" or spec.name:
            # Compare a fixed format with the integer schemes of the same bit width.
            bits = min(16, max(2, math.ceil(spec.element.bits)))
            specs = report.standard_schemes(QuantSpec(fmt=IntFormat(bits), mapping="symmetric"),
                                            group, channel_axis=args.channel_axis) + [spec]
        else:
            specs = report.standard_schemes(spec, group, channel_axis=args.channel_axis)
        if spec.kind == "int" and isinstance(spec.range, CustomRange) and np.ndim(spec.range.lo) > 0:
            specs = specs[1:]  # a per-channel custom range has no per-tensor meaning
        specs += [s for s in extra if s not in specs]
        cmp = report.compare(data, specs, args.channel_axis, names)
        if args.json:
            stdout.write(report.to_json(cmp) + "\n")
        else:
            rows = [{"label": row["label"], "scale": scale_cell(r), **row}
                    for row, r in zip(cmp.summary_rows(), cmp.results)]
            stdout.write(_table(rows, ("label", "scale") + report.SUMMARY_FIELDS[1:]) + "\n" +
                         printable(cmp.advice()) + "\n")
        results = list(cmp.results)
    else:
        r = analyze(data, spec, args.channel_axis, names, imatrix=_imatrix(args))
        stdout.write((report.to_json(r) if args.json else render_result(r, name)) + "\n")
        results = [r]
    if args.save:
        r = results[-1] if not args.compare else results[1]
        with open(args.save, "wb") as fh:
            np.savez(fh, q=r.q, dequantized=r.dequantized, scale=np.asarray(r.scale), zero_point=np.asarray(r.zero_point))
    return 0


def cmd_list(args, stdout) -> int:
    infos = list_tensors(args.file)
    rows = [{"name": i.name, "shape": "x".join(map(str, i.shape)) or "scalar", "dtype": i.dtype} for i in infos]
    stdout.write((_table(rows, ["name", "shape", "dtype"]) if rows else "no tensors") + "\n")
    return 0


def main(argv: Sequence[str] | None = None, stdout=None, stderr=None) -> int:
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        args = build_parser().parse_args(argv)
        if args.command in ("scan", "diff", "plan"):
            return run_scan_command(args, stdout, stderr)
        return cmd_analyze(args, stdout) if args.command == "analyze" else cmd_list(args, stdout)
    except (UsageError, ValueError, OSError) as e:
        msg = " ".join(printable(e).split()) or type(e).__name__
        stderr.write(f"quantcore: error: {msg}\n")
        return 2
    except MemoryError:
        stderr.write("quantcore: error: not enough memory for this tensor\n")
        return 2
    except KeyboardInterrupt:  # a scan's finished rows are already flushed to its --out folder
        stderr.write("quantcore: interrupted (a scan with --out resumes when rerun)\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
