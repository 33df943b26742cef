"""Many users on one server: N concurrent sessions of `panel serve app.py`, each changing settings.

Prints (never asserts) how long each session waits for its comparison table to show the new numbers, the
server's CPU and resident memory before, during and after the sessions, and whether any session ever showed
another session's data.

    python benchmarks/bench_load.py                        # 20 sessions, Bokeh websocket clients, this tree's app.py
    python benchmarks/bench_load.py --client browser --sessions 5     # Playwright pages of Debian's Chromium
    python benchmarks/bench_load.py -- --num-procs 2       # flags after "--" go to `panel serve`
    python benchmarks/bench_load.py --py-spy prof.txt      # also sample the server with py-spy (if installed)

Two clients:

* ``bokeh`` (default): one ``bokeh.client`` session per user, each on its own thread and IOLoop, exchanging the
  same websocket messages a browser does (the document, then property patches both ways); widgets are changed
  through their models (Bits, Channels, ...), so the server runs exactly what a user's edit runs. Nothing is
  rendered: the numbers are the server's, plus the client's Python decoding of each patch. Models that Panel
  defines at run time (ReactiveHTML data models) are decoded into stand-ins.
* ``browser``: Playwright pages of Debian's Chromium (``--contexts`` browser contexts), opened on
  ``app?example=s0&tensor_name=bench-KK``. On this 2-core machine 20 Chromium pages saturate the CPU while
  rendering, so this client measures the browsers more than the server; use it with a few sessions.

Each session does, all sessions at once:

  open      a new session until its comparison table is shown (bokeh: then example s0 and tensor name
            bench-KK are set, untimed)
  s0 bits   Bits 8 -> 4 on example s0 (4 x 5 values)
  synth     source "synthetic", Values/channel 1024, Channels 256 (64 x 256 -> 256 x 1024, seed 0)
  seed      Seed 0 -> 100 + KK: a tensor of its own (new data, 262,144 values)
  big bits  Bits 4 -> 8 on that tensor

A step's time runs from just before the first change to the first moment the session's comparison table shows
the RMSE of every compared scheme as quantcore computes it here for that session's own settings and data
(formatted as the app formats it), under the session's own tensor name. Every distinct state of the table and
name a session receives is recorded (polled every 50 ms); afterwards each is checked: a name or an RMSE set
belonging to another session is a leak. Server memory is VmRSS summed over the server and its children, from
/proc, sampled every 0.25 s; server CPU is utime + stime from /proc.
"""
from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import quantcore as qc  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu"]
SYN_ROWS, SYN_COLS = 256, 1024
STEPS = ("open", "s0 bits", "synth", "seed", "big bits")

# In-page recorder: every distinct (tensor name, RMSE per scheme) state of the page, with performance.now().
# Panel renders panes in shadow roots: search through them, remember where the table was found.
RECORDER = r"""
(() => {
  const qc = window.__qc = {log: [], last: null, t0: 0, roots: {}};
  function deep(sel, root) {
    const el = root.querySelector(sel);
    if (el) return [el, root];
    for (const n of root.querySelectorAll('*')) {
      if (n.shadowRoot) { const f = deep(sel, n.shadowRoot); if (f) return f; }
    }
    return null;
  }
  function find(sel) {
    const r = qc.roots[sel];
    if (r && r.isConnected !== false) { const el = r.querySelector(sel); if (el) return el; }
    const f = deep(sel, document);
    if (!f) return null;
    qc.roots[sel] = f[1];
    return f[0];
  }
  setInterval(() => {
    const t = find('#qc-compare'), nm = find('.qc-name');
    const rmse = {};
    if (t) for (const tr of t.querySelectorAll('tbody tr')) {
      const td = tr.querySelector('td[data-key=rmse]');
      if (td) rmse[tr.getAttribute('data-scheme')] = td.innerText.trim();
    }
    const s = JSON.stringify([nm ? nm.innerText.trim() : '', rmse]);
    if (s !== qc.last) { qc.last = s; qc.log.push([performance.now(), s]); }
  }, 50);
})();
"""

