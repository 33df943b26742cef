"""Whole-checkpoint scan: every tensor x every scheme, streamed in row chunks, serial / processes / Dask.

The pieces, each usable on its own (the CLI and an app drive them the same way):

1. :func:`plan_scan` -- which tensors to scan and why the others are skipped (not floating, 1-D
   unless ``include_1d``, ``filter`` regex, already done in a resumed scan), and how each tensor is cut:
   into *segments* of whole axis-0 slices (about :data:`SEGMENT_ELEMENTS` elements, from the shape
   alone) grouped into *chunks* that fit the chunk budget. Returns frozen :class:`TensorTask` records.
2. :func:`run_unit` -- the work of one chunk (a top-level, picklable function: a worker process or a
   Dask worker opens the file itself and reads only its own byte range). It measures every scheme on
   every segment of the chunk (:func:`quantcore.measure.measure`) and returns per-segment
   :class:`~quantcore.measure.Stats`.
3. :func:`iter_scan` -- a generator that schedules the units on an executor (inline, a
   ``ProcessPoolExecutor``, or a ``dask.distributed.Client``), combines the segments of a tensor with
   :meth:`Stats.combine` (``math.fsum``: correctly rounded, so the totals do not depend on the chunk
   size, the order in which units finish, or where they ran) and yields one :class:`TensorReport`
   (frozen rows, one per scheme) per finished tensor. Closing the generator cancels pending work.
4. :class:`ResultStore` -- results as JSON Lines + CSV in an output folder, appended and flushed per
   tensor; a rerun skips (file identity, tensor, scheme) keys already there; :func:`summarize` builds
   the model summary (:class:`ScanSummary`).

Schemes whose scale depends on the whole tensor (per-tensor integers, fp8 per-tensor, NVFP4's
tensor scale) get the whole tensor's min/max first: a range pass over the chunks when the tensor has
more than one. A scheme whose blocks cross axis-0 slices (``nf4_dq``) runs only on tensors that fit in
one chunk (otherwise it is skipped for that tensor, with the reason).

Shipped tensors (``references``): a quantized GGUF compared with the scanned original. Each matched
tensor's stored bytes are dequantized (:func:`quantcore.io.gguf.dequantize_blocks`) and measured
against the original rows, with llama's RoPE row permutation undone for ``attn_q``/``attn_k``
(:func:`quantcore.names.unpermute_rows`; segments then hold whole heads).
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .io import InputError
from .io.checkpoint import Checkpoint, TensorEntry, read_rows
from .measure import Stats, TensorRange, compare_stats, measure, sum_of_squares
from .names import layer_index, match_names, permute_heads, rope_permuted, tensor_role, unpermute_rows
from .schemes import ScanScheme, parse_schemes, scheme_memory

SEGMENT_ELEMENTS = 1 << 20      # target elements per segment (whole axis-0 slices); fixes the summation order
DEFAULT_CHUNK_MB = 64           # float32 MiB of one chunk (the unit of reading and of parallel work)


# --- plan -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shipped:
    """A shipped (quantized) tensor compared with the original: its label, entry, and the number of
    heads per segment-run to unpermute (0: stored unpermuted)."""

    label: str
    entry: TensorEntry
    head_rows: int = 0          # rows per head when llama's RoPE permutation must be undone


@dataclass(frozen=True)
class TensorTask:
    """One tensor to scan: which schemes, which shipped counterparts, and how it is cut."""

    index: int                  # position in the checkpoint (output order)
    entry: TensorEntry
    schemes: tuple[ScanScheme, ...]
    shipped: tuple[Shipped, ...]
    segment_rows: int
    chunk_rows: int
    role: str
    layer: int | None

    @property
    def needs_range(self) -> bool:
        return any(s.needs_tensor_range for s in self.schemes) and self.chunk_rows < self.entry.n_rows

    def chunks(self) -> list[tuple[int, int]]:
        n = self.entry.n_rows
        return [(r, min(r + self.chunk_rows, n)) for r in range(0, n, self.chunk_rows)]


@dataclass(frozen=True)
class Skipped:
    file: str
    tensor: str
    reason: str
    scheme: str = ""


@dataclass(frozen=True)
class ScanPlan:
    tasks: tuple[TensorTask, ...]
    skipped: tuple[Skipped, ...]
    schemes: tuple[ScanScheme, ...]

    @property
    def total_elements(self) -> int:
        return sum(t.entry.n_elements for t in self.tasks)


@dataclass(frozen=True)
class Reference:
    """A shipped checkpoint to compare with the scanned original (``label`` names its rows)."""

    label: str
    checkpoint: Checkpoint


def shipped_key(ref: Reference, entry: TensorEntry) -> str:
    return f"shipped:{ref.label}|{entry.file.key}"


def _segment_rows(entry: TensorEntry, head_rows: int) -> int:
    row = max(1, entry.n_elements // max(1, entry.n_rows))
    seg = max(1, SEGMENT_ELEMENTS // row)
    if head_rows:
        seg = -(-seg // head_rows) * head_rows
    return min(seg, entry.n_rows)


def plan_scan(ckpt: Checkpoint, schemes: Sequence[ScanScheme] | None = None, *, include_1d: bool = False,
              name_filter: str | None = None, chunk_mb: float = DEFAULT_CHUNK_MB,
              references: Sequence[Reference] = (), done: Iterable[tuple[str, str, str]] = ()) -> ScanPlan:
    """Decide what to scan. ``name_filter``: a regex (``re.search``) tensor names must match; ``done``
    holds (file key, tensor, scheme key) triples already complete (a resumed scan)."""
    schemes = tuple(schemes) if schemes is not None else parse_schemes(None)
    if chunk_mb <= 0:
        raise ValueError(f"chunk budget must be positive, got {chunk_mb} MiB")
    try:
        rx = re.compile(name_filter) if name_filter else None
    except re.error as e:
        raise ValueError(f"--filter is not a valid regular expression: {e}") from None
    done = set(done)
    names = [t.name for t in ckpt.tensors]
    ref_maps = [(ref, match_names(names, [t.name for t in ref.checkpoint.tensors]), ref.checkpoint.by_name())
                for ref in references]
    budget_elems = int(chunk_mb * (1 << 20)) // (4 * (1 + len(references)))
    tasks, skipped = [], []
    for i, e in enumerate(ckpt.tensors):
        def skip(reason: str, scheme: str = "") -> None:
            skipped.append(Skipped(e.file.name, e.name, reason, scheme))
        if rx is not None and not rx.search(e.name):
            skip("does not match --filter")
            continue
        if not e.floating:
            skip(f"not a floating-point tensor ({e.dtype})")
            continue
        if not e.loadable:
            skip(f"{e.dtype} data cannot be decoded by this version of quantcore.io")
            continue
        if e.n_elements == 0:
            skip("empty")
            continue
        if len(e.shape) < 2 and not include_1d:
            skip("1-D (norm or bias; --include-1d scans it)")
            continue
        shipped: list[Shipped] = []
        for ref, mapping, by_name in ref_maps:
            other = mapping.get(e.name)
            if other is None:
                skip(f"no counterpart in {ref.label}", f"shipped:{ref.label}")
                continue
            o = by_name[other]
            if o.shape != e.shape:
                skip(f"shape {o.shape} in {ref.label} differs from {e.shape}", f"shipped:{ref.label}")
                continue
            if not (o.loadable and o.floating):
                skip(f"{o.dtype} in {ref.label} cannot be decoded", f"shipped:{ref.label}")
                continue
            head_rows = 0
            if other != e.name and rope_permuted(e.name, ref.checkpoint.arch) and len(e.shape) >= 1:
                n_head = ref.checkpoint.metadata.get("attention.head_count")
                if not n_head:
                    skip(f"{ref.label} has no head count to undo llama's q/k permutation", f"shipped:{ref.label}")
                    continue
                heads = permute_heads(n_head, ref.checkpoint.metadata.get("attention.head_count_kv"),
                                      e.name.endswith(("k_proj.weight", "k_proj.bias")))
                if e.shape[0] % (2 * heads):
                    skip(f"{e.shape[0]} rows do not split into {heads} heads", f"shipped:{ref.label}")
                    continue
                head_rows = e.shape[0] // heads
            if (e.file.key, e.name, shipped_key(ref, o)) not in done:
                shipped.append(Shipped(ref.label, o, head_rows))
        todo = tuple(s for s in schemes if (e.file.key, e.name, s.name) not in done)
        if not todo and not shipped:
            skipped.append(Skipped(e.file.name, e.name, "already in the output folder"))
            continue
        head_rows = max((s.head_rows for s in shipped), default=0)
        seg = _segment_rows(e, head_rows)
        seg_elems = seg * max(1, e.n_elements // e.n_rows)
        chunk = seg * max(1, budget_elems // max(1, seg_elems))
        chunk = min(chunk, e.n_rows)
        whole = chunk >= e.n_rows
        kept = []
        for s in todo:
            if not whole and not s.splits_on_axis0:
                skip(f"{s.name} needs the whole tensor ({4 * e.n_elements / 2**20:.0f} MiB as float32) in one "
                     f"piece, over the chunk budget (--chunk-mb {chunk_mb:g})", s.name)
                continue
            kept.append(s)
        if not kept and not shipped:
            continue
        tasks.append(TensorTask(i, e, tuple(kept), tuple(shipped), seg, chunk, tensor_role(e.name),
                                layer_index(e.name)))
    return ScanPlan(tuple(tasks), tuple(skipped), schemes)


# --- one unit of work -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Unit:
    """Rows ``[r0, r1)`` of one task; ``kind`` "range" (min/max only) or "measure"."""

    task: TensorTask
    r0: int
    r1: int
    kind: str = "measure"
    rng: TensorRange | None = None


@dataclass(frozen=True)
class UnitResult:
    task_index: int
    r0: int
    r1: int
    kind: str
    rng: TensorRange
    stats: dict[str, tuple[Stats, ...]]      # scheme key -> per-segment stats
    seconds: float
    elements: int
    peak_rss_mib: float = 0.0                # the worker process's peak RSS so far (0 where unknown)


def _own_peak_rss_mib() -> float:
    """Peak RSS of this process (MiB): Linux VmHWM, else ru_maxrss, else 0.

    VmHWM first: ru_maxrss survives exec, so a process started by a large parent reports the parent's
    size at fork time (measured: 693 MiB for a 39 MiB scan started from a benchmark holding arrays).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # not on this platform (Pyodide, Windows)
        return 0.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _finite_range(x: np.ndarray, t: TensorTask, r0: int, r1: int) -> TensorRange:
    rng = TensorRange.of(x)
    if not (math.isfinite(rng.min) and math.isfinite(rng.max)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise InputError(f"{bad:,} non-finite value(s) (NaN/inf) in rows {r0}..{r1 - 1}", source=t.entry.file.name,
                         where=f"tensor {t.entry.name!r}")
    return rng


def run_unit(u: Unit) -> UnitResult:
    """Read rows ``[u.r0, u.r1)`` of the tensor and measure every scheme on every segment (worker side)."""
    t0 = time.perf_counter()
    t = u.task
    x = read_rows(t.entry, u.r0, u.r1)
    rng = _finite_range(x, t, u.r0, u.r1)
    stats: dict[str, tuple[Stats, ...]] = {}
    if u.kind == "range":
        return UnitResult(t.index, u.r0, u.r1, u.kind, rng, stats, time.perf_counter() - t0, 0)
    whole_rng = u.rng if u.rng is not None else rng
    seg = t.segment_rows
    starts = range(0, u.r1 - u.r0, seg) if x.ndim >= 2 else range(0, 1)
    parts = [x[s:s + seg] if x.ndim >= 2 else x for s in starts]
    where = f"tensor {t.entry.name!r}"
    # One sum of squares per segment for every preset/float scheme (the same value whatever the scheme set).
    shared = any(s.kind in ("preset", "float") for s in t.schemes)
    ssx = [sum_of_squares(p) for p in parts] if shared else [None] * len(parts)
    for s in t.schemes:
        try:
            stats[s.name] = tuple(measure(p, s, whole_rng if s.needs_tensor_range else None, q)
                                  for p, q in zip(parts, ssx))
        except ValueError as e:
            if isinstance(e, InputError):
                raise
            raise InputError(f"{s.name}: {e}", source=t.entry.file.name, where=where) from None
    for sh in t.shipped:
        xs = read_rows(sh.entry, u.r0, u.r1)
        if sh.head_rows:
            xs = unpermute_rows(xs, (u.r1 - u.r0) // sh.head_rows)
        sparts = [xs[s:s + seg] if xs.ndim >= 2 else xs for s in starts]
        stats[f"shipped:{sh.label}"] = tuple(compare_stats(p, q) for p, q in zip(parts, sparts))
    return UnitResult(t.index, u.r0, u.r1, u.kind, rng, stats, time.perf_counter() - t0, x.size, _own_peak_rss_mib())


# --- rows and reports -----------------------------------------------------------------------------

ROW_FIELDS = ("file", "tensor", "shape", "dtype", "stored_bpw", "role", "layer", "scheme", "ggml_type", "n",
              "rmse", "rel_rmse", "sqnr_db", "max_abs", "mae", "clip_rate", "collapsed_rate", "bytes",
              "bits_per_weight", "sse", "ssx", "sae", "clipped_low", "clipped_high", "collapsed", "file_key",
              "scheme_key")


@dataclass(frozen=True)
class ScanRow:
    """One tensor x one scheme (or one shipped counterpart). ``scheme_key`` is what resuming keys on."""

    file: str
    tensor: str
    shape: str
    dtype: str
    stored_bpw: float
    role: str
    layer: int | None
    scheme: str
    ggml_type: str
    n: int
    rmse: float
    rel_rmse: float
    sqnr_db: float
    max_abs: float
    mae: float
    clip_rate: float
    collapsed_rate: float
    bytes: int
    bits_per_weight: float
    sse: float
    ssx: float
    sae: float
    clipped_low: int
    clipped_high: int
    collapsed: int
    file_key: str
    scheme_key: str

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "ScanRow":
        return ScanRow(**{k: d[k] for k in ROW_FIELDS})

    @property
    def stats(self) -> Stats:
        return Stats(self.n, self.sse, self.sae, self.max_abs, self.ssx, self.clipped_low, self.clipped_high,
                     self.collapsed)


def make_row(e: TensorEntry, scheme: str, scheme_key: str, ggml_type: str, st: Stats, nbytes: int,
             bpw: float) -> ScanRow:
    m = st.metrics()
    layer = layer_index(e.name)
    return ScanRow(e.file.name, e.name, "x".join(map(str, e.shape)) or "scalar", e.dtype,
                   e.stored_bits_per_weight, tensor_role(e.name), layer, scheme, ggml_type, st.n, m["rmse"],
                   m["rel_rmse"], m["sqnr_db"], st.max_abs, m["mae"], m["clip_rate"], m["collapsed_rate"],
                   int(nbytes), float(bpw), st.sse, st.ssx, st.sae, st.clipped_low, st.clipped_high,
                   st.collapsed, e.file.key, scheme_key)


@dataclass(frozen=True)
class TensorReport:
    """A finished tensor: its rows (one per scheme and shipped counterpart), and scan progress."""

    task: TensorTask
    rows: tuple[ScanRow, ...]
    done_elements: int
    total_elements: int
    error: str | None = None      # set instead of rows when the tensor failed (keep_going)
    worker_peak_rss_mib: float = 0.0   # largest peak RSS reported by any worker so far


def _rows_for(task: TensorTask, stats: dict[str, list[Stats]]) -> tuple[ScanRow, ...]:
    e = task.entry
    rows = []
    for s in task.schemes:
        mem = scheme_memory(s, e.shape)
        rows.append(make_row(e, s.name, s.name, s.ggml_type or "", Stats.combine(stats[s.name]), mem.total_bytes,
                             mem.bits_per_weight))
    for sh in task.shipped:
        o = sh.entry
        key = f"shipped:{sh.label}"
        rows.append(make_row(e, key, f"{key}|{o.file.key}", o.dtype, Stats.combine(stats[key]), o.nbytes,
                             o.stored_bits_per_weight))
    return tuple(rows)


# --- executors ------------------------------------------------------------------------------------

class InlineExecutor:
    """Runs each unit when submitted (serial scan); the same interface as the pool executors."""

    workers = 1

    def submit(self, fn, arg):
        from concurrent.futures import Future
        f: Future = Future()
        try:
            f.set_result(fn(arg))
        except BaseException as e:  # delivered through the future, as a pool would
            f.set_exception(e)
        return f

    def wait_any(self, futures):
        return set(futures)

    def shutdown(self) -> None:
        pass


class PoolExecutor:
    """``concurrent.futures.ProcessPoolExecutor`` with ``jobs`` worker processes."""

    def __init__(self, jobs: int):
        from concurrent.futures import ProcessPoolExecutor
        import multiprocessing as mp
        self.workers = jobs
        # forkserver: workers start from a clean interpreter (no copy of the parent's buffers or threads),
        # forked from a server that has imported quantcore.scan once.
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["quantcore.scan"])
        self._pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx)

    def submit(self, fn, arg):
        return self._pool.submit(fn, arg)

    def wait_any(self, futures):
        from concurrent.futures import FIRST_COMPLETED, wait
        return wait(futures, return_when=FIRST_COMPLETED).done

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor:
    """A ``dask.distributed`` client: one task per unit, each worker reading its own byte range.

    ``address``: a scheduler address (``tcp://host:8786``) or an existing ``Client``. dask is imported
    here only (optional extra ``scan``); workers need quantcore importable and the checkpoint at the
    same path (a shared filesystem) or an fsspec URL.
    """

    def __init__(self, address):
        try:
            from distributed import Client
        except ImportError:
            raise ValueError("--dask needs dask.distributed: pip install 'quantcore[scan]'") from None
        self._own = not isinstance(address, Client)
        self.client = Client(address) if self._own else address
        info = self.client.scheduler_info()
        self.workers = max(1, sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()))

    def submit(self, fn, arg):
        return self.client.submit(fn, arg, pure=False)

    def wait_any(self, futures):
        from distributed import wait
        return set(wait(list(futures), return_when="FIRST_COMPLETED").done)

    def shutdown(self) -> None:
        if self._own:
            self.client.close()


