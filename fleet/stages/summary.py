"""What a specialist's run amounts to, as one row of the fleet run's summary."""

from __future__ import annotations

from fleet.core.results import DatasetVersion, EvaluationReport, Registration, SpecialistResult
from fleet.core.storage import ObjectStore
from fleet.stages import registry
from fleet.stages.training import model_prefix


def trained(dataset: DatasetVersion, report: EvaluationReport, reg: Registration) -> SpecialistResult:
    return SpecialistResult(
        specialist=reg.name,
        status="trained" if reg.created else "up-to-date",
        dataset_version=dataset.version,
        version=reg.version,
        alias=reg.alias,
        verdict=reg.verdict,
        metric=report.metric,
        scores={role: None if c is None else c.value(report.metric) for role, c in report.contenders().items()},
    )


def up_to_date(name: str, dataset: DatasetVersion, train_key: str, store: ObjectStore) -> SpecialistResult | None:
    """The row of a version already registered for this training key (its scores from its decision record).

    Versions are registered only for models in the store, so a key with no stored model needs no registry
    lookup (and a run that trains does not wait for the registry before it starts)."""
    if not store.exists(f"{model_prefix(name, train_key)}/manifest.json"):
        return None
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
