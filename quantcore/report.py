"""Comparing schemes on one tensor, the bits x granularity sweep, manual mode, and exports.

Everything the app and the CLI render comes from here: summary rows, the one-sentence advice,
CSV and JSON text (:mod:`quantcore.export`, re-exported). The three CSV downloads are :func:`summary_csv`,
:func:`channels_csv` and :func:`samples_csv` (:func:`manual_csv` in manual mode); they share column names
(``tensor``, ``scheme``, ``channel``, ``channel_label``), and a per-sample file cut at its row limit says so in a
first ``#`` line.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .analysis import ArrayLike, QuantResult, analyze
from .conventions import get_convention
from .export import jsonable, to_csv, to_json
from .formats import IntFormat
from .granularity import Granularity, PerChannel, PerGroup, PerTensor
from .metrics import pct_error
from .quantize import dequantize_blocks, quantize_blocks
from .spec import QuantSpec

__all__ = ["Comparison", "SAMPLE_CSV_LIMIT", "SUMMARY_FIELDS", "channels_csv", "compare", "jsonable", "manual",
           "manual_csv", "mark_pareto", "pareto_mask", "samples_csv", "standard_schemes", "summary_csv", "summary_row",
           "sweep", "sweep_rows", "to_csv", "to_json"]

SUMMARY_FIELDS = ("label", "mae", "rmse", "max_abs", "sqnr_db", "clip_rate", "collapsed", "payload_bytes",
                  "metadata_bytes", "total_bytes", "bits_per_weight")


def summary_row(r: QuantResult) -> dict:
    m, mem = r.metrics, r.memory
    return {"label": r.label, "mae": m.mae, "rmse": m.rmse, "max_abs": m.max_abs, "sqnr_db": m.sqnr_db,
            "clip_rate": m.clip_rate, "collapsed": m.collapsed, "payload_bytes": mem.payload_bytes,
            "metadata_bytes": mem.metadata_bytes, "total_bytes": mem.total_bytes,
            "bits_per_weight": mem.bits_per_weight}


@dataclass(frozen=True)
class Comparison:
    results: tuple[QuantResult, ...]

    def summary_rows(self) -> list[dict]:
        return [summary_row(r) for r in self.results]

    def best(self, metric: str = "rmse", budget_bits: float | None = None) -> int | None:
        """Index of the best scheme by ``metric`` (lowest; highest for sqnr_db); ties: the smaller total size.

        With ``budget_bits``, only schemes of at most that many bits per weight (payload + metadata) compete;
        None when none fits.
        """
        rows = self.summary_rows()
        sign = -1.0 if metric == "sqnr_db" else 1.0
        fits = [i for i, r in enumerate(rows) if budget_bits is None or r["bits_per_weight"] <= budget_bits]
        if not fits:
            return None
        return min(fits, key=lambda i: (sign * rows[i][metric], rows[i]["total_bytes"]))

    def pareto(self) -> list[int]:
        """Indices of the schemes no other is at least as small and as accurate as (total bytes vs RMSE),
        smallest first."""
        rows = self.summary_rows()
        mask = pareto_mask([r["total_bytes"] for r in rows], [r["rmse"] for r in rows])
        return sorted(np.flatnonzero(mask).tolist(), key=lambda i: rows[i]["total_bytes"])

    def advice(self, budget_bits: float | None = None) -> str:
        """Plain sentences: the most accurate scheme (within ``budget_bits`` bits/weight when given), what it buys
        over the first (baseline) scheme at what cost in size, and the Pareto set (size vs RMSE)."""
        rows = self.summary_rows()
        base = rows[0]
        bi = self.best("rmse", budget_bits)
        budget = f" within {budget_bits:g} bits/weight" if budget_bits is not None else ""
        if bi is None:
            small = min(rows, key=lambda r: r["bits_per_weight"])
            return (f"No compared scheme fits {budget_bits:g} bits/weight; the smallest is {small['label']} at "
                    f"{small['bits_per_weight']:.4g} bits/weight (RMSE {small['rmse']:.4g}).")
        best = rows[bi]
        size = f"{best['bits_per_weight']:.4g} bits/weight"
        if bi == 0 or base["rmse"] == best["rmse"]:
            sentence = (f"{best['label']} is the most accurate of these schemes{budget} "
                        f"(RMSE {best['rmse']:.4g}, {size}).")
        else:
            cut = 100.0 * (base["rmse"] - best["rmse"]) / base["rmse"] if base["rmse"] > 0 else 0.0
            extra = best["total_bytes"] - base["total_bytes"]
            rel = 100.0 * extra / base["total_bytes"]
            cost = f"{'+' if extra >= 0 else '-'}{abs(extra):,} B ({'+' if extra >= 0 else '-'}{abs(rel):.1f} %)"
            sentence = (f"Most accurate{budget}: {best['label']} ({size}), cutting RMSE {cut:.0f} % vs "
                        f"{base['label']} for {cost} of total size")
            cheaper = [r for r in rows if r["total_bytes"] < best["total_bytes"] and r["rmse"] <= 1.1 * best["rmse"]]
            if cheaper:
                c = min(cheaper, key=lambda r: r["total_bytes"])
                sentence += f"; {c['label']} comes within 10 % of that RMSE in {c['total_bytes']:,} B"
            sentence += "."
        front = self.pareto()
        if len(front) > 1:
            sentence += " Pareto set (smaller or more accurate than every other): " + ", ".join(
                f"{rows[i]['label']} ({rows[i]['bits_per_weight']:.4g} b/w, RMSE {rows[i]['rmse']:.3g})"
                for i in front) + "."
        return sentence

    def to_dict(self, budget_bits: float | None = None) -> dict:
        return jsonable({"schemes": [r.to_dict() for r in self.results], "summary": self.summary_rows(),
                         "best_rmse": self.best("rmse"), "budget_bits": budget_bits,
                         "best_within_budget": self.best("rmse", budget_bits), "pareto": self.pareto(),
                         "advice": self.advice(budget_bits)})


def compare(x: ArrayLike, specs: Sequence[QuantSpec], channel_axis: int = 0,
            channel_names: Sequence[str] | None = None) -> Comparison:
    """Analyze several schemes on one tensor (the input is validated once per scheme)."""
    if not specs:
        raise ValueError("compare needs at least one scheme")
    return Comparison(tuple(analyze(x, s, channel_axis, channel_names) for s in specs))


def standard_schemes(base: QuantSpec, group_sizes: Iterable[int] = (128,), channel_axis: int = 0,
                     group_axis: int = -1) -> list[QuantSpec]:
    """Per-tensor, per-channel and per-group variants of ``base``."""
    out = [base.with_(granularity=PerTensor()), base.with_(granularity=PerChannel(channel_axis))]
    out += [base.with_(granularity=PerGroup(g, group_axis)) for g in group_sizes]
    return out


DEFAULT_SWEEP_BITS = (2, 3, 4, 5, 6, 8)
DEFAULT_SWEEP_GRANULARITIES: tuple[Granularity, ...] = (PerTensor(), PerChannel(0), PerGroup(32), PerGroup(64),
                                                       PerGroup(128), PerGroup(256))


def pareto_mask(cost: np.ndarray, err: np.ndarray) -> np.ndarray:
    """True where no other point is at most as costly and at most as wrong, and strictly better in one."""
    cost, err = np.asarray(cost, float), np.asarray(err, float)
    dominated = ((cost[None, :] <= cost[:, None]) & (err[None, :] <= err[:, None])
                 & ((cost[None, :] < cost[:, None]) | (err[None, :] < err[:, None]))).any(axis=1)
    return ~dominated


def channel_subsample(x: ArrayLike, max_elements: int, channel_axis: int = 0) -> tuple[ArrayLike, int]:
    """Evenly spaced channels of ``x`` holding at most ``max_elements`` elements (all if it fits).

    Returns ``(subset, n_channels_kept)``. Used to keep sweeps interactive on huge tensors: errors are
    then estimates over the kept channels, and memory is still reported for the kept part only.
    """
    if not isinstance(x, np.ndarray):
        return x, len(x)
    a = x.reshape(1, -1) if x.ndim <= 1 else x
    C = a.shape[channel_axis]
    per_channel = a.size // C
    keep = max(1, min(C, max_elements // max(per_channel, 1)))
    if keep >= C:
        return x, C
    idx = np.unique(np.linspace(0, C - 1, keep).round().astype(np.int64))
    return np.take(a, idx, axis=channel_axis), int(idx.size)


def sweep(x: ArrayLike, base: QuantSpec | None = None, bits: Sequence[int] = DEFAULT_SWEEP_BITS,
          granularities: Sequence[Granularity] = DEFAULT_SWEEP_GRANULARITIES, channel_axis: int = 0,
          extra: Sequence[QuantSpec] = (), max_elements: int | None = None) -> list[dict]:
    """Error vs memory over bits x granularity (plus ``extra`` specs such as GGUF presets or float formats).

    Group sizes at least as long as the group axis are skipped (they equal per-channel). With
    ``max_elements``, a larger tensor is swept on evenly spaced channels (see :func:`channel_subsample`);
    every row then carries ``sampled_channels``. Rows carry ``pareto`` (see :func:`mark_pareto`).
    """
    return mark_pareto(list(sweep_rows(x, base, bits, granularities, channel_axis, extra, max_elements)))


def mark_pareto(rows: list[dict]) -> list[dict]:
    """Set ``pareto`` on sweep rows: no other row is at most as large and at most as wrong (RMSE)."""
    mask = pareto_mask([r["total_bytes"] for r in rows], [r["rmse"] for r in rows])
    for r, p in zip(rows, mask):
        r["pareto"] = bool(p)
    return rows


def sweep_rows(x: ArrayLike, base: QuantSpec | None = None, bits: Sequence[int] = DEFAULT_SWEEP_BITS,
               granularities: Sequence[Granularity] = DEFAULT_SWEEP_GRANULARITIES, channel_axis: int = 0,
               extra: Sequence[QuantSpec] = (), max_elements: int | None = None) -> Iterable[dict]:
    """The rows of :func:`sweep` one scheme at a time (no ``pareto`` yet), so a caller can stop early or
    yield to other work between schemes."""
    sampled = None
    if max_elements is not None:
        x, sampled = channel_subsample(x, max_elements, channel_axis)
    for s in sweep_specs(x, base, bits, granularities, extra):
        yield sweep_row(analyze(x, s, channel_axis), sampled)


def sweep_specs(x: ArrayLike, base: QuantSpec | None = None, bits: Sequence[int] = DEFAULT_SWEEP_BITS,
                granularities: Sequence[Granularity] = DEFAULT_SWEEP_GRANULARITIES,
                extra: Sequence[QuantSpec] = ()) -> list[QuantSpec]:
    """The schemes a sweep runs: ``base`` at each bit width and granularity, then ``extra``; integer groups
    at least as long as the tensor's group axis are left out (they would repeat per-channel)."""
    base = base or QuantSpec(mapping="symmetric")
    specs = [base.with_(fmt=IntFormat(b, base.fmt.signed, base.fmt.narrow), granularity=g)
             for b in bits for g in granularities] + list(extra)
    return [s for s in specs if not (isinstance(s.granularity, PerGroup) and s.kind == "int"
                                     and _group_axis_length(x, s.granularity.axis) <= s.granularity.size)]


