#!/usr/bin/env python3
"""Build the calculator as an offline, embeddable static site (Panel app -> Pyodide web worker).

    python build/build_site.py [APP.py] [--out build/site] [--offline] [--no-cdn-probe]

Output (``build/site/`` by default, every URL in it relative):

    app.html, app.js            page (pre-rendered by ``panel convert``) and its Pyodide web worker
    index.html                  forwards to app.html, keeping the query string
    pyodide/                    Pyodide core (npm ``pyodide@0.29.3``), pyodide-lock.json, every wheel
    panel/<ver>/dist/...        Panel JS/CSS/assets from the installed package (``PANEL_CDN_ROOT=./panel/``)
    bokeh/                      BokehJS bundles from the installed package
    site.webmanifest, serviceWorker.js, images/   PWA: the worker pre-caches every asset listed at build time
    build-info.json             versions, startup/on-demand packages, packages that still need the network
    SHA256SUMS, size-report.txt

Pyodide's compiled packages (numpy, nh3, markupsafe, pyyaml; pillow and ssl for the PDF) exist only in Pyodide's
own distribution (its CDN and its release archive), not on any package registry. They are taken, each checked
against the sha256 of pyodide@0.29.3's lock, from the first of:

1. a local folder of official Pyodide 0.29.3 files: ``--pyodide-packages DIR`` or ``$QUANTCALC_PYODIDE_PACKAGES``,
   else ``${XDG_CACHE_HOME:-~/.cache}/quantcalc/pyodide-0.29.3`` when it exists (what unpacking Pyodide's release
   archive gives, or what ``get-packages.sh`` collects); the bundle then needs no network at all;
2. the Pyodide CDN, when it answers;
3. otherwise their lock entries keep the CDN URL, the build prints them, and the worker looks for a local copy
   first at run time: dropping the wheel into ``pyodide/`` makes the same bundle fully offline.
"""
from __future__ import annotations

import argparse
import ast
import base64
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

BUILD_DIR = Path(__file__).resolve().parent
REPO = BUILD_DIR.parent
TEMPLATES = BUILD_DIR / "templates"

PYODIDE_VERSION = "0.29.3"
# npm registry's dist.integrity for pyodide@0.29.3 (checked again against `npm view` when npm answers).
PYODIDE_NPM_INTEGRITY = (
    "sha512-22UBuhOJawj7vKUnS7/F3xK+515LJdjiMAHoCfuS6/PbHiOrSQVnYwDe+2sbVwiOZ3sMMexdXICew6NqOMQGgA=="
)
PYODIDE_CORE_FILES = ("pyodide.js", "pyodide.asm.js", "pyodide.asm.wasm", "python_stdlib.zip")
PYODIDE_CDN = f"https://cdn.jsdelivr.net/pyodide/v{PYODIDE_VERSION}/full/"
PANEL_CDN_ROOT = "./panel/"  # relative: resolved against the page, which sits next to panel/

# Pure-Python packages the worker installs, downloaded from PyPI with --no-deps.
# None = the version installed in this environment (so the pre-render and the browser agree);
# "lock" = the version Pyodide's lock names (its sha256 is then checked against the lock).
PYPI_STARTUP: dict[str, str | None] = {
    "param": None,
    "pyviz-comms": None,
    "markdown": None,
    "markdown-it-py": None,
    "mdurl": None,
    "mdit-py-plugins": None,
    "linkify-it-py": None,
    "jinja2": "lock",
    "packaging": "lock",
    "typing-extensions": "lock",
    "tqdm": "lock",
    # Without pyodide-http, panel.io.pyodide falls back to a branch that imports pandas.
    "pyodide-http": "lock",
}
# Installed only when the app asks for them (the PDF report): `await pyodide_js.loadPackage(["fpdf2"])`.
PYPI_ON_DEMAND: dict[str, str | None] = {"fpdf2": None, "defusedxml": None, "fonttools": "lock"}
# Compiled packages: only Pyodide's own distribution has them. nh3: Panel's HTML sanitizer imports it the first
# time a Markdown-based pane (pn.pane.Alert) renders. ssl (+ its OpenSSL library): fpdf2 imports
# urllib.request.HTTPSHandler, which Pyodide defines only once ssl is loaded.
COMPILED_STARTUP = ("numpy", "markupsafe", "pyyaml", "nh3")
COMPILED_ON_DEMAND = ("pillow", "ssl", "libopenssl")
PACKAGES_ENV = "QUANTCALC_PYODIDE_PACKAGES"
# Standard-library modules that numpy, Bokeh, Panel and quantcore import at start-up (listed from sys.modules in
# Pyodide 0.29.3 after `import numpy, bokeh.models, bokeh.plotting, panel, quantcore.report`). The worker imports
# them before it takes its boot memory snapshot (build/templates/pyodide_worker.js), so a visit restored from it
# does not import them again (under Node this halved the numpy + Bokeh + Panel imports, 2.24 -> 1.33 s; in
# Chromium it saves ~0.1 s). A name missing here only costs its import on every visit; one that fails to import
# is skipped.
SNAPSHOT_IMPORTS = (
    "argparse base64 cProfile calendar colorsys concurrent.futures.thread csv ctypes dataclasses datetime difflib "
    "email.feedparser email.message email.parser email.utils gettext gzip hashlib hmac html.entities html.parser "
    "http.client importlib.metadata ipaddress locale mimetypes numbers pickle pkgutil platform pprint queue quopri "
    "shlex sysconfig unicodedata unittest.mock urllib.request uuid webbrowser zoneinfo asyncio json typing inspect "
    "logging decimal fractions"
).split()


