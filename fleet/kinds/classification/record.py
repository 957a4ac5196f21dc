"""``fleet.json`` of a classifier: its labels (in the head's order), token limit and pooling."""

from __future__ import annotations

from fleet.core.records import ModelRecord


class ClassifierRecord(ModelRecord):
    labels: list[str]
    max_length: int
    pooling: str = "mean"
