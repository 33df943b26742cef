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
    plots = app.PlotFigures(calc)
    data = plots.range_src.data
    assert list(data["qlo"]) == [-1.2, -0.8, -1.5, -0.45] and list(data["qhi"]) == [1.0, 0.9, 1.7, 0.6]
    assert list(data["lo"]) == list(data["hi"]) == [0.73, -0.21, 1.11, 0.18]


def test_axes_that_count_channels_indices_or_layers_tick_at_whole_numbers_only():
    # Before: seed 001's four channels were ticked at 0, 0.5, 1, 1.5, ... (Bokeh's default ticker).
    calc = app.QuantCalcSettings()
    calc.example = "s1"
    plots = app.PlotFigures(calc)
    layers = app.ModelLayersView(app.ModelScan())
    for fig in (plots.range_fig, plots.err_fig, plots.chan_fig, layers.figure):
        ticker = fig.xaxis[0].ticker
        assert ticker.min_interval == 1, fig.title.text
    assert plots.hist_fig.xaxis[0].ticker.min_interval == 0     # values keep fractional ticks


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
    plots = app.PlotFigures(calc)
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


def test_a_long_range_search_shows_its_progress_and_the_next_change_drops_it(monkeypatch):
    # Before: on a large tensor each scheme was one call (a KL search on 4096 x 4096: 2.6-5 s per scheme) with
    # no progress inside it, and a change made meanwhile waited for it to end. Now the search runs a slice per
    # tick, the progress line has the fraction done, and a change drops a scheme no longer wanted midway.
    from bokeh.document import Document
    from panel.io.state import set_curdoc

    ticks = []
    monkeypatch.setattr(app, "later", lambda step, doc=None, delay=0.0: ticks.append(step))
    monkeypatch.setattr(app, "STEPWISE_ABOVE", 1000)   # this small tensor counts as large
    monkeypatch.setattr(app, "STEP_SECONDS", 0.0)      # one step of the search per tick
    started, finished = [], []   # (call number, spec) of each stepwise computation
    steps = app.qc.analyze_steps

    def recorded(x, spec, **kwargs):
        call = (len(started), spec)
        started.append(call)
        result = yield from steps(x, spec, **kwargs)
        finished.append(call)
        return result

    monkeypatch.setattr(app.qc, "analyze_steps", recorded)
    calc = app.QuantCalcSettings()
    calc.param.update(source="synthetic", syn_rows=64, syn_cols=1024)
    shown = []
    calc.param.watch(lambda *e: shown.append((calc.progress, calc.progress_done)), ["progress", "progress_done"])
    with set_curdoc(Document()):
        calc.range_method = "kl"
        def midway_through_per_channel() -> bool:
            return (bool(started) and started[-1][1].granularity == app.qc.PerChannel(0)
                    and started[-1] not in finished and 0.5 < (calc.progress_done or 0))

        while not midway_through_per_channel():
            ticks.pop(0)()
        midway = started[-1]
        calc.bits = 6
        while ticks:
            ticks.pop(0)()
    assert midway not in finished
    spec = midway[1]
    assert calc.detail_result.spec == spec.with_(fmt=app.qc.IntFormat(6, True, spec.fmt.narrow))
    assert any(text.startswith("Computing per-channel") and done is not None and 0 < done < 1
               for text, done in shown)
    assert (calc.progress, calc.progress_done) == ("", None)


def test_the_frontier_asked_for_runs_in_steps_with_progress_and_a_change_stops_it(monkeypatch):
    # Before: "Compute error-vs-memory frontier" swept all 24 schemes in one call (a 4096 x 4096 tensor held the
    # page for seconds, with KL for minutes) with no progress and no way to stop it.
    from bokeh.document import Document
    from panel.io.state import set_curdoc

    ticks = []
    monkeypatch.setattr(app, "later", lambda step, doc=None, delay=0.0: ticks.append(step))
    monkeypatch.setattr(app, "FRONTIER_AUTO_LIMIT", 1000)   # this tensor waits for the button
    calc = app.QuantCalcSettings()
    calc.param.update(source="synthetic", syn_rows=32, syn_cols=256)
    assert calc.frontier_pending and calc.frontier == []
    shown = []
    calc.param.watch(lambda *e: shown.append((calc.progress, calc.progress_done)), ["progress", "progress_done"])
    with set_curdoc(Document()):
        calc.compute_frontier()
        for _ in range(3):
            ticks.pop(0)()
        calc.bits = 6                      # stops the sweep; the button comes back
        while ticks:
            ticks.pop(0)()
        assert calc.frontier == [] and calc.frontier_pending
        shown.clear()
        calc.compute_frontier()
        while ticks:
            ticks.pop(0)()
    assert not calc.frontier_pending and (calc.progress, calc.progress_done) == ("", None)
    assert [(r["label"], r["rmse"]) for r in calc.frontier] == [(r["label"], r["rmse"]) for r in calc._sweep()]
    fractions = [done for text, done in shown if text.startswith("Sweeping the frontier: scheme")]
    assert len(fractions) >= 24 and fractions == sorted(fractions) and fractions[-1] == 1.0


