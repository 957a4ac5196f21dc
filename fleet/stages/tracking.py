"""Logging a specialist's training run to MLflow: parameters, dataset inputs, metrics of every contender,
the evaluation report and decision record, and in-memory artifacts (data card, figures, drift reference)."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import mlflow

from fleet.core.results import DatasetVersion, DecisionRecord, EvaluationReport, TrainedModel
from fleet.core.spec import SpecialistSpec
from fleet.stages.evaluation import report_markdown


def _log_inputs(spec: SpecialistSpec, dataset: DatasetVersion) -> None:
    """The version's splits as MLflow dataset inputs, by reference (their rows stay in the object store)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():  # MLflow registers its local artifact source twice and warns about it
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(dataset.uri)
    for split, n in dataset.counts.items():
        ds = MetaDataset(source=source, name=f"{spec.name}-{split}", digest=dataset.version)  # type: ignore[abstract]
        mlflow.log_input(ds, context=split, tags={"dataset_version": dataset.version, "rows": str(n)})


def _log_blobs(blobs: dict[str, bytes], artifact_path: str) -> None:
    """Log in-memory files as artifacts of the active run."""
    with tempfile.TemporaryDirectory() as tmp:
        for fname, blob in blobs.items():
            (Path(tmp) / fname).write_bytes(blob)
        mlflow.log_artifacts(tmp, artifact_path)


def _metrics(model: TrainedModel, report: EvaluationReport) -> dict[str, float]:
    numbers = {"train_loss": model.train_loss, "train_seconds": model.train_seconds}
    for role, c in report.contenders().items():
        if c is None:
            continue
        numbers |= {f"{role}_{k}": m.value for k, m in c.metrics.items()}
        numbers |= {f"{role}_{k}": v for k, v in c.cost.model_dump().items() if isinstance(v, (int, float))}
        numbers |= {
            f"{role}_slice_{s}_{k}": m.value for s, sl in c.slices.items() if sl.n for k, m in sl.metrics.items()
        }
    cas = report.cascade
    if cas is not None:
        numbers |= {
            "cascade_threshold": cas.threshold,
            "cascade_kept_share": cas.kept_share.value,
            "cascade_quality": cas.cascade_quality.value,
            "cascade_specialist_quality": cas.specialist_quality.value,
            "cascade_fallback_quality": cas.fallback_quality.value,
            **{f"cascade_cost_per_1k_{k}": m.value for k, m in cas.cost_per_1k.items()},
        }
    return {"".join(ch if ch.isalnum() or ch in "_./ -" else "_" for ch in k): float(v) for k, v in numbers.items()}


def _flat(prefix: str, d: dict) -> dict:
    out: dict = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        out |= _flat(key, v) if isinstance(v, dict) else {key: ",".join(map(str, v)) if isinstance(v, list) else v}
    return out


def log_run(
    spec: SpecialistSpec,
    dataset: DatasetVersion,
    model: TrainedModel,
    report: EvaluationReport,
    record: DecisionRecord,
    tags: dict[str, str],
    files: dict[str, dict[str, bytes]],
) -> None:
    mlflow.set_tags({k: v for k, v in tags.items() if k != "gate.reason"})
    mlflow.log_params(
        _flat("train", spec.train.model_dump())
        | {
            "base_model": spec.base_model,
            "task": spec.task,
            "max_length": model.max_length,
            "labels": ",".join(spec.labels),
        }
    )
    _log_inputs(spec, dataset)
    mlflow.log_metrics(_metrics(model, report))
    mlflow.log_dict(report.model_dump(mode="json"), "evaluation/report.json")
    mlflow.log_text(report_markdown(report), "evaluation/report.md")
    mlflow.log_dict(record.model_dump(mode="json"), "decision/record.json")
    mlflow.log_dict(dataset.model_dump(mode="json"), "dataset/manifest.json")
    for folder, blobs in files.items():
        if blobs:
            _log_blobs(blobs, folder)
