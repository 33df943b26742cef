"""hypothesis fuzzing of every reader (text, manual, CSV, .npy, .npz, .safetensors, .gguf).

Invariant for every reader: any input gives a result of the documented type or an InputError with a
one-line message -- never another exception.  Text also round-trips exactly (repr of a float64 parses
back to the same float64), and the vectorized fast path agrees with the token-by-token path.
max_examples below add up to 11,500 per run; deadline=None; runtime ~30-50 s on one core.
"""

from __future__ import annotations

import csv
import json
import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iocorpus import gguf_raw, gguf_writer_bytes, npy_bytes, npz_bytes, st_raw
from quantcore.io import (InputError, Limits, list_tensors, load_input, parse_manual, parse_text,
                          read_csv)
from quantcore.io import text as T

LIM = Limits(max_elements=10**6, max_bytes=1 << 24, max_header_bytes=1 << 16, max_channels=2000)
FUZZ = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck))

TEXT_ALPHABET = st.sampled_from(list("0123456789+-.eE,;: \t\n\r") + ["nan", "inf", "\u2212", "\u00a0",
                                                                      "x", "a:", "<b>", "1e999", "\x00", "é"])
text_inputs = st.lists(TEXT_ALPHABET, max_size=60).map("".join)


def _one_line(e: InputError) -> None:
    s = str(e)
    assert "\n" not in s and "\r" not in s and ": " in s


@settings(max_examples=2500, **FUZZ)
@given(text_inputs, st.sampled_from(["error", "drop"]))
def test_fuzz_parse_text_only_input_errors(s, policy):
    try:
        r = parse_text(s, nonfinite=policy, limits=LIM)
    except InputError as e:
        _one_line(e)
        if e.line is not None:
            assert 1 <= e.line <= s.count("\n") + s.count("\r") + 1
        return
    assert len(r.names) == len(r.rows) > 0
    for row in r.rows:
        assert row.dtype == np.float64 and row.ndim == 1 and row.size > 0
        assert np.isfinite(row).all()  # "error" raises on non-finite values, "drop" removes them


floats = st.floats(allow_nan=False, allow_infinity=False, width=64)
SEPS = [", ", " ", "\t", " , ", ",\t", "  "]


@settings(max_examples=1500, **FUZZ)
@given(st.lists(st.lists(floats, min_size=1, max_size=12), min_size=1, max_size=6),
       st.sampled_from(SEPS), st.sampled_from(["\n", ";", "\r\n", " ; "]), st.booleans(), st.booleans())
def test_fuzz_text_roundtrip_exact(rows, sep, chan_sep, labels, unicode_minus):
    """repr(float) of every value parses back to the identical float64, in order, per channel."""
    lines = []
    for i, r in enumerate(rows):
        body = sep.join(repr(v) for v in r)
        if unicode_minus:
            body = body.replace("-", "\u2212")
        lines.append(f"c{i}: {body}" if labels else body)
    out = parse_text(chan_sep.join(lines))
    assert len(out.rows) == len(rows)
    for got, want in zip(out.rows, rows):
        np.testing.assert_array_equal(got, np.array(want, dtype=np.float64))
        assert (np.signbit(got) == np.signbit(np.array(want))).all()
    if labels:
        assert out.names == tuple(f"c{i}" for i in range(len(rows)))


TOKENS = st.sampled_from(["1", "-2.5", ".5", "5.", "1e5", "-1E-3", "+7", "nan", "-inf", "Infinity",
                          "1e", "--1", "1-2", "1.2.3", "e5", "0x1", "1,5", "0,5", ",", ",,", "abc",
                          "3.14159", "1e999", "infinit", "nanx", "+", "."])
GAPS = st.sampled_from([" ", ",", ", ", "\t", "  ,  ", "\u00a0", " , "])


