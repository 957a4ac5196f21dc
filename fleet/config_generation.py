"""The ``generation:`` section of a generative specialist (``task: text-generation``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from fleet.config import _Model


class GenerationSpec(_Model):
    system: str | None = Field(
        None, description="System prompt given before every instruction, in training, evaluation and serving."
    )
    output: Literal["text", "json"] = Field(
        "text", description="json: answers are JSON objects (validity, schema and field-level scores apply)."
    )
    json_schema: dict[str, Any] | None = Field(
        None, description="JSON Schema every answer must match (curation quarantines responses that do not)."
    )
    max_new_tokens: int = Field(128, gt=0, le=2048, description="Tokens an answer may have when generated.")
    max_prompt_tokens: int = Field(
        384, gt=0, description="Longer prompts (with the system prompt and chat template) are quarantined."
    )
    max_response_tokens: int = Field(128, gt=0, description="Longer responses are quarantined.")
    batch_size: int = Field(
        16, gt=0, description="Prompts answered together in evaluation and batch scoring (left-padded): larger "
        "batches give more tokens per second (SmolLM2-135M on 2 cores: 62, 79, 105 at 8, 16, 32).",
    )  # fmt: skip

    @model_validator(mode="after")
    def _schema(self) -> GenerationSpec:
        if self.json_schema is not None:
            if self.output != "json":
                raise ValueError("output: json_schema needs output: json")
            from jsonschema import Draft202012Validator, SchemaError

            try:
                Draft202012Validator.check_schema(self.json_schema)
            except SchemaError as exc:
                raise ValueError(f"json_schema: not a valid JSON Schema ({exc.message})") from None
        return self