@pytest.mark.parametrize("in_steps", [False, True], ids=["at once", "in steps"])
def test_a_scheme_the_data_cannot_take_is_named_and_the_others_are_compared(monkeypatch, in_steps):
    # Before: one compared scheme failing (KL calibration per group of 32 on a large tensor: more blocks than
    # its histogram budget) left no results at all, only the error under Scheme options.
    from contextlib import nullcontext

    from bokeh.document import Document
    from panel.io.state import set_curdoc

    ticks = []
    monkeypatch.setattr(app, "later", lambda step, doc=None, delay=0.0: ticks.append(step))
    calc = app.QuantCalcSettings()
    calc.param.update(source="synthetic", syn_rows=4096, syn_cols=1024, bits=8)   # 4 M values: stepwise in a page
    with set_curdoc(Document()) if in_steps else nullcontext():
        calc.range_method = "kl"
        while ticks:
            ticks.pop(0)()
    assert [r.spec.granularity for r in calc.comparison.results] == [app.qc.PerTensor(), app.qc.PerChannel(0)]
    assert calc.schemes_skipped.startswith("Not compared: per-group: KL calibration of 131,072 blocks")
    assert calc.settings_error == ""
    calc.detail = "per-group"                       # the scheme shown in detail cannot be skipped
    assert calc.comparison is None and "KL calibration of 131,072 blocks" in calc.settings_error


def test_the_first_document_leaves_the_figures_the_closed_cards_and_the_model_view_for_later(monkeypatch):
    # Before: every session built its five figures, the Model view and the closed cards' widgets with the page;
    # the first document (built, serialised and drawn before anything is usable: 3-4x slower in the browser
    # worker) paid for all of them. Now they are built when the page is up, or when opened.
    from bokeh.document import Document
    from panel.io.state import set_curdoc, state

    built = []
    for cls in (app.PlotFigures, app.ModelView):
        init = cls.__init__
        monkeypatch.setattr(cls, "__init__", lambda self, *a, _init=init, **k: built.append(type(self).__name__)
                            or _init(self, *a, **k))
    doc = Document()
    state._loaded[doc] = False          # a served session before its page has loaded
    with set_curdoc(doc):
        page = app.build_app()
        page.server_doc(doc)
    titles = {getattr(m, "title", None) for m in doc.models}
    assert built == [] and "figure" not in {type(m).__name__ for m in doc.models}
    assert "Symmetric scale rule" not in titles and "Stochastic rounding seed" not in titles
    state._on_load(doc)                  # the page has drawn the first document
    assert built == ["PlotFigures"] and sum(type(m).__name__ == "figure" for m in doc.models) == 5
    settings = page.settings
    advanced = [c for c in settings.widgets if isinstance(c, app.pn.Card)][0]
    with set_curdoc(doc):
        advanced.collapsed = False
        settings.help.collapsed = False
        page.tabs.active = 1
    titles = {getattr(m, "title", None) for m in doc.models}
    assert "Symmetric scale rule" in titles and "Stochastic rounding seed" in titles
    assert built == ["PlotFigures", "ModelView"]
    help_text = settings.help.objects[0].object
    assert "Symmetric scale rule" in help_text and "Bits" in help_text


