"""scan / diff / plan print tensor names from files through quantcore.io.printable (issue 12, item 10):
no raw ESC, C1 control or bidi/format character reaches the terminal; --out files keep the exact names."""
from __future__ import annotations

import csv
import json
import unicodedata

import numpy as np

from quantcore.io import printable

from .conftest import gguf_module, run_cli, write_sharded

# ANSI "clear screen" + red, RIGHT-TO-LEFT OVERRIDE, POP DIRECTIONAL ISOLATE, ZERO WIDTH JOINER, NEL
HOSTILE = "model.layers.0.\x1b[2J\x1b[31m\u202eevil\u2069\u200d\x85.weight"


def assert_terminal_safe(text: str) -> None:
    bad = [c for c in text if c != "\n" and not c.isprintable() and unicodedata.category(c) != "Zs"]
    assert not bad, f"raw {[f'U+{ord(c):04X}' for c in bad]} in {text!r}"


def _tensors():
    rng = np.random.default_rng(7)
    return {HOSTILE: (rng.standard_normal((8, 64)) * 0.02).astype(np.float32),
            "model.layers.1.mlp.down_proj.weight": (rng.standard_normal((8, 64)) * 0.05).astype(np.float32)}


def test_scan_and_plan_print_hostile_names_escaped_and_store_them_exactly(tmp_path):
    write_sharded(tmp_path / "ckpt", _tensors(), n_shards=1)
    out_dir = tmp_path / "out"
    code, out, err = run_cli("scan", tmp_path / "ckpt", "--schemes", "q8_0,q4_0", "--out", out_dir, "--no-progress")
    assert code == 0, err
    assert_terminal_safe(out + err)
    assert printable(HOSTILE) in out
    with open(out_dir / "results.csv", encoding="utf-8", newline="") as f:
        assert HOSTILE in {r["tensor"] for r in csv.DictReader(f)}      # files keep the exact name
    code, out, err = run_cli("plan", out_dir, "--bpw", "6")
    assert code == 0, err
    assert_terminal_safe(out + err)


def test_scan_keep_going_message_escapes_the_name(tmp_path):
    t = _tensors()
    t[HOSTILE][0, 0] = np.nan
    write_sharded(tmp_path / "ckpt", t, n_shards=1)
    code, out, err = run_cli("scan", tmp_path / "ckpt", "--schemes", "q8_0", "--keep-going", "--no-progress")
    assert code in (0, 1), err
    assert_terminal_safe(out + err)


def test_diff_prints_hostile_names_escaped(tmp_path):
    gguf = gguf_module()
    for fname, qt in (("a.gguf", None), ("b.gguf", gguf.GGMLQuantizationType.Q8_0)):
        w = gguf.GGUFWriter(str(tmp_path / fname), f"llama\x1b[1m\u202e")
        for name, a in _tensors().items():
            if qt is None:
                w.add_tensor(name, a)
            else:
                from gguf.quants import quantize
                w.add_tensor(name, quantize(a, qt), raw_dtype=qt)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    code, out, err = run_cli("diff", tmp_path / "a.gguf", tmp_path / "b.gguf")
    assert code == 0, err
    assert_terminal_safe(out + err)
    assert printable(HOSTILE) in out
    json.dumps(out)  # plain str
