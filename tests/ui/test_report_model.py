"""ReportModel built from real quantcore comparisons: the seeds' numbers, truncation, flags, plain data."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import quantcore as qc
from quantcalc_ui.report import ReportModel, Table, kept_channels, manual_report_model, report_model


def column(table: Table, heading: str, group: str = "") -> list:
    j = next(j for j, c in enumerate(table.columns) if c.heading == heading and c.group == group)
    return [row[j] for row in table.rows]


def labels(table: Table) -> list[str]:
    return [row[0] for row in table.rows]


def test_seed_001_scales_and_codes(example_models):
    # seed 001's table: filter_0 scale 0.00862745, zero point 11, quantized 96; filters 1-3: -40, 80, 25
    model, _ = example_models["s1"]
    t = model.channel_table
    assert labels(t) == ["filter_0", "filter_1", "filter_2", "filter_3"]
    assert column(t, "Scale")[0] == pytest.approx(0.00862745, abs=6e-9)
    assert column(t, "Zero-point") == [11, -8, -8, -19]
    assert column(model.values_table, "q") == [96, -40, 80, 25]
    assert column(model.values_table, "Tie") == [False, True, False, False]   # filter_1: x*inv sits on -31.5


def test_seed_003_row_a_collapses_under_per_tensor(example_models):
    # seed 003: per-tensor rounds all of Row A to 0 (MAE about 0.10); per-channel keeps it (MAE about 0.005)
    model, _ = example_models["s3"]
    t = model.channel_errors
    assert [c.group for c in t.columns[1:]] == ["int4 narrow symmetric per-tensor"] * 2 + \
        ["int4 narrow symmetric per-channel"] * 2
    row_a = dict(zip(((c.group, c.heading) for c in t.columns[1:]), t.rows[labels(t).index("Row A")][1:]))
    assert row_a[("int4 narrow symmetric per-tensor", "Collapsed")] == 4
    assert row_a[("int4 narrow symmetric per-tensor", "MAE")] == pytest.approx(0.10, abs=1e-12)
    assert row_a[("int4 narrow symmetric per-channel", "Collapsed")] == 0
    assert row_a[("int4 narrow symmetric per-channel", "MAE")] == pytest.approx(0.005, abs=5e-4)
    per_tensor = model.schemes[0]
    assert per_tensor.label == "int4 narrow symmetric per-tensor" and per_tensor.collapsed == 4


def test_flags_best_and_pareto(big):
    model, cmp = big
    assert [s.best for s in model.schemes] == [i == cmp.best("rmse") for i in range(len(cmp.results))]
    rows = model.schemes
    for s in rows:   # Pareto: nothing at most as large and at most as wrong, strictly better in one
        dominated = any(o.total_bytes <= s.total_bytes and o.rmse <= s.rmse
                        and (o.total_bytes < s.total_bytes or o.rmse < s.rmse) for o in rows)
        assert s.pareto == (not dominated), s.label
    assert any(s.pareto for s in rows) and not all(s.pareto for s in rows)


def test_4096_channels_keep_the_worst_64(big):
    model, cmp = big
    t = model.channel_table
    assert len(t.rows) == 64 and model.n_channels == 4096
    rmse = column(t, "RMSE")
    assert rmse == sorted(rmse, reverse=True)
    detail = cmp.results[1].channel_table()["rmse"]
    assert rmse[0] == pytest.approx(float(np.max(detail)))
    assert t.note.startswith("First 64 of 4,096 channels, sorted by RMSE descending")
    assert "CSV export" in t.note
    assert labels(model.channel_errors) == labels(t)             # the same channels, side by side
    assert len(model.ranges.data_min) == 4096 and len(model.errors.rmse) == 5
    assert model.values_table is None and any("per-value table" in n for n in model.notes)


def test_small_tensors_keep_channel_order(example_models):
    model, _ = example_models["s0"]
    assert labels(model.channel_table) == ["ch1", "ch2", "ch3", "ch4"]
    assert model.channel_table.note.startswith("All 4 channels, in channel order.")


def test_columns_without_one_value_per_channel_are_left_out():
    x = qc.synthetic(8, 256, seed=1)
    cmp = qc.compare(x, [qc.preset("q4_0"), qc.preset("nvfp4"), qc.preset("fp8_e4m3")])
    for i, missing in ((0, {"Scale", "Zero-point", "Range lo", "Range hi"}), (1, {"Scale", "Zero-point"}),
                       (2, {"Zero-point"})):
        model = report_model(cmp, i, title="t", tensor_name="t", source_description="s", settings=[],
                             frontier_rows=[])
        headings = {c.heading for c in model.channel_table.columns}
        assert not headings & missing, (model.detail, headings)
        for h in missing - {"Range lo", "Range hi"}:
            assert h in model.channel_table.note
        assert math.isfinite(model.histogram.clip_lo) and math.isfinite(model.histogram.clip_hi)
    # fp8 per-tensor keeps its one scale: amax / 448 (E4M3's largest finite value)
    model = report_model(cmp, 2, title="t", tensor_name="t", source_description="s", settings=[], frontier_rows=[])
    scale = column(model.channel_table, "Scale")
    assert scale == pytest.approx([float(np.abs(x).max()) / 448.0] * 8, rel=1e-6)


def test_range_lo_hi_left_out_when_they_repeat_min_max(example_models):
    s3, _ = example_models["s3"]
    assert "Range lo" not in {c.heading for c in s3.channel_table.columns}
    assert "quantization range of every channel is its data min/max" in s3.channel_table.note
    s1, _ = example_models["s1"]   # seed 001's calibration ranges differ from the one sample per filter
    assert column(s1.channel_table, "Range lo") == [-1.2, -0.8, -1.5, -0.45]


def test_plot_data(example_models):
    model, cmp = example_models["s3"]
    r = model.ranges
    assert r.data_min == pytest.approx([-0.15, -3.1]) and r.data_max == pytest.approx([0.12, 2.3])
    assert r.tensor_range == pytest.approx((-3.1, 2.3))
    assert model.errors.schemes == ("int4 narrow symmetric per-tensor", "int4 narrow symmetric per-channel")
    assert len(model.histogram.edges) == len(model.histogram.counts) + 1 and sum(model.histogram.counts) == 8
    compared = [p for p in model.frontier if p.compared]
    assert [p.label for p in compared] == [s.label for s in model.schemes]
    assert any(p.pareto for p in model.frontier if not p.compared)


def test_empty_sweep_is_said(example_models):
    _, cmp = example_models["s2"]
    model = report_model(cmp, 0, title="t", tensor_name="t", source_description="s", settings=[], frontier_rows=[])
    assert all(p.compared for p in model.frontier) and "not computed" in model.frontier_note


def _leaves(obj):
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from _leaves(getattr(obj, f.name))
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            yield from _leaves(v)
    else:
        yield obj


def test_model_is_plain_data(big, example_models):
    for model in [big[0]] + [m for m, _ in example_models.values()]:
        kinds = {type(v) for v in _leaves(model)}
        assert kinds <= {str, int, float, bool, type(None)}, kinds
        hash(model.settings)
        with pytest.raises(dataclasses.FrozenInstanceError):
            model.title = "x"   # type: ignore[misc]


def test_detail_index_is_checked(example_models):
    _, cmp = example_models["s3"]
    with pytest.raises(ValueError, match="detail index 2 is out of range: the comparison has 2 schemes"):
        report_model(cmp, 2, title="t", tensor_name="t", source_description="s", settings=[])


def test_kept_channels_order():
    rmse = np.array([0.1, np.nan, 0.3, 0.3, 0.2])
    idx, order = kept_channels(rmse, 3)
    assert idx.tolist() == [2, 3, 4] and order == "sorted by RMSE descending"   # ties in channel order
    idx, order = kept_channels(rmse, 5)
    assert idx.tolist() == [0, 1, 2, 3, 4] and order == "channel order"


def test_manual_model():
    fmt = qc.IntFormat(8, True)
    rows = qc.manual(["filter_0"], [(1.0 - -1.2) / 255], [11], [0.73], fmt)   # seed 001: (max - min) / 255
    model = manual_report_model(rows, title="t", tensor_name="t", source_description="manual parameters, 1 row",
                                settings=[("Bits", "8")])
    assert column(model.manual_table, "Quantized") == [96]   # seed 001: 0.73 / 0.00862745 + 11 -> 96
    assert model.schemes == () and model.comparison_table() is None
    empty = manual_report_model(None, title="t", tensor_name="t", source_description="", settings=[])
    assert empty.manual_table is None and "no rows" in empty.advice


def test_no_schemes_no_comparison_table():
    model = ReportModel(title="t", tensor_name="t", source="", settings=(), advice="", schemes=(), detail="",
                        n_values=0, n_channels=0, channel_table=None, channel_errors=None, values_table=None,
                        ranges=None, errors=None, histogram=None, frontier=())
    assert model.comparison_table() is None


def test_a_sampled_sweep_says_its_bytes_are_for_the_sampled_channels():
    x = qc.synthetic(64, 32, seed=2)
    small = qc.compare(x, [qc.QuantSpec(fmt=qc.IntFormat(4), mapping="symmetric", granularity=qc.PerChannel(0))])
    rows = qc.report.sweep(x, bits=(4,), granularities=(qc.PerChannel(0),), max_elements=16 * 32)
    m = report_model(small, 0, title="t", tensor_name="t", source_description="s", settings=[], frontier_rows=rows)
    assert "The sweep ran on 16 evenly spaced channels of 64: its bytes count those channels only." in m.frontier_note
