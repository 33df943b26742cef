"""Every hostile-corpus case gives its documented InputError (or documented result) -- never another
exception type, a hang, or a memory blow-up.  Memory is measured with tracemalloc (numpy reports its
buffers to it); time with perf_counter.  Cases are built by tests/io/iocorpus.py."""

from __future__ import annotations

import re
import time
import tracemalloc

import numpy as np
import pytest

from iocorpus import all_cases
from quantcore.io import InputError, list_tensors, load_input

CASES = all_cases()
SMALL_CASES = [c for c in CASES if not c.big]
BIG_CASES = [c for c in CASES if c.big]


def test_corpus_has_at_least_200_cases():
    print(f"{len(CASES)} corpus cases ({len(BIG_CASES)} large)")
    assert len(CASES) >= 200


def _run(case):
    return load_input(case.data, tensor=case.tensor, filename=case.filename, limits=case.limits,
                      nonfinite=case.nonfinite, channels_as=case.channels_as)


def _check_outcome(case):
    if case.error is None:
        li = _run(case)
        assert isinstance(li.data, (np.ndarray, list))
        arrays = li.data if isinstance(li.data, list) else [li.data]
        for a in arrays:
            assert a.dtype in (np.float32, np.float64) and a.flags.c_contiguous
        case.check(li)
        return None
    with pytest.raises(InputError) as ei:
        _run(case)
    msg = str(ei.value)
    assert "\n" not in msg and "\r" not in msg, msg
    assert re.search(case.error, msg), f"{case.id}: message {msg!r} does not match {case.error!r}"
    # always says where: a source/line/offset prefix before ': '
    assert re.match(r"^(input|[^:]+?(, line \d+)?(, column \d+)?(, byte offset \d+)?(, .+?)?): ", msg), msg
    return msg


@pytest.mark.parametrize("case", SMALL_CASES, ids=[c.id for c in SMALL_CASES])
def test_corpus_case(case):
    tracemalloc.start()
    try:
        msg = _check_outcome(case)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # bounded memory: a small multiple of the input plus a fixed allowance, whatever the header claims
    assert peak < 8 * len(case.data) + (8 << 20), f"{case.id}: peak {peak:,} bytes"
    if msg:
        print(f"{case.id}: {msg}")


@pytest.mark.parametrize("case", [c for c in SMALL_CASES if c.filename is None or not c.filename.endswith((".txt", ".csv", ".tsv"))],
                         ids=lambda c: c.id)
def test_corpus_listing_never_crashes(case):
    """list_tensors on binary cases: a list of TensorInfo or an InputError, nothing else."""
    try:
        infos = list_tensors(case.data, filename=case.filename, limits=case.limits)
    except InputError as e:
        assert "\n" not in str(e)
    else:
        for i in infos:
            assert isinstance(i.name, str) and all(isinstance(d, int) and d >= 0 for d in i.shape)


@pytest.mark.slow
@pytest.mark.parametrize("case", BIG_CASES, ids=[c.id for c in BIG_CASES])
def test_corpus_big_case_is_fast_and_bounded(case):
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        _check_outcome(case)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    dt = time.perf_counter() - t0
    print(f"{case.id}: {len(case.data):,} bytes in {dt:.2f} s, peak traced memory {peak / 2**20:.0f} MiB")
    # memory bound only (time is printed, never asserted): at most ~6 bytes per input byte
    assert peak < 6 * len(case.data) + (16 << 20), f"peak {peak:,}"
