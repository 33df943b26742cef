"""The Model view scans a checkpoint by byte range natively, without a browser: the page's part (answering
``file_request`` with bytes of the file) is played by PageStandIn. Expected rows come from quantcore.scan run on
the same file on disk; the files are written by the safetensors package (test oracle)."""
from __future__ import annotations

import io

import numpy as np
import pytest

from page_helpers import PageStandIn
from quantcore.io.checkpoint import open_checkpoint
from quantcore.plan import solve_plan
from quantcore.scan import scan as scan_on_disk
from quantcore.schemes import parse_scheme

app = pytest.importorskip("app", reason="app.py needs the app extra (panel, bokeh) to import")
st = pytest.importorskip("safetensors.numpy", reason="the safetensors package writes the test files")

BIG, SMALL, NORM, IDS = ("model.layers.0.mlp.down_proj.weight", "model.layers.0.self_attn.q_proj.weight",
                         "model.layers.0.input_layernorm.weight", "token_ids")


def checkpoint(tmp_path, *, nan_in_small: bool = False):
    """Two weights (one float16 of 2 Mi elements: two units of work at a 1 MiB chunk), a norm and an integer
    tensor (both skipped); returns (path, bytes)."""
    rng = np.random.default_rng(3)
    big = (rng.standard_normal((2048, 1024)) * rng.uniform(0.01, 1, (2048, 1))).astype(np.float16)
    small = rng.laplace(size=(96, 160)).astype(np.float32)
    if nan_in_small:
        small[5, 7] = np.nan
    path = tmp_path / "tiny.safetensors"
    st.save_file({BIG: big, SMALL: small, NORM: np.ones(160, np.float32), IDS: np.arange(6, dtype=np.int32)},
                 str(path))
    return path, path.read_bytes()


def comparable(rows):
    """Rows as dicts without the file identity (on disk it has an mtime; a page's file has none)."""
    return [{k: v for k, v in r.to_dict().items() if k != "file_key"} for r in rows]


def test_rows_equal_quantcore_scan_of_the_same_file_and_only_byte_ranges_are_read(tmp_path, monkeypatch):
    monkeypatch.setattr(app.qc_model, "SCAN_CHUNK_MB", 1)      # the 4 MiB tensor arrives in two units
    path, blob = checkpoint(tmp_path)
    scan = app.ModelScan()
    page = PageStandIn(scan, blob)
    scan.open_file("tiny.safetensors", len(blob), "k1")
    assert scan.error == "" and scan.problems == []
    assert scan.state == "done" and not scan.running
    assert (scan.tensors_done, scan.tensors_total) == (2, 2)
    assert {s.tensor for s in scan.skipped} == {NORM, IDS}
    want, _ = scan_on_disk(open_checkpoint(str(path)), [parse_scheme(s) for s in scan.schemes])
    assert comparable(scan.rows) == comparable(want)
    # the header (read 1 MiB ahead), then each unit's rows exactly: 1024 float16 rows of 1024 at most
    assert page.requests >= 3 and page.largest == max(1 << 20, 1024 * 1024 * 2)
    assert page.sent <= len(blob) + (1 << 20)
    assert scan.bytes_read == page.sent
    assert scan.progress_text().startswith(f"Done: 2 of 2 tensors, {page.sent / 1e6:,.1f} MB read; ")
    # the plan is quantcore.plan's over those rows
    plan = solve_plan(want, bits_per_weight=scan.budget, schemes=list(scan.schemes))
    assert scan.plan.choices == plan.choices and scan.plan.total_bytes == plan.total_bytes
    scan.budget = 8.5
    assert scan.plan.choices == solve_plan(want, bits_per_weight=8.5, schemes=list(scan.schemes)).choices


