"""The calculator in a real browser (Debian's Chromium via Playwright against `panel serve app.py`).

Read like a user: open an example, read the tables, change settings, upload files, download exports.
Expected numbers come from the seed documents in shared/seeds (quoted where used) and, for everything
else, from quantcore called directly in the test.
"""
from __future__ import annotations

import csv
import html
import io
import json
import re
import urllib.parse

import numpy as np
import pytest

import quantcore as qc
from page_helpers import ARTIFACTS, is_static, poll, read_compare, read_table
from sitebuild import wait_for_stage

pytestmark = pytest.mark.browser

CHANNELS, SAMPLES = "qc-channels", "qc-samples"  # ids of the two results tables


def open_app(page, app_url: str, query: str = "", width: int = 1500) -> None:
    page.set_viewport_size({"width": width, "height": 1100})
    page.goto(app_url + (("?" + query) if query else ""))
    if is_static(app_url):
        # the pre-rendered page shows tables at once: wait until the worker's document has replaced it
        wait_for_stage(page, {"ready"}, timeout_s=120)
    page.wait_for_selector("#qc-compare", timeout=30_000)
    page.wait_for_selector("#qc-channels tbody tr", timeout=30_000)


def num(text: str) -> float:
    return float(text.replace("−", "-").replace("%", ""))


def wait_example(page, key: str) -> None:
    poll(lambda: _assert_in(f"example {key}", page.locator(".qc-name").inner_text()))


def _assert_in(needle, hay):
    assert needle in hay, (needle, hay)


def summary_by_label(cmp: qc.Comparison) -> dict[str, dict]:
    return {r["label"]: r for r in cmp.summary_rows()}


def assert_compare_matches(page, cmp: qc.Comparison) -> None:
    """Every number in the page's comparison table equals quantcore's (to the 6 digits shown)."""
    shown = read_compare(page)
    want = summary_by_label(cmp)
    assert set(shown) == set(want)
    for label, row in want.items():
        for key in ("mae", "rmse", "max_abs", "sqnr_db", "collapsed", "total_bytes", "metadata_bytes"):
            assert num(shown[label][key]) == pytest.approx(row[key], rel=1e-5, abs=1e-12), (label, key)
    best = cmp.summary_rows()[cmp.best("rmse")]["label"]
    assert shown[best]["_best"] and sum(r["_best"] for r in shown.values()) == 1


# --- the four built-in examples reproduce their seeds -------------------------------------------

def test_s0_seed_000_channel_ranges_and_comparison(page, app_url):
    open_app(page, app_url, "example=s0")
    wait_example(page, "s0")
    page.screenshot(path=str(ARTIFACTS / "example_s0.png"), full_page=True)
    rows = read_table(page, CHANNELS)
    # seed 000's Example Data Table: Local Min / Local Max / Local Range per channel
    seed = {"ch1": (-0.33, 0.91, 1.24), "ch2": (0.88, 1.44, 0.56), "ch3": (-1.70, -0.94, 0.76),
            "ch4": (-0.06, 0.11, 0.17)}
    assert [r["Channel"] for r in rows] == list(seed)
    for r in rows:
        lo, hi, rng = seed[r["Channel"]]
        assert num(r["Min"]) == pytest.approx(lo) and num(r["Max"]) == pytest.approx(hi)
        assert num(r["Range"]) == pytest.approx(rng)
    ex = qc.get_example("s0")
    cmp = qc.compare(ex.rows, [ex.spec, ex.spec.with_(granularity=qc.PerChannel(0))],
                     channel_names=ex.channel_names)
    assert_compare_matches(page, cmp)
    # seed 000: per-channel metadata is channels x 8 bytes vs 8 bytes for per-tensor
    shown = read_compare(page)
    assert num(shown["int8 affine per-tensor"]["metadata_bytes"]) == 8
    assert num(shown["int8 affine per-channel"]["metadata_bytes"]) == 32
    assert page.locator(".qc-advice").inner_text().startswith("Advice:")
    # the plots join the page after its first document is drawn (worker: app.after_render): the ranges plot's
    # data is in the page's document, one bar per channel at seed 000's min..max
    ranges = poll(lambda: _plot_columns(page, "qlo"), timeout=60)
    assert ranges["lo"] == pytest.approx([s[0] for s in seed.values()])
    assert ranges["hi"] == pytest.approx([s[1] for s in seed.values()])
    assert not page.errors and not page.dialogs


# only a document the page draws: the static page also holds its pre-rendered document (no views)
PLOT_COLUMNS_JS = """(key) => {
  for (const doc of Bokeh.documents) for (const m of doc.all_models) {
    if (!Array.from(doc.roots()).some((r) => Bokeh.index.find_one(r) != null)) break;
    const data = m.data instanceof Map ? Object.fromEntries(m.data) : m.data;
    if (data && typeof data === 'object' && key in data && data[key].length)
      return Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Array.from(v)]));
  }
  return null }"""


def _plot_columns(page, key: str) -> dict:
    """The columns of the page's data source that has column ``key`` (with rows); fails while there is none."""
    found = page.evaluate(PLOT_COLUMNS_JS, key)
    assert found, f"no plot data with column {key!r} in the page yet"
    return found


