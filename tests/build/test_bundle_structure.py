"""Structure of the static bundle (build/build_site.py): relative URLs, files present, hashes, lock, PWA."""
from __future__ import annotations

import base64
import hashlib
import json
import re
import tarfile
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bundle_helpers import REPO, run_build, tree_digest

ABS_URL = re.compile(r"(?:https?:)?//[A-Za-z0-9][A-Za-z0-9.-]*\.[A-Za-z]{2,}[^\s\"'<>\\)]*")
NEVER_INSTALLED = ("pandas", "pillow", "nh3", "contourpy", "narwhals", "requests", "xyzservices",
                   "panel-material-ui", "micropip", "tornado")


class _Refs(HTMLParser):
    """Collect the URLs a page loads (script src, link href, img src, iframe src) and its <a href> links."""

    def __init__(self):
        super().__init__()
        self.loads: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "img", "iframe", "source") and a.get("src"):
            self.loads.append(a["src"])
        elif tag == "link" and a.get("href"):
            self.loads.append(a["href"])
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])


def refs(html: str) -> _Refs:
    p = _Refs()
    p.feed(html)
    return p


def own_text_files(site: Path, name: str) -> dict[str, str]:
    """The files this project writes (not vendored third-party code)."""
    files = [f"{name}.html", f"{name}.js", "index.html", "serviceWorker.js", "site.webmanifest",
             "build-info.json", "pyodide/pyodide-lock.json"]
    return {f: (site / f).read_text(encoding="utf-8") for f in files}


def allowed_cdn_urls(info: dict) -> set[str]:
    return {info["pyodide_cdn"], *info["cdn_only_files"].values()}


def test_every_url_is_relative_or_a_named_cdn_only_package(built_site):
    site, info = built_site["dir"], built_site["info"]
    allowed = allowed_cdn_urls(info)
    for fname, text in own_text_files(site, built_site["name"]).items():
        # Hyperlinks a user clicks (<a href> in the app's own text) are not assets the bundle loads.
        clickable = set(re.findall(r"<a\s[^>]*?href=\\?[\"']([^\"'\\]+)", text))
        for url in ABS_URL.findall(text):
            if url in clickable or url.rstrip(".,;") in clickable:
                continue
            assert url in allowed, f"{fname}: absolute URL {url!r} is neither relative nor a CDN-only package"
    assert set(info["cdn_only_files"]) == set(info["cdn_only_packages"])
    for pkg, url in info["cdn_only_files"].items():
        assert url.startswith(info["pyodide_cdn"]) and url.endswith(".whl"), (pkg, url)


def test_every_file_the_page_references_exists(built_site):
    site, name = built_site["dir"], built_site["name"]
    html = (site / f"{name}.html").read_text(encoding="utf-8")
    found = refs(html).loads
    # Panel's stylesheets are also referenced from inside the pre-rendered document JSON.
    found += re.findall(r"\./panel/[0-9][^\"'\s\\]+", html)
    worker = (site / f"{name}.js").read_text(encoding="utf-8")
    found += re.findall(r'importScripts\("([^"]+)"\)', worker)
    found += re.findall(r'new Worker\("([^"]+)"\)', html)
    manifest = json.loads((site / "site.webmanifest").read_text())
    found += [icon["src"] for icon in manifest["icons"]] + [manifest["start_url"]]
    found += refs((site / "index.html").read_text()).loads
    assert len(found) > 10, found
    for ref in found:
        if ref.startswith("data:"):
            continue
        assert not ref.startswith(("/", "http:", "https:")), f"non-relative reference {ref!r}"
        path = (site / ref.split("?")[0].split("#")[0]).resolve()
        assert path.is_file(), f"{ref!r} is referenced but {path} does not exist"
        assert site.resolve() in path.parents, f"{ref!r} points outside the bundle"
    # CSS url(...) references inside vendored Panel CSS
    for css in (site / "panel").rglob("*.css"):
        for u in re.findall(r"url\(\s*['\"]?([^'\")]+)['\"]?\s*\)", css.read_text(errors="replace")):
            if u.startswith(("data:", "#")):
                continue
            assert not u.startswith(("http:", "https:", "//", "/")), f"{css}: absolute url({u})"
            assert (css.parent / u.split("?")[0].split("#")[0]).is_file(), f"{css}: url({u}) missing"


def test_sha256sums_cover_every_file_and_match(built_site):
    site = built_site["dir"]
    lines = (site / "SHA256SUMS").read_text().splitlines()
    listed = {}
    for line in lines:
        digest, rel = line.split("  ", 1)
        listed[rel] = digest
    files = {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()}
    assert set(listed) == files - {"SHA256SUMS", "size-report.txt"}
    for rel, digest in listed.items():
        assert hashlib.sha256((site / rel).read_bytes()).hexdigest() == digest, f"{rel}: sha256 mismatch"


