"""The MLflow model registry: one registered model per specialist, one version per trained model.

Each version is a pyfunc model (``fleet.stages.pyfunc``) that answers offline, described by its model card,
tagged with its lineage (dataset version, base model, code version, trigger, training key), and its
run holds the decision record, the evaluation report and figures, the data card and the drift
reference. The ``champion`` alias moves last, only when the gate passed; otherwise the version gets
the ``challenger`` alias and the gate's reasons.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from fleet.core import leases
from fleet.core.provenance import code_version
from fleet.core.records import ModelRecord
from fleet.core.results import DatasetVersion, DecisionRecord, EvaluationReport, Registration, TrainedModel
from fleet.core.spec import SpecialistSpec
from fleet.core.storage import ObjectStore
from fleet.kinds import kind_of
from fleet.models.base_models import base_model_id
from fleet.report.model_card import model_card
from fleet.stages import pyfunc, registered_bases, tracking

CHAMPION = "champion"
CHALLENGER = "challenger"
TRIGGERS = ("manual", "schedule", "drift")
HISTORY_TAG = "champion_history"


class RegistryError(RuntimeError):
    """The registry could not be read or written; the message names the model and the server."""


_READY: set[str] = set()
_READY_LOCK = threading.Lock()


def client() -> MlflowClient:
    """An MLflow client; the first use per tracking URI and process is serialized, because a new SQLite
    store creates its tables then, and two threads doing that at once collide."""
    uri = mlflow.get_tracking_uri()
    if uri not in _READY:
        with _READY_LOCK:
            if uri not in _READY:
                MlflowClient().search_experiments(max_results=1)
                _READY.add(uri)
    return MlflowClient()


def experiment(name: str, artifact_root: str | None) -> str:
    exp_name = f"fleet-{name}"
    exp = client().get_experiment_by_name(exp_name)
    if exp is not None:
        return exp.experiment_id
    location = f"{artifact_root.rstrip('/')}/{exp_name}" if artifact_root else None
    if location and "://" not in location:
        location = Path(location).resolve().as_uri()
    return client().create_experiment(exp_name, artifact_location=location)


def champion_version(name: str):
    """The champion's ModelVersion, or None when the specialist has none yet."""
    try:
        return client().get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise RegistryError(f"registered model {name!r}: cannot read its champion: {exc.message}") from None


def download_model_dir(name: str, version: str, dest: str | Path) -> str:
    """Fetch a version's model folder (the pyfunc's ``model`` artifact) to ``dest``."""
    local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(dest))
    model_dir = Path(local) / "artifacts" / "model"
    if not ModelRecord.exists(model_dir):
        raise RegistryError(f"models:/{name}/{version}: not a fleet specialist model (no artifacts/model/fleet.json)")
    return str(model_dir)


def champion_model(name: str, dest_root: Path) -> tuple[str, str] | None:
    """(version, local model folder) of the champion, fetched under ``dest_root/VERSION``; None without one."""
    v = champion_version(name)
    if v is None:
        return None
    return str(v.version), download_model_dir(name, str(v.version), Path(dest_root) / str(v.version))


def find_version(name: str, train_key: str):
    """A registered version trained with ``train_key`` (same data and settings), if any."""
    try:
        found = client().search_model_versions(f"name='{name}' and tags.train_key='{train_key}'")
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise RegistryError(f"registered model {name!r}: search failed: {exc.message}") from None
    return max(found, key=lambda v: int(v.version)) if found else None


def decision_record(name: str, version) -> DecisionRecord | None:
    """The decision record logged with a version's run (None for a version without one)."""
    try:
        return DecisionRecord.model_validate(mlflow.artifacts.load_dict(f"runs:/{version.run_id}/decision/record.json"))
    except (MlflowException, OSError, ValueError):
        return None


def fine_tunes(name: str) -> list[dict]:
    """Every registered version's fine-tune: ``at`` (registration, UTC), ``seconds`` (its training loop),
    ``device`` and ``threads`` (from its environment tags). [] for a specialist never registered."""
    from datetime import UTC, datetime

    try:
        found = client().search_model_versions(f"name='{name}'")
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise RegistryError(f"registered model {name!r}: search failed: {exc.message}") from None
    out = []
    for v in found:
        tags = v.tags or {}
        if "train_key" not in tags:
            continue  # an incomplete registration
        metrics = client().get_run(v.run_id).data.metrics if v.run_id else {}
        threads = tags.get("env.torch_threads", "1")
        out.append(
            {
                "at": datetime.fromtimestamp(int(v.creation_timestamp) / 1000, UTC),
                "seconds": float(metrics.get("train_seconds", 0.0)),
                "device": tags.get("env.device", "cpu"),
                "threads": int(threads) if threads.isdigit() else 1,
            }
        )
    return out


def log_fleet_metrics(experiment_name: str, run_name: str, metrics: dict[str, float], files: dict[str, bytes]) -> str:
    """A run of fleet-wide figures (``fleet tco``) in its own experiment; returns the run id."""
    exp = client().get_experiment_by_name(experiment_name)
    exp_id = exp.experiment_id if exp is not None else client().create_experiment(experiment_name)
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name) as run:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        for fname, blob in files.items():
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / fname
                path.write_bytes(blob)
                mlflow.log_artifact(str(path))
        return run.info.run_id