WAIT_JS = """([want, name]) => window.__qc.log.some(([t, s]) => {
  if (t < window.__qc.t0) return false;
  const [nm, rmse] = JSON.parse(s);
  return nm === name && Object.keys(want).length === Object.keys(rmse).length
         && Object.keys(want).every(k => rmse[k] === want[k]);
})"""

FIRST_MATCH_JS = """([want, name]) => {
  for (const [t, s] of window.__qc.log) {
    if (t < window.__qc.t0) continue;
    const [nm, rmse] = JSON.parse(s);
    if (nm === name && Object.keys(want).length === Object.keys(rmse).length
        && Object.keys(want).every(k => rmse[k] === want[k])) return t - window.__qc.t0;
  }
  return null;
}"""


# --- what the page must show, computed here --------------------------------------------------------------------

def fmt6(v: float) -> str:
    """app.fmt(v, 6) for a finite float: the table's formatting."""
    v = float(v)
    return str(int(v)) if v == int(v) and abs(v) < 1e15 else f"{v:.6g}"


def expected_rmse(data, bits: int | None = None, example: str = "s0", group: int | None = None) -> dict[str, str]:
    """{scheme label: RMSE as shown} for an example's settings (per-tensor and per-channel, as the app compares
    examples s0 and s3) at ``bits`` (default: the example's); with ``group``, also per-group of that size (new
    data resets the example's choice of schemes to the app's default: tensor, channel, group 32)."""
    spec = qc.get_example(example).spec
    f = spec.fmt
    bits = f.bits if bits is None else bits
    base = spec.with_(fmt=qc.IntFormat(bits, f.signed, f.narrow, f.reduce_range))
    specs = [base.with_(granularity=qc.PerTensor()), base.with_(granularity=qc.PerChannel(0))]
    if group is not None:
        specs.append(base.with_(granularity=qc.PerGroup(group, axis=-1)))
    cmp = qc.compare(data, specs)
    return {r["label"]: fmt6(r["rmse"]) for r in cmp.summary_rows()}


APP_GROUP = 32   # app.py QuantCalcSettings.group's default


def synthetic(seed: int) -> np.ndarray:
    return qc.synthetic(rows=SYN_ROWS, cols=SYN_COLS, distribution="normal", channel_spread=1.0,
                        outlier_channels=0, seed=seed)


# --- the server --------------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_pids(root: int) -> list[int]:
    """root and its descendants (from /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def census(probe_log: Path, closed: float) -> str:
    """The server hook's counts of live QuantCalcSettings objects, from the last sample before ``closed``
    (perf_counter) to the end."""
    rows = []
    if probe_log.exists():
        for line in probe_log.read_text().splitlines():
            e = json.loads(line)
            if "census_error" in e:
                return e["census_error"]
            if "live_calcs" in e:
                rows.append((e["t"], e["live_calcs"]))
    before = [n for t, n in rows if t <= closed][-1:]
    after = [f"+{t - closed:.0f} s {n}" for t, n in rows if t > closed]
    return (f"at close {before[0] if before else '?'}; " + ", ".join(after)) if rows else "no census"


def rss_mib(root: int) -> float:
    total = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def cpu_seconds(root: int) -> float:
    """utime + stime of the server tree (clock ticks -> s)."""
    total = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                f = fh.read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


class Sampler(threading.Thread):
    """VmRSS of the server tree every 0.25 s: (seconds since start, MiB)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.samples, self.stop = pid, [], threading.Event()
        self.t0 = time.perf_counter()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.perf_counter() - self.t0, rss_mib(self.pid)))
            self.stop.wait(0.25)

    def peak(self, a: float, b: float) -> float:
        return max((m for t, m in self.samples if a <= t <= b), default=float("nan"))


HOOK = Path(__file__).with_name("bench_load_server_hook.py")


