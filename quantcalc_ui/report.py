"""Everything the PDF report shows, as plain data (:class:`ReportModel`), built from quantcore results.

The model holds text and numbers only (tuples of ``str``/``float``/``int``/``bool``): no numpy arrays, no
quantcore objects, so a renderer needs nothing but the model, and a test can inspect what will be drawn.
Numbers keep full precision; the renderer decides how many digits to show (see :mod:`quantcalc_ui.pdf`).

:func:`report_model` reads only the public result API -- ``label``, ``metrics``, ``memory``,
``channel_table()``, ``sample_table()``, ``histogram()``, ``lo``/``hi`` -- never a scheme's fields, so it
does not change when the engine's scheme classes do.

Truncation: a per-channel table keeps at most ``max_channels`` rows. When it must drop rows it keeps the
channels with the largest RMSE under the detailed scheme (worst first) and says so in the table's note; when
every channel fits, rows stay in channel order. The side-by-side error table keeps the same channels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

DEFAULT_MAX_CHANNELS = 64   # rows of each per-channel table
DEFAULT_MAX_VALUES = 64     # the per-value table is shown when the whole tensor has at most this many values
HISTOGRAM_BINS = 60          # at most; a small tensor gets about one bin per two values (at least 10)


@dataclass(frozen=True)
class Column:
    """One table column. ``kind`` says how the renderer formats and aligns its cells:

    ``text`` (a label: wraps, cut after three lines), ``scheme`` (a scheme name: wraps, never cut),
    ``value`` (a tensor value, scale or range: 6 significant digits), ``error`` (MAE/RMSE/errors: 4 significant
    digits), ``db`` (one decimal), ``percent`` (a value already in percent, 3 significant digits),
    ``fraction`` (a fraction shown in percent, 2 decimals), ``int``, ``bytes`` (an integer with thousands
    separators), ``bpw`` (bits per weight, 4 significant digits), ``flag`` (``yes`` or empty).
    ``group``: a heading spanning consecutive columns of the same group.
    """

    heading: str
    kind: str
    group: str = ""


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[object, ...], ...]
    note: str = ""                     # what was kept of how many, in which order, where the rest is
    highlight: tuple[int, ...] = ()    # rows drawn emphasised (the most accurate scheme)


@dataclass(frozen=True)
class SchemeRow:
    """One compared scheme: errors, memory, and whether it is the most accurate / on the Pareto front."""

    label: str
    mae: float
    rmse: float
    max_abs: float
    sqnr_db: float
    clip_rate: float          # fraction of values clipped
    collapsed: int            # values that were not 0 and came back as 0
    payload_bytes: int
    metadata_bytes: int
    total_bytes: int
    bits_per_weight: float
    best: bool                # lowest RMSE (ties: the smaller one), as quantcore.report.Comparison.best
    pareto: bool              # no compared scheme is at most as large and at most as wrong, better in one


@dataclass(frozen=True)
class RangePlot:
    """Per channel: data min/max, and the range the detailed scheme quantized it with (NaN where the scheme
    has no single range per channel, e.g. per-group); ``tensor_range``: the per-tensor scheme's range."""

    scheme: str
    labels: tuple[str, ...]
    data_min: tuple[float, ...]
    data_max: tuple[float, ...]
    range_lo: tuple[float, ...]
    range_hi: tuple[float, ...]
    tensor_range: tuple[float, float] | None


@dataclass(frozen=True)
class ErrorPlot:
    """Per-channel RMSE of every compared scheme: ``rmse[scheme][channel]``."""

    schemes: tuple[str, ...]
    labels: tuple[str, ...]
    rmse: tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class HistogramPlot:
    """Counts of the tensor's values in equal bins (``edges`` has one more entry than ``counts``), with the
    detailed scheme's clip bounds (NaN when unknown) and what those bounds are, in words."""

    scheme: str
    edges: tuple[float, ...]
    counts: tuple[int, ...]
    clip_lo: float
    clip_hi: float
    clip_label: str           # what the bounds are, in words ("the range int8 ... quantizes to")


@dataclass(frozen=True)
class FrontierPoint:
    label: str
    total_bytes: float
    rmse: float
    bits_per_weight: float
    pareto: bool              # on the Pareto front of its own set (the sweep, or the compared schemes)
    compared: bool            # one of the compared schemes (else a point of the bits x granularity sweep)


