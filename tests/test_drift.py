"""Drift statistics and the traffic log (no servers)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import numpy as np

from fleet.core.storage import LocalStore
from fleet.kinds.classification.drift import detect
from fleet.metrics.drift import Reference, label_drift, mmd_permutation_test
from fleet.ops import traffic

THRESHOLDS = {"input": 0.01, "prediction": 0.01, "confidence": 0.01, "performance": 0.01}


def reference(rng, d=16, n=300):
    return Reference(
        labels=["a", "b"],
        embeddings=rng.normal(size=(n, d)),
        label_dist={"a": 0.7, "b": 0.3},
        samples={"confidence": rng.beta(8, 2, size=400)},
        rates={"accuracy": 0.9},
    )


def test_mmd_separates_shifted_from_unshifted():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8))
    _, p_same = mmd_permutation_test(x, rng.normal(size=(100, 8)), permutations=200)
    _, p_shift = mmd_permutation_test(x, rng.normal(loc=0.5, size=(100, 8)), permutations=200)
    assert p_same > 0.05 and p_shift < 0.01


def test_label_drift():
    same = label_drift({"a": 0.7, "b": 0.3}, ["a", "b"], ["a"] * 70 + ["b"] * 30)
    flipped = label_drift({"a": 0.7, "b": 0.3}, ["a", "b"], ["a"] * 30 + ["b"] * 70)
    assert same.p_value > 0.5 and flipped.p_value < 1e-10 and flipped.details["psi"] > same.details["psi"]


def test_detect_names_the_signals_that_fired():
    rng = np.random.default_rng(1)
    ref = reference(rng)
    calm = detect(
        ref,
        rng.normal(size=(150, 16)),
        ["a"] * 105 + ["b"] * 45,
        rng.beta(8, 2, size=150),
        THRESHOLDS,
        feedback=(135, 150),
        permutations=200,
    )
    assert (
        not calm.drifted
        and calm.fired == []
        and set(calm.signals) == {"input", "prediction", "confidence", "performance"}
    )
    storm = detect(
        ref,
        rng.normal(loc=1.0, size=(150, 16)),
        ["b"] * 150,
        rng.beta(2, 2, size=150),
        THRESHOLDS,
        feedback=(90, 150),
        permutations=200,
    )
    assert storm.drifted and storm.fired == ["input", "prediction", "confidence", "performance"]
    assert all(s.p_value < s.threshold for s in storm.signals.values())


def test_reference_roundtrip():
    ref = reference(np.random.default_rng(2))
    back = Reference.from_bytes(ref.to_bytes())
    assert back.labels == ref.labels and back.label_dist == ref.label_dist
    assert np.allclose(back.embeddings, ref.embeddings, atol=1e-6) and back.rates["accuracy"] == 0.9
    assert np.allclose(back.samples["confidence"], ref.samples["confidence"], atol=1e-6)


def test_traffic_log_is_redacted_partitioned_and_windowed(tmp_path):
    store = LocalStore(tmp_path)
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    rows = [
        {"text": "mail me at a@b.org", "label": "spam", "score": 0.9},
        {"text": "old one", "label": "ham", "score": 0.8},
    ]
    traffic.log_predictions(store, "s", rows, "3", when=now - timedelta(hours=30))
    key = traffic.log_predictions(
        store, "s", [{"text": "call +1 415 555 2671 now", "label": "spam", "score": 0.99}], "3", when=now
    )
    assert "/date=2026-11-22/part-" in key
    window = traffic.read_window(store, "traffic", "s", hours=24, now=now)
    assert window["text"].tolist() == ["call <PHONE> now"] and window["model_version"].tolist() == ["3"]
    assert window["text_hash"][0] == traffic.text_hash("call +1 415 555 2671 now", traffic.store_key(store))
    # keyed: not the plain SHA-256 of the text, which anyone could recompute for every phone number
    assert window["text_hash"][0] != hashlib.sha256(b"call +1 415 555 2671 now").hexdigest()
    both = traffic.read_window(store, "traffic", "s", hours=48, now=now)
    assert both["text"].tolist() == ["mail me at <EMAIL>", "old one", "call <PHONE> now"]
