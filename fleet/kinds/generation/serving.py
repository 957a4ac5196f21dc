"""A generative specialist's serving group: the causal base once, each specialist's adapter chosen per row."""

from __future__ import annotations

import copy
from typing import Any

from fleet.core.results import Outputs
from fleet.core.text import normalize_text
from fleet.kinds.generation.chat_template import clip, messages, render
from fleet.kinds.generation.predict import generate
from fleet.kinds.generation.record import GeneratorRecord
from fleet.models import cache
from fleet.models.adapter_group import AdapterGroup


class CausalGroup(AdapterGroup[GeneratorRecord]):
    record_type = GeneratorRecord

    def __init__(self, base_folder: str, int8: bool = False):
        super().__init__(base_folder, False)  # int8 is for encoders
        self.tokenizer = cache.causal(base_folder)[0]

    def _base(self) -> Any:
        return copy.deepcopy(cache.causal(self.base_folder)[1])

    def run(self, rows: list[tuple[str, str]]) -> list[Outputs]:
        prompts = [
            render(
                self.tokenizer,
                messages(self.meta[a].system, clip(self.tokenizer, normalize_text(t), self.meta[a].max_prompt_tokens)),
            )
            for a, t in rows
        ]
        longest = max(self.meta[a].max_new_tokens for a, _ in rows)  # one batch, one length limit
        out = generate(self.tokenizer, self.model, prompts, longest, len(rows), [a for a, _ in rows])
        assert out.tokens is not None
        return [Outputs(predictions=[p], tokens=[n]) for p, n in zip(out.predictions, out.tokens)]
