"""What the stages hand each other: typed, serializable results (pydantic).

curate -> :class:`DatasetVersion`; fine-tune -> :class:`TrainedModel`; evaluate -> :class:`EvaluationReport`
(every contender with its metrics, intervals, cost and test-set outputs, and the :class:`GateDecision`);
register -> :class:`Registration`; the version's :class:`DecisionRecord` (the report without the outputs) is
what the leaderboard and run summaries read back. Prefect passes these between tasks, Dask pickles them,
and the object store keeps them as JSON (``model_dump_json`` / ``model_validate_json``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ROLES = ("challenger", "champion", "baseline")


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetVersion(_Result):
    """A stored, immutable curated data set."""

    specialist: str
    task: str
    version: str
    uri: str
    source: str
    rows_read: int
    counts: dict[str, int]
    label_counts: dict[str, dict[str, int]] = Field(default_factory=dict, description="Per split, per label.")
    quarantined: dict[str, int] = Field(default_factory=dict)
    changed: dict[str, int] = Field(default_factory=dict)
    label_sources: dict[str, int] = Field(
        default_factory=dict, description="Training rows by who labelled them: original, human (review), teacher."
    )
    created: bool = Field(False, description="False when this version already existed.")


class TrainedModel(_Result):
    """A fine-tuned model in the object store (and its local folder on this machine)."""

    specialist: str
    training_key: str
    dataset_version: str
    model_dir: str
    max_length: int
    train_examples: int
    train_seconds: float = Field(description="The training loop's own run time.")
    fit_seconds: float = Field(0.0, description="Wall time holding the training slot: load, train, save.")
    train_loss: float
    trainable_params: int
    total_params: int
    resumed_from: str | None = None
    world_size: int = 1
    reused: bool = Field(False, description="True when found in the store rather than trained now.")
    environment: dict[str, str] = Field(
        default_factory=dict, description="Library versions, torch threads and device of the fine-tune."
    )


class Metric(_Result):
    value: float
    ci: tuple[float, float] | None = None


class LabelScore(_Result):
    support: int
    precision: Metric
    recall: Metric
    f1: Metric


class SliceScore(_Result):
    n: int
    labels: list[str] = Field(default_factory=list)
    metrics: dict[str, Metric] = Field(default_factory=dict)


class Cost(_Result):
    """Measured speed and cost of one contender on the test split."""

    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    throughput_per_s: float | None = None
    serving_batch_size: int | None = None
    cpu_seconds_per_1k: float | None = None
    cost_per_1k: float | None = None
    tokens_per_s: float | None = None


class Outputs(_Result):
    """A contender's answers on the test split: a label or text per row, and label probabilities when it has them."""

    predictions: list[str]
    probabilities: list[list[float]] | None = None
    tokens: list[int] | None = Field(None, description="Generated tokens per row (generative contenders).")
    confidence: list[float] | None = Field(
        None,
        description="Per row, how sure the model is of its answer where a kind needs more than the probabilities: "
        "a generative answer's mean token log-probability; a chat model's 1 (an answer in the label set) or 0.",
    )

    @classmethod
    def concat(cls, parts: list[Outputs]) -> Outputs:
        def joined(field: str) -> list | None:
            lists = [getattr(p, field) for p in parts]
            return [x for xs in lists for x in xs] if all(xs is not None for xs in lists) else None

        return cls(
            predictions=[x for p in parts for x in p.predictions],
            probabilities=joined("probabilities"),
            tokens=joined("tokens"),
            confidence=joined("confidence"),
        )

    def rows(self, index: list[int]) -> Outputs:
        """The answers of the rows at ``index``, in that order."""

        def pick(xs: list | None) -> list | None:
            return None if xs is None else [xs[i] for i in index]

        return Outputs(
            predictions=[self.predictions[i] for i in index],
            probabilities=pick(self.probabilities),
            tokens=pick(self.tokens),
            confidence=pick(self.confidence),
        )


class ContenderScore(_Result):
    role: str
    model: str
    n: int
    metrics: dict[str, Metric]
    per_label: dict[str, LabelScore] = Field(default_factory=dict)
    slices: dict[str, SliceScore] = Field(default_factory=dict)
    cost: Cost = Field(default_factory=Cost)
    size_bytes: int | None = None
    parameters: int | None = None
    outputs: Outputs | None = None
    reused: bool = Field(False, description="Read from the score store (scored before on this test split).")

    def value(self, metric: str) -> float:
        return self.metrics[metric].value


class PairedTest(_Result):
    """A paired significance test of A against B on the same test rows."""

    test: str
    a_wins: int
    b_wins: int
    p_value: float


class GateDecision(_Result):
    promote: bool
    verdict: Literal["promote", "keep-champion", "reject", "retire"]
    metric: str
    reasons: list[str] = Field(default_factory=list)
    thresholds: dict[str, Any] = Field(default_factory=dict)


class GeneralScores(_Result):
    """The contenders that do not depend on the new model: general baselines and the champion."""

    baselines: list[ContenderScore]
    champion: ContenderScore | None = None
    champion_version: str | None = None