def test_s1_seed_001_worked_table(page, app_url):
    open_app(page, app_url, "example=s1")
    wait_example(page, "s1")
    page.screenshot(path=str(ARTIFACTS / "example_s1.png"), full_page=True)
    # seed 001's table: Channel | Min | Max | Sample | Scale | Zero Point | Quantized | Dequantized
    seed = [("filter_0", -1.2, 1.0, 0.73, 0.00862745, 11, 96, 0.73333333),
            ("filter_1", -0.8, 0.9, -0.21, 0.00666667, -8, -40, -0.21333333),
            ("filter_2", -1.5, 1.7, 1.11, 0.01254902, -8, 80, 1.10431373),
            ("filter_3", -0.45, 0.6, 0.18, 0.00411765, -19, 25, 0.18117647)]
    channels, samples = read_table(page, CHANNELS), read_table(page, SAMPLES)
    assert [r["Channel"] for r in channels] == [s[0] for s in seed]
    for (name, lo, hi, x, scale, zp, q, xhat), c, s in zip(seed, channels, samples):
        assert num(c["Range lo"]) == pytest.approx(lo) and num(c["Range hi"]) == pytest.approx(hi)
        assert num(c["Scale"]) == pytest.approx(scale, abs=6e-9)
        assert num(c["Zero-point"]) == zp
        assert s["Channel"] == name and num(s["x"]) == pytest.approx(x)
        assert num(s["q (clamped)"]) == q
        assert num(s["x̂"]) == pytest.approx(xhat, abs=6e-9)


def test_s2_seed_002_activations(page, app_url):
    open_app(page, app_url, "example=s2")
    wait_example(page, "s2")
    page.screenshot(path=str(ARTIFACTS / "example_s2.png"), full_page=True)
    # seed 002: range -1.50 to 1.50, 8-bit symmetric signed -> scale = 1.5 / 127, zero-point 0, nothing clips
    c = read_table(page, CHANNELS)
    assert len(c) == 1 and num(c[0]["Scale"]) == pytest.approx(1.5 / 127, abs=5e-9)
    assert num(c[0]["Zero-point"]) == 0 and num(c[0]["Clip %"]) == 0
    samples = read_table(page, SAMPLES)
    assert [num(s["x"]) for s in samples] == pytest.approx([-1.25, -0.92, -0.51, -0.10, 0, 0.14, 0.37, 0.79, 1.12, 1.46])
    ex = qc.get_example("s2")
    r = qc.analyze(ex.rows, ex.spec, channel_names=ex.channel_names)
    assert [int(num(s["q (clamped)"])) for s in samples] == r.sample_table()["q"].tolist()
    assert_compare_matches(page, qc.compare(ex.rows, [ex.spec], channel_names=ex.channel_names))


def test_s3_seed_003_quiet_row_collapses_per_tensor_survives_per_channel(page, app_url):
    open_app(page, app_url, "example=s3")
    wait_example(page, "s3")
    page.screenshot(path=str(ARTIFACTS / "example_s3.png"), full_page=True)
    shown = read_compare(page)
    assert num(shown["int4 narrow symmetric per-tensor"]["collapsed"]) == 4   # Row A -> [0, 0, 0, 0]
    assert num(shown["int4 narrow symmetric per-channel"]["collapsed"]) == 0
    assert shown["int4 narrow symmetric per-channel"]["_best"]
    samples = read_table(page, SAMPLES)
    row_a = [s for s in samples if s["Channel"] == "Row A"]
    row_b = [s for s in samples if s["Channel"] == "Row B"]
    # seed 003: per-channel Row A codes [2, -4, 6, -7], reconstruction [0.0429, -0.0857, 0.1286, -0.1500]
    assert [int(num(s["q (clamped)"])) for s in row_a] == [2, -4, 6, -7]
    assert [num(s["x̂"]) for s in row_a] == pytest.approx([0.0429, -0.0857, 0.1286, -0.1500], abs=5e-5)
    # seed 003: Row B reconstructed [2.21, -3.10, 1.77, -2.66]
    assert [num(s["x̂"]) for s in row_b] == pytest.approx([2.21, -3.10, 1.77, -2.66], abs=5e-3)
    channels = read_table(page, CHANNELS)
    assert num(channels[0]["Scale"]) == pytest.approx(0.15 / 7, abs=5e-9)        # Row A: 0.0214
    assert num(channels[1]["Scale"]) == pytest.approx(3.10 / 7, abs=5e-9)        # Row B: 0.4429
    # now show the per-tensor scheme in detail: one shared scale 3.10 / 7 and Row A all zeros
    page.get_by_label("Scheme shown in detail (tables, plots)").select_option("per-tensor")
    def row_a_zero():
        s = [r for r in read_table(page, SAMPLES) if r["Channel"] == "Row A"]
        assert [int(num(r["q (clamped)"])) for r in s] == [0, 0, 0, 0]
        assert [num(r["x̂"]) for r in s] == [0, 0, 0, 0]
    poll(row_a_zero)
    assert all(num(r["Scale"]) == pytest.approx(3.10 / 7, abs=5e-9) for r in read_table(page, CHANNELS))
    assert not page.errors and not page.dialogs


# --- settings change the numbers exactly as quantcore says ------------------------------------

def test_mapping_bits_and_granularity_follow_the_engine(page, app_url):
    open_app(page, app_url, "example=s0")
    wait_example(page, "s0")
    ex = qc.get_example("s0")
    page.get_by_label("Mapping").select_option("symmetric")
    base = ex.spec.with_(mapping="symmetric")
    poll(lambda: assert_compare_matches(page, qc.compare(
        ex.rows, [base, base.with_(granularity=qc.PerChannel(0))], channel_names=ex.channel_names)))
    bits = page.get_by_label("Bits", exact=True)
    bits.fill("4")
    bits.press("Enter")
    base4 = base.with_(fmt=qc.IntFormat(4, True))
    poll(lambda: assert_compare_matches(page, qc.compare(
        ex.rows, [base4, base4.with_(granularity=qc.PerChannel(0))], channel_names=ex.channel_names)))
    # per-channel table follows the detail scheme: per-channel scales, then the single per-tensor scale
    r_ch = qc.analyze(ex.rows, base4.with_(granularity=qc.PerChannel(0)), channel_names=ex.channel_names)
    poll(lambda: _scales_equal(page, r_ch.channel_table()["scale"]))
    page.get_by_label("Scheme shown in detail (tables, plots)").select_option("per-tensor")
    r_t = qc.analyze(ex.rows, base4, channel_names=ex.channel_names)
    poll(lambda: _scales_equal(page, r_t.channel_table()["scale"]))
    poll(lambda: _assert_in("bits=4", page.evaluate("location.search")))  # the URL follows asynchronously
    assert "mapping=symmetric" in page.evaluate("location.search")


