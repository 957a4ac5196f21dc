"""What ``task: text-generation`` adds to a specialist's settings: the ``generation:`` section, its defaults
(SmolLM2, LoRA on the attention projections, base-model baselines), the baselines that can judge it and the
metrics its gate may use (field-F1 for JSON answers, chrF for free text, by default)."""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from fleet.core.sections import _Model
from fleet.core.spec import SpecialistSpec

TASK: Literal["text-generation"] = "text-generation"


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
        16,
        gt=0,
        description="Prompts answered together in evaluation and batch scoring (left-padded): larger "
        "batches give more tokens per second (SmolLM2-135M on 2 cores: 62, 79, 105 at 8, 16, 32).",
    )

    engine: Literal["llama-cpp", "transformers"] = Field(
        "llama-cpp",
        description="What answers in evaluation and serving: llama.cpp (the base as one GGUF file, the adapter "
        "applied per request) or transformers + peft (the adapter merged). Training always uses transformers.",
    )
    gguf_quant: Literal["f16", "q8_0", "q4_k_m"] = Field(
        "f16", description="llama-cpp engine: the base's weights as f16, or quantized by llama.cpp (q8_0, q4_k_m)."
    )

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


class GenerativeSpec(SpecialistSpec):
    """A generative specialist: an instruction in, a generated answer out (free text or JSON)."""

    defaults: ClassVar[dict[str, Any]] = {
        "base_model": "smollm2-135m",
        "labels": {},
        "train": {"lora": {"target_modules": ["q_proj", "v_proj"]}, "batch_size": 8, "learning_rate": 1.0e-3},
        "evaluation": {
            "latency_samples": 5,
            "timing_rows": 16,
            "serving_batch_size": 8,
            "baselines": [{"kind": "base-model", "shots": 0}, {"kind": "base-model", "shots": 3}],
        },
        "drift": {"embedding_model": "minilm-l6"},
    }
    baseline_kinds: ClassVar[frozenset[str]] = frozenset({"base-model", "gguf", "openai-chat"})
    gate_metrics: ClassVar[tuple[str, ...]] = ("field_f1", "exact_match", "schema_valid", "chrf")

    task: Literal["text-generation"] = Field(TASK, description="An instruction in, a generated answer out.")
    generation: GenerationSpec = Field(default_factory=GenerationSpec, description="How answers are generated.")

    @classmethod
    def kind_defaults(cls, raw: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(cls.defaults)
        generation = raw["generation"] if isinstance(raw.get("generation"), dict) else {}
        json_out = generation.get("output") == "json" or generation.get("json_schema") is not None
        out["gate"] = {"metric": "field_f1" if json_out else "chrf"}
        return out

    @model_validator(mode="after")
    def _json_metrics(self) -> GenerativeSpec:
        if self.gate.metric in ("field_f1", "schema_valid") and self.generation.output != "json":
            raise ValueError(f"gate.metric: {self.gate.metric} needs generation.output: json")
        return self


def generation_of(spec: SpecialistSpec) -> GenerationSpec:
    """The ``generation:`` section of a generative specialist's spec."""
    if not isinstance(spec, GenerativeSpec):
        raise TypeError(f"{spec.name}: a {spec.task} specialist has no generation settings")
    return spec.generation
