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
    engine: str = "transformers"  # what serves it (records written before llama.cpp: transformers)
    gguf_quant: str = "f16"