@dataclass(frozen=True)
class ReportModel:
    title: str
    tensor_name: str
    source: str                                   # the data source in words
    settings: tuple[tuple[str, str], ...]         # (label, value) in words, only what applies
    advice: str
    schemes: tuple[SchemeRow, ...]
    detail: str                                   # label of the scheme detailed per channel
    n_values: int
    n_channels: int
    channel_table: Table | None
    channel_errors: Table | None                  # rows = channels, column groups = schemes
    values_table: Table | None                    # every value of a small tensor (seed 001's table)
    ranges: RangePlot | None
    errors: ErrorPlot | None
    histogram: HistogramPlot | None
    frontier: tuple[FrontierPoint, ...]
    frontier_note: str = ""
    notes: tuple[str, ...] = ()                   # anything left out, in words
    manual_table: Table | None = None             # manual mode (given scale and zero-point per channel)

    def comparison_table(self) -> Table | None:
        """The scheme comparison as a table (errors and memory column groups; the best row highlighted)."""
        if not self.schemes:
            return None
        columns = (Column("Scheme", "scheme"),
                   Column("MAE", "error", "Error"), Column("RMSE", "error", "Error"),
                   Column("Max error", "error", "Error"), Column("SQNR dB", "db", "Error"),
                   Column("Clip %", "fraction", "Error"), Column("Collapsed", "int", "Error"),
                   Column("Payload", "bytes", "Bytes"), Column("Metadata", "bytes", "Bytes"),
                   Column("Total", "bytes", "Bytes"), Column("Bits/weight", "bpw"), Column("Pareto", "flag"))
        rows = tuple((s.label, s.mae, s.rmse, s.max_abs, s.sqnr_db, s.clip_rate, s.collapsed, s.payload_bytes,
                      s.metadata_bytes, s.total_bytes, s.bits_per_weight, s.pareto) for s in self.schemes)
        note = ("Highlighted: lowest RMSE. Collapsed: values that were not 0 but came back as 0. Bytes: codes "
                "(payload) and scales / zero-points (metadata). Pareto: no other compared scheme is at most as "
                "large and at most as wrong (RMSE).")
        return Table("Scheme comparison", columns, rows, note,
                     highlight=tuple(i for i, s in enumerate(self.schemes) if s.best))


# --------------------------------------------------------------------------------------------------
# building the model
# --------------------------------------------------------------------------------------------------

CHANNEL_COLUMNS = (("min", "Min", "value"), ("max", "Max", "value"), ("range_lo", "Range lo", "value"),
                   ("range_hi", "Range hi", "value"), ("scale", "Scale", "value"),
                   ("zero_point", "Zero-point", "value"), ("mae", "MAE", "error"), ("rmse", "RMSE", "error"),
                   ("sqnr_db", "SQNR dB", "db"), ("clip_rate", "Clip %", "fraction"),
                   ("collapsed", "Collapsed", "int"), ("ties", "Ties", "int"))
VALUE_COLUMNS = (("index", "Index", "int"), ("x", "x", "value"), ("raw_q", "Raw q", "value"),
                 ("q", "q", "int"), ("dequantized", "Dequantized", "value"), ("abs_error", "Abs error", "error"),
                 ("pct_error", "% error", "percent"), ("clipped", "Clipped", "int"), ("tie", "Tie", "flag"))
MANUAL_COLUMNS = (("scale", "Scale", "value"), ("zero_point", "Zero-point", "int"), ("sample", "Sample", "value"),
                  ("raw_q", "Raw q", "value"), ("q", "Quantized", "int"), ("dequantized", "Dequantized", "value"),
                  ("abs_error", "Abs error", "error"), ("pct_error", "% error", "percent"),
                  ("clipped", "Clipped", "int"))


def _floats(a) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(a, dtype=np.float64).reshape(-1))


