"""Fixtures for the browser tests: `panel serve app.py` on a free localhost port, Debian's Chromium via
Playwright, and axe-core from npm (packed into tests/artifacts/npm, which git ignores)."""
from __future__ import annotations

import re
import socket
import subprocess
import sys
import tarfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from page_helpers import ARTIFACTS, is_static

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session", params=["native", "worker"])
def app_url(request):
    """The calculator's URL in each runtime it ships in: ``native`` (`panel serve app.py`) and ``worker`` (the
    static page, every computation in the Pyodide worker; skipped with the reason where the official Pyodide
    packages are absent). Every browser test runs against both: what works natively must work in the page."""
    if request.param == "worker":
        request.getfixturevalue("computing_site")
        return request.getfixturevalue("http_root") + "/build/site/app.html"
    return request.getfixturevalue("native_url")


@pytest.fixture(scope="session")
def native_url():
    """Serve app.py exactly as a user would and yield its URL; the server is stopped afterwards."""
    port = _free_port()
    panel = Path(sys.executable).with_name("panel")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = open(ARTIFACTS / "panel_serve.log", "w")
    proc = subprocess.Popen(
        [str(panel), "serve", "app.py", "--port", str(port), "--address", "127.0.0.1",
         f"--allow-websocket-origin=127.0.0.1:{port}"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/app"
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"panel serve did not start; see {ARTIFACTS / 'panel_serve.log'}")
        time.sleep(0.3)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d ", re.M)   # panel serve's log lines start with a timestamp
CLIENT_GONE = ("WebSocketClosedError", "StreamClosedError")


def server_errors(logged: str) -> list[str]:
    """Log records (a timestamped line and its continuation lines) that report an error or a traceback,
    except tornado's report of a page that closed its websocket while the server was still writing (the
    test's page went away; nothing in the app failed)."""
    starts = [m.start() for m in LOG_RECORD.finditer(logged)] or [0]
    records = [logged[a:b] for a, b in zip([0] + starts, starts + [len(logged)]) if logged[a:b].strip()]
    return [r.strip() for r in records if re.search(r"Traceback|\w+Error\b|ERROR", r)
            and not any(gone in r for gone in CLIENT_GONE)]


@pytest.fixture(scope="session")
def worker_context(browser):
    """One browser context for every static-page test: its service worker and caches stay warm, as for a user
    who comes back (the first visit is the cold one; tests/build measures cold and offline visits). Each test
    still opens its own page, so every test starts the Python worker afresh."""
    ctx = browser.new_context(viewport={"width": 1500, "height": 1100}, accept_downloads=True)
    ctx.qc_foreign = []
    ctx.on("request", lambda r: ctx.qc_foreign.append(r.url)
           if urllib.parse.urlparse(r.url).hostname not in ("127.0.0.1", None, "")
           and not r.url.startswith(("data:", "blob:")) else None)
    yield ctx
    ctx.close()


@pytest.fixture
def page(request, browser, app_url):
    """A fresh page; records dialogs (none may open) and page errors (none may happen).

    In the static page every request may only go to localhost, and any console error (the Python worker's
    included) fails the test: no traceback, no page error, no console error.
    """
    static = is_static(app_url)
    if static:
        # other hosts do not resolve (CHROMIUM_ARGS); requests are observed, not routed (Playwright's
        # interception together with the service worker's Cache Storage crashes Chromium's renderer)
        ctx = request.getfixturevalue("worker_context")
        ctx.qc_foreign.clear()
    else:
        ctx = browser.new_context(viewport={"width": 1500, "height": 1100}, accept_downloads=True)
    pg = ctx.new_page()
    pg.dialogs = []
    pg.errors = []

    def on_dialog(d):
        pg.dialogs.append(d.message)
        d.dismiss()

    pg.on("dialog", on_dialog)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" and (static or "Error rendering" in m.text)
          else None)
    server_log = ARTIFACTS / "panel_serve.log"
    log_start = server_log.stat().st_size if not static and server_log.exists() else 0
    yield pg
    if static:
        pg.close()
    else:
        ctx.close()
    if not static and server_log.exists():
        # The server must not log a traceback for anything a page did (e.g. a callback outside Bokeh's document
        # lock: "RuntimeError: _pending_writes should be non-None", issue 12).
        with open(server_log, "rb") as f:
            f.seek(log_start)
            logged = f.read().decode("utf-8", "replace")
        bad = server_errors(logged)
        assert not bad, f"panel serve logged errors during the test: {bad[:3]}"
    if static:
        assert not pg.errors, f"errors in the static page: {pg.errors[:5]}"
        assert not ctx.qc_foreign, f"the static page asked other hosts: {ctx.qc_foreign[:5]}"


@pytest.fixture(scope="session")
def axe_js() -> Path:
    """axe-core's axe.min.js from the npm registry (`npm pack`), cached under tests/artifacts/npm."""
    cache = ARTIFACTS / "npm"
    js = cache / "package" / "axe.min.js"
    if not js.exists():
        cache.mkdir(parents=True, exist_ok=True)
        try:
            out = subprocess.run(["npm", "pack", "axe-core", "--silent"], cwd=cache, capture_output=True,
                                 text=True, timeout=180)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"npm could not fetch axe-core: {exc}")
        tgz = [f for f in cache.glob("axe-core-*.tgz")]
        if out.returncode != 0 or not tgz:
            pytest.skip(f"npm pack axe-core failed: {out.stderr.strip()[:200]}")
        with tarfile.open(tgz[0]) as tf:
            tf.extractall(cache, filter="data")
    return js
