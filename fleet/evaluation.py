"""Evaluation on the frozen test split and the promotion gate.

Three contenders are scored on the same test rows: the new model (challenger),
the model in production (champion, when there is one), and a general-purpose
baseline that is not fine-tuned: zero-shot classification by cosine similarity
between the base encoder's sentence embedding of a text and of each label's
description.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

from fleet.spec import GateSpec, SpecialistSpec


def metrics(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict[str, float]:
    """Accuracy and macro-F1 over the declared labels (a label never predicted scores 0 F1)."""
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "n": len(y_true),
    }


class ZeroShotEmbeddingBaseline:
    """The general baseline: nearest label description in the base encoder's embedding space."""

    temperature = 0.05  # turns cosine similarities into a peaked distribution for scores

    def __init__(self, base_model: str, label_descriptions: dict[str, str], max_length: int = 128):
        from transformers import AutoModel

        from fleet.training import load_tokenizer, resolve_base_model

        self.labels = list(label_descriptions)
        self.tokenizer = load_tokenizer(base_model)
        self.model = AutoModel.from_pretrained(resolve_base_model(base_model)).eval()
        self.max_length = max_length
        self.label_emb = self.embed([label_descriptions[lab] for lab in self.labels])

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Mean-pooled, L2-normalised sentence embeddings (the sentence-transformers recipe)."""
        import torch

        from fleet.modeling import mean_pool

        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                enc = self.tokenizer(
                    list(texts[i : i + batch_size]),
                    truncation=True,
                    max_length=self.max_length,
                    padding=True,
                    return_tensors="pt",
                )
                pooled = mean_pool(self.model(**enc).last_hidden_state, enc["attention_mask"])
                out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.config.hidden_size))

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        sims = self.embed(texts) @ self.label_emb.T
        z = np.exp((sims - sims.max(axis=1, keepdims=True)) / self.temperature)
        return z / z.sum(axis=1, keepdims=True)

    def predict(self, texts: list[str]) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]


@dataclass
class GateDecision:
    promote: bool
    verdict: str  # promote | keep-champion | reject
    metric: str
    reasons: list[str] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def gate(
    challenger: dict[str, float],
    baseline: dict[str, float],
    champion: dict[str, float] | None,
    spec: GateSpec,
) -> GateDecision:
    """Promote only if the challenger beats the champion (if any) and the general baseline by their margins."""
    m = spec.metric
    c = challenger[m]
    reasons: list[str] = []
    ok_baseline = c - baseline[m] >= spec.min_gain_over_baseline
    reasons.append(
        f"{m} {c:.4f} vs general baseline {baseline[m]:.4f}: gain {c - baseline[m]:+.4f} "
        f"{'>=' if ok_baseline else '<'} required {spec.min_gain_over_baseline:.4f}"
    )
    ok_champion = True
    if champion is None:
        reasons.append("no champion yet")
    else:
        ok_champion = c - champion[m] > spec.min_gain_over_champion
        reasons.append(
            f"{m} {c:.4f} vs champion {champion[m]:.4f}: gain {c - champion[m]:+.4f} "
            f"{'>' if ok_champion else '<='} required {spec.min_gain_over_champion:.4f}"
        )
    promote = ok_baseline and ok_champion
    verdict = "promote" if promote else ("reject" if not ok_baseline else "keep-champion")
    return GateDecision(
        promote=promote,
        verdict=verdict,
        metric=m,
        reasons=reasons,
        thresholds={
            "min_gain_over_baseline": spec.min_gain_over_baseline,
            "min_gain_over_champion": spec.min_gain_over_champion,
        },
    )


def report_markdown(report: dict) -> str:
    """The evaluation report as a markdown table (shown as a Prefect artifact)."""
    lines = [
        f"# Evaluation of `{report['specialist']}`",
        "",
        f"Frozen test split of dataset version `{report['dataset_version']}`: {report['test_examples']} examples.",
        "",
        "| contender | model | accuracy | macro-F1 |",
        "|---|---|---:|---:|",
    ]
    for role in ("challenger", "champion", "baseline"):
        c = report["contenders"].get(role)
        if c:
            lines.append(f"| {role} | {c['model']} | {c['accuracy']:.4f} | {c['macro_f1']:.4f} |")
        else:
            lines.append(f"| {role} | none | | |")
    g = report["gate"]
    lines += ["", f"**Gate verdict: {g['verdict']}** (metric `{g['metric']}`)", ""]
    lines += [f"- {r}" for r in g["reasons"]]
    return "\n".join(lines) + "\n"


def evaluate_specialist(
    spec: SpecialistSpec,
    test: pd.DataFrame,
    dataset_version: str,
    model_dir: str,
    max_length: int,
    champion: tuple[str, str] | None = None,
) -> dict:
    """Score challenger, champion (``(version, model folder)``) and the general baseline on ``test``; apply the gate."""
    from fleet.training import TextClassifier

    texts, y = test["text"].tolist(), test["label"].tolist()
    labels = list(spec.labels)

    def score(classifier, model: str) -> dict:
        pred = [lab for lab, _ in classifier.predict(texts)]
        return {**metrics(y, pred, labels), "model": model}

    contenders: dict[str, dict | None] = {"challenger": score(TextClassifier(model_dir), "new version")}
    contenders["champion"] = score(TextClassifier(champion[1]), f"v{champion[0]}") if champion else None
    baseline = ZeroShotEmbeddingBaseline(spec.base_model, spec.labels, max_length=max_length)
    contenders["baseline"] = {**metrics(y, baseline.predict(texts), labels), "model": f"zero-shot {spec.base_model}"}
    decision = gate(contenders["challenger"], contenders["baseline"], contenders["champion"], spec.gate)
    return {
        "specialist": spec.name,
        "dataset_version": dataset_version,
        "test_examples": len(test),
        "contenders": contenders,
        "gate": decision.to_dict(),
    }
