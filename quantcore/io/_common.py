"""Shared pieces of quantcore.io: the error type, the size limits, and the non-finite policy.

Every reader in this package raises :class:`InputError` (a ``ValueError``) for bad input, and no
other exception type.  Its message is one line and always starts with *where*: the source name,
``line L, column C`` for text (1-based; columns count Unicode code points), or ``byte offset O`` for
binary files (0-based), followed by *what* was wrong.  Untrusted text quoted in a message (tokens,
tensor names) goes through :func:`quote`, i.e. ``repr()`` cut to 40 characters, so it can never
break the one-line rule -- but it is still untrusted: renderers must HTML-escape messages too.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Literal

import numpy as np

Nonfinite = Literal["error", "drop"]

#: how many non-finite positions an InputError lists
SHOW_POSITIONS = 5


class InputError(ValueError):
    """Bad user input, located.

    Attributes (each may be ``None``): ``line`` and ``column`` (1-based, text inputs), ``offset``
    (0-based character offset into the text for text inputs, byte offset for binary files),
    ``source`` (file name or field name), ``where`` (free-form extra location such as
    ``"tensor 'w'"``), ``reason`` (the bare "what" without the location prefix).
    """

    def __init__(
        self,
        reason: str,
        *,
        line: int | None = None,
        column: int | None = None,
        offset: int | None = None,
        source: str | None = None,
        where: str | None = None,
    ) -> None:
        self.reason = _one_line(reason)
        self.line = line
        self.column = column
        self.offset = offset
        self.source = source
        self.where = where
        super().__init__(self._render())

    def _render(self) -> str:
        parts = []
        if self.source:
            parts.append(_one_line(self.source)[:200])
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.column is not None:
            parts.append(f"column {self.column}")
        if self.line is None and self.offset is not None:
            parts.append(f"byte offset {self.offset}")
        if self.where:
            parts.append(_one_line(self.where))
        loc = ", ".join(parts) if parts else "input"
        return f"{loc}: {self.reason}"

    def with_source(self, source: str | None) -> "InputError":
        """Return a copy that names ``source`` (used when a path or upload name is known)."""
        if source is None or self.source is not None:
            return self
        err = InputError(self.reason, line=self.line, column=self.column, offset=self.offset,
                         source=source, where=self.where)
        err.__cause__ = self.__cause__
        return err


def _one_line(s: str) -> str:
    return str(s).replace("\r", "\\r").replace("\n", "\\n")


def quote(s: object, limit: int = 40) -> str:
    """repr() of untrusted text, cut to ``limit`` characters (one line, quotes and escapes kept)."""
    s = str(s)
    if len(s) > limit:
        return repr(s[:limit]) + f"... ({len(s)} chars)"
    return repr(s)


def printable(text: object) -> str:
    """Untrusted text made safe to print on a terminal or in a plain-text report.

    Every character that ``str.isprintable()`` rejects, except spaces (Unicode category Zs), becomes a
    visible escape ``\\uXXXX`` (``\\UXXXXXXXX`` above U+FFFF): C0/C1 controls (ESC starts ANSI sequences,
    CR rewrites the line) and DEL; bidi embeddings, overrides, isolates and marks (U+202A..U+202E,
    U+2066..U+2069, U+200E/U+200F, U+061C) and every other format character (category Cf: zero-width
    spaces and joiners, soft hyphen, BOM); line/paragraph separators; surrogates, private-use and
    unassigned code points.  Letters, digits, marks, punctuation, symbols and spaces of every script are
    kept as they are.  A backslash is kept too, so a name that spells ``\\u202e`` prints like an escaped
    one: the output is safe, not reversible (JSON output is the exact form).
    """
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() or unicodedata.category(c) == "Zs" else
                   (f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}") for c in s)


@dataclass(frozen=True)
class Limits:
    """Hard caps, checked from declared sizes BEFORE any large allocation.

    max_elements:     values in one tensor / all channels of a text input (default 64M).
    max_bytes:        bytes of a text/CSV/.npy/.npz input read whole; bytes of one tensor's payload
                      in a .safetensors/.gguf file; bytes of one decoded float output (default 512 MiB).
    max_header_bytes: .safetensors JSON header, .gguf metadata + tensor table, .npz central
                      directory (default 16 MiB; .npy headers are additionally capped at 64 KiB).
    max_channels:     channels (records) in pasted text or rows in CSV (default 100,000).
    max_name_chars:   length of a channel label in text (default 256).
    max_rows:         data rows of a CSV read with channels_as="columns" (default 1,000,000;
                      rows are parsed at ~50k-100k per second, so this bounds the time too).
    """

    max_elements: int = 64 * 1024 * 1024
    max_bytes: int = 512 * 1024 * 1024
    max_header_bytes: int = 16 * 1024 * 1024
    max_channels: int = 100_000
    max_name_chars: int = 256
    max_rows: int = 1_000_000

    def __post_init__(self) -> None:
        for f in ("max_elements", "max_bytes", "max_header_bytes", "max_channels", "max_name_chars",
                  "max_rows"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Limits.{f} must be a positive int, got {v!r}")

    def check_elements(self, n: int, what: str, shape: tuple[int, ...] | None = None, **loc) -> None:
        """Refuse more than ``max_elements`` elements, then any single dimension that large: an empty
        tensor (one dimension 0) with a huge other dimension cannot be represented by numpy."""
        if n > self.max_elements:
            raise InputError(f"{what} has {n:,} elements, over the cap of {self.max_elements:,} "
                             f"(Limits.max_elements)", **loc)
        if shape and max(shape) > self.max_elements:
            raise InputError(f"{what} has a dimension of {max(shape):,}, over the cap of {self.max_elements:,} "
                             f"(Limits.max_elements)", **loc)

    def check_bytes(self, n: int, what: str, **loc) -> None:
        if n > self.max_bytes:
            raise InputError(f"{what} is {n:,} bytes, over the cap of {self.max_bytes:,} bytes "
                             f"(Limits.max_bytes)", **loc)


def check_policy(nonfinite: str) -> None:
    if nonfinite not in ("error", "drop"):
        raise ValueError(f"nonfinite must be 'error' or 'drop', got {nonfinite!r}")


def nonfinite_in_tensor(arr: np.ndarray, name: str, nonfinite: str, **loc) -> None:
    """Binary tensors: non-finite values are an InputError under BOTH policies.

    'drop' cannot remove elements from an N-d tensor without destroying its shape (channels and
    groups would shift), so for binary tensors 'drop' is refused with the same count and positions
    plus a note.  A tensor without non-finite values loads under either policy.
    """
    bad = ~np.isfinite(arr)
    n_bad = int(np.count_nonzero(bad))
    if n_bad == 0:
        return
    flat = np.flatnonzero(bad.reshape(-1))[:SHOW_POSITIONS]
    pos = [tuple(int(i) for i in np.unravel_index(int(k), arr.shape)) for k in flat]
    vals = [str(arr.reshape(-1)[k]) for k in flat]
    shown = "; ".join(f"index {p if len(p) != 1 else p[0]} = {v}" for p, v in zip(pos, vals))
    more = f" (first {len(flat)} shown)" if n_bad > len(flat) else ""
    note = ("; nonfinite='drop' is not available for binary tensors because removing elements "
            "would break the tensor's shape" if nonfinite == "drop" else "")
    raise InputError(f"tensor {quote(name)} has {n_bad:,} non-finite value(s) (NaN/inf): "
                     f"{shown}{more}{note}", **loc)