class CascadeReport(_Result):
    """The specialist in front of a general fallback: the confidence threshold chosen on the validation split
    and what the cascade does on the test split (``fleet.metrics.cascade``)."""

    fallback: str = Field(description="The fallback model's name.")
    metric: str = Field(description="The per-request quality the cascade is judged by (accuracy, a per-row score).")
    target: str
    threshold: float = Field(description="Escalate when the calibrated confidence (P(correct)) is below this.")
    raw_threshold: float = Field(
        description="The same threshold on the specialist's raw confidence (what serving reads)."
    )
    calibration: dict[str, list[float]] = Field(
        default_factory=dict, description="The isotonic map: raw confidence points x and P(correct) y."
    )
    validation_rows: int
    validation: dict[str, float] = Field(default_factory=dict, description="Kept share and qualities on validation.")
    test_rows: int
    kept_share: Metric
    cascade_quality: Metric
    specialist_quality: Metric
    fallback_quality: Metric
    cost_per_1k: dict[str, Metric] = Field(
        default_factory=dict,
        description="Cost per 1,000 requests of the cascade, the specialist and the fallback alone.",
    )
    fallback_reused: bool = Field(False, description="The fallback's test answers were a stored baseline's.")
    note: str = ""


class EvaluationReport(_Result):
    specialist: str
    task: str
    dataset_version: str
    test_examples: int
    labels: list[str]
    metric: str
    references: list[str] = Field(description="The expected answer of each test row, in order.")
    challenger: ContenderScore
    champion: ContenderScore | None = None
    champion_version: str | None = None
    baselines: list[ContenderScore]
    paired_tests: dict[str, PairedTest] = Field(default_factory=dict)
    decision: GateDecision
    cascade: CascadeReport | None = None

    @property
    def baseline(self) -> ContenderScore:
        """The strongest general baseline: the one the gate faces."""
        return max(self.baselines, key=lambda b: b.value(self.metric))

    def contenders(self) -> dict[str, ContenderScore | None]:
        return {"challenger": self.challenger, "champion": self.champion, "baseline": self.baseline}


class DecisionRecord(_Result):
    """Everything the gate saw and decided (stored with the version; read by the leaderboard)."""

    specialist: str
    task: str
    dataset_version: str
    trigger: str
    decided_at: str
    metric: str
    verdict: str
    promote: bool
    reasons: list[str]
    thresholds: dict[str, Any]
    contenders: dict[str, ContenderScore | None]
    baselines: list[ContenderScore]
    paired_tests: dict[str, PairedTest]
    cascade: CascadeReport | None = None

    @classmethod
    def of(cls, report: EvaluationReport, trigger: str, decided_at: str) -> DecisionRecord:
        def strip(c: ContenderScore | None) -> ContenderScore | None:
            return None if c is None else c.model_copy(update={"outputs": None})

        d = report.decision
        return cls(
            specialist=report.specialist,
            task=report.task,
            dataset_version=report.dataset_version,
            trigger=trigger,
            decided_at=decided_at,
            metric=report.metric,
            verdict=d.verdict,
            promote=d.promote,
            reasons=d.reasons,
            thresholds=d.thresholds,
            contenders={r: strip(c) for r, c in report.contenders().items()},
            baselines=[b.model_copy(update={"outputs": None}) for b in report.baselines],
            paired_tests=report.paired_tests,
            cascade=report.cascade,
        )

    def score(self, role: str) -> float | None:
        c = self.contenders.get(role)
        return None if c is None else c.value(self.metric)


class Lineage(_Result):
    """Why a specialist runs: ``manual``, ``schedule`` or ``drift`` (with the drift report that raised it)."""

    trigger: str = "manual"
    drift_report: str | None = None


class Registration(_Result):
    name: str
    version: str
    run_id: str
    alias: str
    verdict: str
    created: bool = Field(True, description="False when another run had registered this training key already.")


class SpecialistResult(_Result):
    """One row of a fleet run: what happened to a specialist."""

    specialist: str
    status: Literal["trained", "up-to-date", "failed"]
    dataset_version: str | None = None
    version: str | None = None
    alias: str | None = None
    verdict: str | None = None
    metric: str | None = None
    scores: dict[str, float | None] = Field(default_factory=dict, description="The gate metric of each role.")
    ran_on: str = ""
    attempts: list[str] = Field(
        default_factory=list, description="deployments: each run of it, its end and where it ran (retries too)."
    )
    error: str | None = None


class FleetRunError(RuntimeError):
    """Some specialists failed; ``results`` has a row per specialist, failures with their error."""

    def __init__(self, results: list[SpecialistResult]):
        self.results = results
        failed = [f"{r.specialist}: {r.error}" for r in results if r.status == "failed"]
        super().__init__(f"{len(failed)} of {len(results)} specialist(s) failed:\n" + "\n".join(failed))

    def __reduce__(self):  # pickled by Prefect and Dask: rebuild from the rows, not the message
        return (FleetRunError, (self.results,))