@settings(max_examples=1500, **FUZZ)
@given(st.lists(st.tuples(TOKENS, GAPS), min_size=1, max_size=120), st.booleans())
def test_fuzz_fast_path_agrees_with_token_path(items, csv_strict):
    """_fast_chunk (vectorized, used for runs >= 256 chars) must never disagree with _slow_chunk."""
    s = "".join(t + g for t, g in items)
    s = (s + " ") * max(1, 300 // max(len(s), 1))  # make it long enough for the fast path
    loc = T._Loc(1, 0, None)
    other = T._has_other_sep(s, 0, len(s))
    fast = T._fast_chunk(s, 0, csv_strict, other)
    try:
        slow = T._slow_chunk(s, 0, loc, csv_strict, other, "','")
    except InputError:
        assert fast is None, f"fast path accepted what the token path rejects: {s!r}"
        return
    if fast is not None:
        np.testing.assert_array_equal(fast.values, slow.values)
        k = np.arange(fast.values.size)
        np.testing.assert_array_equal(fast.locate(k), slow.locate(k))


MANUAL_FIELD = st.sampled_from(["filter_0", "0.5", "-8", "11.0", "1.5", "0", "-0.1", "nan", "x", "",
                                "1e-3", "<i>", "2147483648", "channel", "scale", "zero_point", "sample"])


@settings(max_examples=1000, **FUZZ)
@given(st.lists(st.lists(MANUAL_FIELD, min_size=0, max_size=5), max_size=6),
       st.sampled_from([", ", " ", ",", "\t"]))
def test_fuzz_parse_manual(lines, sep):
    s = "\n".join(sep.join(f) for f in lines)
    try:
        r = parse_manual(s)
    except InputError as e:
        _one_line(e)
        return
    assert len(r.names) == r.scale.size == r.zero_point.size == r.sample.size
    assert (r.scale > 0).all() and np.isfinite(r.sample).all() and r.zero_point.dtype == np.int64


CSV_CELL = st.sampled_from(["1", "2.5", "-3", "", "nan", "a", '"q,r"', "1,5", "<s>", " 4 ", "1e3"])


@settings(max_examples=1000, **FUZZ)
@given(st.lists(st.lists(CSV_CELL, min_size=1, max_size=5), min_size=0, max_size=6),
       st.sampled_from([",", ";", "\t"]), st.sampled_from(["rows", "columns"]),
       st.sampled_from([None, True, False]))
def test_fuzz_read_csv(rows, delim, mode, header):
    s = "\n".join(delim.join(r) for r in rows)
    try:
        r = read_csv(s, channels_as=mode, header=header, limits=LIM)
    except InputError as e:
        _one_line(e)
        return
    assert len(r.names) == len(r.rows) > 0 and len(set(r.names)) == len(r.names)
    if mode == "columns":
        assert len({x.size for x in r.rows}) == 1


HOSTILE_CELL = st.sampled_from(["1", "2.5", "w0", "x", "", '"1,000"', '"0,5"', "1\u20092", "1\u00a0000", "\uff11",
                                '"a,b"', "1'000", "1_0", "5%", "1.2.3", "channel", "name", "\x00", "\x1b[1m", "nan"])


@settings(max_examples=1500, **FUZZ)
@given(st.lists(st.lists(HOSTILE_CELL, min_size=1, max_size=4), min_size=1, max_size=5), st.sampled_from([",", ";", "\t"]),
       st.sampled_from([None, True, False]))
def test_fuzz_csv_labels_and_field_counts(rows, delim, header):
    """Rows mode: a channel label is never a number or number-like unless the header declares a label column;
    under a header every data row has the header's field count; control characters never load."""
    s = "\n".join(delim.join(r) for r in rows)
    try:
        r = read_csv(s, header=header, limits=LIM)
    except InputError as e:
        _one_line(e)
        return
    assert "\x00" not in s and "\x1b" not in s
    lines = [ln for ln in s.split("\n") if ln.strip()]
    cells = [next(csv.reader([ln], delimiter=delim)) for ln in lines]
    has_header = T._looks_like_header(cells[0], delim) if header is None else header
    declared = has_header and cells[0][0].strip().lower() in T._LABEL_HEADERS
    if not declared:
        assert all(T._cell_kind(n, delim) == "word" for n in r.names), (s, r.names)
    if has_header:
        n_head = len(cells[0]) - next((i for i, c in enumerate(reversed(cells[0])) if c.strip()), 0)
        for c in cells[1:]:
            assert len(c) - (len(c) > 1 and c[-1] == "") == n_head, (s, c)


# ------------------------------------------------------------------------------ binary mutation

INTERESTING = [0, 1, 2, 7, 8, 31, 32, 255, 2**16 - 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**62, 2**63, 2**64 - 1]


@st.composite
def mutated(draw, base: bytes):
    b = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "trunc", "u64", "u32", "insert", "delete"]))
        pos = draw(st.integers(0, max(len(b) - 1, 0)))
        if op == "flip" and b:
            b[pos] ^= draw(st.integers(1, 255))
        elif op == "trunc":
            del b[pos:]
        elif op in ("u64", "u32") and len(b) >= 8:
            fmt = "<Q" if op == "u64" else "<I"
            v = draw(st.sampled_from(INTERESTING)) % (2**64 if op == "u64" else 2**32)
            p = min(pos, len(b) - struct.calcsize(fmt))
            struct.pack_into(fmt, b, p, v)
        elif op == "insert":
            b[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del b[pos:pos + draw(st.integers(1, 16))]
    return bytes(b)


def _load_everything(data: bytes, filename: str | None) -> None:
    """list_tensors then load each tensor: only InputError may escape."""
    try:
        infos = list_tensors(data, filename=filename, limits=LIM)
    except InputError as e:
        _one_line(e)
        return
    for info in infos[:4]:
        try:
            li = load_input(data, tensor=info.name if len(infos) > 1 else None, filename=filename, limits=LIM)
        except InputError as e:
            _one_line(e)
            continue
        arrays = li.data if isinstance(li.data, list) else [li.data]
        for a in arrays:
            assert a.dtype in (np.float32, np.float64) and a.flags.c_contiguous


NPY_BASE = npy_bytes(np.arange(12, dtype=np.float32).reshape(3, 4))
NPZ_BASE = npz_bytes({"a.npy": np.arange(5.0), "b.npy": np.ones((2, 2), np.int16)}, compress=True)
NPZ_STORED = npz_bytes({"a.npy": np.arange(5.0)}, compress=False)


def _st_base():
    from safetensors.numpy import save
    return save({"w": np.arange(8, dtype=np.float32).reshape(2, 4), "h": np.ones(3, np.float16),
                 "b": np.array([1, -1], np.int8)}, metadata={"k": "v"})


def _gguf_base():
    import gguf
    x = np.random.default_rng(3).standard_normal((2, 64)).astype(np.float32)
    return gguf_writer_bytes({"f": (x, None), "q8": (x, gguf.GGMLQuantizationType.Q8_0),
                              "q5": (x, gguf.GGMLQuantizationType.Q5_1)}, {"general.name": "m"})


@settings(max_examples=1000, **FUZZ)
@given(mutated(NPY_BASE), st.sampled_from(["a.npy", None]))
def test_fuzz_npy(data, fn):
    _load_everything(data, fn)


@settings(max_examples=500, **FUZZ)
@given(st.one_of(mutated(NPZ_BASE), mutated(NPZ_STORED)))
def test_fuzz_npz(data):
    _load_everything(data, "a.npz")


ST_BASE = None


@settings(max_examples=1000, **FUZZ)
@given(st.data())
def test_fuzz_safetensors_bytes(d):
    global ST_BASE
    ST_BASE = ST_BASE or _st_base()
    _load_everything(d.draw(mutated(ST_BASE)), d.draw(st.sampled_from(["m.safetensors", None])))


json_leaf = st.one_of(st.integers(-2**70, 2**70), st.floats(), st.text(max_size=5), st.booleans(), st.none())
dtype_s = st.sampled_from(["F32", "F16", "BF16", "I8", "U8", "I16", "I32", "F64", "BOOL", "I64", "Q4", "f32"])
entry = st.fixed_dictionaries({"dtype": st.one_of(dtype_s, json_leaf),
                               "shape": st.one_of(st.lists(st.integers(-2, 2**40), max_size=4), json_leaf),
                               "data_offsets": st.one_of(st.lists(st.integers(-8, 80), min_size=2, max_size=2), json_leaf)})


@settings(max_examples=500, **FUZZ)
@given(st.dictionaries(st.text(max_size=6), st.one_of(entry, json_leaf), max_size=4), st.integers(0, 96))
def test_fuzz_safetensors_headers(header, n_data):
    data = st_raw(json.dumps(header, allow_nan=True), bytes(range(n_data)))
    _load_everything(data, "m.safetensors")


GGUF_BASE = None


@settings(max_examples=1000, **FUZZ)
@given(st.data())
def test_fuzz_gguf_bytes(d):
    global GGUF_BASE
    GGUF_BASE = GGUF_BASE or _gguf_base()
    choice = d.draw(st.integers(0, 3))
    if choice == 0:  # tiny hand-built file: more mutations land in the header
        base = gguf_raw(tensors=[("t", (32,), 8, 0), ("u", (4,), 0, 64)], data=bytes(96))
    else:
        base = GGUF_BASE
    _load_everything(d.draw(mutated(base)), d.draw(st.sampled_from(["m.gguf", None])))
