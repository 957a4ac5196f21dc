"""What a specialist's run amounts to, as one row of the fleet run's summary."""

from __future__ import annotations

from fleet import registry
from fleet.results import DatasetVersion, EvaluationReport, Registration, SpecialistResult


def trained(dataset: DatasetVersion, report: EvaluationReport, reg: Registration) -> SpecialistResult:
    return SpecialistResult(
        specialist=reg.name,
        status="trained",
        dataset_version=dataset.version,
        version=reg.version,
        alias=reg.alias,
        verdict=reg.verdict,
        metric=report.metric,
        scores={role: None if c is None else c.value(report.metric) for role, c in report.contenders().items()},
    )


def up_to_date(name: str, dataset: DatasetVersion, train_key: str) -> SpecialistResult | None:
    """The row of a version already registered for this training key (its scores from its decision record)."""
    v = registry.find_version(name, train_key)
    if v is None:
        return None
    record = registry.decision_record(name, v)
    return SpecialistResult(
        specialist=name,
        status="up-to-date",
        dataset_version=dataset.version,
        version=str(v.version),
        alias="unchanged",
        verdict=None if record is None else record.verdict,
        metric=None if record is None else record.metric,
        scores={} if record is None else {r: record.score(r) for r in record.contenders},
    )