def test_cancel_stops_the_scan_and_keeps_the_rows_measured(tmp_path):
    path, blob = checkpoint(tmp_path)
    scan = app.ModelScan()
    page = PageStandIn(scan, blob, hold=True)
    scan.open_file("tiny.safetensors", len(blob))
    while not scan.rows and page.answer():
        pass
    first = {r.tensor for r in scan.rows}
    assert len(first) == 1 and scan.running
    scan.cancel()
    assert scan.state == "cancelled" and not scan.running
    asked = page.requests
    while page.answer():            # answers to requests made before the cancel change nothing
        pass
    assert page.requests == asked and {r.tensor for r in scan.rows} == first
    assert scan.progress_text().startswith("Cancelled: 1 of 2 tensors")
    assert {t for t, _ in scan.plan.choices} == first                  # the plan covers what was measured


def test_a_new_file_stops_the_old_scan(tmp_path):
    path, blob = checkpoint(tmp_path)
    scan = app.ModelScan()
    page = PageStandIn(scan, blob, hold=True)
    scan.open_file("first.safetensors", len(blob))
    page.answer()
    stale = list(page.waiting)
    page.hold = False
    scan.open_file("tiny.safetensors", len(blob))
    assert scan.state == "done" and scan.filename == "tiny.safetensors"
    for r in stale:                 # the first scan's outstanding request is ignored
        scan.file_bytes(r["id"], r["start"], blob[r["start"]:r["stop"]])
    assert len(scan.rows) == 2 * len(scan.schemes)


def test_bad_input_says_what_next_to_the_file_and_keeps_the_rows_measured(tmp_path):
    path, blob = checkpoint(tmp_path)
    cut = blob[:len(blob) - 1000]
    scan = app.ModelScan()
    PageStandIn(scan, cut)
    scan.open_file("cut.safetensors", len(cut))
    assert scan.state == "failed" and scan.rows == []
    assert scan.error.startswith("cut.safetensors") and "truncated" in scan.error, scan.error

    np.save(tmp_path / "a.npy", np.ones(4, np.float32))
    npy = (tmp_path / "a.npy").read_bytes()
    scan = app.ModelScan()
    PageStandIn(scan, npy)
    scan.open_file("a.npy", len(npy))
    assert "one .safetensors or .gguf file" in scan.error and "npy" in scan.error

    _, bad = checkpoint(tmp_path, nan_in_small=True)
    scan = app.ModelScan()
    PageStandIn(scan, bad)
    scan.open_file("nan.safetensors", len(bad))
    assert scan.state == "done" and scan.error == ""
    assert len(scan.problems) == 1 and SMALL in scan.problems[0] and "non-finite" in scan.problems[0]
    assert {r.tensor for r in scan.rows} == {BIG}                       # the other tensor's rows stay
    assert scan.progress_text().startswith("Done: 2 of 2 tensors")


def test_a_tensor_picked_in_the_model_view_opens_in_the_one_tensor_view_from_the_same_file(tmp_path):
    path, blob = checkpoint(tmp_path)
    page = app.build_app()
    scan, calc = page.model.scan, page.calc
    PageStandIn(scan, blob)
    reads = PageStandIn(calc, blob)
    scan.open_file("tiny.safetensors", len(blob), "key-7")
    table = page.model.table
    assert table._names[0] in (BIG, SMALL)
    row = table._names.index(SMALL)
    table.html.picked = row
    assert page.tabs.active == 0
    assert calc.source == "upload" and calc.upload_tensor == SMALL and calc.input_error == ""
    assert calc.file_request["file"] == "key-7"                         # the Model view's file, not a new upload
    assert reads.sent <= 96 * 160 * 4 + (1 << 20)                       # the header came along: only the tensor
    np.testing.assert_array_equal(calc.data, st.load_file(str(path))[SMALL])


