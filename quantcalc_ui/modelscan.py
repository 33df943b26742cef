"""The Model view's Panel-free pieces: opening a checkpoint from the files a page picked (one file, or the shards
of one model with or without its safetensors index), reading its rows by byte range, and what the heat map, the
per-layer curves, the damage table and the exports show, built from :mod:`quantcore.scan` rows.

Everything numeric comes from quantcore (:func:`quantcore.scan.plan_scan`, :class:`quantcore.scan.SteppedScan`,
:func:`quantcore.plan.solve_plan`); this module only selects, orders and lays out those numbers.

Tensor names are untrusted text (they come from the file): the values here are plain ``str``; whoever renders
them as HTML escapes them.
"""
from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from quantcore.io import InputError, Limits
from quantcore.io.checkpoint import (INDEX_SUFFIX, Checkpoint, ShardIndex, TensorEntry, check_index_shards,
                                     combine_files, decode_rows, read_index, row_span, source_checkpoint)
from quantcore.io.ranges import RangeCache
from quantcore.plan import MixedPlan, llama_quantize_overrides
from quantcore.scanresults import ScanRow, Skipped, rows_csv, summarize, to_json_text

from .pdf import use_log

# A small default set: 8-bit per channel and q8_0 (near lossless), 4-bit per group of 32 and q4_0 (the usual
# "does this tensor survive 4 bits" question). Canonical names (quantcore.schemes.parse_scheme).
DEFAULT_SCHEMES = ("q8_0", "int8-sym-channel", "q4_0", "int4-sym-g32")
SCHEME_CHOICES = ("f16", "bf16", "q8_0", "int8-sym-channel", "q6_k", "q5_k", "q5_0", "q4_k", "q4_0", "q4_1",
                  "int4-sym-g32", "int4-sym-g128", "int4-sym-channel", "iq4_nl", "nvfp4", "mxfp4", "nf4",
                  "fp8_e4m3", "q3_k", "q2_k")
METRICS = {"sqnr_db": "SQNR dB", "rel_rmse": "relative RMSE"}
SCAN_CHUNK_MB = 16          # float32 MiB per unit of work in the page (memory in a browser tab is scarce)
MAX_HEAT_TENSORS = 200      # rows of the heat map (x schemes: the points shipped to the browser)
MAX_TABLE_TENSORS = 50      # rows of the damage table


def range_reader(cache: RangeCache, keep_below: int) -> Callable[[TensorEntry, int, int], np.ndarray]:
    """``read(entry, r0, r1)`` for :class:`quantcore.scan.SteppedScan` over a file known by byte ranges.

    Raises :class:`quantcore.io.ranges.NeedBytes` while the rows' bytes have not arrived; once they have, decodes
    them and forgets every fetched byte at and after ``keep_below`` (the header stays), so a scan holds at most one
    unit's bytes. A file shorter than its header says gives the usual "file is truncated" InputError."""
    def read(entry: TensorEntry, r0: int, r1: int) -> np.ndarray:
        offset, n = row_span(entry, r0, r1)
        raw = cache.read(offset, n, f"tensor {entry.name!r} rows {r0}..{r1}")
        cache.drop(keep_below)
        return decode_rows(entry, raw, r0, r1)
    return read


@dataclass(frozen=True)
class PickedFile:
    """A file the page holds: its name (base name, as a browser gives it), size in bytes, and the page's handle
    for it (``BrowserFile``'s ``key``: byte requests name it)."""

    name: str
    size: int
    key: str = ""

    @property
    def is_index(self) -> bool:
        return self.name.lower().endswith(INDEX_SUFFIX)

    @property
    def is_other_json(self) -> bool:
        """A model folder's other JSON (config.json, tokenizer.json, ...): picked along, never read."""
        return self.name.lower().endswith(".json") and not self.is_index


