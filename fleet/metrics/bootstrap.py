"""What every kind's scoring shares: slices of the test split and bootstrap intervals of per-row scores."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from fleet.core.results import Metric
from fleet.core.sections import SliceSpec


def slice_mask(sl: SliceSpec, test: pd.DataFrame) -> np.ndarray:
    """The test rows in slice ``sl`` (by a kept column's value, text length, or a regular expression)."""
    mask = np.ones(len(test), dtype=bool)
    texts = test["text"].astype(str)
    if sl.column is not None:
        if sl.column not in test.columns:
            raise ValueError(f"slice {sl.name}: column {sl.column!r} is not kept (add it to data.extra_columns)")
        mask &= (test[sl.column].astype(str) == sl.value).to_numpy()
    if sl.min_chars is not None:
        mask &= (texts.str.len() >= sl.min_chars).to_numpy()
    if sl.max_chars is not None:
        mask &= (texts.str.len() <= sl.max_chars).to_numpy()
    if sl.regex is not None:
        pattern = re.compile(sl.regex)
        mask &= np.array([bool(pattern.search(t)) for t in texts], dtype=bool)
    return mask


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def interval(values: np.ndarray, level: float) -> tuple[float, float]:
    lo_q, hi_q = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return float(np.percentile(values, lo_q)), float(np.percentile(values, hi_q))


def mean_with_ci(per_row: np.ndarray, resamples: int, seed: int, level: float) -> Metric:
    """The mean of a per-row score with a percentile bootstrap interval."""
    per_row = np.asarray(per_row, dtype=float)
    if len(per_row) == 0:
        return Metric(value=0.0, ci=(0.0, 0.0))
    boot = per_row[bootstrap_indices(len(per_row), resamples, seed)].mean(axis=1)
    return Metric(value=float(per_row.mean()), ci=interval(boot, level))
