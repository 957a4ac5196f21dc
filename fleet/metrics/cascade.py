"""A confidence cascade: the specialist answers when it is sure enough, a general fallback model otherwise.

Everything here works on per-row arrays the evaluation already has (no model runs):

- :func:`calibrate`: isotonic regression of "the specialist was right" on its raw confidence (validation
  split), so the threshold reads as a probability of being right;
- :func:`choose`: the raw-confidence threshold meeting ``serving.cascade.target`` on the validation split:
  ``match-fallback``: the most requests kept on the specialist with quality at least the fallback's alone
  minus ``epsilon`` (and never below the specialist's alone: escalating to a weaker model must not cost
  quality); ``max-fallback-share``: the best quality escalating at most that share;
- :func:`figures`: what the chosen threshold does on the test split, with bootstrap intervals: share kept,
  quality of the cascade, of the specialist alone and of the fallback alone, and the cost per 1,000 requests
  of each (the cascade pays the specialist on every request and the fallback on the escalated ones).

A request escalates when its raw confidence is below the raw threshold; isotonic calibration is monotone,
so that is the same as its calibrated confidence being below the calibrated threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fleet.core.results import Metric
from fleet.core.sections import CascadeSpec
from fleet.metrics.bootstrap import bootstrap_indices, interval


@dataclass(frozen=True)
class Calibration:
    """An isotonic map from raw confidence to P(correct): increasing points ``x`` -> ``y``."""

    x: np.ndarray
    y: np.ndarray

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        if len(self.x) == 0:
            return np.full(len(raw), float("nan"))
        return np.interp(np.asarray(raw, dtype=float), self.x, self.y)

    def as_dict(self, points: int = 64) -> dict[str, list[float]]:
        """At most ``points`` of the map (for the record; the decision uses the raw threshold)."""
        keep = np.unique(np.linspace(0, len(self.x) - 1, min(points, len(self.x))).round().astype(int))
        return {"x": [round(float(v), 6) for v in self.x[keep]], "y": [round(float(v), 6) for v in self.y[keep]]}


def calibrate(confidence: np.ndarray, quality: np.ndarray) -> Calibration:
    """Isotonic regression of per-row quality (1 right, 0 wrong, or a score in [0, 1]) on raw confidence."""
    from sklearn.isotonic import IsotonicRegression

    conf, q = np.asarray(confidence, dtype=float), np.asarray(quality, dtype=float)
    if len(conf) == 0:
        return Calibration(np.array([]), np.array([]))
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(conf, q)
    return Calibration(np.asarray(iso.X_thresholds_, dtype=float), np.asarray(iso.y_thresholds_, dtype=float))


NEVER = 1e12  # a raw threshold below every confidence (keep all) or, positive, above every one (escalate all)


@dataclass(frozen=True)
class Choice:
    raw_threshold: float  # escalate when the raw confidence is below it (-NEVER: never; NEVER: always)
    kept_share: float
    quality: float  # the cascade's on the validation split
    specialist_quality: float
    fallback_quality: float


def _candidates(conf: np.ndarray) -> np.ndarray:
    """Every threshold that splits the rows differently: each distinct confidence, and one above them all."""
    return np.concatenate([[-np.inf], np.unique(conf), [np.inf]])


def choose(conf: np.ndarray, specialist: np.ndarray, fallback: np.ndarray, target: CascadeSpec) -> Choice:
    """The threshold meeting ``target`` on the validation rows (raw confidence, per-row qualities)."""
    conf, s, f = (np.asarray(a, dtype=float) for a in (conf, specialist, fallback))
    order = np.argsort(conf, kind="stable")
    conf, s, f = conf[order], s[order], f[order]
    n = len(conf)
    best: tuple[float, float, float] | None = None  # (kept share, quality, threshold)
    floor = max(f.mean() - target.epsilon, s.mean())
    for t in _candidates(conf):
        escalated = int(np.searchsorted(conf, t, side="left"))  # rows below t
        kept = (n - escalated) / n
        quality = (f[:escalated].sum() + s[escalated:].sum()) / n
        if target.target == "match-fallback":
            ok, better = quality >= floor - 1e-12, best is None or (kept, quality) > (best[0], best[1])
        else:
            ok = 1 - kept <= target.max_fallback_share + 1e-12
            better = best is None or (quality, kept) > (best[1], best[0])
        if ok and better:
            best = (kept, quality, float(t))
    assert best is not None  # escalating everything always meets match-fallback; keeping all, max-fallback-share
    raw = float(np.clip(best[2], -NEVER, NEVER))  # stored as JSON and as a tag: no infinities
    return Choice(raw, best[0], best[1], float(s.mean()), float(f.mean()))


@dataclass(frozen=True)
class Figures:
    kept_share: Metric
    cascade_quality: Metric
    specialist_quality: Metric
    fallback_quality: Metric
    cost_per_1k: dict[str, Metric]


def _metric(point: float, boot: np.ndarray, level: float) -> Metric:
    lo, hi = interval(boot, level)
    return Metric(value=round(float(point), 6), ci=(round(lo, 6), round(hi, 6)))


def figures(
    conf: np.ndarray,
    specialist: np.ndarray,
    fallback: np.ndarray,
    raw_threshold: float,
    costs_per_1k: tuple[float, float],
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Figures:
    """The cascade at ``raw_threshold`` on the test rows; ``costs_per_1k``: (specialist, fallback) per 1,000
    requests each answers."""
    conf, s, f = (np.asarray(a, dtype=float) for a in (conf, specialist, fallback))
    kept = conf >= raw_threshold
    cascade = np.where(kept, s, f)
    c_s, c_f = costs_per_1k
    idx = bootstrap_indices(len(conf), resamples, seed)
    kept_b = kept[idx].mean(axis=1)
    per_1k = {
        "cascade": _metric(c_s + (1 - kept.mean()) * c_f, c_s + (1 - kept_b) * c_f, level),
        "specialist": Metric(value=round(c_s, 6), ci=(round(c_s, 6), round(c_s, 6))),
        "fallback": Metric(value=round(c_f, 6), ci=(round(c_f, 6), round(c_f, 6))),
    }
    return Figures(
        kept_share=_metric(kept.mean(), kept_b, level),
        cascade_quality=_metric(cascade.mean(), cascade[idx].mean(axis=1), level),
        specialist_quality=_metric(s.mean(), s[idx].mean(axis=1), level),
        fallback_quality=_metric(f.mean(), f[idx].mean(axis=1), level),
        cost_per_1k=per_1k,
    )