def default_packages_dir() -> Path | None:
    """$QUANTCALC_PYODIDE_PACKAGES, else the folder get-packages.sh fills, when it exists."""
    if os.environ.get(PACKAGES_ENV):
        return Path(os.environ[PACKAGES_ENV]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = cache / "quantcalc" / f"pyodide-{PYODIDE_VERSION}"
    return folder if folder.is_dir() else None
# Declared dependencies inside the bundle (lock "depends"); everything else a wheel's metadata asks for
# (pandas, pillow, nh3, contourpy, narwhals, requests, xyzservices, panel-material-ui ...) is never installed.
DEPENDS: dict[str, list[str]] = {
    "bokeh": ["jinja2", "numpy", "packaging", "pyyaml"],
    "panel": ["bokeh", "param", "pyviz-comms", "markdown", "markdown-it-py", "mdit-py-plugins",
              "linkify-it-py", "packaging", "tqdm", "typing-extensions", "pyodide-http"],
    "markdown-it-py": ["mdurl"],
    "mdit-py-plugins": ["markdown-it-py"],
    "quantcore": ["numpy"],
    "fpdf2": ["pillow", "fonttools", "defusedxml", "ssl"],
}
# Files stripped from the bokeh/panel wheels: the page already loads their JS from bokeh/ and panel/.
BOKEH_STRIP = re.compile(r"(\.js|\.d\.ts|\.tsbuildinfo|/bokeh\.json|\.js\.map)$")
PANEL_STRIP = re.compile(r"^panel/(dist/(bundled|lib|dts)/|dist/panel\.(js|json|min\.js|js\.map)$)")
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
NOT_PRECACHED = ("serviceWorker.js", "SHA256SUMS", "size-report.txt")


def log(msg: str) -> None:
    print(f"[build] {msg}", flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    log("$ " + " ".join(str(c) for c in cmd))
    return subprocess.run(cmd, check=True, **kw)


# --------------------------------------------------------------------------- deterministic zips
def write_zip(dest: Path, entries: dict[str, bytes]) -> None:
    """Write a zip whose bytes depend only on `entries`: sorted names, fixed time and permissions."""
    with zipfile.ZipFile(dest, "w") as z:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            z.writestr(info, entries[name], compresslevel=9)


def rezip_wheel(src: Path, dest: Path, strip: re.Pattern | None = None) -> list[str]:
    """Copy a wheel deterministically, dropping members that match `strip` (and their RECORD lines)."""
    entries: dict[str, bytes] = {}
    dropped: list[str] = []
    with zipfile.ZipFile(src) as z:
        for info in z.infolist():
            if info.is_dir():
                continue
            if strip is not None and strip.search(info.filename):
                dropped.append(info.filename)
                continue
            entries[info.filename] = z.read(info)
    if dropped:
        record = next(n for n in entries if n.endswith(".dist-info/RECORD"))
        gone = set(dropped)
        lines = entries[record].decode().splitlines()
        entries[record] = ("\n".join(l for l in lines if l.split(",")[0] not in gone) + "\n").encode()
    write_zip(dest, entries)
    return dropped


def wheel_imports(path: Path) -> list[str]:
    """Top-level importable names of a wheel (packages and modules), for the lock's `imports`."""
    tops = set()
    with zipfile.ZipFile(path) as z:
        for n in z.namelist():
            first = n.split("/")[0]
            if first.endswith((".dist-info", ".data")):
                continue
            if "/" in n:
                tops.add(first)
            elif n.endswith(".py"):
                tops.add(n[:-3])
    return sorted(tops)


def wheel_name_version(path: Path) -> tuple[str, str]:
    with zipfile.ZipFile(path) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    name = re.search(r"^Name: (.+)$", text, re.M).group(1).strip()
    version = re.search(r"^Version: (.+)$", text, re.M).group(1).strip()
    return name, version


# --------------------------------------------------------------------------- Pyodide core from npm
def fetch_pyodide_core(cache: Path) -> Path:
    """`npm pack pyodide@VERSION` into the cache, check its sha512 integrity, unpack; return the package dir."""
    tgz = cache / f"pyodide-{PYODIDE_VERSION}.tgz"
    if not tgz.exists():
        if shutil.which("npm") is None:
            raise SystemExit("npm is needed once to fetch Pyodide's core (apt-get install npm), "
                             f"or put pyodide-{PYODIDE_VERSION}.tgz into {cache}")
        run(["npm", "pack", f"pyodide@{PYODIDE_VERSION}", "--pack-destination", str(cache)],
            stdout=subprocess.DEVNULL)
    algo, want = PYODIDE_NPM_INTEGRITY.split("-", 1)
    got = base64.b64encode(hashlib.new(algo, tgz.read_bytes()).digest()).decode()
    if got != want:
        tgz.unlink()
        raise SystemExit(f"{tgz.name}: {algo} integrity {got} != pinned {want}; deleted, run again")
    if shutil.which("npm"):
        try:
            out = subprocess.run(["npm", "view", f"pyodide@{PYODIDE_VERSION}", "dist.integrity"],
                                 capture_output=True, text=True, timeout=60).stdout.strip()
            if out and out != PYODIDE_NPM_INTEGRITY:
                raise SystemExit(f"npm registry integrity {out} differs from the pinned one")
            log(f"pyodide@{PYODIDE_VERSION} integrity matches the npm registry" if out
                else "npm view did not answer; integrity checked against the pinned value")
        except subprocess.TimeoutExpired:
            log("npm view timed out; integrity checked against the pinned value")
    dest = cache / f"pyodide-{PYODIDE_VERSION}"
    if not (dest / "package" / "pyodide-lock.json").exists():
        shutil.rmtree(dest, ignore_errors=True)
        with tarfile.open(tgz) as tar:
            tar.extractall(dest, filter="data")
    return dest / "package"


# --------------------------------------------------------------------------- wheels
def installed_version(dist: str) -> str:
    from importlib.metadata import version
    return version(dist)


def pip_download(spec: str, cache: Path) -> Path:
    name = norm(spec.split("==")[0])
    version = spec.split("==")[1]
    wheel_dir = cache / "wheels"
    wheel_dir.mkdir(parents=True, exist_ok=True)

    def find() -> Path | None:
        for p in sorted(wheel_dir.glob("*.whl")):
            parts = p.name.split("-")
            if norm(parts[0]) == name and parts[1] == version:
                return p
        return None

    hit = find()
    if hit is None:
        # The browser's versions are Pyodide's lock's; the constraints of the environment running the build
        # (scripts/test.sh exports PIP_CONSTRAINT: packaging==26.4 there, 24.2 in the lock) do not apply.
        env = {k: v for k, v in os.environ.items() if k != "PIP_CONSTRAINT"}
        run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--python-version", "3.13", "--implementation", "py", "--abi", "none", "--platform", "any",
             "--quiet", "--dest", str(wheel_dir), spec], env=env)
        hit = find()
        if hit is None:
            raise SystemExit(f"pip download {spec} gave no pure-Python wheel")
    return hit


