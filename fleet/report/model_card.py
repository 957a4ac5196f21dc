"""The model card: what a version is for, what it was trained on, how it scored (its MLflow description)."""

from __future__ import annotations

from fleet.core.results import DatasetVersion, EvaluationReport, TrainedModel
from fleet.core.spec import SpecialistSpec
from fleet.report.markdown import render


def model_card(
    spec: SpecialistSpec, dataset: DatasetVersion, report: EvaluationReport, tags: dict[str, str], model: TrainedModel
) -> str:
    metrics = [m for m in report.challenger.metrics if report.challenger.metrics[m].ci is not None]
    return render(
        "model_card.md.j2",
        spec=spec,
        dataset=dataset,
        report=report,
        tags=tags,
        model=model,
        metrics=metrics,
        example='["some text"]  # -> DataFrame with the answers',
    )
