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

from sitebuild import REPO, load_build_module, run_build, tree_digest

ABS_URL = re.compile(r"(?:https?:)?//[A-Za-z0-9][A-Za-z0-9.-]*\.[A-Za-z]{2,}[^\s\"'<>\\)]*")
NEVER_INSTALLED = ("pandas", "pillow", "contourpy", "narwhals", "requests", "xyzservices",
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


def worker_config(site: Path, name: str) -> dict:
    worker = (site / f"{name}.js").read_text()
    return json.loads(re.search(r"const BUILD = (\{.*?\n\});", worker, re.S).group(1))


def test_service_worker_caches_exactly_the_site_files_under_the_workers_cache_name(built_site, build_mod):
    site, name = built_site["dir"], built_site["name"]
    sw = (site / "serviceWorker.js").read_text()
    listed = json.loads(re.search(r"const SITE_FILES = (\[.*?\]);", sw, re.S).group(1))
    remote = json.loads(re.search(r"const REMOTE_FILES = (\[.*?\]);", sw, re.S).group(1))
    files = {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()}
    assert set(listed) == files - set(build_mod.NOT_PRECACHED)
    assert set(remote) == set(built_site["info"]["cdn_only_files"].values())
    assert "__" not in re.sub(r"__[a-z]+__", "", sw.split("const SCOPE")[0]), "an unfilled placeholder"
    # the Python worker writes into the very cache the service worker reads
    version = re.search(r"const CACHE = `\$\{CACHE_PREFIX\}([0-9a-f]{16})`;", sw).group(1)
    assert worker_config(site, name)["cache_version"] == version
    assert re.search(r"const CACHE_PREFIX = `quantcalc-\$\{self.registration.scope\}-`", sw)
    # nothing is fetched at install (no race with the page); only listed files are cached
    install = sw.split("addEventListener('install'", 1)[1].split("addEventListener(", 1)[0]
    assert "addAll" not in install and "fetch(" not in install
    manifest = json.loads((site / "site.webmanifest").read_text())
    assert manifest["scope"] == "./" and manifest["start_url"] == f"./{name}.html"
    html = (site / f"{name}.html").read_text()
    assert 'navigator.serviceWorker.register("./serviceWorker.js")' in html
    assert "location.reload()" not in html, "Panel's reload-on-update snippet must be gone"
    assert '<link rel="manifest" href="./site.webmanifest">' in html


def test_worker_starts_from_the_top_of_head_before_bokehjs(built_site):
    html = (built_site["dir"] / f"{built_site['name']}.html").read_text()
    head = html.split("</head>", 1)[0]
    boot = head.index(f'new Worker("./{built_site["name"]}.js")')
    assert boot < head.index("bokeh-3.") and boot < head.index("panel.min.js")
    assert html.count("new Worker(") == 2   # boot script + the handler's fallback (window.quantcalcWorker || ...)


def test_the_pre_rendered_preview_leaves_the_plots_to_the_worker(built_site):
    # Before: the preview carried the five figures (half its Bokeh models, a picture of the default example
    # whatever the URL asked for) and was drawn 1.0 s later on a first visit (benchmarks/bench_bundle.py).
    html = (built_site["dir"] / f"{built_site['name']}.html").read_text()
    assert '"name":"Figure"' not in html and '"name":"Plot"' not in html
    assert "The plots are drawn once the calculator has started." in html
    assert "qc-compare" in html              # the numbers and the controls are in it


def test_content_security_policy_allows_only_the_pages_own_scripts(built_site):
    html = (built_site["dir"] / f"{built_site['name']}.html").read_text()
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', html).group(1)
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'self'" and directives["object-src"] == "'none'"
    assert directives["connect-src"] == "'self'" and directives["worker-src"] == "'self'"
    assert not re.search(r"https?:|\*", csp), "the page may contact no other host"
    # every executable inline script is allowed by its own hash, and nothing more is
    inline = [m.group(2) for m in re.finditer(r"<script([^>]*)>(.*?)</script>", html, re.S)
              if "src=" not in m.group(1) and "application/json" not in m.group(1) and "esms-options" not in m.group(1)]
    want = {"'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() + "'" for b in inline}
    got = set(re.findall(r"'sha256-[A-Za-z0-9+/=]+'", directives["script-src"]))
    assert inline and got == want
    assert "'unsafe-inline'" not in directives["script-src"]


def test_wheels_and_stdlib_carry_python_313_bytecode(built_site, build_mod):
    site, info = built_site["dir"], built_site["info"]
    if not info.get("precompiled_modules"):
        pytest.skip("built with --no-precompile")
    magic = None
    for archive, n in info["precompiled_modules"].items():
        assert n > 0, archive
        with zipfile.ZipFile(site / "pyodide" / archive) as z:
            names = z.namelist()
            pycs = [x for x in names if x.endswith(".pyc")]
            assert len(pycs) >= n, archive
            header = z.read(pycs[0])[:16]
            magic = magic or header[:4]
            assert header[:4] == magic, f"{archive}: bytecode of another Python"
            assert int.from_bytes(header[4:8], "little") == 0b01, f"{archive}: not unchecked-hash bytecode (PEP 552)"
            sources = {x for x in names if x.endswith(".py")}
            if archive.startswith("quantcore-"):  # our own code keeps its source next to the bytecode
                assert {x.rsplit("/", 1)[0] + "/__pycache__/" + x.rsplit("/", 1)[1][:-3] + ".cpython-313.pyc"
                        for x in sources if not x.split("/")[0].endswith(".dist-info")} <= set(names)
    # Python 3.13's magic number (the running CPython is another version; compare with the known value)
    assert magic == (3571).to_bytes(2, "little") + b"\r\n", magic


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


def test_lock_resolves_every_package_the_worker_installs(built_site, build_mod):
    site, info, name = built_site["dir"], built_site["info"], built_site["name"]
    lock = json.loads((site / "pyodide" / "pyodide-lock.json").read_text())
    worker = (site / f"{name}.js").read_text()
    config = json.loads(re.search(r"const BUILD = (\{.*?\n\});", worker, re.S).group(1))
    assert config["startup_packages"] == info["startup_packages"]
    startup = closure(lock, config["startup_packages"])
    assert startup == set(info["startup_packages"]), "startup list is not closed under the lock's depends"
    everything = closure(lock, info["startup_packages"] + info["on_demand_packages"])
    assert everything == set(lock["packages"]), "lock carries packages nobody installs"
    for pkg in ("numpy", "panel", "bokeh", "param", "quantcore", "pyodide-http", "nh3"):
        assert pkg in startup
    # the PDF report: fpdf2 and, through the lock, ssl (fpdf2 imports urllib.request.HTTPSHandler)
    assert {"fpdf2", "ssl", "libopenssl", "pillow"} <= closure(lock, ["fpdf2"]) - startup
    for pkg in NEVER_INSTALLED:
        assert pkg not in startup, f"{pkg} would be installed at startup"
    assert "pandas" not in lock["packages"]
    for key, entry in lock["packages"].items():
        fname = entry["file_name"]
        if key in info["cdn_only_packages"]:
            assert fname == info["cdn_only_files"][key]
            assert re.fullmatch(r"[a-z0-9_]+-[^/]+-cp313-cp313-pyodide_2025_0_wasm32\.whl", fname.rsplit("/", 1)[1])
            continue
        assert "/" not in fname, f"{key}: {fname}"
        data = (site / "pyodide" / fname).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], f"{key}: sha256 in lock != file"
        if entry["package_type"] == "shared_library":   # libopenssl (for ssl, for fpdf2): a zip of .so files
            assert fname.endswith(".zip") and entry["install_dir"] == "dynlib"
            continue
        compiled = fname.endswith("-pyodide_2025_0_wasm32.whl")
        assert compiled or fname.endswith("-none-any.whl"), f"{key}: {fname} is neither pure Python nor Pyodide's"
        assert not compiled or key in build_mod.COMPILED_STARTUP + build_mod.COMPILED_ON_DEMAND
        with zipfile.ZipFile(site / "pyodide" / fname) as z:
            tops = {n.split("/")[0] for n in z.namelist() if "/" in n}
        modules = {n.split(".", 1)[0] for n in z.namelist() if "/" not in n and n.endswith((".py", ".pyc", ".so"))}
        assert set(entry["imports"]) <= tops | modules
    # Worker loads packages from the lock (deps=False semantics: only the lock's own "depends").
    assert "micropip" not in worker and "loadPackage(BUILD.startup_packages" in worker


def test_pyodide_core_is_the_npm_package_verified(built_site, build_mod):
    tgz = REPO / "build" / "cache" / f"pyodide-{build_mod.PYODIDE_VERSION}.tgz"
    algo, want = build_mod.PYODIDE_NPM_INTEGRITY.split("-", 1)
    assert base64.b64encode(hashlib.new(algo, tgz.read_bytes()).digest()).decode() == want
    with tarfile.open(tgz) as tar:
        for f in build_mod.PYODIDE_CORE_FILES:
            member = tar.extractfile(f"package/{f}").read()
            ours = (built_site["dir"] / "pyodide" / f).read_bytes()
            if f == "python_stdlib.zip" and built_site["info"].get("precompiled_modules"):
                # the same standard library, each module compiled: m.py -> m.pyc
                import io
                npm = {n[:-3] if n.endswith(".py") else n for n in zipfile.ZipFile(io.BytesIO(member)).namelist()
                       if not n.endswith("/")}   # (zipimport needs no directory entries)
                got = {n[:-4] if n.endswith(".pyc") else n for n in zipfile.ZipFile(io.BytesIO(ours)).namelist()}
                assert npm == got
                continue
            assert member == ours, f"{f} differs from npm"


def test_packages_folder_files_must_match_the_lock(build_mod, tmp_path):
    (tmp_path / "numpy-2.2.5-x.whl").write_bytes(b"not numpy")
    good = hashlib.sha256(b"not numpy").hexdigest()
    assert build_mod.from_packages_dir(tmp_path, "numpy-2.2.5-x.whl", good) == tmp_path / "numpy-2.2.5-x.whl"
    assert build_mod.from_packages_dir(tmp_path, "absent.whl", good) is None
    assert build_mod.from_packages_dir(None, "numpy-2.2.5-x.whl", good) is None
    with pytest.raises(SystemExit, match="differs from pyodide@0.29.3's lock"):
        build_mod.from_packages_dir(tmp_path, "numpy-2.2.5-x.whl", "0" * 64)


def test_packages_folder_option_and_environment(build_mod, tmp_path, monkeypatch):
    monkeypatch.setenv(build_mod.PACKAGES_ENV, str(tmp_path))
    assert build_mod.default_packages_dir() == tmp_path
    monkeypatch.delenv(build_mod.PACKAGES_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert build_mod.default_packages_dir() is None
    (tmp_path / "quantcalc" / "pyodide-0.29.3").mkdir(parents=True)
    assert build_mod.default_packages_dir() == tmp_path / "quantcalc" / "pyodide-0.29.3"


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


def test_build_reports_packages_that_still_need_the_network(cdn_only_site, build_mod):
    info, out = cdn_only_site["info"], cdn_only_site["stdout"]
    assert set(info["cdn_only_packages"]) == set(build_mod.COMPILED_STARTUP + build_mod.COMPILED_ON_DEMAND)
    for pkg in info["cdn_only_packages"]:
        assert pkg in out.split("STILL NEED THE NETWORK", 1)[1].splitlines()[0]


def test_vendored_build_needs_no_network(computing_site):
    info = computing_site["info"]
    assert info["cdn_only_packages"] == [] and "every package is vendored" in computing_site["stdout"]


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
    app.write_text("from __future__ import annotations\nimport numpy\n")
    with pytest.raises(SystemExit, match="bad_app.py:1: from __future__ import ... cannot be used"):
        build_mod.check_app_imports(app, pkgs)


def test_app_text_that_the_worker_would_unescape_is_refused(build_mod, tmp_path):
    # The worker turns panel convert's '&#36;{' back into '${' (ReactiveHTML templates need it), so a literal
    # '&#36;{' in app.py would change meaning in the browser.
    app = tmp_path / "dollar_app.py"
    app.write_text("import numpy\n\nHTML = '&#36;{not_a_script}'\n")
    with pytest.raises(SystemExit, match=r"dollar_app.py:3: the text '&#36;\{' cannot be used"):
        build_mod.check_app_imports(app, [build_mod.Package("numpy", "2", "x.whl", "0", ["numpy"])])


def test_wheels_for_the_browser_ignore_the_test_environments_constraints(tmp_path, monkeypatch):
    # Before: on a fresh clone, CI's build of the page without Pyodide's packages failed: scripts/test.sh exports
    # PIP_CONSTRAINT (packaging==26.4) and the build's `pip download packaging==24.2` (Pyodide's lock) inherited it.
    build = load_build_module()
    monkeypatch.setenv("PIP_CONSTRAINT", str(REPO / "constraints.txt"))
    wheel = build.pip_download("packaging==24.2", tmp_path)
    assert wheel.name == "packaging-24.2-py3-none-any.whl"