WHEEL_PACKAGES = ("quantcore", "quantcalc_ui")   # pyproject's package list: one wheel, one lock entry


def build_quantcore_wheel(cache: Path) -> Path:
    """`pip wheel --no-deps` of a copy of the project (setuptools would write build/lib into build/)."""
    out = cache / "quantcore-wheel"
    src = cache / "quantcore-src"
    for d in (out, src):
        shutil.rmtree(d, ignore_errors=True)
    src.mkdir(parents=True)
    for package in WHEEL_PACKAGES:
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copyfile(REPO / name, src / name)
    if not (src / "README.md").exists():
        (src / "README.md").write_text("quantcore\n")
    env = dict(os.environ, SOURCE_DATE_EPOCH="315532800")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(src)]
    try:
        run(cmd + ["--no-build-isolation"], env=env)
    except subprocess.CalledProcessError:
        run(cmd, env=env)
    return next(out.glob("quantcore-*.whl"))


@dataclass
class Package:
    name: str          # lock key (normalized)
    version: str
    file_name: str     # relative to pyodide/, or an absolute CDN URL
    sha256: str
    imports: list[str]
    depends: list[str] = field(default_factory=list)
    display_name: str = ""
    cdn_only: bool = False
    on_demand: bool = False
    package_type: str = "package"   # Pyodide's lock: "package", "cpython_module" (ssl), "shared_library"
    install_dir: str = "site"       # "dynlib" for shared libraries

    def lock_entry(self) -> dict:
        return {"depends": sorted(self.depends), "file_name": self.file_name, "imports": self.imports,
                "install_dir": self.install_dir, "name": self.display_name or self.name,
                "package_type": self.package_type,
                "sha256": self.sha256, "unvendored_tests": False, "version": self.version}


