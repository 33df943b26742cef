"""Session fixtures shared by tests/build and tests/app: the static page, built once, served on localhost."""
from __future__ import annotations

import json
import os

import pytest

from sitebuild import APP, REPO, real_runtime_skip_reason, run_build, serve_folder, tree_digest


CHROMIUM = "/usr/bin/chromium"
# Other hosts do not resolve: the static page must not need them (tests observe requests, they do not route
# them: Playwright's interception together with a service worker's Cache Storage crashes Chromium's renderer).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium through Playwright, one for the whole session (tests/app and tests/build)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _build(tmp_path_factory, label: str, *extra: str) -> dict:
    out = tmp_path_factory.mktemp(label) / "site"
    qc_before = tree_digest(REPO / "quantcore")
    elapsed, stdout = run_build(APP, out, *extra)
    print(f"\n[bundle] built {APP.name} ({label}) in {elapsed:.1f} s -> {out}")
    info = json.loads((out / "build-info.json").read_text())
    return {"dir": out, "app": APP, "name": APP.stem, "info": info, "stdout": stdout, "seconds": elapsed,
            "quantcore_digest": qc_before}


@pytest.fixture(scope="session")
def built_site(tmp_path_factory):
    """The bundle as `scripts/serve.sh` builds it here (official Pyodide packages vendored when present)."""
    return _build(tmp_path_factory, "bundle")


@pytest.fixture(scope="session")
def cdn_only_site(tmp_path_factory, built_site):
    """A bundle built without any local Pyodide packages: the compiled ones stay on the Pyodide CDN."""
    if built_site["info"]["cdn_only_packages"]:
        return built_site
    empty = tmp_path_factory.mktemp("no-packages")
    return _build(tmp_path_factory, "cdn-only", "--pyodide-packages", str(empty))


@pytest.fixture(scope="session")
def computing_site(built_site):
    """The bundle with every start-up package vendored: the page computes in the browser, offline."""
    reason = real_runtime_skip_reason()
    if reason is None and built_site["info"]["cdn_only_packages"]:
        reason = f"the build left {built_site['info']['cdn_only_packages']} to the CDN"
    if reason:
        pytest.skip(reason)
    return built_site


def _www(tmp_path_factory, site: dict, label: str) -> str:
    """A web root holding the bundle at /build/site/ (a sub-path) and the repo's docs/ at /docs/."""
    root = tmp_path_factory.mktemp(label)
    target = root / "build" / "site"
    target.mkdir(parents=True)
    for entry in site["dir"].iterdir():
        (target / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    (root / "docs").symlink_to(REPO / "docs", target_is_directory=True)
    url, server = serve_folder(root)
    site["server"] = server
    return url


@pytest.fixture(scope="session")
def http_root(built_site, tmp_path_factory):
    yield _www(tmp_path_factory, built_site, "www")
    built_site["server"].shutdown()


@pytest.fixture(scope="session")
def cdn_only_root(cdn_only_site, built_site, http_root, tmp_path_factory):
    if cdn_only_site is built_site:
        yield http_root
        return
    yield _www(tmp_path_factory, cdn_only_site, "www-cdn-only")
    cdn_only_site["server"].shutdown()
