"""Shared fixtures for the engine proof: oracle imports (torch, torchao, gguf) and test tensors.

The oracles are imported lazily inside fixtures so that quantcore itself never imports them, and
their deprecation/user warnings (``torch.ao.quantization`` is deprecated in favour of torchao) are
silenced only while a test that uses them runs, never globally.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest


@pytest.fixture
def quiet_warnings():
    """Silence the oracles' DeprecationWarning/UserWarning/FutureWarning for the duration of one test."""
    with warnings.catch_warnings():
        for cat in (DeprecationWarning, UserWarning, FutureWarning):
            warnings.simplefilter("ignore", cat)
        yield


@pytest.fixture
def torch(quiet_warnings):
    """torch 2.13 with one thread (the measured arithmetic in notes/torch.md is single-threaded)."""
    torch = pytest.importorskip("torch", reason="torch is a test oracle; install the 'test' extra")
    if not torch.__version__.startswith("2.13"):
        pytest.skip(f"parity is pinned to torch 2.13, found {torch.__version__}")
    torch.set_num_threads(1)
    return torch


@pytest.fixture
def torchao_qp(torch):
    """torchao.quantization.quant_primitives (0.18)."""
    torchao = pytest.importorskip("torchao", reason="torchao is a test oracle; install the 'test' extra")
    if not torchao.__version__.startswith("0.18"):
        pytest.skip(f"parity is pinned to torchao 0.18, found {torchao.__version__}")
    from torchao.quantization import quant_primitives
    return quant_primitives


@pytest.fixture
def gguf_quants(quiet_warnings):
    gguf = pytest.importorskip("gguf", reason="gguf-py is a test oracle; install the 'test' extra")
    from importlib.metadata import version
    if not version("gguf").startswith("0.19"):
        pytest.skip(f"parity is pinned to gguf-py 0.19, found {version('gguf')}")
    return gguf


@pytest.fixture
def ort(quiet_warnings):
    """onnxruntime 1.32 (CPU) and onnx 1.23 (graphs built with onnx.helper): ``(onnxruntime, onnx)``."""
    onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is a test oracle; install the 'test' extra")
    onnx = pytest.importorskip("onnx", reason="onnx builds the oracle graphs; install the 'test' extra")
    if not onnxruntime.__version__.startswith("1.32"):
        pytest.skip(f"parity is pinned to onnxruntime 1.32, found {onnxruntime.__version__}")
    if not onnx.__version__.startswith("1.23"):
        pytest.skip(f"graphs are built with onnx 1.23, found {onnx.__version__}")
    return onnxruntime, onnx


def lognormal_channels(rng: np.random.Generator, shape: tuple[int, ...], axis: int = 0, sigma: float = 1.5,
                       loc: float = 0.0) -> np.ndarray:
    """float32 normal data whose channels (along ``axis``) have log-normal magnitudes exp(N(0, sigma))."""
    x = rng.standard_normal(shape) + loc
    bshape = [1] * len(shape)
    bshape[axis] = shape[axis]
    x *= np.exp(rng.normal(0.0, sigma, bshape))
    return x.astype(np.float32)
