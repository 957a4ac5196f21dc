"""Fast unit tests of evaluation's parts: timing (one pass per contender), scoring of both kinds, and the
training key. The flow tests reach these too, but only in the slow tier."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest
from sklearn.metrics import f1_score

from fleet.core.results import Outputs
from fleet.core.sections import EvaluationSpec
from fleet.kinds import kind_of, parse_fleet
from fleet.metrics.timing import measure
from fleet.stages.training import training_key

LABELS = ["ham", "spam"]


def classifier(**over):
    entry = {"data": {"source": "x.csv"}, "labels": LABELS, "evaluation": {"bootstrap_resamples": 200}, **over}
    return parse_fleet({"specialists": {"c": entry}}).specialists["c"]


def generator(**over):
    entry = {
        "task": "text-generation",
        "data": {"source": "x.jsonl"},
        "generation": {"output": "json"},
        "evaluation": {"bootstrap_resamples": 200},
        **over,
    }
    return parse_fleet({"specialists": {"g": entry}}).specialists["g"]


class Recorder:
    """A predictor that records every batch it was asked and answers each text with its length."""

    def __init__(self, delay_s: float = 0.0):
        self.batches: list[list[str]] = []
        self.delay_s = delay_s

    def __call__(self, texts: list[str]) -> Outputs:
        self.batches.append(list(texts))
        time.sleep(self.delay_s)
        return Outputs(predictions=[str(len(t)) for t in texts], probabilities=[[1.0, 0.0] for _ in texts])


def test_measure_predicts_every_row_once_and_returns_them_in_order():
    texts = [f"text {'x' * (i % 7)} {i}" for i in range(40)]
    ev = EvaluationSpec(latency_samples=3, timing_rows=10, serving_batch_size=4)
    rec = Recorder()
    outputs, cost = measure(rec, texts, ev, rest_batch_size=8)
    asked = [t for b in rec.batches for t in b]
    assert sorted(asked) == sorted(texts)  # each row exactly once
    assert outputs.predictions == [str(len(t)) for t in texts]  # back in the rows' order
    sizes = [len(b) for b in rec.batches]
    assert sizes[:3] == [1, 1, 1] and sizes[3:6] == [4, 4, 2]  # singles, then request-sized batches
    rest = rec.batches[6:]
    assert all(len(b) <= 8 for b in rest)
    lengths = [len(t) for b in rest for t in b]
    assert lengths == sorted(lengths)  # the untimed rest in length-sorted batches
    assert cost.serving_batch_size == 4 and cost.latency_p50_ms is not None and cost.throughput_per_s > 0


def test_measure_times_the_timed_rows_only():
    ev = EvaluationSpec(latency_samples=2, timing_rows=4, serving_batch_size=2, price_per_cpu_hour=3.6)
    _, cost = measure(Recorder(delay_s=0.02), ["a"] * 30, ev)
    # 4 timed rows in 2 batches of at least 20 ms each: at most 100 rows/s (sleeping costs no CPU); counting
    # the 24 untimed rows (one batch of 20 ms) too would give about 470
    assert 20 < cost.throughput_per_s <= 100.5
    assert cost.latency_p95_ms >= 19
    assert cost.cost_per_1k == pytest.approx(cost.cpu_seconds_per_1k / 3600 * 3.6, rel=1e-3, abs=1e-6)


def test_measure_with_fewer_rows_than_latency_samples():
    outputs, cost = measure(Recorder(), ["a", "bb"], EvaluationSpec(latency_samples=5, timing_rows=10))
    assert outputs.predictions == ["1", "2"] and cost.throughput_per_s is not None


def test_classifier_scores_match_scikit_learn_with_intervals_around_them():
    spec = classifier()
    y = ["ham"] * 30 + ["spam"] * 10
    pred = ["ham"] * 27 + ["spam"] * 3 + ["spam"] * 6 + ["ham"] * 4
    probs = [[0.9, 0.1] if p == "ham" else [0.2, 0.8] for p in pred]
    test = pd.DataFrame({"text": [f"t{i}" for i in range(40)], "label": y})
    s = kind_of(spec).score(spec, "challenger", "m", Outputs(predictions=pred, probabilities=probs), test)
    assert s.value("accuracy") == pytest.approx(33 / 40)
    assert s.value("macro_f1") == pytest.approx(f1_score(y, pred, average="macro"))
    lo, hi = s.metrics["macro_f1"].ci
    assert lo < s.value("macro_f1") < hi
    assert s.per_label["spam"].support == 10 and "ece" in s.metrics


def test_classifier_paired_test_sees_a_consistent_difference():
    spec = classifier()
    refs = ["ham", "spam"] * 20
    good = Outputs(predictions=list(refs))
    bad = Outputs(predictions=["ham"] * 40)
    p = kind_of(spec).paired_test(spec, refs, good, bad)
    assert p.a_wins == 20 and p.b_wins == 0 and p.p_value < 0.001


def test_generative_field_f1_counts_fields_and_schema_validity():
    spec = generator()
    refs = [json.dumps({"a": 1, "b": 2})] * 4
    answers = [
        json.dumps({"a": 1, "b": 2}),  # both fields right
        json.dumps({"a": 1, "b": 3}),  # one of two
        json.dumps({"a": 1}),  # one, one missing
        "not json",  # nothing
    ]
    test = pd.DataFrame({"text": ["p"] * 4, "response": refs})
    s = kind_of(spec).score(spec, "challenger", "m", Outputs(predictions=answers), test)
    tp, predicted, expected = 1 + 1 + 2, 2 + 2 + 1, 8  # true fields, fields answered, fields expected
    precision, recall = (1 + 1 + 2) / 5, tp / expected
    assert predicted == 5
    assert s.value("field_f1") == pytest.approx(2 * precision * recall / (precision + recall))
    assert s.value("exact_match") == pytest.approx(0.25) and s.value("schema_valid") == pytest.approx(0.75)


def test_training_key_follows_what_changes_the_model_only():
    base = training_key(classifier(), "d1")
    assert base == training_key(classifier(), "d1")  # deterministic
    assert training_key(classifier(), "d2") != base  # the data
    assert training_key(classifier(train={"learning_rate": 1e-3}), "d1") != base  # a training setting
    assert training_key(classifier(labels=["ham", "spam", "eggs"]), "d1") != base  # the labels
    # what only judges or watches the model does not retrain it
    same = classifier(gate={"min_gain_over_baseline": 0.2}, drift={"permutations": 50}, description="x")
    assert training_key(same, "d1") == base


def test_a_generative_key_follows_its_generation_settings():
    base = training_key(generator(), "d1")
    assert training_key(generator(generation={"output": "json", "max_new_tokens": 64}), "d1") != base
    assert training_key(generator(generation={"output": "json", "batch_size": 4}), "d1") == base  # answering only
