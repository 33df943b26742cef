"""The mixed-precision plan against brute force, and its llama-quantize export."""
from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest

from quantcore.measure import Stats
from quantcore.plan import llama_quantize_overrides, solve_plan
from quantcore.scan import make_row
from quantcore.io.checkpoint import FileId, TensorEntry

FID = FileId("m.safetensors", "m.safetensors", "safetensors", 1, 1, "0" * 64)
SCHEMES = [("q8_0", 8.5), ("q5_0", 5.5), ("q4_0", 4.5), ("f16", 16.0)]


def rows_for(n_tensors, seed):
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(n_tensors):
        name = f"model.layers.{t}.mlp.down_proj.weight"
        n = int(rng.integers(1, 50)) * 1024
        e = TensorEntry(FID, name, (n // 1024, 1024), "F16", 0, 2 * n, True, True)
        ssx = float(rng.random() * n)
        sens = rng.random() * 10
        for s, bpw in SCHEMES:
            sse = ssx * sens * 2.0 ** (-2 * bpw) * (1 + 0.3 * rng.random())
            rows.append(make_row(e, s, s, s.upper(), Stats(n, sse, 0.0, 0.0, ssx, 0, 0, 0), int(n * bpw / 8), bpw))
    return rows


def brute(rows, budget, objective):
    by = {}
    for r in rows:
        err = r.sse if objective == "sse" else r.n * r.sse / r.ssx
        by.setdefault(r.tensor, []).append((r.bytes, err))
    best = math.inf
    for combo in itertools.product(*by.values()):
        if sum(b for b, _ in combo) <= budget:
            best = min(best, math.fsum(e for _, e in combo))
    return best


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("objective", ["rel", "sse"])
def test_exact_plan_equals_brute_force_and_the_heuristic_is_bracketed(seed, objective):
    rows = rows_for(6, seed)
    N = sum(r.n for r in rows if r.scheme == "q4_0")
    bpw = 4.6 + (seed % 6) * 0.7
    plan = solve_plan(rows, bits_per_weight=bpw, objective=objective)
    opt = brute(rows, plan.budget_bytes, objective)           # 4**6 = 4096 combinations
    assert plan.optimal and plan.error == pytest.approx(opt, rel=1e-12)
    assert plan.total_bytes <= plan.budget_bytes and plan.n_weights == N
    assert plan.lower_bound <= opt * (1 + 1e-12)
    heur = solve_plan(rows, bits_per_weight=bpw, objective=objective, exact_limit=False)
    assert not heur.optimal and heur.total_bytes <= heur.budget_bytes
    assert heur.lower_bound <= opt * (1 + 1e-12) <= heur.error * (1 + 2e-12)


def test_plan_beats_or_matches_every_uniform_scheme_that_fits():
    rows = rows_for(40, 99)
    plan = solve_plan(rows, bits_per_weight=6.0)
    fitting = [u for u in plan.uniform if u.fits]
    assert fitting and all(plan.error <= u.error for u in fitting)
    heur = solve_plan(rows, bits_per_weight=6.0, exact_limit=False)
    assert plan.optimal and plan.error <= heur.error
    assert heur.relative_gap < 0.05     # many tensors: Lagrangian + exchanges land close to the LP bound


def test_budget_below_the_smallest_plan_is_refused():
    with pytest.raises(ValueError, match="below the smallest plan"):
        solve_plan(rows_for(3, 0), bits_per_weight=4.0)


def test_llama_quantize_overrides_match_exactly_one_tensor_each():
    rows = rows_for(5, 3)
    plan = solve_plan(rows, bits_per_weight=6.0)
    base, lines, problems = llama_quantize_overrides(plan)
    assert not problems and base in ("q8_0", "q5_0", "q4_0", "f16")
    chosen = {f"blk.{t.split('.')[2]}.ffn_down.weight": s for t, s in plan.choices}
    for line in lines:
        pattern, typ = line.rsplit("=", 1)
        hits = [n for n in chosen if re.search(pattern, n)]
        assert len(hits) == 1 and chosen[hits[0]] == typ
    assert len(lines) == sum(1 for s in chosen.values() if s != base)


def test_non_gguf_schemes_cannot_be_exported():
    rows = [r for r in rows_for(3, 1)]
    rows = [r.__class__(**{**r.to_dict(), "scheme": "int4-g128" if r.scheme == "q4_0" else r.scheme}) for r in rows]
    plan = solve_plan(rows, bits_per_weight=4.6)
    _, _, problems = llama_quantize_overrides(plan)
    assert problems and "not a GGUF tensor type" in problems[0]


def test_cli_plan_end_to_end(sharded, tmp_path):
    from .conftest import run_cli
    code, _, err = run_cli("scan", sharded[0], "--schemes", "q8_0,q5_0,q4_0,int4-g128", "--out", tmp_path / "o",
                           "--no-progress")
    assert code == 0, err
    code, out, err = run_cli("plan", tmp_path / "o", "--bpw", "5.2", "--schemes", "q8_0,q5_0,q4_0",
                             "--json", tmp_path / "plan.json", "--llama-types", tmp_path / "types.txt")
    assert code == 0, err
    assert "lower bound" in out and "uniform schemes" in out and "--tensor-type-file" in out
    import json
    d = json.loads((tmp_path / "plan.json").read_text())
    assert d["bits_per_weight"] <= 5.2 and len(d["tensors"]) == 16
    for line in (tmp_path / "types.txt").read_text().splitlines():
        assert re.fullmatch(r"\^(blk\\\.\d+\\\.\w+|token_embd|output)\\\.weight\$=q[458]_0", line), line
    code, out, err = run_cli("plan", tmp_path / "o", "--bpw", "4.3", "--llama-types", tmp_path / "t2.txt")
    assert code == 2 and "int4-sym-g128 is not a GGUF tensor type" in err