def probe_cdn(timeout: float = 6.0) -> bool:
    try:
        req = urllib.request.Request(PYODIDE_CDN + "pyodide-lock.json", method="HEAD")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def fetch_from_cdn(file_name: str, sha256: str, cache: Path) -> Path | None:
    dest = cache / "pyodide-cdn" / file_name
    if dest.exists() and sha256_file(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(PYODIDE_CDN + file_name, timeout=120) as r:
            data = r.read()
    except (urllib.error.URLError, OSError) as e:
        log(f"could not fetch {file_name} from the Pyodide CDN: {e}")
        return None
    if hashlib.sha256(data).hexdigest() != sha256:
        log(f"{file_name}: sha256 from the CDN does not match the lock; not vendored")
        return None
    dest.write_bytes(data)
    return dest


def from_packages_dir(folder: Path | None, file_name: str, sha256: str) -> Path | None:
    """``folder/file_name`` when it exists and its sha256 equals the lock's; a mismatch is an error."""
    if folder is None:
        return None
    path = folder / file_name
    if not path.is_file():
        return None
    got = sha256_file(path)
    if got != sha256:
        raise SystemExit(f"{path}: sha256 {got} differs from pyodide@{PYODIDE_VERSION}'s lock ({sha256}); "
                         "this is not the official file: delete it or fetch it again")
    return path


def collect_packages(core: Path, site_pyodide: Path, cache: Path, use_cdn: bool,
                     packages_dir: Path | None = None) -> list[Package]:
    lock = json.loads((core / "pyodide-lock.json").read_text())["packages"]
    pkgs: list[Package] = []

    def add_wheel(path: Path, lock_key: str | None, on_demand: bool) -> None:
        dest = site_pyodide / path.name
        shutil.copyfile(path, dest)
        name, version = wheel_name_version(dest)
        key = norm(name)
        digest = sha256_file(dest)
        if lock_key is not None:
            entry = lock[lock_key]
            if entry["version"] != version:
                raise SystemExit(f"{path.name}: version {version} != lock {entry['version']}")
            if entry["sha256"] != digest:
                log(f"note: {path.name} from PyPI differs from Pyodide's build; lock entry uses PyPI's sha256")
        pkgs.append(Package(key, version, dest.name, digest, wheel_imports(dest), DEPENDS.get(key, []),
                            display_name=name, on_demand=on_demand))

    for group, on_demand in ((PYPI_STARTUP, False), (PYPI_ON_DEMAND, True)):
        for dist, pin in group.items():
            key = norm(dist)
            if pin == "lock":
                version, lock_key = lock[key]["version"], key
                official = from_packages_dir(packages_dir, lock[key]["file_name"], lock[key]["sha256"])
                if official is not None:  # Pyodide's own build of it: its lock entry stays as is
                    add_wheel(official, lock_key, on_demand)
                    continue
            else:
                version, lock_key = pin or installed_version(dist), None
            add_wheel(pip_download(f"{dist}=={version}", cache), lock_key, on_demand)

    for dist, strip in (("bokeh", BOKEH_STRIP), ("panel", PANEL_STRIP)):
        src = pip_download(f"{dist}=={installed_version(dist)}", cache)
        dest = site_pyodide / src.name
        dropped = rezip_wheel(src, dest, strip)
        log(f"{dist}: {src.stat().st_size:,} -> {dest.stat().st_size:,} bytes ({len(dropped)} files stripped)")
        name, version = wheel_name_version(dest)
        pkgs.append(Package(norm(name), version, dest.name, sha256_file(dest), wheel_imports(dest),
                            DEPENDS[norm(name)], display_name=name))

    qc = build_quantcore_wheel(cache)
    dest = site_pyodide / qc.name
    rezip_wheel(qc, dest)
    pkgs.append(Package("quantcore", wheel_name_version(dest)[1], dest.name, sha256_file(dest),
                        wheel_imports(dest), DEPENDS["quantcore"], display_name="quantcore"))

    for names, on_demand in ((COMPILED_STARTUP, False), (COMPILED_ON_DEMAND, True)):
        for key in names:
            e = lock[key]
            local = from_packages_dir(packages_dir, e["file_name"], e["sha256"])
            if local is None and use_cdn:
                local = fetch_from_cdn(e["file_name"], e["sha256"], cache)
            if local is not None:
                shutil.copyfile(local, site_pyodide / e["file_name"])
                file_name, cdn_only = e["file_name"], False
            else:
                file_name, cdn_only = PYODIDE_CDN + e["file_name"], True
            pkgs.append(Package(key, e["version"], file_name, e["sha256"], e["imports"], e["depends"],
                                display_name=e["name"], cdn_only=cdn_only, on_demand=on_demand,
                                package_type=e["package_type"], install_dir=e["install_dir"]))
    for p in pkgs:
        missing = [d for d in p.depends if d not in {q.name for q in pkgs}]
        if missing:
            raise SystemExit(f"lock entry {p.name} depends on {missing}, which the bundle does not carry")
    return pkgs


SITE_PACKAGES = "/lib/python3.13/site-packages/"
STDLIB_ZIP = "/lib/python313.zip/"
KEEP_SOURCE = ("quantcore",)  # our own code keeps its .py next to the bytecode (tracebacks show source lines)


def precompile(core: Path, site_pyodide: Path, pkgs: list[Package]) -> dict:
    """Replace the Python sources in the stdlib zip and every wheel with Python 3.13 bytecode.

    The bytecode is made by Pyodide's own interpreter under Node (``build/precompile.py`` explains why and
    how); each wheel's lock entry gets the new sha256. Returns ``{archive: modules compiled}``.
    """
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node is needed to precompile Python bytecode with Pyodide (apt-get install nodejs), "
                         "or build with --no-precompile")
    jobs, by_file = [], {}
    work = site_pyodide.parent / ".precompile"
    work.mkdir(exist_ok=True)
    targets = [("python_stdlib.zip", STDLIB_ZIP, True)]
    targets += [(p.file_name, SITE_PACKAGES, p.name not in KEEP_SOURCE) for p in pkgs
                if p.file_name.endswith(".whl") and not p.cdn_only]
    for name, prefix, sourceless in targets:
        src = site_pyodide / name
        dst = work / name
        jobs.append({"src": "/host" + str(src), "dst": "/host" + str(dst), "prefix": prefix,
                     "sourceless": sourceless})
        by_file[name] = (src, dst)
    (work / "jobs.json").write_text(json.dumps(jobs))
    proc = subprocess.run([node, str(BUILD_DIR / "pyodide_run.mjs"), str(core), str(BUILD_DIR / "precompile.py"),
                           "/host" + str(work / "jobs.json")], capture_output=True, text=True)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("PRECOMPILE-REPORT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"precompiling with Pyodide failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}"
                         f"\n{proc.stderr[-2000:]}")
    report = json.loads(line.split(" ", 1)[1])
    for name, (src, dst) in by_file.items():
        os.replace(dst, src)
    shutil.rmtree(work)
    by_name = {p.file_name: p for p in pkgs}
    for name in by_file:
        if name in by_name:
            by_name[name].sha256 = sha256_file(site_pyodide / name)
    out = {}
    for job, r in zip(jobs, report):
        name = Path(job["src"]).name
        out[name] = r["compiled"]
        if r["failed"]:
            log(f"precompile {name}: kept as source (did not compile): {', '.join(r['failed'][:5])}")
    log(f"precompiled {sum(out.values())} modules in {len(out)} archives with Pyodide's Python")
    return out


