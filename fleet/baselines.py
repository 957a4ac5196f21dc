"""General-purpose baselines: models that were not fine-tuned for the specialist's task.

- ``embedding-zero-shot``: nearest label description in the base encoder's embedding space
  (:class:`fleet.evaluation.ZeroShotEmbeddingBaseline`).
- ``hf-zero-shot``: transformers' zero-shot-classification pipeline over an NLI model
  (local folder or hub id), with the label descriptions as hypotheses.
- ``openai-chat``: any OpenAI-compatible chat-completions endpoint (a hosted frontier
  model, vLLM, llama.cpp server...), prompted with the labels; cost from the token usage
  the endpoint reports and the configured prices.

Every baseline has ``name``, ``labels``, ``predict_proba(texts)`` and
``cost_per_1k(n_predictions)`` (None when the cost is compute, measured by the caller).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import numpy as np

from fleet.spec import BaselineSpec, SpecialistSpec


class BaselineError(RuntimeError):
    """A baseline could not be built or queried; the message names it and the cause."""


class HFZeroShotBaseline:
    def __init__(self, spec: BaselineSpec, labels: dict[str, str]):
        from transformers import pipeline

        from fleet.training import resolve_base_model

        self.labels = list(labels)
        self.hypotheses = [labels[lab] for lab in self.labels]
        self.name = spec.name or f"hf-zero-shot {spec.model}"
        try:
            self.pipe = pipeline("zero-shot-classification", model=resolve_base_model(spec.model), device=-1)
        except Exception as exc:  # transformers raises OSError/ValueError/KeyError for unusable models
            raise BaselineError(f"baseline {self.name}: cannot load {spec.model!r} ({exc})") from None
        self.model_dir = getattr(self.pipe.model, "name_or_path", None)

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

    def cost_per_1k(self, n: int) -> float | None:
        return None


class OpenAIChatBaseline:
    """Prompted classification through an OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(self, spec: BaselineSpec, labels: dict[str, str]):
        self.spec = spec
        self.labels = list(labels)
        self.name = spec.name or f"openai-chat {spec.model}"
        self.key = os.environ.get(spec.api_key_env, "")
        self.descriptions = "\n".join(f"- {lab}: {desc}" for lab, desc in labels.items())
        self.tokens_in = self.tokens_out = 0
        self.model_dir = None

    def _ask(self, text: str) -> str:
        prompt = self.spec.prompt.format(labels=", ".join(self.labels), descriptions=self.descriptions, text=text)
        body = json.dumps({"model": self.spec.model, "temperature": 0,
                           "messages": [{"role": "user", "content": prompt}]}).encode()
        req = urllib.request.Request(
            self.spec.url.rstrip("/") + "/chat/completions", data=body, method="POST",
            headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {self.key}"} if self.key else {})},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.spec.timeout_s) as resp:
                data = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise BaselineError(f"baseline {self.name}: {self.spec.url} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise BaselineError(f"baseline {self.name}: cannot reach {self.spec.url} ({exc})") from None
        except json.JSONDecodeError:
            raise BaselineError(f"baseline {self.name}: {self.spec.url} did not answer JSON") from None
        usage = data.get("usage") or {}
        self.tokens_in += int(usage.get("prompt_tokens", 0))
        self.tokens_out += int(usage.get("completion_tokens", 0))
        try:
            return str(data["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError):
            raise BaselineError(f"baseline {self.name}: unexpected answer shape from {self.spec.url}") from None

    def _label_of(self, answer: str) -> int | None:
        a = answer.strip().lower().strip(" .\"'`")
        for i, lab in enumerate(self.labels):
            if a == lab.lower():
                return i
        hits = [i for i, lab in enumerate(self.labels) if lab.lower() in a]
        return hits[0] if len(hits) == 1 else None

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        out = np.full((len(texts), len(self.labels)), 1.0 / len(self.labels))  # unparseable answer: no information
        for row, text in enumerate(texts):
            i = self._label_of(self._ask(text))
            if i is not None:
                out[row] = 0.0
                out[row, i] = 1.0
        return out

    def cost_per_1k(self, n: int) -> float | None:
        if n == 0:
            return 0.0
        spend = (self.tokens_in * self.spec.price_per_1k_input_tokens + self.tokens_out * self.spec.price_per_1k_output_tokens) / 1000
        return spend / n * 1000


def build_baseline(bspec: BaselineSpec, spec: SpecialistSpec, max_length: int):
    if bspec.kind == "embedding-zero-shot":
        from fleet.evaluation import ZeroShotEmbeddingBaseline

        model = bspec.model or spec.base_model
        b = ZeroShotEmbeddingBaseline(model, spec.labels, max_length=max_length)
        b.name = bspec.name or f"zero-shot {model}"
        return b
    if bspec.kind == "hf-zero-shot":
        return HFZeroShotBaseline(bspec, spec.labels)
    return OpenAIChatBaseline(bspec, spec.labels)
