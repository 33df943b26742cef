"""Long computations as steps: a generator that yields its progress and returns its result.

A range search over a 4096 x 4096 tensor runs for seconds. Written as a generator that ``yield``s the
fraction done (a float in [0, 1]) between pieces of work and ``return``s its result, the same code serves a
caller that wants the answer (:func:`run`) and one that must stay responsive -- the app, which gives it a
slice of time per event-loop tick and drops it when the settings change (:func:`advance`). Layers compose
with ``yield from``. There are no threads: in the browser (Pyodide) there are none to use.
"""
from __future__ import annotations

import time
from typing import Generator, TypeVar

T = TypeVar("T")
Steps = Generator[float, None, T]   # yields the fraction done, returns the result


def run(steps: Steps[T]) -> T:
    """Drive ``steps`` to its end and return its result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def advance(steps: Steps[T], seconds: float) -> tuple[bool, T | float]:
    """Drive ``steps`` for about ``seconds`` (at least one step): ``(True, result)`` when it ended, else
    ``(False, fraction done)``. Exceptions of the computation propagate."""
    deadline = time.perf_counter() + seconds
    fraction = 0.0
    while True:
        try:
            fraction = next(steps)
        except StopIteration as done:
            return True, done.value
        if time.perf_counter() >= deadline:
            return False, fraction


def scaled(steps: Steps[T], start: float, stop: float) -> Steps[T]:
    """``steps`` with its fractions mapped onto ``[start, stop]`` (a part of a larger computation)."""
    while True:
        try:
            fraction = next(steps)
        except StopIteration as done:
            return done.value
        yield start + (stop - start) * fraction
