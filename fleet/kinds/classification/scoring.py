"""How a classifier is scored: accuracy, macro-F1 and per-label scores with bootstrap intervals,
calibration (ECE), the same per slice (over the labels each slice holds), and McNemar's exact test."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fleet.core.results import ContenderScore, Metric, Outputs, PairedTest, SliceScore
from fleet.core.sections import EvaluationSpec, SliceSpec
from fleet.core.spec import SpecialistSpec
from fleet.metrics.bootstrap import slice_mask
from fleet.metrics.stats import expected_calibration_error, mcnemar_exact, metrics_with_ci


def codes(labels: list[str], values) -> np.ndarray:
    index = {lab: i for i, lab in enumerate(labels)}
    return np.array([index[v] for v in values], dtype=int)


def _slice(
    sl: SliceSpec, mask: np.ndarray, y: np.ndarray, pred: np.ndarray, labels: list[str], ev: EvaluationSpec
) -> SliceScore:
    if mask.sum() == 0:
        return SliceScore(n=0)
    # score a slice over the labels that occur in it (a label absent from the slice would add a 0 F1)
    active = sorted(set(y[mask].tolist()) | set(pred[mask].tolist()))
    recode = {c: i for i, c in enumerate(active)}
    res = metrics_with_ci(
        np.array([recode[c] for c in y[mask]]),
        np.array([recode[c] for c in pred[mask]]),
        [labels[c] for c in active],
        ev.bootstrap_resamples,
        ev.seed,
        ev.confidence_level,
    )
    return SliceScore(
        n=res.n, labels=[labels[c] for c in active], metrics={"accuracy": res.accuracy, "macro_f1": res.macro_f1}
    )


def score(spec: SpecialistSpec, role: str, name: str, outputs: Outputs, test: pd.DataFrame) -> ContenderScore:
    labels, ev = list(spec.labels), spec.evaluation
    y = codes(labels, test["label"])
    probs = np.asarray(outputs.probabilities, dtype=float).reshape(len(y), len(labels))
    pred = probs.argmax(axis=1)
    m = metrics_with_ci(y, pred, labels, ev.bootstrap_resamples, ev.seed, ev.confidence_level)
    slices = {sl.name: _slice(sl, slice_mask(sl, test), y, pred, labels, ev) for sl in ev.slices}
    metrics = {
        "accuracy": m.accuracy,
        "macro_f1": m.macro_f1,
        "ece": Metric(value=round(expected_calibration_error(probs, y), 4)),
    }
    return ContenderScore(
        role=role, model=name, n=m.n, metrics=metrics, per_label=m.per_label, slices=slices, outputs=outputs
    )


def paired_test(labels: list[str], references: list[str], a: Outputs, b: Outputs) -> PairedTest:
    return mcnemar_exact(codes(labels, references), codes(labels, a.predictions), codes(labels, b.predictions))