def sweep_row(r: QuantResult, sampled: int | None = None) -> dict:
    """One sweep row: :func:`summary_row` plus bits per element and the granularity (``sampled_channels``:
    how many channels a subsampled sweep kept)."""
    row = summary_row(r)
    row.update(bits=r.memory.bits, granularity=r.spec.granularity.label if r.spec.kind == "int" else r.spec.label)
    if sampled is not None:
        row["sampled_channels"] = sampled
    return row


def _group_axis_length(x: ArrayLike, axis: int) -> int:
    if isinstance(x, np.ndarray):
        a = x.reshape(1, -1) if x.ndim <= 1 else x
        return a.shape[axis] if -a.ndim <= axis < a.ndim else 0
    return max(len(r) for r in x)


def manual(names: Sequence[str], scale: ArrayLike, zero_point: ArrayLike, sample: ArrayLike, fmt: IntFormat,
           rounding: str = "half-even", convention: str = "float64") -> dict[str, np.ndarray]:
    """Seed 001's manual mode: given scale and zero-point per channel, quantize one sample each.

    Raises ValueError naming the row for a non-positive scale, a zero-point outside ``[qmin, qmax]``
    or a non-integer zero-point, and for inputs of different lengths.
    """
    conv = get_convention(convention)
    s = np.asarray(scale, dtype=np.float64).reshape(-1)
    z = np.asarray(zero_point, dtype=np.float64).reshape(-1)
    x = np.asarray(sample, dtype=np.float64).reshape(-1)
    if not (len(names) == s.size == z.size == x.size):
        raise ValueError(f"manual parameters: {len(names)} names, {s.size} scales, {z.size} zero-points and "
                         f"{x.size} samples; each row needs all four")
    if s.size == 0:
        raise ValueError("manual parameters: no rows given")
    for what, arr in (("scale", s), ("zero-point", z), ("sample", x)):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise ValueError(f"manual row {int(bad[0]) + 1} ({names[bad[0]]}): {what} is not finite")
    bad = np.flatnonzero(s <= 0)
    if bad.size:
        raise ValueError(f"manual row {int(bad[0]) + 1} ({names[bad[0]]}): scale must be > 0, got {s[bad[0]]:g}")
    bad = np.flatnonzero((z != np.round(z)) | (z < fmt.qmin) | (z > fmt.qmax))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"manual row {i + 1} ({names[i]}): zero-point {z[i]:g} must be an integer in "
                         f"[{fmt.qmin}, {fmt.qmax}] for {fmt.label}")
    dt = conv.dtype
    qmin, qmax = conv.code_range(fmt)
    raw, q = quantize_blocks(x.astype(dt)[:, None], s.astype(dt), z.astype(dt), qmin, qmax, conv, rounding)
    xhat = dequantize_blocks(q, s.astype(dt), z.astype(dt), conv)[:, 0].astype(np.float64)
    raw, q = raw[:, 0], q[:, 0]
    abs_err = np.abs(xhat - x.astype(dt).astype(np.float64))
    return {"channel": np.array(list(names), dtype=object), "scale": s, "zero_point": z.astype(np.int64),
            "sample": x, "raw_q": raw.astype(np.float64), "q": q.astype(np.int64), "dequantized": xhat,
            "abs_error": abs_err, "pct_error": pct_error(x, abs_err),
            "clipped": np.sign(raw - q).astype(np.int64)}


