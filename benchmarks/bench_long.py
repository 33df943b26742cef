"""Long work on a large tensor: a KL range search and the error-vs-memory frontier on 4096 x 4096 values,
natively (`panel serve app.py`) and in the static page (Pyodide worker).

    .venv/bin/python benchmarks/bench_long.py [--site build/site] [--rows 4096] [--cols 4096]

Prints, never asserts. In Debian's Chromium, on a synthetic tensor (the page's three default schemes):

  kl        Range from -> KL divergence: seconds until the new results are in (the busy sign gone), and how
            many progress-bar updates the page showed meanwhile
  cancel    Bits 6, then Bits 8 three seconds later (midway through the bits-6 searches): seconds from the
            second change to its results (what is dropped is not waited for)
  sweep     Range back to data min/max, then the frontier button: 2 s in, a bits change stops the sweep (seconds
            until the button is back); asked again, seconds until all 24 schemes are drawn, and the progress
            updates ("scheme k of 24" with a bar). A tensor swept within those 2 s reports that sweep alone.

The static page is measured only when --site names a built site (build/build_site.py).
"""
from __future__ import annotations

import argparse
import html
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_bundle as bb  # noqa: E402  (serving and waiting helpers shared with the start-up benchmark)
import bench_interaction as bi  # noqa: E402
from playwright.sync_api import TimeoutError as PlaywrightTimeout  # noqa: E402

# The progress pane's Bokeh model, watched in the page (its text is the pane's HTML, escaped by Panel).
PROGRESS_WATCH = ("() => { window.qcProgress = []; for (const doc of Bokeh.documents) for (const m of doc.all_models)"
                  " if ((m.css_classes || []).includes('qc-progress')) m.properties.text.change.connect(() =>"
                  " window.qcProgress.push(m.text)) }")
FRONTIER_DRAWN = ("() => { for (const doc of Bokeh.documents) for (const m of doc.all_models)"
                  " if (m.type === 'ColumnDataSource' && m.data.bpw && m.data.bpw.length >= 20) return true;"
                  " return false }")


def progress_seen(page) -> tuple[int, list[str]]:
    """(progress-bar updates, distinct texts of the progress line) since PROGRESS_WATCH."""
    texts = [html.unescape(t) for t in page.evaluate("window.qcProgress")]
    bars = sum(bool(re.search(r"<progress[^>]* value='[0-9.]+'", t)) for t in texts)
    lines = sorted({re.sub(r"scheme \d+ of", "scheme k of", re.sub(r"<[^>]*>", "", t).split(" (")[0].strip())
                    for t in texts if t})
    return bars, lines


def sweep_line(page, since: float, note: str = "") -> str:
    """The report of a finished frontier sweep started at ``since`` (perf_counter seconds)."""
    bars, lines = progress_seen(page)
    return (f"  sweep                  {time.perf_counter() - since:6.1f} s for 24 schemes{note}; {bars} progress-bar "
            f"updates; {' | '.join(lines)}")


def until_idle(page, timeout_s: float = 900.0) -> None:
    page.wait_for_timeout(300)   # the busy sign comes with the change's first tick
    deadline = time.perf_counter() + timeout_s
    while page.locator(".qc-busy").count():
        if time.perf_counter() > deadline:
            raise TimeoutError("the page stayed busy")
        page.wait_for_timeout(100)


def measure(browser, url: str) -> list[str]:
    out = []
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    t0 = time.perf_counter()
    page.goto(url)
    if "app.html" in url:
        bb.wait_stage(page, {"ready"})
    page.wait_for_selector("#qc-compare tbody tr td[data-key=rmse]", timeout=600_000)
    until_idle(page)
    out.append(f"  first results          {time.perf_counter() - t0:6.1f} s (page opened, data made, 3 schemes)")

    page.evaluate(PROGRESS_WATCH)
    t = time.perf_counter()
    page.get_by_label("Range from").select_option(label="KL divergence")
    until_idle(page)
    bars, lines = progress_seen(page)
    out.append(f"  kl                     {time.perf_counter() - t:6.1f} s; {bars} progress-bar updates; "
               f"{' | '.join(lines)}")

    bits = page.get_by_label("Bits", exact=True)
    bits.fill("6")
    bits.press("Enter")
    page.wait_for_timeout(3000)
    bits.fill("8")
    t = time.perf_counter()
    bits.press("Enter")
    until_idle(page)
    out.append(f"  cancel                 {time.perf_counter() - t:6.1f} s from the second change to its results")

    page.get_by_label("Range from").select_option(label="data min/max")
    until_idle(page)
    button = page.get_by_role("button", name="Compute error-vs-memory frontier")
    button.wait_for(state="visible", timeout=600_000)
    page.evaluate(PROGRESS_WATCH)
    t = time.perf_counter()
    button.click()
    try:   # a small tensor is swept before the change below could stop it
        page.wait_for_function(FRONTIER_DRAWN, timeout=2000, polling=100)
        out.append(sweep_line(page, t, " (done within 2 s: not stopped)"))
        page.close()
        return out
    except PlaywrightTimeout:
        pass
    bits.fill("6")
    t = time.perf_counter()
    bits.press("Enter")
    button.wait_for(state="visible", timeout=600_000)
    out.append(f"  sweep stopped          {time.perf_counter() - t:6.1f} s until the button is back "
               f"(the change's results included)")
    until_idle(page)
    page.evaluate(PROGRESS_WATCH)
    t = time.perf_counter()
    button.click()
    page.wait_for_function(FRONTIER_DRAWN, timeout=1_800_000, polling=250)
    out.append(sweep_line(page, t))
    page.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--site", type=Path, default=None)
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=4096)
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    query = f"?source=synthetic&syn_rows={args.rows}&syn_cols={args.cols}"
    runs = {}
    url, proc = bi.start_native()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=bb.CHROMIUM, args=bb.ARGS)
            runs["native"] = measure(browser, url + query)
            if args.site is not None:
                server = bb.serve(args.site)
                runs["worker"] = measure(browser, f"http://127.0.0.1:{server.server_address[1]}/app.html" + query)
            browser.close()
    finally:
        proc.terminate()
    print(f"{args.rows} x {args.cols} synthetic tensor ({args.rows * args.cols:,} values)")
    for runtime, lines in runs.items():
        print(f"\n{runtime}")
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