def _plain(v: object) -> object:
    """A numpy scalar as the Python value it holds (bool, int, float), anything else as text."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    return str(v)


def scheme_rows(comparison) -> tuple[SchemeRow, ...]:
    """One :class:`SchemeRow` per compared result (metrics and memory as quantcore reports them)."""
    from quantcore.report import pareto_mask
    results = comparison.results
    best = comparison.best("rmse")
    pareto = pareto_mask([r.memory.total_bytes for r in results], [r.metrics.rmse for r in results])
    return tuple(SchemeRow(str(r.label), float(r.metrics.mae), float(r.metrics.rmse), float(r.metrics.max_abs),
                           float(r.metrics.sqnr_db), float(r.metrics.clip_rate), int(r.metrics.collapsed),
                           int(r.memory.payload_bytes), int(r.memory.metadata_bytes), int(r.memory.total_bytes),
                           float(r.memory.bits_per_weight), i == best, bool(pareto[i]))
                 for i, r in enumerate(results))


def kept_channels(rmse: np.ndarray, max_channels: int) -> tuple[np.ndarray, str]:
    """Indices of the channels a truncated table shows, and the order in words.

    All channels in channel order when they fit; otherwise the ``max_channels`` largest RMSE first
    (NaN last, ties in channel order).
    """
    n = len(rmse)
    if n <= max_channels:
        return np.arange(n), "channel order"
    key = np.where(np.isnan(rmse), -np.inf, rmse)
    order = np.argsort(-key, kind="stable")[:max_channels]
    return order, "sorted by RMSE descending"


def _truncation_note(kept: int, total: int, order: str, what: str = "channel") -> str:
    if kept >= total:
        return f"The tensor has one {what}." if total == 1 else f"All {total:,} {what}s, in {order}."
    return f"First {kept:,} of {total:,} {what}s, {order}; the full table is in the CSV export."


def _labels(table: Mapping[str, np.ndarray], channel_labels: Sequence[str] | None) -> list[str]:
    names = [str(v) for v in table["name"]]
    if channel_labels and len(channel_labels) == len(names):
        return [str(v) for v in channel_labels]
    return names


def channel_table(result, labels: Sequence[str], max_channels: int) -> Table:
    """Per-channel table of one scheme. Columns that hold no value for any channel (the scale of a per-group
    scheme, the zero-point of a float format) are left out, and so are Range lo/hi when they repeat the data
    min/max of every channel; the note says which."""
    t = result.channel_table()
    rmse = np.asarray(t["rmse"], dtype=np.float64)
    keep, order = kept_channels(rmse, max_channels)
    same_as_data = all(np.array_equal(np.asarray(t[a], np.float64), np.asarray(t[b], np.float64))
                       for a, b in (("range_lo", "min"), ("range_hi", "max")))
    present, dropped = [], []
    for key, heading, kind in CHANNEL_COLUMNS:
        col = np.asarray(t.get(key, np.full(len(rmse), np.nan)), dtype=np.float64)
        if (~np.isnan(col)).any() and not (same_as_data and key in ("range_lo", "range_hi")):
            present.append((key, heading, kind))
        else:
            dropped.append(heading)
    columns = (Column("Channel", "text"),) + tuple(Column(h, k) for _, h, k in present)
    rows = tuple((labels[i],) + tuple(_plain(t[key][i]) for key, _, _ in present) for i in keep)
    note = _truncation_note(len(keep), len(rmse), order)
    if same_as_data:
        note += " The quantization range of every channel is its data min/max."
    missing = [h for h in dropped if h not in ("Range lo", "Range hi") or not same_as_data]
    if missing:
        note += (f" {', '.join(missing)}: not one value per channel for this scheme "
                 "(several blocks per channel, or none stored).")
    return Table(f"Per-channel table: {result.label}", columns, rows, note)


def channel_errors_table(results, labels: Sequence[str], keep: np.ndarray, order: str) -> tuple[Table, list[str]]:
    """Seed 003's view: one row per channel, for every scheme its MAE and the values it collapsed to 0.

    Returns the table and the labels of schemes left out because they report another number of channels
    (a float format with its own channel axis)."""
    n = len(labels)
    columns, cols, skipped = [Column("Channel", "text")], [], []
    for r in results:
        t = r.channel_table()
        if len(t["mae"]) != n:
            skipped.append(str(r.label))
            continue
        columns += [Column("MAE", "error", str(r.label)), Column("Collapsed", "int", str(r.label))]
        cols += [np.asarray(t["mae"], np.float64), np.asarray(t["collapsed"], np.int64)]
    rows = tuple((labels[i],) + tuple(_plain(c[i]) for c in cols) for i in keep)
    note = _truncation_note(len(keep), n, order + " under the detailed scheme" if len(keep) < n else order)
    note += " Collapsed: values of the channel that were not 0 and came back as 0."
    if skipped:
        note += f" Not shown (another channel count): {', '.join(skipped)}."
    return Table("Per-channel error by scheme (MAE)", tuple(columns), rows, note), skipped


def values_table(result, labels: Sequence[str], max_values: int) -> Table | None:
    """Every value of a small tensor (None above ``max_values`` values): x, raw and clamped code, x_hat.
    The Tie column is left out when no value is a tie (the note says so)."""
    if result.metrics.n > max_values:
        return None
    t = result.sample_table(limit=max_values)
    ties = bool(np.asarray(t["tie"]).any())
    kept = [c for c in VALUE_COLUMNS if c[0] != "tie" or ties]
    ch = np.asarray(t["channel"], dtype=np.int64)
    columns = (Column("Channel", "text"),) + tuple(Column(h, k) for _, h, k in kept)
    rows = tuple((labels[int(c)] if 0 <= int(c) < len(labels) else str(int(c)),)
                 + tuple(_plain(t[key][i]) for key, _, _ in kept) for i, c in enumerate(ch))
    note = (f"All {len(rows)} values. Raw q: x / scale + zero-point before rounding and clamping; "
            "Clipped: -1 below the range, +1 above. "
            + ("Tie: the code differs under another convention's arithmetic." if ties
               else "No value sits on a rounding tie (no code differs under another convention's arithmetic)."))
    return Table(f"Per-value table: {result.label}", columns, rows, note)


def range_plot(result, labels: Sequence[str], tensor_range: tuple[float, float] | None) -> RangePlot:
    t = result.channel_table()
    return RangePlot(str(result.label), tuple(labels), _floats(t["min"]), _floats(t["max"]),
                     _floats(t["range_lo"]), _floats(t["range_hi"]),
                     None if tensor_range is None else (float(tensor_range[0]), float(tensor_range[1])))


def error_plot(results, labels: Sequence[str]) -> ErrorPlot:
    n = len(labels)
    kept = [r for r in results if len(r.channel_table()["rmse"]) == n]
    return ErrorPlot(tuple(str(r.label) for r in kept), tuple(labels),
                     tuple(_floats(r.channel_table()["rmse"]) for r in kept))


def histogram_plot(result, bins: int | None = None) -> HistogramPlot:
    """Histogram of the values with the detailed scheme's clip bounds.

    The bounds are the range the scheme's scale was chosen from when it has one for the whole tensor;
    otherwise the outermost of its per-channel ranges (``range_lo``/``range_hi`` of the channel table) or,
    when those are not defined (several blocks per channel), of its per-block ranges (``lo``/``hi``).
    """
    if bins is None:
        bins = int(min(HISTOGRAM_BINS, max(10, result.metrics.n // 2)))
    h = result.histogram(bins=bins)
    edges = _floats(list(np.asarray(h["left"], np.float64)) + [float(np.asarray(h["right"])[-1])]) \
        if len(h["left"]) else ()
    t = result.channel_table()
    lo_c, hi_c = np.asarray(t["range_lo"], np.float64), np.asarray(t["range_hi"], np.float64)
    lo_b, hi_b = np.asarray(result.lo, np.float64).reshape(-1), np.asarray(result.hi, np.float64).reshape(-1)
    if lo_b.size == 1:
        lo, hi, label = float(lo_b[0]), float(hi_b[0]), f"the range {result.label} quantizes to"
    elif lo_c.size and np.isfinite(lo_c).all() and np.isfinite(hi_c).all():
        lo, hi = float(lo_c.min()), float(hi_c.max())
        label = f"the outermost of the {lo_c.size:,} channel ranges of {result.label}"
    elif lo_b.size:
        lo, hi = float(np.nanmin(lo_b)), float(np.nanmax(hi_b))
        label = f"the outermost of the {lo_b.size:,} block ranges of {result.label}"
    else:
        lo, hi, label = math.nan, math.nan, ""
    return HistogramPlot(str(result.label), edges, tuple(int(c) for c in h["count"]), lo, hi, label)


def frontier_points(comparison, frontier_rows: Sequence[Mapping[str, object]]) -> tuple[FrontierPoint, ...]:
    """The bits x granularity sweep (``quantcore.report.sweep`` rows, ``pareto`` set) and the compared schemes."""
    sweep = tuple(FrontierPoint(str(r["label"]), float(r["total_bytes"]), float(r["rmse"]),  # type: ignore[arg-type]
                                float(r.get("bits_per_weight", math.nan)), bool(r.get("pareto", False)), False)  # type: ignore[arg-type]
                  for r in frontier_rows)
    compared = tuple(FrontierPoint(s.label, float(s.total_bytes), s.rmse, s.bits_per_weight, s.pareto, True)
                     for s in scheme_rows(comparison))
    return sweep + compared


def report_model(comparison, detail_index: int, *, title: str, tensor_name: str, source_description: str,
                 settings: Sequence[tuple[str, str]], channel_labels: Sequence[str] | None = None,
                 frontier_rows: Sequence[Mapping[str, object]] = (), max_channels: int = DEFAULT_MAX_CHANNELS,
                 max_values: int = DEFAULT_MAX_VALUES, tensor_range: tuple[float, float] | None = None,
                 frontier_note: str = "") -> ReportModel:
    """The report of a :class:`quantcore.report.Comparison`, detailing ``comparison.results[detail_index]``.

    ``channel_labels``: one per channel (else the results' channel names); ``frontier_rows``: the sweep
    (may be empty: the chart then shows the compared schemes only, and ``frontier_note`` says why);
    ``tensor_range``: the per-tensor scheme's ``(lo, hi)``, drawn over the per-channel ranges.
    """
    results = comparison.results
    if not 0 <= detail_index < len(results):
        raise ValueError(f"detail index {detail_index} is out of range: the comparison has {len(results)} schemes")
    detail = results[detail_index]
    t = detail.channel_table()
    labels = _labels(t, channel_labels)
    keep, order = kept_channels(np.asarray(t["rmse"], np.float64), max_channels)
    errors_table, skipped = channel_errors_table(results, labels, keep, order)
    notes = []
    if detail.metrics.n > max_values:
        notes.append(f"The per-value table is in the CSV export ({detail.metrics.n:,} values).")
    if not frontier_rows and not frontier_note:
        frontier_note = "The bits x granularity sweep was not computed; only the compared schemes are shown."
    sampled = {r.get("sampled_channels") for r in frontier_rows} - {None}
    if sampled:
        frontier_note = (f"{frontier_note} The sweep ran on {max(sampled):,} evenly spaced channels of "  # type: ignore[type-var]
                         f"{len(labels):,}: its bytes count those channels only.").strip()
    return ReportModel(
        title=title, tensor_name=tensor_name, source=source_description,
        settings=tuple((str(k), str(v)) for k, v in settings), advice=comparison.advice(),
        schemes=scheme_rows(comparison), detail=str(detail.label), n_values=int(detail.metrics.n),
        n_channels=len(labels), channel_table=channel_table(detail, labels, max_channels),
        channel_errors=errors_table, values_table=values_table(detail, labels, max_values),
        ranges=range_plot(detail, labels, tensor_range), errors=error_plot(results, labels),
        histogram=histogram_plot(detail), frontier=frontier_points(comparison, frontier_rows),
        frontier_note=frontier_note, notes=tuple(notes))


def manual_report_model(rows: Mapping[str, Sequence[object]] | None, *, title: str, tensor_name: str,
                        source_description: str, settings: Sequence[tuple[str, str]]) -> ReportModel:
    """Manual mode (seed 001's calculator: scale and zero-point given per channel, one sample each):
    ``rows`` is ``quantcore.report.manual(...)``'s table, or None when nothing was entered."""
    table = None
    n = 0
    if rows is not None:
        names = [str(v) for v in rows["channel"]]
        n = len(names)
        columns = (Column("Channel", "text"),) + tuple(Column(h, k) for _, h, k in MANUAL_COLUMNS)
        table = Table("Manual mode: given scale and zero-point", columns,
                      tuple((names[i],) + tuple(_plain(rows[key][i]) for key, _, _ in MANUAL_COLUMNS)
                            for i in range(n)),
                      "Quantized: clamp(round(sample / scale) + zero-point, qmin, qmax); "
                      "Dequantized: (quantized - zero-point) × scale; Clipped: -1 below the range, +1 above.")
    advice = ("Manual mode: scale and zero-point are given per channel, so there is no scheme to compare."
              if rows is not None else "Manual mode: no rows were entered.")
    return ReportModel(title=title, tensor_name=tensor_name, source=source_description,
                       settings=tuple((str(k), str(v)) for k, v in settings), advice=advice, schemes=(),
                       detail="", n_values=n, n_channels=n, channel_table=None, channel_errors=None,
                       values_table=None, ranges=None, errors=None, histogram=None, frontier=(),
                       manual_table=table)