def registered_names() -> list[str]:
    return [m.name for m in client().search_registered_models()]


def champion_numbers() -> dict[str, str]:
    """Every registered specialist's champion version number, from one listing (not one query each)."""
    out, token = {}, None
    while True:
        page = client().search_registered_models(max_results=1000, page_token=token)
        for model in page:
            number = (model.aliases or {}).get(CHAMPION)
            if number is not None:
                out[model.name] = str(number)
        token = page.token
        if not token:
            return out


@dataclass
class Registering:
    """How a version is registered: why (``trigger``), where its artifacts go, what else it carries."""

    trigger: str = "manual"
    artifact_root: str | None = None
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)  # in-memory artifacts by folder
    lineage: dict[str, str] = field(default_factory=dict)  # more lineage tags (e.g. the drift report)


def _tags(
    spec: SpecialistSpec, dataset: DatasetVersion, report: EvaluationReport, model: TrainedModel, how: Registering
) -> dict:
    """Lineage and, for people browsing the MLflow UI, each contender's gate metric (never read back)."""
    d = report.decision
    tags = {
        "specialist": spec.name,
        "task": spec.task,
        "dataset_version": dataset.version,
        "base_model": base_model_id(spec.base_model),
        "code_version": code_version(),
        "trigger": how.trigger,
        "train_key": model.training_key,
        **{f"env.{k}": v for k, v in model.environment.items()},
        **how.lineage,
        "gate.verdict": d.verdict,
        "gate.reason": "; ".join(d.reasons),
    }
    for role, c in report.contenders().items():
        for metric in spec.gate_metrics:
            if c is None or metric in c.metrics:
                tags[f"{role}.{metric}"] = "none" if c is None else f"{c.value(metric):.4f}"
        tags[f"{role}.model"] = "none" if c is None else c.model
    if report.cascade is not None:  # what serving reads: escalate below the raw threshold
        cas = report.cascade
        tags |= {
            "cascade.fallback": cas.fallback,
            "cascade.raw_threshold": repr(float(cas.raw_threshold)),
            "cascade.threshold": f"{cas.threshold:.4f}",
            "cascade.kept_share": f"{cas.kept_share.value:.4f}",
        }
    return tags


def _describe(spec: SpecialistSpec, version: str, card: str, tags: dict[str, str]) -> None:
    """Card and tags on the version; a version left without them would look registered but not be."""
    c = client()
    try:
        c.update_model_version(spec.name, version, description=card)
        for k, v in sorted(tags.items(), key=lambda kv: kv[0] == "train_key"):  # train_key last: "complete"
            c.set_model_version_tag(spec.name, version, k, v)
        summary = f"Labels: {', '.join(spec.labels)}." if spec.labels else f"Task: {spec.task}."
        c.update_registered_model(spec.name, description=f"{spec.description or spec.name}\n\n{summary}")
    except Exception:
        c.delete_model_version(spec.name, version)
        raise


PYFUNC_CODE = Path(__file__).with_name("pyfunc_code.py")


def _log_model(spec: SpecialistSpec, model: TrainedModel, how: Registering) -> str:
    """Log the version as code (no pickle) with its adapter as the artifact; its ``fleet.json`` gets the
    MLflow URI of its base, which is logged once for all versions."""
    record = ModelRecord.read(model.model_dir)
    if record.base_model is not None and record.base_digest is not None:
        uri = registered_bases.ensure(record.base_model, record.base_digest, how.artifact_root)
        record = record.model_copy(update={"base_uri": uri})
    with tempfile.TemporaryDirectory() as tmp:
        artifact = Path(tmp) / "model"
        shutil.copytree(model.model_dir, artifact)
        record.write(artifact)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_CODE),
            artifacts={"model": str(artifact)},
            code_paths=[pyfunc.code_path()],  # the fleet's own code: it loads without this repository
            pip_requirements=pyfunc.requirements(),  # exact pins, the versions that trained and scored it
            signature=pyfunc.SIGNATURE,  # a list of texts in
            input_example=pyfunc.EXAMPLE,
            registered_model_name=spec.name,
        )
    return str(info.registered_model_version)


