"""Drift: compare a window of recent traffic with the champion's reference profile.

Signals, each with its own threshold from the spec (``drift:``):

- input drift: maximum mean discrepancy (MMD) between sentence embeddings of the
  reference's training texts and of the window's texts, RBF kernel with the median
  heuristic bandwidth, p-value from a permutation test;
- prediction drift: chi-square goodness of fit of the window's predicted-label counts
  against the reference's predicted-label distribution (and PSI, reported);
- confidence drift: two-sample Kolmogorov-Smirnov test on top-label confidences;
- performance drift, where feedback labels exist: one-sided exact binomial test of the
  window's accuracy against the reference accuracy.

scipy.stats provides the tests. Embedding drift is a few lines of numpy on top of the
encoder the specialist already loads; evidently and alibi-detect would add a large
dependency tree (alibi-detect pins its own TensorFlow/PyTorch stacks) for the same MMD
permutation test, so they are not used.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats


@dataclass
class Reference:
    """What a registered version looked like on its own data."""

    labels: list[str]
    embeddings: np.ndarray  # (n, d) sample of training-text embeddings
    label_dist: dict[str, float]  # predicted-label distribution on the test split
    confidences: np.ndarray  # top-label confidence on the test split
    accuracy: float  # on the test split
    length: dict[str, float] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        meta = {"labels": self.labels, "label_dist": self.label_dist, "accuracy": self.accuracy, "length": self.length}
        np.savez_compressed(buf, embeddings=self.embeddings.astype(np.float32), confidences=self.confidences.astype(np.float32),
                            meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> "Reference":
        with np.load(io.BytesIO(blob)) as z:
            meta = json.loads(z["meta"].tobytes())
            return cls(labels=meta["labels"], embeddings=z["embeddings"], label_dist=meta["label_dist"],
                       confidences=z["confidences"], accuracy=meta["accuracy"], length=meta["length"])


def length_stats(texts: list[str]) -> dict[str, float]:
    lengths = np.array([len(t) for t in texts]) if texts else np.zeros(1)
    return {"mean": float(lengths.mean()), "p50": float(np.median(lengths)), "p95": float(np.percentile(lengths, 95))}


def build_reference(labels: list[str], train_embeddings: np.ndarray, test_probs: np.ndarray, test_true: list[str],
                    train_texts: list[str], sample: int = 500, seed: int = 0) -> Reference:
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(train_embeddings), size=min(sample, len(train_embeddings)), replace=False)
    pred = test_probs.argmax(axis=1)
    counts = np.bincount(pred, minlength=len(labels))
    truth = np.array([labels.index(t) for t in test_true])
    return Reference(
        labels=labels,
        embeddings=train_embeddings[np.sort(idx)],
        label_dist={lab: float(c / max(counts.sum(), 1)) for lab, c in zip(labels, counts)},
        confidences=test_probs.max(axis=1),
        accuracy=float((pred == truth).mean()) if len(truth) else float("nan"),
        length=length_stats(train_texts),
    )


# --------------------------------------------------------------------------- tests


def mmd_permutation_test(x: np.ndarray, y: np.ndarray, permutations: int = 300, seed: int = 0) -> tuple[float, float]:
    """Unbiased MMD^2 with an RBF kernel (median-heuristic bandwidth) and its permutation p-value."""
    z = np.concatenate([x, y]).astype(np.float64)
    sq = (z * z).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0)
    iu = np.triu_indices(len(z), 1)
    bandwidth = np.median(d2[iu]) or 1.0
    k = np.exp(-d2 / bandwidth)
    np.fill_diagonal(k, 0.0)
    n, m = len(x), len(y)

    def stat(ix: np.ndarray) -> float:
        a, b = ix[:n], ix[n:]
        kxx = k[np.ix_(a, a)].sum() / (n * (n - 1))
        kyy = k[np.ix_(b, b)].sum() / (m * (m - 1))
        kxy = k[np.ix_(a, b)].mean()
        return float(kxx + kyy - 2 * kxy)

    rng = np.random.default_rng(seed)
    observed = stat(np.arange(n + m))
    null = np.array([stat(rng.permutation(n + m)) for _ in range(permutations)])
    return observed, float((1 + (null >= observed).sum()) / (1 + permutations))


def psi(expected: np.ndarray, actual: np.ndarray, eps: float = 1e-4) -> float:
    e = np.clip(expected, eps, None)
    a = np.clip(actual, eps, None)
    return float(((a - e) * np.log(a / e)).sum())


def label_drift(ref_dist: dict[str, float], labels: list[str], predicted: list[str]) -> dict:
    counts = np.array([sum(1 for p in predicted if p == lab) for lab in labels], dtype=float)
    n = counts.sum()
    expected_p = np.array([max(ref_dist.get(lab, 0.0), 1e-3) for lab in labels])
    expected_p /= expected_p.sum()
    chi = stats.chisquare(counts, expected_p * n)
    return {"statistic": float(chi.statistic), "p_value": float(chi.pvalue),
            "psi": psi(expected_p, counts / max(n, 1)), "counts": dict(zip(labels, counts.astype(int).tolist()))}


def confidence_drift(ref_conf: np.ndarray, conf: np.ndarray) -> dict:
    ks = stats.ks_2samp(ref_conf, conf)
    return {"statistic": float(ks.statistic), "p_value": float(ks.pvalue),
            "reference_mean": float(np.mean(ref_conf)), "current_mean": float(np.mean(conf))}


def performance_drift(ref_accuracy: float, correct: int, n: int) -> dict:
    test = stats.binomtest(correct, n, ref_accuracy, alternative="less")
    return {"statistic": correct / n, "p_value": float(test.pvalue), "reference_accuracy": ref_accuracy, "n": n}


@dataclass
class DriftVerdict:
    drifted: bool
    fired: list[str]
    signals: dict[str, dict]
    window_rows: int

    def to_dict(self) -> dict:
        return asdict(self)


def detect(ref: Reference, embeddings: np.ndarray, predicted: list[str], confidences: np.ndarray,
           thresholds: dict[str, float], feedback: tuple[int, int] | None = None,
           permutations: int = 300, seed: int = 0) -> DriftVerdict:
    """Run every signal; a signal fires when its p-value is below its threshold (``thresholds[name]``)."""
    signals: dict[str, dict] = {}
    stat, p = mmd_permutation_test(ref.embeddings, embeddings, permutations, seed)
    signals["input"] = {"test": "MMD^2 permutation", "statistic": stat, "p_value": p}
    signals["prediction"] = {"test": "chi-square", **label_drift(ref.label_dist, ref.labels, predicted)}
    signals["confidence"] = {"test": "Kolmogorov-Smirnov", **confidence_drift(ref.confidences, confidences)}
    if feedback is not None and feedback[1] > 0:
        signals["performance"] = {"test": "binomial (one-sided)", **performance_drift(ref.accuracy, *feedback)}
    fired = []
    for name, s in signals.items():
        s["threshold"] = thresholds[name]
        s["fired"] = bool(s["p_value"] < thresholds[name])
        if s["fired"]:
            fired.append(name)
    return DriftVerdict(drifted=bool(fired), fired=fired, signals=signals, window_rows=len(predicted))


# --------------------------------------------------------------------------- the specialist's view


def embedder(spec):
    """Sentence embeddings from the specialist's base encoder: the space input drift is measured in."""
    from fleet.evaluation import ZeroShotEmbeddingBaseline

    return ZeroShotEmbeddingBaseline(spec.base_model, spec.labels, max_length=128)


def profile(spec, store, dataset_version: str, model_dir: str, sample: int = 500) -> bytes:
    """The reference profile of a trained model, stored beside it as ``profiles/NAME/DATASET/TRAINKEY.npz``."""
    from fleet.curation import load_split
    from fleet.training import TextClassifier, training_key

    train = load_split(store, spec.name, dataset_version, "train")
    test = load_split(store, spec.name, dataset_version, "test")
    rng = np.random.default_rng(spec.drift.seed)
    idx = np.sort(rng.choice(len(train), size=min(sample, len(train)), replace=False))
    texts = train["text"].iloc[idx].tolist()
    emb = embedder(spec).embed(texts)
    probs = TextClassifier(model_dir).predict_proba(test["text"].tolist())
    ref = build_reference(list(spec.labels), emb, probs, test["label"].tolist(), train["text"].tolist(), sample, spec.drift.seed)
    blob = ref.to_bytes()
    store.put_bytes(reference_key(spec.name, training_key(spec, dataset_version)), blob)
    return blob


def reference_key(name: str, train_key: str) -> str:
    return f"profiles/{name}/{train_key}/reference.npz"
