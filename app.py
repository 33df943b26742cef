"""quantcalc: per-tensor vs per-channel vs per-group quantization calculator (Panel + Bokeh).

Run ``panel serve app.py`` (server) or ``panel convert app.py --to pyodide-worker`` (browser only): the same
file runs unchanged in both, so it uses no threads, subprocesses, local files or pandas.

This file does no quantization math: every number (scales, codes, errors, bytes, advice, frontier,
exports) comes from ``quantcore``. It only reads inputs, keeps settings, lays numbers out, and thins
data for plots (never more than ~20k points per plot; the plot says when it thinned).

Reads like a table of contents:
  1. constants and small helpers (escaping, formatting)
  2. ``QuantCalcSettings``: every control is a parameter; results are computed once per change, cached
  3. views (``pn.viewable.Viewer``): inputs, settings, comparison, tables, plots, exports, docs
  4. layout and URL sync at the bottom

Pyodide note: the worker's message handlers run in this module's globals and bind ``state``, ``patch``,
``location``, ``json``, ``loc_data``; no module-level name here uses those.
"""
# No ``from __future__ import ...`` here: ``panel convert`` runs its own lines before this file's code, where a
# __future__ import is a SyntaxError (build/build_site.py refuses one).
import asyncio
import base64
import html
import io as _bytes_io
import re
import time
from collections.abc import Callable

import numpy as np
import panel as pn
import param
from panel.reactive import ReactiveHTML
from bokeh.models import (
    BasicTicker,
    BasicTickFormatter,
    BoxAnnotation,
    CategoricalColorMapper,
    ColorBar,
    ColumnDataSource,
    FactorRange,
    HoverTool,
    Legend,
    LinearColorMapper,
    LinearScale,
    LogScale,
    LogTicker,
    LogTickFormatter,
    Range1d,
    Span,
    TapTool,
)
from bokeh.palettes import Category10_10, RdYlGn11
from bokeh.plotting import figure

from panel.io.document import MockSessionContext
from panel.io.state import set_curdoc

import quantcore as qc
import quantcore.ggml as qc_ggml
import quantcore.examples as qc_examples
import quantcore.io as qc_io
import quantcore.io.imatrix as qc_imatrix
import quantcore.names as qc_names
import quantcore.plan as qc_plan
import quantcore.scan as qc_scan
import quantcore.schemes as qc_schemes
import quantcalc_ui.modelscan as qc_model
from quantcore.io.ranges import READ_AHEAD, ByteRequests, NeedBytes, RangeCache
import quantcore.report as qc_report
import quantcore.steps as qc_steps
from quantcore.params import SYMMETRIC_SCALES

pn.extension(notifications=False)

# --------------------------------------------------------------------------------------------------
# 1. constants and helpers
# --------------------------------------------------------------------------------------------------

GGUF_PRESETS = tuple(qc.preset_names("gguf"))     # every GGUF block type (quantcore.presets)
FLOAT_SCHEMES = tuple(qc.preset_names("float"))   # float / codebook schemes (fp8, mxfp6, mxfp4_e2m1, nvfp4, nf4, ...)
SCHEMES = ("per-tensor", "per-channel", "per-group") + GGUF_PRESETS + FLOAT_SCHEMES
RANGE_METHODS = {
    "data min/max": "minmax",
    "percentile": "percentile",
    "MSE-optimal": "mse",
    "KL divergence": "kl",
    "custom min/max": "custom",
}
MAX_PLOT_POINTS = 20_000     # never ship more than this many points to one plot
MAX_CHANNEL_VALUES = 4_096   # points of one channel shown in the reconstruction plot
SAMPLE_TABLE_LIMIT = 10_000  # per-sample table rows
MAX_PASTE_CHARS = 4_000_000  # pasted text (a 4096 x 64 block of 15-character numbers); larger: upload a file
FRONTIER_AUTO_LIMIT = 1 << 20  # elements; above this the frontier sweep waits for a button
FRONTIER_DELAY = 0.4  # seconds after the results before the automatic frontier sweep starts
FRONTIERS_KEPT = 8  # completed frontier sweeps kept per session (a few hundred bytes each)
SWEEP_BITS = (2, 3, 4, 5, 6, 8)  # the frontier's bit widths (each at the granularities of _sweep_granularities)
STEP_SECONDS = 0.1  # a tick of stepwise work runs about this long (one range-search candidate at least)
STEPWISE_ABOVE = 1 << 20  # elements; above this schemes are computed one per tick (progress shown, cancellable)
# (below it the frontier is computed right after the results are shown, never before them)
UPLOAD_ACCEPT = ".npy,.npz,.csv,.txt,.safetensors,.gguf"


def esc(text: object) -> str:
    """HTML-escape anything untrusted (tensor names, channel labels, file names, error messages)."""
    return html.escape(str(text), quote=True)


APP_CSS = """
.qc-help dt { font-weight: 600; margin-top: 0.4em; } .qc-help dd { margin: 0.1em 0 0 1em; color: #404040; }
.qc-h { font-size: 1.15em; margin: 0.4em 0 0.2em 0; color: #1a1a1a; }
h1.qc-title { font-size: 1.5em; margin: 0.2em 0; color: #1a1a1a; }
.qc-note, .qc-sub { color: #404040; margin: 0.1em 0 0.4em 0; }
.qc-advice { background: #eef6ee; border-left: 4px solid #2c7a2c; padding: 0.4em 0.6em; margin: 0.3em 0; }
.qc-scroll { overflow-x: auto; }
table.qc-table { border-collapse: collapse; font-size: 0.86em; width: 100%; }
table.qc-table caption { text-align: left; color: #404040; padding-bottom: 0.2em; }
table.qc-table th, table.qc-table td { border-bottom: 1px solid #ddd; padding: 3px 5px; text-align: right;
  white-space: nowrap; }
table.qc-table th[scope=row] { text-align: left; font-weight: normal; }
table.qc-table tr.qc-best { background: #fff4cc; font-weight: 600; }
table.qc-table tr.qc-selected { background: #dbe9f7; }
table.qc-table tr.qc-over { color: #777; }
table.qc-table tr[data-channel] { cursor: pointer; }
table.qc-table tr[data-channel]:focus { outline: 2px solid #1f5fa8; outline-offset: -2px; }
.qc-best-tag { color: #7a4b00; }
details.qc-docs { border: 1px solid #ccc; border-radius: 4px; padding: 0.3em 0.7em; margin: 0.4em 0; }
details.qc-docs summary { cursor: pointer; font-weight: 600; }
.qc-name { font-family: monospace; background: #f3f3f3; padding: 0 0.25em; }
.qc-msg { border-left: 4px solid; padding: 0.35em 0.6em; margin: 0.2em 0; white-space: pre-wrap;
  overflow-wrap: anywhere; }
.qc-msg-danger { background: #fdecea; border-color: #b3261e; color: #5f1410; }
.qc-msg-warning { background: #fff4e5; border-color: #b35c00; color: #5a2e00; }
.qc-msg-info { background: #eaf2fb; border-color: #1f5fa8; color: #0d2f57; }
.qc-busy { display: inline-flex; align-items: center; gap: 0.4em; color: #404040; white-space: nowrap; }
.qc-bar { width: 8em; height: 0.8em; vertical-align: middle; margin-left: 0.4em; }
.qc-spin { width: 16px; height: 16px; border: 3px solid #c8d6e8; border-top-color: #1f5fa8; border-radius: 50%;
  animation: qc-spin 0.8s linear infinite; }
@keyframes qc-spin { to { transform: rotate(360deg); } }
@media (prefers-reduced-motion: reduce) { .qc-spin { animation: none; } }
"""


def html_pane(obj: str = "", **kw) -> pn.pane.HTML:
    """An HTML pane carrying the app's CSS (Panel renders each pane in its own shadow root)."""
    return pn.pane.HTML(obj, stylesheets=[APP_CSS], **kw)


