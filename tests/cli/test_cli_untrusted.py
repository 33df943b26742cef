"""Untrusted text on the terminal (issue 12, item 10): tensor names, channel labels and file names reach the
CLI's text output only through quantcore.io.printable -- no raw ESC (ANSI sequences), C1 control, bidi
override/isolate/mark or other format character is ever printed, ordinary letters of every script are kept,
and --json output carries the exact names (JSON escapes them itself)."""
from __future__ import annotations

import io
import json
import struct
import unicodedata

import numpy as np
import pytest

from quantcore.cli import main
from quantcore.io import printable

# ANSI "clear screen" + red, RIGHT-TO-LEFT OVERRIDE, LEFT-TO-RIGHT ISOLATE, ZERO WIDTH SPACE, NEL, LINE SEPARATOR
HOSTILE = "w\x1b[2J\x1b[31m\u202eevil\u2066x\u200b\x85\u2028end"
LETTERS = "naïve_日本_Ωμέγα_עברית"


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def assert_terminal_safe(text: str) -> None:
    """Nothing that moves the cursor, recolours, reorders or hides text: only printable characters, spaces
    and line breaks."""
    bad = [c for c in text if c != "\n" and not c.isprintable() and unicodedata.category(c) != "Zs"]
    assert not bad, f"raw {[f'U+{ord(c):04X}' for c in bad]} in {text!r}"


def safetensors_file(path, tensors: dict[str, np.ndarray]) -> None:
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        raw = a.astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


@pytest.fixture
def hostile_file(tmp_path):
    p = tmp_path / "m.safetensors"
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    safetensors_file(p, {HOSTILE: x, LETTERS: x})
    return p


def test_printable_escapes_controls_bidi_and_format_characters_and_keeps_letters():
    assert printable(HOSTILE) == "w\\u001b[2J\\u001b[31m\\u202eevil\\u2066x\\u200b\\u0085\\u2028end"
    assert printable(LETTERS) == LETTERS
    assert printable("a\u00a0b c\u2009d") == "a\u00a0b c\u2009d"      # spaces stay spaces
    assert printable("\U000e0041") == "\\U000e0041"                    # TAG LATIN CAPITAL LETTER A (Cf)
    assert printable("x\ud800") == "x\\ud800"                          # a lone surrogate


def test_list_prints_hostile_tensor_names_escaped(hostile_file):
    code, out, err = run("list", hostile_file)
    assert code == 0 and err == ""
    assert_terminal_safe(out)
    assert printable(HOSTILE) in out and LETTERS in out


def test_analyze_header_line_and_table_are_escaped(hostile_file):
    code, out, err = run("analyze", hostile_file, "--tensor", HOSTILE)
    assert code == 0 and err == ""
    assert_terminal_safe(out)
    assert out.startswith(printable(HOSTILE) + ": ")


def test_channel_labels_from_text_are_escaped_in_the_table(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text(f"\u202eevil\u202c: 1 2 3\n{LETTERS}: 4 5 6\n", encoding="utf-8")
    code, out, _ = run("analyze", p)
    assert code == 0
    assert_terminal_safe(out)
    assert "\\u202eevil\\u202c" in out and LETTERS in out
    code, out, _ = run("analyze", p, "--compare")
    assert code == 0
    assert_terminal_safe(out)


def test_json_output_keeps_the_exact_names(hostile_file):
    code, out, _ = run("analyze", hostile_file, "--tensor", HOSTILE, "--json")
    assert code == 0
    assert_terminal_safe(out)        # json.dumps escapes every non-ASCII character
    p = hostile_file.parent / "t.txt"
    p.write_text(f"\u202eevil\u202c: 1 2 3\n{LETTERS}: 4 5 6\n", encoding="utf-8")
    code, out, _ = run("analyze", p, "--json")
    assert json.loads(out)["channels"]["name"] == ["\u202eevil\u202c", LETTERS]


def test_error_messages_escape_file_names_and_tensor_names(hostile_file, tmp_path):
    code, out, err = run("analyze", hostile_file)        # two tensors: the message lists their names
    assert code == 2 and out == ""
    assert_terminal_safe(err)
    assert err.count("\n") == 1 and "choose one by name" in err
    bad = tmp_path / f"bad{HOSTILE}.txt"
    bad.write_text("1 2 x\n", encoding="utf-8")
    code, _, err = run("analyze", bad)
    assert code == 2
    assert_terminal_safe(err)
    assert printable(HOSTILE) in err and "'x' is not a number" in err
    code, _, err = run("analyze", "--example", "s0", "--tensor", HOSTILE, "--granularity", HOSTILE)
    assert code == 2
    assert_terminal_safe(err)