class PickedCheckpoint:
    """The checkpoint in the files a page picked, known by byte range: one ``.safetensors`` / ``.gguf`` file, or
    the shards of one model, with or without its ``*.safetensors.index.json``.

    :meth:`open` reads each index whole (capped at ``Limits.max_header_bytes``), then every header, and raises
    :class:`quantcore.io.ranges.NeedBytes` (its ``source`` names the file) until the bytes it needs have been
    :meth:`add`-ed; call it again then (files already parsed are not parsed again). The checks are quantcore's
    own, as for paths (:func:`quantcore.io.checkpoint.open_checkpoint`): each header by
    :func:`~quantcore.io.checkpoint.source_checkpoint`, every shard an index names among the picked files
    (:func:`~quantcore.io.checkpoint.check_index_shards`), tensor names unique across files and where the index
    says (:func:`~quantcore.io.checkpoint.combine_files`). Bad input is an InputError naming the file.

    An index is a file named ``*.index.json``; the other ``.json`` files of a model folder (config, tokenizer),
    picked along with the shards, are left out unread (:attr:`left_out`). File order: the shards in the order the
    index names them, then the other picked files by name (the order a folder is read in by ``quantcore scan``).
    Once open, each file keeps only its header's bytes (the first file also what was read ahead with it, until its
    first read; :meth:`read` drops a tensor's bytes once decoded): a thousand shards cost their headers."""

    def __init__(self, files: Sequence[PickedFile], limits: Limits = Limits()):
        if not files:
            raise InputError("no file was chosen")
        self.limits = limits
        self.files: dict[str, PickedFile] = {}
        for f in files:
            if f.name in self.files:
                raise InputError("two of the chosen files have this name; choose the files of one checkpoint",
                                 source=f.name)
            if f.size <= 0 and not f.is_other_json:
                raise InputError("the file is empty", source=f.name)
            self.files[f.name] = f
        self.left_out = tuple(sorted(f.name for f in files if f.is_other_json))
        for name in self.left_out:
            del self.files[name]
        if not self.files:
            raise InputError("no checkpoint among the files chosen (.safetensors, .gguf, and an .index.json)",
                             source=", ".join(self.left_out))
        files = list(self.files.values())
        self.caches = {f.name: RangeCache(f.size, f.name) for f in files}
        self._indexes: dict[str, ShardIndex] = {}
        self._parts: dict[str, Checkpoint] = {}
        self.keep_below: dict[str, int] = {}      # per file: the bytes before its first tensor (its header)
        self.checkpoint: Checkpoint | None = None
        self._readers: dict[str, Callable[[TensorEntry, int, int], np.ndarray]] = {}

    @property
    def label(self) -> str:
        """The checkpoint's name in the page: the file, or the index (else the first file) and how many more."""
        names = sorted(self.files, key=lambda n: (not self.files[n].is_index, n))
        return names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1} files)"

    @property
    def stem(self) -> str:
        """The checkpoint's name for export files: the index's or the one file's name without its extensions
        (``model.safetensors.index.json`` -> ``model``; shards without an index: the first shard's)."""
        name = sorted(self.files, key=lambda n: (not self.files[n].is_index, n))[0]
        for suffix in (".index.json", ".safetensors", ".gguf", ".npz"):
            name = name[:-len(suffix)] if name.endswith(suffix) else name
        return name

    def add(self, name: str, offset: int, data: bytes) -> None:
        self.caches[name].add(offset, data)

    def open(self) -> Checkpoint:
        """The checkpoint once every header has arrived (NeedBytes before); InputError for bad input."""
        if self.checkpoint is not None:
            return self.checkpoint
        for f in self.files.values():
            if f.is_index and f.name not in self._indexes:
                self._indexes[f.name] = read_index(self.caches[f.name], self.limits)
        picked = {f.name for f in self.files.values() if not f.is_index}
        indexes = list(self._indexes.values())
        for index in indexes:
            check_index_shards(index, lambda shard: os.path.basename(shard) in picked)
        order = list(dict.fromkeys([os.path.basename(s) for index in indexes for s in index.shards] + sorted(picked)))
        if not order:
            raise InputError("the index names no shard; choose the .safetensors files too",
                             source=next(iter(self.files)))
        for name in order:
            if name not in self._parts:
                self._parts[name] = source_checkpoint(self.caches[name], name, self.limits)
        ckpt = combine_files([self._parts[n] for n in order], indexes)
        for name, cache in self.caches.items():
            first = min((t.offset for t in self._parts[name].tensors if t.offset >= 0), default=cache.size) \
                if name in self._parts else 0
            self.keep_below[name] = first
            if name != order[0]:    # the header stays; read-ahead past it (and an index, whole) goes, except in
                cache.drop(first)   # the file scanned first, whose first tensor is read next (as for one file)
            self._readers[name] = range_reader(cache, first)
        self.checkpoint = ckpt
        return ckpt

    def read(self, entry: TensorEntry, r0: int, r1: int) -> np.ndarray:
        """:func:`range_reader` over the file ``entry`` is in (for :class:`quantcore.scan.SteppedScan`)."""
        return self._readers[entry.file.name](entry, r0, r1)

    def header_bytes(self, name: str) -> bytes:
        """The bytes of file ``name`` before its first tensor (what the one-tensor view needs first)."""
        n = self.keep_below.get(name, 0)
        return self.caches[name].read(0, n) if n else b""

    def file_of(self, tensor: str) -> PickedFile | None:
        """The picked file holding ``tensor`` (None before :meth:`open` succeeded or for an unknown name)."""
        if self.checkpoint is None:
            return None
        entry = self.checkpoint.by_name().get(tensor)
        return self.files[entry.file.name] if entry is not None else None


