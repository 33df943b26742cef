"""The command line as a user runs it: exit status 0 with a report, or 2 with one line and no traceback."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest

from quantcore.cli import main


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_example_s3_reports_the_collapsed_quiet_row():
    code, out, err = run("analyze", "--example", "s3")
    assert code == 0 and err == ""
    assert "collapsed to zero 4" in out          # seed 003: Row A's four weights all round to 0
    assert "0.442857/0" in out                   # shared scale 3.10 / 7


def test_json_output_carries_scales_metrics_and_channels():
    code, out, _ = run("analyze", "--example", "s1", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["scheme"]["granularity"] == "per-channel"
    assert [round(s, 8) for s in d["scale"]] == [0.00862745, 0.00666667, 0.01254902, 0.00411765]  # seed 001
    assert d["zero_point"] == [11, -8, -8, -19]
    assert d["channels"]["name"] == ["filter_0", "filter_1", "filter_2", "filter_3"]
    assert d["channels"]["ties"] == [0, 1, 0, 0]  # filter_1 sits on a rounding tie


def test_compare_prints_three_schemes_and_advice(tmp_path):
    x = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    x[0] *= 0.01
    np.save(tmp_path / "w.npy", x)
    code, out, _ = run("analyze", str(tmp_path / "w.npy"), "--compare", "--bits", "4", "--mapping", "symmetric",
                       "--group-size", "32")
    assert code == 0
    lines = out.strip().splitlines()
    assert [ln.split("  ")[0].strip() for ln in lines[1:4]] == [
        "int4 symmetric per-tensor", "int4 symmetric per-channel", "int4 symmetric per-group 32"]
    assert "cutting RMSE" in lines[-1] and "Pareto set" in lines[-1]


def test_save_writes_the_arrays(tmp_path):
    out_file = tmp_path / "out.npz"
    code, _, _ = run("analyze", "--example", "s3", "--granularity", "channel", "--save", str(out_file))
    assert code == 0
    with np.load(out_file) as z:
        assert z["q"].tolist()[0] == [2, -4, 6, -7]       # seed 003 per-channel codes of Row A
        assert z["scale"].shape == (2,)
        assert set(z.files) == {"q", "dequantized", "scale", "zero_point"}


@pytest.mark.parametrize("fmt", ["q4_0", "nvfp4"])
def test_fixed_formats_compare_against_integer_schemes(tmp_path, fmt):
    np.save(tmp_path / "w.npy", np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32))
    flag = "--preset" if fmt.startswith("q") else "--format"
    code, out, _ = run("analyze", str(tmp_path / "w.npy"), flag, fmt, "--compare", "--group-size", "32")
    assert code == 0
    assert ("Q4_0" if fmt == "q4_0" else "nvfp4") in out and "int4 symmetric per-channel" in out


@pytest.mark.parametrize("argv, needle", [
    (["analyze", "--example", "s0", "--bits", "40"], "bits must be between 2 and 16, got 40"),
    (["analyze", "--example", "s0", "--granularity", "group", "--group-size", "0"], "group size must be a positive integer"),
    (["analyze", "--example", "s0", "--granularity", "channel", "--axis", "5"], "channel axis 5 is out of range"),
    (["analyze"], "INPUT is required"),
    (["analyze", "--example", "s0", "--qmin", "3"], "--qmin and --qmax go together"),
    (["analyze", "--example", "s9"], "invalid choice"),
    (["analyze", "/no/such/file.npy"], "file.npy"),
])
def test_bad_options_exit_2_with_one_line(argv, needle):
    code, out, err = run(*argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err


def test_bad_text_names_line_and_column(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_text("1, 2, 3\n4, abc, 6\n")
    code, _, err = run("analyze", str(p))
    assert code == 2
    assert "line 2" in err and "column 4" in err and "'abc'" in err


def test_module_entry_point_runs_in_a_subprocess():
    proc = subprocess.run([sys.executable, "-m", "quantcore", "analyze", "--example", "s2"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "int8 symmetric per-tensor" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "quantcore", "analyze", "--bits", "1", "--example", "s2"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("quantcore: error:") and "Traceback" not in proc.stderr
