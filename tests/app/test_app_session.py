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
