"""Report models built from real quantcore comparisons, and reading their PDFs back (pypdf 7.1.1).

No Panel here: the examples are compared the way the app compares them (its EXAMPLE_VIEWS: which schemes,
which one in detail), through quantcore's public helpers.
"""
from __future__ import annotations

import io
import re

import numpy as np
import quantcore as qc
from quantcore import report as qc_report
from quantcalc_ui.report import report_model
from quantcalc_ui.settings_words import settings_words, source_words

EXAMPLE_VIEWS = {"s0": (("per-tensor", "per-channel"), "per-channel"), "s1": (("per-channel",), "per-channel"),
                 "s2": (("per-tensor",), "per-tensor"), "s3": (("per-tensor", "per-channel"), "per-channel")}
SWEEP_GRANULARITIES = (qc.PerTensor(), qc.PerChannel(0), qc.PerGroup(32), qc.PerGroup(128))


def base_settings(**changes) -> dict:
    """The app's settings_dict() with its defaults (app.QuantCalcSettings), then ``changes``."""
    d = dict(example="s3", source="example", tensor_name="", channel=0, syn_rows=64, syn_cols=256, syn_dist="normal",
             syn_spread=1.0, syn_outliers=0, syn_seed=0, bits=8, signed=True, mapping="symmetric", narrow=False,
             reduce_range=False, rounding="default", convention="float64", symmetric_scale="default",
             scale_dtype="fp32", zero_point_dtype="int32", seed=0, range_method="minmax", pct=99.9, lo="", hi="",
             axis=0, group=32, compare=["per-tensor", "per-channel", "per-group"], detail="per-channel")
    d.update(changes)
    return d


def _tensor_range(result) -> tuple[float, float]:
    return float(np.asarray(result.lo).reshape(-1)[0]), float(np.asarray(result.hi).reshape(-1)[0])


def example_model(key: str):
    """Example ``key`` compared as the app compares it; the model and the comparison."""
    ex = qc.get_example(key)
    compare, detail = EXAMPLE_VIEWS[key]
    by_name = dict(zip(("per-tensor", "per-channel"), qc.standard_schemes(ex.spec, group_sizes=())))
    rows = ex.rows
    data = np.array(rows) if len({len(r) for r in rows}) == 1 else rows
    cmp = qc.compare(data, [by_name[s] for s in compare], channel_names=ex.channel_names)
    spec = ex.spec
    rng = spec.range
    settings = base_settings(
        example=key, bits=spec.fmt.bits, signed=spec.fmt.signed, narrow=spec.fmt.narrow, mapping=spec.mapping,
        compare=list(compare), detail=detail,
        **({"range_method": "custom", "lo": ", ".join(f"{v:g}" for v in np.atleast_1d(rng.lo)),
            "hi": ", ".join(f"{v:g}" for v in np.atleast_1d(rng.hi))} if isinstance(rng, qc.CustomRange) else {}))
    tensor = cmp.results[compare.index("per-tensor")] if "per-tensor" in compare else None
    model = report_model(cmp, compare.index(detail), title=f"Quantization report: example {key}",
                         tensor_name=f"example {key}", source_description=source_words(settings),
                         settings=settings_words(settings), channel_labels=ex.channel_names,
                         frontier_rows=qc_report.sweep(data, base=by_name["per-channel"].with_(range=qc.MinMax()),
                                                       granularities=SWEEP_GRANULARITIES),
                         tensor_range=_tensor_range(tensor) if tensor is not None else None)
    return model, cmp


def big_model(rows: int = 4096, cols: int = 256):
    """A synthetic rows x cols tensor: int4 per-tensor / per-channel / per-group 128, Q4_0 and NVFP4."""
    x = qc.synthetic(rows, cols, channel_spread=1.0, outlier_channels=4, seed=0)
    base = qc.QuantSpec(fmt=qc.IntFormat(4), mapping="symmetric")
    specs = qc.standard_schemes(base, group_sizes=(128,)) + [qc.preset("q4_0"), qc.preset("nvfp4")]
    cmp = qc.compare(x, specs)
    settings = base_settings(source="synthetic", syn_rows=rows, syn_cols=cols, syn_outliers=4, bits=4, group=128,
                             compare=["per-tensor", "per-channel", "per-group", "q4_0", "nvfp4"])
    sweep = qc_report.sweep(x, base=specs[1], granularities=SWEEP_GRANULARITIES)
    model = report_model(cmp, 1, title=f"Quantization report: synthetic {rows}x{cols}", tensor_name="synthetic",
                         source_description=source_words(settings), settings=settings_words(settings),
                         frontier_rows=sweep, tensor_range=_tensor_range(cmp.results[0]))
    return model, cmp


def pdf_pages(data: bytes) -> list[str]:
    from pypdf import PdfReader
    return [p.extract_text() for p in PdfReader(io.BytesIO(data)).pages]


def flat(text: str) -> str:
    """Whitespace collapsed to single spaces (wrapped label lines read as one)."""
    return " ".join(text.split())


def row_after(text: str, label: str, section: str | None = None) -> list[str]:
    """Tokens after ``label`` on the first line that starts with it (after the heading ``section``)."""
    if section is not None:
        at = text.find(section)
        assert at >= 0, f"section {section!r} not in the PDF"
        text = text[at:]
    for line in text.splitlines():
        if line.startswith(label + " ") or line == label:
            return line[len(label):].split()
    raise AssertionError(f"no line starts with {label!r}")


NUMBER = re.compile(r"^-?(\d{1,3}(,\d{3})*|\d+)(\.\d+)?(e-?\d+)?$|^(-?inf|n/a)$")
