"""The Model view opens the files a page picked (one checkpoint file, or the shards of one model with or without
its index) by byte range, with quantcore's own checks: the checkpoint, the scan rows and every error message equal
those of ``quantcore.io.checkpoint.open_checkpoint`` / ``quantcore scan`` given the same files as paths. The files
are written by the safetensors package (test oracle)."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from quantcalc_ui.modelscan import PickedCheckpoint, PickedFile
from quantcore.io import InputError
from quantcore.io.checkpoint import open_checkpoint
from quantcore.io.ranges import PIECE, NeedBytes, fetch_span
from quantcore.scan import SteppedScan, plan_scan, scan
from quantcore.schemes import parse_schemes

st = pytest.importorskip("safetensors.numpy", reason="the safetensors package writes the test files")

SCHEMES = parse_schemes("q8_0,int8-sym-channel,int4-sym-g32")
INDEX = "model.safetensors.index.json"


def shard_name(k: int, n: int) -> str:
    return f"model-{k + 1:05d}-of-{n:05d}.safetensors"


def write_shards(folder, n_shards: int = 3, index: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
    """A tiny llama-like model cut into ``n_shards`` files (safetensors.numpy.save_file), with its index."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(n_shards):
        p = f"model.layers.{layer}."
        tensors[p + "self_attn.q_proj.weight"] = rng.laplace(size=(48, 64)).astype(np.float32)
        tensors[p + "mlp.down_proj.weight"] = (rng.standard_normal((64, 96)) * rng.uniform(0.01, 1, (64, 1))
                                               ).astype(np.float16)
        tensors[p + "input_layernorm.weight"] = np.ones(64, np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    names, wm = list(tensors), {}
    per = -(-len(names) // n_shards)
    for k in range(n_shards):
        part = {t: tensors[t] for t in names[k * per:(k + 1) * per]}
        st.save_file(part, str(folder / shard_name(k, n_shards)))
        wm.update({t: shard_name(k, n_shards) for t in part})
    if index:
        (folder / INDEX).write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": wm}))
    return tensors


class Page:
    """The page's part: answers every NeedBytes of a PickedCheckpoint with those bytes of the file it names."""

    def __init__(self, paths):
        self.blobs = {p.name: p.read_bytes() for p in paths}
        self.requests: list[tuple[str, int, int]] = []

    def picked(self, order=None) -> PickedCheckpoint:
        names = list(self.blobs) if order is None else order
        return PickedCheckpoint([PickedFile(n, len(self.blobs[n]), f"key-{n}") for n in names])

    def serve(self, call, read_ahead: int | None = None):
        while True:
            try:
                return call()
            except NeedBytes as need:
                blob = self.blobs[need.source]
                start, stop = fetch_span(need, len(blob)) if read_ahead is None else fetch_span(need, len(blob), 0)
                self.requests.append((need.source, start, stop))
                self._add(need.source, start, blob[start:stop])

    def bind(self, pc: PickedCheckpoint) -> "Page":
        self._add = pc.add
        return self


def open_picked(folder, names=None, shuffle_seed: int | None = None):
    paths = sorted(folder.iterdir()) if names is None else [folder / n for n in names]
    page = Page(paths)
    order = [p.name for p in paths]
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(order)       # the browser's order of the picked files is not the user's
    pc = page.picked(order)
    page.bind(pc)
    return page, pc, page.serve(pc.open)


def cli_error(paths) -> str:
    with pytest.raises(InputError) as e:
        open_checkpoint([str(p) for p in paths])
    return str(e.value)


def page_error(folder, names) -> str:
    with pytest.raises(InputError) as e:
        open_picked(folder, names)
    return str(e.value)


def comparable(rows):
    return [{k: v for k, v in r.to_dict().items() if k != "file_key"} for r in rows]


def stepped_rows(page: Page, pc: PickedCheckpoint, ckpt, chunk_mb: float):
    stepper = SteppedScan(plan_scan(ckpt, SCHEMES, chunk_mb=chunk_mb), pc.read)
    rows = []
    while not stepper.finished:
        report = page.serve(stepper.step, read_ahead=0)
        rows += list(report.rows) if report else []
    return rows


def entries(ckpt):
    return [(t.file.name, t.name, t.shape, t.dtype, t.offset, t.nbytes) for t in ckpt.tensors]


@pytest.mark.parametrize("with_index", [True, False])
def test_picked_shards_open_and_scan_as_quantcore_opens_and_scans_the_folder(tmp_path, with_index):
    write_shards(tmp_path / "ckpt", n_shards=3, index=with_index)
    page, pc, ckpt = open_picked(tmp_path / "ckpt", shuffle_seed=5)
    want = open_checkpoint(str(tmp_path / "ckpt"))     # the folder: its index, else every shard by name
    assert entries(ckpt) == entries(want)
    assert [f.name for f in ckpt.files] == [f.name for f in want.files] == [shard_name(k, 3) for k in range(3)]
    assert pc.label == (f"{INDEX} (+3 files)" if with_index else f"{shard_name(0, 3)} (+2 files)")
    rows = stepped_rows(page, pc, ckpt, chunk_mb=0.004)   # several units per tensor, a range pass where needed
    expected, _ = scan(want, SCHEMES)
    assert comparable(rows) == comparable(expected)
    assert {r.file for r in rows} == {f.name for f in want.files}
    # byte ranges only: no request past one piece, and nothing is asked twice once the headers are in
    assert max(stop - start for _, start, stop in page.requests) <= PIECE
    sizes = {n: len(b) for n, b in page.blobs.items()}
    for name, cache in pc.caches.items():
        assert cache.cached_bytes == pc.keep_below[name] < sizes[name]   # only the header stays (an index: nothing)


def test_one_picked_file_is_the_single_file_checkpoint(tmp_path):
    write_shards(tmp_path / "ckpt", n_shards=1, index=False)
    page, pc, ckpt = open_picked(tmp_path / "ckpt")
    assert pc.label == shard_name(0, 1)
    assert entries(ckpt) == entries(open_checkpoint(str(tmp_path / "ckpt" / shard_name(0, 1))))
    name = ckpt.tensors[0].name
    f = pc.file_of(name)
    assert (f.name, f.key) == (shard_name(0, 1), f"key-{shard_name(0, 1)}")
    blob = page.blobs[f.name]
    assert pc.header_bytes(f.name) == blob[:8 + int.from_bytes(blob[:8], "little")]


def test_the_tensor_of_a_shard_is_read_from_that_shard(tmp_path):
    tensors = write_shards(tmp_path / "ckpt", n_shards=3)
    page, pc, ckpt = open_picked(tmp_path / "ckpt")
    for t in ckpt.tensors:
        assert pc.file_of(t.name).name == t.file.name
        got = page.serve(lambda: pc.read(t, 0, t.n_rows), read_ahead=0)
        np.testing.assert_array_equal(got, tensors[t.name].astype(np.float32))


def test_a_shard_named_in_the_index_but_not_picked_is_the_clis_missing_shard_error(tmp_path):
    folder = tmp_path / "ckpt"
    write_shards(folder, n_shards=3)
    picked = [INDEX, shard_name(0, 3), shard_name(2, 3)]
    got = page_error(folder, picked)
    (folder / shard_name(1, 3)).unlink()
    assert got == cli_error([folder / INDEX])
    assert got.startswith(f"{INDEX}: shard '{shard_name(1, 3)}' named in the index (tensor 'model.layers.") \
        and got.endswith("is missing")


def test_a_tensor_in_two_shards_is_the_clis_error(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    w = np.ones((4, 4), np.float32)
    st.save_file({"a.weight": w, "b.weight": w}, str(folder / "one.safetensors"))
    st.save_file({"b.weight": 2 * w, "c.weight": w}, str(folder / "two.safetensors"))
    got = page_error(folder, ["two.safetensors", "one.safetensors"])
    assert got == cli_error([folder / "one.safetensors", folder / "two.safetensors"])
    assert got == "two.safetensors: tensor 'b.weight' is in both 'one.safetensors' and 'two.safetensors'"


def test_an_index_that_puts_a_tensor_in_another_shard_is_the_clis_error(tmp_path):
    folder = tmp_path / "ckpt"
    write_shards(folder, n_shards=2)
    index = json.loads((folder / INDEX).read_text())
    moved = next(iter(index["weight_map"]))
    index["weight_map"][moved] = shard_name(1, 2)
    (folder / INDEX).write_text(json.dumps(index))
    got = page_error(folder, [INDEX, shard_name(0, 2), shard_name(1, 2)])
    assert got == cli_error([folder / INDEX])
    assert f"the index puts tensor '{moved}' in '{shard_name(1, 2)}' but it is in '{shard_name(0, 2)}'" in got


def test_a_truncated_shard_is_named_with_the_byte_offset_as_by_the_cli(tmp_path):
    folder = tmp_path / "ckpt"
    write_shards(folder, n_shards=3)
    cut = folder / shard_name(1, 3)
    cut.write_bytes(cut.read_bytes()[:-100])
    got = page_error(folder, None)
    assert got == cli_error([folder / INDEX])
    assert got.startswith(f"{shard_name(1, 3)}, byte offset 8, tensor 'model.layers.") and "past the end" in got


def test_picked_files_that_are_not_one_checkpoint_are_refused(tmp_path):
    folder = tmp_path / "ckpt"
    write_shards(folder, n_shards=2, index=False)
    with pytest.raises(InputError, match=r"^b\.safetensors: the file is empty$"):
        PickedCheckpoint([PickedFile(shard_name(0, 2), 100), PickedFile("b.safetensors", 0)])
    with pytest.raises(InputError, match="two of the chosen files have this name"):
        PickedCheckpoint([PickedFile("a.safetensors", 10), PickedFile("a.safetensors", 10)])
    with pytest.raises(InputError, match="no file was chosen"):
        PickedCheckpoint([])
    (folder / "bad.index.json").write_text('{"weight_map": [1]}')
    assert page_error(folder, ["bad.index.json", shard_name(0, 2)]) == \
        "bad.index.json: index has no 'weight_map' object of tensor name -> shard file name"
    (folder / "config.json").write_text("{}")
    assert page_error(folder, ["config.json"]) == \
        "config.json: no checkpoint among the files chosen (.safetensors, .gguf, and an .index.json)"
    np.save(folder / "x.npy", np.ones(3, np.float32))
    assert "x.npy: a checkpoint here is one .safetensors or .gguf file; this looks like npy" == \
        page_error(folder, [shard_name(0, 2), "x.npy"])


def test_a_model_folders_other_json_picked_along_is_left_out_unread(tmp_path):
    """Choosing everything in a Hugging Face model folder picks config.json and tokenizer.json too: they are not
    indexes (only ``*.index.json`` is), so they are left out, never read, and the checkpoint is the same."""
    folder = tmp_path / "ckpt"
    write_shards(folder, n_shards=2)
    (folder / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (folder / "tokenizer.json").write_text('{"weight_map": "not an index"}')
    (folder / "empty.json").write_text("")
    page, pc, ckpt = open_picked(folder, shuffle_seed=2)
    assert pc.left_out == ("config.json", "empty.json", "tokenizer.json")
    assert entries(ckpt) == entries(open_checkpoint(str(folder / INDEX)))
    assert not any(name.endswith(("config.json", "tokenizer.json")) for name, _, _ in page.requests)
