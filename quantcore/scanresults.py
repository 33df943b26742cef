"""Scan results: one frozen row per tensor x scheme, the resumable results folder, and the model summary.

:class:`ScanRow` carries the exact sums (``n, sse, ssx, sae``, counts) beside the derived metrics, so
any grouping (a layer, a role, the whole model) is recomputed exactly from rows. :class:`ResultStore`
is the ``--out`` folder; :func:`summarize` / :func:`render_summary` the summary ``quantcore scan``
prints. Used by :mod:`quantcore.scan`; no numpy beyond what the rows hold.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Sequence

from .io import InputError
from .io.checkpoint import Checkpoint, TensorEntry
from .measure import Stats
from .names import layer_index, tensor_role

# --- rows ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Skipped:
    file: str
    tensor: str
    reason: str
    scheme: str = ""


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


def rows_csv(rows: Sequence[ScanRow]) -> str:
    """``rows`` as CSV text with the columns and cell format of ``results.csv`` (an export without a folder)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(ROW_FIELDS)
    for r in rows:
        w.writerow([_cell(getattr(r, k)) for k in ROW_FIELDS])
    return out.getvalue()


def to_json_text(obj) -> str:
    """JSON text of dataclass dicts and numbers, non-finite floats spelled as in ``results.jsonl``."""
    return json.dumps(_jsonable(obj), indent=1, allow_nan=False) + "\n"


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


