"""What ``task: text-classification`` adds to a specialist's settings: its defaults, the baselines that can
judge a classifier and the metrics its gate may use (macro-F1 by default)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from fleet.core.spec import SpecialistSpec

TASK: Literal["text-classification"] = "text-classification"


class ClassificationSpec(SpecialistSpec):
    """A classifier: a text in, one of ``labels`` out."""

    defaults: ClassVar[dict[str, Any]] = {
        "base_model": "minilm-l6",
        "evaluation": {"baselines": [{"kind": "embedding-zero-shot"}]},
    }
    baseline_kinds: ClassVar[frozenset[str]] = frozenset({"embedding-zero-shot", "hf-zero-shot", "openai-chat"})
    gate_metrics: ClassVar[tuple[str, ...]] = ("macro_f1", "accuracy")

    task: Literal["text-classification"] = Field(TASK, description="A text in, one of the labels out.")

    @model_validator(mode="after")
    def _two_labels(self) -> ClassificationSpec:
        if len(self.labels) < 2:
            raise ValueError("labels: needs at least two labels")
        return self
