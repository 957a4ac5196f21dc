"""A classifier's drift signals: input (embeddings), prediction (label mix), confidence, with feedback
performance, and without labels an estimate of macro-F1 (CBPE, ``fleet.metrics.cbpe``); its reference comes
from the challenger's own evaluation outputs (its test-split probabilities calibrate the estimate)."""

from __future__ import annotations

import numpy as np

from fleet.core.results import EvaluationReport
from fleet.metrics.cbpe import Calibrator, estimate_macro_f1
from fleet.metrics.drift import (
    DriftVerdict,
    Reference,
    Signal,
    distribution_drift,
    input_drift,
    label_drift,
    rate_drift,
    verdict,
)


def build_reference(
    labels: list[str], embeddings: np.ndarray, report: EvaluationReport, embedding_model: str, max_length: int
) -> Reference:
    probs = np.asarray(report.challenger.outputs.probabilities if report.challenger.outputs else [], dtype=float)
    probs = probs.reshape(-1, len(labels))
    counts = np.bincount(probs.argmax(axis=1), minlength=len(labels))
    index = {lab: i for i, lab in enumerate(labels)}
    truth = np.array([index.get(r, -1) for r in report.references], dtype=float)
    calibration = {"test_probs": probs.ravel(), "test_labels": truth} if len(truth) == len(probs) else {}
    return Reference(
        embeddings=embeddings,
        labels=labels,
        label_dist={lab: float(c / max(counts.sum(), 1)) for lab, c in zip(labels, counts)},
        samples={"confidence": probs.max(axis=1) if len(probs) else np.zeros(0), **calibration},
        rates={"accuracy": report.challenger.value("accuracy"), "macro_f1": report.challenger.value("macro_f1")},
        embedding_model=embedding_model,
        max_length=max_length,
    )


def detect(
    ref: Reference,
    embeddings: np.ndarray,
    predicted: list[str],
    confidences: np.ndarray,
    thresholds: dict[str, float],
    feedback: tuple[int, int] | None = None,
    permutations: int = 300,
    seed: int = 0,
) -> DriftVerdict:
    """Every signal; each fires when its p-value is below its threshold (``thresholds[name]``)."""
    signals = {
        "input": input_drift(ref.embeddings, embeddings, permutations, seed),
        "prediction": label_drift(ref.label_dist, ref.labels, predicted),
        "confidence": distribution_drift(ref.samples["confidence"], confidences),
    }
    if feedback is not None and feedback[1] > 0:
        signals["performance"] = rate_drift(ref.rates["accuracy"], *feedback)
    return verdict(signals, thresholds, len(predicted))


def calibrator(ref: Reference) -> Calibrator | None:
    """The champion's calibration (from its test split), or None for a reference built before it was kept."""
    if "test_probs" not in ref.samples or not len(ref.samples["test_labels"]):
        return None
    y = ref.samples["test_labels"].astype(int)
    keep = y >= 0
    probs = ref.samples["test_probs"].reshape(len(y), len(ref.labels))
    return Calibrator.fit(probs[keep], y[keep])


def estimated_performance(
    ref: Reference, probs: np.ndarray | None, minimum: float | None, assumes: str = "label-shift"
) -> Signal | None:
    """CBPE's macro-F1 on the window, firing below ``minimum``; None without probabilities or calibration."""
    cal = calibrator(ref)
    if cal is None or probs is None or not len(probs):
        return None
    estimate = estimate_macro_f1(cal, probs, assumes)
    fired = minimum is not None and estimate < minimum
    return Signal(
        test="CBPE estimated macro-F1",
        statistic=estimate,
        p_value=0.0 if fired else 1.0,
        threshold=minimum if minimum is not None else 0.0,
        fired=fired,
        details={"reference_macro_f1": ref.rates.get("macro_f1"), "min_estimated_score": minimum, "assumes": assumes},
    )
