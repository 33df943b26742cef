"""The calculator reads an uploaded file by byte range (app.BrowserFile answers ``file_request``), natively,
without a browser: only the header and the chosen tensor's bytes are ever asked for."""
from __future__ import annotations

import io

import numpy as np
import pytest

import quantcore as qc
from page_helpers import PageStandIn

app = pytest.importorskip("app", reason="app.py needs the app extra (panel, bokeh) to import")


def safetensors_blob(tensors: dict[str, np.ndarray]) -> bytes:
    from safetensors.numpy import save   # test oracle: writes the file the app must read
    return save(tensors)


def test_a_large_tensor_arrives_in_pieces_and_a_small_one_costs_only_its_bytes():
    rng = np.random.default_rng(0)
    big = rng.standard_normal((1024, 4096), dtype=np.float32)          # 16 MiB: two 8 MiB pieces at least
    small = np.linspace(-1, 1, 128, dtype=np.float32).reshape(8, 16)
    blob = safetensors_blob({"a.big": big, "b.small": small})
    calc = app.QuantCalcSettings()
    page = PageStandIn(calc, blob)
    calc.open_file("model.safetensors", len(blob))
    assert calc.upload_names == ["a.big", "b.small"] and calc.upload_tensor == "a.big"
    assert calc.input_error == "" and calc.file_status == ""
    assert page.requests >= 3 and page.sent <= len(blob)                # header, then the tensor in pieces
    specs = [calc.scheme_spec(s) for s in calc.compare]
    want = qc.compare(big, specs)
    assert [r["rmse"] for r in calc.comparison.summary_rows()] == [r["rmse"] for r in want.summary_rows()]

    sent_before = page.sent
    calc.upload_tensor = "b.small"
    assert calc.input_error == ""
    np.testing.assert_array_equal(calc.data, small)
    assert page.sent - sent_before <= small.nbytes + (1 << 20)         # its bytes (one read-ahead at most)


def test_an_answer_to_an_older_request_is_ignored_and_an_unreadable_file_says_so():
    blob = safetensors_blob({"w": np.ones((4, 4), np.float32)})
    calc = app.QuantCalcSettings()
    calc.open_file("w.safetensors", len(blob))              # nobody answers: the header request waits
    rid = calc.file_request["id"]
    calc.file_bytes(rid - 1, 0, blob[:8])                   # stale: ignored
    assert calc.upload_names == [] and calc.input_error == ""
    calc.file_unreadable(rid, "NotReadableError")
    assert "w.safetensors: the browser could not read the file (NotReadableError)" in calc.input_error
    calc.file_bytes(rid, 0, blob)                           # too late: the request was abandoned
    assert calc.upload_names == []


def test_a_file_whose_header_lies_about_its_size_is_refused_with_the_byte_offset():
    buf = io.BytesIO()
    np.save(buf, np.arange(12, dtype=np.float32).reshape(3, 4))
    blob = buf.getvalue()[:-8]                               # the last two values are missing
    calc = app.QuantCalcSettings()
    PageStandIn(calc, blob)
    calc.open_file("cut.npy", len(blob))
    assert calc.input_error == ("cut.npy, byte offset 128: file is truncated: shape (3, 4) of <f4 needs 48 data "
                                "bytes but only 40 follow the header")
    assert calc.data is None and calc.comparison is None
