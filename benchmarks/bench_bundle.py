"""Start-up of the static page in Chromium: cold and warm time-to-interactive, per-phase timeline, bytes.

    .venv/bin/python benchmarks/bench_bundle.py [--site build/site] [--runs 3] [--examples s3,s0,s1,s2]
                                                [--no-interaction]

Serves the site from localhost (no other host resolves) and opens it in Debian's Chromium with a fresh profile
per cold run. Prints, never asserts:

- per run: the worker's timeline (page-relative ms: worker started, Pyodide booted, packages installed, each
  import, app built, document written, rendered, interactive = the worker's document is live and linked);
- cold vs warm (a reload in the same profile: service worker + caches) and offline warm (network cut);
- bytes served per cold visit and every file fetched more than once;
- with interaction: on a 1024 x 1024 synthetic tensor, the time from changing Bits / Mapping to the new numbers
  in the comparison table.

"Interactive" is the worker's ``ready`` stage: its document has replaced the pre-rendered one and every control
is wired to Python. "Pre-rendered" is the first moment BokehJS shows the page (before Python runs).
"""
from __future__ import annotations

import argparse
import functools
import http.server
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import unquote, urlparse

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
# Other hosts do not resolve. (Requests are not routed through Playwright: its interception together with the
# service worker's Cache Storage crashes Chromium's renderer.)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
PHASES = [("pyodide-loading", "worker started"), ("pyodide-ready", "Pyodide booted"),
          ("installed", "packages installed"), ("imported-numpy", "numpy imported"),
          ("imported-bokeh", "bokeh imported"), ("imported-panel", "panel imported"),
          ("imported-quantcore", "quantcore imported"), ("app-built", "app built"),
          ("document-written", "document written"), ("rendered", "document rendered"),
          ("ready", "INTERACTIVE")]


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    """Static files; records (path, bytes sent) of every GET in ``self.server.log``."""

    def log_message(self, *args) -> None:
        pass

    def copyfile(self, source, outputfile) -> None:
        n = 0
        while chunk := source.read(1 << 16):
            outputfile.write(chunk)
            n += len(chunk)
        self.server.log.append((unquote(urlparse(self.path).path), n))


