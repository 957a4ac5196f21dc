"""A generative specialist's serving group: the causal base once, each specialist's adapter chosen per request.

Versions served by llama.cpp (``engine: llama-cpp`` in their record) share one llama.cpp copy of the base
(its GGUF file); each batch's rows are answered adapter by adapter, each adapter's rows decoded together.
Versions served by transformers share one peft model and answer mixed batches, a row per adapter.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from fleet.core.results import Outputs
from fleet.core.text import normalize_text
from fleet.kinds.generation.chat_template import clip, messages, render
from fleet.kinds.generation.predict import generate, llama_generate
from fleet.kinds.generation.record import GeneratorRecord
from fleet.models import base_models, base_store, cache, llama_engine
from fleet.models.adapter_group import AdapterGroup


class CausalGroup(AdapterGroup[GeneratorRecord]):
    record_type = GeneratorRecord

    def __init__(self, base_folder: str, int8: bool = False):
        super().__init__(base_folder, False)  # int8 is for encoders
        self.tokenizer = base_models.load_tokenizer(base_folder)  # the transformers model only if a version needs it
        self.llama: dict[str, Any] = {}  # adapter -> the llama.cpp base it is loaded on

    def _base(self) -> Any:
        return copy.deepcopy(cache.causal(self.base_folder)[1])

    def add(self, name: str, model_dir: Path) -> None:
        record = self.record_type.read(model_dir)
        if llama_engine.usable(record.serving_engine) != "llama-cpp":
            return super().add(name, model_dir)
        digest = record.base_ref()[1]
        base = cache.llama(str(base_store.gguf_file(self.base_folder, digest, record.gguf_quant)), record.batch_size)
        base.add_adapter(name, base_store.adapter_gguf(model_dir, self.base_folder, digest))
        with self.lock:  # recorded only once it loaded
            self.llama[name] = base
            self.dirs[name], self.meta[name] = Path(model_dir), record

    def _unload(self, adapter: str) -> None:
        base = self.llama.pop(adapter, None)
        if base is not None:
            base.drop_adapter(adapter)
        else:
            super()._unload(adapter)

    def _prompt(self, adapter: str, text: str) -> str:
        meta = self.meta[adapter]
        return render(
            self.tokenizer, messages(meta.system, clip(self.tokenizer, normalize_text(text), meta.max_prompt_tokens))
        )

    def run(self, rows: list[tuple[str, str]]) -> list[Outputs]:
        out: list[Outputs | None] = [None] * len(rows)
        by_adapter: dict[str, list[int]] = {}
        for i, (a, _) in enumerate(rows):
            if a in self.llama:
                by_adapter.setdefault(a, []).append(i)
        for a, idx in by_adapter.items():
            got = llama_generate(
                self.tokenizer,
                self.llama[a],
                [self._prompt(a, rows[i][1]) for i in idx],
                self.meta[a].max_new_tokens,
                a,
            )
            for i, p, n in zip(idx, got.predictions, got.tokens or []):
                out[i] = Outputs(predictions=[p], tokens=[n])
        rest = [i for i, (a, _) in enumerate(rows) if a not in self.llama]
        if rest:
            longest = max(self.meta[rows[i][0]].max_new_tokens for i in rest)  # one batch, one length limit
            got = generate(
                self.tokenizer,
                self.model,
                [self._prompt(rows[i][0], rows[i][1]) for i in rest],
                longest,
                len(rest),
                [rows[i][0] for i in rest],
            )
            for i, p, n in zip(rest, got.predictions, got.tokens or []):
                out[i] = Outputs(predictions=[p], tokens=[n])
        return [o for o in out if o is not None]