def make_executor(jobs: int = 1, dask: str | None = None):
    if dask:
        return DaskExecutor(dask)
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    return InlineExecutor() if jobs == 1 else PoolExecutor(jobs)


# --- the scan loop --------------------------------------------------------------------------------

def iter_scan(plan: ScanPlan, executor=None, *, keep_going: bool = False,
              on_progress: Callable[[int, int], None] | None = None) -> Iterator[TensorReport]:
    """Run ``plan`` and yield a :class:`TensorReport` per finished tensor (roughly in checkpoint order).

    At most ``2 * executor.workers`` units are in flight; closing the generator (or an error) cancels
    the rest. A failing tensor raises its InputError, or with ``keep_going`` is reported with
    ``error`` set and the scan goes on. ``on_progress(done_elements, total_elements)`` after each unit.
    """
    own = executor is None
    executor = executor or InlineExecutor()
    total = plan.total_elements
    done_elements = 0
    worker_peak = 0.0
    window = max(2, 2 * getattr(executor, "workers", 1))
    pending = deque(plan.tasks)
    ready: deque[Unit] = deque()
    inflight: dict = {}
    state: dict[int, dict] = {}

    def start(task: TensorTask) -> None:
        chunks = task.chunks()
        state[task.index] = {"task": task, "left": len(chunks), "ranges": [], "stats": {}, "failed": False}
        kind = "range" if task.needs_range else "measure"
        ready.extend(Unit(task, r0, r1, kind) for r0, r1 in chunks)

    try:
        while pending or ready or inflight:
            while len(inflight) < window and (ready or pending):
                if not ready:
                    start(pending.popleft())
                    continue
                u = ready.popleft()
                if state[u.task.index]["failed"]:
                    continue
                inflight[executor.submit(run_unit, u)] = u
            if not inflight:
                continue
            for f in executor.wait_any(list(inflight)):
                u = inflight.pop(f)
                st = state.get(u.task.index)
                try:
                    res: UnitResult = f.result()
                except InputError as e:
                    if not keep_going:
                        raise
                    if st is not None and not st["failed"]:
                        st["failed"] = True
                        done_elements += u.task.entry.n_elements
                        yield TensorReport(u.task, (), done_elements, total, str(e))
                    continue
                if st is None or st["failed"]:
                    continue
                st["left"] -= 1
                if u.kind == "range":
                    st["ranges"].append(res.rng)
                    if st["left"] == 0:
                        rng = TensorRange.combine(st["ranges"])
                        chunks = u.task.chunks()
                        st["left"] = len(chunks)
                        ready.extendleft(reversed([Unit(u.task, r0, r1, "measure", rng) for r0, r1 in chunks]))
                    continue
                worker_peak = max(worker_peak, res.peak_rss_mib)
                for k, v in res.stats.items():
                    st["stats"].setdefault(k, []).extend(v)
                done_elements += res.elements
                if on_progress is not None:
                    on_progress(done_elements, total)
                if st["left"] == 0:
                    del state[u.task.index]
                    yield TensorReport(u.task, _rows_for(u.task, st["stats"]), done_elements, total,
                                       worker_peak_rss_mib=worker_peak)
    finally:
        for f in inflight:
            f.cancel()
        if own:
            executor.shutdown()


