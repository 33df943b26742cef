"""Reading a file that lives in the browser, by byte range, without ever holding the whole file.

A page gets a user's file as a ``File`` it can slice (``file.slice(a, b).arrayBuffer()``), asynchronously. The
readers of this package are synchronous and ask their :class:`~quantcore.io._source.Source` for exact byte
ranges (a header, then one tensor's bytes), so they run unchanged on a :class:`RangeCache`: a Source that
returns the ranges fetched so far, or raises :class:`NeedBytes` naming the first range it lacks. The caller
fetches that range (:func:`fetch_span` widens it to a sensible request), adds it with :meth:`RangeCache.add`,
and calls the reader again. Parsing is deterministic and cheap next to the transfer, so restarting it costs
little; a safetensors or .npy header takes two or three rounds, a GGUF header with a large vocabulary a few
more (read ahead 1 MiB at a time), a tensor as many rounds as it has 8 MiB pieces.

Only what the readers ask for is ever fetched: for .safetensors / .gguf the header and the chosen tensor's
bytes; text, CSV, .npy and .npz are read whole (their formats need it; :class:`~quantcore.io._common.Limits`
caps their size as for any other source).
"""
from __future__ import annotations

import bisect
import itertools
from typing import Any, Callable, TypeVar

from ._source import Source

T = TypeVar("T")

READ_AHEAD = 1 << 20   # a header read asks for at least this much (GGUF metadata is read field by field)
PIECE = 8 << 20        # the largest single request: one websocket message stays well under Bokeh's 20 MB


class NeedBytes(Exception):
    """The reader needs bytes ``[offset, offset + n)`` that have not been fetched yet (not an input error);
    ``source``: the name of the :class:`RangeCache` that lacks them (which file, when a reader reads several)."""

    def __init__(self, offset: int, n: int, source: str | None = None):
        super().__init__(f"bytes {offset:,}..{offset + n:,} are not loaded yet")
        self.offset, self.n, self.source = offset, n, source


class RangeCache(Source):
    """A file of ``size`` bytes known only by the ranges added so far (kept sorted and merged)."""

    def __init__(self, size: int, filename: str | None = None):
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"file size must be a non-negative integer, got {size!r}")
        self._data = None
        self._path = None
        self.size = size
        self.name = self.filename = filename
        self._starts: list[int] = []
        self._chunks: list[bytes] = []

    @property
    def cached_bytes(self) -> int:
        return sum(len(c) for c in self._chunks)

    def add(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Record the file's bytes at ``offset`` (merged with touching or overlapping ranges)."""
        data = bytes(data)
        if offset < 0 or offset + len(data) > self.size:
            raise ValueError(f"bytes {offset:,}..{offset + len(data):,} lie outside a file of {self.size:,} bytes")
        if not data:
            return
        start, stop = offset, offset + len(data)
        i = bisect.bisect_right(self._starts, start) - 1
        if i >= 0 and self._starts[i] + len(self._chunks[i]) >= start:
            i_first = i
        else:
            i_first = i + 1
        j = i_first
        while j < len(self._starts) and self._starts[j] <= stop:
            j += 1
        if i_first == j:
            self._starts.insert(i_first, start)
            self._chunks.insert(i_first, data)
            return
        new_start = min(start, self._starts[i_first])
        last_stop = max(stop, self._starts[j - 1] + len(self._chunks[j - 1]))
        buf = bytearray(last_stop - new_start)
        for k in range(i_first, j):
            s = self._starts[k] - new_start
            buf[s:s + len(self._chunks[k])] = self._chunks[k]
        buf[start - new_start:stop - new_start] = data
        self._starts[i_first:j] = [new_start]
        self._chunks[i_first:j] = [bytes(buf)]

    def drop(self, keep_below: int) -> None:
        """Forget the bytes at and after ``keep_below`` (keep a header, free a tensor that has been decoded)."""
        starts, chunks = [], []
        for s, c in zip(self._starts, self._chunks):
            if s < keep_below:
                starts.append(s)
                chunks.append(c[:keep_below - s])
        self._starts, self._chunks = starts, chunks

    def read(self, offset: int, n: int, what: str = "data") -> bytes:
        """Exactly ``n`` bytes at ``offset``; truncation is an InputError as for any Source; bytes not fetched
        yet raise :class:`NeedBytes` (from the first missing byte to the end of the range)."""
        if offset < 0 or n < 0 or offset + n > self.size:
            return super().read(offset, n, what)   # raises the usual "file is truncated" InputError
        if n == 0:
            return b""
        i = bisect.bisect_right(self._starts, offset) - 1
        if i >= 0:
            s, c = self._starts[i], self._chunks[i]
            if offset + n <= s + len(c):
                return c[offset - s:offset - s + n]
            covered = s + len(c)
            if covered > offset:
                raise NeedBytes(covered, offset + n - covered, self.name)
        raise NeedBytes(offset, n, self.name)


def fetch_span(need: NeedBytes, size: int, read_ahead: int = READ_AHEAD, piece: int = PIECE) -> tuple[int, int]:
    """The byte range ``[start, stop)`` to request for ``need``: at least ``read_ahead`` bytes (small header
    reads come in few rounds), at most ``piece`` (one message), never past the end of the file."""
    start = need.offset
    stop = min(size, start + min(max(need.n, read_ahead), piece))
    return start, max(stop, start)


def resolve(read: Callable[[RangeCache], T], cache: RangeCache, fetch: Callable[[int, int], bytes],
            max_rounds: int = 100_000) -> T:
    """``read(cache)``, fetching every range it asks for with ``fetch(start, stop)`` until it completes.

    The synchronous form of what the app does across browser round trips (tests, and files on disk).
    """
    for _ in range(max_rounds):
        try:
            return read(cache)
        except NeedBytes as need:
            start, stop = fetch_span(need, cache.size)
            cache.add(start, fetch(start, stop))
    raise RuntimeError(f"reading did not finish within {max_rounds} rounds")


class ByteRequests:
    """The asynchronous form of :func:`resolve`: one reader's byte requests, at most one in flight.

    :meth:`ask` turns a :class:`NeedBytes` into a request ``{id, start, stop}`` for the page and remembers
    what to do when its bytes arrive; :meth:`take` hands that back for the answer to the newest request
    only (an answer to an older or cancelled one gives None and is dropped). Request numbers come from
    one counter shared by every reader in the process, so two readers of a page never wait for the same
    number (the page keeps transferred pieces by number)."""

    _numbers = itertools.count(1)

    def __init__(self) -> None:
        self.pending: tuple[int, Callable[[], Any]] | None = None

    def ask(self, need: NeedBytes, size: int, then: Callable[[], Any], read_ahead: int = READ_AHEAD) -> dict:
        """The request for ``need`` (:func:`fetch_span` with ``read_ahead``: 0 when the reader asks for exactly
        what it will use, a tensor's rows)."""
        start, stop = fetch_span(need, size, read_ahead)
        number = next(ByteRequests._numbers)
        self.pending = (number, then)
        return {"id": number, "start": start, "stop": stop}

    def take(self, request_id: int) -> Callable[[], Any] | None:
        if self.pending is None or self.pending[0] != request_id:
            return None
        then, self.pending = self.pending[1], None
        return then

    def cancel(self) -> None:
        self.pending = None
