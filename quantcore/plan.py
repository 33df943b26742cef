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
3. Exchanges: move one tensor up and another down when the pair fits and lowers the total error
   (the best pair each round, vectorised over candidate pairs), then fill again; until no pair helps.

``gap = error - lower_bound`` bounds how far the plan can be from the true optimum (0 means optimal).

When the Pareto frontiers stay small enough (:data:`MAX_DP_STATES`; checkpoints share few distinct
tensor sizes, so they usually do), :func:`_exact` solves the problem exactly by dynamic programming
over (bytes, error) frontiers and the plan is marked ``optimal``; steps 2-3 are the fallback.
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
MAX_PAIR_MOVES = 2000   # upgrades and downgrades considered per exchange round (pairs: at most 4 M)
MAX_DP_STATES = 5_000_000   # frontier states kept over all tensors by the exact solver (~100 MB)


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
    optimal: bool = False          # found by the exact dynamic programme (else Lagrangian + local search)

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
                "lambda": self.lam, "optimal": self.optimal, "tensors": dict(self.choices),
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


def _greedy_fill(E: np.ndarray, Bf: np.ndarray, choice: np.ndarray, budget: int) -> np.ndarray:
    """The best single switch that still fits, repeated until none lowers the error."""
    T = np.arange(len(choice))
    left = budget - float(Bf[T, choice].sum())
    while True:
        cur_E, cur_B = E[T, choice][:, None], Bf[T, choice][:, None]
        gain = np.where((Bf - cur_B <= left) & np.isfinite(E), cur_E - E, -np.inf)
        k = int(np.argmax(gain))
        t, s = divmod(k, gain.shape[1])
        if not gain[t, s] > 0:
            return choice
        left -= float(Bf[t, s] - Bf[t, choice[t]])
        choice[t] = s


def _improve(E: np.ndarray, Bf: np.ndarray, choice: np.ndarray, budget: int, max_moves: int = MAX_PAIR_MOVES,
             max_rounds: int = 10_000) -> np.ndarray:
    """Greedy fill, then exchanges: one tensor up (more bytes, less error) paired with another down, the
    pair fitting the budget and lowering the total error most; repeated until no pair helps. Pairs are
    formed among the ``max_moves`` best upgrades (error saved per byte) and downgrades (error added per
    byte saved), so one round costs at most ``max_moves**2`` vectorised comparisons."""
    T = np.arange(len(choice))
    choice = _greedy_fill(E, Bf, choice.copy(), budget)
    for _ in range(max_rounds):
        cur_E, cur_B = E[T, choice], Bf[T, choice]
        dE, dB = E - cur_E[:, None], Bf - cur_B[:, None]
        ok = np.isfinite(dE) & np.isfinite(dB)
        left = budget - float(cur_B.sum())
        up_t, up_s = np.nonzero(ok & (dE < 0) & (dB > 0))
        dn_t, dn_s = np.nonzero(ok & (dE > 0) & (dB < 0))
        if not up_t.size or not dn_t.size:
            break
        up_rate = -dE[up_t, up_s] / dB[up_t, up_s]
        dn_rate = dE[dn_t, dn_s] / -dB[dn_t, dn_s]
        ku = np.argsort(-up_rate, kind="stable")[:max_moves]
        kd = np.argsort(dn_rate, kind="stable")[:max_moves]
        up_t, up_s, dn_t, dn_s = up_t[ku], up_s[ku], dn_t[kd], dn_s[kd]
        pair_dB = dB[up_t, up_s][:, None] + dB[dn_t, dn_s][None, :]
        pair_dE = dE[up_t, up_s][:, None] + dE[dn_t, dn_s][None, :]
        fits = (pair_dB <= left) & (up_t[:, None] != dn_t[None, :])
        tol = 1e-12 * max(1.0, float(abs(cur_E).sum()))
        pair_dE = np.where(fits, pair_dE, np.inf)
        k = int(np.argmin(pair_dE))
        i, j = divmod(k, pair_dE.shape[1])
        if not pair_dE[i, j] < -tol:
            break
        choice[up_t[i]], choice[dn_t[j]] = up_s[i], dn_s[j]
        choice = _greedy_fill(E, Bf, choice, budget)
    return choice


