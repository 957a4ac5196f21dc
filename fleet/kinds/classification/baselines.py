"""General-purpose classifiers a text-classification specialist must beat (none is fine-tuned for it).

- ``embedding-zero-shot``: nearest label description in the base encoder's embedding space (cosine
  similarity of mean-pooled sentence embeddings, softened into a distribution).
- ``hf-zero-shot``: transformers' zero-shot-classification pipeline over an NLI model (local folder
  or hub id), with the label descriptions as hypotheses.
- ``openai-chat``: any OpenAI-compatible chat endpoint, prompted with the labels; its cost is what
  the API bills for the tokens it reports, at the configured prices.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from fleet.core.results import Outputs
from fleet.core.sections import BaselineSpec
from fleet.kinds.classification.predict import dir_size
from fleet.models import base_models, base_store, cache, device
from fleet.models.openai_client import BaselineError, ChatClient

_TRIM = " \t\r\n.,;:!?\"'`*()[]{}<>"


def label_of(labels: list[str], answer: str) -> int | None:
    """The label a chat model's answer is, exactly (case and surrounding punctuation aside), or None.

    Only an exact answer counts: a label found inside a longer answer is not read as that label ("Not spam."
    is not ``spam``), so an answer that says more than the label is an unknown label, never a wrong one."""
    a = answer.strip(_TRIM).lower()
    for i, lab in enumerate(labels):
        if a == lab.strip(_TRIM).lower():
            return i
    return None


def classify_prompt(template: str, labels: list[str], descriptions: str, text: str) -> str:
    """The prompt asking a chat model to classify ``text``: the text goes in as a JSON string (quoted, so
    what it says cannot pass for the prompt's own words; the default template says it is data, not
    instructions)."""
    return template.format(
        labels=", ".join(labels), descriptions=descriptions, text=json.dumps(text, ensure_ascii=False)
    )


def _outputs(labels: list[str], probs: np.ndarray) -> Outputs:
    return Outputs(predictions=[labels[int(i)] for i in probs.argmax(axis=1)], probabilities=probs.tolist())


class ZeroShotEmbeddingBaseline:
    """The general baseline: nearest label description in the base encoder's embedding space."""

    temperature = 0.05  # turns cosine similarities into a peaked distribution for scores

    def __init__(self, base_model: str, label_descriptions: dict[str, str], max_length: int = 128, name: str = ""):
        self.labels = list(label_descriptions)
        self.name = name or f"zero-shot {base_model}"
        self.base = base_model
        self.model = cache.encoder(base_model)[1]
        self.size_bytes = dir_size(base_models.resolve_base_model(base_model))
        self.max_length = max_length
        self.label_emb = self.embed([label_descriptions[lab] for lab in self.labels])
        described = json.dumps([label_descriptions, max_length, self.temperature], sort_keys=True)
        self.identity = (  # what its answers depend on: the base's files, the label descriptions, the length
            f"embedding-zero-shot {base_store.digest(base_model)} {hashlib.sha256(described.encode()).hexdigest()[:16]}"
        )

    def embed(self, texts: list[str]) -> np.ndarray:
        return cache.pooled(self.base, texts, self.max_length)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        sims = self.embed(texts) @ self.label_emb.T
        z = np.exp((sims - sims.max(axis=1, keepdims=True)) / self.temperature)
        return z / z.sum(axis=1, keepdims=True)

    def predict(self, inputs: list[str]) -> Outputs:
        return _outputs(self.labels, self.predict_proba(inputs))

    def parameters(self) -> int | None:
        return sum(p.numel() for p in self.model.parameters())

    def billed_cost_per_1k(self, n_predictions: int) -> float | None:
        return None


class HFZeroShotBaseline:
    def __init__(self, spec: BaselineSpec, labels: dict[str, str]):
        base_models.ml_imports()
        from transformers import pipeline

        self.labels = list(labels)
        self.hypotheses = [labels[lab] for lab in self.labels]
        self.name = spec.name or f"hf-zero-shot {spec.model}"
        try:
            self.pipe = pipeline(
                "zero-shot-classification",
                model=base_models.resolve_base_model(spec.model or ""),
                device=device.current().pipeline_device,  # the GPU when there is one
            )
        except Exception as exc:  # transformers raises OSError/ValueError/KeyError for unusable models
            raise BaselineError(f"baseline {self.name}: cannot load {spec.model!r} ({exc})") from None
        self.size_bytes = dir_size(getattr(self.pipe.model, "name_or_path", None))

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(self.labels)))
        results = self.pipe(list(texts), candidate_labels=self.hypotheses, hypothesis_template="{}", multi_label=False)
        if isinstance(results, dict):
            results = [results]
        index = {h: i for i, h in enumerate(self.hypotheses)}
        for row, r in enumerate(results):
            for hyp, score in zip(r["labels"], r["scores"]):
                out[row, index[hyp]] = score
        return out

    def predict(self, inputs: list[str]) -> Outputs:
        return _outputs(self.labels, self.predict_proba(inputs))

    def parameters(self) -> int | None:
        return sum(p.numel() for p in self.pipe.model.parameters())

    def billed_cost_per_1k(self, n_predictions: int) -> float | None:
        return None


class OpenAIChatBaseline:
    """Prompted classification through an OpenAI-compatible ``/chat/completions`` endpoint."""

    size_bytes = None

    def __init__(self, spec: BaselineSpec, labels: dict[str, str]):
        self.spec = spec
        self.labels = list(labels)
        self.name = spec.name or f"openai-chat {spec.model}"
        self.client = ChatClient(spec, self.name)
        self.descriptions = "\n".join(f"- {lab}: {desc}" for lab, desc in labels.items())

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        out = np.full((len(texts), len(self.labels)), 1.0 / len(self.labels))  # unparseable answer: no information

        def ask(text: str) -> int | None:
            prompt = classify_prompt(self.spec.prompt, self.labels, self.descriptions, text)
            return label_of(self.labels, self.client.complete([{"role": "user", "content": prompt}]))

        for row, i in enumerate(self.client.map(ask, texts)):
            if i is not None:
                out[row] = 0.0
                out[row, i] = 1.0
        return out

    def predict(self, inputs: list[str]) -> Outputs:
        """The answers; ``confidence`` 1 where the answer was a label of the set, 0 where it was not (then the
        probabilities are uniform and the prediction means nothing: a cascade does not serve it)."""
        probs = self.predict_proba(inputs)
        known = [float(p.max() == 1.0) for p in probs]
        return _outputs(self.labels, probs).model_copy(update={"confidence": known})

    def parameters(self) -> int | None:
        return None

    def billed_cost_per_1k(self, n_predictions: int) -> float | None:
        return self.client.cost_per_1k(n_predictions)


def build_baseline(bspec: BaselineSpec, base_model: str, labels: dict[str, str], max_length: int):
    if bspec.kind == "embedding-zero-shot":
        model = bspec.model or base_model
        return ZeroShotEmbeddingBaseline(model, labels, max_length=max_length, name=bspec.name or f"zero-shot {model}")
    if bspec.kind == "hf-zero-shot":
        return HFZeroShotBaseline(bspec, labels)
    if bspec.kind == "openai-chat":
        return OpenAIChatBaseline(bspec, labels)
    raise BaselineError(f"baseline kind {bspec.kind!r} does not classify")
