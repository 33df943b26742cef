"""Helpers shared by the static-bundle tests (imported by conftest.py and the test modules)."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "build" / "build_site.py"
FIXTURE_APP = Path(__file__).resolve().parent / "fixtures" / "mini_app.py"


def load_build_module():
    spec = importlib.util.spec_from_file_location("build_site", BUILD_SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["build_site"] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def bundle_app() -> Path:
    """The app the tests build: $QUANTCALC_BUILD_APP, else app.py, else the small fixture app."""
    if os.environ.get("QUANTCALC_BUILD_APP"):
        return Path(os.environ["QUANTCALC_BUILD_APP"]).resolve()
    return REPO / "app.py" if (REPO / "app.py").exists() else FIXTURE_APP


def tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*.py")):
        h.update(p.relative_to(folder).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def run_build(app: Path, out: Path) -> tuple[float, str]:
    cache = REPO / "build" / "cache"
    if shutil.which("npm") is None and not (cache / "pyodide-0.29.3.tgz").exists():
        pytest.skip("npm is not installed and build/cache has no Pyodide tarball: cannot fetch Pyodide's core")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(BUILD_SCRIPT), str(app), "--out", str(out), "--no-cdn-probe"],
                          capture_output=True, text=True, cwd=str(REPO))
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        pytest.fail(f"build of {app} failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return elapsed, proc.stdout