def fmt(value: object, digits: int = 6) -> str:
    """Format a number for display (no rounding of results beyond what is shown)."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return esc(value)
    if np.isnan(v):
        return "–"
    if np.isinf(v):
        return "∞" if v > 0 else "−∞"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.{digits}g}"


def safe_filename(name: str, suffix: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name or "tensor").strip("._") or "tensor"
    return f"{stem[:60]}_{suffix}"


def parse_number_list(text: str, what: str) -> float | list[float] | None:
    """Read a custom range field: empty, one number, or one number per channel (commas/spaces)."""
    parts = [p for p in re.split(r"[,\s;]+", text.strip()) if p]
    if not parts:
        return None
    values = []
    for i, p in enumerate(parts):
        try:
            values.append(float(p.replace("−", "-")))
        except ValueError:
            raise ValueError(f"{what}: item {i + 1} ({p[:20]!r}) is not a number") from None
    return values[0] if len(values) == 1 else values


def later(step, doc=None, delay: float = 0.01) -> None:
    """Run ``step`` soon, after what is pending reaches the page, with the session's document current (a
    later tick does not set Panel's ``curdoc`` by itself; ``doc`` names it when the caller runs outside one).
    Natively on a timeout of ``delay`` seconds (with the document lock; not the next tick: Bokeh writes a
    callback's changes to the websocket after releasing the lock, and they must go out first), in Pyodide
    (no lock there) as an asyncio task."""
    doc = pn.state.curdoc or doc

    def in_doc() -> None:
        if doc is None:
            step()
            return
        with set_curdoc(doc):
            step()

    if getattr(pn.state, "_is_pyodide", False) or doc is None or doc.session_context is None:
        async def run() -> None:
            await asyncio.sleep(delay)   # lets the busy state reach the page first
            in_doc()

        asyncio.ensure_future(run())
    else:
        doc.add_timeout_callback(in_doc, int(delay * 1000))


# --------------------------------------------------------------------------------------------------
# 2. state: settings as parameters, results cached
# --------------------------------------------------------------------------------------------------

DATA_PARAMS = ("source", "example", "text", "manual_text", "upload_tensor", "syn_rows", "syn_cols",
               "syn_dist", "syn_spread", "syn_outliers", "syn_seed")
ANALYSIS_PARAMS = ("bits", "signed", "mapping", "narrow", "reduce_range", "rounding", "convention",
                   "symmetric_scale", "scale_dtype", "zero_point_dtype", "seed", "qmin", "qmax",
                   "range_method", "pct", "lo", "hi", "axis", "group", "compare", "detail", "budget")
URL_PARAMS = ("example", "source", "tensor_name", "channel", "syn_rows", "syn_cols", "syn_dist",
              "syn_spread", "syn_outliers", "syn_seed") + ANALYSIS_PARAMS


class ResultCache:
    """Engine results of the current data, by (scheme, channel axis): a settings change recomputes only the
    schemes it changes (a bits change leaves GGUF and float presets alone). Bounded: the oldest go first."""

    def __init__(self, limit: int = 32) -> None:
        self.limit = limit
        self.data_version = 0
        self._items: dict = {}

    def new_data(self) -> None:
        self.data_version += 1
        self._items.clear()

    def __contains__(self, key) -> bool:
        return key in self._items

    def get(self, key, compute):
        """The value for ``key``, computed once; a ValueError is kept too and raised again (a scheme the data
        cannot take is not tried again at every change)."""
        if key in self._items:
            self._items[key] = self._items.pop(key)   # most recently used last
            value = self._items[key]
            if isinstance(value, ValueError):
                raise ValueError(str(value))
            return value
        try:
            return self.put(key, compute())
        except ValueError as exc:
            self.put(key, exc)
            raise

    def put(self, key, value):
        self._items.pop(key, None)
        self._items[key] = value
        while len(self._items) > self.limit:
            self._items.pop(next(iter(self._items)))
        return value


class QuantCalcSettings(param.Parameterized):
    """Every control of the calculator, plus the cached results every view reads."""

    # --- input --------------------------------------------------------------------------------
    example = param.Selector(default="s3", objects=["s0", "s1", "s2", "s3"],
                             doc="Built-in example reproducing a seed document's worked numbers.")
    source = param.Selector(default="example", objects=["example", "paste", "upload", "synthetic", "manual"],
                            doc="Where the tensor comes from.")
    tensor_name = param.String(default="", doc="Carried into every table, file name and report.")
    text = param.String(default="", doc="Pasted values: one channel per line or ';', values by ',' or spaces.")
    manual_text = param.String(default="", doc="Manual mode: lines of channel, scale, zero-point, sample.")
    upload_tensor = param.String(default="", doc="Tensor picked from the uploaded file.")
    file_request = param.Dict(default={}, precedence=-1,
                              doc="Bytes of the uploaded file wanted next: {id, start, stop} (the page reads them "
                                  "with File.slice; the file itself never crosses whole).")
    file_status = param.String(default="", precedence=-1, doc="What reading the uploaded file is doing.")
    syn_rows = param.Integer(default=64, bounds=(1, 4096), doc="Synthetic: channels (rows).")
    syn_cols = param.Integer(default=256, bounds=(1, 4096), doc="Synthetic: values per channel.")
    syn_dist = param.Selector(default="normal", objects=["normal", "laplace", "uniform", "student-t"],
                              doc="Synthetic: distribution of each channel.")
    syn_spread = param.Number(default=1.0, bounds=(0.0, 4.0), doc="Synthetic: decades of spread of channel scales.")
    syn_outliers = param.Integer(default=0, bounds=(0, 64), doc="Synthetic: channels with large outliers.")
    syn_seed = param.Integer(default=0, bounds=(0, 2**31 - 1), doc="Synthetic: random seed.")

    # --- engine options -----------------------------------------------------------------------
    bits = param.Integer(default=8, bounds=(2, 16), doc="Integer bit width.")
    signed = param.Boolean(default=True, doc="Signed (qint) or unsigned (quint) codes.")
    mapping = param.Selector(default="symmetric", objects=["symmetric", "affine", "affine_float"],
                             doc="symmetric: zero-point 0; affine: integer zero-point; affine_float: x = min + scale*q.")
    narrow = param.Boolean(default=False, doc="Narrow range: drop the most negative code (int4 -> [-7, 7]).")
    reduce_range = param.Boolean(default=False, doc="Reduce range: one bit less (PyTorch fbgemm compatibility).")
    rounding = param.Selector(default="default", objects=["default", *qc.ROUNDINGS],
                              doc="Rounding rule for x / scale ('default': the convention's own).")
    convention = param.Selector(default="float64", objects=list(qc.CONVENTIONS),
                                doc="Arithmetic convention deciding the last bit (ties).")
    symmetric_scale = param.Selector(default="default", objects=["default", *SYMMETRIC_SCALES],
                                     doc="Symmetric scale rule: amax/qmax, amax/((qmax-qmin)/2) (PyTorch), ...")
    scale_dtype = param.Selector(default="fp32", objects=["fp32", "fp16", "bf16"],
                                 doc="How scales are stored (memory; fp16/bf16 also round the scale).")
    zero_point_dtype = param.Selector(default="int32", objects=["int32", "int16", "int8", "fp16", "none"],
                                      doc="How zero-points are stored (memory accounting).")
    seed = param.Integer(default=0, bounds=(0, 2**31 - 1), doc="Seed for stochastic rounding.")
    qmin = param.Integer(default=None, allow_None=True, bounds=(-(1 << 15), (1 << 16) - 1),
                         doc="Custom smallest code (with qmax; must include 0, as in PyTorch); empty: from the bits.")
    qmax = param.Integer(default=None, allow_None=True, bounds=(-(1 << 15), (1 << 16) - 1),
                         doc="Custom largest code (with qmin); empty: from the bits.")
    range_method = param.Selector(default="minmax", objects=list(RANGE_METHODS.values()),
                                  doc="How each block's [lo, hi] is chosen.")
    pct = param.Number(default=99.9, bounds=(50.0, 100.0), inclusive_bounds=(False, True),
                       doc="Percentile for the percentile range: the range is [P(100 - pct), P(pct)].")
    lo = param.String(default="", doc="Custom min: one number, or one per channel.")
    hi = param.String(default="", doc="Custom max: one number, or one per channel.")
    axis = param.Integer(default=0, bounds=(0, 7), doc="Channel axis of the tensor.")
    group = param.Integer(default=32, bounds=(1, 1 << 20), doc="Group size for per-group.")
    compare = param.ListSelector(default=["per-tensor", "per-channel", "per-group"], objects=list(SCHEMES),
                                 doc="Schemes to compare.")
    detail = param.Selector(default="per-channel", objects=list(SCHEMES),
                            doc="Scheme shown in the per-channel and per-sample tables and plots.")
    channel = param.Integer(default=0, bounds=(0, None), doc="Selected channel (linked across views).")
    budget = param.Number(default=None, allow_None=True, bounds=(0.5, 64.0),
                          doc="Bits per weight you can afford (payload + scales/zero-points); empty: no budget. "
                              "The advice then names the most accurate scheme within it.")

    imatrix_entry = param.Selector(default="", objects=[""],
                                   doc="The entry of the importance-matrix file used (llama.cpp names them by tensor).")

    # --- cached results (not controls) --------------------------------------------------------
    imatrix_info = param.String(default="", precedence=-1,
                                doc="The importance matrix in use and what it does to each GGUF scheme compared.")
    imatrix_error = param.String(default="", precedence=-1, doc="Why the importance-matrix file was refused.")
    busy = param.Boolean(default=False, precedence=-1)
    progress = param.String(default="", precedence=-1, doc="What a long computation is doing (one step at a time).")
    progress_done = param.Number(default=None, allow_None=True, bounds=(0, 1), precedence=-1,
                                 doc="Fraction of that step done, when known (a range search, a frontier sweep).")
    input_error = param.String(default="", precedence=-1, doc="Error about the data input.")
    input_note = param.String(default="", precedence=-1,
                              doc="What loading new data reset (the example's own options), said next to the input.")
    source_info = param.String(default="", precedence=-1,
                               doc="What was loaded: dtype in the file, shape, stored bits/weight.")
    settings_error = param.String(default="", precedence=-1, doc="Error about the engine options.")
    schemes_skipped = param.String(default="", precedence=-1,
                                   doc="Compared schemes the data cannot take (each with the reason); the rest are shown.")
    url_error = param.String(default="", precedence=-1)
    data = param.Parameter(default=None, precedence=-1, doc="np.ndarray or list of 1-D arrays.")
    labels = param.List(default=[], precedence=-1, doc="Channel labels (untrusted text).")
    comparison = param.Parameter(default=None, precedence=-1, doc="qc.compare(...) result.")
    detail_result = param.Parameter(default=None, precedence=-1, doc="QuantResult shown in detail.")
    tensor_result = param.Parameter(default=None, precedence=-1, doc="Per-tensor QuantResult (range plot).")
    frontier = param.List(default=[], precedence=-1, doc="qc.sweep rows.")
    frontier_pending = param.Boolean(default=False, precedence=-1)
    manual_rows = param.Parameter(default=None, precedence=-1, doc="qc.manual(...) table.")
    upload_names = param.List(default=[], precedence=-1)
    revision = param.Integer(default=0, precedence=-1, doc="Bumped after every recompute.")

    def __init__(self, **params):
        super().__init__(**params)
        self._file: RangeCache | None = None       # the uploaded file, known by the byte ranges read so far
        self._file_tensor = None                    # the chosen tensor, decoded (quantcore.io.LoadedTensor)
        self._file_infos: list = []                 # its tensors (quantcore.io.TensorInfo)
        self._header_end = 0                        # bytes the header took (kept when a tensor is dropped)
        self._requests = ByteRequests()             # the byte range on its way, and what to do with it
        self._upload_filename = ""
        self._file_key = ""                         # which of the page's chosen files (BrowserFile ``key``)
        self._open_tensor = ""                      # the tensor to show first once the header is read
        self._applying = False
        self._names: list[str] | None = None
        self._generation = 0          # bumped by every change; work for an older one is dropped
        self._data_pending = False    # a change asked to reload the data and that has not run yet
        self._doc = None              # the session's document (later ticks run with it current)
        self._announced = None        # the piece of stepwise work the page was last told about
        self._job = None              # (key, quantcore steps) of the scheme being computed a slice at a time
        self._results = ResultCache()  # per (data, scheme): only what a change touches is recomputed
        self._name_edited = False     # the user typed a tensor name: new data does not overwrite it
        self.url_refused: set[str] = set()   # URL settings whose values were refused (build_app's url_error)
        self._frontier_key = None     # the settings the shown frontier was swept with
        self._frontiers: dict = {}    # completed sweeps by those settings (data version included), newest last
        self._imatrix_file = ""       # the importance-matrix file, its entries, the weights in use
        self._imatrix_entries: dict[str, np.ndarray] = {}
        self._imatrix: np.ndarray | None = None
        self._imatrix_version = 0     # bumped per new weights: results computed with them are keyed by it
        self._apply_example(self.example, keep=set())
        self._load_data()
        self._analyze()
        self._frontier_if_auto()
        self.param.watch(self._on_change, list(DATA_PARAMS + ANALYSIS_PARAMS + ("tensor_name",)))
        self.param.watch(self._on_imatrix_entry, "imatrix_entry")

    # --- importance matrix (GGUF types) ---------------------------------------------------------
    def load_imatrix(self, filename: str, data: bytes) -> None:
        """A llama.cpp importance-matrix file (``llama-imatrix``'s .gguf or legacy .dat) or a 1-D .npy from the
        page: its entries, the one for this tensor chosen (by name, the only one, or the first of the row's
        length). A file that cannot be read is refused with the reason; the one in use stays."""
        try:
            if qc_io.detect_kind_of(data, filename=filename) == "npy":
                w = np.asarray(qc_io.load_tensor(data, filename=filename).array)
                if w.ndim != 1:
                    raise qc_io.InputError(f"a .npy importance matrix is 1-D (one weight per column); this one "
                                           f"has shape {w.shape}", source=filename)
                entries = {filename: w.astype(np.float32)}
            else:
                entries = qc_imatrix.read_imatrix(data, filename=filename)
        except ValueError as exc:
            self.imatrix_error = str(exc)
            return
        self._imatrix_file, self._imatrix_entries = filename, entries
        row = self.data.shape[-1] if isinstance(self.data, np.ndarray) and self.data.ndim else None
        name = self.tensor_name.strip()
        chosen = qc_imatrix.default_entry(entries, [name, qc_names.hf_to_gguf(name)], row) or ""
        self.imatrix_error = ""
        self.param.imatrix_entry.objects = ["", *entries]
        if chosen == self.imatrix_entry:
            self._on_imatrix_entry()
        else:
            self.imatrix_entry = chosen

    def clear_imatrix(self) -> None:
        self._imatrix_file, self._imatrix_entries = "", {}
        self.imatrix_error = ""
        self.param.imatrix_entry.objects = [""]
        if self.imatrix_entry == "":
            self._on_imatrix_entry()
        else:
            self.imatrix_entry = ""

    def _on_imatrix_entry(self, *events) -> None:
        self._imatrix = self._imatrix_entries.get(self.imatrix_entry)
        self._imatrix_version += 1
        self._schedule(False)

    def _imatrix_for(self, spec) -> np.ndarray | None:
        """The importance matrix for a scheme: GGUF types whose llama.cpp quantizer takes one, else None."""
        if self._imatrix is None or spec.kind != "gguf":
            return None
        t = spec.element.type
        return self._imatrix if (t.uses_weights or t.row_weighted) else None

    def _result_key(self, spec) -> tuple:
        return (spec, self.axis, self._imatrix_version if self._imatrix_for(spec) is not None else 0)

    def _imatrix_summary(self, results: dict) -> str:
        """What the importance matrix does to each compared GGUF scheme: the importance-weighted output error
        with and without it (the same type's unweighted search), or that llama.cpp does not use one."""
        if self._imatrix is None:
            return (f"{self._imatrix_file}: pick the entry for this tensor." if self._imatrix_entries else "")
        said = []
        for r in results.values():
            if r.spec.kind != "gguf":
                continue
            if r.imatrix is None:
                said.append(f"{r.spec.label}: llama.cpp uses no importance matrix for this type")
                continue
            try:
                plain = self._result(r.spec, weighted=False).weighted_output_mse(r.imatrix)
            except ValueError:
                continue
            said.append(f"{r.label}: weighted output error {r.imatrix_output_mse:.4g} "
                        f"(without the imatrix {plain:.4g}), RMSE {r.metrics.rmse:.4g}")
        entry = "" if self.imatrix_entry == self._imatrix_file else f" · {self.imatrix_entry}"
        head = f"Importance matrix {self._imatrix_file}{entry} ({self._imatrix.size:,} columns)"
        return head + (". " + "; ".join(said) if said else ". Compare a GGUF scheme (Q4_K, IQ4_XS, ...) to use it.")

    # --- reactions ----------------------------------------------------------------------------
    def _on_change(self, *events: param.parameterized.Event) -> None:
        if self._applying:
            return
        names = {e.name for e in events}
        if "example" in names:
            self._apply_example(self.example, keep=self._kept_on_example_change(names))
            if "source" not in names:
                self.source = "example"
                names.add("source")
        elif names & {"text"} and self.source == "example":
            self._applying = True
            self.source = "paste"
            self._applying = False
            names.add("source")
        if "source" in names or "example" in names:
            self.input_note = ""
        if "source" in names and self.source not in ("example", "manual") and "example" not in names:
            self._reset_example_options(keep=names)  # what this same change (or a URL at load) sets stays
        if "source" in names and self.source == "manual" and not self.manual_text.strip():
            # A worked start the user edits (seed 001's filters, in that seed's code range), never an empty page.
            fmt = {k: v for k, v in example_settings(qc.get_example("s1")).items()
                   if k in ("bits", "signed", "narrow", "reduce_range") and k not in names}
            self._applying = True
            try:
                self.param.update(manual_text=qc_examples.manual_lines("s1"), **fmt)
            finally:
                self._applying = False
            self.input_note = ("Manual mode starts with seed 001's four filters (scale and zero-point from each "
                               "filter's min/max, int8): replace the lines with your own.")
            names.add("manual_text")
        if names == {"tensor_name"}:
            self._name_edited = True
            # The views redraw on ``revision``, Bokeh figures included. Natively a widget's own event runs
            # without the document lock, where changing a Bokeh model raises "_pending_writes should be
            # non-None" (issue 12): redraw on a tick that holds it.
            if pn.state.curdoc is None:
                self.revision += 1
            else:
                later(lambda: setattr(self, "revision", self.revision + 1), pn.state.curdoc)
            return
        if "tensor_name" in names:
            self._name_edited = True
        if "upload_tensor" in names and self.source == "upload" and self._file is not None:
            self._file_tensor = None
            self._read_tensor()   # by range; it schedules the analysis once the tensor is in
            return
        need_data = bool(names & set(DATA_PARAMS))
        self._schedule(need_data)

    def _reset_example_options(self, keep: set[str]) -> None:
        """New data (paste, upload, synthetic): the options an example chose for its own data would break it or
        hide schemes (a custom range per channel of the example, a channel, a one-scheme comparison). Reset
        those to the defaults and say so; ``keep`` are options the user set in the same change or the URL."""
        defaults = {"range_method": "minmax", "lo": "", "hi": "", "compare": self.param.compare.default,
                    "detail": self.param.detail.default, "channel": 0}
        changed = {k: v for k, v in defaults.items() if k not in keep and getattr(self, k) != v}
        if not changed:
            return
        words = {"range_method": "range → data min/max", "lo": None, "hi": None,
                 "compare": "schemes compared → per-tensor, per-channel, per-group", "detail": None,
                 "channel": "selected channel → 0"}
        said = [words[k] for k in changed if words[k]]
        self._applying = True
        try:
            self.param.update(**changed)
        finally:
            self._applying = False
        if said:
            self.input_note = "New data: the example's own settings were reset (" + "; ".join(said) + ")."

    def _kept_on_example_change(self, names: set[str]) -> set[str]:
        """Settings an example must not overwrite.

        A user picking an example: only settings changed in the same batch. A URL like
        ``?example=s1&bits=4``: every setting the URL names (its values were applied with the example;
        a value equal to the current one makes no event, so the batch alone cannot tell).
        """
        loc = pn.state.location
        query = dict(loc.query_params) if loc is not None else {}
        if query.get("example") == self.example:
            names = names | (set(query) - self.url_refused)   # a refused URL value keeps nothing
        return {n for n in names if n in URL_PARAMS} - {"example", "source"}

    def _schedule(self, need_data: bool) -> None:
        """Recompute behind the busy indicator, then (when cheap enough) the frontier.

        Server: show the indicator now, compute on the next tick (with the document lock), so it reaches the
        browser first. Pyodide: the same through an asyncio task (no document lock there). The results are
        published before the frontier sweep starts, and a newer change supersedes older pending work (only
        the newest change's computation runs). No document (build time, plain Python): compute at once.
        """
        self._data_pending |= need_data
        self._generation += 1
        generation = self._generation
        if pn.state.curdoc is None:
            self._run_if_current(generation)
            return
        self._doc = pn.state.curdoc
        self.busy = True
        self._later(lambda: self._run_if_current(generation))

    def _later(self, step, delay: float = 0.01) -> None:
        later(step, self._doc, delay)

    def _run_if_current(self, generation: int) -> None:
        if generation != self._generation:
            return
        if pn.state.curdoc is not None and self._step():
            self._later(lambda: self._run_if_current(generation))   # a newer change may supersede what is left
            return
        try:
            need_data, self._data_pending = self._data_pending, False
            self._recompute(need_data)
        finally:
            self.busy = False
            self.param.update(progress="", progress_done=None)
            self._announced = None
        if pn.state.curdoc is None:
            self._frontier_if_auto()
        else:
            # once the settings have been still a moment: a user stepping through options does not start
            # sweeps the next change cancels, and the page draws the new results meanwhile
            self._later(lambda: self._frontier_if_auto(generation), FRONTIER_DELAY)

    def _step(self) -> bool:
        """On a large tensor, do one piece of the pending work and return True: first say what comes next (a
        tick of its own, so the page shows it while the work runs), then do it (load the data, or about
        STEP_SECONDS of one scheme's computation: a KL or MSE range search on 4096 x 4096 runs for seconds, in
        steps of one candidate). Between pieces a newer change cancels the rest. False when what is left is
        quick (small data, or every scheme's result cached)."""
        if self._data_pending:
            if self._announced != "data":
                return self._announce("data", "Reading the data")
            self._data_pending = False
            self._load_data()
            return isinstance(self.data, np.ndarray) and self.data.size > STEPWISE_ABOVE
        if self.source == "manual" or not isinstance(self.data, np.ndarray) or self.data.size <= STEPWISE_ABOVE:
            return False
        try:
            schemes = self.schemes()
            specs = [self.scheme_spec(s) for s in schemes]
        except ValueError:
            return False   # _analyze says what is wrong
        todo = [(name, spec) for name, spec in zip(schemes, specs) if self._result_key(spec) not in self._results]
        if not todo:
            return False
        name, spec = todo[0]
        key = self._result_key(spec)
        if self._announced != key:
            done = len(specs) - len(todo)
            self.progress_done = None
            return self._announce(key, f"Computing {name} ({done + 1} of {len(specs)} schemes, "
                                       f"{self.data.size:,} values)")
        job_key = (self._results.data_version, key)
        if self._job is None or self._job[0] != job_key:   # a scheme no longer wanted is dropped here
            self._job = (job_key, qc.analyze_steps(self.data, spec, channel_axis=self.axis,
                                                   channel_names=self._names, imatrix=self._imatrix_for(spec)))
        try:
            finished, value = qc_steps.advance(self._job[1], STEP_SECONDS)
        except ValueError as exc:
            self._job = None
            self._results.put(key, exc)   # _analyze shows why, and compares the other schemes
            return True
        if finished:
            self._job = None
            self._results.put(key, value)
        else:
            self.progress_done = value
        return True

    def _announce(self, key, text: str) -> bool:
        self._announced, self.progress = key, text
        return True

    def _recompute(self, need_data: bool) -> None:
        if need_data:
            self._load_data()
        self._analyze()

    def _frontier_if_auto(self, generation: int | None = None) -> None:
        """The error-vs-memory sweep, when the tensor is small enough to sweep without being asked."""
        if generation is not None and generation != self._generation:
            return
        result = self.detail_result
        if result is None or self.source == "manual":
            return
        key = self._frontier_settings()
        if key == self._frontier_key:
            return  # bits, schemes compared, detail, ...: nothing the sweep depends on changed
        if result.metrics.n > FRONTIER_AUTO_LIMIT:
            self.frontier_pending = True
        elif generation is None:
            self._show_frontier(key, self._sweep_or_empty())
        else:
            self._sweep_stepwise(generation, key)

    def _show_frontier(self, key, rows: list[dict]) -> None:
        """Show a completed sweep and keep it: settings seen before get their frontier back with no new sweep."""
        self._frontiers.pop(key, None)
        self._frontiers[key] = rows
        while len(self._frontiers) > FRONTIERS_KEPT:
            self._frontiers.pop(next(iter(self._frontiers)))
        self._frontier_key = key
        self.param.update(frontier=rows, frontier_pending=False)

    def _frontier_settings(self):
        """What the frontier depends on: the data and the sweep's base scheme (its bit width is swept)."""
        try:
            base = self._sweep_base()
        except ValueError:
            return None
        return (self._results.data_version, base.with_(fmt=qc.IntFormat(8, base.fmt.signed, base.fmt.narrow)),
                self.axis)

    def _sweep_stepwise(self, generation: int, key, announce: bool = False) -> None:
        """The frontier about STEP_SECONDS per tick (a scheme, or a part of one's range search): a newer
        change (bits, mapping, ...) stops it, so the page stays responsive while a large tensor is swept (in
        the browser worker too). ``announce``: show which scheme of how many, and how far (asked for by the
        user on a large tensor)."""
        try:
            specs = qc_report.sweep_specs(self.data, self._sweep_base(), SWEEP_BITS, self._sweep_granularities())
        except ValueError:
            return
        rows: list[dict] = []
        job = None

        def step() -> None:
            nonlocal job
            if generation != self._generation:
                return   # the newer change's results clear the progress line
            if len(rows) == len(specs):
                self._show_frontier(key, qc_report.mark_pareto(rows))
                if announce:
                    self.param.update(progress="", progress_done=None)
                return
            if job is None:
                job = qc.analyze_steps(self.data, specs[len(rows)], channel_axis=self.axis)
            try:
                finished, value = qc_steps.advance(job, STEP_SECONDS)
            except ValueError:
                if announce:
                    self.param.update(progress="", progress_done=None)
                return  # the frontier is extra; the main results stand on their own
            if finished:
                rows.append(qc_report.sweep_row(value))
                job = None
            if announce:
                part = 0.0 if finished else value
                self.param.update(progress=f"Sweeping the frontier: scheme {min(len(rows) + 1, len(specs))} of "
                                           f"{len(specs)} ({self.data.size:,} values)",
                                  progress_done=(len(rows) + part) / len(specs))
            self._later(step)

        step()

    # --- examples -------------------------------------------------------------------------------
    def _apply_example(self, key: str, keep: set[str]) -> None:
        """Load an example's text, name and settings; parameters in ``keep`` keep their values."""
        ex = qc.get_example(key)
        if "tensor_name" not in keep:
            self._name_edited = False
        settings = dict(example_settings(ex))
        settings = {k: v for k, v in settings.items() if k not in keep and k in self.param}
        self._applying = True
        try:
            self.param.update(**settings)
        finally:
            self._applying = False

    # --- data -----------------------------------------------------------------------------------
    def set_upload(self, data: bytes | None, filename: str) -> None:
        """A whole file's bytes at once (tests, small files): the same path as a file read by range."""
        self.open_file(filename, len(data) if data else 0, data)

    def open_file(self, filename: str, size: int, data: bytes | None = None, *, file_key: str = "",
                  tensor: str = "") -> None:
        """A file was chosen: read its header (by byte range, see ``file_request``), then ``tensor`` (else the first).

        ``data``: the file's first bytes when already at hand (a whole small file, or a header read elsewhere);
        ``file_key``: which file of the page the requests name (one chosen in the Model view, say)."""
        self._upload_filename = filename or ""
        self._file_key, self._open_tensor = file_key, tensor
        self._file = RangeCache(size, self._upload_filename or None)
        if data:
            self._file.add(0, data)
        self._file_tensor, self._file_infos, self._header_end = None, [], 0
        self._requests.cancel()
        self.input_error = ""
        leaving = self.source not in ("upload", "manual")
        self._applying = True
        try:
            self.upload_names = []
            self.upload_tensor = ""
            self.source = "upload"
        finally:
            self._applying = False
        self._name_edited = False  # a new file: its tensor names the results
        if leaving:
            self._reset_example_options(keep=set())
        if size == 0:
            self._file = None
            self._file_failed(f"{filename}: the file is empty")
            return
        self._read_header()

    def _read_header(self) -> None:
        try:
            infos = qc_io.list_tensors(self._file, filename=self._upload_filename or None)
        except NeedBytes as need:
            self._fetch(need, self._read_header, "header")
            return
        except ValueError as exc:
            self._file_failed(str(exc))
            return
        self._header_end = self._file.cached_bytes
        names = [str(t.name) for t in infos if t.loadable]
        self._file_infos = infos
        if not names:
            self._file_failed(f"{self._upload_filename}: none of its {len(infos)} tensor(s) has a type this app "
                              "can load")
            return
        self._applying = True
        try:
            self.upload_names = names
            self.upload_tensor = self._open_tensor if self._open_tensor in names else names[0]
        finally:
            self._applying = False
        self._read_tensor()

    def _read_tensor(self) -> None:
        if self._file is None:
            return
        try:
            loaded = qc_io.load_tensor(self._file, name=self.upload_tensor or None,
                                       filename=self._upload_filename or None)
        except NeedBytes as need:
            self._fetch(need, self._read_tensor, f"tensor {self.upload_tensor}")
            return
        except ValueError as exc:
            self._file_failed(str(exc))
            return
        self._file_tensor = loaded
        self._file.drop(self._header_end)   # the decoded tensor is kept; its raw bytes are not
        self.file_status = ""
        self._schedule(True)

    def _fetch(self, need: NeedBytes, then, what: str) -> None:
        request = self._requests.ask(need, self._file.size, then)
        self.file_status = (f"Reading {self._upload_filename} ({self._file.size / 2**20:,.1f} MiB): {what}, "
                            f"{self._file.cached_bytes / 2**20:,.1f} MiB read")
        self.file_request = {**request, "file": self._file_key}

    def file_bytes(self, request_id: int, start: int, data: bytes) -> None:
        """The page answers ``file_request`` ``request_id`` (an older request's answer is ignored)."""
        then = self._requests.take(request_id)
        if then is None or self._file is None:
            return
        try:
            self._file.add(start, data)
        except ValueError as exc:
            self._file_failed(f"{self._upload_filename}: {exc}")
            return
        then()

    def file_unreadable(self, request_id: int, why: str) -> None:
        """The page could not read the bytes of request ``request_id`` (the file was moved, deleted, ...)."""
        if self._requests.take(request_id) is not None:
            self._file_failed(f"{self._upload_filename}: the browser could not read the file ({why}); choose it again")

    def _file_failed(self, message: str) -> None:
        self._file_tensor = None
        self._requests.cancel()
        self.file_status = ""
        self.input_error = message
        self._schedule(True)

    def _load_data(self) -> None:
        if self.source != "upload":
            self.input_error = ""
        data, labels, name, info = None, [], "", ""
        try:
            if self.source in ("example", "paste"):
                data, labels = read_pasted(self.text)
                name = f"example {self.example}" if self.source == "example" else "pasted values"
            elif self.source == "upload":
                if self._file is None:
                    if self.input_error:
                        raise ValueError(self.input_error)
                    raise ValueError("choose a file to upload (.npy, .npz, .csv, .safetensors, .gguf)")
                loaded = self._file_tensor
                if loaded is not None:
                    data, labels = loaded.array, list(loaded.channel_names or [])
                    name = loaded.name or self._upload_filename
                    info = stored_as(loaded)
                elif self.input_error:
                    raise ValueError(self.input_error)
            elif self.source == "synthetic":
                data = qc.synthetic(rows=self.syn_rows, cols=self.syn_cols, distribution=self.syn_dist,
                                    channel_spread=self.syn_spread, outlier_channels=self.syn_outliers,
                                    seed=self.syn_seed)
                labels = []
                name = f"synthetic {self.syn_dist} {self.syn_rows}×{self.syn_cols} (seed {self.syn_seed})"
            elif self.source == "manual":
                data, labels, name = None, [], "manual parameters"
        except ValueError as exc:
            self.input_error = str(exc)
            data, labels = None, []
        if name and not self._name_edited:
            self._applying = True
            try:
                self.tensor_name = name
            finally:
                self._applying = False
        self.source_info = info
        if data is not None and not isinstance(data, list):
            data = np.asarray(data)
            if data.ndim == 0:
                data = data.reshape(1)
        self._names = [str(s) for s in labels] or None  # None: the engine names channels ch0, ch1, ...
        self._results.new_data()
        self._frontier_key = None
        self._frontiers.clear()
        self.param.update(data=data, labels=list(self._names or []))

    # --- analysis -------------------------------------------------------------------------------
    def scheme_spec(self, scheme: str):
        """The quantcore spec for one scheme name under the current options."""
        if scheme in GGUF_PRESETS or scheme in FLOAT_SCHEMES:
            return qc.preset(scheme)
        if (self.qmin is None) != (self.qmax is None):
            raise ValueError("custom code range: give both qmin and qmax (or neither)")
        fmt_ = qc.IntFormat(bits=self.bits, signed=self.signed, narrow=self.narrow, reduce_range=self.reduce_range,
                            custom_qmin=self.qmin, custom_qmax=self.qmax)
        ndim = self.data.ndim if isinstance(self.data, np.ndarray) else 2
        group_axis = -1 if (ndim < 2 or self.axis != ndim - 1) else 0
        gran = {"per-tensor": qc.PerTensor(), "per-channel": qc.PerChannel(axis=self.axis),
                "per-group": qc.PerGroup(size=self.group, axis=group_axis)}[scheme]
        if self.range_method == "minmax":
            rng = qc.MinMax()
        elif self.range_method == "percentile":
            rng = qc.Percentile(pct=self.pct)
        elif self.range_method == "mse":
            rng = qc.MSEOptimal()
        elif self.range_method == "kl":
            rng = qc.KLDivergence()
        else:
            lo = parse_number_list(self.lo, "custom min")
            hi = parse_number_list(self.hi, "custom max")
            if lo is None or hi is None:
                raise ValueError("custom range: enter a min and a max (one number, or one per channel)")
            rng = qc.CustomRange(lo=lo, hi=hi)
        rule = qc.IntScale(self.mapping, rng, none_if_default(self.symmetric_scale))
        return qc.QuantSpec(element=fmt_, granularity=gran, scale_rule=rule, convention=self.convention,
                            rounding=none_if_default(self.rounding), seed=self.seed,
                            scale_dtype=self.scale_dtype, zero_point_dtype=self.zero_point_dtype)

    def schemes(self) -> list[str]:
        chosen = [s for s in SCHEMES if s in self.compare]
        if self.detail not in chosen:
            chosen.append(self.detail)
        return chosen

    def _analyze(self) -> None:
        out = dict(settings_error="", schemes_skipped="", comparison=None, detail_result=None, tensor_result=None,
                   manual_rows=None)
        key = self._frontier_settings()
        if self._frontier_key != key:
            # another sweep's settings: the one kept for these, else none until it is swept
            self._frontier_key = key if key in self._frontiers else None
            out.update(frontier=self._frontiers.get(key, []), frontier_pending=False)
        try:
            if self.source == "manual":
                self.input_error = ""
                if self.manual_text.strip():
                    names, scale, zp, sample = read_manual(self.manual_text)
                    out["manual_rows"] = qc.manual(
                        names, scale, zp, sample, qc.IntFormat(bits=self.bits, signed=self.signed,
                                                               narrow=self.narrow, reduce_range=self.reduce_range),
                        rounding=none_if_default(self.rounding) or qc.CONVENTIONS[self.convention].rounding,
                        convention=self.convention)
            elif self.data is not None:
                specs = {s: self.scheme_spec(s) for s in self.schemes()}
                results, skipped = {}, []
                for name, spec in specs.items():
                    try:
                        results[name] = self._result(spec)
                    except ValueError as exc:
                        if name == self.detail:
                            raise
                        skipped.append(f"{name}: {exc}")   # the others are still compared
                cmp = qc_report.Comparison(tuple(results.values()))
                out["comparison"] = cmp
                out["schemes_skipped"] = "Not compared: " + "; ".join(skipped) if skipped else ""
                out["detail_result"] = results[self.detail]
                out["tensor_result"] = (results["per-tensor"] if "per-tensor" in results
                                        else self._per_tensor_or_none())
                out["labels"] = [str(n) for n in out["detail_result"].channel_names]
                out["imatrix_info"] = self._imatrix_summary(results)
        except ValueError as exc:
            out["settings_error"] = str(exc)
            if self.source == "manual":
                out["settings_error"] = ""
                self.input_error = str(exc)
        self.param.update(**out)
        n_channels = len(self.labels) if self.labels else 1
        if self.channel >= n_channels:
            self.channel = 0
        self.revision += 1

    def _sweep_base(self):
        """The frontier's base scheme: the current options per channel (a custom range becomes data min/max:
        one fixed range cannot serve every granularity)."""
        base = self.scheme_spec("per-channel")
        if isinstance(base.range, qc.CustomRange):
            base = base.with_(range=qc.MinMax())
        return base

    def _sweep_granularities(self) -> tuple:
        return qc.PerTensor(), qc.PerChannel(axis=self.axis), qc.PerGroup(32), qc.PerGroup(128)

    def _sweep_rows(self):
        """Bits x granularity frontier rows with the current options, one scheme at a time."""
        return qc_report.sweep_rows(self.data, base=self._sweep_base(), bits=SWEEP_BITS,
                                    granularities=self._sweep_granularities(), channel_axis=self.axis)

    def _sweep(self) -> list[dict]:
        return qc_report.mark_pareto(list(self._sweep_rows()))

    def _per_tensor_or_none(self):
        """Per-tensor result for the range plot's overlay when it is not among the compared schemes."""
        try:
            spec = self.scheme_spec("per-tensor")
            if isinstance(spec.range, qc.CustomRange) and np.ndim(spec.range.lo) > 0:
                spec = spec.with_(range=qc.MinMax())
            return self._result(spec)
        except ValueError:
            return None

    def _result(self, spec, weighted: bool = True):
        """``qc.analyze`` of the current data with ``spec`` (and the importance matrix, for a GGUF type that takes
        one, unless not ``weighted``), computed once per (data, spec, axis, importance matrix)."""
        imatrix = self._imatrix_for(spec) if weighted else None
        key = self._result_key(spec) if weighted else (spec, self.axis, 0)
        return self._results.get(key, lambda: qc.analyze(self.data, spec, channel_axis=self.axis,
                                                         channel_names=self._names, imatrix=imatrix))

    def _sweep_or_empty(self) -> list[dict]:
        try:
            return self._sweep()
        except ValueError:
            return []  # the frontier is extra; the main results above stand on their own

    def compute_frontier(self) -> None:
        """The sweep the user asked for (a large tensor): in the page a slice at a time, with its progress,
        stopped by the next change; without a document (tests, scripts) at once."""
        if pn.state.curdoc is not None:
            self._doc = pn.state.curdoc
            self.frontier_pending = False   # hides the button; a change that stops the sweep shows it again
            self._sweep_stepwise(self._generation, self._frontier_settings(), announce=True)
            return
        try:
            self._show_frontier(self._frontier_settings(), self._sweep())
        except ValueError as exc:
            self.settings_error = str(exc)

    # --- export payloads ---------------------------------------------------------------------
    def settings_dict(self) -> dict:
        d = {k: getattr(self, k) for k in URL_PARAMS}
        d["compare"] = list(self.compare)
        return d


EXAMPLE_VIEWS = {  # which schemes each example compares, and which one the tables/plots detail
    "s0": (["per-tensor", "per-channel"], "per-channel"),
    "s1": (["per-channel"], "per-channel"),   # calibration ranges are given per filter
    "s2": (["per-tensor"], "per-tensor"),     # one channel of activations
    "s3": (["per-tensor", "per-channel"], "per-channel"),
}


def range_settings(rng) -> dict:
    """Range-method parameters for a quantcore range object (custom bounds become editable text)."""
    if isinstance(rng, qc.CustomRange):
        def text(v) -> str:
            return ", ".join(fmt(u, 10) for u in np.atleast_1d(np.asarray(v, dtype=float)))
        return dict(range_method="custom", lo=text(rng.lo), hi=text(rng.hi))
    if isinstance(rng, qc.Percentile):
        return dict(range_method="percentile", pct=float(rng.pct))
    if isinstance(rng, qc.MSEOptimal):
        return dict(range_method="mse")
    if isinstance(rng, qc.KLDivergence):
        return dict(range_method="kl")
    return dict(range_method="minmax")


def example_settings(ex) -> dict:
    """Map a quantcore example (text + QuantSpec) onto QuantCalcSettings parameters."""
    spec = ex.spec
    compare, detail = EXAMPLE_VIEWS.get(ex.key, (["per-tensor", "per-channel"], "per-channel"))
    axis = spec.granularity.axis if isinstance(spec.granularity, qc.PerChannel) else 0
    return dict(text=ex.text, tensor_name=f"example {ex.key}", bits=spec.fmt.bits, signed=spec.fmt.signed,
                narrow=spec.fmt.narrow, reduce_range=spec.fmt.reduce_range, mapping=spec.mapping,
                rounding=spec.rounding or "default", convention=spec.convention,
                symmetric_scale=spec.symmetric_scale or "default", scale_dtype=spec.scale_dtype,
                zero_point_dtype=spec.zero_point_dtype, axis=axis, compare=compare, detail=detail,
                channel=0, **range_settings(spec.range))


def none_if_default(value: str) -> str | None:
    return None if value == "default" else value


STORED_BITS = {"float64": 64, "F64": 64, "float32": 32, "F32": 32, "float16": 16, "F16": 16, "bfloat16": 16,
               "BF16": 16, "int8": 8, "I8": 8, "uint8": 8, "U8": 8, "int16": 16, "I16": 16, "int32": 32, "I32": 32}


FILE_DTYPE_WORDS = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I8": "int8",
                    "U8": "uint8", "I16": "int16", "I32": "int32"}  # safetensors / GGUF names -> numpy's


def stored_as(loaded) -> str:
    """"float16 · 4096 × 4096 · 16 bits/weight as stored" for an uploaded tensor (GGUF types: exact bits)."""
    arr = loaded.array
    shape = " × ".join(str(d) for d in np.shape(arr)) if isinstance(arr, np.ndarray) else f"{len(arr)} rows"
    dtype = FILE_DTYPE_WORDS.get(str(loaded.dtype_in_file), str(loaded.dtype_in_file))
    bits = STORED_BITS.get(dtype)
    if bits is None:
        try:
            bits = qc_ggml.get_ggml_type(dtype).bits_per_weight()
        except ValueError:
            bits = None
    stored = f" · {bits:g} bits/weight as stored" if bits else ""
    return f"{dtype} · {shape}{stored}"


def read_pasted(text: str):
    """Parse pasted text through quantcore.io: returns (array or list of rows, channel labels)."""
    parsed = qc_io.parse_text(text, source="pasted values")
    return parsed.as_array(), list(parsed.names)


def read_manual(text: str):
    rows = qc_io.parse_manual(text, source="manual lines")
    return list(rows.names), rows.scale, rows.zero_point, rows.sample


# --- plot data helpers: selection and thinning only; every value comes from the engine ----------

def plot_grid(res, ch: int) -> dict:
    """Quantization grid (every code and its dequantized value) of the block holding channel ``ch``."""
    empty = dict(level=np.zeros(0), code=np.zeros(0, int), n=0)
    if res is None:
        return empty
    got = res.grid(res.block_of_channel(ch))
    if got is None:
        return dict(empty, n=res.levels)
    codes, levels = got
    return dict(level=levels, code=codes, n=len(codes))


def clip_bounds(res, ch: int) -> tuple[float, float]:
    """The range [lo, hi] the engine chose for the block holding channel ``ch``."""
    if res is None:
        return float("nan"), float("nan")
    b = res.block_of_channel(ch)
    return float(np.asarray(res.lo)[b]), float(np.asarray(res.hi)[b])


# --------------------------------------------------------------------------------------------------
# 3. views
# --------------------------------------------------------------------------------------------------

NO_SPIN = [".bk-spin-btn { display: none !important; }"]  # its +/- buttons have no accessible name (axe)


def alert_pane() -> pn.pane.HTML:
    """A message box (error, warning or note) shown next to the control it is about; hidden when empty.

    Plain HTML with escaped text: a Markdown pane would render quotes in messages as ``&#x27;``."""
    return html_pane("", visible=False, sizing_mode="stretch_width", margin=(0, 5))


MESSAGE_ROLES = {"danger": "alert", "warning": "alert", "info": "status"}


def help_html(layout) -> str:
    """Every control in ``layout`` that has help text, as a definition list (label: text; escaped)."""
    items, seen = [], set()
    for w in layout.select(pn.widgets.Widget):
        text = getattr(w, "description", None)
        if isinstance(text, str) and text and w.name and w.name not in seen:
            seen.add(w.name)
            items.append(f"<dt>{esc(w.name)}</dt><dd>{esc(text)}</dd>")
    return "<dl class='qc-help'>" + "".join(items) + "</dl>"


def lazy_card(make_objects, title: str, **kw) -> pn.Card:
    """A collapsed card whose content joins the page the first time it is opened: a closed card's content is
    Bokeh models all the same, built, serialised and drawn with the page before anything is usable."""
    card = pn.Card(title=title, collapsed=True, **kw)

    def on_toggle(event) -> None:
        if not event.new and not card.objects:
            card.objects = make_objects()

    card.param.watch(on_toggle, "collapsed")
    return card


def show_error(pane: pn.pane.HTML, message: str, kind: str = "danger") -> None:
    """Show ``message`` (untrusted text, escaped here) in ``pane``: kind danger (red), warning, info."""
    pane.object = (f"<div class='qc-msg qc-msg-{kind}' role='{MESSAGE_ROLES[kind]}'>{esc(message)}</div>"
                   if message else "")
    pane.visible = bool(message)


def out_of_bounds(p: param.Parameter, value) -> str:
    """Why ``value`` cannot be given to the numeric parameter ``p`` ("" when it can)."""
    if value is None:
        return "enter a number"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return f"{str(value)[:40]!r} is not a number"
    if isinstance(p, param.Integer) and v != int(v):
        return f"{fmt(v)} is not a whole number"
    lo, hi = p.bounds or (None, None)
    lo_in, hi_in = getattr(p, "inclusive_bounds", (True, True))
    low = lo is not None and (v < lo or (v == lo and not lo_in))
    high = hi is not None and (v > hi or (v == hi and not hi_in))
    if not (low or high):
        return ""
    left = f"{'≥' if lo_in else '>'} {fmt(lo)}" if lo is not None else ""
    right = f"{'≤' if hi_in else '<'} {fmt(hi)}" if hi is not None else ""
    return f"{fmt(v)} is out of range (must be {' and '.join(x for x in (left, right) if x)})"


class CheckedNumber(pn.viewable.Viewer):
    """A number box for one parameter that says why a value is refused, right below it.

    The box itself has no bounds (a browser would clamp or drop the value silently); the parameter's bounds
    are checked here. A refused value stays in the box, the message names the allowed range, and the results
    keep using the previous value. The box follows the parameter when an example or the URL changes it.
    """

    def __init__(self, obj: param.Parameterized, name: str, label: str, widget=pn.widgets.IntInput,
                 help: str = "", **kw):
        super().__init__()
        self.obj, self.key, self.label = obj, name, label
        p = obj.param[name]
        self.widget = widget(label=label, value=getattr(obj, name), stylesheets=NO_SPIN,
                             description=help or p.doc, **kw)
        self.message = alert_pane()
        self.widget.param.watch(self._typed, "value")
        obj.param.watch(self._follow, name)

    def _typed(self, event) -> None:
        if event.new == getattr(self.obj, self.key):
            show_error(self.message, "")
            return
        reason = self._refusal(event.new)
        if reason:
            show_error(self.message, f"{self.label}: {reason}; still using {getattr(self.obj, self.key)}.")
            return
        show_error(self.message, "")
        setattr(self.obj, self.key, event.new)

    def _refusal(self, value) -> str:
        p = self.obj.param[self.key]
        return "" if value is None and p.allow_None else out_of_bounds(p, value)

    def _follow(self, event) -> None:
        if self.widget.value != event.new:
            self.widget.value = event.new
        show_error(self.message, "")

    def __panel__(self):
        return pn.Column(self.widget, self.message, margin=0)


class InputView(pn.viewable.Viewer):
    """Tensor name and the five ways to give data; each shows its own errors right below it."""

    def __init__(self, calc: QuantCalcSettings, **params):
        super().__init__(**params)
        self.calc = calc
        self.name_input = pn.widgets.TextInput.from_param(calc.param.tensor_name, name="Tensor name",
                                                          placeholder="e.g. layer3.conv.weight",
                                                          sizing_mode="stretch_width")
        self.source = pn.widgets.RadioButtonGroup.from_param(
            calc.param.source, name="Input", color="primary", variant="outline",
            sizing_mode="stretch_width")
        self.example = pn.widgets.Select.from_param(
            calc.param.example, name="Example",
            options={"s0: four channels, per-channel vs per-tensor (seed 000)": "s0",
                     "s1: four filters, min/max/sample, qint8 affine (seed 001)": "s1",
                     "s2: ten activations, range ±1.5, int8 symmetric (seed 002)": "s2",
                     "s3: 2×4 int4 matrix, quiet row collapses (seed 003)": "s3"},
            sizing_mode="stretch_width")
        self.paste = pn.widgets.TextAreaInput.from_param(
            calc.param.text, name="Values", rows=7, sizing_mode="stretch_width", max_length=MAX_PASTE_CHARS,
            description="One channel per line or per ';'; values separated by ',' or spaces; an optional "
                        "'label:' prefix names the channel. Larger tensors: upload a file.")
        self.paste_alert = alert_pane()
        self.upload = BrowserFile(accept=UPLOAD_ACCEPT, sizing_mode="stretch_width", margin=(5, 10))
        self.upload.param.watch(self._on_choose, "chosen")
        self.upload.param.watch(self._on_file_bytes, "response")
        calc.param.watch(lambda e: setattr(self.upload, "request", e.new), "file_request")
        self.file_status = html_pane("", visible=False)
        self.picker = pn.widgets.Select(label="Tensor in file", options=[], sizing_mode="stretch_width")
        self.picker.param.watch(self._on_pick, "value")
        self.upload_alert = alert_pane()
        self.synthetic = pn.Column(
            pn.Row(CheckedNumber(calc, "syn_rows", "Channels", width=110),
                   CheckedNumber(calc, "syn_cols", "Values/channel", width=110),
                   CheckedNumber(calc, "syn_seed", "Seed", width=90)),
            pn.Row(pn.widgets.Select.from_param(calc.param.syn_dist, name="Distribution", width=120),
                   CheckedNumber(calc, "syn_spread", "Scale spread (decades)", widget=pn.widgets.FloatInput,
                                 step=0.25, width=150),
                   CheckedNumber(calc, "syn_outliers", "Outlier channels", width=110)),
            sizing_mode="stretch_width")
        self.synthetic_alert = alert_pane()
        self.manual = pn.widgets.TextAreaInput.from_param(
            calc.param.manual_text, name="Manual: channel, scale, zero-point, sample (one per line)",
            rows=6, sizing_mode="stretch_width")
        self.manual_alert = alert_pane()
        self.note = alert_pane()
        self.stored = html_pane("", sizing_mode="stretch_width", margin=(0, 10), visible=False)
        self.groups = {
            "example": pn.Column(self.example, sizing_mode="stretch_width"),
            "upload": pn.Column(self.upload, self.file_status, self.picker, self.stored, self.upload_alert,
                                sizing_mode="stretch_width"),
            "synthetic": pn.Column(self.synthetic, self.synthetic_alert, sizing_mode="stretch_width"),
            "manual": pn.Column(self.manual, self.manual_alert, sizing_mode="stretch_width"),
        }
        calc.param.watch(self._refresh, ["source", "input_error", "upload_names", "upload_tensor", "revision",
                                         "input_note", "source_info", "file_status"])
        self._refresh()

    def _on_choose(self, event) -> None:
        chosen = event.new or {}
        self.calc.open_file(str(chosen.get("name", "")), int(chosen.get("size", 0)),
                            file_key=str(chosen.get("key", "")))

    def _on_file_bytes(self, event) -> None:
        deliver_file_bytes(self.calc, event.new or {})

    def _on_pick(self, event) -> None:
        if event.new and event.new != self.calc.upload_tensor:
            self.calc.upload_tensor = event.new

    def _refresh(self, *events) -> None:
        src = self.calc.source
        for key, group in self.groups.items():
            group.visible = key == src
        self.groups["example"].visible = src == "example"
        self.paste.visible = src in ("example", "paste")
        self.picker.options = list(self.calc.upload_names)
        if self.calc.upload_tensor in self.calc.upload_names:
            self.picker.value = self.calc.upload_tensor
        self.picker.visible = len(self.calc.upload_names) > 1
        err = self.calc.input_error
        show_error(self.paste_alert, err if src in ("example", "paste") else "")
        show_error(self.upload_alert, err if src == "upload" else "")
        show_error(self.synthetic_alert, err if src == "synthetic" else "")
        show_error(self.manual_alert, err if src == "manual" else "")
        show_error(self.note, self.calc.input_note, kind="info")
        info = self.calc.source_info if src == "upload" else ""
        self.stored.object = f"<p class='qc-note'>Loaded: {esc(info)}</p>" if info else ""
        self.stored.visible = bool(info)
        status = self.calc.file_status if src == "upload" else ""
        self.file_status.object = f"<p class='qc-note' role='status'>{esc(status)}</p>" if status else ""
        self.file_status.visible = bool(status)

    def __panel__(self):
        return pn.Column(
            html_pane("<h2 class='qc-h'>Input</h2>", margin=(0, 5)),
            self.name_input, self.source, self.note, *self.groups.values(), self.paste, self.paste_alert,
            sizing_mode="stretch_width")


class SettingsView(pn.viewable.Viewer):
    """Every engine option; an error about them shows right below."""

    def __init__(self, calc: QuantCalcSettings, **params):
        super().__init__(**params)
        self.calc = calc
        w = pn.widgets
        self.alert = alert_pane()
        self.percentile = CheckedNumber(calc, "pct", "Percentile", widget=w.FloatInput, step=0.1, width=110)
        self.custom = pn.Row(
            w.TextInput.from_param(calc.param.lo, name="Custom min", width=190),
            w.TextInput.from_param(calc.param.hi, name="Custom max", width=190))
        self.frontier_button = w.Button(label="Compute error-vs-memory frontier", color="default",
                                        visible=False)
        self.frontier_button.on_click(lambda e: calc.compute_frontier())
        self.widgets = pn.Column(
            pn.Row(CheckedNumber(calc, "bits", "Bits", width=80),
                   w.Select.from_param(calc.param.signed, name="Integers",
                                       options={"signed (qint)": True, "unsigned (quint)": False}, width=130),
                   w.Select.from_param(calc.param.mapping, name="Mapping", width=130)),
            pn.Row(w.Select.from_param(calc.param.narrow, name="Narrow range",
                                       options={"no": False, "yes (int4 → [−7, 7])": True}, width=165),
                   w.Select.from_param(calc.param.reduce_range, name="Reduce range",
                                       options={"no": False, "yes (one bit less)": True}, width=165)),
            pn.Row(w.Select.from_param(calc.param.rounding, name="Rounding", width=130),
                   w.Select.from_param(calc.param.convention, name="Convention", width=130)),
            pn.Row(w.Select.from_param(calc.param.range_method, name="Range from",
                                       options=RANGE_METHODS, width=150), self.percentile),
            self.custom,
            pn.Row(CheckedNumber(calc, "axis", "Channel axis", width=100),
                   CheckedNumber(calc, "group", "Group size", width=100)),
            html_pane("<b>Schemes to compare</b>", margin=(5, 10, 0, 10)),
            w.CheckBoxGroup.from_param(calc.param.compare, name="Schemes to compare", inline=True,
                                       sizing_mode="stretch_width",
                                       stylesheets=[".bk-input-group { flex-wrap: wrap; gap: 2px 10px; }"]),
            w.Select.from_param(calc.param.detail, name="Scheme shown in detail (tables, plots)", width=220),
            CheckedNumber(calc, "budget", "Budget (bits/weight; empty: none)", widget=w.FloatInput, step=0.25,
                          width=220, placeholder="e.g. 4.5"),
            self.frontier_button,
            sizing_mode="stretch_width")
        self.advanced = pn.Column(
            pn.Row(w.Select.from_param(calc.param.symmetric_scale, name="Symmetric scale rule", width=165),
                   w.IntInput.from_param(calc.param.seed, name="Stochastic rounding seed", width=165,
                                         stylesheets=NO_SPIN)),
            pn.Row(w.Select.from_param(calc.param.scale_dtype, name="Scales stored as", width=165),
                   w.Select.from_param(calc.param.zero_point_dtype, name="Zero-points stored as", width=165)),
            pn.Row(CheckedNumber(calc, "qmin", "Custom qmin (empty: from bits)", width=165),
                   CheckedNumber(calc, "qmax", "Custom qmax (empty: from bits)", width=165)),
            sizing_mode="stretch_width")
        self.widgets.append(lazy_card(lambda: [self.advanced], "Advanced: scale rule, storage, custom code range, "
                                      "seed", sizing_mode="stretch_width", margin=(5, 10)))
        self.imatrix_file = w.FileInput(label="Importance matrix file (.gguf, .dat, .npy)", accept=".gguf,.dat,.npy",
                                        sizing_mode="stretch_width")
        # the page may send the bytes and the file name as two events (in the worker it does): either loads
        self.imatrix_file.param.watch(self._on_imatrix_file, ["value", "filename"])
        self._imatrix_loaded: tuple = ()
        self.imatrix_remove = w.Button(label="Remove the importance matrix", color="default", visible=False)
        self.imatrix_remove.on_click(self._remove_imatrix)
        self.imatrix_entry = w.Select.from_param(calc.param.imatrix_entry, name="Entry (tensor) used",
                                                 sizing_mode="stretch_width", visible=False)
        self.imatrix_alert = alert_pane()
        self.imatrix_status = html_pane("", sizing_mode="stretch_width", visible=False)
        self.widgets.append(lazy_card(lambda: [
            html_pane("<p class='qc-note'>llama.cpp's <code>llama-imatrix</code> output weights the scale search of "
                      "Q2_K … Q6_K, IQ4_NL, IQ4_XS and Q4_0 … Q5_1 by how much each input column is used, as "
                      "<code>llama-quantize --imatrix</code> does. Compare a GGUF scheme to see its weighted "
                      "output error with and without it.</p>", sizing_mode="stretch_width"),
            self.imatrix_file, self.imatrix_entry, self.imatrix_alert, self.imatrix_status, self.imatrix_remove],
            "GGUF importance matrix (llama.cpp imatrix)", sizing_mode="stretch_width", margin=(5, 10)))
        # Bokeh shows a control's "?" help on hover or click only; the same texts, reachable by keyboard.
        self.help = lazy_card(lambda: [html_pane(help_html(pn.Column(self.widgets, self.advanced)),
                                                 sizing_mode="stretch_width")],
                              "Help: what each setting means", sizing_mode="stretch_width", margin=(5, 10))
        calc.param.watch(self._refresh, ["range_method", "settings_error", "source", "frontier_pending",
                                         "imatrix_info", "imatrix_error", "imatrix_entry"])
        self._refresh()

    def _remove_imatrix(self, event=None) -> None:
        self._imatrix_loaded = ()
        self.imatrix_file.clear()        # the page's chooser, and its value here: the same file may come again
        self.imatrix_file.param.update(value=None, filename=None)
        self.calc.clear_imatrix()

    def _on_imatrix_file(self, *events) -> None:
        data, name = self.imatrix_file.value, str(self.imatrix_file.filename or "imatrix")
        if data and (name, data) != self._imatrix_loaded:
            self._imatrix_loaded = (name, data)
            self.calc.load_imatrix(name, bytes(data))

    def _refresh(self, *events) -> None:
        calc = self.calc
        show_error(self.imatrix_alert, calc.imatrix_error)
        self.imatrix_status.object = f"<p class='qc-note' role='status'>{esc(calc.imatrix_info)}</p>"
        self.imatrix_status.visible = bool(calc.imatrix_info)
        loaded = len(calc.param.imatrix_entry.objects) > 1
        self.imatrix_entry.visible = loaded
        self.imatrix_remove.visible = loaded
        self.percentile.widget.visible = self.calc.range_method == "percentile"
        self.custom.visible = self.calc.range_method == "custom"
        self.frontier_button.visible = self.calc.frontier_pending
        show_error(self.alert, self.calc.settings_error)

    def __panel__(self):
        return pn.Column(html_pane("<h2 class='qc-h'>Scheme options</h2>", margin=(0, 5)),
                         self.alert, self.widgets, self.help, sizing_mode="stretch_width")


COMPARE_COLUMNS = [("label", "Scheme", None), ("mae", "MAE", 6), ("rmse", "RMSE", 6), ("max_abs", "Max error", 6),
                   ("sqnr_db", "SQNR dB", 6), ("clip_rate", "Clip rate", 4), ("collapsed", "Collapsed to 0", None),
                   ("payload_bytes", "Payload B", None), ("metadata_bytes", "Metadata B", None),
                   ("total_bytes", "Total B", None), ("bits_per_weight", "Bits/weight", 4)]


class ComparisonView(pn.viewable.Viewer):
    """The scheme comparison table (best highlighted) and the one-sentence advice."""

    def __init__(self, calc: QuantCalcSettings, **params):
        super().__init__(**params)
        self.calc = calc
        self.title = html_pane("", sizing_mode="stretch_width", margin=(0, 5))
        self.advice = html_pane("", sizing_mode="stretch_width", margin=(0, 5))
        self.table = html_pane("", sizing_mode="stretch_width", margin=(0, 5))
        calc.param.watch(self._refresh, ["revision"])
        self._refresh()

    def _refresh(self, *events) -> None:
        c = self.calc
        name = c.tensor_name.strip() or "unnamed tensor"
        self.title.object = f"<h2 class='qc-h'>Results for <span class='qc-name'>{esc(name)}</span></h2>"
        cmp = c.comparison
        if c.source == "manual":
            self.advice.object = ("<p class='qc-advice'>Manual mode: scale and zero-point are given per channel, "
                                  "so there is no scheme to compare; see the per-sample table.</p>")
            self.table.object = ""
            return
        if cmp is None:
            self.advice.object = ("<p class='qc-msg qc-msg-danger'>No result: fix the input or the options "
                                  "(see the message next to them).</p>")
            self.table.object = ""
            return
        rows = cmp.summary_rows()
        budget = c.budget
        best = cmp.best("rmse", budget)
        pareto = set(cmp.pareto())
        head = "".join(f"<th scope='col'>{esc(title)}</th>" for _, title, _ in COMPARE_COLUMNS)
        head += "<th scope='col' title='No other scheme is both smaller and more accurate'>Pareto</th>"
        body = []
        for i, row in enumerate(rows):
            cells = []
            for key, _, digits in COMPARE_COLUMNS:
                v = row.get(key)
                text = esc(v) if digits is None and key == "label" else fmt(v, digits or 6)
                if key == "label":
                    text += " <strong class='qc-best-tag'>★ best</strong>" if i == best else ""
                    cells.append(f"<th scope='row'>{text}</th>")
                else:
                    cells.append(f"<td data-key='{key}'>{text}</td>")
            cells.append(f"<td data-key='pareto'>{'✓' if i in pareto else ''}</td>")
            over = budget is not None and row["bits_per_weight"] > budget
            cls = " ".join(c_ for c_, on in (("qc-best", i == best), ("qc-over", over)) if on)
            body.append(f"<tr class='{cls}' data-scheme='{esc(row.get('label'))}'>{''.join(cells)}</tr>")
        style = "qc-advice" if best is not None else "qc-msg qc-msg-warning"
        skipped = (f"<p class='qc-msg qc-msg-warning' role='status'>{esc(c.schemes_skipped)}</p>"
                   if c.schemes_skipped else "")
        self.advice.object = f"<p class='{style}'><strong>Advice:</strong> {esc(cmp.advice(budget))}</p>{skipped}"
        what = f"most accurate within {budget:g} bits/weight" if budget is not None else "lowest RMSE"
        over_note = "; greyed: over the budget" if budget is not None else ""
        self.table.object = (
            "<div class='qc-scroll' tabindex='0' role='region' aria-label='Scheme comparison table'>"
            "<table class='qc-table' id='qc-compare'>"
            f"<caption>Scheme comparison (★ {esc(what)}{esc(over_note)})</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")

    def __panel__(self):
        return pn.Column(self.title, self.advice, self.table, sizing_mode="stretch_width")


CHANNEL_COLUMNS = [("label", "Channel", "text"), ("min", "Min", "num"), ("max", "Max", "num"),
                   ("range", "Range", "num"), ("range_lo", "Range lo", "num"), ("range_hi", "Range hi", "num"),
                   ("scale", "Scale", "num"), ("zero_point", "Zero-point", "num"),
                   ("mae", "MAE", "short"), ("rmse", "RMSE", "short"), ("sqnr_db", "SQNR dB", "short"),
                   ("clip_rate", "Clip %", "pct"), ("collapsed", "Collapsed", "int"), ("ties", "Ties", "int")]
SAMPLE_COLUMNS = [("label", "Channel", "text"), ("index", "Index", "int"), ("x", "x", "exact"),
                  ("raw_q", "Raw q", "num"), ("q", "q (clamped)", "int"), ("dequantized", "x̂", "exact"),
                  ("abs_error", "Abs error", "exact"), ("pct_error", "% error", "short"),
                  ("clipped", "Clipped", "int"), ("tie", "Tie", "bool")]
MANUAL_COLUMNS = [("label", "Channel", "text"), ("scale", "Scale", "exact"), ("zero_point", "Zero-point", "int"),
                  ("sample", "Sample", "exact"), ("raw_q", "Raw q", "num"), ("q", "Quantized", "int"),
                  ("dequantized", "Dequantized", "exact"), ("abs_error", "Abs error", "exact"),
                  ("pct_error", "% error", "short"), ("clipped", "Clipped", "int")]


PAGE_ROWS = 50  # rows per table page


def cell_text(value, kind: str) -> str:
    """One table cell as escaped text (numbers formatted for reading; labels escaped)."""
    if kind == "text":
        return esc(value)
    if kind == "bool":
        return "yes" if bool(value) else ""
    if kind == "pct":
        try:
            return "–" if np.isnan(float(value)) else f"{float(value):.2%}"
        except (TypeError, ValueError):
            return esc(value)
    return fmt(value, {"exact": 10, "num": 8, "short": 5, "int": 12}[kind])


def table_labels(table: dict, labels: list[str]) -> list[str]:
    """Channel label per row (engine tables carry channel indices; manual mode carries names)."""
    ch = np.asarray(table.get("channel", []))
    if ch.dtype.kind in "iu":
        return [labels[int(i)] if 0 <= int(i) < len(labels) else str(int(i)) for i in ch]
    return [str(v) for v in ch]


def html_table(table_id: str, caption: str, columns, table: dict, labels: list[str], start: int, stop: int,
               selected_channel: int | None = None) -> str:
    """An accessible HTML table of rows [start, stop) of an engine table; every cell is escaped."""
    names = table_labels(table, labels)
    ch = np.asarray(table.get("channel", []))
    head = "".join(f"<th scope='col'>{esc(title)}</th>" for _, title, _ in columns)
    body = []
    for i in range(start, min(stop, len(names))):
        cells = []
        for field, _, kind in columns:
            if field == "label":
                cells.append(f"<th scope='row' data-key='label'>{esc(names[i])}</th>")
            else:
                v = table[field][i] if field in table else float("nan")
                cells.append(f"<td data-key='{field}'>{cell_text(v, kind)}</td>")
        pickable = ch.dtype.kind in "iu" and selected_channel is not None
        sel = pickable and int(ch[i]) == selected_channel
        cls = " class='qc-selected' aria-selected='true'" if sel else ""
        pick = f" data-channel='{int(ch[i])}' tabindex='0'" if pickable else ""
        body.append(f"<tr{cls}{pick}>{''.join(cells)}</tr>")
    return (f"<div class='qc-scroll' tabindex='0' role='region' aria-label='{esc(caption)}'>"
            f"<table class='qc-table' id='{table_id}'><caption>{esc(caption)}</caption>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


class BrowserFile(ReactiveHTML):
    """A file chooser that keeps the file in the browser and sends Python only the byte ranges it asks for.

    Choosing a file sets ``chosen`` ({name, size, serial, key, files}: ``files`` lists {name, size, key} of every
    file chosen, several when ``multiple``; name, size and key are the first's); Python then sets ``request``
    ({id, start, stop, file}) and the page answers in ``response`` ({id, start, b64}: the bytes ``[start, stop)``
    read with ``File.slice``, base64 as Panel's own FileInput sends a whole file; or {id, start, error}). In the static
    page the bytes go to the Python worker as a transferred ArrayBuffer instead (message ``file-bytes``, kept
    by the worker until Python takes it: :func:`transferred_bytes`) and ``response`` says {id, start,
    transferred}. A 5 GB checkpoint thus costs its header and one tensor, never the whole file in a message
    or in memory.

    Every chosen file is also kept in the page under its ``key``, and a request naming ``file`` (a key) is
    answered from that file, whichever chooser picked it: the Model view hands its file to the one-tensor view
    without asking the user to choose it again. :func:`deliver_file_bytes` passes an answer to its reader."""

    accept = param.String(default="")
    label = param.String(default="Upload tensor file", doc="The chooser's accessible name.")
    multiple = param.Boolean(default=False, doc="Several files may be chosen at once (a sharded checkpoint).")
    chosen = param.Dict(default={})
    request = param.Dict(default={})
    response = param.Dict(default={})

    _template = """<input id="input" type="file" class="qc-file" onchange="${script('choose')}"></input>"""
    _scripts = {
        "render": """
            input.accept = data.accept
            input.multiple = data.multiple
            input.setAttribute('aria-label', data.label)
            state.file = null
            state.key = 'f' + Math.random().toString(36).slice(2)""",
        "accept": "input.accept = data.accept",
        "choose": """
            const files = Array.from(input.files)
            if (files.length === 0) { return }
            state.file = files[0]
            const serial = (data.chosen.serial || 0) + 1
            if (window.quantcalcFiles == null) { window.quantcalcFiles = new Map() }
            const picked = files.map((f, i) => {
              const key = state.key + '-' + serial + (i ? '-' + i : '')
              window.quantcalcFiles.set(key, f)   // a handle: no byte is read until a request names it
              return {name: f.name, size: f.size, key: key}
            })
            data.chosen = {name: picked[0].name, size: picked[0].size, serial: serial, key: picked[0].key,
                           files: picked}""",
        "request": """
            const r = data.request
            const f = r.file ? (window.quantcalcFiles || new Map()).get(r.file) : state.file
            if (r.id == null) { return }
            if (f == null) { data.response = {id: r.id, start: r.start, error: 'the file is no longer open'}; return }
            const worker = window.quantcalcWorker   // the static page: Python runs in this worker
            if (worker != null) {
              f.slice(r.start, r.stop).arrayBuffer().then((buffer) => {
                worker.postMessage({type: 'file-bytes', id: r.id, buffer: buffer}, [buffer])
                data.response = {id: r.id, start: r.start, transferred: true}
              }, (e) => { data.response = {id: r.id, start: r.start, error: String(e)} })
              return
            }
            const reader = new FileReader()
            reader.onload = () => {
              const url = reader.result
              data.response = {id: r.id, start: r.start, b64: url.slice(url.indexOf(',') + 1)}
            }
            reader.onerror = () => { data.response = {id: r.id, start: r.start, error: String(reader.error)} }
            reader.readAsDataURL(f.slice(r.start, r.stop))""",
    }


def deliver_file_bytes(reader, response: dict) -> None:
    """Hand a BrowserFile ``response`` to ``reader`` (``file_bytes(id, start, data)`` / ``file_unreadable(id, why)``):
    base64 natively, a transferred piece in the static page, or the reason the browser could not read it."""
    r = response
    if "error" in r:
        reader.file_unreadable(int(r.get("id", -1)), str(r["error"]))
    elif "b64" in r:
        reader.file_bytes(int(r["id"]), int(r["start"]), base64.b64decode(r["b64"]))
    elif r.get("transferred"):
        try:
            data = transferred_bytes(int(r["id"]))
        except ValueError as exc:
            reader.file_unreadable(int(r["id"]), str(exc))
            return
        reader.file_bytes(int(r["id"]), int(r["start"]), data)


def transferred_bytes(request_id: int) -> bytes:
    """The piece of an uploaded file the page transferred to this Pyodide worker for ``request_id``
    (build/templates/pyodide_worker.js keeps it in ``quantcalcFileBytes`` until taken here)."""
    import js   # Pyodide's view of the worker's JavaScript globals (only ever called inside the worker)
    store = js.quantcalcFileBytes
    buffer = store.get(request_id)
    store.delete(request_id)
    if buffer is None:
        raise ValueError(f"piece {request_id} of the file never reached the worker")
    return buffer.to_bytes()


class RowPickHTML(ReactiveHTML):
    """HTML whose table rows carrying ``data-channel`` select that channel when clicked (or on Enter, for
    keyboard users: such rows are focusable). The HTML is built and escaped in Python; the browser only
    inserts it and reports the row picked (``picked``, -1 when none). (It travels in a dict: ReactiveHTML runs
    every string parameter through nh3, which would strip the table's ids, classes and data attributes.)"""

    content = param.Dict(default={"html": ""})
    picked = param.Integer(default=-1)

    _template = """<div id="box" class="qc-pick" onclick="${script('pick')}" onkeydown="${script('key')}"></div>"""
    _scripts = {
        "render": "box.innerHTML = data.content.html",
        "content": "box.innerHTML = data.content.html",
        "pick": """
            const row = event.target.closest('tr[data-channel]')
            if (row) { data.picked = -1; data.picked = parseInt(row.dataset.channel) }""",
        "key": """
            const row = event.target.closest('tr[data-channel]')
            if (row && event.key === 'Enter') { data.picked = -1; data.picked = parseInt(row.dataset.channel) }""",
    }


class PagedTable(pn.viewable.Viewer):
    """An HTML table with a page picker (tables may hold thousands of rows; a page shows PAGE_ROWS).

    ``on_pick(channel)`` (optional) is called when a row is clicked or chosen with Enter."""

    def __init__(self, table_id: str, on_pick=None, **params):
        super().__init__(**params)
        self.table_id = table_id
        self.html = RowPickHTML(sizing_mode="stretch_width", margin=(0, 5), stylesheets=[APP_CSS])
        if on_pick is not None:
            self.html.param.watch(lambda e: on_pick(e.new) if e.new >= 0 else None, "picked")
        self.page = pn.widgets.IntInput(label="Page", value=1, start=1, end=1, width=90, stylesheets=NO_SPIN)
        self.of = html_pane("", margin=(22, 5, 0, 5))
        self.pager = pn.Row(self.page, self.of, visible=False)
        self._args = None
        self.page.param.watch(lambda e: self._render(), "value")

    def show(self, caption: str, columns, table: dict, labels: list[str], selected: int | None = None,
             page_of_row: int | None = None) -> None:
        self._args = (caption, columns, table, labels, selected)
        n = len(table.get("channel", []))
        pages = max(1, -(-n // PAGE_ROWS))
        self.page.end = pages
        self.pager.visible = pages > 1
        self.of.object = f"<span class='qc-note'>of {pages} pages ({n} rows, {PAGE_ROWS} per page)</span>"
        want = (page_of_row // PAGE_ROWS + 1) if page_of_row is not None else min(self.page.value, pages)
        if want != self.page.value:
            self.page.value = want  # renders through the watcher
        else:
            self._render()

    def _render(self) -> None:
        if self._args is None:
            return
        caption, columns, table, labels, selected = self._args
        start = (self.page.value - 1) * PAGE_ROWS
        self.html.content = {"html": html_table(self.table_id, caption, columns, table, labels, start,
                                                start + PAGE_ROWS, selected)}

    def __panel__(self):
        return pn.Column(self.pager, self.html, sizing_mode="stretch_width")


class ChannelTableView(pn.viewable.Viewer):
    """One row per channel of the detail scheme (paged); the selected channel is highlighted and can be
    picked here, in the plots (click) or by index."""

    def __init__(self, calc: QuantCalcSettings, **params):
        super().__init__(**params)
        self.calc = calc
        self.caption = html_pane("", sizing_mode="stretch_width", margin=(0, 5))
        self.table = PagedTable("qc-channels", on_pick=self._on_row)
        self.picker = pn.widgets.Select(label="Selected channel", options={}, width=220)
        self.picker.param.watch(self._on_pick, "value")
        self._table = None
        calc.param.watch(self._refresh, ["revision"])
        calc.param.watch(self._select, ["channel"])
        self._refresh()

    def _refresh(self, *events) -> None:
        res = self.calc.detail_result
        if res is None:
            self.caption.object = "<h3 class='qc-h'>Per-channel table</h3><p>No result.</p>"
            self.table.show("Per-channel table", CHANNEL_COLUMNS, {"channel": []}, [])
            self.picker.options = {}
            return
        self._table = res.channel_table()
        labels = self.calc.labels
        n = len(self._table["channel"])
        self.caption.object = (f"<h3 class='qc-h'>Per-channel table: {esc(res.label)}</h3>"
                               f"<p class='qc-note'>{n} channel(s). Zero-point shows – when a channel has several "
                               "groups; Range lo/hi is the range the scheme used.</p>")
        if n <= 5000:
            opts = {f"{i}: {name}": i for i, name in enumerate(table_labels(self._table, labels))}
            self.picker.options = opts
            self.picker.visible = True
        else:
            self.picker.visible = False  # thousands of channels: pick by index above the plots
        self._select()

    def _select(self, *events) -> None:
        if self._table is None:
            return
        ch = self.calc.channel
        if self.picker.visible and ch in self.picker.options.values() and self.picker.value != ch:
            self.picker.value = ch
        self.table.show(f"Per-channel results, {self.calc.detail_result.label}", CHANNEL_COLUMNS, self._table,
                        self.calc.labels, selected=ch, page_of_row=ch if events else None)

    def _on_pick(self, event) -> None:
        if event.new is not None and event.new != self.calc.channel:
            self.calc.channel = int(event.new)

    def _on_row(self, channel: int) -> None:
        if channel != self.calc.channel:
            self.calc.channel = channel

    def __panel__(self):
        return pn.Column(self.caption, self.picker, self.table, sizing_mode="stretch_width")


class ChannelsBySchemeView(pn.viewable.Viewer):
    """Seed 003's table, grown: one row per channel, the MAE of every compared scheme side by side (the quiet
    row that collapses under one shared scale stands out at once), and the scheme with the lowest MAE."""

    def __init__(self, calc: QuantCalcSettings, **params):
        super().__init__(**params)
        self.calc = calc
        self.caption = html_pane("", sizing_mode="stretch_width", margin=(0, 5))
        self.table = PagedTable("qc-by-scheme", on_pick=self._on_row)
        self.body = pn.Column(self.caption, self.table, sizing_mode="stretch_width")
        calc.param.watch(self._refresh, ["revision", "channel"])
        self._refresh()

    def _on_row(self, channel: int) -> None:
        if channel != self.calc.channel:
            self.calc.channel = channel

    def _refresh(self, *events) -> None:
        cmp = self.calc.comparison
        self.body.visible = cmp is not None and len(cmp.results) > 1
        if not self.body.visible:
            return
        tables = [r.channel_table() for r in cmp.results]
        cols = [("label", "Channel", "text")]
        data = {"channel": tables[0]["channel"]}
        for j, (r, t) in enumerate(zip(cmp.results, tables)):
            data[f"mae{j}"] = t["mae"]
            cols.append((f"mae{j}", f"MAE · {r.label}", "short"))
        maes = np.vstack([np.where(np.isnan(t["mae"]), np.inf, t["mae"]) for t in tables])
        data["best"] = np.array([cmp.results[i].label for i in np.argmin(maes, axis=0)], dtype=object)
        cols.append(("best", "Lowest MAE", "text"))
        self.caption.object = ("<h3 class='qc-h'>Per-channel error by scheme</h3><p class='qc-note'>MAE of each "
                               "channel under every compared scheme (seed 003's table: a quiet channel that "
                               "collapses under a shared scale shows a large MAE in one column only).</p>")
        self.table.show("Per-channel MAE by scheme", cols, data, self.calc.labels, selected=self.calc.channel,
                        page_of_row=self.calc.channel if events and events[0].name == "channel" else None)

    def __panel__(self):
        return self.body


class SampleTableView(pn.viewable.Viewer):
    """Per-sample table (the first SAMPLE_TABLE_LIMIT values, paged) or, in manual mode, seed 001's table.
    The engine computes only the channels holding those values: a few ms whatever the tensor's size."""

    def __init__(self, calc: QuantCalcSettings, **params):
        super().__init__(**params)
        self.calc = calc
        self.caption = html_pane("", sizing_mode="stretch_width", margin=(0, 5))
        self.table = PagedTable("qc-samples")
        calc.param.watch(self._refresh, ["revision"])
        self._refresh()

    def _refresh(self, *events) -> None:
        c = self.calc
        if c.source == "manual":
            rows = c.manual_rows
            if rows is None:
                self.caption.object = ("<h3 class='qc-h'>Manual mode</h3><p>Enter lines of channel, scale, "
                                       "zero-point, sample.</p>")
                self.table.show("Manual mode", MANUAL_COLUMNS, {"channel": []}, [])
                return
            self.caption.object = f"<h3 class='qc-h'>Manual mode: {len(rows['channel'])} sample(s)</h3>"
            self.table.show("Manual mode: given scale and zero-point", MANUAL_COLUMNS, rows, [])
            return
        res = c.detail_result
        if res is None:
            self.caption.object = "<h3 class='qc-h'>Per-sample table</h3><p>No result.</p>"
            self.table.show("Per-sample table", SAMPLE_COLUMNS, {"channel": []}, [])
            return
        table = res.sample_table(limit=SAMPLE_TABLE_LIMIT)
        shown, total = len(table["channel"]), res.metrics.n
        more = f" (first {shown} of {total})" if shown < total else ""
        self.caption.object = (f"<h3 class='qc-h'>Per-sample table: {esc(res.label)}{esc(more)}</h3>"
                               "<p class='qc-note'>Clipped: −1 below the range, +1 above. Tie: the integer "
                               "differs under the other convention.</p>")
        self.table.show(f"Per-sample results, {res.label}", SAMPLE_COLUMNS, table, c.labels)

    def __panel__(self):
        return pn.Column(self.caption, self.table, sizing_mode="stretch_width")


def thin(n: int, limit: int) -> tuple[slice, str]:
    """A stride that keeps at most ``limit`` of ``n`` items, and the note that says so on the plot."""
    if n <= limit:
        return slice(None), ""
    step = -(-n // limit)
    return slice(None, None, step), f" (every {step}th of {n} shown)"


def positive_or_nan(values) -> np.ndarray:
    """Log axes cannot show 0: display exact zeros as gaps (no value is changed, only hidden)."""
    v = np.asarray(values, dtype=float)
    return np.where(v > 0, v, np.nan)


def set_data(source: ColumnDataSource, data: dict) -> None:
    """``source.data = data`` unless every column is already equal (NaN equal to NaN): an assignment sends
    the whole source to the page and makes BokehJS repaint its figure even when nothing changed (a bits change
    leaves a tensor's histogram and channel ranges as they were)."""
    old = source.data
    if old.keys() == data.keys() and all(_same_column(old[k], data[k]) for k in data):
        return
    source.data = data


def _same_column(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype.kind != b.dtype.kind:
        return False
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


def release_memory_soon(session_context) -> None:
    """Natively, a second after a session is destroyed: collect its reference cycles and hand the freed heap
    back to the OS. Without it the server's RSS stayed ~480 MiB above idle after 20 sessions closed
    (benchmarks/bench_load.py), though every session's objects were gone: glibc keeps freed pages."""
    def release() -> None:
        import ctypes
        import gc
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):   # not glibc: nothing to trim
            pass

    from tornado.ioloop import IOLoop
    IOLoop.current().call_later(1.0, release)


AFTER_RENDER: list = []   # browser worker: what after_render() does once the first document is drawn


def attach_after_load(holder: pn.Column, make_objects) -> None:
    """Put ``make_objects()`` into ``holder`` once the page has drawn the first document: natively through
    Panel's onload; in the browser worker (where Panel runs onload callbacks at once) when the worker calls
    :func:`after_render`; at once without a document (tests, scripts); never in the static page's pre-rendered
    preview (``panel convert`` runs onload callbacks while making it), which the worker's document replaces.
    The pre-render drawn without the five figures shows 1.0 s sooner on a first visit (2.6 -> 1.6 s,
    benchmarks/bench_bundle.py); it was a picture of the default example, whatever the URL asked for."""
    def attach() -> None:
        holder.objects = make_objects()
    doc = pn.state.curdoc
    if doc is None:
        attach()
    elif getattr(pn.state, "_is_pyodide", False):
        AFTER_RENDER.append(attach)
    elif isinstance(doc.session_context, MockSessionContext):   # panel convert's pre-render
        return
    else:
        pn.state.onload(attach)


def after_render() -> None:
    """Called by build/templates/pyodide_worker.js once the page drew the worker's document and patches flow."""
    while AFTER_RENDER:
        AFTER_RENDER.pop(0)()


def figure_kw(**kw) -> dict:
    base = dict(height=250, sizing_mode="stretch_width", toolbar_location="above",
                tools="pan,wheel_zoom,box_zoom,reset,save", min_border_left=50)
    base.update(kw)
    return base


def integer_x_axis(p) -> None:
    """Ticks at whole numbers only: the x axis counts channels, indices or layers (no tick at channel 0.5)."""
    p.xaxis.ticker = BasicTicker(min_interval=1)


def style_legend(p, location: str) -> None:
    p.legend.location = location
    p.legend.background_fill_alpha = 0.6
    p.legend.label_text_font_size = "8pt"
    p.legend.padding = 2
    p.legend.spacing = 0
    p.legend.click_policy = "hide"


class PlotFigures:
    """Five Bokeh plots, built once; every update replaces ``source.data``."""

    def __init__(self, calc: QuantCalcSettings):
        self.calc = calc
        self._setting = False
        # 1. per-channel min/max with the per-tensor range
        self.range_src = ColumnDataSource(dict(channel=[], label=[], lo=[], hi=[], qlo=[], qhi=[]))
        p = figure(title="Per-channel ranges vs the per-tensor range", x_axis_label="channel",
                   y_axis_label="value", **figure_kw())
        self.range_bars = p.vbar(x="channel", bottom="lo", top="hi", width=0.7, source=self.range_src,
                                 color="#1f77b4", alpha=0.75, selection_color="#d62728",
                                 nonselection_alpha=0.45, legend_label="channel min..max")
        self.tensor_box = BoxAnnotation(bottom=0, top=0, fill_alpha=0.08, fill_color="#ff7f0e")
        self.tensor_lo = Span(location=0, dimension="width", line_color="#ff7f0e", line_dash="dashed", line_width=2)
        self.tensor_hi = Span(location=0, dimension="width", line_color="#ff7f0e", line_dash="dashed", line_width=2)
        p.add_layout(self.tensor_box)
        p.add_layout(self.tensor_lo)
        p.add_layout(self.tensor_hi)
        # the range the detail scheme quantizes each channel to (a calibration range differs from min..max;
        # absent where a channel has several blocks)
        for edge in ("qlo", "qhi"):
            p.scatter(x="channel", y=edge, marker="dash", size=16, line_width=3, color="#2ca02c",
                      source=self.range_src, legend_label="range used (detail scheme)")
        p.add_tools(HoverTool(renderers=[self.range_bars],
                              tooltips=[("channel", "@label"), ("min", "@lo{0.000000}"), ("max", "@hi{0.000000}"),
                                        ("range used", "@qlo{0.000000} .. @qhi{0.000000}")]),
                    TapTool(renderers=[self.range_bars]))
        integer_x_axis(p)
        style_legend(p, "top_left")
        self.range_src.selected.on_change("indices", self._tap(self.range_src))
        self.range_fig = p
        # 2. per-channel error by scheme
        self.err_src = ColumnDataSource(dict(channel=[], label=[], rmse=[], scheme=[], color=[]))
        p = figure(title="Per-channel RMSE by scheme (log)", x_axis_label="channel", y_axis_label="RMSE",
                   y_axis_type="log", **figure_kw())
        self.err_pts = p.scatter(x="channel", y="rmse", color="color", legend_field="scheme", size=7,
                                 source=self.err_src, selection_line_color="black", selection_line_width=2,
                                 nonselection_alpha=0.5)
        p.add_tools(HoverTool(renderers=[self.err_pts],
                              tooltips=[("scheme", "@scheme"), ("channel", "@label"), ("RMSE", "@rmse{0.000e0}")]),
                    TapTool(renderers=[self.err_pts]))
        integer_x_axis(p)
        style_legend(p, "top_left")
        self.err_src.selected.on_change("indices", self._tap(self.err_src))
        self.err_fig = p
        # 3. one channel: values vs reconstruction with the quantization grid
        self.chan_src = ColumnDataSource(dict(index=[], x=[], xhat=[]))
        self.grid_src = ColumnDataSource(dict(level=[], code=[]))
        p = figure(title="Channel values vs reconstruction", x_axis_label="index in channel",
                   y_axis_label="value", **figure_kw())
        self.grid_lines = p.hspan(y="level", source=self.grid_src, line_color="#bbbbbb", line_width=1,
                                  legend_label="quantization grid")
        orig = p.scatter(x="index", y="x", source=self.chan_src, size=7, color="#1f77b4", legend_label="x")
        rec = p.scatter(x="index", y="xhat", source=self.chan_src, size=7, marker="cross", line_width=2,
                        color="#d62728", legend_label="x̂ (dequantized)")
        p.add_tools(HoverTool(renderers=[orig, rec],
                              tooltips=[("index", "@index"), ("x", "@x{0.000000}"), ("x̂", "@xhat{0.000000}")]))
        integer_x_axis(p)
        style_legend(p, "top_left")
        self.chan_fig = p
        # 4. histogram with grid levels and clipping bounds
        self.hist_src = ColumnDataSource(dict(left=[], right=[], count=[]))
        self.hist_grid_src = ColumnDataSource(dict(level=[]))
        p = figure(title="Value histogram", x_axis_label="value", y_axis_label="count", **figure_kw())
        bars = p.quad(left="left", right="right", bottom=0, top="count", source=self.hist_src,
                      fill_color="#1f77b4", line_color="white", alpha=0.8)
        p.vspan(x="level", source=self.hist_grid_src, line_color="#888888", line_alpha=0.5)
        self.clip_lo = Span(location=0, dimension="height", line_color="#d62728", line_width=2, line_dash="dashed")
        self.clip_hi = Span(location=0, dimension="height", line_color="#d62728", line_width=2, line_dash="dashed")
        p.add_layout(self.clip_lo)
        p.add_layout(self.clip_hi)
        p.add_tools(HoverTool(renderers=[bars], tooltips=[("bin", "@left{0.0000} .. @right{0.0000}"),
                                                          ("count", "@count")]))
        self.hist_fig = p
        # 5. error vs memory frontier
        self.front_src = ColumnDataSource(dict(total_bytes=[], rmse=[], label=[], bpw=[], color=[], size=[]))
        self.pareto_src = ColumnDataSource(dict(total_bytes=[], rmse=[]))
        p = figure(title="Error vs memory frontier (bits × granularity)", x_axis_label="total bytes",
                   y_axis_label="RMSE", x_axis_type="log", y_axis_type="log", **figure_kw())
        p.line(x="total_bytes", y="rmse", source=self.pareto_src, color="#2ca02c", line_width=2,
               legend_label="Pareto frontier")
        pts = p.scatter(x="total_bytes", y="rmse", source=self.front_src, color="color", size="size", alpha=0.85)
        p.add_tools(HoverTool(renderers=[pts], tooltips=[("scheme", "@label"), ("bytes", "@total_bytes"),
                                                         ("bits/weight", "@bpw{0.000}"), ("RMSE", "@rmse{0.000e0}")]))
        style_legend(p, "top_right")
        self.front_fig = p
        calc.param.watch(self._refresh, ["revision"])
        calc.param.watch(self._refresh_frontier, ["frontier", "frontier_pending"])
        calc.param.watch(self._refresh_channel, ["channel"])
        self._refresh()
        self._refresh_frontier()

    # --- linked selection -------------------------------------------------------------------
    def _tap(self, source: ColumnDataSource):
        def on_change(attr, old, new) -> None:
            if self._setting or not new:
                return
            self.calc.channel = int(source.data["channel"][new[0]])
        return on_change

    def _mark(self, source: ColumnDataSource) -> None:
        ch = np.asarray(source.data.get("channel", []))
        idx = [int(i) for i in np.flatnonzero(ch == self.calc.channel)] if len(ch) else []
        if list(source.selected.indices) != idx:
            self._setting = True
            source.selected.indices = idx
            self._setting = False

    # --- updates ----------------------------------------------------------------------------
    def _refresh(self, *events) -> None:
        c = self.calc
        res, tres = c.detail_result, c.tensor_result
        if res is None:
            for src in (self.range_src, self.err_src, self.chan_src, self.grid_src, self.hist_src,
                        self.hist_grid_src):
                src.data = {k: [] for k in src.data}
            self._refresh_frontier()
            return
        labels = c.labels
        table = res.channel_table()
        n = len(table["channel"])
        sl, note = thin(n, MAX_PLOT_POINTS // 2)
        ch = np.asarray(table["channel"]).astype(int)[sl]
        set_data(self.range_src, dict(channel=ch, label=[labels[i] if i < len(labels) else str(i) for i in ch],
                                      lo=np.asarray(table["min"], float)[sl], hi=np.asarray(table["max"], float)[sl],
                                      qlo=np.asarray(table["range_lo"], float)[sl],
                                      qhi=np.asarray(table["range_hi"], float)[sl]))
        self.range_fig.title.text = "Per-channel ranges vs the per-tensor range (dashed)" + note
        if tres is not None:
            lo, hi = float(np.asarray(tres.lo)[0]), float(np.asarray(tres.hi)[0])
            self.tensor_box.bottom, self.tensor_box.top = lo, hi
            self.tensor_lo.location, self.tensor_hi.location = lo, hi
        # per-channel error by scheme
        cmp = c.comparison
        cols = dict(channel=[], label=[], rmse=[], scheme=[], color=[])
        if cmp is not None:
            k = max(1, len(cmp.results))
            sl2, note2 = thin(n, MAX_PLOT_POINTS // k)
            for j, r in enumerate(cmp.results):
                t = r.channel_table()
                chj = np.asarray(t["channel"]).astype(int)[sl2]
                cols["channel"].extend(chj.tolist())
                cols["label"].extend(labels[i] if i < len(labels) else str(i) for i in chj)
                cols["rmse"].extend(positive_or_nan(np.asarray(t["rmse"])[sl2]).tolist())
                cols["scheme"].extend([r.label] * len(chj))
                cols["color"].extend([Category10_10[j % 10]] * len(chj))
            self.err_fig.title.text = "Per-channel RMSE by scheme (log; 0 not shown)" + note2
        set_data(self.err_src, cols)
        self._refresh_histogram()
        self._refresh_channel()

    def _refresh_histogram(self) -> None:
        res = self.calc.detail_result
        hist = res.histogram(bins=80)
        set_data(self.hist_src, dict(left=hist["left"], right=hist["right"], count=hist["count"]))
        levels = plot_grid(res, self.calc.channel)
        set_data(self.hist_grid_src, dict(level=levels["level"] if levels["n"] <= 64 else []))
        lo, hi = clip_bounds(res, self.calc.channel)
        self.clip_lo.location, self.clip_hi.location = lo, hi
        extra = "" if 0 < levels["n"] <= 64 else " (grid not drawn)"
        self.hist_fig.title.text = (f"Histogram, {res.metrics.n:,} values; grid{extra}, "
                                    f"clip bounds (red) of selected channel")

    def _refresh_channel(self, *events) -> None:
        c = self.calc
        self._mark(self.range_src)
        self._mark(self.err_src)
        res = c.detail_result
        if res is None:
            return
        x, xhat = res.channel_values(c.channel)
        sl, note = thin(len(x), MAX_CHANNEL_VALUES)
        idx = np.arange(len(x))[sl]
        set_data(self.chan_src, dict(index=idx, x=x[sl], xhat=xhat[sl]))
        levels = plot_grid(res, c.channel)
        shown = levels["level"] if levels["n"] <= 64 else []
        set_data(self.grid_src, dict(level=shown, code=levels["code"][: len(shown)]))
        label = c.labels[c.channel] if c.channel < len(c.labels) else str(c.channel)
        grid_note = "" if len(shown) else f" ({levels['n']} grid levels not drawn)"
        self.chan_fig.title.text = f"Channel {label}: values vs reconstruction{note}{grid_note}"
        if events:
            self._refresh_histogram()

    def _refresh_frontier(self, *events) -> None:
        rows = self.calc.frontier or []
        colors = ["#2ca02c" if r.get("pareto") else "#7f7f7f" for r in rows]
        set_data(self.front_src, dict(total_bytes=[float(r["total_bytes"]) for r in rows],
                                      rmse=positive_or_nan([r["rmse"] for r in rows]).tolist(),
                                      label=[str(r["label"]) for r in rows],
                                      bpw=[float(r["bits_per_weight"]) for r in rows],
                                      color=colors, size=[10 if r.get("pareto") else 6 for r in rows]))
        par = [r for r in rows if r.get("pareto")]
        par.sort(key=lambda r: r["total_bytes"])
        set_data(self.pareto_src, dict(total_bytes=[float(r["total_bytes"]) for r in par],
                                       rmse=positive_or_nan([r["rmse"] for r in par]).tolist()))
        pending = " — press 'Compute frontier' (large input)" if self.calc.frontier_pending else ""
        self.front_fig.title.text = "Error vs memory frontier (bits × granularity; green = Pareto)" + pending

    def panes(self) -> list:
        return [pn.pane.Bokeh(f, sizing_mode="stretch_width") for f in
                (self.range_fig, self.err_fig, self.chan_fig, self.hist_fig, self.front_fig)]


class PlotsView(pn.viewable.Viewer):
    """The Plots section: the channel picker, then the five figures (:class:`PlotFigures`) once the page is up.

    The figures are ~half of the page's Bokeh models and ~40 % of the time to build the app: they are built and
    join the page once it is shown, so the first document (built, serialised and drawn before anything is
    usable; 3-4x slower in the browser worker) carries the numbers and controls only."""

    def __init__(self, calc: QuantCalcSettings, **params):
        super().__init__(**params)
        self.calc = calc
        self.figures: PlotFigures | None = None
        self._plots = pn.Column(html_pane("<p class='qc-note'>The plots are drawn once the calculator has "
                                          "started.</p>", margin=(0, 10)),
                                sizing_mode="stretch_width", min_height=5 * 260)
        attach_after_load(self._plots, self._build)

    def _build(self) -> list:
        self.figures = PlotFigures(self.calc)
        return self.figures.panes()

    def __panel__(self):
        picker = pn.widgets.IntInput.from_param(self.calc.param.channel, name="Selected channel (index; or click a "
                                                "bar, point or table row)", width=300, stylesheets=NO_SPIN)
        return pn.Column(html_pane("<h2 class='qc-h'>Plots</h2>", margin=(0, 5)), picker, self._plots,
                         sizing_mode="stretch_width")


class ExportView(pn.viewable.Viewer):
    """CSV (summary, per-channel, per-sample), JSON and a PDF report; text comes from quantcore.report."""

    def __init__(self, calc: QuantCalcSettings, **params):
        super().__init__(**params)
        self.calc = calc
        self.csv_summary = pn.widgets.FileDownload(callback=self._csv_summary, filename="summary.csv",
                                                   label="CSV: summary", color="primary", width=150)
        self.csv_channels = pn.widgets.FileDownload(callback=self._csv_channels, filename="channels.csv",
                                                    label="CSV: per-channel", color="primary", width=150)
        self.csv_samples = pn.widgets.FileDownload(callback=self._csv_samples, filename="samples.csv",
                                                   label="CSV: per-sample", color="primary", width=150)
        self.json = pn.widgets.FileDownload(callback=self._json, filename="report.json",
                                            label="JSON", color="primary", width=150)
        self.pdf = DeclinableDownload(callback=self._pdf, filename="report.pdf",
                                      label="PDF report", color="primary", width=150)
        self.alert = alert_pane()
        calc.param.watch(self._rename, ["tensor_name"])
        self._rename()

    def _rename(self, *events) -> None:
        name = self.calc.tensor_name
        self.csv_summary.filename = safe_filename(name, "summary.csv")
        self.csv_channels.filename = safe_filename(name, "channels.csv")
        self.csv_samples.filename = safe_filename(name, "samples.csv")
        self.json.filename = safe_filename(name, "report.json")
        self.pdf.filename = safe_filename(name, "report.pdf")

    def _text(self, text: str) -> _bytes_io.BytesIO:
        return _bytes_io.BytesIO(text.encode("utf-8"))

    def _labels(self, res) -> list[str] | None:
        """The user's channel labels when they name this result's channels, else None (the result's own)."""
        labels = self.calc.labels
        return labels if labels and len(labels) == res.canon.n_channels else None

    def _csv_summary(self):
        c = self.calc
        if c.source == "manual":
            return self._csv_samples()
        if c.comparison is None:
            return self._text("")
        return self._text(qc_report.summary_csv(c.comparison, c.tensor_name or ""))

    def _csv_channels(self):
        res = self.calc.detail_result
        if res is None:
            return self._text("")
        return self._text(qc_report.channels_csv(res, self._labels(res), self.calc.tensor_name or ""))

    def _csv_samples(self):
        c = self.calc
        if c.source == "manual":
            return self._text(qc_report.manual_csv(c.manual_rows) if c.manual_rows else "")
        res = c.detail_result
        if res is None:
            return self._text("")
        return self._text(qc_report.samples_csv(res, self._labels(res), SAMPLE_TABLE_LIMIT, c.tensor_name or ""))

    def _json(self):
        c = self.calc
        doc = {"tensor": c.tensor_name, "settings": c.settings_dict()}
        if c.source == "manual":
            doc["manual"] = c.manual_rows
        else:
            doc["comparison"] = c.comparison.to_dict() if c.comparison is not None else None
            doc["channel_labels"] = list(c.labels)
            doc["frontier"] = list(c.frontier)
        return self._text(qc_report.to_json(doc))

    async def _pdf(self):
        """The PDF report (see :func:`pdf_download`)."""
        return await pdf_download(self.alert, lambda: pdf_report(self.calc))

    def __panel__(self):
        return pn.Column(html_pane("<h3 class='qc-h'>Export</h3>", margin=(0, 5)),
                         pn.FlexBox(self.csv_summary, self.csv_channels, self.csv_samples, self.json, self.pdf,
                                    flex_wrap="wrap"),
                         self.alert, sizing_mode="stretch_width")


class DeclinableDownload(pn.widgets.FileDownload):
    """A FileDownload whose coroutine callback may return None: then nothing is sent (Panel 1.9.4 would raise
    ``ValueError: Cannot transfer unknown object of type NoneType`` in ``_sync_data``)."""

    async def _async_sync_data(self):
        fileobj = await self.callback()
        if fileobj is not None:
            self._sync_data(fileobj)


async def pdf_download(alert: pn.pane.HTML, make: Callable[[], bytes]) -> _bytes_io.BytesIO | None:
    """A PDF download's bytes from ``make()``, the PDF library loaded on first use (in the browser it is not part
    of the start-up); None (no download) with the reason shown in ``alert``, next to the buttons, when the
    library cannot be loaded or ``make`` raises."""
    try:
        if await load_pdf_library(alert):
            alert.visible = False
        data = make()
    except Exception as exc:  # shown next to the buttons, never a traceback
        show_error(alert, f"The PDF report could not be made: {exc}")
        return None
    alert.visible = False
    return _bytes_io.BytesIO(data)


async def load_pdf_library(alert: pn.pane.HTML) -> bool:
    """Make ``import fpdf`` work; True when it had to be loaded (the browser's first PDF).

    Natively fpdf2 comes with the app extra. In the Pyodide worker it is loaded from the bundle on first use,
    with its lock dependencies (Pillow, fontTools, defusedxml and Pyodide's ssl module: fpdf2 imports
    ``urllib.request.HTTPSHandler``, which exists in Pyodide only once ssl is loaded).
    """
    try:
        import pyodide_js  # only inside Pyodide
    except ImportError:
        import fpdf  # noqa: F401  (natively: an ImportError here names what is missing)
        return False
    import sys
    if "fpdf" in sys.modules:
        return False
    show_error(alert, "Loading the PDF library (first PDF only)…", kind="info")
    await pyodide_js.loadPackage(["fpdf2"])
    # http.client / urllib.request define HTTPS classes only if ssl imported when they were first imported: at
    # start-up, before ssl was loaded. Import them again now, then restore pyodide-http's urllib patch.
    import http.client
    import importlib
    import urllib.request

    import pyodide_http
    importlib.reload(http.client)
    importlib.reload(urllib.request)
    pyodide_http.patch_urllib(continue_on_import_error=True)
    return True


def channel_labels(table: dict, labels: list[str]) -> list[str]:
    ch = np.asarray(table.get("channel", []))
    if ch.dtype.kind not in "iu":
        return [str(v) for v in ch]
    return [labels[int(i)] if 0 <= int(i) < len(labels) else str(i) for i in ch]


def pdf_report(calc: QuantCalcSettings) -> bytes:
    """The PDF report: settings and data source in words, the report model, drawn by ``quantcalc_ui.pdf``
    (which imports fpdf2 only when called)."""
    from quantcalc_ui import pdf as ui_pdf
    from quantcalc_ui import report as ui_report
    from quantcalc_ui import settings_words as ui_words

    settings = calc.settings_dict()
    name = calc.tensor_name.strip() or "unnamed tensor"
    data = calc.data
    shape = data.shape if isinstance(data, np.ndarray) else None
    lengths = [len(r) for r in data] if isinstance(data, list) else None
    dtype = ""
    if calc.source == "upload" and calc._file_infos:   # the dtype and shape as stored in the file (its header)
        infos = calc._file_infos
        info = next((t for t in infos if t.name == calc.upload_tensor), infos[0] if len(infos) == 1 else None)
        if info is not None:
            dtype, shape = info.dtype, info.shape
    manual_rows = calc.manual_rows
    source = ui_words.source_words(settings, filename=calc._upload_filename, tensor=calc.upload_tensor, dtype=dtype,
                                   shape=shape, channel_lengths=lengths,
                                   manual_rows=len(manual_rows["channel"]) if manual_rows is not None else None)
    title = f"Quantization report: {name}"
    words = ui_words.settings_words(settings)
    if calc.source == "manual":
        model = ui_report.manual_report_model(manual_rows, title=title, tensor_name=name, source_description=source,
                                              settings=words)
    elif calc.comparison is None or calc.detail_result is None:
        raise ValueError("there is no result to report: fix the input or the options first")
    else:
        tres = calc.tensor_result
        tensor_range = (float(np.asarray(tres.lo).reshape(-1)[0]), float(np.asarray(tres.hi).reshape(-1)[0])) \
            if tres is not None and np.size(tres.lo) == 1 else None
        pending = "The bits x granularity sweep waits for 'Compute frontier' (large tensor)." \
            if calc.frontier_pending else ""
        model = ui_report.report_model(
            calc.comparison, calc.schemes().index(calc.detail), title=title, tensor_name=name,
            source_description=source, settings=words, channel_labels=calc.labels, frontier_rows=calc.frontier,
            tensor_range=tensor_range, frontier_note=pending)
    return ui_pdf.render_pdf(model)


DOCS_FORMULAS = """
<p><b>Affine (asymmetric)</b>: <code>scale = (max − min) / (qmax − qmin)</code>,
<code>zero_point = round(qmin − min / scale)</code></p>
<p><b>Symmetric</b>: <code>scale = max(|min|, |max|) / max(|qmin|, |qmax|)</code>, <code>zero_point = 0</code>
(the torch convention divides by <code>(qmax − qmin) / 2</code> instead)</p>
<p><b>Quantize</b>: <code>q = clamp(round(x / scale) + zero_point, qmin, qmax)</code>;
<b>dequantize</b>: <code>x̂ = (q − zero_point) × scale</code>; <b>affine-float</b> (GGUF Q4_1/Q5_1):
<code>x̂ = min + scale × q</code></p>
<p><b>Errors</b>: <code>MAE = mean|x̂ − x|</code>, <code>RMSE = sqrt(mean (x̂ − x)²)</code>,
max error <code>= max|x̂ − x|</code>, <code>SQNR = 10·log10(Σx² / Σ(x − x̂)²)</code> dB; clip rate = share of
values whose raw code fell outside <code>[qmin, qmax]</code>; collapsed = values that were not 0 but came back as 0.</p>
<p><b>Memory</b>: payload <code>= elements × bits / 8</code> bytes; metadata <code>= blocks × (scale bytes +
zero-point bytes)</code>; per-tensor has 1 block, per-channel one per channel, per-group one per group (a shorter
last group keeps its own).</p>
<p>Narrow range drops the most negative code (int4 → [−7, 7]); reduce range drops one bit (int8 → [−64, 63]).</p>
"""

DOCS_FAQ = """
<dl>
<dt>Per-tensor or per-channel?</dt><dd>One scale for the whole tensor is simple and cheap; one per channel costs
metadata but keeps quiet channels alive when channel ranges differ.</dd>
<dt>Does per-channel always win?</dt><dd>No: when ranges are alike the two are close, and per-tensor is easier to
deploy.</dd>
<dt>Why per-group?</dt><dd>The middle ground: a few scales per row, as llama.cpp's Q4_0/Q8_0 (groups of 32).</dd>
<dt>Symmetric or affine?</dt><dd>Symmetric fits zero-centred weights (zero-point 0); affine fits shifted ranges
such as activations after ReLU.</dd>
<dt>What does clipping mean?</dt><dd>The raw code fell outside <code>[qmin, qmax]</code> and was clamped:
calibrate the range again or choose percentile / MSE-optimal.</dd>
<dt>Why RMSE and MAE together?</dt><dd>RMSE weighs big errors, MAE shows the typical drift.</dd>
<dt>Ties?</dt><dd>Values exactly between two codes: float64, PyTorch and GGUF arithmetic can round them
differently; the tables flag them.</dd>
<dt>Does lower error guarantee accuracy?</dt><dd>No: layer sensitivity and calibration data matter too.</dd>
</dl>
"""

DOCS_RULER = """
<p>Take a 2 × 4 weight with a quiet Row A <code>[0.05, −0.08, 0.12, −0.15]</code> and a loud Row B whose largest
magnitude is 3.10. Symmetric int4 on <code>[−7, 7]</code>: one shared scale <code>3.10 / 7 = 0.4429</code> turns
every value of Row A into 0 — the quiet row collapses (open example <b>s3</b> and read <i>Collapsed to 0</i>).</p>
<p>Give each row its own ruler: Row A's scale <code>0.15 / 7 = 0.0214</code> gives codes <code>[2, −4, 6, −7]</code>
and reconstructs <code>[0.0429, −0.0857, 0.1286, −0.15]</code>, while Row B keeps its scale and does not get
worse.</p>
<p>Group-wise scales are the compromise: better local fit than per-tensor, less metadata than tiny blocks.</p>
"""


class DocsView(pn.viewable.Viewer):
    """Formulas (seeds 000–002), FAQ and the ruler story (seed 003), collapsed by default.

    Native <details> elements: accessible, collapsible without any Python round trip.
    """

    def __panel__(self):
        parts = [("Formulas", DOCS_FORMULAS), ("FAQ", DOCS_FAQ), ("The ruler story: one ruler for all, or one per row",
                                                                 DOCS_RULER)]
        body = "".join(f"<details class='qc-docs'><summary>{esc(title)}</summary>{text}</details>"
                       for title, text in parts)
        return html_pane(body, sizing_mode="stretch_width", margin=(10, 5))


# --------------------------------------------------------------------------------------------------
# 4. layout and URL sync
# --------------------------------------------------------------------------------------------------
# Whole model: a checkpoint scanned tensor by tensor (state, then views)
# --------------------------------------------------------------------------------------------------

class ModelScan(param.Parameterized):
    """The Model view's state: the checkpoint chosen, the schemes, the scan's progress and rows, and the plan.

    The files stay in the page (one checkpoint file, or the shards of one model with or without their index:
    :class:`quantcalc_ui.modelscan.PickedCheckpoint`): every header is read by byte range (``file_request``, which
    names the file, answered like the calculator's), then one unit of rows after another
    (:class:`quantcore.scan.SteppedScan`), each unit's bytes dropped once measured. Between units the scan yields
    to the event loop (:func:`later`); a new pick, a new set of schemes or :meth:`cancel` stops it (work for an older
    scan is dropped by its generation number)."""

    schemes = param.ListSelector(default=list(qc_model.DEFAULT_SCHEMES), objects=list(qc_model.SCHEME_CHOICES),
                                 doc="Schemes every tensor is measured under (quantcore.schemes names).")
    metric = param.Selector(default="sqnr_db", objects=list(qc_model.METRICS), doc="What the heat map's colour shows.")
    budget = param.Number(default=5.0, bounds=(1.0, 32.0),
                          doc="Bits per weight the mixed-precision plan may spend over the scanned tensors.")
    file_request = param.Dict(default={}, precedence=-1,
                              doc="Bytes of the checkpoint wanted next: {id, start, stop, file (the page's key)}.")
    filename = param.String(default="", precedence=-1, doc="The checkpoint's name: its file, or the index / first "
                                                           "file and how many more.")
    error = param.String(default="", precedence=-1, doc="Why the file cannot be scanned (shown by the file control).")
    problems = param.List(default=[], precedence=-1, doc="Tensors that failed, each with its reason.")
    running = param.Boolean(default=False, precedence=-1)
    tensors_done = param.Integer(default=0, precedence=-1)
    tensors_total = param.Integer(default=0, precedence=-1)
    bytes_read = param.Integer(default=0, precedence=-1)
    state = param.String(default="", precedence=-1, doc="'', 'header', 'scanning', 'done', 'cancelled', 'failed'.")
    rows = param.List(default=[], precedence=-1, doc="quantcore ScanRow per scanned tensor x scheme.")
    skipped = param.List(default=[], precedence=-1, doc="quantcore Skipped: tensors not scanned and why.")
    plan = param.Parameter(default=None, precedence=-1, doc="quantcore.plan.MixedPlan over the rows, or None.")
    plan_error = param.String(default="", precedence=-1)

    def __init__(self, **params):
        super().__init__(**params)
        self._files: qc_model.PickedCheckpoint | None = None
        self._requests = ByteRequests()
        self._scan: qc_scan.SteppedScan | None = None
        self._asked = ""              # the file the byte request in flight is for
        self._generation = 0
        self._ckpt = None
        self.seconds = 0.0            # time spent measuring (not waiting for bytes)
        self.param.watch(lambda e: self._restart(), "schemes")
        self.param.watch(lambda e: self._solve_plan(), "budget")

    # --- the file -------------------------------------------------------------------------------
    def open_file(self, filename: str, size: int, file_key: str = "") -> None:
        """One checkpoint file was chosen (:meth:`open_files` with one file)."""
        self.open_files([qc_model.PickedFile(filename or "", int(size), file_key)])

    def export_stem(self) -> str:
        """The checkpoint's name for export files ("" before one is open)."""
        return self._files.stem if self._files is not None else ""

    def open_files(self, files: list[qc_model.PickedFile]) -> None:
        """Checkpoint files were chosen: stop any scan, read every header, then scan them as one checkpoint."""
        self._generation += 1
        self._requests.cancel()
        self._ckpt = None
        try:
            self._files, error = qc_model.PickedCheckpoint(files), ""
        except ValueError as exc:   # InputError: no file, an empty one, two of one name
            self._files, error = None, str(exc)
        # (the files first: watchers of `filename` name the exports after them)
        self.param.update(error="", problems=[], rows=[], skipped=[], plan=None, plan_error="", bytes_read=0,
                          tensors_done=0, tensors_total=0, running=False, state="",
                          filename=self._files.label if self._files else (files[0].name if files else ""))
        if self._files is None:
            self._fail(error)
            return
        self.state = "header"
        self._read_header(self._generation)

    def tensor_file(self, tensor: str) -> tuple[qc_model.PickedFile, bytes] | None:
        """The file holding ``tensor`` and its bytes before the first tensor (kept all along): what the one-tensor
        view needs to open it from the same file."""
        f = self._files.file_of(tensor) if self._files is not None else None
        return (f, self._files.header_bytes(f.name)) if f is not None else None

    def _read_header(self, generation: int) -> None:
        if generation != self._generation:
            return
        try:
            ckpt = self._files.open()
        except NeedBytes as need:
            self._fetch(need, lambda: self._read_header(generation))
            return
        except ValueError as exc:   # InputError: not a checkpoint, a lying or truncated header, shards that disagree
            self._fail(str(exc))
            return
        self._ckpt = ckpt
        self._start_scan()

    def _restart(self) -> None:
        if self._files is not None and self._ckpt is not None:   # the headers were read: scan again
            self._generation += 1
            self._requests.cancel()
            self._start_scan()

    def _start_scan(self) -> None:
        generation = self._generation
        self.error = ""
        if not self.schemes:
            self.param.update(rows=[], problems=[], tensors_done=0, tensors_total=0)
            self._fail("Choose at least one scheme to scan with.")
            return
        try:
            schemes = [qc_schemes.parse_scheme(s) for s in self.schemes]
            plan = qc_scan.plan_scan(self._ckpt, schemes, chunk_mb=qc_model.SCAN_CHUNK_MB)
        except ValueError as exc:
            self._fail(str(exc))
            return
        self.param.update(rows=[], problems=[], skipped=list(plan.skipped), plan=None, plan_error="",
                          tensors_done=0, tensors_total=len(plan.tasks))
        if not plan.tasks:
            reasons = sorted({s.reason for s in plan.skipped})
            self._fail(f"{self.filename}: none of its {len(self._ckpt.tensors)} tensor(s) can be scanned"
                       + (f" ({'; '.join(reasons[:3])})" if reasons else ""))
            return
        self._scan = qc_scan.SteppedScan(plan, self._files.read)
        self.seconds = 0.0
        self.param.update(running=True, state="scanning")
        if pn.state.curdoc is None:
            self._step(generation)      # no page (tests, plain Python): the scan runs as the bytes arrive
        else:
            later(lambda: self._step(generation))

    def _step(self, generation: int) -> None:
        """One unit of the scan, then the next one on a later tick (or at once without a page)."""
        while generation == self._generation and self._scan is not None:
            scan = self._scan
            t0 = time.perf_counter()
            try:
                report = scan.step()
            except NeedBytes as need:   # exactly the rows' bytes: they are dropped once measured
                self._fetch(need, lambda: self._step(generation), read_ahead=0)
                return
            except ValueError as exc:   # this tensor is bad (non-finite, undecodable, cut short): the rest go on
                self.problems = self.problems + [str(exc)]
                report = None
            finally:
                self.seconds += time.perf_counter() - t0
            if report is not None:
                self.rows = self.rows + list(report.rows)
            self.tensors_done = scan.tensors_done
            if scan.finished:
                self._scan = None
                self.param.update(running=False, state="done")
                self._solve_plan()
                return
            if pn.state.curdoc is not None:
                later(lambda: self._step(generation))
                return

    def cancel(self) -> None:
        """Stop the scan; the rows measured so far stay (and the plan covers them)."""
        if not self.running and self.state != "header":
            return
        self._generation += 1
        self._requests.cancel()
        self._scan = None
        self.param.update(running=False, state="cancelled")
        self._solve_plan()

    def _fetch(self, need: NeedBytes, then, read_ahead: int = READ_AHEAD) -> None:
        f = self._files.files[need.source]
        self._asked = f.name
        request = self._requests.ask(need, f.size, then, read_ahead)
        self.file_request = {**request, "file": f.key}

    def file_bytes(self, request_id: int, start: int, data: bytes) -> None:
        """The page answers ``file_request`` ``request_id`` (answers to older requests are ignored)."""
        then = self._requests.take(request_id)
        if then is None or self._files is None:
            return
        try:
            self._files.add(self._asked, start, data)
        except ValueError as exc:
            self._fail(f"{self._asked}: {exc}")
            return
        self.bytes_read += len(data)
        then()

    def file_unreadable(self, request_id: int, why: str) -> None:
        if self._requests.take(request_id) is not None:
            self._fail(f"{self._asked}: the browser could not read the file ({why}); choose it again")

    def _fail(self, message: str) -> None:
        self._generation += 1
        self._requests.cancel()
        self._scan = None
        self.param.update(error=message, running=False, state="failed")
        self._solve_plan()

    # --- the plan -------------------------------------------------------------------------------
    def _solve_plan(self) -> None:
        if not self.rows or self.running:
            self.param.update(plan=None, plan_error="")
            return
        try:
            plan = qc_plan.solve_plan(self.rows, bits_per_weight=self.budget, schemes=list(self.schemes))
        except ValueError as exc:
            self.param.update(plan=None, plan_error=str(exc))
            return
        self.param.update(plan=plan, plan_error="")

    # --- words ------------------------------------------------------------------------------------
    def progress_text(self) -> str:
        read = f"{self.bytes_read / 1e6:,.1f} MB read"
        if self.state == "header":
            n = len(self._files.files) if self._files is not None else 1
            return f"Reading the header{'s' if n > 1 else ''} of {self.filename}… {read}"
        if not self.tensors_total:
            return ""
        done = f"{self.tensors_done} of {self.tensors_total} tensors, {read}"
        weights = sum(r.n for r in self.rows) // max(1, len(self.schemes))
        if self.state == "done" and self.seconds > 0 and weights:
            done += f"; {weights / self.seconds / 1e6:,.2f} M weights/s measured ({len(self.schemes)} schemes)"
        left_out = self._files.left_out if self._files is not None else ()
        if left_out:    # a model folder's config / tokenizer JSON, picked along with the shards
            done += f"; left out (not a checkpoint file): {', '.join(left_out)}"
        words = {"scanning": "Scanning", "done": "Done", "cancelled": "Cancelled", "failed": "Stopped"}
        return f"{words.get(self.state, '')}: {done}" if self.state in words else done


MODEL_ACCEPT = ".safetensors,.gguf,.json"   # .json: a safetensors index (*.index.json; other JSON is left out)


class ModelFileView(pn.viewable.Viewer):
    """The checkpoint chooser, the schemes, progress with a Cancel button, and what went wrong right below."""

    def __init__(self, scan: ModelScan, **params):
        super().__init__(**params)
        self.scan = scan
        self.chooser = BrowserFile(accept=MODEL_ACCEPT, label="Upload checkpoint files", multiple=True,
                                   sizing_mode="stretch_width", margin=(5, 10))
        self.chooser.param.watch(self._on_choose, "chosen")
        self.chooser.param.watch(lambda e: deliver_file_bytes(scan, e.new or {}), "response")
        scan.param.watch(lambda e: setattr(self.chooser, "request", e.new), "file_request")
        self.schemes = pn.widgets.CheckBoxGroup.from_param(
            scan.param.schemes, name="Schemes", inline=True, sizing_mode="stretch_width",
            stylesheets=[".bk-input-group { flex-wrap: wrap; gap: 2px 10px; }"])
        self.cancel = pn.widgets.Button(label="Cancel scan", color="warning", disabled=True, width=130)
        self.cancel.on_click(lambda e: scan.cancel())
        self.progress = pn.indicators.Progress(value=0, max=1, sizing_mode="stretch_width", bar_color="primary",
                                               visible=False, margin=(12, 10, 0, 10))
        self.status = html_pane("", visible=False, sizing_mode="stretch_width")
        self.alert = alert_pane()
        self.problems = alert_pane()
        scan.param.watch(self._refresh, ["running", "state", "tensors_done", "tensors_total", "bytes_read", "error",
                                         "problems"])
        self._refresh()

    def _on_choose(self, event) -> None:
        chosen = event.new or {}
        self.scan.open_files([qc_model.PickedFile(str(f.get("name", "")), int(f.get("size", 0)), str(f.get("key", "")))
                              for f in chosen.get("files") or [chosen]])

    def _refresh(self, *events) -> None:
        s = self.scan
        self.cancel.disabled = not (s.running or s.state == "header")
        self.progress.visible = s.tensors_total > 0 or s.state == "header"
        self.progress.max = max(1, s.tensors_total)
        self.progress.value = s.tensors_done if s.tensors_total else -1   # -1: indeterminate (reading the header)
        text = s.progress_text()
        self.status.object = f"<p class='qc-note' role='status'>{esc(text)}</p>" if text else ""
        self.status.visible = bool(text)
        show_error(self.alert, s.error)
        shown = s.problems[:5]
        more = f" (and {len(s.problems) - 5} more)" if len(s.problems) > 5 else ""
        show_error(self.problems, (f"{len(s.problems)} tensor(s) could not be measured{more}:\n" + "\n".join(shown))
                   if shown else "", kind="warning")

    def __panel__(self):
        return pn.Column(
            html_pane("<h2 class='qc-h'>Checkpoint</h2><p class='qc-note'>A .safetensors or .gguf file, or every "
                      "shard of one model (choose them together, with its .index.json if it has one): the headers "
                      "are read first, then one tensor after another, by byte range (a file never travels whole)."
                      "</p>", margin=(0, 5)),
            self.chooser, self.alert, html_pane("<b>Schemes</b>", margin=(5, 10, 0, 10)), self.schemes,
            pn.Row(self.cancel, self.progress, sizing_mode="stretch_width"), self.status, self.problems,
            sizing_mode="stretch_width")


HEAT_PALETTE = tuple(RdYlGn11)   # green (low) ... red (high)


class ModelHeatMapView(pn.viewable.Viewer):
    """Tensors x schemes, coloured by SQNR or relative RMSE; the figure is built once, only its data changes.
    Clicking a cell opens that tensor in the one-tensor view."""

    def __init__(self, scan: ModelScan, on_open=None, **params):
        super().__init__(**params)
        self.scan, self.on_open = scan, on_open
        self.source = ColumnDataSource(dict(tensor=[], scheme=[], value=[], shown=[]))
        self.mapper = LinearColorMapper(palette=HEAT_PALETTE, nan_color="#bdbdbd")
        p = figure(**figure_kw(x_range=FactorRange(), y_range=FactorRange(), height=400, tools="tap,reset",
                               toolbar_location="above", title="Error by tensor and scheme", name="qc-heat"))
        cells = p.rect("scheme", "tensor", 0.95, 0.95, source=self.source, line_color=None,
                       fill_color={"field": "value", "transform": self.mapper})
        p.add_tools(HoverTool(renderers=[cells], tooltips=[("tensor", "@tensor"), ("scheme", "@scheme"),
                                                           ("value", "@shown")]))
        p.add_layout(ColorBar(color_mapper=self.mapper, width=10), "right")
        p.xaxis.major_label_orientation = 0.6
        p.grid.grid_line_color = None
        self.figure = p
        self.source.selected.on_change("indices", self._tapped)
        self.pane = pn.pane.Bokeh(p, sizing_mode="stretch_width", visible=False)
        self.note = html_pane("", sizing_mode="stretch_width")
        scan.param.watch(self._refresh, ["rows", "metric"])
        self._refresh()

    def _refresh(self, *events) -> None:
        s = self.scan
        hm = qc_model.heat_map(s.rows, list(s.schemes), s.metric)
        p = self.figure
        p.x_range.factors = hm.schemes if hm.tensors else []
        p.y_range.factors = hm.tensors
        finite = hm.data["value"][np.isfinite(hm.data["value"])]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        self.mapper.low, self.mapper.high = low, high if high > low else low + 1.0
        # SQNR: high is good, so its palette runs the other way (red = damaged in both)
        self.mapper.palette = HEAT_PALETTE[::-1] if s.metric == "sqnr_db" else HEAT_PALETTE
        p.height = int(min(900, max(220, 16 * len(hm.tensors) + 120)))
        p.yaxis.visible = len(hm.tensors) <= 60
        p.title.text = f"{qc_model.METRICS[s.metric]} by tensor and scheme" + (f" ({hm.note})" if hm.note else "")
        self.source.data = {k: list(v) for k, v in hm.data.items()}
        self.pane.visible = bool(hm.tensors)
        self.note.object = ("<p class='qc-note'>Grey: a value that is not finite (a lossless scheme's SQNR). Click a "
                            "cell to open that tensor in the one-tensor view.</p>") if hm.tensors else ""

    def _tapped(self, attr, old, new) -> None:
        if new and self.on_open is not None:
            tensor = self.source.data["tensor"][new[0]]
            self.source.selected.indices = []
            self.on_open(tensor)

    def __panel__(self):
        return pn.Column(pn.widgets.RadioButtonGroup.from_param(self.scan.param.metric, options={
            v: k for k, v in qc_model.METRICS.items()}, name="Colour", color="primary", variant="outline"),
            self.pane, self.note, sizing_mode="stretch_width")


class ModelLayersView(pn.viewable.Viewer):
    """Relative RMSE by layer index, one line with markers per scheme (:func:`quantcalc_ui.modelscan.layer_curves`);
    the figure is built once, its sources, y range and y scale follow the scan."""

    def __init__(self, scan: ModelScan, **params):
        super().__init__(**params)
        self.scan = scan
        self.lines = ColumnDataSource(dict(scheme=[], xs=[], ys=[]), name="qc-layer-lines")
        self.points = ColumnDataSource(dict(layer=[], scheme=[], rel_rmse=[], shown=[], tensors=[]),
                                       name="qc-layer-points")
        # scheme k in Category10's colour k, cycling after ten, as quantcalc_ui.pdf.PALETTE draws it in the PDF
        # (repeated to cover every scheme choice: a mapper gives a factor beyond its palette no colour)
        self.colors = CategoricalColorMapper(
            factors=[], palette=list(Category10_10) * (len(qc_model.SCHEME_CHOICES) // len(Category10_10) + 1))
        p = figure(**figure_kw(height=320, title="Relative RMSE by layer", name="qc-layers",
                               x_axis_label="layer index", y_axis_label="relative RMSE", y_range=Range1d(0.0, 1.0),
                               tools="pan,wheel_zoom,box_zoom,reset,save"))
        # beside the plot (flat curves leave no free corner); no click-to-hide: an entry grouped by legend_field
        # would hide every scheme's line at once
        integer_x_axis(p)
        p.add_layout(Legend(label_text_font_size="8pt", padding=2, spacing=0, border_line_alpha=0), "right")
        p.multi_line("xs", "ys", source=self.lines, line_width=2, legend_field="scheme",
                     line_color={"field": "scheme", "transform": self.colors})
        dots = p.scatter("layer", "rel_rmse", source=self.points, size=6,
                         color={"field": "scheme", "transform": self.colors})
        p.add_tools(HoverTool(renderers=[dots], tooltips=[("layer", "@layer"), ("scheme", "@scheme"),
                                                          ("relative RMSE", "@shown"), ("tensors", "@tensors")]))
        self.figure, self.log_y = p, False
        self.pane = pn.pane.Bokeh(p, sizing_mode="stretch_width", visible=False)
        self.note = html_pane("", sizing_mode="stretch_width")
        scan.param.watch(self._refresh, ["rows"])
        self._refresh()

    def _refresh(self, *events) -> None:
        curves = qc_model.layer_curves(self.scan.rows, list(self.scan.schemes))
        p = self.figure
        if curves.log_y != self.log_y:
            self.log_y = curves.log_y
            p.y_scale = LogScale() if curves.log_y else LinearScale()
            p.yaxis[0].ticker = LogTicker() if curves.log_y else BasicTicker()
            p.yaxis[0].formatter = LogTickFormatter() if curves.log_y else BasicTickFormatter()
        p.y_range.start, p.y_range.end = curves.y_range
        p.title.text = "Relative RMSE by layer" + (" (log scale)" if curves.log_y else "")
        self.colors.factors = list(curves.schemes)
        self.lines.data = curves.lines
        self.points.data = curves.points
        self.pane.visible = bool(curves.points["layer"])
        self.note.object = f"<p class='qc-note'>{esc(curves.note[:1].upper() + curves.note[1:])}.</p>" \
            if curves.note and self.scan.rows else ""

    def __panel__(self):
        return pn.Column(html_pane("<h2 class='qc-h'>Error by layer</h2>", margin=(0, 5)), self.pane, self.note,
                         sizing_mode="stretch_width")


class ModelTableView(pn.viewable.Viewer):
    """The most damaged tensors, worst first; a click (or Enter) on a row opens that tensor in the one-tensor view."""

    def __init__(self, scan: ModelScan, on_open=None, **params):
        super().__init__(**params)
        self.scan, self.on_open = scan, on_open
        self.html = RowPickHTML(sizing_mode="stretch_width", margin=(0, 5), stylesheets=[APP_CSS])
        self.html.param.watch(self._picked, "picked")
        self._names: list[str] = []
        scan.param.watch(self._refresh, ["rows", "plan", "metric"])
        self._refresh()

    def _refresh(self, *events) -> None:
        s = self.scan
        schemes = list(s.schemes)
        table = qc_model.damage_table(s.rows, schemes, s.plan)
        self._names = [r.tensor for r in table]
        if not table:
            self.html.content = {"html": ""}
            return
        k = 0 if s.metric == "rel_rmse" else 1
        unit = qc_model.METRICS[s.metric]
        sharded = len({row.file for row in s.rows}) > 1      # then each tensor says which file it is in
        head = ("<th scope='col'>Tensor</th>" + ("<th scope='col'>File</th>" if sharded else "")
                + "<th scope='col'>Shape</th><th scope='col'>Stored</th>"
                "<th scope='col'>Role</th><th scope='col'>Worst rel. RMSE</th>"
                + "".join(f"<th scope='col'>{esc(unit)} · {esc(sc)}</th>" for sc in schemes)
                + "<th scope='col'>Plan</th>")
        body = []
        for i, r in enumerate(table):
            cells = [f"<th scope='row' data-key='tensor'>{esc(r.tensor)}</th>",
                     *([f"<td data-key='file'>{esc(r.file)}</td>"] if sharded else []), f"<td>{esc(r.shape)}</td>",
                     f"<td>{esc(r.dtype)}</td>", f"<td>{esc(r.role)}</td>",
                     f"<td data-key='worst'>{fmt(r.worst, 5)}</td>"]
            cells += [f"<td data-key='{esc(sc)}'>{fmt(r.by_scheme[sc][k], 5) if sc in r.by_scheme else ''}</td>"
                      for sc in schemes]
            cells.append(f"<td data-key='plan'>{esc(r.planned)}</td>")
            body.append(f"<tr data-channel='{i}' data-tensor='{esc(r.tensor)}' tabindex='0'>{''.join(cells)}</tr>")
        n = len({row.tensor for row in s.rows})
        caption = (f"Most damaged tensors (largest relative RMSE over the schemes), {len(table)} of {n} scanned; "
                   "click a row to open it in the one-tensor view")
        self.html.content = {"html": (
            f"<div class='qc-scroll' tabindex='0' role='region' aria-label='Most damaged tensors'>"
            f"<table class='qc-table' id='qc-model-worst'><caption>{esc(caption)}</caption>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")}

    def _picked(self, event) -> None:
        if 0 <= event.new < len(self._names) and self.on_open is not None:
            self.on_open(self._names[event.new])

    def __panel__(self):
        return pn.Column(html_pane("<h2 class='qc-h'>Most damaged tensors</h2>", margin=(0, 5)), self.html,
                         sizing_mode="stretch_width")


class ModelPlanView(pn.viewable.Viewer):
    """The mixed-precision plan under a bits/weight budget (quantcore.plan.solve_plan), against each scheme alone."""

    def __init__(self, scan: ModelScan, **params):
        super().__init__(**params)
        self.scan = scan
        self.budget = CheckedNumber(scan, "budget", "Plan budget (bits/weight)", widget=pn.widgets.FloatInput,
                                    step=0.25, width=200)
        self.alert = alert_pane()
        self.body = html_pane("", sizing_mode="stretch_width", margin=(0, 5))
        scan.param.watch(self._refresh, ["plan", "plan_error", "running"])
        self._refresh()

    def _refresh(self, *events) -> None:
        s, plan = self.scan, self.scan.plan
        show_error(self.alert, s.plan_error)
        if plan is None:
            self.body.object = ("<p class='qc-note'>The plan is made once the scan finishes or is cancelled.</p>"
                                if s.running else "")
            return
        n = plan.n_weights
        counts = ", ".join(f"{esc(k)}: {v}" for k, v in sorted(plan.to_dict()["counts"].items()))
        rows = [("Mixed plan", plan.total_bytes, plan.bits_per_weight, plan.error, 1.0, True, "qc-best")]
        for u in plan.uniform:
            rows.append((u.scheme, u.bytes, u.bits_per_weight, u.error,
                         u.error / plan.error if plan.error > 0 else float("inf"), u.fits, "" if u.fits else "qc-over"))
        body = "".join(
            f"<tr class='{cls}' data-scheme='{esc(name)}'><th scope='row'>{esc(name)}</th>"
            f"<td data-key='mib'>{fmt(b / 2**20, 5)}</td><td data-key='bpw'>{fmt(bpw, 4)}</td>"
            f"<td data-key='error'>{fmt(err / n, 5)}</td><td data-key='ratio'>{fmt(ratio, 4)}</td>"
            f"<td data-key='fits'>{'yes' if fits else 'over budget'}</td></tr>"
            for name, b, bpw, err, ratio, fits, cls in rows)
        how = "optimal (exact)" if plan.optimal else f"within {100 * plan.relative_gap:.2g} % of optimal"
        self.body.object = (
            f"<p class='qc-advice'>Within {fmt(s.budget)} bits/weight: {esc(counts)} ({how}).</p>"
            "<div class='qc-scroll' tabindex='0' role='region' aria-label='Mixed-precision plan'>"
            "<table class='qc-table' id='qc-model-plan'><caption>Plan against each scheme alone (error: mean over "
            "weights of each tensor's squared error relative to its mean square)</caption><thead><tr>"
            "<th scope='col'>Scheme</th><th scope='col'>MiB</th><th scope='col'>Bits/weight</th>"
            "<th scope='col'>Mean rel. MSE</th><th scope='col'>× plan error</th><th scope='col'>Budget</th>"
            f"</tr></thead><tbody>{body}</tbody></table></div>")

    def __panel__(self):
        return pn.Column(html_pane("<h2 class='qc-h'>Mixed-precision plan</h2>", margin=(0, 5)), self.budget,
                         self.alert, self.body, sizing_mode="stretch_width")


class ModelExportView(pn.viewable.Viewer):
    """The scan rows as CSV (quantcore scan's columns), the plan as CSV, and everything as JSON."""

    def __init__(self, scan: ModelScan, **params):
        super().__init__(**params)
        self.scan = scan
        self.rows_csv = pn.widgets.FileDownload(callback=lambda: self._text(qc_model.report_csv(scan.rows)),
                                                filename="scan.csv", label="CSV: scan rows", color="primary",
                                                width=150)
        self.plan_csv = pn.widgets.FileDownload(callback=self._plan_csv, filename="plan.csv", label="CSV: plan",
                                                color="primary", width=150)
        self.json = pn.widgets.FileDownload(callback=self._json, filename="scan.json", label="JSON: scan and plan",
                                            color="primary", width=170)
        self.pdf = DeclinableDownload(callback=self._pdf, filename="scan_report.pdf", label="PDF: whole report",
                                      color="primary", width=170)
        self.alert = alert_pane()
        scan.param.watch(self._rename, ["filename"])

    def _rename(self, *events) -> None:
        name = self.scan.export_stem()
        self.rows_csv.filename = safe_filename(name, "scan.csv")
        self.plan_csv.filename = safe_filename(name, "plan.csv")
        self.json.filename = safe_filename(name, "scan.json")
        self.pdf.filename = safe_filename(name, "scan_report.pdf")

    def _text(self, text: str) -> _bytes_io.BytesIO:
        return _bytes_io.BytesIO(text.encode("utf-8"))

    def _plan_csv(self):
        plan = self.scan.plan
        return self._text(qc_model.plan_csv(plan) if plan is not None else "")

    def _json(self):
        s = self.scan
        return self._text(qc_model.report_json(s.filename, list(s.schemes), s.rows, s.skipped, s.problems, s.plan,
                                               s.state == "done"))

    async def _pdf(self):
        """The whole-model PDF report (see :func:`pdf_download`)."""
        return await pdf_download(self.alert, lambda: scan_pdf_report(self.scan))

    def __panel__(self):
        return pn.Column(html_pane("<h3 class='qc-h'>Export</h3>", margin=(0, 5)),
                         pn.FlexBox(self.rows_csv, self.plan_csv, self.json, self.pdf, flex_wrap="wrap"),
                         self.alert, sizing_mode="stretch_width")


def scan_pdf_report(scan: ModelScan) -> bytes:
    """The Model view's PDF: :func:`quantcalc_ui.scanreport.scan_report` of the rows so far, drawn by
    ``quantcalc_ui.pdf`` (which imports fpdf2 only when called)."""
    from quantcalc_ui import pdf as ui_pdf
    from quantcalc_ui import scanreport as ui_scanreport

    if not scan.rows:
        raise ValueError("there is nothing to report yet: choose a checkpoint and let the scan measure a tensor")
    report = ui_scanreport.scan_report(
        scan.filename, list(scan.schemes), scan.rows, scan.skipped, scan.problems, scan.plan, budget=scan.budget,
        plan_error=scan.plan_error, complete=scan.state == "done", tensors_total=scan.tensors_total)
    return ui_pdf.render_scan_pdf(report)


class ModelView(pn.viewable.Viewer):
    """The Model view: a checkpoint scanned tensor by tensor. ``on_open(tensor)`` opens a tensor in the one-tensor
    view (wired by build_app)."""

    def __init__(self, scan: ModelScan, on_open=None, **params):
        super().__init__(**params)
        self.scan = scan
        self.file = ModelFileView(scan)
        self.heat = ModelHeatMapView(scan, on_open)
        self.layers = ModelLayersView(scan)
        self.table = ModelTableView(scan, on_open)
        self.plan = ModelPlanView(scan)
        self.export = ModelExportView(scan)

    def __panel__(self):
        left = pn.Column(self.file, self.plan, self.export, styles=COLUMN_STYLE, sizing_mode="stretch_width")
        right = pn.Column(self.table, self.heat, self.layers, styles=COLUMN_STYLE, sizing_mode="stretch_width")
        return pn.Column(left, right, sizing_mode="stretch_width", stylesheets=[MAIN_GRID_CSS])


# --------------------------------------------------------------------------------------------------


# Responsive layout: the controls in a column of at most 400 px beside the results (one column below 900 px);
# the results' comparison table spans their width, then tables and plots side by side when both get >= 620 px
# (wide screens), else plots below the tables: every column of every table stays visible at 1400 px.
MAIN_GRID_CSS = (":host { display: grid !important; grid-template-columns: minmax(0, 1fr); column-gap: 16px;"
                 " align-items: start; } @media (min-width: 900px) { :host { grid-template-columns:"
                 " minmax(300px, 400px) minmax(0, 1fr); } }")
GRID_CSS = (":host { display: grid !important; grid-template-columns: repeat(auto-fit, minmax(min(100%, 620px), 1fr));"
            " column-gap: 16px; align-items: start; }")
COLUMN_STYLE = {"min-width": "0"}
FRESH_STYLE = {"opacity": "1", "transition": "opacity 0.15s"}
STALE_STYLE = {"opacity": "0.45", "transition": "opacity 0.15s"}   # results of the previous settings
def progress_html(text: str, done: float | None) -> str:
    """The progress line: what runs, and a bar when the fraction done is known."""
    if not text:
        return ""
    bar = "" if done is None else (f" <progress class='qc-bar' max='1' value='{done:.3f}' "
                                   f"aria-label='{esc(text)}'>{done:.0%}</progress>")
    return f"<span class='qc-note' role='status'>{esc(text)}{bar}</span>"


BUSY_HTML = "<span class='qc-busy' role='status'><span class='qc-spin' aria-hidden='true'></span>Computing…</span>"


def build_app() -> pn.viewable.Viewable:
    """Build one session's calculator: the state object, the views, the responsive layout, URL sync."""
    calc = QuantCalcSettings()
    inputs, settings = InputView(calc), SettingsView(calc)
    comparison, channels, samples = ComparisonView(calc), ChannelTableView(calc), SampleTableView(calc)
    by_scheme = ChannelsBySchemeView(calc)
    exports, plots = ExportView(calc), PlotsView(calc)
    # The busy sign and the progress line change only their text, in a box of fixed size: toggling a pane's
    # visible or css_classes makes BokehJS lay the whole page out again (0.25-0.6 s each on a page with five
    # plots, four times per change, measured in Chromium), a text change does not.
    spinner = html_pane("", width=130, height=28, align="center", css_classes=["qc-busy-box"])
    progress = html_pane("", align="center", css_classes=["qc-progress"])

    def on_progress(*events) -> None:
        progress.object = progress_html(calc.progress, calc.progress_done)

    calc.param.watch(on_progress, ["progress", "progress_done"])

    def on_busy(event) -> None:
        # Results on screen during a recomputation are the previous settings': dim them until the new ones land.
        busy = bool(event.new)
        spinner.object = BUSY_HTML if busy else ""
        results.styles = {**COLUMN_STYLE, **(STALE_STYLE if busy else FRESH_STYLE)}

    header = pn.Row(
        html_pane("<h1 class='qc-title'>Quantization calculator: per-tensor vs per-channel vs per-group</h1>"
                     "<p class='qc-sub'>Scales, zero-points, clipping, reconstruction error and memory for every "
                     "scheme — and which one to ship.</p>", sizing_mode="stretch_width"),
        progress, spinner, sizing_mode="stretch_width")
    left = pn.Column(inputs, settings, styles=COLUMN_STYLE, sizing_mode="stretch_width")
    tables = pn.Column(channels, by_scheme, samples, exports, styles=COLUMN_STYLE, sizing_mode="stretch_width")
    # Bokeh titles do not wrap: a long one must not widen the page.
    charts = pn.Column(plots, styles={**COLUMN_STYLE, "overflow-x": "hidden"}, sizing_mode="stretch_width")
    results = pn.Column(comparison, pn.Column(tables, charts, sizing_mode="stretch_width", stylesheets=[GRID_CSS]),
                        styles={**COLUMN_STYLE, **FRESH_STYLE}, sizing_mode="stretch_width", css_classes=["qc-results"])
    body = pn.Column(left, results, sizing_mode="stretch_width", stylesheets=[MAIN_GRID_CSS])
    calc.param.watch(on_busy, "busy")
    # before the URL sync: in the browser worker it runs while the app is built, and its warning must show
    url_alert = alert_pane()
    calc.param.watch(lambda e: show_error(url_alert, e.new, kind="warning"), "url_error")
    if pn.state.location is not None:
        def url_error(bad: dict) -> None:
            """Some URL value was refused: apply the others in one batch, name the refused ones."""
            failed, good = [], {}
            for key, value in bad.items():
                p = calc.param[key]
                try:
                    p._validate(value)   # param's own check (bounds, type, objects), without setting anything
                except Exception as exc:  # param's message names the parameter and the rule broken
                    why = out_of_bounds(p, value) if isinstance(p, param.Number) else ""
                    failed.append(f"{key}={str(value)[:40]}: {why or str(exc).split(': ')[-1][:120]}")
                    calc.url_refused.add(key)
                else:
                    good[key] = value
            calc.param.update(**good)
            calc.url_error = ("URL settings not applied (the page uses the defaults instead): "
                              + "; ".join(failed)) if failed else ""

        def sync_url() -> None:
            pn.state.location.sync(calc, {k: k for k in URL_PARAMS}, on_error=url_error)

        # once the page is up: the URL then overrides the opening example's settings
        pn.state.onload(sync_url)
    doc = pn.state.curdoc
    if doc is not None and doc.session_context is not None and not getattr(pn.state, "_is_pyodide", False):
        doc.on_session_destroyed(release_memory_soon)
    scan = ModelScan()
    # not dynamic: a scan goes on (its chooser answering byte requests) while the one-tensor tab is shown
    tabs = pn.Tabs(sizing_mode="stretch_width")

    def open_in_calculator(tensor: str) -> None:
        """A tensor picked in the Model view: the one-tensor view reads it from the same file (no new upload)."""
        found = scan.tensor_file(tensor)
        if found is None:
            return
        f, header = found
        calc.open_file(f.name, f.size, header, file_key=f.key, tensor=tensor)
        tabs.active = 0

    # The Model view is built and joins the page when its tab is first opened (then stays: a scan goes on in the
    # background); building it with the page took a fifth of the time to build the app.
    model_tab = pn.Column(sizing_mode="stretch_width")
    model_views: list[ModelView] = []

    def model_view() -> ModelView:
        if not model_views:
            model_views.append(ModelView(scan, on_open=open_in_calculator))
        return model_views[0]

    def attach_model(event) -> None:
        if event.new == 1 and not model_tab.objects:
            model_tab.objects = [model_view()]

    tabs.param.watch(attach_model, "active")
    tabs.extend([("One tensor", pn.Column(url_alert, body, DocsView(), sizing_mode="stretch_width")),
                 ("Whole model", model_tab)])
    page = pn.Column(header, tabs, sizing_mode="stretch_width", styles={"padding": "0 8px"})
    page.model_view, page.tabs = model_view, tabs
    page.calc, page.settings = calc, settings  # for tests and debugging
    return page


build_app().servable(title="quantcalc — quantization calculator")
