"""A mixed-precision plan: one scheme per tensor under a size budget, minimising total error.

This is the multiple-choice knapsack: tensors ``t``, schemes ``s``, bytes ``B[t, s]``, error
``E[t, s]``; choose one ``s`` per tensor with ``sum B <= budget`` minimising ``sum E``. Two error
measures (``objective``):

* ``"sse"`` -- ``E = n * MSE = sum (x_hat - x)^2``: the absolute squared error. Large tensors and
  tensors of large magnitude dominate; it is the right sum when every weight's error matters equally
  in absolute terms.
* ``"rel"`` (default) -- ``E = n * MSE / mean(x^2) = n * sse / ssx``: each weight's squared error
  relative to its own tensor's power. Scale-invariant, so a tensor stored with a larger magnitude
  (embeddings, some norms folded into weights) does not win bits merely for being large; a tensor
  still weighs in proportion to its size. This is the usual proxy when no activation statistics are
  at hand (the error that reaches the output scales with the tensor's relative error).

Solver (vectorised over the ``(T, S)`` matrices):

1. Lagrangian relaxation: for ``lam >= 0`` every tensor takes ``argmin_s E + lam * B`` (a point of
   its lower convex hull); bytes fall as ``lam`` grows. Bisection finds the smallest ``lam`` whose
   choice fits the budget. ``L(lam) = sum_t min_s (E + lam B) - lam * budget`` is a lower bound on the
   optimum for every ``lam >= 0`` (weak duality) and equals the LP relaxation's optimum at the
   crossing ``lam``: it is reported as ``lower_bound``.
2. Greedy fill: from that feasible choice, repeatedly make the single switch (any tensor, any
   scheme) that lowers the error most among those still fitting the remaining budget, until none does.

``gap = error - lower_bound`` bounds how far the plan can be from the true optimum (0 means optimal).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .names import hf_to_gguf
from .schemes import parse_scheme

OBJECTIVES = ("rel", "sse")


@dataclass(frozen=True)
class UniformOption:
    scheme: str
    bytes: int
    error: float
    bits_per_weight: float
    fits: bool


@dataclass(frozen=True)
class MixedPlan:
    """The plan: ``choices`` maps tensor -> scheme; sizes in bytes; errors in the objective's units."""

    objective: str
    budget_bytes: int
    n_weights: int
    choices: tuple[tuple[str, str], ...]
    total_bytes: int
    error: float
    lower_bound: float
    lam: float
    uniform: tuple[UniformOption, ...]

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.total_bytes / self.n_weights

    @property
    def gap(self) -> float:
        return self.error - self.lower_bound

    @property
    def relative_gap(self) -> float:
        return self.gap / self.error if self.error > 0 else 0.0

    def to_dict(self) -> dict:
        return {"objective": self.objective, "budget_bytes": self.budget_bytes, "n_weights": self.n_weights,
                "total_bytes": self.total_bytes, "bits_per_weight": self.bits_per_weight, "error": self.error,
                "lower_bound": self.lower_bound, "gap": self.gap, "relative_gap": self.relative_gap,
                "lambda": self.lam, "tensors": dict(self.choices),
                "uniform": [u.__dict__ for u in self.uniform],
                "counts": dict(Counter(s for _, s in self.choices))}


def _matrices(rows, schemes: Sequence[str] | None, objective: str):
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    rows = [r for r in rows if not r.scheme.startswith("shipped:")]
    names = list(dict.fromkeys(r.tensor for r in rows))
    schemes = list(schemes) if schemes else list(dict.fromkeys(r.scheme for r in rows))
    if not names or not schemes:
        raise ValueError("no scanned tensors to plan (scan the checkpoint first)")
    ti = {n: i for i, n in enumerate(names)}
    si = {s: i for i, s in enumerate(schemes)}
    B = np.full((len(names), len(schemes)), np.inf)
    E = np.full((len(names), len(schemes)), np.inf)
    n = np.zeros(len(names), np.int64)
    for r in rows:
        if r.scheme not in si:
            continue
        t, s = ti[r.tensor], si[r.scheme]
        B[t, s] = r.bytes
        if objective == "sse":
            E[t, s] = r.sse
        else:
            E[t, s] = r.n * (r.sse / r.ssx) if r.ssx > 0 else (0.0 if r.sse == 0 else np.inf)
        n[t] = r.n
    missing = ~np.isfinite(B).any(axis=1)
    if missing.any():
        raise ValueError(f"tensor {names[int(np.flatnonzero(missing)[0])]!r} has no row for any of the schemes")
    return names, schemes, B, E, n


def _choose(E: np.ndarray, B: np.ndarray, lam: float) -> np.ndarray:
    """argmin_s E + lam * B per tensor; ties go to the smaller size (then the earlier scheme)."""
    with np.errstate(invalid="ignore"):
        cost = E + lam * B
    cost = np.where(np.isfinite(E) & np.isfinite(B), cost, np.inf)
    best = cost.min(axis=1, keepdims=True)
    Bt = np.where(cost == best, B, np.inf)
    return Bt.argmin(axis=1)