# --- the three CSV downloads (app) and their shared column names ---------------------------------
#  tensor         the tensor's name                      scheme   the scheme's label (QuantResult.label)
#  channel        0-based channel index                  channel_label   that channel's label (untrusted text)
SAMPLE_CSV_LIMIT = 10_000


def summary_csv(comparison: Comparison, tensor_name: str) -> str:
    """The scheme comparison: one row per scheme, columns ``tensor, scheme`` and SUMMARY_FIELDS' metrics."""
    rows = [{"tensor": tensor_name, "scheme": row["label"], **{k: v for k, v in row.items() if k != "label"}}
            for row in comparison.summary_rows()]
    return to_csv(rows)


def _channel_label_array(result: QuantResult, labels: Sequence[str] | None) -> np.ndarray:
    names = result.channel_names if labels is None else list(labels)
    if len(names) != result.canon.n_channels:
        raise ValueError(f"{len(names)} channel labels for {result.canon.n_channels} channels")
    return np.asarray(names, dtype=object)


def channels_csv(result: QuantResult, labels: Sequence[str] | None, tensor_name: str) -> str:
    """One row per channel: ``tensor, scheme, channel, channel_label`` then the columns of
    :meth:`QuantResult.channel_table` (scale/zero_point are ``nan`` where a channel has several blocks).
    ``labels`` default to the result's channel names."""
    t = result.channel_table()
    n = len(t["channel"])
    cols = {"tensor": [tensor_name] * n, "scheme": [result.label] * n, "channel": t["channel"],
            "channel_label": _channel_label_array(result, labels)[t["channel"]]}
    cols.update((k, v) for k, v in t.items() if k not in ("channel", "name"))
    return to_csv(cols)


