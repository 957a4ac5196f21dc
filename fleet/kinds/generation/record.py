"""``fleet.json`` of a generative specialist: the generation settings it was trained with."""

from __future__ import annotations

from typing import Any

from fleet.core.records import ModelRecord


class GeneratorRecord(ModelRecord):
    system: str | None
    output: str
    json_schema: dict[str, Any] | None
    max_new_tokens: int
    batch_size: int
    max_length: int
    max_prompt_tokens: int = 384  # a served prompt is cut to this (records written before it: the default)
    engine: str | None = None  # what answers for it: llama-cpp or transformers (None, written before: llama-cpp)
    gguf_quant: str = "f16"

    @property
    def serving_engine(self) -> str:
        """The engine that answers for this version: its own choice, or the fleet's default (llama.cpp)."""
        return "transformers" if self.merged else (self.engine or "llama-cpp")