def register(
    spec: SpecialistSpec,
    dataset: DatasetVersion,
    model: TrainedModel,
    report: EvaluationReport,
    how: Registering,
    fence: Callable[[], None] = lambda: None,
) -> Registration:
    """Log the run and the model, register a version, tag it, and move an alias (last).

    The gate's decision is checked again here (under the register lease of :func:`register_once`): when
    the champion changed since the challenger was compared with it, the version is registered as the
    challenger with the reason ``champion-changed``, never promoted over a champion it was not compared with."""
    if how.trigger not in TRIGGERS:
        raise RegistryError(f"trigger {how.trigger!r}: must be one of {', '.join(TRIGGERS)}")
    tags = _tags(spec, dataset, report, model, how)
    changed = _champion_changed(spec.name, report) if report.decision.promote else None
    if changed is not None:
        tags |= {"gate.recheck": "champion-changed", "gate.recheck.reason": changed}
    record = DecisionRecord.of(report, how.trigger, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    figures = {"evaluation": kind_of(spec).figures(report)}
    with mlflow.start_run(
        experiment_id=experiment(spec.name, how.artifact_root), run_name=f"{spec.name}-{model.training_key[:8]}"
    ) as run:
        tracking.log_run(spec, dataset, model, report, record, tags, {**how.files, **figures})
        version = _log_model(spec, model, how)
    _describe(spec, version, model_card(spec, dataset, report, tags, model), tags)
    fence()  # the lease may have been lost while the model was logged: then no alias moves
    if report.decision.promote and changed is None:  # checked again after the fence: a move made meanwhile
        changed = _champion_changed(spec.name, report)  # (a rollback) is never overwritten
        if changed is not None:
            for k, v in {"gate.recheck": "champion-changed", "gate.recheck.reason": changed}.items():
                client().set_model_version_tag(spec.name, version, k, v)
    alias = CHAMPION if report.decision.promote and changed is None else CHALLENGER
    if alias == CHAMPION:  # the alias moves last, so a failure above leaves the champion where it was
        move_champion(spec.name, version, f"gate: {report.decision.verdict}")
    else:
        client().set_registered_model_alias(spec.name, alias, version)
    verdict = "champion-changed" if changed is not None else report.decision.verdict
    return Registration(name=spec.name, version=version, run_id=run.info.run_id, alias=alias, verdict=verdict)


def _champion_changed(name: str, report: EvaluationReport) -> str | None:
    """Why the report's promotion no longer holds (the champion is not the one it was compared with), or None."""
    current = champion_version(name)
    now = None if current is None else str(current.version)
    if now == report.champion_version:
        return None
    compared = f"v{report.champion_version}" if report.champion_version else "no champion"
    return f"compared with {compared}, but the champion is now {f'v{now}' if now else 'none'}; evaluate again"


def history(name: str) -> list[dict]:
    tags = client().get_registered_model(name).tags or {}
    try:
        return json.loads(tags.get(HISTORY_TAG, "[]"))
    except json.JSONDecodeError:
        return []


def move_champion(name: str, version: str, reason: str, rolled_back_from: str | None = None) -> None:
    """Point ``champion`` at ``version`` and append the move to the model's champion history. Callers hold
    the specialist's register lease (:func:`champion_lease`): the history is read, changed and written back."""
    past = history(name)
    entry = {"version": str(version), "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "reason": reason}
    if rolled_back_from is not None:
        entry["rolled_back_from"] = rolled_back_from
    past.append(entry)
    client().set_registered_model_tag(name, HISTORY_TAG, json.dumps(past[-50:]))
    client().set_registered_model_alias(name, CHAMPION, str(version))


def champion_lease(store: ObjectStore, name: str, wait_s: float = 900):
    """The specialist's register lease: every move of its ``champion`` alias happens under it."""
    return leases.held(store, f"register/{name}", wait_s=wait_s, ttl_s=300)


def sweep_incomplete(name: str) -> list[str]:
    """Delete versions a registration left half-done: every complete version has its ``train_key`` tag,
    which is set last (a registration interrupted by a lost MLflow server cannot delete its own)."""
    try:
        found = client().search_model_versions(f"name='{name}'")
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    gone = [str(v.version) for v in found if "train_key" not in (v.tags or {}) and not v.aliases]
    for version in gone:
        client().delete_model_version(name, version)
    return gone


def _unreachable(exc: Exception) -> bool:
    text = str(exc)
    return any(s in text for s in ("Max retries exceeded", "Connection refused", "ConnectionError", "timed out"))


def register_once(
    spec: SpecialistSpec,
    dataset: DatasetVersion,
    model: TrainedModel,
    report: EvaluationReport,
    how: Registering,
    store: ObjectStore,
) -> Registration:
    """:func:`register`, at most once per training key: check and register under the specialist's lease
    (another run may have registered this key meanwhile: its version is returned, ``created`` false)."""
    try:
        with champion_lease(store, spec.name) as lease:
            lease.check()  # fencing: before each side effect, this run must still hold the lease
            sweep_incomplete(spec.name)
            existing = find_version(spec.name, model.training_key)
            if existing is not None:
                return Registration(
                    name=spec.name,
                    version=str(existing.version),
                    run_id=existing.run_id,
                    alias="unchanged",
                    verdict=(existing.tags or {}).get("gate.verdict", ""),
                    created=False,
                )
            return register(spec, dataset, model, report, how, fence=lease.check)
    except (MlflowException, OSError) as exc:
        if not _unreachable(exc):
            raise
        raise RegistryError(
            f"MLflow at {mlflow.get_tracking_uri()} did not answer while registering {spec.name} "
            f"({str(exc).splitlines()[0][:160]}); no version was completed and the champion is "
            "unchanged: run again once it answers"
        ) from None
