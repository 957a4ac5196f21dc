"""The fine-tuning stage: train a specialist's model once per training key, store it, reuse it.

A model is stored under ``models/NAME/TRAINING_KEY/`` (data version + base model + labels + training
settings) with its ``manifest.json`` written last, so the check survives new processes and never sees
a half-uploaded model. What is stored is the adapter (a few MB); its base is stored once, under
``bases/DIGEST/``. Each fine-tuning checkpoint is mirrored to ``checkpoints/NAME/TRAINING_KEY/`` as it is
written (the newest kept, its pointer ``latest.json`` written after its files), so a run retried on another
machine resumes where a dead one stopped; checkpoints are deleted once the model is stored. How a model is
trained is its kind's business (``fleet.kinds``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

from fleet.core import compute, leases
from fleet.core.records import ModelRecord
from fleet.core.results import TrainedModel
from fleet.core.spec import SpecialistSpec
from fleet.core.storage import ObjectStore, get_json, put_json
from fleet.data import versions
from fleet.kinds import kind_of
from fleet.models import base_store, cache, trainer
from fleet.models.base_models import TrainingError, base_model_id, ml_imports, resolve_base_model

__all__ = ["TrainingError", "ensure_trained", "resolve_base_model", "training_key"]
log = logging.getLogger("fleet.stages.training")

FORMAT = 3  # bump when the way models are trained or stored changes (3: adapters, not merged models)

# torch's random state is per process: two fine-tunes in threads of one process would draw from it in
# turn and neither would be reproducible. One at a time per process (``cache.RNG``, which model loading
# elsewhere in the process also takes). A fine-tune also holds a compute slot (``fleet.core.compute``).


def training_key(spec: SpecialistSpec, dataset_version: str) -> str:
    """What decides whether fine-tuning must run again: data version, base model, labels and settings."""
    payload = {
        "dataset": dataset_version,
        "base_model": base_model_id(spec.base_model),
        "labels": list(spec.labels),
        "train": spec.train.model_dump(),
        "format": FORMAT,
    }
    if settings := kind_of(spec).training_settings(spec):  # kinds with none keep their keys as they were
        payload["task"] = {"name": spec.task, **settings}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def model_prefix(name: str, key: str) -> str:
    return f"models/{name}/{key}"


class StoredCheckpoints:
    """A fine-tune's checkpoints in the object store (``trainer.CheckpointMirror``): the newest one only."""

    def __init__(self, store: ObjectStore, name: str, key: str):
        self.store, self.name, self.prefix = store, name, f"checkpoints/{name}/{key}"

    def latest(self) -> dict | None:
        return (
            get_json(self.store, f"{self.prefix}/latest.json")
            if self.store.exists(f"{self.prefix}/latest.json")
            else None
        )

    def save(self, folder: Path, step: int) -> None:
        previous = self.latest()
        self.store.upload_dir(folder, f"{self.prefix}/step-{step}")
        put_json(self.store, f"{self.prefix}/latest.json", {"step": step, "folder": f"step-{step}"})  # after its files
        if previous is not None and previous["folder"] != f"step-{step}":
            self._delete(f"{self.prefix}/{previous['folder']}/")
        log.info("%s: checkpoint of step %d stored", self.name, step)

    def fetch(self, checkpoints: Path) -> str | None:
        latest = self.latest()
        if latest is None:
            return None
        local = checkpoints / f"checkpoint-{latest['step']}"
        partial = checkpoints / f".fetching-{latest['step']}"
        shutil.rmtree(partial, ignore_errors=True)
        self.store.download_dir(f"{self.prefix}/{latest['folder']}", partial)
        partial.rename(local)
        log.warning(
            "%s: resuming from the stored checkpoint of step %d (a run before this one stopped there)",
            self.name,
            latest["step"],
        )
        return str(local)

    def clear(self) -> None:
        if self.store.exists(f"{self.prefix}/latest.json"):
            self.store.delete(f"{self.prefix}/latest.json")  # first: no reader follows it into a folder being deleted
        self._delete(f"{self.prefix}/")

    def _delete(self, prefix: str) -> None:
        for key in self.store.list(prefix):
            self.store.delete(key)