def test_service_worker_precaches_every_asset(built_site, build_mod):
    site = built_site["dir"]
    sw = (site / "serviceWorker.js").read_text()
    precache = json.loads(re.search(r"const PRECACHE = (\[.*?\]);", sw, re.S).group(1))
    files = {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()}
    assert {u.removeprefix("./") for u in precache} == files - set(build_mod.NOT_PRECACHED)
    assert all(u.startswith("./") for u in precache)
    assert "__CACHE_VERSION__" not in sw and re.search(r"quantcalc-\$\{self.registration.scope\}-", sw)
    manifest = json.loads((site / "site.webmanifest").read_text())
    assert manifest["scope"] == "./" and manifest["start_url"] == f"./{built_site['name']}.html"
    html = (site / f"{built_site['name']}.html").read_text()
    assert "register('./serviceWorker.js')" in html and '<link rel="manifest" href="./site.webmanifest">' in html


def closure(lock: dict, names: list[str]) -> set[str]:
    seen, todo = set(), list(names)
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        assert n in lock["packages"], f"the worker installs {n!r} but pyodide-lock.json has no entry for it"
        seen.add(n)
        todo += lock["packages"][n]["depends"]
    return seen


def test_lock_resolves_every_package_the_worker_installs(built_site):
    site, info, name = built_site["dir"], built_site["info"], built_site["name"]
    lock = json.loads((site / "pyodide" / "pyodide-lock.json").read_text())
    worker = (site / f"{name}.js").read_text()
    config = json.loads(re.search(r"const BUILD = (\{.*?\n\});", worker, re.S).group(1))
    assert config["startup_packages"] == info["startup_packages"]
    startup = closure(lock, config["startup_packages"])
    assert startup == set(info["startup_packages"]), "startup list is not closed under the lock's depends"
    everything = closure(lock, info["startup_packages"] + info["on_demand_packages"])
    assert everything == set(lock["packages"]), "lock carries packages nobody installs"
    for pkg in ("numpy", "panel", "bokeh", "param", "quantcore", "pyodide-http"):
        assert pkg in startup
    for pkg in NEVER_INSTALLED:
        assert pkg not in startup, f"{pkg} would be installed at startup"
    assert "pandas" not in lock["packages"]
    for key, entry in lock["packages"].items():
        fname = entry["file_name"]
        if key in info["cdn_only_packages"]:
            assert fname == info["cdn_only_files"][key]
            assert re.fullmatch(r"[a-z0-9_]+-[^/]+-cp313-cp313-pyodide_2025_0_wasm32\.whl", fname.rsplit("/", 1)[1])
            continue
        assert "/" not in fname and fname.endswith(".whl"), f"{key}: {fname}"
        data = (site / "pyodide" / fname).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], f"{key}: sha256 in lock != file"
        assert fname.endswith("-none-any.whl"), f"{key}: {fname} is not a pure-Python wheel"
        with zipfile.ZipFile(site / "pyodide" / fname) as z:
            tops = {n.split("/")[0] for n in z.namelist() if "/" in n}
        assert set(entry["imports"]) <= tops | {n[:-3] for n in z.namelist() if "/" not in n}
    # Worker loads packages from the lock (deps=False semantics: only the lock's own "depends").
    assert "micropip" not in worker and "loadPackage(BUILD.startup_packages" in worker


def test_pyodide_core_is_the_npm_package_verified(built_site, build_mod):
    tgz = REPO / "build" / "cache" / f"pyodide-{build_mod.PYODIDE_VERSION}.tgz"
    algo, want = build_mod.PYODIDE_NPM_INTEGRITY.split("-", 1)
    assert base64.b64encode(hashlib.new(algo, tgz.read_bytes()).digest()).decode() == want
    with tarfile.open(tgz) as tar:
        for f in build_mod.PYODIDE_CORE_FILES:
            member = tar.extractfile(f"package/{f}").read()
            assert member == (built_site["dir"] / "pyodide" / f).read_bytes(), f"{f} differs from npm"


def test_bokeh_and_panel_wheels_are_slimmed_and_consistent(built_site):
    pyo = built_site["dir"] / "pyodide"
    (bokeh,) = pyo.glob("bokeh-*.whl")
    (panel,) = pyo.glob("panel-*.whl")
    for wheel, forbidden in ((bokeh, r"(\.js|\.d\.ts|\.tsbuildinfo|/bokeh\.json)$"),
                             (panel, r"^panel/dist/(bundled|lib|dts)/|^panel/dist/panel\.(js|min\.js|json)$")):
        with zipfile.ZipFile(wheel) as z:
            names = set(z.namelist())
            assert not [n for n in names if re.search(forbidden, n)], f"{wheel.name} still carries stripped files"
            record = next(n for n in names if n.endswith(".dist-info/RECORD"))
            listed = {line.split(",")[0] for line in z.read(record).decode().splitlines() if line}
            assert listed == names, f"{wheel.name}: RECORD and members differ by {listed ^ names}"
            assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in z.infolist())
    assert bokeh.stat().st_size < 2_000_000 and panel.stat().st_size < 3_000_000


