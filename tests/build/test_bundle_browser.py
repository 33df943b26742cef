"""The static page in Debian's Chromium, served from localhost with every other host blocked.

Two builds: the bundle as this machine builds it (the official Pyodide packages vendored, so the page computes
offline), and one built without them (the compiled packages left to the Pyodide CDN), which must say plainly
what it could not load. What the calculator does in the page (every example, control, upload and download) is
tested in tests/app, which runs the same browser tests against `panel serve` and this page.
"""
from __future__ import annotations

import time
from collections import Counter
from urllib.parse import urlparse

import pytest

from sitebuild import wait_for_stage, worker_log


pytestmark = [pytest.mark.browser, pytest.mark.slow]


def new_context(browser, root: str):
    """A fresh profile (no cache, no service worker). Other hosts do not resolve (--host-resolver-rules);
    every request for one is recorded in ``ctx.blocked``. (Requests are observed, not routed: Playwright's
    request interception together with the service worker's Cache Storage crashes Chromium's renderer.)"""
    ctx = browser.new_context()
    ctx.blocked = []
    origin = urlparse(root).netloc
    ctx.on("request", lambda r: ctx.blocked.append(r.url)
           if urlparse(r.url).netloc not in (origin, "") and not r.url.startswith(("data:", "blob:")) else None)
    return ctx


def watch(page) -> list[str]:
    """Page errors and console errors (the worker's included) collected as they happen."""
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    return problems


def page_url(root: str, site: dict, query: str = "") -> str:
    return f"{root}/build/site/{site['name']}.html{query}"


SNAPSHOT = "pyodide/boot-memory.snapshot"   # the worker's boot memory snapshot, a key of the site's cache


def boot_kind(page) -> str | None:
    """How the worker started Python this visit: "snapshot saved", "snapshot restored", ..."""
    return next((e.get("boot") for e in worker_log(page) if e.get("stage") == "pyodide-ready"), None)


def test_missing_packages_are_named_on_the_page(browser, cdn_only_root, cdn_only_site):
    info = cdn_only_site["info"]
    ctx = new_context(browser, cdn_only_root)
    page = ctx.new_page()
    t0 = time.monotonic()
    page.goto(page_url(cdn_only_root, cdn_only_site))
    # Panel's pre-rendered content: the document's roots are drawn before Python runs.
    page.wait_for_function("window.Bokeh && Bokeh.index && Bokeh.index.roots.length > 0", timeout=30_000)
    assert page.locator("[data-root-id]").count() >= 1
    shell_s = time.monotonic() - t0
    log = wait_for_stage(page, {"packages-missing"})
    stages = [e.get("stage") for e in log]
    assert "pyodide-ready" in stages, f"Pyodide's core did not boot from the vendored files: {log}"
    err = next(e for e in log if e.get("stage") == "packages-missing")
    need_cdn = sorted(set(info["cdn_only_packages"]) & set(info["startup_packages"]))
    assert sorted(err["missing"]) == need_cdn == ["markupsafe", "nh3", "numpy", "pyyaml"]
    # every package the bundle carries itself installed from localhost (lock + sha256 checked by Pyodide)
    assert sorted(err["installed"]) == sorted(set(info["startup_packages"]) - set(need_cdn))
    alert = page.locator("#quantcalc-error")
    alert.wait_for(state="visible")
    text = alert.inner_text()
    for pkg in need_cdn:
        assert pkg in text
    assert "Pyodide CDN" in text and "panel serve" in text
    # the only requests that left localhost were for exactly those packages' CDN files
    wanted = {info["cdn_only_files"][p] for p in need_cdn}
    assert set(ctx.blocked) <= wanted and ctx.blocked, ctx.blocked
    print(f"\n[browser] pre-rendered page in {shell_s:.2f} s")
    ctx.close()


