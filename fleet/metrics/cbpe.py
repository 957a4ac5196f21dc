"""Performance without labels: confidence-based performance estimation (CBPE, as in NannyML).

A classifier's confidences, once calibrated, say how often it is right: a row predicted ``j`` with calibrated
probability ``p_i`` for class ``i`` adds ``p_i`` to cell (i, j) of an expected confusion matrix. Macro-F1 of
that matrix (the same formula as the evaluation's) estimates the window's macro-F1 before any label arrives.
The estimate holds while the link between inputs and labels stays (covariate or prior shift), which is what
calibration on held-out data assumes; a new concept needs labels.

Calibration: one isotonic regression per class (one-vs-rest) fitted on the champion's test-split
probabilities and true labels, the rows renormalized to sum to one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fleet.metrics.stats import from_confusions


@dataclass
class Calibrator:
    """Per-class isotonic maps, as (x, y) knots for ``np.interp``."""

    knots: list[tuple[np.ndarray, np.ndarray]]

    @classmethod
    def fit(cls, probs: np.ndarray, y: np.ndarray) -> Calibrator:
        from sklearn.isotonic import IsotonicRegression

        probs = np.asarray(probs, dtype=float)
        knots = []
        for k in range(probs.shape[1]):
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
            iso.fit(probs[:, k], (y == k).astype(float))
            knots.append((np.asarray(iso.X_thresholds_, dtype=float), np.asarray(iso.y_thresholds_, dtype=float)))
        return cls(knots)

    def __call__(self, probs: np.ndarray) -> np.ndarray:
        probs = np.asarray(probs, dtype=float)
        cal = np.column_stack([np.interp(probs[:, k], x, y) for k, (x, y) in enumerate(self.knots)])
        total = cal.sum(axis=1, keepdims=True)
        # a row every map sends to zero keeps its own distribution
        return np.where(total > 0, cal / np.where(total > 0, total, 1.0), probs)


def expected_confusion(calibrated: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """k x k expected counts: rows the (unknown) true class, columns the predicted one."""
    k = calibrated.shape[1]
    cm = np.zeros((k, k))
    for j in range(k):
        cm[:, j] = calibrated[predicted == j].sum(axis=0)
    return cm


def estimate_macro_f1(calibrator: Calibrator, probs: np.ndarray) -> float:
    """Estimated macro-F1 of a window from the model's probabilities alone (its answer is the argmax)."""
    probs = np.asarray(probs, dtype=float)
    if not len(probs):
        return float("nan")
    cm = expected_confusion(calibrator(probs), probs.argmax(axis=1))
    return float(from_confusions(cm)["macro_f1"])


def true_macro_f1(y: np.ndarray, predicted: np.ndarray, k: int) -> float:
    cm = np.bincount(np.asarray(y) * k + np.asarray(predicted), minlength=k * k).reshape(k, k)
    return float(from_confusions(cm)["macro_f1"])