def test_other_schemes_rescan_the_open_file_and_none_says_so(tmp_path):
    path, blob = checkpoint(tmp_path)
    scan = app.ModelScan()
    PageStandIn(scan, blob)
    scan.open_file("tiny.safetensors", len(blob))
    scan.schemes = []
    assert scan.error == "Choose at least one scheme to scan with." and scan.rows == []
    scan.schemes = ["q8_0", "f16"]
    assert scan.error == "" and scan.state == "done"
    assert {r.scheme for r in scan.rows} == {"q8_0", "f16"} and len(scan.rows) == 4


def run_now(coro):
    """The value of a coroutine that never waits (natively the PDF callback's library check awaits nothing). Not
    asyncio.run: in a session with browser tests Playwright's event loop is already running in this thread."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("the coroutine waited for something")


def test_per_layer_curves_and_the_whole_report_pdf_follow_the_scan(tmp_path):
    """The curves' sources hold layer_curves of the rows so far (layer 0 only: both weights are in it; the
    scan's quantcore rows are the reference); the PDF download names the checkpoint, and before any row it
    sends nothing and says why next to the buttons."""
    from pypdf import PdfReader   # test oracle: reads the PDF back

    from quantcalc_ui.modelscan import layer_curves

    path, blob = checkpoint(tmp_path)
    page = app.build_app()
    scan, view = page.model.scan, page.model
    assert run_now(view.export._pdf()) is None and "nothing to report yet" in view.export.alert.object
    PageStandIn(scan, blob)
    scan.open_file("tiny.safetensors", len(blob))
    want, _ = scan_on_disk(open_checkpoint(str(path)), [parse_scheme(s) for s in scan.schemes])
    curves = layer_curves(want, list(scan.schemes))
    assert view.layers.points.data["layer"] == [0] * len(scan.schemes)
    assert view.layers.points.data["rel_rmse"] == pytest.approx(curves.points["rel_rmse"], rel=1e-12)
    assert view.layers.lines.data["scheme"] == list(scan.schemes) and view.layers.pane.visible
    assert view.layers.colors.factors == list(scan.schemes)
    data = run_now(view.export._pdf()).getvalue()
    assert view.export.alert.visible is False
    text = " ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(data)).pages).split())
    assert "Whole-model report: tiny.safetensors" in text and "Per-layer curves" in text
    assert "Skipped 2 tensors" in text and BIG in text and SMALL in text
    assert view.export.pdf.filename == "tiny_scan_report.pdf"


# --- in a browser (both runtimes): downloads, the per-layer chart, a heat-map click -------------------------------

# The live document's models: the static page also holds its pre-rendered document (empty sources, no views),
# so a model counts only when its figure has a view in the page.
LIVE_JS = """const live = (name) => { for (const doc of Bokeh.documents) { const m = doc.get_model_by_name(name);
  if (m != null && Bokeh.index.find_one(m) != null) return [doc, m] } return [null, null] };"""
# the heat map's cell (tensor, scheme) in page coordinates, scrolled into view: Bokeh's own scales place it
HEAT_CELL_JS = """([tensor, scheme]) => { %s
  const [doc, plot] = live('qc-heat');
  if (plot == null) return null;
  const view = Bokeh.index.find_one(plot);
  view.el.scrollIntoView({block: 'center'});
  const sx = view.frame.x_scale.compute(view.frame.x_range.synthetic(scheme));
  const sy = view.frame.y_scale.compute(view.frame.y_range.synthetic(tensor));
  const box = view.canvas_view.el.getBoundingClientRect();
  return [box.left + sx, box.top + sy];
}""" % LIVE_JS
LAYER_POINTS_JS = """() => { %s
  const [doc, plot] = live('qc-layers');
  if (doc == null) return null;
  const src = doc.get_model_by_name('qc-layer-points');
  const col = (k) => Array.from(src.data instanceof Map ? src.data.get(k) : src.data[k]);
  return {layer: col('layer'), scheme: col('scheme')};
}""" % LIVE_JS


@pytest.mark.browser
def test_browser_scan_exports_csv_json_pdf_draws_layer_curves_and_a_heat_map_click_opens_the_tensor(
        page, app_url, tmp_path):
    import csv
    import json

    from pypdf import PdfReader   # test oracle: reads the PDF back

    from page_helpers import poll, read_table
    from test_app_browser import open_app

    rng = np.random.default_rng(21)
    tensors = {f"model.layers.{i}.self_attn.v_proj.weight": (rng.standard_normal((24, 64))
                                                              * rng.uniform(10.0 ** -i, 1, (24, 1))).astype(np.float32)
               for i in range(3)}
    tensors["model.embed_tokens.weight"] = rng.standard_normal((40, 32)).astype(np.float16)
    tensors["model.norm.weight"] = np.ones(64, np.float32)
    path = tmp_path / "three-layers.safetensors"
    st.save_file(tensors, str(path))
    schemes = list(app.qc_model.DEFAULT_SCHEMES)
    want, _ = scan_on_disk(open_checkpoint(str(path)), [parse_scheme(s) for s in schemes])
    plan = solve_plan(want, bits_per_weight=5.0, schemes=schemes)

    open_app(page, app_url)
    page.get_by_text("Whole model", exact=True).click()
    page.get_by_label("Upload checkpoint file").set_input_files(str(path))

    def done():
        text = page.locator(".qc-note[role=status]").inner_text()
        assert "Done: 4 of 4 tensors" in text, text
        assert page.locator("#qc-model-plan tbody tr").count() == 1 + len(schemes)
    poll(done, timeout=120)

    def download(label: str, timeout: float = 30_000) -> bytes:
        with page.expect_download(timeout=timeout) as dl:
            page.get_by_text(label, exact=True).click()
        return open(dl.value.path(), "rb").read()

    got = list(csv.DictReader(io.StringIO(download("CSV: scan rows").decode())))
    assert [(r["tensor"], r["scheme"]) for r in got] == [(r.tensor, r.scheme) for r in want]
    # (the worker's rows differ from CPython's by up to 1.7e-8 relative here: measured, not exact)
    assert [float(r["rel_rmse"]) for r in got] == pytest.approx([r.rel_rmse for r in want], rel=1e-6)
    doc = json.loads(download("JSON: scan and plan"))
    assert doc["checkpoint"] == "three-layers.safetensors" and doc["complete"] is True
    assert doc["summary"]["tensors_scanned"] == 4 and doc["summary"]["tensors_skipped"] == 1
    assert doc["plan"]["tensors"] == dict(plan.choices)
    pdf = download("PDF: whole report", timeout=120_000)   # the worker loads fpdf2 on the first PDF
    text = " ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages).split())
    worst = max(want, key=lambda r: r.rel_rmse).tensor
    for needle in ["Whole-model report: three-layers.safetensors", "Per-layer curves", worst,
                   f"The plan uses {plan.total_bytes:,} bytes"] + schemes:
        assert needle in text, needle

    # the per-layer chart's source: every layer x scheme, the embedding (no layer index) left out and said so
    points = page.evaluate(LAYER_POINTS_JS)
    assert sorted(zip(points["layer"], points["scheme"])) == sorted((i, s) for i in range(3) for s in schemes)
    assert "1 tensor without a layer index" in page.locator(".qc-note", has_text="layer index").inner_text()

    # a click on a heat-map cell opens that tensor in the one-tensor view, from the same file
    target = "model.layers.1.self_attn.v_proj.weight"
    x, y = page.evaluate(HEAT_CELL_JS, [target, "q4_0"])
    page.mouse.click(x, y)
    poll(lambda: _equal(page.locator(".qc-name").inner_text(), target), timeout=60)
    poll(lambda: _equal(len(read_table(page, "qc-channels")), 24), timeout=60)
    rows = read_table(page, "qc-channels")
    assert [float(r["Max"].replace("−", "-")) for r in rows] == pytest.approx(tensors[target].max(axis=1).tolist(),
                                                                              rel=1e-6)


def _equal(a, b):
    assert a == b, (a, b)
