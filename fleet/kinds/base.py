"""The interface every kind of specialist implements (one per ``task`` of the fleet file).

A kind says how its data is read and cleaned (which columns, which rules for the expected answer, how
rows are split), how it is trained and how the trained model answers, which metrics, baselines and
paired test judge it, and which drift signals watch it. The stages (curation, training, evaluation,
registration, monitoring) are written once against this interface; the spec's ``task`` picks the kind
(``fleet.kinds.kind_of``), so no flow and no stage branches on the task.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import pandas as pd

from fleet.core.results import ContenderScore, EvaluationReport, Outputs, PairedTest, TrainedModel
from fleet.data.cleaning import Quarantine, TargetCheck

if TYPE_CHECKING:
    from fleet.metrics.drift import DriftVerdict, TrafficWindow
    from fleet.models.adapter_group import AdapterGroup

from fleet.core.spec import SpecialistSpec


class Predictor(Protocol):
    """Anything that answers test rows: a trained specialist, a champion, a general model."""

    name: str
    size_bytes: int | None

    def predict(self, inputs: list[str]) -> Outputs: ...

    def parameters(self) -> int | None: ...


class Baseline(Predictor, Protocol):
    """A general-purpose model the specialist must beat."""

    def billed_cost_per_1k(self, n_predictions: int) -> float | None:
        """What an API bills per 1,000 predictions so far; None when the cost is compute (measured instead)."""
        ...


@dataclass
class Fit:
    """What a training run reports (the stage adds keys, times and storage)."""

    max_length: int
    train_examples: int
    train_seconds: float
    train_loss: float
    trainable_params: int
    total_params: int
    resumed_from: str | None
    world_size: int = 1

    @classmethod
    def from_trainer(
        cls, metrics: dict, examples: int, max_length: int, params: tuple[int, int], resumed: str | None, world: int
    ) -> Fit:
        """A fit from transformers' training metrics; ``params``: (trainable, total)."""
        return cls(
            max_length=max_length,
            train_examples=examples,
            train_seconds=float(metrics.get("train_runtime", 0.0)),
            train_loss=float(metrics.get("train_loss", float("nan"))),
            trainable_params=params[0],
            total_params=params[1],
            resumed_from=resumed,
            world_size=world,
        )


