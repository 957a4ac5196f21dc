"""Drift statistics, the reference profile, and the verdict; each kind picks the signals that apply.

Tests (scipy.stats and numpy): maximum mean discrepancy between sentence embeddings (RBF kernel with the
median-heuristic bandwidth, permutation p-value) for input drift; chi-square goodness of fit of
category counts (and PSI, reported); two-sample Kolmogorov-Smirnov for a distribution of numbers
(confidences, response lengths); one-sided exact binomial for a rate that should not fall (accuracy
from feedback, schema validity). Embedding drift is a few lines of numpy on top of an encoder the fleet
already loads; evidently and alibi-detect would add a large dependency tree (alibi-detect pins its own
TensorFlow/PyTorch stacks) for the same tests, so they are not used.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field
from scipy import stats


@dataclass
class Reference:
    """What a registered version looked like on its own data."""

    embeddings: np.ndarray  # (n, d) sample of training-text embeddings
    labels: list[str] = field(default_factory=list)
    label_dist: dict[str, float] = field(default_factory=dict)  # predicted-label distribution on the test split
    samples: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. confidence, response_length on the test split
    rates: dict[str, float] = field(default_factory=dict)  # e.g. accuracy, schema_valid on the test split
    embedding_model: str = ""
    max_length: int = 128

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        meta = {
            "labels": self.labels,
            "label_dist": self.label_dist,
            "rates": self.rates,
            "embedding_model": self.embedding_model,
            "max_length": self.max_length,
            "samples": list(self.samples),
        }
        arrays: dict[str, Any] = {f"sample_{k}": v.astype(np.float32) for k, v in self.samples.items()}
        arrays["embeddings"] = self.embeddings.astype(np.float32)
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> Reference:
        with np.load(io.BytesIO(blob)) as z:
            meta = json.loads(z["meta"].tobytes())
            return cls(
                embeddings=z["embeddings"],
                labels=meta["labels"],
                label_dist=meta["label_dist"],
                samples={k: z[f"sample_{k}"] for k in meta["samples"]},
                rates=meta["rates"],
                embedding_model=meta["embedding_model"],
                max_length=meta["max_length"],
            )


@dataclass
class TrafficWindow:
    """Recent traffic to judge: the log's rows, embeddings of their distinct texts, and feedback (right, n)."""

    rows: pd.DataFrame
    embeddings: np.ndarray
    feedback: tuple[int, int] | None = None


class Signal(BaseModel):
    test: str
    statistic: float
    p_value: float
    threshold: float = 1.0
    fired: bool = False
    details: dict[str, Any] = Field(default_factory=dict)


class DriftVerdict(BaseModel):
    drifted: bool
    fired: list[str]
    signals: dict[str, Signal]
    window_rows: int


def mmd_permutation_test(x: np.ndarray, y: np.ndarray, permutations: int = 300, seed: int = 0) -> tuple[float, float]:
    """Unbiased MMD^2 with an RBF kernel (median-heuristic bandwidth) and its permutation p-value."""
    z = np.concatenate([x, y]).astype(np.float64)
    sq = (z * z).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0)
    bandwidth = np.median(d2[np.triu_indices(len(z), 1)]) or 1.0
    k = np.exp(-d2 / bandwidth)
    np.fill_diagonal(k, 0.0)
    n, m = len(x), len(y)

    def stat(ix: np.ndarray) -> float:
        a, b = ix[:n], ix[n:]
        kxx = k[np.ix_(a, a)].sum() / (n * (n - 1))
        kyy = k[np.ix_(b, b)].sum() / (m * (m - 1))
        return float(kxx + kyy - 2 * k[np.ix_(a, b)].mean())

    rng = np.random.default_rng(seed)
    observed = stat(np.arange(n + m))
    null = np.array([stat(rng.permutation(n + m)) for _ in range(permutations)])
    return observed, float((1 + (null >= observed).sum()) / (1 + permutations))


def input_drift(ref: np.ndarray, current: np.ndarray, permutations: int, seed: int) -> Signal:
    stat, p = mmd_permutation_test(ref, current, permutations, seed)
    return Signal(test="MMD^2 permutation", statistic=stat, p_value=p)


def psi(expected: np.ndarray, actual: np.ndarray, eps: float = 1e-4) -> float:
    e, a = np.clip(expected, eps, None), np.clip(actual, eps, None)
    return float(((a - e) * np.log(a / e)).sum())


def label_drift(ref_dist: dict[str, float], labels: list[str], predicted: list[str]) -> Signal:
    """Chi-square goodness of fit of the window's category counts against the reference shares."""
    counts = np.array([sum(1 for p in predicted if p == lab) for lab in labels], dtype=float)
    n = counts.sum()
    expected_p = np.array([max(ref_dist.get(lab, 0.0), 1e-3) for lab in labels])
    expected_p /= expected_p.sum()
    chi = stats.chisquare(counts, expected_p * n)
    return Signal(
        test="chi-square",
        statistic=float(chi.statistic),
        p_value=float(chi.pvalue),
        details={"psi": psi(expected_p, counts / max(n, 1)), "counts": dict(zip(labels, counts.astype(int).tolist()))},
    )


def distribution_drift(ref: np.ndarray, current: np.ndarray) -> Signal:
    ks = stats.ks_2samp(ref, current)
    return Signal(
        test="Kolmogorov-Smirnov",
        statistic=float(ks.statistic),
        p_value=float(ks.pvalue),
        details={"reference_mean": float(np.mean(ref)), "current_mean": float(np.mean(current))},
    )


def rate_drift(ref_rate: float, hits: int, n: int) -> Signal:
    """Has a rate (accuracy, validity) fallen below the reference's? One-sided exact binomial test."""
    test = stats.binomtest(hits, n, min(max(ref_rate, 1e-9), 1 - 1e-9), alternative="less")
    return Signal(
        test="binomial (one-sided)",
        statistic=hits / n,
        p_value=float(test.pvalue),
        details={"reference_rate": ref_rate, "n": n},
    )


def verdict(signals: dict[str, Signal], thresholds: dict[str, float], window_rows: int) -> DriftVerdict:
    """A signal fires when its p-value is below its threshold; the window drifted when any fired."""
    fired = []
    for name, s in signals.items():
        s.threshold = thresholds[name]
        s.fired = bool(s.p_value < s.threshold)
        if s.fired:
            fired.append(name)
    return DriftVerdict(drifted=bool(fired), fired=fired, signals=signals, window_rows=window_rows)


def sample_indices(n: int, sample: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(sample, n), replace=False))
