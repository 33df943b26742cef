"""Built-in examples (one per seed document) and a synthetic weight generator.

``s0`` seed 000's 4-channel table (channels of different ranges; per-tensor vs per-channel).
``s1`` seed 001's four filters: per-channel min/max calibration and one sample each, qint8 affine.
``s2`` seed 002's ten activations, range -1.5..1.5, 8-bit symmetric signed.
``s3`` seed 003's 2 x 4 weight matrix, int4 narrow [-7, 7] symmetric. Row B is not listed in the
      lesson; ``[2.30, -3.10, 1.65, -2.80]`` reproduces its reconstruction ``[2.21, -3.10, 1.77, -2.66]``
      (codes 5, -7, 4, -6 at scale 3.10/7) and its Row B MAE of about 0.09 (0.0875).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .formats import IntFormat
from .granularity import PerChannel, PerTensor
from .params import CustomRange
from .spec import QuantSpec


@dataclass(frozen=True)
class Example:
    key: str
    title: str
    text: str                      # the data in the seeds' paste format (one channel per line)
    spec: QuantSpec                # the settings the seed uses
    note: str
    manual: bool = False           # s1: rows are "name, min, max, sample" calibration lines
    extra: dict = field(default_factory=dict)

    @property
    def channel_names(self) -> list[str]:
        return [line.split(":", 1)[0].strip() for line in self.text.strip().splitlines()]

    @property
    def rows(self) -> list[np.ndarray]:
        return [np.array([float(v) for v in line.split(":", 1)[1].replace(",", " ").split()])
                for line in self.text.strip().splitlines()]


S1_FILTERS = (("filter_0", -1.2, 1.0, 0.73), ("filter_1", -0.8, 0.9, -0.21),
              ("filter_2", -1.5, 1.7, 1.11), ("filter_3", -0.45, 0.6, 0.18))

EXAMPLES: dict[str, Example] = {
    "s0": Example(
        "s0", "Four channels of different ranges (per-channel vs per-tensor calculator)",
        "ch1: 0.12, -0.33, 0.48, -0.05, 0.91\n"
        "ch2: 1.20, 0.95, 1.44, 1.10, 0.88\n"
        "ch3: -1.70, -1.22, -0.94, -1.43, -1.11\n"
        "ch4: 0.03, 0.08, -0.02, 0.11, -0.06\n",
        QuantSpec(fmt=IntFormat(8, True), mapping="affine", granularity=PerTensor()),
        "Channel 4's tiny range loses detail under one global scale; channel 3 is negative only."),
    "s1": Example(
        "s1", "Per-channel parameters from min/max, one sample per filter (qint8 affine)",
        "\n".join(f"{n}: {s}" for n, _, _, s in S1_FILTERS) + "\n",
        QuantSpec(fmt=IntFormat(8, True), mapping="affine", granularity=PerChannel(0),
                  range=CustomRange(tuple(f[1] for f in S1_FILTERS), tuple(f[2] for f in S1_FILTERS))),
        "Calibration ranges are given per filter; filter_1's sample sits on a rounding tie.",
        manual=True),
    "s2": Example(
        "s2", "Ten activations, range -1.5..1.5, 8-bit symmetric signed (quantization error calculator)",
        "activations: -1.25, -0.92, -0.51, -0.10, 0, 0.14, 0.37, 0.79, 1.12, 1.46\n",
        QuantSpec(fmt=IntFormat(8, True), mapping="symmetric", granularity=PerTensor(), range=CustomRange(-1.5, 1.5)),
        "scale = 1.5 / 127; nothing clips because the range covers every sample."),
    "s3": Example(
        "s3", "2 x 4 weights, int4 [-7, 7]: the quiet row collapses under one shared scale",
        "Row A: 0.05, -0.08, 0.12, -0.15\n"
        "Row B: 2.30, -3.10, 1.65, -2.80\n",
        QuantSpec(fmt=IntFormat(4, True, narrow=True), mapping="symmetric", granularity=PerTensor()),
        "Per-tensor scale 3.10/7 = 0.4429 rounds all of Row A to 0; per-channel gives Row A codes [2, -4, 6, -7]."),
}


def manual_lines(key: str = "s1") -> str:
    """A manual-mode example (seed 001): one line ``name, scale, zero_point, sample`` per channel of example
    ``key``, the scale and zero-point being what the example's own spec computes from its calibration ranges
    (s1: qint8 affine from each filter's min/max; ``repr`` keeps every bit of the float32-stored scale)."""
    from .analysis import analyze   # analysis does not import examples; deferred only to keep this module light
    ex = get_example(key)
    if not ex.manual:
        raise ValueError(f"example {key!r} has no calibration samples for manual mode")
    rows = [row for row in ex.text.splitlines() if row.strip()]
    names = [row.split(":", 1)[0].strip() for row in rows]
    samples = [row.split(":", 1)[1].strip() for row in rows]
    table = analyze(np.array([[float(v)] for v in samples]), ex.spec, channel_names=names).channel_table()
    return "".join(f"{n}, {float(sc)!r}, {int(zp)}, {x}\n"
                   for n, sc, zp, x in zip(names, table["scale"], table["zero_point"], samples))


def get_example(key: str) -> Example:
    try:
        return EXAMPLES[key]
    except KeyError:
        raise ValueError(f"unknown example {key!r}; expected one of {', '.join(EXAMPLES)}") from None


DISTRIBUTIONS = ("normal", "laplace", "uniform", "student-t")


def synthetic(rows: int = 64, cols: int = 256, distribution: str = "normal", channel_spread: float = 1.0,
              outlier_channels: int = 0, outlier_scale: float = 10.0, seed: int = 0) -> np.ndarray:
    """A float32 weight-like matrix ``(rows, cols)``.

    Each row gets its own magnitude ``exp(N(0, channel_spread))`` (log-normal channel scales);
    ``outlier_channels`` rows (chosen at random) are multiplied by ``outlier_scale``.
    """
    if rows <= 0 or cols <= 0:
        raise ValueError(f"synthetic shape must be positive, got ({rows}, {cols})")
    if rows * cols > 1 << 26:
        raise ValueError(f"synthetic tensor of {rows * cols:,} elements exceeds the cap of {1 << 26:,}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}; expected one of {', '.join(DISTRIBUTIONS)}")
    if not 0 <= outlier_channels <= rows:
        raise ValueError(f"outlier channels must be between 0 and {rows}, got {outlier_channels}")
    rng = np.random.default_rng(seed)
    if distribution == "normal":
        w = rng.standard_normal((rows, cols))
    elif distribution == "laplace":
        w = rng.laplace(size=(rows, cols))
    elif distribution == "uniform":
        w = rng.uniform(-1, 1, (rows, cols))
    else:
        w = rng.standard_t(4, (rows, cols))
    w *= np.exp(rng.normal(0.0, channel_spread, (rows, 1))) * 0.02
    if outlier_channels:
        w[rng.choice(rows, outlier_channels, replace=False)] *= outlier_scale
    return w.astype(np.float32)