def _scales_equal(page, want) -> None:
    got = [num(r["Scale"]) for r in read_table(page, CHANNELS)]
    assert got == pytest.approx(list(want), abs=5e-9)


def test_url_with_settings_reproduces_the_view(page, app_url):
    query = urllib.parse.urlencode({"example": "s0", "bits": 4, "mapping": "symmetric",
                                    "compare": json.dumps(["per-tensor", "per-group"]), "group": 2,
                                    "detail": "per-group", "tensor_name": "from a link"})
    open_app(page, app_url, query)
    ex = qc.get_example("s0")
    spec = ex.spec.with_(fmt=qc.IntFormat(4, True), mapping="symmetric")
    cmp = qc.compare(ex.rows, [spec, spec.with_(granularity=qc.PerGroup(2, -1))], channel_names=ex.channel_names)
    poll(lambda: assert_compare_matches(page, cmp))
    assert page.locator(".qc-name").inner_text() == "from a link"
    assert page.get_by_label("Bits", exact=True).input_value() == "4"
    assert page.get_by_label("Mapping").input_value() == "symmetric"


def test_url_values_out_of_bounds_are_named_in_a_warning_and_the_rest_applies(page, app_url):
    # Before: natively s0 was loaded with s3's 4 bits (the example kept every setting the URL names, the refused
    # bits too); in the static page, where the worker applies the URL while it builds the app, the warning's
    # watcher was registered after that and bits=999 was dropped without a word.
    open_app(page, app_url, "example=s0&bits=999&group=-1&tensor_name=linked")
    poll(lambda: _assert_in("URL settings not applied", page.locator(".qc-msg-warning").inner_text()))
    text = page.locator(".qc-msg-warning").inner_text()
    assert "bits=999" in text and "group=-1" in text
    ex = qc.get_example("s0")
    poll(lambda: assert_compare_matches(page, qc.compare(ex.rows, [ex.spec, ex.spec.with_(
        granularity=qc.PerChannel(0))], channel_names=ex.channel_names)))
    assert page.locator(".qc-name").inner_text() == "linked"


def test_k_quants_iq4_ternary_and_new_float_formats_compute_as_quantcore_says(page, app_url):
    # The formats of issue 11 (llama.cpp K-quants, IQ4_XS, TQ2_0, MXFP6, FP8 per-group 128 with fp32 scales),
    # from the presets table, in the page: every number equals quantcore's for the same synthetic tensor.
    schemes = ["q4_k", "q6_k", "iq4_xs", "tq2_0", "mxfp6_e2m3", "fp8_e4m3_g128"]
    query = urllib.parse.urlencode({"source": "synthetic", "syn_rows": 16, "syn_cols": 512,
                                    "compare": json.dumps(schemes), "detail": "q4_k"})
    open_app(page, app_url, query)
    cmp = qc.compare(qc.synthetic(rows=16, cols=512), [qc.preset(s) for s in schemes])
    poll(lambda: assert_compare_matches(page, cmp), timeout=60)


def test_an_importance_matrix_file_weights_q4_k_as_quantcore_does(page, app_url, tmp_path):
    # llama.cpp's imatrix in the page (the worker too): a legacy .dat whose entry is named after the tensor is
    # read in Python from the uploaded bytes, Q4_K is computed with it exactly as qc.analyze(..., imatrix=w),
    # and the status line gives its weighted output error with and without the imatrix; Q8_0 ignores it.
    import struct
    from quantcore.io.imatrix import read_imatrix
    w = np.random.default_rng(4).lognormal(0, 2, 512).astype(np.float32)
    name = b"blk.0.ffn_down.weight"
    dat = struct.pack("<i", 1) + struct.pack("<i", len(name)) + name + struct.pack("<ii", 5, w.size)
    dat += (w * np.float32(5)).astype("<f4").tobytes()
    (tmp_path / "imatrix.dat").write_bytes(dat)
    query = urllib.parse.urlencode({"source": "synthetic", "syn_rows": 16, "syn_cols": 512,
                                    "tensor_name": "blk.0.ffn_down.weight",
                                    "compare": json.dumps(["q4_k", "q8_0"]), "detail": "q4_k"})
    open_app(page, app_url, query)
    poll(lambda: _assert_in("Q4_K", read_compare(page)), timeout=60)
    page.get_by_role("button", name="GGUF importance matrix (llama.cpp imatrix)").click()
    page.get_by_label("Importance matrix file (.gguf, .dat, .npy)").set_input_files(str(tmp_path / "imatrix.dat"))
    x = qc.synthetic(rows=16, cols=512)
    weights = read_imatrix(dat)["blk.0.ffn_down.weight"]
    want = qc.analyze(x, qc.preset("q4_k"), imatrix=weights)
    poll(lambda: _assert_in("Q4_K + imatrix", read_compare(page)), timeout=60)
    shown = read_compare(page)
    assert num(shown["Q4_K + imatrix"]["rmse"]) == pytest.approx(want.metrics.rmse, rel=1e-5)
    assert num(shown["Q8_0"]["rmse"]) == pytest.approx(qc.analyze(x, qc.preset("q8_0")).metrics.rmse, rel=1e-5)
    status = page.locator(".qc-note[role=status]", has_text="Importance matrix imatrix.dat").inner_text()
    plain = qc.analyze(x, qc.preset("q4_k")).weighted_output_mse(weights)
    assert f"weighted output error {want.imatrix_output_mse:.4g} (without the imatrix {plain:.4g})" in status
    assert "Q8_0: llama.cpp uses no importance matrix" in status


