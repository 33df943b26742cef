"""Fixtures for the GGML type tests: the two oracles, each skipping with its reason when absent."""
from __future__ import annotations

import warnings

import pytest


@pytest.fixture
def gguf_quants():
    """gguf-py 0.19 (llama.cpp's Python reference), its overflow warnings silenced for the test."""
    gguf = pytest.importorskip("gguf", reason="gguf-py is a test oracle; install the 'test' extra")
    from importlib.metadata import version
    if not version("gguf").startswith("0.19"):
        pytest.skip(f"parity is pinned to gguf-py 0.19, found {version('gguf')}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield gguf


@pytest.fixture(scope="session")
def ggml_ref():
    """llama.cpp's ggml-quants.c (llama-cpp-python 0.3.36 sdist) compiled and loaded with ctypes."""
    from oracles.ggml_ref import OracleUnavailable, load
    try:
        return load()
    except OracleUnavailable as e:
        pytest.skip(f"C reference unavailable: {e}")
