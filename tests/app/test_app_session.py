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