def test_size_report_lists_every_file_with_raw_and_gzip_bytes(built_site):
    site = built_site["dir"]
    lines = (site / "size-report.txt").read_text().splitlines()
    rows = [re.match(r"^(\S+)\s+([\d,]+)\s+([\d,]+)$", l) for l in lines[1:-1]]
    assert all(rows), "malformed size report row"
    files = {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()} - {"size-report.txt"}
    assert {m.group(1) for m in rows} == files
    for m in rows:
        assert int(m.group(2).replace(",", "")) == (site / m.group(1)).stat().st_size
    total = re.match(r"^TOTAL \((\d+) files\)\s+([\d,]+)\s+([\d,]+)$", lines[-1])
    assert total and int(total.group(1)) == len(rows)
    assert int(total.group(2).replace(",", "")) == sum(int(m.group(2).replace(",", "")) for m in rows)
    raw, gz = int(total.group(2).replace(",", "")), int(total.group(3).replace(",", ""))
    print(f"\n[bundle] {len(rows)} files, {raw:,} bytes raw, {gz:,} bytes gzip -9, built in {built_site['seconds']:.1f} s")
    assert 0 < gz < raw


def test_build_reports_packages_that_still_need_the_network(built_site):
    info, out = built_site["info"], built_site["stdout"]
    for pkg in info["cdn_only_packages"]:
        assert pkg in out.split("STILL NEED THE NETWORK", 1)[1].splitlines()[0]
    assert set(info["cdn_only_packages"]) <= {"numpy", "markupsafe", "pyyaml", "pillow"}


@pytest.mark.slow
def test_rebuild_with_the_same_inputs_gives_identical_files(built_site, tmp_path):
    second = tmp_path / "site"
    run_build(built_site["app"], second)
    a = dict(l.split("  ", 1)[::-1] for l in (built_site["dir"] / "SHA256SUMS").read_text().splitlines())
    b = dict(l.split("  ", 1)[::-1] for l in (second / "SHA256SUMS").read_text().splitlines())
    assert set(a) == set(b)
    changed = {f for f in a if a[f] != b[f]}
    if tree_digest(REPO / "quantcore") != built_site["quantcore_digest"]:
        # quantcore/ was edited between the two builds: its wheel (and the files naming its hash) may differ.
        changed -= {f for f in changed if f.startswith("pyodide/quantcore-")}
        changed -= {"pyodide/pyodide-lock.json", "serviceWorker.js"}
    assert not changed, f"rebuild changed {sorted(changed)}"
    assert (built_site["dir"] / "size-report.txt").read_bytes() == (second / "size-report.txt").read_bytes() \
        or tree_digest(REPO / "quantcore") != built_site["quantcore_digest"]


def test_deterministic_zip_depends_only_on_entries(build_mod, tmp_path):
    entries = {"b/x.py": b"print(1)\n", "a.py": b"", "pkg-1.0.dist-info/RECORD": b"a.py,,\n"}
    build_mod.write_zip(tmp_path / "1.zip", entries)
    build_mod.write_zip(tmp_path / "2.zip", dict(reversed(list(entries.items()))))
    assert (tmp_path / "1.zip").read_bytes() == (tmp_path / "2.zip").read_bytes()


def test_app_import_check_names_the_line(build_mod, tmp_path):
    app = tmp_path / "bad_app.py"
    app.write_text("import numpy as np\nimport panel as pn\n\nimport pandas as pd\nfrom fpdf import FPDF\n")
    pkgs = [build_mod.Package("numpy", "2", "x.whl", "0", ["numpy"]),
            build_mod.Package("panel", "1", "y.whl", "0", ["panel"]),
            build_mod.Package("fpdf2", "2", "z.whl", "0", ["fpdf"], on_demand=True)]
    with pytest.raises(SystemExit) as err:
        build_mod.check_app_imports(app, pkgs)
    msg = str(err.value)
    assert "bad_app.py:4: import pandas is not provided" in msg
    assert "bad_app.py:5: import fpdf is an on-demand package (fpdf2)" in msg
    app.write_text("import json\nimport numpy\n\ndef later():\n    import fpdf\n")
    build_mod.check_app_imports(app, pkgs)  # function-level imports are the app's business