def test_every_settings_help_text_is_reachable_by_keyboard(page, app_url):
    # Before: the help of each control was only in Bokeh's "?" icon, shown on hover or click, never on focus.
    open_app(page, app_url)
    header = page.get_by_role("button", name="Help: what each setting means")
    header.focus()
    page.keyboard.press("Enter")
    help_list = page.locator("dl.qc-help")
    poll(lambda: _assert_in("Bits", help_list.inner_text()))
    assert help_list.is_visible()
    terms = help_list.locator("dt").all_inner_texts()
    assert {"Bits", "Mapping", "Group size", "Scales stored as"} <= set(terms), terms


# --- uploads ------------------------------------------------------------------------------------

def _upload(page, path) -> None:
    page.get_by_role("button", name="upload", exact=True).click()
    page.get_by_label("Upload tensor file").set_input_files(str(path))


def test_upload_npy(page, app_url, tmp_path):
    arr = (np.arange(24, dtype=np.float32).reshape(3, 8) - 11.5) * np.array([[0.01], [1.0], [0.2]], np.float32)
    np.save(tmp_path / "weights.npy", arr)
    open_app(page, app_url)
    _upload(page, tmp_path / "weights.npy")

    def loaded():
        rows = read_table(page, CHANNELS)
        assert len(rows) == 3
        assert [num(r["Min"]) for r in rows] == pytest.approx(arr.min(axis=1).tolist(), rel=1e-6)
        assert [num(r["Max"]) for r in rows] == pytest.approx(arr.max(axis=1).tolist(), rel=1e-6)
    poll(loaded)
    # The example's format (int4 narrow symmetric) stays; its one-scheme comparison is reset to the default
    # three granularities for the new data, and the page says so.
    spec = qc.get_example("s3").spec
    cmp = qc.compare(arr, [spec, spec.with_(granularity=qc.PerChannel(0)),
                           spec.with_(granularity=qc.PerGroup(32, axis=-1))])
    poll(lambda: assert_compare_matches(page, cmp))
    notes = page.locator(".qc-msg-info")
    poll(lambda: _assert_in("the example's own settings were reset", " ".join(notes.all_inner_texts())))


def test_upload_safetensors_with_tensor_picker(page, app_url, tmp_path):
    from safetensors.numpy import save_file   # test oracle: writes the file the app must read
    w = np.linspace(-1, 1, 40, dtype=np.float32).reshape(5, 8)
    b = np.array([0.5, -0.25, 0.125], dtype=np.float32)
    save_file({"layer.weight": w, "layer.bias": b}, str(tmp_path / "model.safetensors"))
    open_app(page, app_url)
    _upload(page, tmp_path / "model.safetensors")
    picker = page.get_by_label("Tensor in file")
    poll(lambda: _assert_in("layer.weight", " ".join(picker.locator("option").all_inner_texts())))
    picker.select_option("layer.weight")
    poll(lambda: _assert_equal(len(read_table(page, CHANNELS)), 5))
    rows = read_table(page, CHANNELS)
    assert [num(r["Max"]) for r in rows] == pytest.approx(w.max(axis=1).tolist(), rel=1e-6)
    picker.select_option("layer.bias")
    poll(lambda: _assert_equal(len(read_table(page, SAMPLES)), 3))
    assert [num(s["x"]) for s in read_table(page, SAMPLES)] == pytest.approx(b.tolist())


def test_upload_64_mib_tensor_arrives_by_range_and_computes(page, app_url, tmp_path):
    # 64 MiB is past the one message Panel's FileInput sent the whole file in: the page now hands Python the
    # header, then the tensor in pieces of at most 8 MiB (app.BrowserFile), and says how far it has read.
    from safetensors.numpy import save_file   # test oracle: writes the file the app must read
    rng = np.random.default_rng(7)
    w = (rng.standard_normal((4096, 4096), dtype=np.float32) * rng.uniform(0.01, 2, (4096, 1))).astype(np.float32)
    save_file({"big.weight": w}, str(tmp_path / "big.safetensors"))
    open_app(page, app_url)
    _upload(page, tmp_path / "big.safetensors")
    spec = qc.get_example("s3").spec
    cmp = qc.compare(w, [spec, spec.with_(granularity=qc.PerChannel(0)),
                         spec.with_(granularity=qc.PerGroup(32, axis=-1))])
    poll(lambda: assert_compare_matches(page, cmp), timeout=120)
    notes = " ".join(page.locator(".qc-note").all_inner_texts())
    assert "Loaded: float32 · 4096 × 4096 · 32 bits/weight as stored" in notes, notes


def test_a_settings_change_does_not_lay_the_page_out_again(page, app_url):
    # Before: the busy spinner's visible and css_classes were toggled four times per change, and each made
    # BokehJS lay out the whole page with its five plots again (0.25-0.6 s each on 1024 x 1024).
    open_app(page, app_url, "source=synthetic&syn_rows=64&syn_cols=256")
    cells = page.locator("#qc-compare tbody tr td[data-key=rmse]")
    page.wait_for_timeout(1500)   # the first results and the frontier settle
    # every layout view's invalidate_layout, counted in the page (patched on each view class met)
    patched = page.evaluate(
        "() => { window.qcLayouts = []; const done = new Set(); for (const doc of Bokeh.documents) {"
        " for (const m of doc.all_models) { for (const v of Bokeh.index.find(m)) {"
        " const proto = Object.getPrototypeOf(v); if (done.has(proto) || !proto.invalidate_layout) continue;"
        " done.add(proto); const orig = proto.invalidate_layout;"
        " proto.invalidate_layout = function (...a) { window.qcLayouts.push(this.model.type); return orig.apply(this, a) } } } }"
        " return done.size }")
    assert patched > 0
    before = cells.all_inner_texts()
    bits = page.get_by_label("Bits", exact=True)
    bits.fill("5")
    bits.press("Enter")
    poll(lambda: _assert_changed(cells.all_inner_texts(), before))
    poll(lambda: _assert_equal(page.locator(".qc-busy").count(), 0))
    page.wait_for_timeout(1000)   # the frontier, swept after the results
    assert page.evaluate("window.qcLayouts") == []


