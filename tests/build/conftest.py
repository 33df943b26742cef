"""Fixtures of the static-bundle tests (the build itself and its server are in tests/conftest.py)."""
from __future__ import annotations

import pytest

from sitebuild import load_build_module


@pytest.fixture(scope="session")
def build_mod():
    return load_build_module()
