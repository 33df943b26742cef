"""Extreme magnitudes through the command line: every mapping x convention x granularity and every --format.

Inputs are .npy files holding ±1e38, ±3.4e38 (float32's edge), ±1.7e308 (float64), 1e-45 (the smallest
float32 subnormal), a mix of them with ordinary values, and ordinary values with one -3.4e38. Each run must either succeed (exit 0, nothing
on stderr, no Python warning, every reported metric, scale, zero-point and dequantized value finite; SQNR
may be +inf only where the error is exactly zero) or refuse (exit 2, one line on stderr that says where:
a block, channel or index). Never NaN or inf reported as a success. Option combinations QuantSpec itself
rejects (affine_float under the onnx and matmulnbits conventions) must give that one-line message. GGUF
--preset formats are covered elsewhere.
"""
from __future__ import annotations

import io
import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

from quantcore.cli import main
from quantcore.conventions import CONVENTIONS
from quantcore.presets import preset_names
from quantcore.spec import QuantSpec

RNG = np.random.default_rng(0)
SIGNS = np.sign(RNG.standard_normal((4, 64)))
SIGNS[SIGNS == 0] = 1


def _mixed() -> np.ndarray:
    x = RNG.standard_normal((4, 64))
    x[0, :3] = [1e38, -3.4e38, 1e-45]
    x[1, :2] = [1e-30, -1e-40]
    x[2, 5] = 3.4e38
    return x.astype(np.float32)


def _one_huge() -> np.ndarray:
    """Ordinary values and a single -3.4e38 (NF4 double quantization's 2 * amax overflows here)."""
    x = RNG.standard_normal((4, 64))
    x[0, 1] = -3.4e38
    return x.astype(np.float32)


INPUTS = {
    "pm1e38": (SIGNS * 1e38).astype(np.float32),
    "pm3.4e38": (SIGNS * 3.4e38).astype(np.float32),
    "pm1.7e308": SIGNS * 1.7e308,
    "1e-45": np.full((4, 64), 1e-45, np.float32),
    "mixed": _mixed(),
    "one-huge": _one_huge(),
}
GRANULARITIES = ("tensor", "channel", "group")
MAPPINGS = ("symmetric", "affine", "affine_float")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("extremes")
    out = {}
    for name, x in INPUTS.items():
        out[name] = d / f"{name}.npy"
        np.save(out[name], x)
    return out


def run_cli(*argv: str) -> tuple[int, str, str, list]:
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue(), caught


def _finite_or_exact(table: dict, what: str) -> None:
    """Per-row metric columns: finite, except SQNR = +inf where that row's error is exactly zero."""
    for key in ("mse", "rmse", "mae", "max_abs"):
        vals = [float(v) for v in table[key]]
        assert all(math.isfinite(v) for v in vals), f"{what}: {key} = {vals}"
    for sq, mse in zip(table["sqnr_db"], table["mse"]):
        sq = float(sq)
        assert math.isfinite(sq) or (sq == math.inf and float(mse) == 0.0), f"{what}: sqnr {sq} with mse {mse}"


def option_error(mapping: str, convention: str) -> str | None:
    """The message QuantSpec gives for an option combination it rejects, else None."""
    try:
        QuantSpec(mapping=mapping, convention=convention)
    except ValueError as e:
        return str(e)
    return None


def check_outcome(what: str, code: int, out: str, err: str, caught: list, saved, rejected: str | None = None) -> str:
    assert not caught, f"{what}: warnings {[str(w.message) for w in caught]}"
    if rejected is not None:
        assert (code, out, err) == (2, "", f"quantcore: error: {rejected}\n"), f"{what}: {err!r}"
        return "rejected option"
    if code == 2:
        assert out == "" and err.count("\n") == 1 and err.startswith("quantcore: error:"), f"{what}: {err!r}"
        assert any(w in err for w in ("block", "channel", "index", "the tensor")), f"{what}: says not where: {err!r}"
        return "refused"
    assert code == 0 and err == "", f"{what}: exit {code}, stderr {err!r}"
    d = json.loads(out)
    m = d["metrics"]
    _finite_or_exact({k: [m[k]] for k in ("mse", "rmse", "mae", "max_abs", "sqnr_db")}, what)
    _finite_or_exact(d["channels"], what + " per channel")
    with np.load(saved) as z:
        for k in ("dequantized", "scale", "zero_point"):
            assert np.isfinite(z[k]).all(), f"{what}: {k} has non-finite values"
    return "ok"


@pytest.mark.parametrize("name", list(INPUTS))
@pytest.mark.parametrize("convention", list(CONVENTIONS))
def test_integer_schemes_on_extremes(files, tmp_path, name, convention):
    outcomes = {}
    for mapping in MAPPINGS:
        for gran in GRANULARITIES:
            saved = tmp_path / "out.npz"
            code, out, err, caught = run_cli("analyze", str(files[name]), "--mapping", mapping, "--convention",
                                             convention, "--granularity", gran, "--group-size", "32", "--json",
                                             "--save", str(saved))
            what = f"{name} {mapping} {convention} {gran}"
            outcomes[what] = check_outcome(what, code, out, err, caught, saved, option_error(mapping, convention))
    print(outcomes)


@pytest.mark.parametrize("name", list(INPUTS))
@pytest.mark.parametrize("method", ["mse", "percentile", "kl"])
def test_range_methods_on_extremes(files, tmp_path, name, method):
    """The search-based ranges too: an MSE candidate whose scale or x_hat overflows is skipped, not fatal."""
    for convention in CONVENTIONS:
        for mapping in ("symmetric", "affine"):
            for gran in ("tensor", "group"):
                saved = tmp_path / "out.npz"
                code, out, err, caught = run_cli("analyze", str(files[name]), "--mapping", mapping, "--convention",
                                                 convention, "--granularity", gran, "--range", method,
                                                 "--group-size", "32", "--json", "--save", str(saved))
                check_outcome(f"{name} {mapping} {convention} {gran} --range {method}", code, out, err, caught, saved,
                              option_error(mapping, convention))


@pytest.mark.parametrize("name", list(INPUTS))
@pytest.mark.parametrize("fmt", preset_names("float"))
def test_float_formats_on_extremes(files, tmp_path, name, fmt):
    saved = tmp_path / "out.npz"
    code, out, err, caught = run_cli("analyze", str(files[name]), "--format", fmt, "--json", "--save", str(saved))
    print(name, fmt, check_outcome(f"{name} --format {fmt}", code, out, err, caught, saved))


def test_terminal_stays_clean_in_a_subprocess(files):
    """The same as a user sees it: nvfp4 on ±1.7e308 prints exactly one line and no numpy warning."""
    proc = subprocess.run([sys.executable, "-m", "quantcore", "analyze", str(files["pm1.7e308"]), "--format", "nvfp4"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("quantcore: error:"), proc.stderr
