"""Test data shared by the engine's test modules."""
from __future__ import annotations

import numpy as np


def rand(shape, seed=0, spread=True):
    """float32 data whose rows span many binades (so blocks get very different scales)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if spread:
        x *= 2.0 ** rng.integers(-20, 20, size=shape[:-1] + (1,))
    return x.astype(np.float32)