class SpecialistKind(ABC):
    task: ClassVar[str]
    spec_model: ClassVar[type[SpecialistSpec]]  # its settings: section, defaults, baselines, gate metrics
    target: ClassVar[str]  # the stored column holding the expected answer
    answer_column: ClassVar[str]  # the traffic log's column holding the model's answer
    conflict_rule: ClassVar[str]  # quarantine rule for one text seen with two different answers
    redact_target: ClassVar[bool] = False

    # ------------------------------------------------------------------ data
    @abstractmethod
    def source_columns(self, spec: SpecialistSpec) -> dict[str, str]:
        """Our column names (``text`` and the target) -> the source's column names."""

    @abstractmethod
    def labels(self, spec: SpecialistSpec) -> list[str]:
        """The closed set of answers (hashed into the data version); empty for open-ended answers."""

    @abstractmethod
    def target_check(self, spec: SpecialistSpec) -> TargetCheck:
        """The rules for one row's expected answer."""

    def check_base(self, spec: SpecialistSpec) -> list[str]:
        """Refuse, before anything runs, a base this kind cannot train or answer with under ``spec``'s settings
        (a ``TrainingError`` naming what is supported and the way out); nothing is loaded. Returns notes for the
        user (what will be done otherwise than asked). Default: any base, no note."""
        return []

    @abstractmethod
    def check_dataset(self, spec: SpecialistSpec, good: pd.DataFrame, q: Quarantine) -> pd.DataFrame:
        """Rules over the whole cleaned set (e.g. enough examples per label); raises CurationError."""

    @abstractmethod
    def split(self, spec: SpecialistSpec, good: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Train, validation and test, without leakage; ``sample`` first when the spec caps the rows."""

    @abstractmethod
    def sample(self, spec: SpecialistSpec, good: pd.DataFrame, n: int) -> pd.DataFrame:
        """At most ``n`` rows, seeded, keeping the data's mix."""

    # ------------------------------------------------------------------ training
    def training_settings(self, spec: SpecialistSpec) -> dict:
        """Settings outside ``train:`` that change what is trained (part of the training key); none by default."""
        return {}

    @abstractmethod
    def train(self, spec: SpecialistSpec, train: pd.DataFrame, run_dir: Path, progress: bool = True) -> Fit:
        """Fine-tune on ``train`` and save the model under ``run_dir/model``; resume from checkpoints there."""

    @abstractmethod
    def load(self, model_dir: str | Path, name: str, spec: SpecialistSpec | None = None) -> Predictor:
        """A saved model of this kind, ready to answer (everything it needs is in its folder); ``spec``: the
        specialist's current settings, where they choose how it answers (e.g. the inference engine)."""

    @abstractmethod
    def save_merged(self, model_dir: Path, dest: Path) -> None:
        """The adapter folded into its base, saved as a whole model under ``dest`` (``fleet.json`` aside)."""

    @abstractmethod
    def to_frame(self, outputs: Outputs) -> pd.DataFrame:
        """The answers as the registered model's pyfunc returns them."""

    # ------------------------------------------------------------------ evaluation
    @abstractmethod
    def baselines(self, spec: SpecialistSpec, train: pd.DataFrame) -> list[Baseline]:
        """The general models named in ``spec.evaluation.baselines`` (``train``: for few-shot examples)."""

    @abstractmethod
    def score(self, spec: SpecialistSpec, role: str, name: str, outputs: Outputs, test: pd.DataFrame) -> ContenderScore:
        """Metrics with intervals (and per label, per slice) of one contender's outputs on ``test``."""

    @abstractmethod
    def paired_test(self, spec: SpecialistSpec, references: list[str], a: Outputs, b: Outputs) -> PairedTest:
        """Does A differ from B on the same rows (on the gate's metric)?"""

    def figures(self, report: EvaluationReport) -> dict[str, bytes]:
        """PNG pictures of the evaluation, by file name (none by default)."""
        return {}

    def int8_check(self, spec: SpecialistSpec, model: TrainedModel, report: EvaluationReport, texts: list[str]) -> Any:
        """An int8 serving path's parity check (``fleet.kinds.classification.int8.Int8Parity``), or None without one."""
        return None

    # ------------------------------------------------------------------ cascade (serving.fallback)
    @abstractmethod
    def confidence(self, spec: SpecialistSpec, outputs: Outputs) -> np.ndarray:
        """Per row, how sure the answer is (higher: surer; any scale): what the cascade's threshold reads."""

    @abstractmethod
    def row_quality(self, spec: SpecialistSpec, outputs: Outputs, references: list[str]) -> tuple[str, np.ndarray]:
        """(the metric's name, per-row quality in [0, 1]) of answers against the expected ones."""

    def usable(self, spec: SpecialistSpec, outputs: Outputs) -> np.ndarray:
        """Per row, whether a fallback's answer may be served (and taught): e.g. a label of the set. Default: all."""
        return np.ones(len(outputs.predictions), dtype=bool)

    # ------------------------------------------------------------------ serving
    @abstractmethod
    def serving_group(self, base_folder: str, int8: bool) -> AdapterGroup:
        """One loaded base that answers every specialist of this kind built on it (``fleet serve-models``)."""

    def int8_served(self, tags: dict[str, str]) -> bool:
        """Whether a version with these registry tags is served on the int8 path (never by default)."""
        return False

    # ------------------------------------------------------------------ drift
    def embedding_length(self, model: TrainedModel) -> int:
        """Tokens per text when embedding for drift: the model's own limit by default."""
        return model.max_length

    @abstractmethod
    def reference(
        self, spec: SpecialistSpec, embeddings: np.ndarray, texts: list[str], max_length: int, report: EvaluationReport
    ) -> bytes:
        """The profile drift is measured against, from the challenger's evaluation outputs."""

    @abstractmethod
    def drift(self, spec: SpecialistSpec, reference: bytes, window: TrafficWindow) -> DriftVerdict:
        """Every drift signal of this kind on a traffic window."""

    @abstractmethod
    def drift_figure(self, spec: SpecialistSpec, reference: bytes, window: pd.DataFrame) -> bytes:
        """A PNG of the reference against the window, signal by signal."""

    @abstractmethod
    def traffic_rows(self, texts: list[str], outputs: Outputs) -> list[dict]:
        """Answered requests as the traffic log keeps them (``text`` plus the answer fields)."""