# --- results folder -------------------------------------------------------------------------------

def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    return str(v)


def _json_value(v):
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def _from_json_value(k: str, v):
    if isinstance(v, str) and k not in ("file", "tensor", "shape", "dtype", "role", "scheme", "ggml_type",
                                        "file_key", "scheme_key"):
        return float(v)
    return v


class ResultStore:
    """``results.jsonl`` (the record, one row per line, flushed per tensor), ``results.csv`` (the
    same rows; rewritten in checkpoint order by :meth:`finalize`), ``summary.json``/``summary.txt``.

    A trailing partial line left by an interrupted run is dropped on open.
    """

    def __init__(self, out_dir: str):
        self.dir = out_dir
        os.makedirs(out_dir, exist_ok=True)
        self.jsonl = os.path.join(out_dir, "results.jsonl")
        self.csv = os.path.join(out_dir, "results.csv")
        self.rows: list[ScanRow] = self._load()
        self._jf = open(self.jsonl, "a", encoding="utf-8")
        new_csv = not os.path.exists(self.csv) or os.path.getsize(self.csv) == 0
        self._cf = open(self.csv, "a", encoding="utf-8", newline="")
        self._cw = csv.writer(self._cf, lineterminator="\n")
        if new_csv:
            self._cw.writerow(ROW_FIELDS)
            self._cf.flush()

    def _load(self) -> list[ScanRow]:
        if not os.path.exists(self.jsonl):
            return []
        with open(self.jsonl, "rb") as f:
            data = f.read()
        keep = data[: data.rfind(b"\n") + 1]
        if len(keep) != len(data):  # an interrupted write: drop the partial last line
            with open(self.jsonl, "wb") as f:
                f.write(keep)
        rows = []
        for i, line in enumerate(keep.decode("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                rows.append(ScanRow.from_dict({k: _from_json_value(k, v) for k, v in d.items()}))
            except (ValueError, KeyError, TypeError) as e:
                raise InputError(f"line {i} is not a scan row ({type(e).__name__}); use a new --out folder",
                                 source=self.jsonl) from None
        return rows

    def done_keys(self) -> set[tuple[str, str, str]]:
        return {(r.file_key, r.tensor, r.scheme_key) for r in self.rows}

    def append(self, rows: Sequence[ScanRow]) -> None:
        for r in rows:
            self._jf.write(json.dumps({k: _json_value(v) for k, v in r.to_dict().items()}, allow_nan=False) + "\n")
            self._cw.writerow([_cell(getattr(r, k)) for k in ROW_FIELDS])
        self._jf.flush()
        self._cf.flush()
        self.rows.extend(rows)

    def current_rows(self, ckpt: Checkpoint, schemes: Sequence[str] = ()) -> list[ScanRow]:
        """Rows of this checkpoint's files (current identity), one per key, in checkpoint order and
        then scheme order (``schemes`` first, others alphabetically)."""
        keys = {f.key for f in ckpt.files}
        order = {t.name: i for i, t in enumerate(ckpt.tensors)}
        sorder = {s: i for i, s in enumerate(schemes)}
        latest: dict[tuple, ScanRow] = {}
        for r in self.rows:
            if r.file_key in keys:
                latest[(r.file_key, r.tensor, r.scheme_key)] = r
        return sorted(latest.values(), key=lambda r: (order.get(r.tensor, len(order)), r.tensor,
                                                     sorder.get(r.scheme, len(sorder)), r.scheme_key))

    def finalize(self, rows: Sequence[ScanRow], summary: "ScanSummary | None" = None) -> None:
        """Rewrite ``results.csv`` with ``rows`` (atomic replace) and write the summary files."""
        self._cf.close()
        tmp = self.csv + ".tmp"
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(ROW_FIELDS)
            for r in rows:
                w.writerow([_cell(getattr(r, k)) for k in ROW_FIELDS])
        os.replace(tmp, self.csv)
        self._cf = open(self.csv, "a", encoding="utf-8", newline="")
        self._cw = csv.writer(self._cf, lineterminator="\n")
        if summary is not None:
            with open(os.path.join(self.dir, "summary.json"), "w", encoding="utf-8") as f:
                json.dump(_jsonable(summary.to_dict()), f, indent=1, allow_nan=False)
                f.write("\n")
            with open(os.path.join(self.dir, "summary.txt"), "w", encoding="utf-8") as f:
                f.write(render_summary(summary) + "\n")

    def close(self) -> None:
        self._jf.close()
        self._cf.close()


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    return _json_value(o)


# --- summary --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SchemeTotal:
    """One scheme over every scanned tensor: bytes, bits/weight, and size-weighted error."""

    scheme: str
    tensors: int
    n: int
    bytes: int
    bits_per_weight: float
    source_bytes: int            # the same tensors as stored in the checkpoint
    rel_rmse: float              # sqrt(sum sse / sum ssx): relative RMSE of all weights together
    sqnr_db: float               # 10 log10(sum ssx / sum sse)
    mean_rel_mse: float          # n-weighted mean over tensors of sse / ssx


@dataclass(frozen=True)
class GroupError:
    """Error of one scheme over a group of tensors (a layer or a role): sqrt(sum sse / sum ssx)."""

    scheme: str
    group: str
    tensors: int
    n: int
    rel_rmse: float


@dataclass(frozen=True)
class ScanSummary:
    checkpoint: str
    tensors_scanned: int
    tensors_skipped: int
    skipped_reasons: dict        # reason -> tensors skipped entirely
    scheme_skips: dict           # "scheme: reason" -> tensors on which only that scheme was skipped
    totals: tuple[SchemeTotal, ...]
    worst: tuple[ScanRow, ...]
    by_layer: tuple[GroupError, ...]
    by_role: tuple[GroupError, ...]
    peak_rss_mib: dict = field(default_factory=dict)
    seconds: float = 0.0
    weights_per_second: float = 0.0
    skipped: tuple[Skipped, ...] = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["worst"] = [r.to_dict() for r in self.worst]
        return d


def _rel(sse: float, ssx: float) -> float:
    return math.sqrt(sse / ssx) if ssx > 0 else (0.0 if sse == 0 else math.inf)


def summarize(rows: Sequence[ScanRow], skipped: Sequence[Skipped] = (), checkpoint: str = "", top: int = 10,
              peak_rss_mib: dict | None = None, seconds: float = 0.0, weights: int = 0) -> ScanSummary:
    """Totals per scheme, the ``top`` most damaged tensors per scheme (by relative RMSE), and the
    relative RMSE by layer index and by role (``sqrt(sum sse / sum ssx)`` over the group's tensors)."""
    by_scheme: dict[str, list[ScanRow]] = {}
    for r in rows:
        by_scheme.setdefault(r.scheme, []).append(r)
    totals, worst, by_layer, by_role = [], [], [], []
    for s, rs in by_scheme.items():
        n = sum(r.n for r in rs)
        sse, ssx = math.fsum(r.sse for r in rs), math.fsum(r.ssx for r in rs)
        nbytes = sum(r.bytes for r in rs)
        src = sum(round(r.stored_bpw * r.n / 8) for r in rs)
        mean_rel = math.fsum(r.n * (r.sse / r.ssx if r.ssx > 0 else 0.0) for r in rs) / n if n else math.nan
        totals.append(SchemeTotal(s, len(rs), n, nbytes, 8.0 * nbytes / n if n else math.nan, src, _rel(sse, ssx),
                                  float(10 * math.log10(ssx / sse)) if sse > 0 and ssx > 0 else math.inf, mean_rel))
        worst.extend(sorted(rs, key=lambda r: -r.rel_rmse if math.isfinite(r.rel_rmse) else -math.inf)[:top])
        for key, out in ((lambda r: "-" if r.layer is None else str(r.layer), by_layer), (lambda r: r.role, by_role)):
            groups: dict[str, list[ScanRow]] = {}
            for r in rs:
                groups.setdefault(key(r), []).append(r)
            order = sorted(groups, key=lambda g: (not g.isdigit(), int(g) if g.isdigit() else 0, g))
            for g in order:
                gr = groups[g]
                out.append(GroupError(s, g, len(gr), sum(r.n for r in gr),
                                      _rel(math.fsum(r.sse for r in gr), math.fsum(r.ssx for r in gr))))
    reasons: dict[str, int] = {}
    scheme_skips: dict[str, int] = {}
    for sk in skipped:
        if sk.scheme:
            k = f"{sk.scheme}: {sk.reason}"
            scheme_skips[k] = scheme_skips.get(k, 0) + 1
        else:
            reasons[sk.reason] = reasons.get(sk.reason, 0) + 1
    n_tensors = len({(r.file_key, r.tensor) for r in rows})
    return ScanSummary(checkpoint, n_tensors, len({(s.file, s.tensor) for s in skipped if not s.scheme}), reasons,
                       scheme_skips, tuple(totals), tuple(worst), tuple(by_layer), tuple(by_role),
                       dict(peak_rss_mib or {}), seconds, weights / seconds if seconds > 0 else 0.0, tuple(skipped))


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _mib(b: float) -> str:
    return f"{b / 2**20:,.1f}"


def render_summary(s: ScanSummary, top: int = 10) -> str:
    """The summary as plain text (what ``quantcore scan`` prints)."""
    out = [f"{s.checkpoint}: {s.tensors_scanned} tensors scanned, {s.tensors_skipped} skipped"]
    for reason, k in sorted(s.skipped_reasons.items(), key=lambda kv: -kv[1]):
        out.append(f"  skipped {k}: {reason}")
    for reason, k in sorted(s.scheme_skips.items(), key=lambda kv: -kv[1]):
        out.append(f"  on {k} tensor(s) only {reason}")
    if s.totals:
        rows = [["scheme", "tensors", "MiB", "bits/weight", "vs source", "rel RMSE", "SQNR dB"]]
        for t in s.totals:
            rows.append([t.scheme, str(t.tensors), _mib(t.bytes), f"{t.bits_per_weight:.3f}",
                         f"{100 * t.bytes / t.source_bytes:.1f} %" if t.source_bytes else "-",
                         f"{t.rel_rmse:.4g}", f"{t.sqnr_db:.2f}"])
        src = s.totals[0]
        out += ["", f"source: {_mib(src.source_bytes)} MiB for these tensors "
                    f"({8 * src.source_bytes / src.n:.2f} bits/weight)", _table(rows)]
    for t in s.totals:
        w = [r for r in s.worst if r.scheme == t.scheme][:top]
        if not w:
            continue
        out += ["", f"most damaged under {t.scheme} (relative RMSE):"]
        out.append(_table([["tensor", "role", "shape", "rel RMSE", "SQNR dB", "max err", "clip %"]] +
                          [[r.tensor, r.role, r.shape, f"{r.rel_rmse:.4g}", f"{r.sqnr_db:.2f}", f"{r.max_abs:.4g}",
                            f"{100 * r.clip_rate:.3f}"] for r in w]))
    for title, groups in (("by role", s.by_role), ("by layer", s.by_layer)):
        if not groups:
            continue
        schemes = [t.scheme for t in s.totals]
        keys = list(dict.fromkeys(g.group for g in groups))
        val = {(g.scheme, g.group): g.rel_rmse for g in groups}
        rows = [[title.split()[1]] + schemes]
        for k in keys:
            rows.append([k] + [f"{val[(sc, k)]:.4g}" if (sc, k) in val else "" for sc in schemes])
        out += ["", f"relative RMSE {title}:", _table(rows)]
    if s.seconds:
        out += ["", f"time {s.seconds:.1f} s, {s.weights_per_second / 1e6:.1f} M weights/s"]
    if s.peak_rss_mib:
        out.append("peak RSS " + ", ".join(f"{k} {v:.0f} MiB" for k, v in s.peak_rss_mib.items()))
    return "\n".join(out)


def peak_rss_mib(worker_peak_mib: float = 0.0) -> dict[str, float]:
    """Peak resident memory (MiB) of this process, and the largest a worker reported."""
    out = {"main": _own_peak_rss_mib()}
    if worker_peak_mib:
        out["largest worker"] = worker_peak_mib
    return out


# --- convenience ----------------------------------------------------------------------------------

def scan(ckpt: Checkpoint, schemes: Sequence[ScanScheme] | None = None, *, jobs: int = 1, dask=None,
         chunk_mb: float = DEFAULT_CHUNK_MB, include_1d: bool = False, name_filter: str | None = None,
         references: Sequence[Reference] = ()) -> tuple[list[ScanRow], ScanPlan]:
    """Scan in memory (no output folder): every row, in checkpoint then scheme order, and the plan."""
    plan = plan_scan(ckpt, schemes, include_1d=include_1d, name_filter=name_filter, chunk_mb=chunk_mb,
                     references=references)
    ex = make_executor(jobs, dask)
    try:
        reports = list(iter_scan(plan, ex))
    finally:
        ex.shutdown()
    order = {s.name: i for i, s in enumerate(plan.schemes)}
    rows = [r for rep in reports for r in rep.rows]
    by_task = {rep.task.entry.name: rep.task.index for rep in reports}
    rows.sort(key=lambda r: (by_task[r.tensor], order.get(r.scheme, len(order)), r.scheme))
    return rows, plan