def check_app_imports(app: Path, pkgs: list[Package]) -> None:
    """Fail early if app.py imports (at module level) something the bundle does not install at startup."""
    text = app.read_text(encoding="utf-8")
    tree = ast.parse(text, filename=str(app))
    problems = []
    if "&#36;{" in text:
        line = text[:text.index("&#36;{")].count("\n") + 1
        problems.append(f"{app.name}:{line}: the text '&#36;{{' cannot be used: panel convert writes '${{' so, and "
                        "the worker turns it back into '${{'")
    provided_start = {imp: p for p in pkgs if not p.on_demand for imp in p.imports}
    provided_later = {imp: p for p in pkgs if p.on_demand for imp in p.imports}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            problems.append(f"{app.name}:{node.lineno}: from __future__ import ... cannot be used: panel convert "
                            "runs its own lines before the app's code, so in the browser it is a SyntaxError")
            continue
        names = []
        if isinstance(node, ast.Import):
            names = [(a.name.split(".")[0], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [(node.module.split(".")[0], node.lineno)]
        for top, line in names:
            if top in sys.stdlib_module_names or top in provided_start:
                continue
            where = f"{app.name}:{line}: import {top}"
            if top in provided_later:
                problems.append(f"{where} is an on-demand package ({provided_later[top].name}); "
                                "import it inside the function that needs it")
            else:
                problems.append(f"{where} is not provided by the bundle (add it to build/build_site.py)")
    if problems:
        raise SystemExit("app imports the bundle cannot satisfy:\n  " + "\n  ".join(problems))


# --------------------------------------------------------------------------- panel convert
def convert(app: Path, out: Path, worker_config: dict) -> None:
    """Run `panel convert --to pyodide-worker` in-process (convert_app) with our worker/handler templates."""
    os.environ["PANEL_CDN_ROOT"] = PANEL_CDN_ROOT
    # Bokeh names the document and the root <div>s with uuid4(): seed them from the app source so the
    # same inputs give the same page (ids only need to be unique within the page).
    import random
    import uuid
    rng = random.Random(hashlib.sha256(app.read_bytes()).hexdigest())
    uuid.uuid4 = lambda: uuid.UUID(int=rng.getrandbits(128), version=4)
    import jinja2
    import panel.io.convert as pconv

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)))
    config_js = "{% raw %}" + json.dumps(worker_config, indent=2, sort_keys=True) + "{% endraw %}"
    worker_src = (TEMPLATES / "pyodide_worker.js").read_text().replace("/*BUILD_CONFIG*/{}", config_js)
    pconv.WEB_WORKER_TEMPLATE = env.from_string(worker_src)
    pconv.WORKER_HANDLER_TEMPLATE = env.get_template("pyodide_handler.js")
    pconv.PYODIDE_URL = pconv.PYODIDE_PYC_URL = "./pyodide/pyodide.js"
    result = pconv.convert_app(str(app), out, requirements=[], runtime="pyodide-worker",
                               prerender=True, manifest="site.webmanifest", http_patch=False,
                               verbose=True)
    if result is None:
        raise SystemExit(f"panel convert failed for {app} (see the message above)")


BOKEH_CDN_RE = re.compile(r"https://cdn\.bokeh\.org/bokeh/(?:release|dev)/(bokeh(?:-[a-z]+)?)-([0-9][^\"'/]*?)(\.min)?\.js")