def solve_plan(rows, *, budget_bytes: int | None = None, bits_per_weight: float | None = None,
               objective: str = "rel", schemes: Sequence[str] | None = None) -> MixedPlan:
    """Plan from scan rows (:class:`quantcore.scan.ScanRow`), under a byte or bits/weight budget."""
    names, schemes, B, E, n = _matrices(rows, schemes, objective)
    N = int(n.sum())
    if (budget_bytes is None) == (bits_per_weight is None):
        raise ValueError("give exactly one budget: bytes or bits per weight")
    budget = int(budget_bytes) if budget_bytes is not None else int(math.floor(bits_per_weight * N / 8))
    T = np.arange(len(names))
    Bf = np.where(np.isfinite(B), B, np.inf)
    cheapest = np.nanmin(np.where(np.isfinite(E), Bf, np.inf), axis=1)
    if cheapest.sum() > budget:
        raise ValueError(f"budget {budget:,} bytes ({8 * budget / N:.3f} bits/weight) is below the smallest plan: "
                         f"{int(cheapest.sum()):,} bytes ({8 * cheapest.sum() / N:.3f} bits/weight)")

    def size(lam: float) -> float:
        return float(Bf[T, _choose(E, B, lam)].sum())

    lo, hi = 0.0, 1.0
    if size(0.0) <= budget:
        hi = 0.0
    else:
        while size(hi) > budget:
            hi *= 2.0
            if hi > 1e300:
                raise ValueError("no multiplier fits the budget (inconsistent sizes)")
        for _ in range(200):  # bisection to the crossing multiplier; stops when lo and hi are adjacent floats
            mid = 0.5 * (lo + hi)
            if mid in (lo, hi):
                break
            if size(mid) <= budget:
                hi = mid
            else:
                lo = mid
    choice = _choose(E, B, hi)

    def dual(lam: float) -> float:
        c = _choose(E, B, lam)
        return float(math.fsum((E[T, c] + lam * Bf[T, c]).tolist()) - lam * budget)

    lower = max(dual(hi), dual(lo)) if hi > 0 else float(math.fsum(E[T, choice].tolist()))
    # Greedy fill: the best single switch that still fits, until none lowers the error.
    left = budget - float(Bf[T, choice].sum())
    while True:
        cur_E, cur_B = E[T, choice][:, None], Bf[T, choice][:, None]
        gain = np.where((Bf - cur_B <= left) & np.isfinite(E), cur_E - E, -np.inf)
        k = int(np.argmax(gain))
        t, s = divmod(k, gain.shape[1])
        if not gain[t, s] > 0:
            break
        left -= float(Bf[t, s] - Bf[t, choice[t]])
        choice[t] = s
    total_bytes = int(Bf[T, choice].sum())
    err = float(math.fsum(E[T, choice].tolist()))
    uniform = []
    for j, s in enumerate(schemes):
        ok = np.isfinite(E[:, j]).all()
        ub = int(Bf[:, j].sum()) if ok else -1
        uniform.append(UniformOption(s, ub, float(math.fsum(E[:, j].tolist())) if ok else math.inf,
                                     8.0 * ub / N if ok else math.nan, bool(ok and ub <= budget)))
    return MixedPlan(objective, budget, N, tuple((names[t], schemes[choice[t]]) for t in T), total_bytes, err,
                     min(lower, err), hi, tuple(uniform))


def gguf_name(tensor: str) -> str | None:
    """The GGUF tensor name llama-quantize sees: the name itself when it already is one."""
    if tensor.startswith(("blk.", "token_embd", "output", "rope_")):
        return tensor
    return hf_to_gguf(tensor)


def llama_quantize_overrides(plan: MixedPlan) -> tuple[str | None, list[str], list[str]]:
    """``(base type, override lines NAME=TYPE, problems)`` for ``llama-quantize --tensor-type-file``.

    Each line is ``^<escaped GGUF name>$=<type>`` (llama.cpp ``tools/quantize``: the pattern is
    lower-cased and matched with ``std::regex_search``, the first matching pattern wins, the type name
    is compared case-insensitively). The base type is the most common type by weight count; only
    tensors of another type get a line. ``problems`` lists tensors whose scheme is not a GGUF type or
    whose name has no GGUF counterpart (then no file should be written).
    """
    problems = []
    typed = []
    for tensor, scheme in plan.choices:
        g = parse_scheme(scheme).ggml_type
        name = gguf_name(tensor)
        if g is None:
            problems.append(f"{tensor}: {scheme} is not a GGUF tensor type")
        elif name is None:
            problems.append(f"{tensor}: no GGUF name known (llama family only)")
        else:
            typed.append((name, g.lower()))
    if not typed:
        return None, [], problems
    base = Counter(t for _, t in typed).most_common(1)[0][0]
    lines = [f"^{re.escape(n)}$={t}" for n, t in typed if t != base]
    return base, lines, problems


def render_plan(plan: MixedPlan) -> str:
    """The plan as text: totals, the gap to the lower bound, and each uniform scheme beside it."""
    unit = "sum n * MSE / mean(x^2)" if plan.objective == "rel" else "sum of squared errors"
    out = [f"mixed plan ({plan.objective}: {unit}) under {plan.budget_bytes:,} bytes "
           f"({8 * plan.budget_bytes / plan.n_weights:.3f} bits/weight):",
           f"  {plan.total_bytes:,} bytes, {plan.bits_per_weight:.3f} bits/weight, error {plan.error:.6g}; "
           f"lower bound {plan.lower_bound:.6g} (gap {plan.gap:.3g}, {100 * plan.relative_gap:.3f} %)",
           "  " + ", ".join(f"{s}: {k} tensors" for s, k in Counter(s for _, s in plan.choices).most_common()),
           "", "  uniform schemes:"]
    for u in plan.uniform:
        rel = u.error / plan.error if plan.error > 0 else math.inf
        out.append(f"    {u.scheme:16s} {u.bytes:>14,} bytes  {u.bits_per_weight:7.3f} bits/weight  error "
                   f"{u.error:.6g} ({rel:.2f}x the plan's){'' if u.fits else '  over budget'}")
    return "\n".join(out)