def samples_csv(result: QuantResult, labels: Sequence[str] | None = None, limit: int = SAMPLE_CSV_LIMIT,
                tensor_name: str = "") -> str:
    """One row per element in channel order, at most ``limit`` rows: ``tensor, scheme, channel, channel_label``
    then :meth:`QuantResult.sample_table`'s columns. When the tensor has more elements the file starts with the
    note line ``# first <limit> of <n> samples in channel order: ...`` (see :func:`to_csv`)."""
    t = result.sample_table(limit=limit)
    k, n_total = len(t["x"]), result.memory.n_elements
    cols = {"tensor": [tensor_name] * k, "scheme": [result.label] * k, "channel": t["channel"],
            "channel_label": _channel_label_array(result, labels)[t["channel"]]}
    cols.update((c, v) for c, v in t.items() if c != "channel")
    note = (f"first {k:,} of {n_total:,} samples in channel order: this export stops at {limit:,} rows"
            if k < n_total else None)
    return to_csv(cols, note=note)


def manual_csv(rows: dict[str, np.ndarray]) -> str:
    """Seed 001's manual mode table (:func:`manual`) with the channel name as ``channel_label``."""
    return to_csv({"channel_label": rows["channel"], **{k: v for k, v in rows.items() if k != "channel"}})