def _damage(r: ScanRow) -> float:
    """Sort key: relative RMSE, with a tensor of all zeros (nan) last and an infinite error first."""
    return r.rel_rmse if not math.isnan(r.rel_rmse) else -1.0


def by_tensor(rows: Sequence[ScanRow]) -> dict[str, dict[str, ScanRow]]:
    """tensor -> scheme -> row, tensors in the order their rows came (checkpoint order)."""
    out: dict[str, dict[str, ScanRow]] = {}
    for r in rows:
        out.setdefault(r.tensor, {})[r.scheme] = r
    return out


def most_damaged(rows: Sequence[ScanRow], limit: int) -> list[str]:
    """Tensor names by their largest relative RMSE over the schemes, worst first (at most ``limit``)."""
    worst = {t: max(_damage(r) for r in rs.values()) for t, rs in by_tensor(rows).items()}
    return sorted(worst, key=lambda t: -worst[t])[:limit]


@dataclass(frozen=True)
class HeatMap:
    """Columns for a Bokeh ``rect`` glyph (one point per tensor x scheme) and its axes."""

    data: dict            # tensor, scheme, value, shown (text)
    tensors: list[str]    # y factors, top to bottom in checkpoint order
    schemes: list[str]    # x factors
    note: str             # what was left out, if anything


