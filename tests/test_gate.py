"""The promotion gate (property-based) and the statistics it reads."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.core.results import ContenderScore, Cost, Metric, Outputs
from fleet.core.spec import GateSpec
from fleet.metrics.gate import VERDICTS, gate
from fleet.metrics.stats import expected_calibration_error, mcnemar_exact, metrics_with_ci

unit = st.floats(0, 1, allow_nan=False)
margin = st.floats(0, 0.3, allow_nan=False)
p_values = st.one_of(st.none(), unit)


def m(x, **cost):
    return ContenderScore(
        role="contender",
        model="m",
        n=100,
        metrics={"macro_f1": Metric(value=x), "accuracy": Metric(value=x)},
        cost=Cost(**cost),
    )


gate_specs = st.builds(
    GateSpec,
    metric=st.just("macro_f1"),
    min_gain_over_champion=margin,
    min_gain_over_baseline=margin,
    alpha=st.floats(0.001, 0.2),
    max_latency_p95_ms=st.one_of(st.none(), st.floats(1, 100)),
    max_cost_per_1k=st.one_of(st.none(), st.floats(0.0001, 1)),
)


@settings(max_examples=400, deadline=None)
@given(
    chal=unit,
    champ=unit,
    base=unit,
    spec=gate_specs,
    p=p_values,
    lat=st.floats(0.1, 200),
    cost=st.floats(0, 2),
    regressed=st.booleans(),
)
def test_gate_properties(chal, champ, base, spec, p, lat, cost, regressed):
    regressions = ["short: macro_f1 0.5 < champion 0.9 - tolerance 0.02"] if regressed else []
    d = gate(
        m(chal, latency_p95_ms=lat, cost_per_1k=cost),
        m(base),
        m(champ),
        spec,
        p_vs_champion=p,
        slice_regressions=regressions,
        slice_tolerances={"short": 0.02},
    )
    assert d.verdict in VERDICTS and d.promote == (d.verdict == "promote")
    if chal <= champ:  # a challenger no better than the champion is never promoted
        assert not d.promote
    if regressed:  # a guarded-slice regression is never promoted
        assert not d.promote
    if d.promote:
        assert chal - champ > spec.min_gain_over_champion and p is not None and p < spec.alpha
        assert chal - base >= spec.min_gain_over_baseline
    # the record names every threshold it used
    assert set(d.thresholds) == {
        "metric",
        "min_gain_over_baseline",
        "min_gain_over_champion",
        "alpha",
        "max_latency_p95_ms",
        "max_cost_per_1k",
        "guarded_slice_tolerances",
    }
    assert d.thresholds["alpha"] == spec.alpha and d.thresholds["guarded_slice_tolerances"] == {"short": 0.02}


@settings(max_examples=200, deadline=None)
@given(chal=unit, base=unit, spec=gate_specs)
def test_without_a_champion_the_baseline_margin_decides(chal, base, spec):
    d = gate(
        m(chal, latency_p95_ms=0.5, cost_per_1k=0.0),
        m(base),
        None,
        spec.model_copy(update={"max_latency_p95_ms": None, "max_cost_per_1k": None}),
    )
    assert d.promote == (chal - base >= spec.min_gain_over_baseline)
    assert d.verdict in ("promote", "reject")


def test_verdicts():
    spec = GateSpec(metric="macro_f1", min_gain_over_champion=0.0, min_gain_over_baseline=0.1, alpha=0.05)
    assert gate(m(0.9), m(0.5), None, spec).verdict == "promote"
    assert gate(m(0.55), m(0.5), None, spec).verdict == "reject"
    assert gate(m(0.95), m(0.5), m(0.9), spec, p_vs_champion=0.01).verdict == "promote"
    assert gate(m(0.95), m(0.5), m(0.9), spec, p_vs_champion=0.2).verdict == "keep-champion"  # not significant
    retire = gate(m(0.58), m(0.55), m(0.6), spec, p_vs_champion=0.5)
    assert retire.verdict == "retire" and any("champion's gain over the general baseline" in r for r in retire.reasons)
    assert gate(m(0.58), m(0.55), m(0.9), spec, p_vs_champion=0.5).verdict == "reject"
    budget = GateSpec(metric="macro_f1", min_gain_over_baseline=0.1, max_latency_p95_ms=10)
    d = gate(m(0.9, latency_p95_ms=25.0), m(0.5), None, budget)
    assert d.verdict == "reject" and any("latency p95 25.0 ms > budget 10" in r for r in d.reasons)


def test_bootstrap_intervals_contain_the_point_and_shrink_with_n():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 2000)
    pred = np.where(rng.random(2000) < 0.8, y, rng.integers(0, 3, 2000))
    big = metrics_with_ci(y, pred, ["a", "b", "c"])
    small = metrics_with_ci(y[:200], pred[:200], ["a", "b", "c"])
    for r in (big, small):
        assert r.macro_f1.ci[0] <= r.macro_f1.value <= r.macro_f1.ci[1]
        assert set(r.per_label) == {"a", "b", "c"}
    width = lambda r: r.macro_f1.ci[1] - r.macro_f1.ci[0]  # noqa: E731
    assert width(big) < width(small)
    assert metrics_with_ci(y, pred, ["a", "b", "c"], seed=1).macro_f1.value == big.macro_f1.value


def test_mcnemar_and_ece():
    y = np.array([0] * 100)
    same = mcnemar_exact(y, y, y)
    assert same.p_value == 1.0
    better = mcnemar_exact(y, y, np.array([1] * 30 + [0] * 70))
    assert better.a_wins == 30 and better.b_wins == 0 and better.p_value < 1e-8
    probs = np.array([[0.9, 0.1]] * 10)
    assert expected_calibration_error(probs, np.array([0] * 9 + [1])) == pytest.approx(0.0)
    assert expected_calibration_error(probs, np.array([1] * 10)) == pytest.approx(0.9)


def test_a_slice_is_scored_over_the_labels_it_holds():
    import pandas as pd

    from fleet.kinds import parse_fleet
    from fleet.kinds.classification.scoring import score

    spec = parse_fleet(
        {
            "specialists": {
                "s": {
                    "data": {"source": "a.csv"},
                    "labels": ["ham", "spam"],
                    "evaluation": {"bootstrap_resamples": 100, "slices": [{"name": "short", "max_chars": 5}]},
                }
            }
        }
    ).specialists["s"]
    test = pd.DataFrame(
        {
            "text": ["hi", "yo", "a much longer spam text", "another long ham text"],
            "label": ["ham", "ham", "spam", "ham"],
        }
    )
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.6, 0.4]])
    outputs = Outputs(predictions=["ham", "ham", "spam", "ham"], probabilities=probs.tolist())
    out = score(spec, "challenger", "m", outputs, test)
    assert out.slices["short"].metrics["macro_f1"].value == 1.0 and out.slices["short"].labels == ["ham"]
