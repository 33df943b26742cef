"""Server-side probe of benchmarks/bench_load.py, loaded with ``panel serve --setup`` (one copy per process).

Appends one JSON line to $QC_BENCH_SERVER_LOG for every document message that carries the comparison table or the
tensor name, at the moment the server (Bokeh; Panel itself once the page is drawn) hands it to the websocket
(after the callbacks ran and the patch was serialized):
``{"t": time.perf_counter(), "session": id, "rmse": {scheme: text}, "name": text}``.
``time.perf_counter`` is CLOCK_MONOTONIC on Linux, so the bench compares it with its own clock. The app is not
changed; the probe only reads the outgoing messages.
"""
import html
import json
import os
import re
import time

from bokeh.server.views.ws import WSHandler

_ROW = re.compile(r"<tr[^>]*data-scheme='([^']*)'>(.*?)</tr>")
_RMSE = re.compile(r"<td data-key='rmse'>([^<]*)</td>")
_NAME = re.compile(r"<span class='qc-name'>([^<]*)</span>")
_LOG = open(os.environ["QC_BENCH_SERVER_LOG"], "a", buffering=1)
_send = WSHandler.send_message


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def _record(t: float, message, session_id) -> None:
    if message.msgtype not in ("PATCH-DOC", "PULL-DOC-REPLY"):
        return
    text = message.content_json   # serialized once and cached: sending reuses it
    if "qc-compare" in text or "qc-name" in text:
        entry = {"t": t, "type": message.msgtype, "session": session_id}
        for s in _strings(json.loads(text)):
            if "qc-compare" in s:
                h = html.unescape(s)
                entry["rmse"] = {html.unescape(lab): (m.group(1) if (m := _RMSE.search(cells)) else "")
                                 for lab, cells in _ROW.findall(h)}
            elif "qc-name" in s and (m := _NAME.search(html.unescape(s))):
                entry["name"] = html.unescape(m.group(1))
        _LOG.write(json.dumps(entry) + "\n")


async def send_message(self, message):
    """Bokeh's own path: the first document, and patches of a session whose page has not reported it is drawn."""
    _record(time.perf_counter(), message, self.connection.session.id if self.connection else None)
    await _send(self, message)


WSHandler.send_message = send_message

import panel.io.document as _pn_document  # noqa: E402

_dispatch = _pn_document.dispatch_tornado


def dispatch_tornado(conn, events=None, msg=None):
    """Panel's path once the page has reported the document drawn (its onload ran): Panel writes patches to the
    websocket itself, past WSHandler.send_message."""
    t = time.perf_counter()
    if msg is None and events:
        msg = conn.protocol.create("PATCH-DOC", events)
    if msg is not None:
        _record(t, msg, conn.session.id if getattr(conn, "session", None) else None)
    return _dispatch(conn, events, msg)


_pn_document.dispatch_tornado = dispatch_tornado


def _census() -> None:
    """Every 5 s: how many app sessions' settings objects are alive (without forcing a collection), so the
    bench can tell sessions kept alive (a leak) from memory the allocator keeps after freeing them."""
    import gc
    live = sum(1 for o in gc.get_objects() if type(o).__name__ == "QuantCalcSettings")
    _LOG.write(json.dumps({"t": time.perf_counter(), "live_calcs": live}) + "\n")


try:
    import panel as pn
    pn.state.schedule_task("qc-bench-census", _census, period="5s")
except Exception as exc:   # an older Panel without schedule_task: the bench prints no census
    _LOG.write(json.dumps({"t": time.perf_counter(), "census_error": repr(exc)}) + "\n")