def test_results_are_dimmed_while_new_ones_are_computed(page, app_url):
    # Before: the previous settings' numbers stayed at full strength during a recomputation (only a small
    # spinner in the corner said otherwise).
    open_app(page, app_url, "source=synthetic&syn_rows=4096&syn_cols=2048")
    results = page.locator(".qc-results").first
    data = qc.synthetic(rows=4096, cols=2048)
    opened = qc.get_example("s3").spec   # the page opens on s3's settings
    schemes = (qc.PerTensor(), qc.PerChannel(0), qc.PerGroup(32, axis=-1))
    # the first results computed and the page idle before watching (in the worker the page is 'ready' while
    # the first computation of 8 M values may still be going on: then the change below found it busy already)
    poll(lambda: assert_compare_matches(page, qc.compare(data, [opened.with_(granularity=g) for g in schemes])),
         timeout=120)
    poll(lambda: _assert_equal(results.evaluate("(el) => getComputedStyle(el).opacity"), "1"))
    # every style the results had, from the mutation records (a dim and an undim applied in one task of a busy
    # page come as two records of one callback: reading el.style then saw only the last, and the worker run
    # was flaky)
    results.evaluate("(el) => { window.qcStyles = []; new MutationObserver((records) => { for (const r of records)"
                     " window.qcStyles.push(/opacity: *([0-9.]+)/.exec(r.oldValue || '')?.[1] || '');"
                     " window.qcStyles.push(el.style.opacity) }).observe(el, {attributes: true,"
                     " attributeFilter: ['style'], attributeOldValue: true}) }")
    spec = opened.with_(fmt=qc.IntFormat(8, True, narrow=True))
    want = qc.compare(data, [spec.with_(granularity=g) for g in schemes])
    # 8 M values: the schemes are computed one at a time, and the page says which (recorded in the page:
    # a step can be shorter than one poll of the page from here)
    # (the progress pane's Bokeh model, watched in the page: DOM observers do not see into nested shadow roots;
    # watched before the change is made: in the worker the first progress text can arrive before a watcher
    # installed after pressing Enter, which is how CI once saw nothing)
    watched = page.evaluate(
        "() => { window.qcProgress = []; window.qcBusy = []; let n = 0; for (const doc of Bokeh.documents) {"
        " for (const m of doc.all_models) { const c = m.css_classes || [];"
        " if (c.includes('qc-progress')) { n += 1; m.properties.text.change.connect(() => window.qcProgress.push(m.text)) }"
        " if (c.includes('qc-busy-box')) { m.properties.text.change.connect(() => window.qcBusy.push(m.text)) } } }"
        " return n }")
    assert watched >= 1, "no progress pane in the page"
    bits = page.get_by_label("Bits", exact=True)
    bits.fill("8")
    bits.press("Enter")
    poll(lambda: _assert_in("of 3 schemes", " | ".join(page.evaluate("window.qcProgress"))), timeout=60)
    status = page.locator(".qc-note[role=status]")
    poll(lambda: assert_compare_matches(page, want), timeout=60)
    poll(lambda: _assert_equal(results.evaluate("(el) => getComputedStyle(el).opacity"), "1"))
    assert "0.45" in page.evaluate("window.qcStyles")   # dimmed in between
    assert not status.filter(has_text="schemes").count()   # the progress line goes with the work
    assert any("Computing…" in t for t in page.evaluate("window.qcBusy"))   # the busy sign came
    assert page.locator(".qc-busy").count() == 0   # and went
    # a change while another is being computed supersedes it: the page ends on the newest settings
    for value in ("6", "5"):
        bits.fill(value)
        bits.press("Enter")
    spec5 = spec.with_(fmt=qc.IntFormat(5, True, narrow=True))
    poll(lambda: assert_compare_matches(page, qc.compare(data, [spec5.with_(granularity=g) for g in
         (qc.PerTensor(), qc.PerChannel(0), qc.PerGroup(32, axis=-1))])), timeout=60)



PROGRESS_WATCH = ("() => { window.qcProgress = []; let n = 0; for (const doc of Bokeh.documents) {"
                  " for (const m of doc.all_models) { if ((m.css_classes || []).includes('qc-progress')) { n += 1;"
                  " m.properties.text.change.connect(() => window.qcProgress.push(m.text)) } } } return n }")


