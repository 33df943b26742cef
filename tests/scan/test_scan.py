"""The scan over a checkpoint: same rows serial / --jobs 2 / any chunk size, resumable, bounded failures."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from quantcore.io import InputError
from quantcore.io.checkpoint import open_checkpoint, read_rows
from quantcore.measure import measure_reference
from quantcore.scan import ResultStore, iter_scan, plan_scan, scan
from quantcore.schemes import parse_schemes

from .conftest import llama_tensors, run_cli, safetensors_bytes, write_sharded

SCHEMES = parse_schemes("q8_0,q4_0,int4-g128,nvfp4,int8-tensor")


def test_index_folder_and_shards_name_the_same_tensors(sharded):
    folder, tensors = sharded
    by_folder = open_checkpoint([folder])
    by_index = open_checkpoint([folder / "model.safetensors.index.json"])
    shards = sorted(str(p) for p in folder.glob("*.safetensors"))
    by_files = open_checkpoint(shards)
    assert [t.name for t in by_folder.tensors] == [t.name for t in by_index.tensors] == list(tensors)
    assert {t.name for t in by_files.tensors} == set(tensors)
    e = by_folder.by_name()["model.layers.1.mlp.up_proj.weight"]
    np.testing.assert_array_equal(read_rows(e, 5, 17), tensors[e.name][5:17])


def test_rows_equal_the_reference_analysis_of_each_loaded_tensor(sharded):
    folder, tensors = sharded
    rows, plan = scan(open_checkpoint([folder]), SCHEMES)
    assert len(rows) == len(plan.tasks) * len(SCHEMES) == 16 * len(SCHEMES)
    by = {(r.tensor, r.scheme): r for r in rows}
    for name in ("model.embed_tokens.weight", "model.layers.0.mlp.down_proj.weight"):
        for s in SCHEMES:
            ref = measure_reference(tensors[name], s)
            r = by[(name, s.name)]
            assert (r.n, r.clipped_low, r.clipped_high, r.collapsed, r.max_abs) == \
                   (ref.n, ref.clipped_low, ref.clipped_high, ref.collapsed, ref.max_abs)
            assert r.sse == pytest.approx(ref.sse, rel=1e-12)


@pytest.fixture
def small_segments(monkeypatch):
    """Segments of 256 elements (instead of 1 Mi) so these small tensors are cut into many chunks."""
    monkeypatch.setattr("quantcore.scan.SEGMENT_ELEMENTS", 256)


def test_serial_parallel_and_every_chunk_size_give_identical_rows(sharded, small_segments):
    ckpt = open_checkpoint([sharded[0]])
    serial, _ = scan(ckpt, SCHEMES)
    tiny, plan = scan(ckpt, SCHEMES, chunk_mb=0.002)       # 524 float32 per chunk: many chunks per tensor
    assert any(len(t.chunks()) > 3 for t in plan.tasks)
    assert any(t.needs_range for t in plan.tasks)          # the per-tensor schemes took the range pass
    parallel, _ = scan(ckpt, SCHEMES, jobs=2, chunk_mb=0.002)
    assert serial == tiny == parallel                        # every float bit, every count


def test_skips_are_explained_and_filter_and_include_1d_work(sharded):
    ckpt = open_checkpoint([sharded[0]])
    plan = plan_scan(ckpt, SCHEMES)
    reasons = {s.tensor: s.reason for s in plan.skipped}
    assert reasons["model.norm.weight"].startswith("1-D")
    assert len(plan.tasks) == 16
    plan = plan_scan(ckpt, SCHEMES, include_1d=True, name_filter=r"layers\.1\.")
    assert {t.entry.name for t in plan.tasks} == {n for n in llama_tensors() if "layers.1." in n}
    assert reasons_of(plan)["model.embed_tokens.weight"] == "does not match --filter"


def reasons_of(plan):
    return {s.tensor: s.reason for s in plan.skipped}


def test_nf4_double_quant_is_skipped_with_a_reason_when_a_tensor_needs_several_chunks(sharded, small_segments):
    ckpt = open_checkpoint([sharded[0]])
    plan = plan_scan(ckpt, parse_schemes("nf4_dq,q8_0"), chunk_mb=0.01)
    why = [s for s in plan.skipped if s.scheme == "nf4_dq"]
    assert why and "needs the whole tensor" in why[0].reason


def _csv(path):
    with open(path) as f:
        return list(csv.reader(f))


def test_resume_after_an_interruption_gives_the_same_final_csv(sharded, tmp_path):
    folder = sharded[0]
    code, out, err = run_cli("scan", folder, "--out", tmp_path / "full", "--schemes", "q8_0,q4_0,nvfp4",
                             "--no-progress")
    assert code == 0, err
    full = _csv(tmp_path / "full" / "results.csv")
    # Interrupt: stop after 5 tensors and leave a half-written line, as a killed process would.
    ckpt = open_checkpoint([folder])
    store = ResultStore(str(tmp_path / "part"))
    gen = iter_scan(plan_scan(ckpt, parse_schemes("q8_0,q4_0,nvfp4")))
    for _ in range(5):
        store.append(next(gen).rows)
    gen.close()
    store.close()
    with open(tmp_path / "part" / "results.jsonl", "a") as f:
        f.write('{"file": "model-0000')
    code, out, err = run_cli("scan", folder, "--out", tmp_path / "part", "--schemes", "q8_0,q4_0,nvfp4",
                             "--no-progress", "--jobs", "2")
    assert code == 0, err
    assert _csv(tmp_path / "part" / "results.csv") == full
    lines = (tmp_path / "part" / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(full) - 1 and all(json.loads(line) for line in lines)
    # A third run has nothing left to do.
    code, out, _ = run_cli("scan", folder, "--out", tmp_path / "part", "--schemes", "q8_0,q4_0,nvfp4", "--no-progress")
    assert code == 0 and "already in the output folder" in out
    assert _csv(tmp_path / "part" / "results.csv") == full


def _one_line_error(argv, *names):
    code, out, err = run_cli(*argv)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("quantcore: error: "), err
    for n in names:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture
def scanned(sharded, tmp_path):
    folder = sharded[0]
    out = tmp_path / "out"
    code, _, err = run_cli("scan", folder, "--out", out, "--schemes", "q8_0", "--no-progress")
    assert code == 0, err
    return folder, out, (out / "results.jsonl").read_text()


def test_truncated_shard(scanned):
    folder, out, before = scanned
    shard = folder / "model-00002-of-00003.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[:-100])
    _one_line_error(["scan", folder, "--out", out, "--schemes", "q8_0,q4_0", "--no-progress"],
                    "model-00002-of-00003.safetensors", "tensor 'model.", "past the end")
    assert (out / "results.jsonl").read_text() == before


def test_shard_named_in_the_index_but_missing(scanned):
    folder, out, before = scanned
    os.remove(folder / "model-00003-of-00003.safetensors")
    _one_line_error(["scan", folder, "--out", out, "--no-progress"],
                    "model.safetensors.index.json", "'model-00003-of-00003.safetensors'", "missing", "tensor '")
    assert (out / "results.jsonl").read_text() == before


@pytest.mark.parametrize("lie, words", [
    (lambda h: h["b"]["data_offsets"].__setitem__(1, 10 ** 7), ["tensor 'b'", "past the end"]),
    (lambda h: h["b"].__setitem__("data_offsets", [0, 4096]), ["'a'", "'b'", "overlap"]),
    (lambda h: h["b"].__setitem__("dtype", "F16"), ["tensor 'b'", "bytes but shape"]),
])
def test_lying_headers(tmp_path, lie, words):
    rng = np.random.default_rng(0)
    t = {"a": rng.standard_normal((32, 32)).astype(np.float32), "b": rng.standard_normal((32, 32)).astype(np.float32)}
    p = tmp_path / "lie.safetensors"
    p.write_bytes(safetensors_bytes(t, header_patch=lie))
    _one_line_error(["scan", p, "--no-progress"], "lie.safetensors", *words)


def test_shard_changed_between_header_read_and_tensor_read(sharded, tmp_path):
    folder, tensors = sharded
    ckpt = open_checkpoint([folder])
    plan = plan_scan(ckpt, parse_schemes("q8_0"))
    store = ResultStore(str(tmp_path / "out"))
    victim = folder / "model-00002-of-00003.safetensors"
    first_of_victim = next(t.name for t in ckpt.tensors if t.file.name == victim.name)
    done = []
    with pytest.raises(InputError) as e:
        for rep in iter_scan(plan):
            store.append(rep.rows)
            done.append(rep.task.entry.name)
            if len(done) == 2:  # rewritten while the scan runs: same header, new data, new size
                victim.write_bytes(victim.read_bytes() + b"\0" * 64)
    store.close()
    msg = str(e.value)
    assert "\n" not in msg and victim.name in msg and f"tensor '{first_of_victim}'" in msg
    assert "changed since its header was read" in msg
    kept = [json.loads(x)["tensor"] for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert kept == done and len(done) >= 2


def test_keep_going_reports_the_failing_tensor_and_scans_the_rest(tmp_path):
    rng = np.random.default_rng(0)
    t = {"a": rng.standard_normal((32, 64)).astype(np.float32), "b": rng.standard_normal((32, 64)).astype(np.float32),
         "c": rng.standard_normal((32, 64)).astype(np.float32)}
    t["b"][3, 5] = np.nan
    p = tmp_path / "nan.safetensors"
    p.write_bytes(safetensors_bytes(t))
    code, out, err = run_cli("scan", p, "--schemes", "q8_0", "--no-progress")
    assert code == 2 and "tensor 'b'" in err and "non-finite" in err and "nan.safetensors" in err
    code, out, err = run_cli("scan", p, "--schemes", "q8_0", "--no-progress", "--keep-going", "--out", tmp_path / "o")
    assert code == 1 and "skipped: nan.safetensors" in err and "tensor 'b'" in err
    assert [r[1] for r in _csv(tmp_path / "o" / "results.csv")[1:]] == ["a", "c"]


def test_bf16_shards_and_npz(tmp_path):
    tensors = llama_tensors()
    write_sharded(tmp_path / "bf", tensors, n_shards=2, dtype="BF16", index=False)
    rows, _ = scan(open_checkpoint([tmp_path / "bf"]), parse_schemes("q4_0,bf16"))
    assert {r.dtype for r in rows} == {"BF16"} and {r.stored_bpw for r in rows} == {16.0}
    assert all(r.sse == 0 for r in rows if r.scheme == "bf16")       # bf16 data is exact in bf16
    np.savez(tmp_path / "w.npz", **{k.replace(".", "_"): v for k, v in tensors.items()})
    rows, plan = scan(open_checkpoint([tmp_path / "w.npz"]), parse_schemes("q4_0"))
    assert len(rows) == 16


def test_cli_prints_summary_roles_layers_and_progress(sharded, tmp_path):
    code, out, err = run_cli("scan", sharded[0], "--schemes", "q8_0,q4_0,int4-g128,nvfp4", "--top", "3")
    assert code == 0
    assert "16 tensors scanned, 5 skipped" in out and "skipped 5: 1-D" in out
    for word in ("most damaged under q4_0", "relative RMSE by role", "attn_q", "mlp_down", "embedding", "output",
                 "relative RMSE by layer", "peak RSS", "bits/weight"):
        assert word in out, word
    assert "scan: 100.0 %" in err           # not a terminal: plain progress lines
    code, out, _ = run_cli("scan", sharded[0], "--schemes", "q4_0", "--json", "--no-progress")
    d = json.loads(out)
    assert d["totals"][0]["scheme"] == "q4_0" and d["tensors_scanned"] == 16
    assert {g["group"] for g in d["by_role"]} >= {"attn_q", "attn_k", "attn_v", "attn_o", "mlp_gate", "mlp_up",
                                                   "mlp_down", "embedding", "output"}


def test_bad_scheme_name_is_one_line():
    code, out, err = run_cli("scan", "x.safetensors", "--schemes", "q4_7")
    assert code == 2 and "unknown scheme 'q4_7'" in err and len(err.strip().splitlines()) == 1


def test_fp8_and_integer_tensors_are_listed_and_skipped_with_their_reason(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 64)).astype(np.float32)

    def add(h):
        end = h["w"]["data_offsets"][1]
        h["fp8"] = {"dtype": "F8_E4M3", "shape": [16, 64], "data_offsets": [end, end + 1024]}
        h["ids"] = {"dtype": "I64", "shape": [128], "data_offsets": [end + 1024, end + 2048]}
    p = tmp_path / "mixed.safetensors"
    p.write_bytes(safetensors_bytes({"w": w}, header_patch=add) + bytes(2048))
    plan = plan_scan(open_checkpoint([p]), SCHEMES, include_1d=True)
    assert [t.entry.name for t in plan.tasks] == ["w"]
    assert reasons_of(plan) == {"fp8": "F8_E4M3 data cannot be decoded by this version of quantcore.io",
                                "ids": "not a floating-point tensor (I64)"}


def test_closing_the_generator_stops_the_scan(sharded, small_segments):
    """An app drives the scan tensor by tensor: after the first report and close(), no more work is
    submitted and what was in flight is cancelled."""
    from quantcore.scan import InlineExecutor

    class Counting(InlineExecutor):
        submitted = 0

        def submit(self, fn, arg):
            Counting.submitted += 1
            return super().submit(fn, arg)

    plan = plan_scan(open_checkpoint([sharded[0]]), SCHEMES, chunk_mb=0.002)
    total_units = sum(len(t.chunks()) * (2 if t.needs_range else 1) for t in plan.tasks)
    progress = []
    gen = iter_scan(plan, Counting(), on_progress=lambda d, t: progress.append((d, t)))
    first = next(gen)
    gen.close()
    assert first.rows and Counting.submitted < total_units / 4
    assert progress and progress[-1][1] == plan.total_elements and progress[-1][0] < plan.total_elements


# --- a file known only by byte ranges (a browser File), one unit per step ------------------------------------------

def _stepped_rows(path, schemes, chunk_mb):
    """Scan ``path`` as the page does: a RangeCache that raises NeedBytes, answered piece by piece (resolve's
    fetch), one SteppedScan step at a time, each unit's bytes dropped once read."""
    from quantcore.io.checkpoint import decode_rows, row_span, source_checkpoint
    from quantcore.io.ranges import NeedBytes, RangeCache, fetch_span
    from quantcore.scan import SteppedScan
    blob = open(path, "rb").read()
    cache = RangeCache(len(blob), os.path.basename(path))

    def resolved(fn):
        while True:
            try:
                return fn()
            except NeedBytes as need:
                a, b = fetch_span(need, len(blob), read_ahead=0)
                cache.add(a, blob[a:b])

    ckpt = resolved(lambda: source_checkpoint(cache, os.path.basename(path)))
    header = min(t.offset for t in ckpt.tensors)

    def read(entry, r0, r1):
        raw = cache.read(*row_span(entry, r0, r1))
        cache.drop(header)
        assert cache.cached_bytes <= header               # never more than the header is kept
        return decode_rows(entry, raw, r0, r1)

    stepper = SteppedScan(plan_scan(ckpt, schemes, chunk_mb=chunk_mb), read)
    rows = []
    while not stepper.finished:
        report = resolved(stepper.step)
        rows += list(report.rows) if report else []
    return rows


