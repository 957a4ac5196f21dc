"""What is stored beside a model or a dataset version, read and written by one typed class each.

- :class:`ModelRecord`: ``fleet.json`` beside a saved specialist model (the adapter folder, a merged
  export, the MLflow artifact): its task, the base it belongs to, and what the kind needs to load it.
  Each kind reads it with its own subclass (``ClassifierRecord``, ``GeneratorRecord``), which adds the
  fields only that kind writes.
- :class:`DatasetManifest`: ``manifest.json`` of a dataset version, written last (a version without one
  does not exist).
- :class:`DataCard`: ``report.json`` of a dataset version, the data card's numbers (``DATASET.md`` is
  rendered from it).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MODEL_RECORD = "fleet.json"
# What the fleet writes, and nothing else: a record is read from the registry, which anyone who may register
# a model can write, and these fields become file paths and URIs to fetch.
DIGEST_PATTERN = r"^[0-9a-f]{24}$"
BASE_URI_PATTERN = r"^runs:/[0-9a-f]{32}/base$"


class RecordError(ValueError):
    """A stored record that is missing or does not say what it must."""


class ModelRecord(BaseModel):
    """``fleet.json``: what a saved specialist model says about itself.

    Fields of the kinds' own subclasses are kept when the file is read as a plain ``ModelRecord`` (so a
    record copied by code that does not know the kind loses nothing)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    task: str = Field(..., description="The kind of specialist that reads this model.")
    base_model: str | None = Field(
        None,
        max_length=400,
        pattern=r"^[A-Za-z0-9/._~][A-Za-z0-9._/:@+~-]*$",
        description="The base's name (alias, path or hub id); None when merged.",
    )
    base_digest: str | None = Field(
        None,
        pattern=DIGEST_PATTERN,
        description="The base's content hash (24 lowercase hex digits): it is stored once under it.",
    )
    base_uri: str | None = Field(
        None,
        pattern=BASE_URI_PATTERN,
        description="Where MLflow keeps the base: the fleet's own bases run (``runs:/RUN_ID/base``), set when "
        "the version is registered.",
    )
    merged: bool = Field(False, description="A whole model (an export), not an adapter on a shared base.")

    @classmethod
    def path(cls, folder: str | Path) -> Path:
        return Path(folder) / MODEL_RECORD

    @classmethod
    def exists(cls, folder: str | Path) -> bool:
        return cls.path(folder).is_file()

    @classmethod
    def read(cls, folder: str | Path) -> Self:
        path = cls.path(folder)
        try:
            return cls.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise RecordError(f"{path}: missing (not a fleet specialist model folder)") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "top level"
            raise RecordError(f"{path}: {where}: {first['msg']}") from None

    def write(self, folder: str | Path) -> None:
        """Write ``fleet.json`` into ``folder`` whole or not at all (a temporary file renamed over it)."""
        path = self.path(folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".fleet-", suffix=".json", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(self.to_json(), indent=2))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)  # no temporary file left in a model folder that gets uploaded
            raise

    def to_json(self) -> dict[str, Any]:
        """The fields set (a default is not written, as before records were typed)."""
        return self.model_dump(mode="json", exclude_unset=True)

    def base_ref(self) -> tuple[str, str, str | None]:
        """``(base_model, base_digest, base_uri)`` of an adapter; an error for a merged export."""
        if self.base_model is None or self.base_digest is None:
            raise RecordError(f"a {self.task} model without base_model and base_digest is not an adapter")
        return self.base_model, self.base_digest, self.base_uri


class LengthStats(BaseModel):
    bins: list[int]
    counts: list[int]
    min: int
    median: float
    p95: float
    max: int


class RuleExample(BaseModel):
    row: int
    action: str
    text: str
    detail: str | None = None


class DataCard(BaseModel):
    """The numbers of a dataset version's data card (``report.json``)."""

    specialist: str
    version: str
    source: str
    rows_read: int
    rows_kept: int
    dropped: dict[str, int] = Field(description="Rows each rule dropped.")
    changed: dict[str, int] = Field(description="Rows each rule changed (and kept).")
    sampled_out: int
    labels_before: dict[str, int] | None = Field(description="Labels in the file (classifiers).")
    labels_after: dict[str, dict[str, int]] | None = Field(description="Per split, per label (classifiers).")
    splits: dict[str, int]
    label_sources: dict[str, int] = Field(
        default_factory=dict, description="Training rows by who labelled them: original, human (review), teacher."
    )
    lengths: dict[str, LengthStats] = Field(description="Per column (text, and the target if free text).")
    examples: dict[str, list[RuleExample]] = Field(description="A few hits of each rule, texts redacted.")
    rules: dict[str, Any] = Field(description="The curation settings that ran.")


class DatasetManifest(BaseModel):
    """``manifest.json`` of a dataset version: what it holds and how it was made."""

    specialist: str
    task: str
    version: str
    source: str
    rows_read: int
    counts: dict[str, int]
    label_counts: dict[str, dict[str, int]] = Field(default_factory=dict)
    quarantined: dict[str, int] = Field(default_factory=dict)
    changed: dict[str, int] = Field(default_factory=dict)
    label_sources: dict[str, int] = Field(default_factory=dict)
    labels: list[str]
    target: str = Field(description="The stored column holding the expected answer.")
    sampled_out: int
    curation: dict[str, Any]
    split: dict[str, Any]
    files: list[str]