def test_a_long_range_search_shows_a_progress_bar_and_a_change_midway_ends_on_the_new_settings(page, app_url):
    # Before: each scheme's KL search was one call (a 4096 x 4096 tensor: 2.6-5 s per scheme natively, about
    # four times that in the worker) with nothing moving on the page, and a change waited for it to end.
    open_app(page, app_url, "source=synthetic&syn_rows=2048&syn_cols=1024")
    data = qc.synthetic(rows=2048, cols=1024)
    opened = qc.get_example("s3").spec   # the page opens on s3's settings
    schemes = (qc.PerTensor(), qc.PerChannel(0), qc.PerGroup(32, axis=-1))
    poll(lambda: assert_compare_matches(page, qc.compare(data, [opened.with_(granularity=g) for g in schemes])),
         timeout=120)
    assert page.evaluate(PROGRESS_WATCH) >= 1, "no progress pane in the page"
    page.get_by_label("Range from").select_option(label="KL divergence")

    def bar_values() -> list[float]:
        texts = html.unescape(" ".join(page.evaluate("window.qcProgress")))   # Panel sends a pane's HTML escaped
        return [float(v) for v in re.findall(r"<progress[^>]* value='([0-9.]+)'", texts)]

    poll(lambda: _assert_true(any(0 < v < 1 for v in bar_values())), timeout=120)
    bits = page.get_by_label("Bits", exact=True)
    bits.fill("6")
    bits.press("Enter")
    kl6 = opened.with_(fmt=qc.IntFormat(6, True, narrow=True), range=qc.KLDivergence())
    poll(lambda: assert_compare_matches(page, qc.compare(data, [kl6.with_(granularity=g) for g in schemes])),
         timeout=240)
    poll(lambda: _assert_equal(page.locator(".qc-progress progress").count(), 0))   # the bar goes with the work


def _assert_changed(now, before):
    assert now != before, now


def _assert_true(value):
    assert value


def _assert_equal(a, b):
    assert a == b, (a, b)


# --- exports ------------------------------------------------------------------------------------

def _download(page, label: str) -> bytes:
    with page.expect_download(timeout=30_000) as dl:
        page.get_by_text(label, exact=True).click()
    return open(dl.value.path(), "rb").read()


def test_csv_json_pdf_downloads(page, app_url):
    open_app(page, app_url, "example=s1")
    wait_example(page, "s1")
    channels = list(csv.DictReader(io.StringIO(_download(page, "CSV: per-channel").decode())))
    # the three CSVs share their column names (quantcore.report: tensor, scheme, channel, channel_label)
    assert [r["channel_label"] for r in channels] == ["filter_0", "filter_1", "filter_2", "filter_3"]
    assert {r["scheme"] for r in channels} == {"int8 affine per-channel"}
    assert float(channels[0]["scale"]) == pytest.approx(0.00862745, abs=6e-9)   # seed 001
    assert float(channels[0]["zero_point"]) == 11
    samples = list(csv.DictReader(io.StringIO(_download(page, "CSV: per-sample").decode())))
    assert [int(float(r["q"])) for r in samples] == [96, -40, 80, 25]                # seed 001
    assert [r["channel_label"] for r in samples] == ["filter_0", "filter_1", "filter_2", "filter_3"]
    summary = list(csv.DictReader(io.StringIO(_download(page, "CSV: summary").decode())))
    assert summary[0]["scheme"] == "int8 affine per-channel" and summary[0]["tensor"] == "example s1"
    doc = json.loads(_download(page, "JSON"))
    assert doc["tensor"] == "example s1" and doc["settings"]["example"] == "s1"
    assert doc["comparison"]["summary"][0]["label"] == "int8 affine per-channel"
    pdf = _download(page, "PDF report")
    assert pdf.startswith(b"%PDF")
    from pypdf import PdfReader
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)
    flat = "".join(text.split())   # table cells may wrap inside narrow columns
    for needle in ("Quantizationreport:examples1", "filter_0", "0.00862745", "Advice", "Per-channeltable"):
        assert needle in flat, needle


# --- untrusted text and bad input -----------------------------------------------------------------

HOSTILE = "<img src=x onerror=alert(1)>"


def test_hostile_tensor_name_and_label_render_as_text(page, app_url):
    open_app(page, app_url)
    name = page.get_by_label("Tensor name")
    name.fill(HOSTILE)
    name.press("Enter")
    poll(lambda: _assert_equal(page.locator(".qc-name").inner_text(), HOSTILE))
    assert page.locator(".qc-name img").count() == 0
    page.get_by_role("button", name="paste", exact=True).click()
    box = page.locator("textarea:visible").first
    box.fill(f"{HOSTILE}: 0.5, -0.25, 1\n<b>bold</b>: 1, 2, 3")
    box.press("Tab")
    poll(lambda: _assert_equal([r["Channel"] for r in read_table(page, CHANNELS)], [HOSTILE, "<b>bold</b>"]))
    page.wait_for_timeout(500)
    assert page.dialogs == []
    with page.expect_download() as dl:
        page.get_by_text("CSV: per-channel", exact=True).click()
    assert "<" not in dl.value.suggested_filename and ">" not in dl.value.suggested_filename


def test_hostile_paste_shows_error_next_to_box_and_keeps_text(page, app_url):
    open_app(page, app_url)
    page.get_by_role("button", name="paste", exact=True).click()
    bad = "1, 2, 3\n4, abc, <script>alert(1)</script>"
    box = page.locator("textarea:visible").first
    box.fill(bad)
    box.press("Tab")
    alert = page.locator(".qc-msg-danger:visible").filter(has_text="line 2")
    text = lambda: alert.inner_text()   # noqa: E731
    poll(lambda: _assert_in("column", text()))
    assert "pasted values" in text() and "abc" in text()
    # the alert sits right below the paste box
    box_bottom = box.bounding_box()["y"] + box.bounding_box()["height"]
    assert 0 <= alert.bounding_box()["y"] - box_bottom < 80
    assert box.input_value() == bad
    assert page.locator(".qc-msg-danger script").count() == 0
    assert "&#" not in text(), "the message shows HTML entities instead of the characters"
    assert page.dialogs == []


# --- layout and accessibility ------------------------------------------------------------------------