def _without_file_key(rows):
    return [{k: v for k, v in r.to_dict().items() if k != "file_key"} for r in rows]


def test_a_stepped_scan_of_a_file_known_by_byte_ranges_gives_the_rows_of_scan(sharded, small_segments):
    path = str(sharded[0] / "model-00001-of-00003.safetensors")
    want, _ = scan(open_checkpoint([path]), SCHEMES)
    assert len({r.tensor for r in want}) >= 3
    got = _stepped_rows(path, SCHEMES, chunk_mb=0.002)     # many units per tensor, a range pass for int8-tensor
    assert _without_file_key(got) == _without_file_key(want)


def test_a_stepped_scan_of_a_gguf_file_gives_the_rows_of_scan(tmp_path):
    from .conftest import write_llama_gguf
    path = tmp_path / "tiny.gguf"
    write_llama_gguf(path, llama_tensors(), default="Q8_0")
    schemes = parse_schemes("q4_0,int8-channel")
    want, _ = scan(open_checkpoint([str(path)]), schemes)
    assert _without_file_key(_stepped_rows(str(path), schemes, chunk_mb=1)) == _without_file_key(want)


def test_the_checks_across_files_are_pure_functions_over_parsed_headers(sharded):
    """read_index / check_index_shards / combine_files: what open_checkpoint does with paths, usable on headers
    read any other way (a page's files known by byte range)."""
    from quantcore.io._source import Source
    from quantcore.io.checkpoint import check_index_shards, combine_files, read_index
    folder, tensors = sharded
    index = read_index(Source(str(folder / "model.safetensors.index.json")))
    assert index.name == "model.safetensors.index.json" and list(index.weight_map) == list(tensors)
    assert index.shards == tuple(f"model-0000{k}-of-00003.safetensors" for k in (1, 2, 3))
    check_index_shards(index, lambda shard: True)
    missing = (r"^model\.safetensors\.index\.json: shard 'model-00002-of-00003\.safetensors' named in the index "
               r"\(tensor 'model\.layers\.[01]\.[a-z_.]+', \.\.\.\) is missing$")
    with pytest.raises(InputError, match=missing):
        check_index_shards(index, lambda shard: "00002" not in shard)
    parts = [open_checkpoint([str(folder / s)]) for s in index.shards]
    whole = open_checkpoint([str(folder)])
    assert combine_files(parts, [index]) == whole
    first = r"model-00001-of-00003\.safetensors"
    with pytest.raises(InputError, match=rf"^{first}: tensor '.+' is in both '{first}' and '{first}'$"):
        combine_files([parts[0], parts[0]])
    with pytest.raises(InputError, match=r"^model\.safetensors\.index\.json: the index names tensor '.+' in shard "
                                         r"'model-00003-of-00003\.safetensors', but that shard has no such tensor$"):
        combine_files(parts[:2], [index])
    with pytest.raises(InputError, match="not valid JSON"):
        read_index(Source(b"{weight_map", "bad.index.json"))
    with pytest.raises(InputError, match=r"shard '\.\./x\.safetensors' of tensor 'w' is not a file name inside"):
        read_index(Source(b'{"weight_map": {"w": "../x.safetensors"}}', "up.index.json"))