def localize_html(out: Path, app_name: str) -> list[str]:
    """Point BokehJS at bokeh/ (copied from the installed package); return the bokeh files used."""
    import bokeh
    html_path = out / f"{app_name}.html"
    html = html_path.read_text(encoding="utf-8")
    static = Path(bokeh.__file__).parent / "server" / "static" / "js"
    used = []
    for m in sorted(set(BOKEH_CDN_RE.findall(html))):
        bundle, version, minified = m
        local = f"bokeh/{bundle}-{version}{minified}.js"
        (out / "bokeh").mkdir(exist_ok=True)
        shutil.copyfile(static / f"{bundle}{minified}.js", out / local)
        used.append(local)
    html = BOKEH_CDN_RE.sub(lambda m: f"./bokeh/{m.group(1)}-{m.group(2)}{m.group(3) or ''}.js", html)
    # Bokeh's CDN tags carry SRI hashes of the CDN files; the local copies are the same builds, but a
    # crossorigin attribute is pointless for same-origin files.
    html = html.replace(' crossorigin="anonymous"', "")
    # Panel's PWA snippet registers the service worker late and reloads the page when it changes; the boot
    # script registers ours instead.
    if PANEL_SW_SNIPPET not in html:
        raise SystemExit("panel convert's service-worker snippet changed: update PANEL_SW_SNIPPET in build_site.py")
    html = html.replace(PANEL_SW_SNIPPET, "")
    # es-module-shims serves only Panel's ReactiveESM / JSComponent models, which the app does not use; it probes
    # the browser by executing an inline script, which the Content-Security-Policy below rightly blocks.
    shims = re.findall(r'<script type="esms-options">[^<]*</script>\s*|<script type="text/javascript" '
                       r'src="[^"]*es-module-shims[^"]*"></script>\s*', html)
    if len(shims) != 2:
        raise SystemExit(f"expected es-module-shims' two script tags in {html_path.name}, found {len(shims)}")
    for tag in shims:
        html = html.replace(tag, "")
    boot = (TEMPLATES / "boot.js").read_text().replace("__APP_JS__", f"{app_name}.js")
    head = ('<head>\n    <meta http-equiv="Content-Security-Policy" content="__CSP__">\n'
            f'    <script>\n{boot}    </script>\n')
    if 'rel="manifest"' not in html:  # Panel's base template has no manifest link: add it (and the icon)
        head += ('    <link rel="manifest" href="./site.webmanifest">\n'
                 '    <link rel="icon" href="./images/favicon.ico">')
    html = html.replace("<head>", head, 1)
    html = html.replace("__CSP__", content_security_policy(html))
    html_path.write_text(html, encoding="utf-8")
    return used


PANEL_SW_SNIPPET = """<script type="text/javascript">
if ('serviceWorker' in navigator) {
  navigator.serviceWorker.register('./serviceWorker.js').then(reg => {
    reg.onupdatefound = () => {
      const installingWorker = reg.installing;
      installingWorker.onstatechange = () => {
        if (installingWorker.state === 'installed' &&
            navigator.serviceWorker.controller) {
          // Reload page if service worker is replaced
          location.reload();
        }
      }
    }
  })
}
</script>"""
INLINE_SCRIPT_RE = re.compile(r"<script(?P<attrs>[^>]*)>(?P<body>.*?)</script>", re.S)


def content_security_policy(html: str) -> str:
    """Exactly what the page needs: its own files, its inline scripts by hash, WebAssembly.

    Inline scripts are allowed one by one (sha256 of each, computed here); data: images and fonts come from
    Panel's CSS; styles are inline by design in Bokeh/Panel (shadow roots). The page itself contacts no other
    host: Pyodide runs in the worker (a same-origin script, which a meta policy does not govern).
    """
    hashes = []
    for m in INLINE_SCRIPT_RE.finditer(html):
        attrs, body = m.group("attrs"), m.group("body")
        if "src=" in attrs or re.search(r'type="(application/json|esms-options)"', attrs):
            continue
        hashes.append("'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'")
    directives = [
        "default-src 'self'",
        # 'unsafe-eval' and blob:: BokehJS / Panel compile some code at run time (new Function) and Panel's
        # es-module-shims loads modules from blob: URLs; both were measured to fail without them.
        "script-src 'self' 'wasm-unsafe-eval' 'unsafe-eval' blob: " + " ".join(sorted(set(hashes))),
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "worker-src 'self'",
        "manifest-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'none'",
    ]
    return "; ".join(directives)


PANEL_REF_RE = re.compile(r"\./panel/([0-9][^/\"']*)/dist/([^\"'\s)?#\\]+)")
CSS_URL_RE = re.compile(r"url\(\s*['\"]?([^'\")]+)['\"]?\s*\)")


def vendor_panel_dist(out: Path, texts: list[str]) -> None:
    """Copy Panel's css/ and assets/ plus every dist file referenced from the outputs (and their CSS urls)."""
    import panel
    from panel.io.resources import DIST_DIR, JS_VERSION
    base = out / "panel" / JS_VERSION / "dist"
    todo = {f"css/{p.name}" for p in (DIST_DIR / "css").glob("*.css")}
    todo |= {str(p.relative_to(DIST_DIR)) for p in (DIST_DIR / "assets").rglob("*") if p.is_file()}
    todo.add("panel.min.js")
    for t in texts:
        for version, rel in PANEL_REF_RE.findall(t):
            if version != JS_VERSION:
                raise SystemExit(f"output references panel {version}, installed panel JS is {JS_VERSION}")
            todo.add(rel)
    done = set()
    while todo:
        rel = os.path.normpath(todo.pop())
        if rel in done:
            continue
        done.add(rel)
        src = DIST_DIR / rel
        if not src.is_file():
            raise SystemExit(f"output references panel/{JS_VERSION}/dist/{rel}, missing from panel {panel.__version__}")
        dest = base / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        if rel.endswith(".css"):
            for u in CSS_URL_RE.findall(src.read_text(encoding="utf-8", errors="replace")):
                if u.startswith(("data:", "#", "http:", "https:", "//")):
                    continue
                todo.add(os.path.normpath(os.path.join(os.path.dirname(rel), u.split("?")[0].split("#")[0])))


