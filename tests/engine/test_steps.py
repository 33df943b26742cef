"""Stepwise analysis (quantcore.steps): the same result as analyze(), with progress between the candidates of
a range search, so the app can drop a long search when the settings change."""
from __future__ import annotations

import numpy as np
import pytest

import quantcore as qc
from quantcore.steps import advance, run, scaled


def _int(rng, granularity=qc.PerChannel(0)):
    return qc.QuantSpec(fmt=qc.IntFormat(8), mapping="symmetric", granularity=granularity, range=rng)


@pytest.mark.parametrize("spec", [
    _int(qc.KLDivergence()), _int(qc.MSEOptimal(steps=20), qc.PerGroup(32)), _int(qc.KLDivergence(), qc.PerTensor()),
    _int(qc.MinMax()), _int(qc.Percentile(99.0)), qc.preset("nvfp4"), qc.preset("q4_k"),
], ids=lambda s: f"{s.label} {type(getattr(s.scale_rule, 'range', None)).__name__}")
def test_steps_give_analyzes_result_with_progress_between(spec):
    x = qc.synthetic(24, 256, seed=4, channel_spread=2.0)
    steps = qc.analyze_steps(x, spec)
    fractions = []
    while True:
        try:
            fractions.append(next(steps))
        except StopIteration as done:
            got = done.value
            break
    want = qc.analyze(x, spec)
    np.testing.assert_array_equal(got.q, want.q)
    np.testing.assert_array_equal(got.scale, want.scale)
    assert got.metrics == want.metrics
    assert all(0.0 <= f <= 1.0 for f in fractions) and fractions == sorted(fractions)
    rule = spec.scale_rule
    if isinstance(getattr(rule, "range", None), (qc.KLDivergence, qc.MSEOptimal)):
        assert len(fractions) > 16     # one step per candidate: a caller can stop between them


def test_advance_returns_between_steps_and_at_the_end():
    x = qc.synthetic(8, 256, seed=1)
    steps = qc.analyze_steps(x, _int(qc.MSEOptimal(steps=10)))
    done, fraction = advance(steps, 0.0)           # one step, then back to the caller
    assert done is False and 0.0 <= fraction < 1.0
    done, result = advance(steps, 60.0)
    assert done is True and result.metrics == qc.analyze(x, _int(qc.MSEOptimal(steps=10))).metrics


def test_scaled_maps_fractions_and_keeps_the_result():
    def steps():
        yield 0.0
        yield 0.5
        yield 1.0
        return "answer"

    part = scaled(steps(), 0.5, 1.0)
    assert [next(part), next(part), next(part)] == [0.5, 0.75, 1.0]
    assert run(part) == "answer"


def test_an_error_in_a_step_reaches_the_caller():
    x = np.zeros((4, 8), np.float32)
    x[1, 3] = np.nan
    with pytest.raises(ValueError, match="not finite|NaN"):
        run(qc.analyze_steps(x, _int(qc.KLDivergence())))
