"""The Model view scans a checkpoint by byte range: natively without a browser (the page's part, answering
``file_request`` with bytes of the file it names, is played by PageStandIn), and in a real browser in both runtimes
(tests marked ``browser``: the native page and the static Pyodide worker). Expected rows come from quantcore.scan
run on the same files on disk (the CLI engine, ``open_checkpoint``); the files are written by the safetensors
package (test oracle)."""
from __future__ import annotations

import csv
import io
import json
import random

import numpy as np
import pytest

from page_helpers import PageStandIn, is_static, poll, read_table
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
    scan, calc = page.model_view().scan, page.calc
    PageStandIn(scan, blob)
    reads = PageStandIn(calc, blob)
    scan.open_file("tiny.safetensors", len(blob), "key-7")
    table = page.model_view().table
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
    scan, view = page.model_view().scan, page.model_view()
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


# --- several files picked together: the shards of one checkpoint, with or without its index ------------------------

INDEX = "model.safetensors.index.json"


def shard_name(k: int, n: int) -> str:
    return f"model-{k + 1:05d}-of-{n:05d}.safetensors"


def write_shards(folder, n_shards: int, index: bool, seed: int = 5, nan_in: str | None = None):
    """Per layer a float32 q_proj, a float16 down_proj and a norm (skipped), cut into ``n_shards`` files written by
    safetensors.numpy.save_file, and the index when ``index``; returns the paths (index first) and the tensors."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(n_shards):
        p = f"model.layers.{layer}."
        tensors[p + "self_attn.q_proj.weight"] = rng.laplace(size=(32, 96)).astype(np.float32)
        tensors[p + "mlp.down_proj.weight"] = (rng.standard_normal((48, 64)) * rng.uniform(0.01, 1, (48, 1))
                                               ).astype(np.float16)
        tensors[p + "input_layernorm.weight"] = np.ones(96, np.float32)
    if nan_in is not None:
        tensors[nan_in][1, 2] = np.nan
    folder.mkdir(parents=True, exist_ok=True)
    names, weight_map, paths = list(tensors), {}, []
    per = len(names) // n_shards
    for k in range(n_shards):
        part = {t: tensors[t] for t in names[k * per:(k + 1) * per]}
        st.save_file(part, str(folder / shard_name(k, n_shards)))
        weight_map.update({t: shard_name(k, n_shards) for t in part})
        paths.append(folder / shard_name(k, n_shards))
    if index:
        (folder / INDEX).write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
        paths.insert(0, folder / INDEX)
    return paths, tensors


def open_picked(scan, paths, hold: bool = False, shuffle: int = 1) -> PageStandIn:
    """Pick ``paths`` together (in a shuffled order: a browser's order is not the user's), answered by a stand-in."""
    order = list(paths)
    random.Random(shuffle).shuffle(order)
    page = PageStandIn(scan, {f"k-{p.name}": p.read_bytes() for p in order}, hold=hold)
    scan.open_files([app.qc_model.PickedFile(p.name, p.stat().st_size, f"k-{p.name}") for p in order])
    return page


@pytest.mark.parametrize("n_shards, with_index", [(3, True), (2, False)])
def test_picked_shards_scan_as_one_checkpoint_with_the_rows_of_quantcore_scan(tmp_path, n_shards, with_index):
    paths, _ = write_shards(tmp_path / "ckpt", n_shards, with_index)
    scan = app.ModelScan()
    page = open_picked(scan, paths)
    assert scan.error == "" and scan.problems == [] and scan.state == "done"
    assert (scan.tensors_done, scan.tensors_total) == (2 * n_shards, 2 * n_shards)
    assert scan.filename == f"{paths[0].name} (+{len(paths) - 1} files)"
    # export files are named after the checkpoint, not after the label's "(+N files)"
    assert scan.export_stem() == ("model" if with_index else shard_name(0, n_shards).removesuffix(".safetensors"))
    want, _ = scan_on_disk(open_checkpoint(str(tmp_path / "ckpt")), [parse_scheme(s) for s in scan.schemes])
    assert comparable(scan.rows) == comparable(want)
    assert {r.file for r in scan.rows} == {shard_name(k, n_shards) for k in range(n_shards)}
    assert {s.tensor for s in scan.skipped} == {f"model.layers.{k}.input_layernorm.weight" for k in range(n_shards)}
    assert page.sent <= sum(p.stat().st_size for p in paths) + len(paths) * (1 << 20)
    assert scan.progress_text().startswith(f"Done: {2 * n_shards} of {2 * n_shards} tensors")
    assert "left out" not in scan.progress_text()


def test_a_model_folders_config_json_picked_along_is_left_out_and_said(tmp_path):
    paths, _ = write_shards(tmp_path / "ckpt", 2, index=True)
    config = tmp_path / "ckpt" / "config.json"
    config.write_text('{"architectures": ["LlamaForCausalLM"]}')
    scan = app.ModelScan()
    open_picked(scan, paths + [config])
    assert scan.state == "done" and scan.error == "" and scan.filename == f"{INDEX} (+2 files)"
    assert scan.progress_text().endswith("; left out (not a checkpoint file): config.json")
    want, _ = scan_on_disk(open_checkpoint(str(tmp_path / "ckpt")), [parse_scheme(s) for s in scan.schemes])
    assert comparable(scan.rows) == comparable(want)


def test_a_tensor_of_a_shard_opens_in_the_one_tensor_view_from_that_shard(tmp_path):
    paths, tensors = write_shards(tmp_path / "ckpt", 3, index=True)
    page = app.build_app()
    scan, calc = page.model_view().scan, page.calc
    order = list(paths)
    blobs = {f"k-{p.name}": p.read_bytes() for p in order}
    PageStandIn(scan, blobs)
    reads = PageStandIn(calc, blobs)
    scan.open_files([app.qc_model.PickedFile(p.name, p.stat().st_size, f"k-{p.name}") for p in order])
    table = page.model_view().table
    assert "<th scope='col'>File</th>" in table.html.content["html"]
    wanted = "model.layers.1.self_attn.q_proj.weight"
    table.html.picked = table._names.index(wanted)
    assert page.tabs.active == 0 and calc.input_error == ""
    assert calc.file_request["file"] == f"k-{shard_name(1, 3)}" and calc.upload_tensor == wanted
    assert reads.sent <= tensors[wanted].nbytes + (1 << 20)
    np.testing.assert_array_equal(calc.data, tensors[wanted])


def test_a_shard_missing_from_the_pick_or_truncated_is_named_next_to_the_picker(tmp_path):
    paths, _ = write_shards(tmp_path / "ckpt", 3, index=True)
    scan = app.ModelScan()
    open_picked(scan, [p for p in paths if p.name != shard_name(1, 3)])
    assert scan.state == "failed" and scan.rows == []
    assert scan.error.startswith(f"{INDEX}: shard '{shard_name(1, 3)}' named in the index (tensor 'model.layers.")
    assert scan.error.endswith("is missing")
    cut = paths[2]
    cut.write_bytes(cut.read_bytes()[:-64])
    scan = app.ModelScan()
    open_picked(scan, paths)
    assert scan.state == "failed" and scan.rows == []
    assert scan.error.startswith(f"{cut.name}, byte offset 8, tensor 'model.layers.") and "past the end" in scan.error


def test_a_bad_tensor_or_a_shard_the_browser_cannot_read_keeps_the_rows_measured(tmp_path):
    bad = "model.layers.1.self_attn.q_proj.weight"
    paths, _ = write_shards(tmp_path / "nan", 2, index=False, nan_in=bad)
    scan = app.ModelScan()
    open_picked(scan, paths)
    assert scan.state == "done" and scan.error == ""
    assert len(scan.problems) == 1 and scan.problems[0].startswith(f"{shard_name(1, 2)}, tensor '{bad}': ")
    assert len({r.tensor for r in scan.rows}) == 3

    paths, _ = write_shards(tmp_path / "ckpt", 2, index=False)
    scan = app.ModelScan()
    page = open_picked(scan, paths, hold=True)
    while page.waiting and page.waiting[0]["file"] != f"k-{shard_name(1, 2)}" or not scan.rows:
        assert page.answer()
    done = list(scan.rows)
    assert {r.file for r in done} == {shard_name(0, 2)}
    scan.file_unreadable(page.waiting.pop(0)["id"], "NotReadableError")
    assert scan.state == "failed" and not scan.running
    assert scan.error == (f"{shard_name(1, 2)}: the browser could not read the file (NotReadableError); "
                          "choose it again")
    assert scan.rows == done and scan.plan is not None


# --- in a real browser, both runtimes: the picker takes the shards (and the index) at once ---------------------------

def _open_model_tab(page, app_url):
    from test_app_browser import open_app    # the one-tensor page first, as a user lands on it
    open_app(page, app_url)
    page.get_by_text("Whole model", exact=True).click()


def _assert(ok, what):
    assert ok, what


def _csv_rows(text: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "file_key"} for r in csv.DictReader(io.StringIO(text))]


@pytest.mark.browser
@pytest.mark.parametrize("n_shards, with_index", [(3, True), (2, False)])
def test_model_scan_of_picked_shards_in_the_page_equals_quantcore_scan(page, app_url, tmp_path, n_shards, with_index):
    from quantcore.scanresults import rows_csv
    paths, _ = write_shards(tmp_path / "ckpt", n_shards, with_index)
    order = list(paths)
    random.Random(n_shards).shuffle(order)
    _open_model_tab(page, app_url)
    page.get_by_label("Upload checkpoint files").set_input_files([str(p) for p in order])
    n = 2 * n_shards
    status = page.locator(".qc-note[role=status]")
    poll(lambda: _assert(f"Done: {n} of {n} tensors" in status.inner_text(), status.inner_text()), timeout=180)
    print(app_url, status.inner_text())
    schemes = ("q8_0", "int8-sym-channel", "q4_0", "int4-sym-g32")     # the Model view's default set
    want, _ = scan_on_disk(open_checkpoint(str(tmp_path / "ckpt")), [parse_scheme(s) for s in schemes])
    shown = {r["Tensor"]: r for r in read_table(page, "qc-model-worst")}
    assert len(shown) == n
    for r in want:
        assert shown[r.tensor]["File"] == r.file
        assert float(shown[r.tensor][f"SQNR dB · {r.scheme}"]) == pytest.approx(r.sqnr_db, rel=1e-4)
    with page.expect_download(timeout=30_000) as dl:
        page.get_by_text("CSV: scan rows", exact=True).click()
    got = _csv_rows(open(dl.value.path(), encoding="utf-8").read())
    expected = _csv_rows(rows_csv(want))
    assert [(r["file"], r["tensor"], r["scheme"]) for r in got] == [(r["file"], r["tensor"], r["scheme"])
                                                                     for r in expected]
    # Natively the page runs the CLI's code on the same bytes: equal to the last bit. The worker's numpy (a wasm
    # build) rounds some float32 sums differently: last float32 bits (measured: at most 3.7e-8 relative).
    rel = 1e-6 if is_static(app_url) else 1e-12
    worst = 0.0
    for g, w in zip(got, expected):
        for k, v in w.items():
            try:
                want_v, got_v = float(v), float(g[k])
            except ValueError:
                assert g[k] == v, (w["tensor"], w["scheme"], k)
                continue
            assert got_v == pytest.approx(want_v, rel=rel, nan_ok=True), (w["tensor"], w["scheme"], k)
            if want_v and np.isfinite(want_v):
                worst = max(worst, abs(got_v - want_v) / abs(want_v))
    print(f"{app_url}: largest relative difference from the CLI over {len(got)} CSV rows: {worst:.3g}")
    assert page.locator(".qc-msg-danger:visible").count() == 0


@pytest.mark.browser
def test_model_scan_names_the_shard_missing_from_the_pick_next_to_the_picker(page, app_url, tmp_path):
    paths, _ = write_shards(tmp_path / "ckpt", 3, index=True)
    _open_model_tab(page, app_url)
    picker = page.get_by_label("Upload checkpoint files")
    picker.set_input_files([str(p) for p in paths if p.name != shard_name(2, 3)])
    alert = page.locator(".qc-msg-danger:visible")
    poll(lambda: _assert(alert.count() == 1, "no error shown"), timeout=60)
    text = alert.inner_text()
    assert f"{INDEX}: shard '{shard_name(2, 3)}' named in the index (tensor 'model.layers.2." in text, text
    assert "is missing" in text
    # then the truncated shard: its name and the byte offset, and still no rows
    paths[1].write_bytes(paths[1].read_bytes()[:-64])
    picker.set_input_files([str(p) for p in paths])
    poll(lambda: _assert(f"{paths[1].name}, byte offset 8, tensor 'model.layers." in alert.inner_text(),
                         alert.inner_text()), timeout=60)
    assert "past the end" in alert.inner_text()
    assert page.locator("#qc-model-worst").count() == 0
