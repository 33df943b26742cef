"""Compile the Python sources of wheels and of the standard-library zip to bytecode, inside Pyodide.

Run by ``build/build_site.py`` through ``node build/pyodide_run.mjs`` so the bytecode comes from the very CPython
(3.13, Pyodide 0.29.3) that loads it in the browser; a .pyc from any other Python would be rejected (magic
number) or, worse, mean something else. Pyodide never writes bytecode at run time (``sys.dont_write_bytecode``),
so without this every visit compiles every imported module from source again.

    precompile.py JOBS.json

JOBS.json is a list of ``{"src", "dst", "prefix", "sourceless"}``: ``src``/``dst`` archive paths (zip or wheel),
``prefix`` the directory the archive's members live under at run time (``/lib/python3.13/site-packages/``, or
``/lib/python313.zip/`` for the standard library), which becomes each code object's ``co_filename``.

Bytecode is *unchecked hash-based* (PEP 552): the interpreter uses it without comparing it with a source file's
mtime (files unpacked from a wheel get the unpack time) and without hashing the source. ``sourceless`` replaces
``m.py`` with ``m.pyc`` (the layout of Pyodide's own "pyc" distribution: smaller, nothing left to compile);
otherwise ``__pycache__/m.cpython-313.pyc`` is added next to the kept source (tracebacks show source lines).
Members that do not compile (templates, Python 2 leftovers) are kept as they are and listed. Output archives are
deterministic: sorted members, fixed timestamps, the wheel's RECORD rewritten to match.
"""
import base64
import hashlib
import importlib.util
import json
import sys
import zipfile
from importlib._bootstrap_external import _code_to_hash_pyc

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
TAG = sys.implementation.cache_tag  # "cpython-313"


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def compile_member(name: str, data: bytes, prefix: str) -> bytes:
    code = compile(data, prefix + name, "exec", dont_inherit=True, optimize=0)
    return bytes(_code_to_hash_pyc(code, importlib.util.source_hash(data), checked=False))


def pyc_name(name: str, sourceless: bool) -> str:
    if sourceless:
        return name[:-3] + ".pyc"
    folder, _, base = name.rpartition("/")
    return (folder + "/" if folder else "") + f"__pycache__/{base[:-3]}.{TAG}.pyc"


def process(src: str, dst: str, prefix: str, sourceless: bool) -> dict:
    entries: dict[str, bytes] = {}
    failed: list[str] = []
    compiled = 0
    with zipfile.ZipFile(src) as z:
        for info in z.infolist():
            if info.is_dir():
                continue
            data = z.read(info)
            name = info.filename
            top = name.split("/", 1)[0]
            if name.endswith(".py") and not top.endswith((".dist-info", ".data")):
                try:
                    pyc = compile_member(name, data, prefix)
                except (SyntaxError, ValueError) as exc:
                    failed.append(f"{name}: {type(exc).__name__}")
                else:
                    entries[pyc_name(name, sourceless)] = pyc
                    compiled += 1
                    if sourceless:
                        continue
            entries[name] = data
    record = next((n for n in entries if n.endswith(".dist-info/RECORD")), None)
    if record is not None:
        lines = [f"{n},{record_hash(d)},{len(d)}" for n, d in sorted(entries.items()) if n != record]
        entries[record] = ("\n".join(lines + [f"{record},,"]) + "\n").encode()
    with zipfile.ZipFile(dst, "w") as out:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            out.writestr(info, entries[name], compresslevel=9)
    return {"src": src, "compiled": compiled, "failed": failed}


def main() -> int:
    jobs = json.loads(open(sys.argv[1], encoding="utf-8").read())
    report = [process(j["src"], j["dst"], j["prefix"], bool(j["sourceless"])) for j in jobs]
    print("PRECOMPILE-REPORT " + json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
