"""The promotion gate and the metrics it reads."""

import itertools

import pytest

from fleet.evaluation import gate, metrics, report_markdown
from fleet.spec import GateSpec


def m(x):
    return {"macro_f1": x, "accuracy": x}


GRID = [0.0, 0.3, 0.5, 0.59, 0.6, 0.61, 0.9, 1.0]


@pytest.mark.parametrize("margin_champ, margin_base", [(0.0, 0.0), (0.0, 0.1), (0.02, 0.05)])
def test_a_worse_challenger_is_never_promoted(margin_champ, margin_base):
    spec = GateSpec(min_gain_over_champion=margin_champ, min_gain_over_baseline=margin_base)
    for chal, champ, base in itertools.product(GRID, repeat=3):
        d = gate(m(chal), m(base), m(champ), spec)
        if chal <= champ:
            assert not d.promote and d.verdict in ("keep-champion", "reject"), (chal, champ, base)
        if d.promote:
            assert chal - champ > margin_champ and chal - base >= margin_base


def test_verdicts_and_reasons():
    spec = GateSpec(min_gain_over_champion=0.0, min_gain_over_baseline=0.1)
    first = gate(m(0.9), m(0.5), None, spec)
    assert first.promote and first.verdict == "promote" and "no champion yet" in first.reasons
    assert gate(m(0.55), m(0.5), None, spec).verdict == "reject"
    tie = gate(m(0.9), m(0.5), m(0.9), spec)
    assert tie.verdict == "keep-champion" and any("vs champion 0.9000" in r for r in tie.reasons)
    assert tie.thresholds == {"min_gain_over_baseline": 0.1, "min_gain_over_champion": 0.0}
    assert gate(m(0.95), m(0.5), m(0.9), spec).verdict == "promote"


def test_gate_on_accuracy():
    spec = GateSpec(metric="accuracy", min_gain_over_baseline=0.0)
    d = gate({"accuracy": 0.8, "macro_f1": 0.1}, {"accuracy": 0.5, "macro_f1": 0.9}, None, spec)
    assert d.promote and d.metric == "accuracy"


def test_metrics_count_unpredicted_labels():
    got = metrics(["a", "a", "b", "c"], ["a", "a", "a", "a"], ["a", "b", "c"])
    assert got["accuracy"] == 0.5
    assert got["macro_f1"] == pytest.approx((2 * 0.5 * 1 / 1.5) / 3)


def test_report_markdown_shows_all_contenders():
    report = {
        "specialist": "s", "dataset_version": "abc", "test_examples": 4,
        "contenders": {"challenger": {**m(0.9), "model": "new version"}, "champion": None,
                       "baseline": {**m(0.4), "model": "zero-shot minilm-l6"}},
        "gate": gate(m(0.9), m(0.4), None, GateSpec()).to_dict(),
    }
    md = report_markdown(report)
    assert "| challenger | new version | 0.9000 | 0.9000 |" in md and "| champion | none | | |" in md
    assert "**Gate verdict: promote**" in md