def test_an_importance_matrix_weights_the_gguf_schemes_that_take_one_and_says_what_it_changes(tmp_path):
    # llama.cpp's imatrix reached the engine and the CLI first; here the app: a legacy .dat file whose entry is
    # named after the tensor is chosen for it, Q4_K is computed with it (as qc.analyze with the same weights),
    # Q8_0 (which llama.cpp quantizes without one) is said to ignore it, a bad file is refused with its byte
    # offset while the one in use stays, and removing it brings the unweighted results back.
    import struct
    import numpy as np
    import quantcore as qc
    from quantcore.io.imatrix import read_imatrix

    calc = app.QuantCalcSettings()
    calc.param.update(source="synthetic", syn_rows=16, syn_cols=512, tensor_name="blk.0.ffn_down.weight",
                      compare=["per-channel", "q4_k", "q8_0"])
    w = np.random.default_rng(0).lognormal(0, 2, 512).astype(np.float32)
    name, other = b"blk.0.ffn_down.weight", b"blk.0.ffn_up.weight"
    dat = struct.pack("<i", 2)
    for n, v in ((other, np.ones(512, np.float32)), (name, w * np.float32(3))):
        dat += struct.pack("<i", len(n)) + n + struct.pack("<ii", 3, v.size) + v.astype("<f4").tobytes()
    calc.load_imatrix("imatrix.dat", dat)
    assert calc.imatrix_entry == "blk.0.ffn_down.weight" and calc.imatrix_error == ""
    weights = read_imatrix(dat)["blk.0.ffn_down.weight"]
    shown = {r.label: r for r in calc.comparison.results}
    want = qc.analyze(calc.data, qc.preset("q4_k"), imatrix=weights)
    assert shown["Q4_K + imatrix"].metrics.rmse == want.metrics.rmse
    assert "Q8_0" in shown and "Q8_0: llama.cpp uses no importance matrix" in calc.imatrix_info
    plain = qc.analyze(calc.data, qc.preset("q4_k")).weighted_output_mse(weights)
    assert f"weighted output error {want.imatrix_output_mse:.4g} (without the imatrix {plain:.4g})" in calc.imatrix_info
    assert want.imatrix_output_mse < plain

    calc.load_imatrix("broken.dat", struct.pack("<i", 7) + b"xx")
    assert calc.imatrix_error.startswith("broken.dat, byte offset 0:")
    assert calc.imatrix_entry == "blk.0.ffn_down.weight" and "Q4_K + imatrix" in [r.label for r in calc.comparison.results]

    calc.imatrix_entry = "blk.0.ffn_up.weight"        # another entry: recomputed with its weights
    ones = qc.analyze(calc.data, qc.preset("q4_k"), imatrix=np.ones(512, np.float32))
    assert {r.label: r for r in calc.comparison.results}["Q4_K + imatrix"].metrics.rmse == ones.metrics.rmse

    calc.clear_imatrix()
    labels = [r.label for r in calc.comparison.results]
    assert {"Q4_K", "Q8_0"} <= set(labels) and not any("imatrix" in label for label in labels)
    assert {r.label: r for r in calc.comparison.results}["Q4_K"].metrics.rmse == \
        qc.analyze(calc.data, qc.preset("q4_k")).metrics.rmse
    assert calc.imatrix_info == ""


def test_the_importance_matrix_chooser_loads_removes_and_takes_the_same_file_again():
    # The page may send a file's bytes and its name as two events; removing the matrix clears the chooser's
    # value too, so choosing the same file again is a change and loads it again.
    import io
    import numpy as np

    calc = app.QuantCalcSettings()
    calc.param.update(source="synthetic", syn_rows=16, syn_cols=512, compare=["q4_k"], detail="q4_k")
    view = app.SettingsView(calc)
    npy = io.BytesIO()
    np.save(npy, np.ones(512, np.float32))
    view.imatrix_file.value = npy.getvalue()              # the bytes first, the name after
    view.imatrix_file.filename = "w.npy"
    assert [r.label for r in calc.comparison.results] == ["Q4_K + imatrix"]
    assert calc.imatrix_info.startswith("Importance matrix w.npy (512 columns)")
    assert view.imatrix_remove.visible
    view._remove_imatrix()
    assert [r.label for r in calc.comparison.results] == ["Q4_K"] and not view.imatrix_remove.visible
    view.imatrix_file.param.update(value=npy.getvalue(), filename="w.npy")
    assert [r.label for r in calc.comparison.results] == ["Q4_K + imatrix"]