def test_first_visit_computes_downloads_each_file_once_and_then_works_offline(browser, http_root, computing_site):
    server = computing_site["server"]
    ctx = new_context(browser, http_root)
    page = ctx.new_page()
    problems = watch(page)
    server.log.clear()
    t0 = time.monotonic()
    page.goto(page_url(http_root, computing_site, "?example=s0"))
    wait_for_stage(page, {"ready"})
    first_visit_s = time.monotonic() - t0
    # the worker's first document is built with the URL's settings (it used to be built with the default example
    # s3 and switched to s0 ~1 s after the page sent its location: at "ready" the page showed s3)
    assert page.locator(".qc-name").inner_text() == "example s0"
    assert boot_kind(page) == "snapshot saved"
    first_rmse = page.locator("#qc-compare tbody tr td[data-key=rmse]").first.inner_text()
    # the service worker keeps every file of the site: the ones already downloaded come from the HTTP cache; the
    # worker keeps its boot snapshot next to them
    site_files = {p.relative_to(computing_site["dir"]).as_posix() for p in computing_site["dir"].rglob("*")
                  if p.is_file()} - {"serviceWorker.js", "SHA256SUMS", "size-report.txt"} | {SNAPSHOT}
    deadline = time.monotonic() + 90
    while True:
        cached = set(page.evaluate("""async () => {
            const reg = await navigator.serviceWorker.ready;
            const names = (await caches.keys()).filter((n) => n.startsWith('quantcalc-' + reg.scope));
            if (names.length !== 1) return [];
            const keys = await (await caches.open(names[0])).keys();
            return keys.map((r) => decodeURIComponent(new URL(r.url).pathname).split('/build/site/')[1]);
        }"""))
        if site_files <= cached or time.monotonic() > deadline:
            break
        page.wait_for_timeout(500)
    assert site_files <= cached, f"not cached: {sorted(site_files - cached)[:10]}"
    served = Counter(path for path, _ in server.log)
    twice = {p: n for p, n in served.items() if n > 1}
    assert not twice, f"downloaded more than once on the first visit: {twice}"
    mb = sum(n for _, n in server.log) / 1e6
    assert not ctx.blocked, ctx.blocked

    # the network goes away: the page still starts and computes
    ctx.set_offline(True)
    server.log.clear()
    t1 = time.monotonic()
    page.reload()
    wait_for_stage(page, {"ready"})
    offline_s = time.monotonic() - t1
    assert page.locator(".qc-name").inner_text() == "example s0"
    # Python restored from the snapshot computes what a fresh one did
    assert boot_kind(page) == "snapshot restored"
    before = page.locator("#qc-compare tbody tr td[data-key=rmse]").first.inner_text()
    assert before == first_rmse
    bits = page.get_by_label("Bits", exact=True)
    bits.fill("4")
    bits.press("Enter")
    deadline = time.monotonic() + 30
    while page.locator("#qc-compare tbody tr td[data-key=rmse]").first.inner_text() == before:
        assert time.monotonic() < deadline, "no recompute offline"
        page.wait_for_timeout(100)
    assert server.log == [], f"requests reached the server while offline: {server.log[:5]}"
    ctx.set_offline(False)
    assert not problems, problems
    print(f"\n[browser] first visit interactive in {first_visit_s:.1f} s ({mb:.1f} MB, each file once); "
          f"offline reload interactive in {offline_s:.1f} s")
    ctx.close()


def test_a_damaged_boot_snapshot_is_replaced_and_the_page_still_computes(browser, http_root, computing_site):
    ctx = new_context(browser, http_root)
    page = ctx.new_page()
    problems = watch(page)
    page.goto(page_url(http_root, computing_site, "?example=s1"))
    wait_for_stage(page, {"ready"})
    rmse = page.locator("#qc-compare tbody tr td[data-key=rmse]").first.inner_text()
    damage = """async (key) => {
        const reg = await navigator.serviceWorker.ready;
        const name = (await caches.keys()).find((n) => n.startsWith('quantcalc-' + reg.scope));
        const cache = await caches.open(name);
        const url = new URL(key, reg.scope).href;
        for (let i = 0; i < 100 && !(await cache.match(url)); i++) await new Promise((r) => setTimeout(r, 200));
        if (!(await cache.match(url))) return false;
        await cache.put(url, new Response(new Uint8Array(4096).fill(7)));
        return true;
    }"""
    assert page.evaluate(damage, SNAPSHOT), "the first visit kept no boot snapshot"
    page.reload()
    wait_for_stage(page, {"ready"})
    assert boot_kind(page) == "snapshot saved"     # refused, Python started anew and saved a new one
    assert page.locator(".qc-name").inner_text() == "example s1"
    assert page.locator("#qc-compare tbody tr td[data-key=rmse]").first.inner_text() == rmse
    assert not problems, problems
    ctx.close()


def test_docs_example_page_embeds_the_app_in_an_iframe(browser, http_root, built_site):
    ctx = new_context(browser, http_root)
    page = ctx.new_page()
    page.goto(f"{http_root}/docs/embed-example.html")
    frame_el = page.locator("iframe#quantcalc")
    frame_el.wait_for(state="visible")
    assert "?example=" in frame_el.get_attribute("src")
    box = frame_el.bounding_box()
    assert box["width"] > 300 and box["height"] > 300
    frame = page.frame_locator("iframe#quantcalc")
    frame.locator("[data-root-id]").first.wait_for(state="attached", timeout=30_000)
    inner = next(f for f in page.frames if f.url.split("?")[0].endswith("/build/site/app.html"))
    computing = not built_site["info"]["cdn_only_packages"]
    wait_for_stage(inner, {"ready"} if computing else {"packages-missing"})
    assert any(e.get("stage") == "pyodide-ready" for e in worker_log(inner))
    ctx.close()
