"""A classifier's drift signals: input (embeddings), prediction (label mix), confidence and, with
feedback, performance; its reference comes from the challenger's own evaluation outputs."""

from __future__ import annotations

import numpy as np

from fleet.core.results import EvaluationReport
from fleet.metrics.drift import (
    DriftVerdict,
    Reference,
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
    return Reference(
        embeddings=embeddings,
        labels=labels,
        label_dist={lab: float(c / max(counts.sum(), 1)) for lab, c in zip(labels, counts)},
        samples={"confidence": probs.max(axis=1) if len(probs) else np.zeros(0)},
        rates={"accuracy": report.challenger.value("accuracy")},
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