@pytest.mark.parametrize("width,columns", [(1920, 3), (1400, 2), (1000, 2), (390, 1)])
def test_responsive_layout_shows_every_column_and_never_scrolls_sideways(page, app_url, width, columns):
    open_app(page, app_url, "example=s0", width=width)
    page.wait_for_timeout(500)
    lefts = page.evaluate("""() => {
        const hs = [];
        const walk = (root) => root.querySelectorAll('*').forEach(e => {
            if (e.shadowRoot) walk(e.shadowRoot);
            if (e.classList && e.classList.contains('qc-h') && e.tagName === 'H2'
                && e.getBoundingClientRect().width > 0) hs.push(e);   // the hidden tab's headings do not count
        });
        walk(document);
        return hs.map(h => Math.round(h.getBoundingClientRect().left));
    }""")
    assert len(set(lefts)) == columns, lefts
    # the page never scrolls sideways (tables scroll inside their own box on a phone)
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    if width >= 1400:
        # every column of the comparison and per-channel tables is visible without scrolling
        for table_id in ("qc-compare", "qc-channels"):
            table = page.locator(f"#{table_id}")
            box = table.evaluate("t => [t.scrollWidth, t.closest('.qc-scroll').clientWidth]")
            assert box[0] <= box[1], (table_id, box)
    page.screenshot(path=str(ARTIFACTS / f"layout_{width}px.png"), full_page=True)


