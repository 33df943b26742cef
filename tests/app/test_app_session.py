"""The calculator's session natively (no browser): what a user sees when switching inputs."""
from __future__ import annotations

import pytest

app = pytest.importorskip("app", reason="app.py needs the app extra (panel, bokeh) to import")


def test_manual_mode_starts_with_seed_001_worked_lines_and_says_so():
    # Before: manual mode opened on an empty box and no results, with nothing saying what a line looks like.
    calc = app.QuantCalcSettings()
    calc.source = "manual"
    assert calc.manual_text.splitlines()[0] == "filter_0, 0.008627450980392158, 11, 0.73"
    assert calc.manual_rows["q"].tolist() == [96, -40, 80, 25]            # seed 001's worked codes
    assert "seed 001" in calc.input_note
    calc.manual_text = "mine, 0.5, 0, 1.0\n"
    calc.source = "paste"
    calc.source = "manual"                                                 # the user's own lines stay
    assert calc.manual_text == "mine, 0.5, 0, 1.0\n"


def test_ranges_plot_shows_the_calibration_range_used_beside_the_data_range():
    # Before: seed 001's plot showed only each filter's data (one sample), not the min/max it is quantized to.
    calc = app.QuantCalcSettings()
    calc.example = "s1"
    plots = app.PlotsView(calc)
    data = plots.range_src.data
    assert list(data["qlo"]) == [-1.2, -0.8, -1.5, -0.45] and list(data["qhi"]) == [1.0, 0.9, 1.7, 0.6]
    assert list(data["lo"]) == list(data["hi"]) == [0.73, -0.21, 1.11, 0.18]


def test_the_frontier_of_settings_seen_before_comes_back_at_once(monkeypatch):
    # Before: a change (mapping -> affine) emptied the frontier and swept it again one scheme per tick; a
    # change back before that sweep ended (-> symmetric) found "the frontier of these settings is shown" and
    # left the plot empty for good. Now each completed sweep is kept: returning shows it with no new sweep.
    from bokeh.document import Document
    from panel.io.state import set_curdoc

    ticks = []   # the app's deferred steps, run here by hand
    monkeypatch.setattr(app, "later", lambda step, doc=None, delay=0.0: ticks.append(step))
    calc = app.QuantCalcSettings()
    calc.param.update(source="synthetic", syn_rows=8, syn_cols=256)   # no document: swept at once
    symmetric = [(r["label"], r["rmse"]) for r in calc.frontier]
    assert len(symmetric) > 10
    with set_curdoc(Document()):
        calc.mapping = "affine"
        for _ in range(3):               # the results, then the first schemes of the affine sweep
            ticks.pop(0)()
        assert calc.frontier == []
        calc.mapping = "symmetric"
        sweeps = []
        monkeypatch.setattr(calc, "_sweep_rows", lambda: sweeps.append(1) or iter(()))
        while ticks:
            ticks.pop(0)()
    assert [(r["label"], r["rmse"]) for r in calc.frontier] == symmetric
    assert sweeps == []


def test_a_settings_change_sends_only_the_plot_data_it_changes(monkeypatch):
    # Before: every change assigned every plot's data again; the page got all five figures' columns and
    # repainted them all (a bits change leaves the value histogram and the channel ranges as they were).
    from bokeh.models import ColumnDataSource

    calc = app.QuantCalcSettings()
    calc.param.update(source="synthetic", syn_rows=16, syn_cols=256)
    plots = app.PlotsView(calc)
    names = {id(getattr(plots, n)): n for n in ("range_src", "hist_src", "front_src", "err_src", "chan_src",
                                                "grid_src")}
    assigned = []
    setattr_ = ColumnDataSource.__setattr__

    def record(self, attr, value):
        if attr == "data" and id(self) in names:
            assigned.append(names[id(self)])
        setattr_(self, attr, value)

    monkeypatch.setattr(ColumnDataSource, "__setattr__", record)
    calc.bits = 3 if calc.bits != 3 else 5
    assert assigned == ["err_src", "chan_src", "grid_src"]