def _exact(E: np.ndarray, Bf: np.ndarray, budget: int, max_states: int = MAX_DP_STATES) -> np.ndarray | None:
    """The optimal choice by dynamic programming over the Pareto frontier of (bytes, error), or None
    when the frontiers would hold more than ``max_states`` states in total.

    Tensor by tensor, every frontier state is extended by every option (vectorised), states over the
    budget are dropped, the rest sorted by bytes (then error) and only those with less error than every
    cheaper state kept: an exact frontier, so its best final state is the optimum. Parents are kept per
    tensor to read the choice back. Errors are compared as float64 sums (ties within float64 rounding may
    pick either)."""
    n_t, n_s = E.shape
    bytes_, err = np.zeros(1), np.zeros(1)
    parents, options = [], []
    stored = 0
    for t in range(n_t):  # tensors one by one; everything inside is vectorised over states x options
        ok = np.isfinite(E[t]) & np.isfinite(Bf[t])
        cand_b = (bytes_[:, None] + Bf[t][None, :])[:, ok].ravel()
        cand_e = (err[:, None] + E[t][None, :])[:, ok].ravel()
        par = np.repeat(np.arange(bytes_.size), int(ok.sum()))
        opt = np.tile(np.flatnonzero(ok), bytes_.size)
        fit = cand_b <= budget
        cand_b, cand_e, par, opt = cand_b[fit], cand_e[fit], par[fit], opt[fit]
        if not cand_b.size:
            return None
        order = np.lexsort((cand_e, cand_b))
        cand_b, cand_e, par, opt = cand_b[order], cand_e[order], par[order], opt[order]
        best_before = np.minimum.accumulate(np.concatenate(([np.inf], cand_e[:-1])))
        keep = cand_e < best_before
        bytes_, err = cand_b[keep], cand_e[keep]
        parents.append(par[keep])
        options.append(opt[keep])
        stored += bytes_.size
        if stored > max_states:
            return None
    k = int(np.argmin(err))
    choice = np.empty(n_t, np.int64)
    for t in range(n_t - 1, -1, -1):
        choice[t] = options[t][k]
        k = int(parents[t][k])
    return choice


def solve_plan(rows, *, budget_bytes: int | None = None, bits_per_weight: float | None = None,
               objective: str = "rel", schemes: Sequence[str] | None = None, exact_limit: bool = True) -> MixedPlan:
    """Plan from scan rows (:class:`quantcore.scan.ScanRow`), under a byte or bits/weight budget.
    ``exact_limit=False`` skips the exact dynamic programme (heuristic only)."""
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
    exact = _exact(E, Bf, budget) if exact_limit else None
    choice = exact if exact is not None else _improve(E, Bf, choice, budget)
    total_bytes = int(Bf[T, choice].sum())
    err = float(math.fsum(E[T, choice].tolist()))
    uniform = []
    for j, s in enumerate(schemes):
        ok = np.isfinite(E[:, j]).all()
        ub = int(Bf[:, j].sum()) if ok else -1
        uniform.append(UniformOption(s, ub, float(math.fsum(E[:, j].tolist())) if ok else math.inf,
                                     8.0 * ub / N if ok else math.nan, bool(ok and ub <= budget)))
    return MixedPlan(objective, budget, N, tuple((names[t], schemes[choice[t]]) for t in T), total_bytes, err,
                     min(lower, err), hi, tuple(uniform), exact is not None)


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
           f"  {plan.total_bytes:,} bytes, {plan.bits_per_weight:.3f} bits/weight, error {plan.error:.6g}; " +
           ("optimal (exact dynamic programme); " if plan.optimal else "") +
           f"LP lower bound {plan.lower_bound:.6g} (gap {plan.gap:.3g}, {100 * plan.relative_gap:.3f} %)",
           "  " + ", ".join(f"{s}: {k} tensors" for s, k in Counter(s for _, s in plan.choices).most_common()),
           "", "  uniform schemes:"]
    for u in plan.uniform:
        rel = u.error / plan.error if plan.error > 0 else math.inf
        out.append(f"    {u.scheme:16s} {u.bytes:>14,} bytes  {u.bits_per_weight:7.3f} bits/weight  error "
                   f"{u.error:.6g} ({rel:.2f}x the plan's){'' if u.fits else '  over budget'}")
    return "\n".join(out)
