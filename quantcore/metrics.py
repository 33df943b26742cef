"""Reconstruction metrics, overall and per row (channel or block).

Definitions (``e = x_hat - x`` over the real elements, padding excluded):

* ``mse = mean(e^2)``, ``rmse = sqrt(mse)``, ``mae = mean(|e|)``, ``max_abs = max(|e|)``.
* ``sqnr_db = 10 log10(sum(x^2) / sum(e^2))``; ``+inf`` when the error is exactly zero (also for an
  all-zero input), ``-inf`` when the signal is zero but the error is not.
* ``clip_count``: elements whose unclamped code fell outside ``[qmin, qmax]`` (``clipped_low`` +
  ``clipped_high``); ``clip_rate = clip_count / n``.
* ``collapsed``: elements with ``x != 0`` but ``x_hat == 0`` (seed 003's quiet row).
* ``utilization``: mean over blocks of (distinct codes used in the block / levels of the format).
* ``pct_error`` per element: ``100 |e| / |x|``; at ``x = 0`` it is 0 when ``e = 0`` and ``inf`` otherwise.

Sums are accumulated in float64; in the fused kernel float32 errors are first summed in runs of at
most 256 terms (see :func:`quantcore.kernel._row_sum`), so float32-convention metrics carry a relative
error of ~1e-7 (at most 1.5e-5), far below what any table shows.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .kernel import _row_abs_max, _row_count

ROW_FIELDS = ("n", "sse", "sae", "max_abs", "ssx", "clipped_low", "clipped_high", "collapsed")


@dataclass(frozen=True)
class Metrics:
    n: int
    mse: float
    rmse: float
    mae: float
    max_abs: float
    sqnr_db: float
    clip_count: int
    clip_rate: float
    clipped_low: int
    clipped_high: int
    collapsed: int

    def to_dict(self) -> dict:
        return asdict(self)


def sqnr_db(ssx: np.ndarray, sse: np.ndarray) -> np.ndarray:
    """SQNR in dB with the zero conventions of the module docstring (vectorized)."""
    ssx = np.asarray(ssx, dtype=np.float64)
    sse = np.asarray(sse, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 10.0 * np.log10(ssx / sse)
    out = np.where(sse == 0, np.inf, out)
    return np.where((ssx == 0) & (sse > 0), -np.inf, out)


def pct_error(x: np.ndarray, abs_err: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 100.0 * abs_err / np.abs(x)
    return np.where(x == 0, np.where(abs_err == 0, 0.0, np.inf), out)


def row_stats(x: np.ndarray, xhat: np.ndarray, clipped_low: np.ndarray, clipped_high: np.ndarray,
              valid: np.ndarray | None) -> dict[str, np.ndarray]:
    """Additive per-row statistics of 2-D float32 arrays (one row per channel or block), the clip counts
    given: ``e = x_hat - x`` is formed in float64 (exact for float32 operands of like magnitude) and every
    sum is a float64 sum, so the metrics match a float64 reference to ~1e-15."""
    if valid is not None:
        return _masked_row_stats(x, xhat, clipped_low, clipped_high, valid)
    e = np.subtract(xhat, x, dtype=np.float64)
    sse = np.einsum("ij,ij->i", e, e)
    ssx = np.einsum("ij,ij->i", x, x, dtype=np.float64)   # cast on the fly: no float64 copy of x
    np.abs(e, out=e)
    return {
        "n": np.full(x.shape[0], x.shape[1], dtype=np.int64),
        "sse": sse,
        "sae": np.einsum("ij->i", e),
        "max_abs": _row_abs_max(e, np.empty(e.size), absolute=False),
        "ssx": ssx,
        "clipped_low": clipped_low,
        "clipped_high": clipped_high,
        "collapsed": np.zeros(x.shape[0], np.int64) + _row_count((xhat == 0) & (x != 0)),
    }


def _masked_row_stats(x, xhat, clipped_low, clipped_high, valid) -> dict[str, np.ndarray]:
    """:func:`row_stats` over the elements where ``valid`` (padding of a ragged last block) is True."""
    x64 = np.where(valid, x, 0).astype(np.float64)
    err = np.where(valid, xhat, 0).astype(np.float64) - x64
    aerr = np.abs(err)
    return {
        "n": np.count_nonzero(valid, axis=1).astype(np.int64),
        "sse": np.einsum("ij,ij->i", err, err),
        "sae": aerr.sum(axis=1),
        "max_abs": aerr.max(axis=1),
        "ssx": np.einsum("ij,ij->i", x64, x64),
        "clipped_low": clipped_low,
        "clipped_high": clipped_high,
        "collapsed": np.count_nonzero((xhat == 0) & (x != 0) & valid, axis=1),
    }


def combine_rows(stats: dict[str, np.ndarray], n_out: int) -> dict[str, np.ndarray]:
    """Merge consecutive rows in equal runs: ``len(rows) = n_out * k`` rows -> ``n_out`` rows."""
    out = {}
    for k, v in stats.items():
        v = v.reshape(n_out, -1)
        out[k] = v.max(axis=1) if k == "max_abs" else v.sum(axis=1)
    return out


def metrics_from_stats(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-row metric arrays (mse, rmse, mae, max_abs, sqnr_db, clip_*, collapsed) from row stats."""
    n = s["n"].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mse = np.where(n > 0, s["sse"] / n, np.nan)
        mae = np.where(n > 0, s["sae"] / n, np.nan)
        clip_count = s["clipped_low"] + s["clipped_high"]
        clip_rate = np.where(n > 0, clip_count / n, np.nan)
    return {
        "n": s["n"], "mse": mse, "rmse": np.sqrt(mse), "mae": mae, "max_abs": s["max_abs"],
        "sqnr_db": sqnr_db(s["ssx"], s["sse"]), "clip_count": clip_count, "clip_rate": clip_rate,
        "clipped_low": s["clipped_low"], "clipped_high": s["clipped_high"], "collapsed": s["collapsed"],
    }


def overall(s: dict[str, np.ndarray]) -> Metrics:
    tot = combine_rows(s, 1)
    m = metrics_from_stats(tot)
    return Metrics(**{k: (int(v[0]) if np.issubdtype(v.dtype, np.integer) else float(v[0])) for k, v in m.items()})


def codes_used(q: np.ndarray, qmin: int, levels: int, valid: np.ndarray | None) -> np.ndarray:
    """Distinct codes per row of a 2-D code array (bincount when small, sorting otherwise)."""
    rows = q.shape[0]
    idx = q.astype(np.int64) - qmin
    if valid is not None:
        idx = np.where(valid, idx, -1)
    if rows * levels <= 1 << 24:
        flat = (idx + np.arange(rows)[:, None] * levels)
        flat = flat[idx >= 0] if valid is not None else flat.ravel()
        counts = np.bincount(flat, minlength=rows * levels).reshape(rows, levels)
        return np.count_nonzero(counts, axis=1)
    s = np.sort(idx, axis=1)
    distinct = 1 + np.count_nonzero(np.diff(s, axis=1), axis=1)
    if valid is not None:
        distinct -= (s[:, 0] < 0).astype(np.int64)  # the -1 padding marker is not a code
    return distinct