def stored(spec: SpecialistSpec, store: ObjectStore, key: str, runs_dir: Path) -> TrainedModel | None:
    """The model stored under ``key``, fetched to this machine's run folder, or None."""
    prefix = model_prefix(spec.name, key)
    if not store.exists(f"{prefix}/manifest.json"):
        return None
    model_dir = runs_dir / spec.name / key / "model"
    if not ModelRecord.exists(model_dir):
        store.download_dir(f"{prefix}/model", model_dir)
    info = get_json(store, f"{prefix}/manifest.json")
    return TrainedModel.model_validate({**info, "model_dir": str(model_dir), "reused": True})


def ensure_trained(
    spec: SpecialistSpec,
    store: ObjectStore,
    dataset_version: str,
    runs_dir: str | Path,
    progress: bool = True,
    wait_s: float = 4 * 3600,
    lease_ttl_s: float = 600.0,
) -> TrainedModel:
    """The model for (spec, dataset version): fetched from the store if it was trained before, else trained now
    (``wait_s``: how long to wait while another run trains the same key; ``lease_ttl_s``: how long the key's
    lease outlives a holder that died, before this run takes it over and resumes from its stored checkpoint)."""
    ml_imports()  # before this thread imports a kind's training code: stages run in threads side by side
    runs_dir = Path(runs_dir)
    key = training_key(spec, dataset_version)
    found = stored(spec, store, key, runs_dir)
    if found is not None:
        return found

    def waiting(holder: dict | None) -> None:
        log.warning("%s: key %s is being trained by %s; waiting for it", spec.name, key, (holder or {}).get("owner"))

    if not trainer.is_main_process():  # a rank of a distributed launch: its main process holds the lease
        return _train(spec, store, dataset_version, runs_dir / spec.name / key, progress)
    # one trainer per key, across processes and machines; a run that waited finds the model stored
    with leases.held(store, f"train/{spec.name}/{key}", wait_s=wait_s, ttl_s=lease_ttl_s, on_wait=waiting):
        found = stored(spec, store, key, runs_dir)
        return (
            found if found is not None else _train(spec, store, dataset_version, runs_dir / spec.name / key, progress)
        )


def _train(
    spec: SpecialistSpec, store: ObjectStore, dataset_version: str, run_dir: Path, progress: bool
) -> TrainedModel:
    key = run_dir.name
    train = versions.load_split(store, spec.name, dataset_version, "train")
    checkpoints = StoredCheckpoints(store, spec.name, key)
    with (
        compute.slot(),
        cache.RNG,
        trainer.fixed_threads(spec.train.cpu_threads) as threads,
        trainer.mirrored(checkpoints),
    ):
        start = time.monotonic()
        fit = kind_of(spec).train(spec, train, run_dir, progress=progress)
        fit_seconds = round(time.monotonic() - start, 2)
    model = TrainedModel(
        specialist=spec.name,
        training_key=key,
        dataset_version=dataset_version,
        model_dir=str(run_dir / "model"),
        fit_seconds=fit_seconds,
        environment=trainer.environment(threads),
        **fit.__dict__,
    )
    if trainer.is_main_process():  # under a distributed launch, the main process stores the model
        base_store.store_once(store, spec.base_model)  # the shared layer, once per content hash
        store.upload_dir(run_dir / "model", f"{model_prefix(spec.name, key)}/model")
        manifest = model.model_dump(exclude={"model_dir", "reused"})
        put_json(store, f"{model_prefix(spec.name, key)}/manifest.json", manifest)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # stored: nothing left to resume
        checkpoints.clear()
    return model