# --------------------------------------------------------------------------- PWA, reports
def write_pwa(out: Path, app_name: str, title: str) -> None:
    from panel.io.convert import PWA_IMAGES
    (out / "images").mkdir(exist_ok=True)
    for img in PWA_IMAGES:
        if img.name in ("index_background.png",):
            continue
        shutil.copyfile(img, out / "images" / img.name)
    manifest = {
        "name": title, "short_name": "quantcalc", "start_url": f"./{app_name}.html", "scope": "./",
        "display": "standalone", "background_color": "#fdfdfd", "theme_color": "#0072B5",
        "icons": [
            {"src": "images/icon-vector.svg", "type": "image/svg+xml", "sizes": "512x512"},
            {"src": "images/icon-32x32.png", "type": "image/png", "sizes": "32x32"},
            {"src": "images/icon-192x192.png", "type": "image/png", "sizes": "192x192"},
            {"src": "images/icon-512x512.png", "type": "image/png", "sizes": "512x512"},
        ],
    }
    (out / "site.webmanifest").write_text(json.dumps(manifest, indent=2) + "\n")
    index = (TEMPLATES / "index.html").read_text().replace("__APP__", f"{app_name}.html")
    (out / "index.html").write_text(index)


def all_files(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def build_fingerprint(site_pyodide: Path, app: Path) -> str:
    """Version of the site's cache: every file under pyodide/ (core, lock, wheels incl. quantcore), the app's
    source and this build's own code and templates. The page and its JS follow from those and the installed
    panel/bokeh, whose wheels are in pyodide/."""
    digest = hashlib.sha256()
    parts = sorted(site_pyodide.iterdir()) + [app, Path(__file__).resolve()] + sorted(TEMPLATES.iterdir())
    for f in parts:
        if f.is_file():
            digest.update(f.name.encode() + b"\0" + sha256_file(f).encode() + b"\n")
    return digest.hexdigest()[:16]


def startup_files(pkgs: list[Package], lock: dict) -> dict[str, str]:
    """Files the worker requests at once, before Pyodide asks (relative path -> SRI integrity or "")."""
    # (pyodide.js and pyodide.asm.js are loaded with importScripts, which a fetch cannot serve)
    files = {f"pyodide/{f}": "" for f in PYODIDE_CORE_FILES if not f.endswith(".js")}
    files["pyodide/pyodide-lock.json"] = ""
    entries = lock["packages"]
    for p in pkgs:
        if not p.on_demand and not p.cdn_only:
            sri = "sha256-" + base64.b64encode(bytes.fromhex(entries[p.name]["sha256"])).decode()
            files[f"pyodide/{p.file_name}"] = sri
    return files


def write_service_worker(out: Path, version: str, app_name: str, remote: dict[str, str]) -> list[str]:
    """serviceWorker.js with this build's cache version and the list of files it may cache."""
    assets = [f for f in all_files(out) if f not in NOT_PRECACHED]
    sw = (TEMPLATES / "serviceWorker.js").read_text()
    sw = sw.replace("__CACHE_VERSION__", version).replace("__APP_HTML__", f"{app_name}.html")
    sw = sw.replace("/*SITE_FILES*/[]", json.dumps(assets, indent=1))
    sw = sw.replace("/*REMOTE_FILES*/[]", json.dumps(sorted(remote.values())))
    (out / "serviceWorker.js").write_text(sw)
    return assets


def write_reports(out: Path) -> tuple[int, int]:
    sums = [f"{sha256_file(out / f)}  {f}" for f in all_files(out) if f not in ("SHA256SUMS", "size-report.txt")]
    (out / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    rows, total_raw, total_gz = [], 0, 0
    for f in all_files(out):
        if f == "size-report.txt":
            continue
        data = (out / f).read_bytes()
        gz = len(gzip.compress(data, compresslevel=9, mtime=0))
        total_raw += len(data)
        total_gz += gz
        rows.append((f, len(data), gz))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'file'.ljust(width)}  {'bytes':>12}  {'gzip -9':>12}"]
    lines += [f"{f.ljust(width)}  {raw:>12,}  {gz:>12,}" for f, raw, gz in rows]
    lines.append(f"{'TOTAL (' + str(len(rows)) + ' files)'.ljust(width)}  {total_raw:>12,}  {total_gz:>12,}")
    (out / "size-report.txt").write_text("\n".join(lines) + "\n")
    return total_raw, total_gz


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("app", nargs="?", default=str(REPO / "app.py"), help="Panel app file (default: app.py)")
    ap.add_argument("--out", default=str(BUILD_DIR / "site"), help="output folder (emptied first)")
    ap.add_argument("--cache", default=str(BUILD_DIR / "cache"), help="download cache")
    ap.add_argument("--title", default="quantcalc: quantization calculator")
    ap.add_argument("--no-cdn-probe", action="store_true",
                    help="do not try the Pyodide CDN (compiled packages not found locally stay CDN-only)")
    ap.add_argument("--no-precompile", action="store_true",
                    help="ship Python sources only (every visit then compiles them again; for comparison)")
    ap.add_argument("--pyodide-packages", metavar="DIR", default=None,
                    help=f"folder of official Pyodide {PYODIDE_VERSION} package files to vendor (default: "
                         f"${PACKAGES_ENV}, else ~/.cache/quantcalc/pyodide-{PYODIDE_VERSION} if present)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    app = Path(args.app).resolve()
    if not app.is_file():
        raise SystemExit(f"app file {app} does not exist (pass the app path as the first argument)")
    out, cache = Path(args.out).resolve(), Path(args.cache).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    if out.exists():
        shutil.rmtree(out)
    (out / "pyodide").mkdir(parents=True)
    app_name = app.stem

    core = fetch_pyodide_core(cache)
    for f in PYODIDE_CORE_FILES:
        shutil.copyfile(core / f, out / "pyodide" / f)

    packages_dir = Path(args.pyodide_packages).expanduser() if args.pyodide_packages else default_packages_dir()
    if packages_dir is not None and not packages_dir.is_dir():
        raise SystemExit(f"--pyodide-packages / ${PACKAGES_ENV}: {packages_dir} is not a folder")
    log(f"official Pyodide packages from {packages_dir}" if packages_dir else
        f"no local folder of Pyodide packages (--pyodide-packages or ${PACKAGES_ENV})")
    use_cdn = False
    if not args.no_cdn_probe:
        use_cdn = probe_cdn()
        log(f"Pyodide CDN {PYODIDE_CDN} is {'reachable: vendoring compiled packages' if use_cdn else 'unreachable'}")
    pkgs = collect_packages(core, out / "pyodide", cache, use_cdn, packages_dir)
    check_app_imports(app, pkgs)
    compiled = {} if args.no_precompile else precompile(core, out / "pyodide", pkgs)

    base_lock = json.loads((core / "pyodide-lock.json").read_text())
    lock = {"info": base_lock["info"], "packages": {p.name: p.lock_entry() for p in sorted(pkgs, key=lambda p: p.name)}}
    (out / "pyodide" / "pyodide-lock.json").write_text(json.dumps(lock, indent=1, sort_keys=True) + "\n")

    cdn_only = sorted(p.name for p in pkgs if p.cdn_only)
    info = {
        "app": app.name,
        "pyodide_version": PYODIDE_VERSION,
        "pyodide_cdn": PYODIDE_CDN,
        "panel_cdn_root": PANEL_CDN_ROOT,
        "startup_packages": sorted(p.name for p in pkgs if not p.on_demand),
        "on_demand_packages": sorted(p.name for p in pkgs if p.on_demand),
        "cdn_only_packages": cdn_only,
        "cdn_only_files": {p.name: p.file_name for p in sorted(pkgs, key=lambda p: p.name) if p.cdn_only},
        "precompiled_modules": compiled,
    }
    (out / "build-info.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")

    worker_config = {k: info[k] for k in ("pyodide_version", "pyodide_cdn", "panel_cdn_root",
                                          "startup_packages", "cdn_only_packages")}
    cache_version = build_fingerprint(out / "pyodide", app)
    worker_config["cache_version"] = cache_version
    worker_config["startup_files"] = startup_files(pkgs, lock)
    worker_config["snapshot_imports"] = list(SNAPSHOT_IMPORTS)
    # Convert in a fresh interpreter: Panel reads PANEL_CDN_ROOT at import time, and Bokeh's model ids
    # are counters, so a fresh process gives the same page on every build.
    try:
        run([sys.executable, str(Path(__file__).resolve()), "_convert", str(app), str(out),
             json.dumps(worker_config)], cwd=str(app.parent), env=dict(os.environ, PANEL_CDN_ROOT=PANEL_CDN_ROOT))
    except subprocess.CalledProcessError:
        raise SystemExit(f"panel convert failed for {app} (its error is printed above)") from None
    used_bokeh = localize_html(out, app_name)
    texts = [(out / f).read_text(encoding="utf-8") for f in (f"{app_name}.html", f"{app_name}.js")]
    vendor_panel_dist(out, texts)
    write_pwa(out, app_name, args.title)
    assets = write_service_worker(out, cache_version, app_name, info["cdn_only_files"])
    total_raw, total_gz = write_reports(out)

    print((out / "size-report.txt").read_text(), end="")
    log(f"bokeh bundles: {', '.join(used_bokeh)}")
    log(f"{len(assets)} site files cached by serviceWorker.js (version {cache_version}); sha256 in SHA256SUMS")
    log(f"bundle: {total_raw:,} bytes raw, {total_gz:,} bytes gzip -9")
    if cdn_only:
        log("STILL NEED THE NETWORK (Pyodide CDN only; compiled for WebAssembly, not on PyPI/npm): "
            + ", ".join(f"{n} ({info['cdn_only_files'][n].rsplit('/', 1)[1]})" for n in cdn_only))
        log(f"  put those files into {out / 'pyodide'} (or run the build where {PYODIDE_CDN} answers) "
            "to make the bundle fully offline; the page says which ones it could not load.")
    else:
        log("every package is vendored: the bundle needs no network")
    log(f"built {out} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_convert":
        convert(Path(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4]))
        sys.exit(0)
    sys.exit(main())
