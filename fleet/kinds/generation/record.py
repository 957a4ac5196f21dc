"""``fleet.json`` of a generative specialist: the generation settings it was trained with."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from fleet.core.records import ModelRecord


class GeneratorRecord(ModelRecord):
    system: str | None
    output: str
    json_schema: dict[str, Any] | None
    # Read from the registry and sizing what is allocated (batch_size x token limits is llama.cpp's context):
    # bounded to what the fleet file allows, so a record cannot make a server allocate without limit.
    max_new_tokens: int = Field(gt=0, le=2048)
    batch_size: int = Field(gt=0, le=256)
    max_length: int = Field(gt=0, le=8192)
    max_prompt_tokens: int = Field(384, gt=0, le=8192)  # a served prompt is cut to this (older records: default)
    engine: Literal["llama-cpp", "transformers"] | None = None  # what answers (None, written before: llama-cpp)
    gguf_quant: Literal["f16", "q8_0", "q4_k_m"] = "f16"

    @property
    def serving_engine(self) -> str:
        """The engine that answers for this version: its own choice, or the fleet's default (llama.cpp)."""
        return "transformers" if self.merged else (self.engine or "llama-cpp")
