"""Base models in MLflow: each logged once, in the ``fleet-bases`` experiment, under its content hash.

A registered version's ``fleet.json`` carries the URI of its base (``runs:/RUN_ID/base``), so
``mlflow.pyfunc.load_model("models:/NAME@champion")`` resolves the base offline on a machine that has
neither the package alias nor the object store: it downloads the base once into the local cache.
"""

from __future__ import annotations

import threading
from pathlib import Path

import mlflow

from fleet.models.base_models import resolve_base_model
from fleet.models.base_store import BASES_EXPERIMENT

EXPERIMENT = BASES_EXPERIMENT
_LOCK = threading.Lock()


def _experiment(artifact_root: str | None) -> str:
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        return exp.experiment_id
    location = f"{artifact_root.rstrip('/')}/{EXPERIMENT}" if artifact_root else None
    if location and "://" not in location:
        location = Path(location).resolve().as_uri()
    return client.create_experiment(EXPERIMENT, artifact_location=location)


def ensure(base_model: str, base_digest: str, artifact_root: str | None = None) -> str:
    """The MLflow URI of the base with ``base_digest``, logged now if it never was."""
    with _LOCK:
        client = mlflow.MlflowClient()
        exp = _experiment(artifact_root)
        found = client.search_runs(
            [exp], filter_string=f"tags.base_digest = '{base_digest}' and attributes.status = 'FINISHED'", max_results=1
        )
        if found:
            return f"runs:/{found[0].info.run_id}/base"
        run = client.create_run(
            exp,
            run_name=f"{base_model}-{base_digest[:12]}",
            tags={"base_digest": base_digest, "base_model": base_model},
        )
        try:
            client.log_artifacts(run.info.run_id, resolve_base_model(base_model), "base")
        except Exception:
            client.set_terminated(run.info.run_id, status="FAILED")
            raise
        client.set_terminated(run.info.run_id)
        return f"runs:/{run.info.run_id}/base"
