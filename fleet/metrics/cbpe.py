"""Performance without labels: confidence-based performance estimation (CBPE, as in NannyML).

A classifier's confidences, once calibrated, say how often it is right: a row predicted ``j`` with calibrated
probability ``p_i`` for class ``i`` adds ``p_i`` to cell (i, j) of an expected confusion matrix. Macro-F1 of
that matrix (the same formula as the evaluation's) estimates the window's macro-F1 before any label arrives.
Which shift the window shows cannot be told from unlabelled data, so the estimate takes an assumption
(``assumes``): ``covariate-shift`` (the inputs move, P(label | input) stays: the calibrated probabilities are
used as they are, plain CBPE) or ``label-shift`` (the label mix moves, P(input | label) stays: the window's
label priors are first estimated by EM from the calibrated probabilities and the probabilities re-weighted to
them, Saerens et al. 2002). Either way a new concept needs labels. On the demo's held-out traffic (see
benchmarks/flywheel.py), plain CBPE is off by 0.13 on windows where sentiment's rarest label became the
majority and the adjusted one by 0.03, while on windows of only long SMS texts the adjustment costs 0.07.

Calibration: one isotonic regression per class (one-vs-rest) fitted on the champion's test-split
probabilities and true labels, the rows renormalized to sum to one; the test split's label mix is the prior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fleet.metrics.stats import from_confusions


@dataclass
class Calibrator:
    """Per-class isotonic maps, as (x, y) knots for ``np.interp``."""

    knots: list[tuple[np.ndarray, np.ndarray]]
    prior: np.ndarray | None = None  # the calibration rows' label mix

    @classmethod
    def fit(cls, probs: np.ndarray, y: np.ndarray) -> Calibrator:
        from sklearn.isotonic import IsotonicRegression

        probs = np.asarray(probs, dtype=float)
        knots = []
        for k in range(probs.shape[1]):
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
            iso.fit(probs[:, k], (y == k).astype(float))
            knots.append((np.asarray(iso.X_thresholds_, dtype=float), np.asarray(iso.y_thresholds_, dtype=float)))
        return cls(knots, np.bincount(y, minlength=probs.shape[1]) / max(len(y), 1))

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


def adjust_to_window_priors(calibrated: np.ndarray, prior: np.ndarray, iterations: int = 200) -> np.ndarray:
    """Posteriors re-weighted to the window's label mix, estimated by EM (label shift: P(input | label) fixed)."""
    prior = np.clip(np.asarray(prior, dtype=float), 1e-6, None)
    window = calibrated.mean(axis=0)
    adjusted = calibrated
    for _ in range(iterations):
        adjusted = calibrated * (window / prior)
        adjusted /= np.maximum(adjusted.sum(axis=1, keepdims=True), 1e-12)
        new = adjusted.mean(axis=0)
        if np.abs(new - window).max() < 1e-7:
            break
        window = new
    return adjusted


ASSUMPTIONS = ("label-shift", "covariate-shift")


def estimate_macro_f1(calibrator: Calibrator, probs: np.ndarray, assumes: str = "covariate-shift") -> float:
    """Estimated macro-F1 of a window from the model's probabilities alone (its answer is the argmax)."""
    if assumes not in ASSUMPTIONS:
        raise ValueError(f"assumes must be one of {ASSUMPTIONS}")
    probs = np.asarray(probs, dtype=float)
    if not len(probs):
        return float("nan")
    calibrated = calibrator(probs)
    if assumes == "label-shift" and calibrator.prior is not None:
        calibrated = adjust_to_window_priors(calibrated, calibrator.prior)
    cm = expected_confusion(calibrated, probs.argmax(axis=1))
    return float(from_confusions(cm)["macro_f1"])


def true_macro_f1(y: np.ndarray, predicted: np.ndarray, k: int) -> float:
    cm = np.bincount(np.asarray(y) * k + np.asarray(predicted), minlength=k * k).reshape(k, k)
    return float(from_confusions(cm)["macro_f1"])
