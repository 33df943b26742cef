"""Fixtures for the static-bundle tests: build once per session, serve over localhost."""
from __future__ import annotations

import functools
import http.server
import json
import threading

import pytest

from bundle_helpers import REPO, bundle_app, load_build_module, run_build, tree_digest


@pytest.fixture(scope="session")
def build_mod():
    return load_build_module()


@pytest.fixture(scope="session")
def built_site(tmp_path_factory):
    """Build the bundle once per session into a temp dir; returns a small record about it."""
    app = bundle_app()
    out = tmp_path_factory.mktemp("bundle") / "site"
    qc_before = tree_digest(REPO / "quantcore")
    elapsed, stdout = run_build(app, out)
    print(f"\n[bundle] built {app.name} in {elapsed:.1f} s -> {out}")
    info = json.loads((out / "build-info.json").read_text())
    return {"dir": out, "app": app, "name": app.stem, "info": info, "stdout": stdout,
            "seconds": elapsed, "quantcore_digest": qc_before}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def http_root(built_site, tmp_path_factory):
    """Serve a root that holds the bundle at /build/site/ (a sub-path) and the repo's docs/ at /docs/."""
    root = tmp_path_factory.mktemp("www")
    site = root / "build" / "site"
    site.mkdir(parents=True)
    for entry in built_site["dir"].iterdir():
        (site / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    if built_site["name"] != "app":  # docs/ embeds ../build/site/app.html; alias the fixture app's page
        (site / "app.html").symlink_to(built_site["dir"] / f"{built_site['name']}.html")
    (root / "docs").symlink_to(REPO / "docs", target_is_directory=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
