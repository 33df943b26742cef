"""Whole-checkpoint scan: every tensor x every scheme, streamed in row chunks, serial / processes / Dask.

The pieces, each usable on its own (the CLI and an app drive them the same way):

1. :func:`plan_scan` -- which tensors to scan and why the others are skipped (not floating, 1-D
   unless ``include_1d``, ``name_filter`` regex, already done in a resumed scan), and how each tensor is cut:
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
4. :mod:`quantcore.scanresults` (re-exported here): :class:`ResultStore`, results as JSON Lines + CSV
   in an output folder, appended and flushed per tensor, a rerun skipping (file identity, tensor,
   scheme) keys already there; :func:`summarize`, the model summary (:class:`ScanSummary`).

Segments fix the summation order. Their size comes from the shape alone, except that with a shipped
llama GGUF the ``q``/``k`` segments are rounded to whole heads (so those two tensors' sums may differ
in the last bits between a scan with and one without ``references``).

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

import math
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .io import InputError
from .io.checkpoint import Checkpoint, TensorEntry, read_rows
from .measure import Stats, TensorRange, compare_stats, measure, sum_of_squares
from .names import layer_index, match_names, permute_heads, rope_permuted, tensor_role, unpermute_rows
from .schemes import ScanScheme, parse_schemes, scheme_memory
from .scanresults import (ROW_FIELDS, ResultStore, ScanRow, ScanSummary, Skipped, _own_peak_rss_mib, make_row,
                          peak_rss_mib, render_summary, summarize)

__all__ = ["SEGMENT_ELEMENTS", "DEFAULT_CHUNK_MB", "Shipped", "TensorTask", "Skipped", "ScanPlan", "Reference",
           "plan_scan", "Unit", "UnitResult", "run_unit", "measure_unit", "SteppedScan", "TensorReport",
           "InlineExecutor", "PoolExecutor",
           "DaskExecutor", "make_executor", "iter_scan", "scan", "ROW_FIELDS", "ScanRow", "make_row", "ResultStore",
           "ScanSummary", "summarize", "render_summary", "peak_rss_mib"]

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


def _finite_range(x: np.ndarray, t: TensorTask, r0: int, r1: int) -> TensorRange:
    rng = TensorRange.of(x)
    if not (math.isfinite(rng.min) and math.isfinite(rng.max)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise InputError(f"{bad:,} non-finite value(s) (NaN/inf) in rows {r0}..{r1 - 1}", source=t.entry.file.name,
                         where=f"tensor {t.entry.name!r}")
    return rng


_THREAD = threading.local()


def _scratch(slot: int) -> dict:
    """Read buffers kept per thread (a Dask worker runs several units at once in one process); slot 0
    for the scanned tensor, 1.. for its shipped counterparts."""
    bufs = getattr(_THREAD, "buffers", None)
    if bufs is None:
        bufs = _THREAD.buffers = {}
    return bufs.setdefault(slot, {})


def run_unit(u: Unit) -> UnitResult:
    """Read rows ``[u.r0, u.r1)`` of the tensor and measure every scheme on every segment (worker side).

    The rows are read into this thread's reused buffers (:func:`read_rows` ``scratch``); nothing that
    refers to them outlives the call."""
    t0 = time.perf_counter()
    return measure_unit(u, read_rows(u.task.entry, u.r0, u.r1, _scratch(0)), t0)


def measure_unit(u: Unit, x: np.ndarray, t0: float | None = None) -> UnitResult:
    """The work of :func:`run_unit` on rows ``x`` already read (``t0``: when reading began, for ``seconds``).
    Shipped counterparts, if any, are read here with :func:`read_rows`."""
    t0 = time.perf_counter() if t0 is None else t0
    t = u.task
    rng = _finite_range(x, t, u.r0, u.r1)
    stats: dict[str, tuple[Stats, ...]] = {}
    if u.kind == "range":
        return UnitResult(t.index, u.r0, u.r1, u.kind, rng, stats, time.perf_counter() - t0, 0)
    whole_rng = u.rng if u.rng is not None else rng
    seg = t.segment_rows
    starts = range(0, u.r1 - u.r0, seg) if x.ndim >= 2 else range(0, 1)
    parts = [x[s:s + seg] if x.ndim >= 2 else x for s in starts]
    where = f"tensor {t.entry.name!r}"
    # One sum of squares per segment for every GGUF preset (the same value whatever the scheme set); integer
    # and float schemes take theirs from their own statistics pass.
    shared = any(s.kind == "preset" for s in t.schemes)
    ssx = [sum_of_squares(p) for p in parts] if shared else [None] * len(parts)
    for s in t.schemes:
        try:
            stats[s.name] = tuple(measure(p, s, whole_rng if s.needs_tensor_range else None, q)
                                  for p, q in zip(parts, ssx))
        except ValueError as e:
            if isinstance(e, InputError):
                raise
            raise InputError(f"{s.name}: {e}", source=t.entry.file.name, where=where) from None
    for k, sh in enumerate(t.shipped, 1):
        xs = read_rows(sh.entry, u.r0, u.r1, _scratch(k))
        if sh.head_rows:
            xs = unpermute_rows(xs, (u.r1 - u.r0) // sh.head_rows)
        sparts = [xs[s:s + seg] if xs.ndim >= 2 else xs for s in starts]
        stats[f"shipped:{sh.label}"] = tuple(compare_stats(p, q) for p, q in zip(parts, sparts))
    return UnitResult(t.index, u.r0, u.r1, u.kind, rng, stats, time.perf_counter() - t0, x.size, _own_peak_rss_mib())


# --- finished tensors ----------------------------------------------------------------------------

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
        if isinstance(executor, InlineExecutor):
            _THREAD.buffers = {}  # units ran in this thread: give their read buffers back

# --- one unit per call (a page whose bytes arrive asynchronously) ----------------------------------

class SteppedScan:
    """A serial scan of ``plan`` driven from outside, one unit of work per :meth:`step`.

    For callers that cannot block while bytes arrive (a browser page reading a ``File`` by range): each
    step reads the next unit's rows with ``read(entry, r0, r1)`` and measures them (:func:`measure_unit`).
    When ``read`` raises (``quantcore.io.ranges.NeedBytes``: the bytes are not there yet), nothing
    advances; call :meth:`step` again once they are. The units, their order (a range pass first where
    a scheme needs the whole tensor's range) and the combining (:meth:`Stats.combine`) are those of
    :func:`iter_scan` with one worker, so the rows are identical to :func:`scan`'s.

    A tensor whose rows are bad (non-finite values, an undecodable block) raises its InputError from
    :meth:`step` and is skipped: the next step goes on with the next tensor (rows already made stay).
    """

    def __init__(self, plan: ScanPlan, read: Callable[[TensorEntry, int, int], np.ndarray]):
        self.plan, self.read = plan, read
        self.total_elements = plan.total_elements
        self.done_elements = 0
        self.tensors_done = 0
        self._tasks = deque(plan.tasks)
        self._units: deque[Unit] = deque()
        self._task: TensorTask | None = None
        self._ranges: list[TensorRange] = []
        self._stats: dict[str, list[Stats]] = {}
        self._done_before = 0

    @property
    def finished(self) -> bool:
        return not self._tasks and not self._units and self._task is None

    @property
    def current(self) -> TensorTask | None:
        """The tensor the next step works on."""
        return self._task if self._task is not None else (self._tasks[0] if self._tasks else None)

    def _start(self) -> None:
        task = self._tasks.popleft()
        self._task, self._ranges, self._stats = task, [], {}
        self._done_before = self.done_elements
        kind = "range" if task.needs_range else "measure"
        self._units = deque(Unit(task, r0, r1, kind) for r0, r1 in task.chunks())

    def _drop_task(self) -> TensorTask:
        task, self._task, self._units = self._task, None, deque()
        self.tensors_done += 1
        return task

    def step(self) -> TensorReport | None:
        """Do one unit; the finished tensor's report when this unit completed one, else None."""
        if self._task is None:
            if not self._tasks:
                return None
            self._start()
        u = self._units[0]
        t0 = time.perf_counter()
        try:
            res = measure_unit(u, self.read(u.task.entry, u.r0, u.r1), t0)
        except InputError:
            self.done_elements = self._done_before + u.task.entry.n_elements   # counted as done, without rows
            self._drop_task()
            raise
        self._units.popleft()
        if u.kind == "range":
            self._ranges.append(res.rng)
            if not self._units:
                rng = TensorRange.combine(self._ranges)
                self._units = deque(Unit(u.task, r0, r1, "measure", rng) for r0, r1 in u.task.chunks())
            return None
        for k, v in res.stats.items():
            self._stats.setdefault(k, []).extend(v)
        self.done_elements += res.elements
        if self._units:
            return None
        task = self._drop_task()
        return TensorReport(task, _rows_for(task, self._stats), self.done_elements, self.total_elements)


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
