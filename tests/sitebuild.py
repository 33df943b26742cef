"""Building and serving the static page for the tests (tests/build and tests/app both use it).

The real runtime needs the official Pyodide 0.29.3 package files (numpy, nh3, ... compiled for WebAssembly):
a folder named by $QUANTCALC_PYODIDE_PACKAGES, else ~/.cache/quantcalc/pyodide-0.29.3 (README: "The static
bundle"). Without it the page can only be built with those packages left to the Pyodide CDN, and the tests
that need the computation in the browser skip and say why.
"""
from __future__ import annotations

import functools
import hashlib
import http.server
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "build" / "build_site.py"
APP = REPO / "app.py"
STARTUP_COMPILED = ("numpy", "nh3", "markupsafe", "pyyaml")


def load_build_module():
    spec = importlib.util.spec_from_file_location("build_site", BUILD_SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["build_site"] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def packages_dir() -> Path | None:
    """The folder of official Pyodide packages the build would use, or None."""
    return load_build_module().default_packages_dir()


def real_runtime_skip_reason() -> str | None:
    folder = packages_dir()
    if folder is None:
        return ("no folder of official Pyodide 0.29.3 packages ($QUANTCALC_PYODIDE_PACKAGES or "
                "~/.cache/quantcalc/pyodide-0.29.3; see README 'The static bundle'): the page cannot compute here")
    missing = [p for p in STARTUP_COMPILED if not list(folder.glob(f"{p}-*.whl"))]
    if missing:
        return f"{folder} lacks {', '.join(missing)}: the page cannot compute here"
    return None


def tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*.py")):
        h.update(p.relative_to(folder).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def run_build(app: Path, out: Path, *extra: str) -> tuple[float, str]:
    cache = REPO / "build" / "cache"
    if shutil.which("npm") is None and not (cache / "pyodide-0.29.3.tgz").exists():
        pytest.skip("npm is not installed and build/cache has no Pyodide tarball: cannot fetch Pyodide's core")
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the build precompiles Python bytecode with Pyodide under Node.js")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(BUILD_SCRIPT), str(app), "--out", str(out), "--no-cdn-probe",
                           *extra], capture_output=True, text=True, cwd=str(REPO))
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        pytest.fail(f"build of {app} failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return elapsed, proc.stdout


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    """Static files, as `python -m http.server` serves them; every full response is logged as (path, bytes)."""

    def log_message(self, *args):
        pass

    def copyfile(self, source, outputfile):
        n = 0
        while chunk := source.read(1 << 16):
            outputfile.write(chunk)
            n += len(chunk)
        self.server.log.append((urllib.parse.unquote(urllib.parse.urlparse(self.path).path), n))


def serve_folder(root: Path):
    """A threaded localhost server for ``root``; returns (base URL, server); ``server.log`` lists responses."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(CountingHandler, directory=str(root)))
    server.log = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


def worker_log(page) -> list[dict]:
    return page.evaluate("window.quantcalcWorkerLog || []")


def wait_for_stage(page, stages: set[str], timeout_s: float = 120.0) -> list[dict]:
    """Poll the page's worker log until one of ``stages`` appears (an error stage fails at once)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        log = worker_log(page)
        if any(e.get("stage") in stages for e in log):
            return log
        errors = [e for e in log if e.get("type") == "error" and e.get("stage") not in stages]
        if errors:
            raise AssertionError(f"the page's worker failed: {errors}")
        page.wait_for_timeout(100)
    raise AssertionError(f"no worker stage in {stages} within {timeout_s} s; log: {worker_log(page)}")


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")
