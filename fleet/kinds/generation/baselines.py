"""General models a generative specialist must beat.

- ``base-model``: the specialist's own base model, not fine-tuned, prompted with the same chat template
  and system prompt: zero-shot (``shots: 0``) or few-shot (``shots: k`` worked examples from the
  training split as earlier turns of the conversation). The general model at the same size.
- ``gguf``: any general model as a GGUF file (or an alias of one a package ships: ``gemma3-270m``), run by
  llama.cpp with its own tokenizer and chat template, prompted the same way, zero-shot or few-shot.
- ``openai-chat``: any OpenAI-compatible chat endpoint (a hosted frontier model, vLLM, llama.cpp's
  server), with the same system prompt; it costs what its API bills for the tokens it reports.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd

from fleet.core.results import Outputs
from fleet.core.sections import BaselineSpec
from fleet.core.spec import SpecialistSpec
from fleet.core.text import normalize_text
from fleet.kinds.classification.predict import dir_size
from fleet.kinds.generation.chat_template import messages, render
from fleet.kinds.generation.predict import generate, llama_generate
from fleet.kinds.generation.spec import generation_of
from fleet.models import base_models, base_store, cache, llama_engine
from fleet.models.openai_client import BaselineError, ChatClient


def examples(train: pd.DataFrame, k: int, seed: int, group: str | None) -> list[tuple[str, str]]:
    """``k`` seeded worked examples from the training split (from different groups where there are groups)."""
    if k == 0 or train.empty:
        return []
    rows = train.sample(frac=1.0, random_state=seed)
    if group and group in rows:
        rows = rows.drop_duplicates(group)
    return list(zip(rows["text"].astype(str), rows["response"].astype(str)))[:k]


class PromptedBase:
    """The base model answering with a prompt alone (zero-shot) or with worked examples first (few-shot)."""

    def __init__(self, spec: SpecialistSpec, bspec: BaselineSpec, train: pd.DataFrame):
        self.spec = spec
        self.shots = examples(train, bspec.shots, spec.split.seed, spec.data.group_column)
        label = "zero-shot" if not self.shots else f"{len(self.shots)}-shot"
        self.name: str = bspec.name or f"{label} {spec.base_model}"
        folder = base_models.resolve_base_model(spec.base_model)
        self.size_bytes: int | None = dir_size(folder)
        g = generation_of(spec)
        self.llama: Any = None
        if llama_engine.usable(g.engine) == "llama-cpp":
            self.tokenizer = base_models.load_tokenizer(folder)
            gguf = base_store.gguf_file(folder, base_store.digest(spec.base_model), g.gguf_quant)
            self.llama = cache.llama(str(gguf), g.batch_size)
        else:
            self.tokenizer, self.model = cache.causal(spec.base_model)

    @property
    def identity(self) -> str:
        """What its answers depend on: the base's files, the engine, the prompt (system, examples), the length."""
        g = generation_of(self.spec)
        engine = f"llama-cpp {g.gguf_quant}" if self.llama is not None else "transformers"
        settings = json.dumps([g.system, self.shots, g.max_new_tokens, g.batch_size if self.llama is None else 0])
        return f"prompted-base {base_store.digest(self.spec.base_model)} {engine} {hashlib.sha256(settings.encode()).hexdigest()[:16]}"

    def parameters(self) -> int | None:
        if self.llama is not None:
            return int(self.llama.n_params)
        return sum(p.numel() for p in self.model.parameters())

    def predict(self, inputs: list[str]) -> Outputs:
        g = generation_of(self.spec)
        rendered = [render(self.tokenizer, messages(g.system, normalize_text(p), self.shots)) for p in inputs]
        if self.llama is not None:
            return llama_generate(self.tokenizer, self.llama, rendered, g.max_new_tokens)
        return generate(self.tokenizer, self.model, rendered, g.max_new_tokens, g.batch_size)

    def billed_cost_per_1k(self, n_predictions: int) -> float | None:
        return None


class GgufModel:
    """Any general model as a GGUF file (e.g. Gemma 3 270M), run by llama.cpp with its own tokenizer and chat
    template, prompted like the base model (same system prompt, zero-shot or with examples); its cost is
    the compute measured here."""

    def __init__(self, spec: SpecialistSpec, bspec: BaselineSpec, train: pd.DataFrame):
        self.spec = spec
        path, template = base_models.gguf_model(str(bspec.model))
        self.template = bspec.chat_template or template
        self.shots = examples(train, bspec.shots, spec.split.seed, spec.data.group_column)
        label = "zero-shot" if not self.shots else f"{len(self.shots)}-shot"
        self.name: str = bspec.name or f"{label} {bspec.model}"
        self.size_bytes: int | None = path.stat().st_size
        g = generation_of(spec)
        self.llama = cache.llama(str(path), g.batch_size)
        settings = json.dumps([g.system, self.shots, g.max_new_tokens, self.template])
        self.identity = (  # what its answers depend on: the file, the prompt, the length
            f"gguf {base_models.file_digest(path)[:24]} {hashlib.sha256(settings.encode()).hexdigest()[:16]}"
        )

    def parameters(self) -> int | None:
        return int(self.llama.n_params)

    def predict(self, inputs: list[str]) -> Outputs:
        g = generation_of(self.spec)
        prompts = [self.llama.chat(messages(g.system, normalize_text(p), self.shots), self.template) for p in inputs]
        outs = self.llama.generate([self.llama.tokenize(p) for p in prompts], g.max_new_tokens, None)
        return Outputs(predictions=[self.llama.detokenize(o).strip() for o in outs], tokens=[len(o) for o in outs])

    def billed_cost_per_1k(self, n_predictions: int) -> float | None:
        return None


class ChatBaseline:
    """A general model behind an OpenAI-compatible ``/chat/completions`` endpoint."""

    size_bytes: int | None = None

    def __init__(self, spec: SpecialistSpec, bspec: BaselineSpec):
        self.spec = spec
        self.name: str = bspec.name or f"openai-chat {bspec.model}"
        self.client = ChatClient(bspec, self.name)

    def parameters(self) -> int | None:
        return None

    def predict(self, inputs: list[str]) -> Outputs:
        g = generation_of(self.spec)

        def ask(prompt: str) -> tuple[str, int]:
            return self.client.complete_counted(messages(g.system, normalize_text(prompt)), max_tokens=g.max_new_tokens)

        answered = self.client.map(ask, inputs)
        return Outputs(predictions=[a.strip() for a, _ in answered], tokens=[n for _, n in answered])

    def billed_cost_per_1k(self, n_predictions: int) -> float | None:
        return self.client.cost_per_1k(n_predictions)


def build(spec: SpecialistSpec, bspec: BaselineSpec, train: pd.DataFrame) -> PromptedBase | GgufModel | ChatBaseline:
    if bspec.kind == "base-model":
        return PromptedBase(spec, bspec, train)
    if bspec.kind == "gguf":
        return GgufModel(spec, bspec, train)
    if bspec.kind == "openai-chat":
        return ChatBaseline(spec, bspec)
    raise BaselineError(f"baseline kind {bspec.kind!r} does not generate")
