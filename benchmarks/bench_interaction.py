"""How live the calculator feels: seconds from a control change to the new numbers on screen, natively
(`panel serve app.py`) and in the static page (Pyodide worker), on a synthetic 1024 x 1024 tensor.

    .venv/bin/python benchmarks/bench_interaction.py [--site build/site] [--rows 1024] [--cols 1024] [--repeat 3]

Prints, never asserts. Each change is timed in Debian's Chromium from the edit to the moment the comparison
table's RMSE column shows different numbers (bits 8 -> 6 -> 3, mapping affine / symmetric, group size
32 -> 64, and back to a setting already computed, which the result cache should answer at once). The static
page is measured only when --site names a built site (build/build_site.py).
"""
from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_bundle as bb  # noqa: E402  (serving and waiting helpers shared with the start-up benchmark)

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_native() -> tuple[str, subprocess.Popen]:
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("panel")), "serve", "app.py", "--port", str(port),
                             "--address", "127.0.0.1", f"--allow-websocket-origin=127.0.0.1:{port}"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/app"
    for _ in range(200):
        try:
            urllib.request.urlopen(url, timeout=5)
            return url, proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("panel serve did not start")


def changes(page) -> list[tuple[str, float]]:
    # every scheme's RMSE: a change of group size leaves the per-tensor row as it was
    cells = page.locator("#qc-compare tbody tr td[data-key=rmse]")

    def rmse_column() -> str:
        return "|".join(cells.all_inner_texts())

    def timed(label: str, act) -> tuple[str, float]:
        before = rmse_column()
        t0 = time.perf_counter()
        act()
        while rmse_column() == before:
            if time.perf_counter() - t0 > 180:
                raise TimeoutError(f"{label}: the comparison table did not change")
            page.wait_for_timeout(10)
        return label, time.perf_counter() - t0

    def number(label: str, value: str):
        box = page.get_by_label(label, exact=True)
        return lambda: (box.fill(value), box.press("Enter"))

    mapping = page.get_by_label("Mapping")
    return [timed("bits 8 -> 6", number("Bits", "6")), timed("bits 6 -> 3", number("Bits", "3")),
            timed("mapping -> affine", lambda: mapping.select_option("affine")),
            timed("mapping -> symmetric (cached)", lambda: mapping.select_option("symmetric")),
            timed("group 32 -> 64", number("Group size", "64")),
            timed("bits 3 -> 8", number("Bits", "8"))]


def measure(browser, url: str, repeat: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for _ in range(repeat):
        ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
        page = ctx.new_page()
        page.goto(url)
        if "app.html" in url:
            bb.wait_stage(page, {"ready"})
        page.wait_for_selector("#qc-compare tbody tr td[data-key=rmse]", timeout=120_000)
        page.wait_for_timeout(1500)   # let the first computation and the frontier settle
        for label, s in changes(page):
            out.setdefault(label, []).append(s)
        ctx.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--site", type=Path, default=None)
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--cols", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright
    query = f"?source=synthetic&syn_rows={args.rows}&syn_cols={args.cols}&bits=8&mapping=symmetric&group=32"
    runs = {}
    url, proc = start_native()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=bb.CHROMIUM, args=bb.ARGS)
            runs["native"] = measure(browser, url + query, args.repeat)
            if args.site is not None:
                server = bb.serve(args.site)
                runs["worker"] = measure(browser, f"http://127.0.0.1:{server.server_address[1]}/app.html" + query,
                                         args.repeat)
            browser.close()
    finally:
        proc.terminate()
    print(f"{args.rows} x {args.cols} synthetic tensor, seconds from the change to new numbers "
          f"(median [min-max] of {args.repeat})")
    for runtime, res in runs.items():
        print(f"\n{runtime}")
        for label, vals in res.items():
            print(f"  {label:32s} {statistics.median(vals):6.2f}   [{min(vals):.2f}-{max(vals):.2f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
