"""Reading the calculator page like a user: tables as text, with retries while the app recomputes.

A plain module (not conftest) so the tests import it by a name no other test folder uses."""
from __future__ import annotations

import time
from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[2] / "tests" / "artifacts"


def is_static(url: str) -> bool:
    """True for the static page (every computation in the browser's Pyodide worker), False for `panel serve`."""
    return "/build/site/" in url


def read_table(page, table_id: str) -> list[dict[str, str]]:
    """Rows of an HTML results table (current page) as {column title: cell text}."""
    table = page.locator(f"#{table_id}")
    headers = [t.strip() for t in table.locator("thead th").all_inner_texts()]
    rows = []
    for r in table.locator("tbody tr").all():
        cells = [t.strip() for t in r.locator("th, td").all_inner_texts()]
        rows.append(dict(zip(headers, cells)))
    return rows


def read_compare(page) -> dict[str, dict[str, str]]:
    """The scheme comparison table: {scheme label: {data-key: text}} plus '_best' for the highlighted row."""
    out = {}
    for row in page.locator("#qc-compare tbody tr").all():
        label = row.get_attribute("data-scheme")
        cells = {c.get_attribute("data-key"): c.inner_text().strip() for c in row.locator("td").all()}
        cells["_best"] = "qc-best" in (row.get_attribute("class") or "")
        out[label] = cells
    return out


def poll(check, timeout: float = 15.0, interval: float = 0.25):
    """Retry `check` until it stops raising AssertionError (the app recomputes asynchronously)."""
    deadline = time.time() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.time() > deadline:
                raise
            time.sleep(interval)


class PageStandIn:
    """What the page does for a BrowserFile: answers each ``file_request`` of ``reader`` (the calculator or the
    Model view's scan) with those bytes of the file (``blob``; or ``{key: bytes}``, the files picked together,
    each request answered from the file its ``file`` key names). ``hold=True``: requests wait until
    :meth:`answer` is called."""

    def __init__(self, reader, blob: bytes | dict[str, bytes], hold: bool = False):
        self.reader, self.blob, self.hold = reader, blob, hold
        self.sent, self.requests, self.waiting, self.largest = 0, 0, [], 0
        reader.param.watch(self._asked, "file_request")

    def _asked(self, event) -> None:
        self.requests += 1
        if self.hold:
            self.waiting.append(event.new)
        else:
            self._send(event.new)

    def _send(self, r: dict) -> None:
        blob = self.blob[r["file"]] if isinstance(self.blob, dict) else self.blob
        data = blob[r["start"]:r["stop"]]
        self.sent += len(data)
        self.largest = max(self.largest, len(data))
        self.reader.file_bytes(r["id"], r["start"], data)

    def answer(self) -> bool:
        """Answer the oldest held request; False when none waits."""
        if not self.waiting:
            return False
        self._send(self.waiting.pop(0))
        return True