def start_server(app: Path, port: int, extra: list[str], log_path: Path, probe_log: Path) -> subprocess.Popen:
    """`panel serve` as scripts/serve.sh runs it, plus ``extra`` flags and the probe (``--setup``)."""
    panel = Path(sys.executable).with_name("panel")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               QC_BENCH_SERVER_LOG=str(probe_log))
    cmd = [str(panel), "serve", str(app), "--address", "127.0.0.1", "--port", str(port),
           f"--allow-websocket-origin=127.0.0.1:{port}", "--setup", str(HOOK), *extra]
    print("server:", " ".join(cmd[1:]))
    # a session of its own: --num-procs forks workers, which the bench stops with the whole group
    proc = subprocess.Popen(cmd, cwd=app.parent, stdout=open(log_path, "w"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/{app.stem}"
    deadline = time.time() + 90
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise SystemExit(f"panel serve did not start; see {log_path}")
        time.sleep(0.3)


# --- one session ----------------------------------------------------------------------------------------------------

class Session:
    def __init__(self, k: int, url: str, timeout_s: float):
        self.k, self.name = k, f"bench-{k:02d}"
        self.url = f"{url}?example=s0&tensor_name={self.name}"
        self.timeout_ms = timeout_s * 1000
        self.times: dict[str, float | None] = {}
        self.errors: list[str] = []
        self.log: list = []

    async def step(self, page, label: str, want: dict[str, str], action) -> None:
        await page.evaluate("window.__qc.t0 = performance.now()")
        try:
            await action()
            await page.wait_for_function(WAIT_JS, arg=[want, self.name], timeout=self.timeout_ms, polling=100)
            self.times[label] = await page.evaluate(FIRST_MATCH_JS, [want, self.name]) / 1000
        except Exception as exc:  # a timeout or a page error: recorded, the session stops here
            self.times[label] = None
            self.errors.append(f"{label}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
            raise

    async def run(self, ctx, expect: dict, start: asyncio.Event) -> None:
        page = await ctx.new_page()
        await page.add_init_script(RECORDER)
        await start.wait()
        try:
            t_open = time.perf_counter()
            await page.goto(self.url, timeout=self.timeout_ms)
            await page.evaluate("window.__qc.t0 = 0")
            await page.wait_for_function(WAIT_JS, arg=[expect["s0 8"], self.name], timeout=self.timeout_ms,
                                         polling=100)
            self.times["open"] = time.perf_counter() - t_open

            async def fill(label: str, value: str) -> None:
                box = page.get_by_label(label, exact=True)
                await box.fill(value)
                await box.press("Enter")

            await self.step(page, "s0 bits", expect["s0 4"], lambda: fill("Bits", "4"))

            async def to_synthetic() -> None:
                await page.get_by_role("button", name="synthetic", exact=True).click()
                await fill("Values/channel", str(SYN_COLS))
                await fill("Channels", str(SYN_ROWS))
            await self.step(page, "synth", expect["syn 0 4"], to_synthetic)
            await self.step(page, "seed", expect[f"syn {100 + self.k} 4"], lambda: fill("Seed", str(100 + self.k)))
            await self.step(page, "big bits", expect[f"syn {100 + self.k} 8"], lambda: fill("Bits", "8"))
        except Exception as exc:
            if not self.errors:
                self.errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
        finally:
            try:
                self.log = await page.evaluate("window.__qc.log")
            except Exception:
                self.log = []
            await page.close()


def leaks(sessions: list[Session], expect: dict) -> list[str]:
    """States a page showed that belong to another session: its name, or its own tensor's RMSE set."""
    own_rmse = {s.k: {json.dumps(expect[f"syn {100 + s.k} {b}"], sort_keys=True) for b in (4, 8)} for s in sessions}
    names = {s.name for s in sessions}
    out = []
    for s in sessions:
        others = set().union(*(v for k, v in own_rmse.items() if k != s.k)) if len(sessions) > 1 else set()
        for t, state in s.log:
            nm, rmse = json.loads(state)
            if nm in names and nm != s.name:
                out.append(f"{s.name} showed the name {nm!r}")
            if rmse and json.dumps(rmse, sort_keys=True) in others:
                out.append(f"{s.name} showed another session's numbers: {rmse}")
    return out


# --- the Bokeh websocket client ---------------------------------------------------------------------------------

_ROW = re.compile(r"<tr[^>]*data-scheme='([^']*)'>(.*?)</tr>")
_RMSE = re.compile(r"<td data-key='rmse'>([^<]*)</td>")
_NAME = re.compile(r"<span class='qc-name'>([^<]*)</span>")


def _install_stand_ins() -> None:
    """Let bokeh.client decode models Panel creates at run time (ReactiveHTML data models such as 'key3'):
    a DataModel with an Any property per attribute, ignoring attributes it does not know."""
    import bokeh.core.serialization as ser
    import panel  # noqa: F401  (registers Panel's Bokeh models, so the client can decode them)
    from bokeh.core.properties import Any as AnyProp
    from bokeh.model import DataModel, Model

    if getattr(ser.Deserializer, "_bench_stand_ins", False):
        return
    original = ser.Deserializer._decode_object_ref

    def set_from_json(inst, key, value, *, setter=None):
        if key in inst.properties():
            DataModel.set_from_json(inst, key, value, setter=setter)

    def decode_object_ref(self, obj):
        name = obj.get("name")
        if name and name != "Figure" and name not in Model.model_class_reverse_map:
            props = {k: AnyProp() for k in (obj.get("attributes") or {}) if k not in ("name", "tags")}
            type(f"StandIn_{name}", (DataModel,), {"__qualified_model__": name, "__module__": "bench_load",
                                                   "set_from_json": set_from_json, **props})
        return original(self, obj)

    ser.Deserializer._decode_object_ref = decode_object_ref
    ser.Deserializer._bench_stand_ins = True


class BokehSession(threading.Thread):
    """One user: a bokeh.client session on its own thread and IOLoop; widgets are changed on that loop."""

    def __init__(self, k: int, url: str, timeout_s: float):
        super().__init__(daemon=True)
        self.k, self.name, self.url, self.timeout_s = k, f"bench-{k:02d}", url, timeout_s
        self.times: dict[str, float | None] = {}
        self.errors: list[str] = []
        self.log: list = []          # (perf_counter, json state) as received
        self.ready = threading.Event()
        self.go = threading.Event()
        self.loop = None
        self.session = None
        self.models: dict[str, object] = {}
        self._last = None
        self.t_open = 0.0
        self.steps: list[tuple[str, float, dict]] = []   # (label, start, table wanted) for the server's side
        self.figures = 0                                 # Bokeh figures in the session's document at the end

    # on the session's own thread ------------------------------------------------------------------------
    def run(self) -> None:
        from bokeh.client import pull_session
        from tornado.ioloop import IOLoop, PeriodicCallback
        asyncio.set_event_loop(asyncio.new_event_loop())
        self.loop = IOLoop.current()
        self.go.wait()
        try:
            self.t_open = time.perf_counter()
            self.session = pull_session(url=self.url, io_loop=self.loop)
            self._find_models()
            self._document_ready()
            self._poll()
            PeriodicCallback(self._poll, 50).start()
        except Exception as exc:
            self.errors.append(f"open: {type(exc).__name__}: {str(exc)[:160]}")
            self.ready.set()
            return
        self.ready.set()
        self.session._connection.loop_until_closed()

    def _document_ready(self) -> None:
        """Tell the server the document is drawn, as BokehJS does: Panel's onload callbacks run then (the app
        builds and attaches its five figures, which every later change updates)."""
        from bokeh.document.events import MessageSentEvent
        from bokeh.events import DocumentReady
        doc = self.session.document
        doc.callbacks.trigger_on_change(MessageSentEvent(doc, "bokeh_event", DocumentReady()))

    def _find_models(self) -> None:
        from bokeh.models import RadioButtonGroup, Select, Spinner, TextInput
        for m in list(self.session.document.models):
            title = getattr(m, "title", None)
            if isinstance(m, Spinner) and title in ("Bits", "Channels", "Values/channel", "Seed"):
                self.models[title] = m
            elif isinstance(m, TextInput) and title == "Tensor name":
                self.models[title] = m
            elif isinstance(m, Select) and title == "Example":
                self.models[title] = m
            elif isinstance(m, RadioButtonGroup) and "synthetic" in (m.labels or []):
                self.models["source"] = m
            text = getattr(m, "text", None)
            if isinstance(text, str):
                if "qc-compare" in text:
                    self.models["table"] = m
                elif "qc-name" in text:
                    self.models["title"] = m
        missing = {"Bits", "Channels", "Values/channel", "Seed", "Tensor name", "Example", "source", "table",
                   "title"} - set(self.models)
        if missing:
            raise RuntimeError(f"models not found: {sorted(missing)}")

    def _poll(self) -> None:
        table, title = self.models["table"].text, self.models["title"].text
        key = (table, title)
        if key == self._last:
            return
        self._last = key
        t = html.unescape(table)
        rmse = {html.unescape(lab): (_RMSE.search(cells).group(1) if _RMSE.search(cells) else "")
                for lab, cells in _ROW.findall(t)}
        m = _NAME.search(html.unescape(title))
        self.log.append((time.perf_counter(), json.dumps([html.unescape(m.group(1)) if m else "", rmse])))

    # from the controller (asyncio) ------------------------------------------------------------------------
    def set(self, model: str, attr: str, value) -> None:
        m = self.models[model]
        self.loop.add_callback(lambda: setattr(m, attr, value))

    def first_match(self, since: float, want: dict[str, str], name: str | None) -> float | None:
        for t, state in list(self.log):
            if t < since:
                continue
            nm, rmse = json.loads(state)
            if (name is None or nm == name) and rmse == want:
                return t - since
        return None

    async def wait(self, since: float, want: dict[str, str], name: str | None, label: str) -> float:
        deadline = time.perf_counter() + self.timeout_s
        while True:
            dt = self.first_match(since, want, name)
            if dt is not None:
                return dt
            if time.perf_counter() > deadline:
                self.times[label] = None
                raise TimeoutError(f"{label}: no table with {want} within {self.timeout_s:.0f} s; last state "
                                   f"{self.log[-1][1][:200] if self.log else None}")
            await asyncio.sleep(0.05)

    async def step(self, label: str, want: dict[str, str], *changes) -> None:
        since = time.perf_counter()
        self.steps.append((label, since, want))
        for model, attr, value in changes:
            self.set(model, attr, value)
        self.times[label] = await self.wait(since, want, self.name, label)

    async def script(self, expect: dict) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.ready.wait)
            if self.errors:
                return
            # open: the first table of the new session (example s3, the app's default)
            self.steps.append(("open", self.t_open, expect["s3"]))
            self.times["open"] = await self.wait(self.t_open, expect["s3"], None, "open")
            since = time.perf_counter()
            ex = self.models["Example"]
            s0_label = next(o if isinstance(o, str) else o[1] for o in ex.options
                            if (o if isinstance(o, str) else o[1]).startswith("s0"))
            self.set("Example", "value", s0_label)
            await self.wait(since, expect["s0 8"], "example s0", "example s0")
            since = time.perf_counter()
            self.set("Tensor name", "value", self.name)
            await self.wait(since, expect["s0 8"], self.name, "name")
            await self.step("s0 bits", expect["s0 4"], ("Bits", "value", 4))
            await self.step("synth", expect["syn 0 4"], ("source", "active", self.models["source"].labels.index(
                "synthetic")), ("Values/channel", "value", SYN_COLS), ("Channels", "value", SYN_ROWS))
            await self.step("seed", expect[f"syn {100 + self.k} 4"], ("Seed", "value", 100 + self.k))
            await self.step("big bits", expect[f"syn {100 + self.k} 8"], ("Bits", "value", 8))
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {str(exc)[:240]}")
        finally:
            if self.session is not None:
                def close() -> None:
                    self.figures = sum(type(m).__name__ == "figure" for m in self.session.document.models)
                    self.session.close()
                self.loop.add_callback(close)


async def drive_bokeh(url: str, n: int, timeout_s: float, expect: dict) -> tuple[list[BokehSession], float]:
    _install_stand_ins()
    sessions = [BokehSession(k, url, timeout_s) for k in range(n)]
    for s in sessions:
        s.start()
    await asyncio.sleep(0.5)
    t0 = time.perf_counter()
    for s in sessions:
        s.go.set()
    await asyncio.gather(*(s.script(expect) for s in sessions))
    elapsed = time.perf_counter() - t0
    for s in sessions:
        s.join(30)
    return sessions, elapsed


# --- the run ----------------------------------------------------------------------------------------------------------

def server_times(sessions: list, probe_log: Path) -> dict[str, list[float]]:
    """Per step, the time until the server SENT the wanted table to that session (from the probe's log)."""
    by_session: dict[str, list[dict]] = {}
    if probe_log.exists():
        for line in probe_log.read_text().splitlines():
            e = json.loads(line)
            if "rmse" in e:
                by_session.setdefault(e["session"], []).append(e)
    out: dict[str, list[float]] = {}
    for s in sessions:
        sent = by_session.get(getattr(s.session, "id", None), [])
        for label, since, want in getattr(s, "steps", []):
            t = next((e["t"] for e in sent if e["t"] >= since and e["rmse"] == want), None)
            if t is not None:
                out.setdefault(label, []).append(t - since)
    return out


def summary(values: list[float]) -> str:
    if not values:
        return "no completed step"
    v = sorted(values)
    p90 = v[min(len(v) - 1, int(np.ceil(0.9 * len(v))) - 1)]
    return f"median {statistics.median(v):6.2f} s   p90 {p90:6.2f} s   max {v[-1]:6.2f} s"


async def drive(url: str, n: int, contexts: int, timeout_s: float, expect: dict) -> tuple[list[Session], float]:
    from playwright.async_api import async_playwright
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        ctxs = [await browser.new_context(viewport={"width": 1500, "height": 1100}) for _ in range(contexts)]
        sessions = [Session(k, url, timeout_s) for k in range(n)]
        start = asyncio.Event()
        tasks = [asyncio.create_task(s.run(ctxs[s.k % contexts], expect, start)) for s in sessions]
        await asyncio.sleep(1.0)  # every page created; then all sessions start together
        t0 = time.perf_counter()
        start.set()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
        for c in ctxs:
            await c.close()
        await browser.close()
    return sessions, elapsed


def report(rnd: int, args, extra: list[str], sessions: list, elapsed: float, cpu_run: float, cpu_client: float,
           load: tuple[list[str], list[str]], expect: dict, probe_log: Path) -> None:
    who = ("Bokeh websocket clients (this process's CPU: "
           f"{cpu_client:.1f} s)" if args.client == "bokeh" else f"browser pages in {args.contexts} contexts")
    print(f"\nround {rnd}: {args.sessions} sessions, {who}, all started together; server flags: "
          f"{' '.join(extra) or '(none)'}; wall {elapsed:.1f} s; server CPU {cpu_run:.1f} s "
          f"({cpu_run / elapsed:.2f} cores); load average before {' '.join(load[0])}, after {' '.join(load[1])}")
    print(f"{'step':10s} {'done':>5s} {'timeouts/errors':>16s}   time until the session has the new numbers")
    for step in STEPS:
        done = [s.times[step] for s in sessions if s.times.get(step) is not None]
        failed = sum(1 for s in sessions if step in s.times and s.times[step] is None)
        print(f"{step:10s} {len(done):5d} {failed:16d}   {summary(done)}")
    sent = server_times(sessions, probe_log)
    if sent:
        print("same steps, until the server sent that table (probe in the server; excludes the client's decoding):")
        for step in STEPS:
            print(f"{step:10s} {len(sent.get(step, [])):5d} {'':16s}   {summary(sent.get(step, []))}")
    for s in sessions:
        for e in s.errors:
            print(f"  {s.name}: {e}")
    if isinstance(sessions[0], BokehSession):
        figures = Counter(s.figures for s in sessions)
        print("figures in each session's document at its end (5: the page's onload ran, as in a browser): "
              + ", ".join(f"{n} in {k} session(s)" for n, k in sorted(figures.items())))
    bad = leaks(sessions, expect)
    n_states = sum(len(s.log) for s in sessions)
    print(f"cross-session data: {len(bad)} leak(s) in {n_states} recorded states" +
          "".join(f"\n  {b}" for b in bad[:10]))


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=1, help="run the sessions this many times on the same server "
                                                          "(memory kept between rounds shows what is not released)")
    ap.add_argument("--client", choices=["bokeh", "browser"], default="bokeh")
    ap.add_argument("--contexts", type=int, default=4, help="browser client: contexts the pages are spread over")
    ap.add_argument("--app", type=Path, default=ROOT / "app.py")
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds one step may take before it counts "
                                                                  "as a timeout")
    ap.add_argument("--linger", type=float, default=45.0, help="seconds to watch memory after the sessions close "
                                                                "(Bokeh drops unused sessions after 15-17 s)")
    ap.add_argument("--py-spy", metavar="OUT", help="sample the server with `py-spy record` into OUT (raw)")
    args = ap.parse_args(argv)
    if args.client == "browser" and not os.path.exists(CHROMIUM):
        raise SystemExit(f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install chromium)")

    t = time.perf_counter()
    ex0 = qc.get_example("s0")
    expect = {"s3": expected_rmse(qc.get_example("s3").rows, example="s3"),
              "s0 8": expected_rmse(ex0.rows, 8), "s0 4": expected_rmse(ex0.rows, 4),
              "syn 0 4": expected_rmse(synthetic(0), 4, group=APP_GROUP)}
    for k in range(args.sessions):
        x = synthetic(100 + k)
        expect[f"syn {100 + k} 4"] = expected_rmse(x, 4, group=APP_GROUP)
        expect[f"syn {100 + k} 8"] = expected_rmse(x, 8, group=APP_GROUP)
    print(f"expected tables computed in {time.perf_counter() - t:.1f} s")

    port = free_port()
    log_path = Path("/tmp") / f"bench_load_panel_{port}.log"
    probe_log = Path("/tmp") / f"bench_load_sent_{port}.jsonl"
    proc = start_server(args.app.resolve(), port, extra, log_path, probe_log)
    spy = None
    memory = []
    try:
        time.sleep(2.0)
        rss_idle = rss_mib(proc.pid)
        sampler = Sampler(proc.pid)
        sampler.start()
        if args.py_spy:
            spy = subprocess.Popen(["py-spy", "record", "--pid", str(proc.pid), "--format", "raw", "--rate", "50",
                                    "--subprocesses", "--output", args.py_spy],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/{args.app.stem}"
        for rnd in range(1, args.rounds + 1):
            with open("/proc/loadavg") as fh:
                load_before = fh.read().split()[:3]
            cpu0, cpu_client0 = cpu_seconds(proc.pid), time.process_time()
            t_start = time.perf_counter() - sampler.t0
            if args.client == "bokeh":
                sessions, elapsed = asyncio.run(drive_bokeh(url, args.sessions, args.timeout, expect))
            else:
                sessions, elapsed = asyncio.run(drive(url, args.sessions, args.contexts, args.timeout, expect))
            cpu_client = time.process_time() - cpu_client0
            t_closed = time.perf_counter() - sampler.t0
            cpu_run = cpu_seconds(proc.pid) - cpu0
            with open("/proc/loadavg") as fh:
                load_after = fh.read().split()[:3]
            report(rnd, args, extra, sessions, elapsed, cpu_run, cpu_client, (load_before, load_after), expect,
                   probe_log)
            time.sleep(args.linger)
            marks = [t_closed + d for d in range(0, int(args.linger) + 1, 10)]
            timeline = ", ".join(f"+{m - t_closed:.0f} s {min(sampler.samples, key=lambda sm: abs(sm[0] - m))[1]:.0f}"
                                 for m in marks)
            memory.append(f"round {rnd}: peak {sampler.peak(t_start, t_closed):.0f}; after the sessions closed "
                          f"{timeline}")
            print(f"server RSS (MiB): idle before round 1 {rss_idle:.0f}; {memory[-1]}")
            print(f"app sessions alive in the server (settings objects, census every 5 s): {census(probe_log, t_closed + sampler.t0)}")
        sampler.stop.set()
        if spy is not None:
            spy.send_signal(2)
            spy.wait(60)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    print(f"\nserver log: {log_path}")


if __name__ == "__main__":
    main()