def test_axe_no_serious_or_critical_violations(page, app_url, axe_js):
    open_app(page, app_url, "example=s3")
    # evaluated through DevTools, not added as an inline <script> (the static page's CSP rightly refuses those)
    page.evaluate("source => { (0, eval)(source); }", axe_js.read_text())
    violations = page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ['violations']});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.length,
                                       target: v.nodes.slice(0, 3).map(n => n.target)}));
    }""")
    (ARTIFACTS / "axe_violations.json").write_text(json.dumps(violations, indent=2))
    bad = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert not bad, json.dumps(bad, indent=2)


def test_channel_selection_is_linked(page, app_url):
    open_app(page, app_url, "example=s0")
    wait_example(page, "s0")
    page.get_by_label("Selected channel", exact=True).select_option("2: ch3")
    poll(lambda: _assert_equal(page.locator("#qc-channels tr.qc-selected th").inner_text(), "ch3"))
    index_box = page.get_by_label("Selected channel (index; or click a bar, point or table row)")
    poll(lambda: _assert_equal(index_box.input_value(), "2"))
    index_box.fill("3")
    index_box.press("Enter")
    poll(lambda: _assert_equal(page.locator("#qc-channels tr.qc-selected th").inner_text(), "ch4"))
    poll(lambda: _assert_in("channel=3", page.evaluate("location.search")))  # the URL follows asynchronously


# --- your own tensor: the session follows the data (issue 12) -------------------------------------------------

def test_upload_after_an_example_names_the_results_and_resets_the_examples_own_settings(page, app_url, tmp_path):
    """Seed 001's example sets a custom range of 4 per-filter values; an uploaded 32-channel float16 tensor must
    not inherit it (it failed with 'custom range has 4 channel values but the tensor has 32 channels')."""
    from safetensors.numpy import save_file
    w = np.random.default_rng(1).normal(size=(32, 64)).astype(np.float16)
    save_file({"model.layers.0.self_attn.q_proj.weight": w}, str(tmp_path / "model.safetensors"))
    open_app(page, app_url, "example=s1")
    wait_example(page, "s1")
    _upload(page, tmp_path / "model.safetensors")
    poll(lambda: _assert_equal(page.locator(".qc-name").inner_text(), "model.layers.0.self_attn.q_proj.weight"))
    poll(lambda: _assert_equal(len(read_table(page, CHANNELS)), 32))
    note = page.locator(".qc-msg-info").filter(has_text="reset")
    assert "range → data min/max" in note.inner_text()
    assert "float16 · 32 × 64 · 16 bits/weight as stored" in page.locator(".qc-note").filter(has_text="Loaded").inner_text()
    assert page.locator(".qc-msg-danger:visible").count() == 0
    with page.expect_download() as dl:
        page.get_by_text("CSV: per-channel", exact=True).click()
    assert dl.value.suggested_filename.startswith("model.layers.0.self_attn.q_proj.weight")


def test_refused_numbers_say_why_next_to_the_box_and_stay_in_it(page, app_url):
    open_app(page, app_url, "example=s0")
    wait_example(page, "s0")
    before = read_compare(page)
    for label, value, reason in (("Bits", "17", "must be ≥ 2 and ≤ 16"), ("Group size", "0", "must be ≥ 1"),
                                 ("Bits", "1", "must be ≥ 2 and ≤ 16")):
        box = page.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Enter")
        msg = page.locator(".qc-msg-danger:visible").filter(has_text=label)
        poll(lambda: _assert_in(f"{value} is out of range ({reason}", msg.inner_text()))
        assert box.input_value() == value          # the user's input stays where it was

        def right_below_its_box():
            m, b = msg.bounding_box(), box.bounding_box()
            assert m is not None and 0 <= m["y"] - (b["y"] + b["height"]) < 60, (m, b)
        poll(right_below_its_box)
    page.get_by_label("Range from").select_option("percentile")
    pct = page.get_by_label("Percentile", exact=True)
    pct.fill("40")
    pct.press("Enter")
    poll(lambda: _assert_in("must be > 50", page.locator(".qc-msg-danger:visible").filter(has_text="Percentile")
                            .inner_text()))
    page.get_by_label("Range from").select_option("data min/max")
    poll(lambda: _assert_equal(read_compare(page), before))   # results still use the accepted values


def test_clicking_a_table_row_selects_that_channel(page, app_url):
    open_app(page, app_url, "example=s0")
    wait_example(page, "s0")
    page.locator("#qc-channels tbody tr").nth(2).click()
    poll(lambda: _assert_equal(page.locator("#qc-channels tr.qc-selected th").inner_text(), "ch3"))
    poll(lambda: _assert_equal(page.get_by_label("Selected channel (index; or click a bar, point or table row)")
                               .input_value(), "2"))
    row = page.locator("#qc-by-scheme tbody tr").nth(3)   # the by-scheme table too, with the keyboard
    row.focus()
    row.press("Enter")
    poll(lambda: _assert_equal(page.locator("#qc-channels tr.qc-selected th").inner_text(), "ch4"))


def test_seed_003_per_channel_error_of_every_scheme_side_by_side(page, app_url):
    open_app(page, app_url, "example=s3")
    wait_example(page, "s3")
    rows = {r["Channel"]: r for r in read_table(page, "qc-by-scheme")}
    # seed 003's table: Row A MAE about 0.10 per-tensor, about 0.005 per-channel; Row B 0.09 both ways
    assert num(rows["Row A"]["MAE · int4 narrow symmetric per-tensor"]) == pytest.approx(0.10, abs=0.005)
    assert num(rows["Row A"]["MAE · int4 narrow symmetric per-channel"]) == pytest.approx(0.005, abs=0.001)
    assert num(rows["Row B"]["MAE · int4 narrow symmetric per-tensor"]) == pytest.approx(0.0875, abs=0.003)
    assert rows["Row A"]["Lowest MAE"] == "int4 narrow symmetric per-channel"


def test_budget_names_the_most_accurate_scheme_that_fits_and_the_pareto_set(page, app_url):
    query = urllib.parse.urlencode({"example": "s0", "bits": 4, "mapping": "symmetric",
                                    "compare": json.dumps(["per-tensor", "per-channel", "per-group", "q4_0"]),
                                    "group": 2})
    open_app(page, app_url, query)
    ex = qc.get_example("s0")
    spec = ex.spec.with_(fmt=qc.IntFormat(4, True), mapping="symmetric")
    cmp = qc.compare(ex.rows, [spec, spec.with_(granularity=qc.PerChannel(0)),
                               spec.with_(granularity=qc.PerGroup(2, -1)), qc.preset("q4_0")],
                     channel_names=ex.channel_names)
    budget = page.get_by_label("Budget (bits/weight; empty: none)")
    budget.fill("20")   # a 4 x 4 tensor: its scales weigh a lot (per-tensor 7.2, per-channel 16.8 bits/weight)
    budget.press("Enter")
    within = cmp.summary_rows()[cmp.best("rmse", 20.0)]["label"]
    poll(lambda: _assert_in(f"Most accurate within 20 bits/weight: {within}",
                            page.locator(".qc-advice").inner_text()))
    shown = read_compare(page)
    assert shown[within]["_best"]
    over = [r["label"] for r in cmp.summary_rows() if r["bits_per_weight"] > 20]
    assert over and all("qc-over" in page.locator(f"#qc-compare tr[data-scheme='{label}']").get_attribute("class")
                        for label in over)
    pareto = {cmp.summary_rows()[i]["label"] for i in cmp.pareto()}
    assert {label for label, row in shown.items() if row["pareto"] == "✓"} == pareto
    assert "Pareto set" in page.locator(".qc-advice").inner_text()


# --- whole model (issue 13): a checkpoint scanned tensor by tensor, one click back to one tensor ------------------

def test_model_view_scans_a_checkpoint_and_a_click_opens_a_tensor_in_the_one_tensor_view(page, app_url, tmp_path):
    from safetensors.numpy import save_file   # test oracle: writes the file the app must read
    from quantcore.io.checkpoint import open_checkpoint
    from quantcore.scan import scan
    from quantcore.schemes import parse_scheme
    rng = np.random.default_rng(11)
    down, q = "model.layers.0.mlp.down_proj.weight", "model.layers.0.self_attn.q_proj.weight"
    tensors = {down: (rng.standard_normal((64, 256)) * rng.uniform(0.01, 1, (64, 1))).astype(np.float32),
               q: rng.laplace(size=(32, 128)).astype(np.float16),
               "model.norm.weight": np.ones(128, np.float32)}
    path = tmp_path / "tiny.safetensors"
    save_file(tensors, str(path))
    open_app(page, app_url)
    page.get_by_text("Whole model", exact=True).click()
    page.get_by_label("Upload checkpoint file").set_input_files(str(path))
    poll(lambda: _assert_equal(len(read_table(page, "qc-model-worst")), 2), timeout=120)
    poll(lambda: _assert_in("Done: 2 of 2 tensors", page.locator(".qc-note[role=status]").inner_text()))
    print(app_url, page.locator(".qc-note[role=status]").inner_text())   # the scan speed in this runtime
    schemes = ("q8_0", "int8-sym-channel", "q4_0", "int4-sym-g32")     # the Model view's default set
    want, _ = scan(open_checkpoint(str(path)), [parse_scheme(s) for s in schemes])
    shown = {r["Tensor"]: r for r in read_table(page, "qc-model-worst")}
    for r in want:
        got = num(shown[r.tensor][f"SQNR dB · {r.scheme}"])
        assert got == pytest.approx(r.sqnr_db, rel=1e-4), (r.tensor, r.scheme)
    assert page.locator("#qc-model-plan tbody tr").count() == 1 + len(schemes)   # the plan, then each scheme alone
    page.locator(f"#qc-model-worst tbody tr[data-tensor='{q}']").click()
    poll(lambda: _assert_equal(page.locator(".qc-name").inner_text(), q), timeout=60)
    poll(lambda: _assert_equal(len(read_table(page, CHANNELS)), 32), timeout=60)
    rows = read_table(page, CHANNELS)
    assert [num(r["Max"]) for r in rows] == pytest.approx(tensors[q].astype(np.float32).max(axis=1).tolist(),
                                                          rel=1e-6)
    assert page.locator(".qc-msg-danger:visible").count() == 0
