"""``fleet.json`` of a classifier: its labels (in the head's order), token limit and pooling."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fleet.core.records import ModelRecord


class ClassifierRecord(ModelRecord):
    labels: list[str] = Field(min_length=1, max_length=10_000)
    max_length: int = Field(gt=0, le=8192)  # bounded: it sizes every batch a server runs
    pooling: Literal["mean"] = "mean"
