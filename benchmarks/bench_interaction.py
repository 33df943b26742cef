"""How live the calculator feels: seconds from a control change to the new numbers on screen, natively
(`panel serve app.py`) and in the static page (Pyodide worker), on a synthetic 1024 x 1024 tensor.

    .venv/bin/python benchmarks/bench_interaction.py [--site build/site] [--rows 1024] [--cols 1024] [--repeat 3]
                                                     [--pause 0]

Prints, never asserts. Each change is timed in Debian's Chromium, inside the page, from just before the edit
(a typed number: from its Enter key) to the moment the comparison table's RMSE column shows different
numbers: bits 8 -> 6 -> 3, mapping affine / symmetric, group size 32 -> 64, and back to a setting already
computed, which the result cache should answer at once. ``--pause``: seconds between one change's numbers
and the next change (0, back to back, is the hardest case: the page is still drawing). The static page is
measured only when --site names a built site (build/build_site.py).
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


# In-page watch of the comparison table's RMSE column: a MutationObserver on the shadow root holding it
# records performance.now() of the first change. Polling the column from Playwright
# instead forces the page to lay itself out every few ms and slowed what it measured (a CPU profile showed
# ~90 ms per change in Playwright's own selector engine).
WATCH = r"""
(() => {
  function deep(root) {
    const el = root.querySelector('#qc-compare');
    if (el) return el;
    for (const n of root.querySelectorAll('*')) if (n.shadowRoot) { const f = deep(n.shadowRoot); if (f) return f; }
    return null;
  }
  const box = deep(document).getRootNode();   // the pane's shadow root: Panel replaces the table's parents
  const column = () => Array.from(box.querySelectorAll('#qc-compare tbody tr td[data-key=rmse]'),
                                  td => td.textContent.trim()).join('|');
  const w = window.__qcWatch = {before: column(), changed: null, start: performance.now()};
  const obs = new MutationObserver(() => {
    if (w.changed === null && column() !== w.before) { w.changed = performance.now(); obs.disconnect(); }
  });
  obs.observe(box, {childList: true, subtree: true, characterData: true});
})()
"""


def changes(page, pause: float) -> list[tuple[str, float]]:
    def timed(label: str, act, prepare=None) -> tuple[str, float]:
        page.wait_for_timeout(pause * 1000)
        if prepare is not None:
            prepare()
        page.evaluate(WATCH)
        act()
        page.wait_for_function("window.__qcWatch.changed !== null", timeout=180_000)
        return label, page.evaluate("(window.__qcWatch.changed - window.__qcWatch.start) / 1000")

    def number(label: str, value: str) -> tuple:   # typed first; the change is the Enter key
        box = page.get_by_label(label, exact=True)
        return lambda: box.press("Enter"), lambda: box.fill(value)

    mapping = page.get_by_label("Mapping")
    return [timed("bits 8 -> 6", *number("Bits", "6")), timed("bits 6 -> 3", *number("Bits", "3")),
            timed("mapping -> affine", lambda: mapping.select_option("affine")),
            timed("mapping -> symmetric (cached)", lambda: mapping.select_option("symmetric")),
            timed("group 32 -> 64", *number("Group size", "64")),
            timed("bits 3 -> 8", *number("Bits", "8"))]


def measure(browser, url: str, repeat: int, pause: float) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for _ in range(repeat):
        ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
        page = ctx.new_page()
        page.goto(url)
        if "app.html" in url:
            bb.wait_stage(page, {"ready"})
        page.wait_for_selector("#qc-compare tbody tr td[data-key=rmse]", timeout=120_000)
        page.wait_for_timeout(1500)   # let the first computation and the frontier settle
        for label, s in changes(page, pause):
            out.setdefault(label, []).append(s)
        ctx.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--site", type=Path, default=None)
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--cols", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pause", type=float, default=0.0,
                    help="seconds between one change's new numbers and the next change (0: back to back, while "
                         "the page still draws and the frontier may be swept)")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright
    query = f"?source=synthetic&syn_rows={args.rows}&syn_cols={args.cols}&bits=8&mapping=symmetric&group=32"
    runs = {}
    url, proc = start_native()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=bb.CHROMIUM, args=bb.ARGS)
            runs["native"] = measure(browser, url + query, args.repeat, args.pause)
            if args.site is not None:
                server = bb.serve(args.site)
                runs["worker"] = measure(browser, f"http://127.0.0.1:{server.server_address[1]}/app.html" + query,
                                         args.repeat, args.pause)
            browser.close()
    finally:
        proc.terminate()
    print(f"{args.rows} x {args.cols} synthetic tensor, seconds from the change to new numbers "
          f"(median [min-max] of {args.repeat}; {args.pause:g} s between changes)")
    for runtime, res in runs.items():
        print(f"\n{runtime}")
        for label, vals in res.items():
            print(f"  {label:32s} {statistics.median(vals):6.2f}   [{min(vals):.2f}-{max(vals):.2f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