def serve(site: Path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(CountingHandler,
                                                                                  directory=str(site)))
    server.log = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def wait_stage(page, stages: set[str], timeout_s: float = 180.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        log = page.evaluate("window.quantcalcWorkerLog || []")
        if any(e.get("stage") in stages for e in log):
            return log
        page.wait_for_timeout(50)
    raise TimeoutError(f"none of {stages} within {timeout_s} s: {page.evaluate('window.quantcalcWorkerLog')}")


def visit(page, url: str) -> dict:
    """Open ``url``; return {phase: page ms} plus 'prerender', 'dom' and 'boot' (how Python started: from the boot
    snapshot, or anew and saving one)."""
    page.goto(url)
    page.wait_for_function("window.Bokeh && Bokeh.index && Bokeh.index.roots.length > 0", timeout=60_000)
    pre = page.evaluate("performance.now()")
    log = wait_stage(page, {"ready", "app-failed", "packages-missing", "pyodide-failed"})
    bad = [e for e in log if e.get("type") == "error"]
    if bad:
        raise RuntimeError(f"the page did not start: {bad}")
    out = {e["stage"]: e["t"] for e in log if e.get("stage")}
    out["prerender"] = pre
    out["dom"] = page.evaluate("performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd")
    out["boot"] = next((e.get("boot") for e in log if e.get("stage") == "pyodide-ready"), None)
    return out


def interaction(page) -> dict:
    """Seconds from changing Bits / Mapping to the new comparison numbers (1024 x 1024 synthetic tensor)."""
    first = page.locator("#qc-compare tbody tr td[data-key=rmse]").first

    def changed(before: str, timeout_s: float = 120.0) -> float:
        t0 = time.perf_counter()
        while first.inner_text() == before:
            if time.perf_counter() - t0 > timeout_s:
                raise TimeoutError("the comparison table did not change")
            page.wait_for_timeout(20)
        return time.perf_counter() - t0

    out = {}
    bits = page.get_by_label("Bits", exact=True)
    for value in ("6", "3"):
        before = first.inner_text()
        old = bits.input_value()
        bits.fill(value)
        bits.press("Enter")
        out[f"bits {old} -> {value}"] = changed(before)
    mapping = page.get_by_label("Mapping")
    for value in ("affine", "symmetric"):
        before = first.inner_text()
        mapping.select_option(value)
        out[f"mapping -> {value}"] = changed(before)
    return out


def summarize(name: str, runs: list[dict]) -> None:
    print(f"\n{name} ({len(runs)} run{'s' if len(runs) != 1 else ''}; page-relative ms, median [min-max])")
    for key, label in [("dom", "DOMContentLoaded"), ("prerender", "pre-rendered page shown")] + PHASES:
        vals = [r[key] for r in runs if key in r]
        if vals:
            print(f"  {label:28s} {statistics.median(vals):8.0f}   [{min(vals):.0f}-{max(vals):.0f}]")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--site", default=str(REPO / "build" / "site"))
    ap.add_argument("--page", default="app.html")
    ap.add_argument("--runs", type=int, default=3, help="cold runs (each with a fresh browser profile)")
    ap.add_argument("--examples", default="s3,s0,s1,s2")
    ap.add_argument("--no-interaction", action="store_true")
    args = ap.parse_args(argv)
    site = Path(args.site)
    if not (site / args.page).exists():
        print(f"{site / args.page} does not exist: build it first (python build/build_site.py)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    server = serve(site)
    origin = f"127.0.0.1:{server.server_address[1]}"
    base = f"http://{origin}/{args.page}"
    examples = args.examples.split(",")
    cold, warm, offline, per_example = [], [], [], {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for i in range(args.runs):
            ex = examples[i % len(examples)]
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = ctx.new_page()
            server.log.clear()
            run = visit(page, f"{base}?example={ex}")
            served = list(server.log)
            cold.append(run)
            per_example.setdefault(ex, []).append(run["ready"])
            twice = {f: n for f, n in Counter(f for f, _ in served).items() if n > 1}
            total = sum(n for _, n in served)
            print(f"cold run {i + 1} (example {ex}): interactive {run['ready']:.0f} ms ({run['boot']}), "
                  f"{len(served)} requests, {total / 1e6:.1f} MB served"
                  + (f"; fetched more than once: {twice}" if twice else "; no file fetched twice"))
            # let the service worker keep the site, then come back: warm, then offline
            page.wait_for_timeout(3000)
            server.log.clear()
            w = visit(page, f"{base}?example={ex}")
            warm.append(w)
            print(f"  warm reload: interactive {w['ready']:.0f} ms ({w['boot']}), "
                  f"{sum(n for _, n in server.log) / 1e6:.2f} MB served ({len(server.log)} requests)")
            ctx.set_offline(True)
            try:
                o = visit(page, f"{base}?example={ex}")
                offline.append(o)
                print(f"  offline reload: interactive {o['ready']:.0f} ms ({o['boot']})")
            except Exception as exc:  # reported, not raised: this is a measurement
                print(f"  offline reload FAILED: {str(exc)[:300]}")
            ctx.set_offline(False)
            if i == 0 and not args.no_interaction:
                page.goto(f"{base}?source=synthetic&syn_rows=1024&syn_cols=1024&compare=%5B%22per-channel%22%5D"
                          f"&detail=per-channel")
                wait_stage(page, {"ready"})
                page.wait_for_selector("#qc-compare tbody tr td[data-key=rmse]")
                page.wait_for_timeout(1500)
                for k, v in interaction(page).items():
                    print(f"  1024x1024 synthetic, {k}: {v:.2f} s to new numbers")
            ctx.close()
        browser.close()
    summarize("COLD (fresh profile)", cold)
    summarize("WARM (reload, service worker + caches)", warm)
    if offline:
        summarize("OFFLINE (reload with the network cut)", offline)
    print("\ninteractive per example (cold, ms): " +
          ", ".join(f"{k}: {statistics.median(v):.0f}" for k, v in per_example.items()))
    server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