def heat_map(rows: Sequence[ScanRow], schemes: Sequence[str], metric: str,
             limit: int = MAX_HEAT_TENSORS) -> HeatMap:
    """Every tensor x scheme value of ``metric`` (:data:`METRICS`); over ``limit`` tensors, the ``limit`` most
    damaged ones (checkpoint order kept). Non-finite values (a lossless scheme's infinite SQNR) are sent as NaN
    (drawn grey) and said in the text column."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    table = by_tensor(rows)
    names = list(table)
    note = ""
    if len(names) > limit:
        keep = set(most_damaged(rows, limit))
        names = [t for t in names if t in keep]
        note = f"the {limit} most damaged of {len(table)} tensors"
    cols: dict[str, list] = {"tensor": [], "scheme": [], "value": [], "shown": []}
    for t in names:
        for s in schemes:
            r = table[t].get(s)
            if r is None:
                continue
            v = float(getattr(r, metric))
            cols["tensor"].append(t)
            cols["scheme"].append(s)
            cols["value"].append(v if math.isfinite(v) else math.nan)
            cols["shown"].append(f"{v:.4g}" if math.isfinite(v) else ("∞" if v > 0 else "–"))
    data = {k: (np.asarray(v, float) if k == "value" else v) for k, v in cols.items()}
    return HeatMap(data, list(reversed(names)), list(schemes), note)


@dataclass(frozen=True)
class LayerCurves:
    """Relative RMSE by layer index, one curve per scheme (:attr:`quantcore.scanresults.ScanSummary.by_layer`:
    ``sqrt(sum sse / sum ssx)`` over the layer's tensors).

    ``lines``: columns for a Bokeh ``multi_line`` (one row per scheme: ``scheme``, ``xs``, ``ys``; a value that
    cannot be drawn is NaN, which leaves a gap); ``points``: one row per layer x scheme with a drawable value
    (``layer``, ``scheme``, ``rel_rmse``, ``shown``: the value as text, ``tensors``: how many tensors the
    layer has). Plain lists (no numpy), so the PDF report can hold them too."""

    lines: dict
    points: dict
    layers: list[int]
    schemes: list[str]
    log_y: bool
    y_range: tuple[float, float]   # the y axis' limits: (0, max + 8 %) linear, a factor 1.5 around the data on log
    note: str                      # what is not drawn, in words


def layer_curves(rows: Sequence[ScanRow], schemes: Sequence[str]) -> LayerCurves:
    """Per-layer relative RMSE of each of ``schemes`` (in that order; schemes without rows are left out).

    Tensors without a layer index (embeddings, the final norm, the output head) are not drawn and ``note`` says
    how many. The y axis is logarithmic when the drawable values span more than a factor 30
    (:func:`quantcalc_ui.pdf.use_log`); on it a zero error (a lossless scheme) cannot be drawn and is said too."""
    groups = {(g.scheme, g.group): g for g in summarize(rows).by_layer}
    layers = sorted({int(g) for _, g in groups if g != "-"})
    present = [s for s in schemes if any(k[0] == s for k in groups)]
    values = [groups[(s, str(i))].rel_rmse for s in present for i in layers if (s, str(i)) in groups]
    log_y = use_log(values)

    def drawable(v: float) -> bool:
        return math.isfinite(v) and (v > 0 or not log_y)

    lines: dict[str, list] = {"scheme": [], "xs": [], "ys": []}
    points: dict[str, list] = {"layer": [], "scheme": [], "rel_rmse": [], "shown": [], "tensors": []}
    for s in present:
        ys = []
        for i in layers:
            g = groups.get((s, str(i)))
            v = g.rel_rmse if g is not None else math.nan
            ys.append(float(v) if drawable(v) else math.nan)
            if g is not None and drawable(v):
                for k, x in zip(points, (i, s, float(v), f"{v:.4g}", g.tensors)):
                    points[k].append(x)
        lines["scheme"].append(s)
        lines["xs"].append([float(i) for i in layers])
        lines["ys"].append(ys)
    shown = points["rel_rmse"]
    if not shown:
        y_range = (0.0, 1.0)
    elif log_y:
        y_range = (min(shown) / 1.5, max(shown) * 1.5)
    else:
        y_range = (0.0, max(shown) * 1.08 or 1.0)
    words = []
    unlayered = {r.tensor for r in rows if r.layer is None}
    if unlayered:
        words.append(f"{len(unlayered)} tensor{'s' if len(unlayered) != 1 else ''} without a layer index "
                     "(embeddings, final norm, output) not drawn")
    hidden = sum(1 for v in values if not drawable(v))
    if hidden:
        words.append(f"{hidden} value{'s' if hidden != 1 else ''} of 0 or not finite not drawn on the log scale"
                     if log_y else f"{hidden} value{'s' if hidden != 1 else ''} not finite not drawn")
    return LayerCurves(lines, points, layers, present, log_y, y_range, "; ".join(words))


@dataclass(frozen=True)
class DamageRow:
    """One tensor of the damage table: its description, each scheme's (relative RMSE, SQNR dB), the plan's pick."""

    tensor: str
    shape: str
    dtype: str
    role: str
    worst: float
    by_scheme: dict       # scheme -> (rel_rmse, sqnr_db)
    planned: str
    file: str = ""        # the file it is stored in (a shard's name)


def damage_table(rows: Sequence[ScanRow], schemes: Sequence[str], plan: MixedPlan | None,
                 limit: int = MAX_TABLE_TENSORS) -> list[DamageRow]:
    """The ``limit`` most damaged tensors (largest relative RMSE over ``schemes``), worst first."""
    table = by_tensor(rows)
    picks = dict(plan.choices) if plan is not None else {}
    out = []
    for t in most_damaged(rows, limit):
        rs = table[t]
        any_row = next(iter(rs.values()))
        out.append(DamageRow(t, any_row.shape, any_row.dtype, any_row.role, max(_damage(r) for r in rs.values()),
                             {s: (rs[s].rel_rmse, rs[s].sqnr_db) for s in schemes if s in rs}, picks.get(t, ""),
                            any_row.file))
    return out


def report_json(checkpoint: str, schemes: Sequence[str], rows: Sequence[ScanRow], skipped: Sequence[Skipped],
                problems: Sequence[str], plan: MixedPlan | None, complete: bool) -> str:
    """The Model view's JSON export: every row, the model summary (:func:`quantcore.scanresults.summarize`), the
    tensors left out and why, and the plan with its llama-quantize overrides when every pick is a GGUF type."""
    doc = {"checkpoint": checkpoint, "schemes": list(schemes), "complete": complete,
           "rows": [r.to_dict() for r in rows],
           "summary": summarize(rows, skipped, checkpoint).to_dict(),
           "problems": list(problems), "plan": None}
    if plan is not None:
        base, lines, plan_problems = llama_quantize_overrides(plan)
        doc["plan"] = plan.to_dict()
        doc["plan"]["llama_quantize"] = {"base_type": base, "tensor_type_lines": lines, "problems": plan_problems}
    return to_json_text(doc)


def report_csv(rows: Sequence[ScanRow]) -> str:
    """The scan rows as CSV (the columns of ``quantcore scan``'s ``results.csv``)."""
    return rows_csv(rows)


def plan_csv(plan: MixedPlan) -> str:
    """The plan as CSV, one line per tensor: tensor, scheme."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(("tensor", "scheme"))
    w.writerows(plan.choices)
    return out.getvalue()
