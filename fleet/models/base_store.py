"""Base models as shared layers: stored once under their content hash, found again by it.

A specialist version is a thin layer (its adapter, a few MB) that names its base by a content hash
(:func:`digest`: SHA-256 of the folder's files). The base itself is stored once in the object store,
under ``bases/DIGEST/`` (files first, ``manifest.json`` last), and once in MLflow (``fleet.stages.registry``).
:func:`locate` finds a base on this machine, in this order: the name it was trained with (a package
alias, a folder, a hub id) if its files still hash the same; the local cache
``$FLEET_HOME/bases/by-digest/DIGEST``; the object store; any fallback given (an MLflow artifact URI).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from fleet.core.records import BASE_URI_PATTERN, DIGEST_PATTERN, ModelRecord
from fleet.core.storage import ObjectStore, StorageError, put_json
from fleet.models.base_models import TrainingError, bases_home, resolve_base_model

_LOCK = threading.Lock()
BASES_EXPERIMENT = "fleet-bases"  # where the registry logs each base once (fleet.stages.registered_bases)


@lru_cache(maxsize=16)
def _feed(digest, path: Path) -> None:
    """Add a file's bytes to ``digest``, 4 MiB at a time."""
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)


def _folder_digest(folder: str, signature: tuple) -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
            _feed(digest, path)
    return digest.hexdigest()[:24]


def folder_digest(folder: str | Path) -> str:
    """The content hash of a model folder (remembered per process while its files do not change)."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith("."))
    signature = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _folder_digest(str(Path(folder).resolve()), signature)


def version_digest(model_dir: str | Path) -> str:
    """The content hash of a saved specialist version: what makes its answers, so the folder a run trained and
    the same version fetched from the registry (whose record also names where its base is kept, ``base_uri``)
    agree."""
    import json

    record = ModelRecord.read(model_dir).model_dump(mode="json", exclude={"base_uri"})
    record_file = ModelRecord.path(model_dir)
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode())
    for path in sorted(Path(model_dir).rglob("*")):
        if path.is_file() and path != record_file and not path.name.startswith("."):
            digest.update(b"\0" + path.relative_to(model_dir).as_posix().encode() + b"\0")
            digest.update(bytes.fromhex(_file_digest(str(path), path.stat().st_size, path.stat().st_mtime_ns)))
    return digest.hexdigest()[:24]


@lru_cache(maxsize=4096)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """One file's SHA-256, remembered while its size and modification time stay."""
    digest = hashlib.sha256()
    _feed(digest, Path(path))
    return digest.hexdigest()


def digest(base_model: str) -> str:
    """The content hash of a base model (a hub id is resolved to its local snapshot first)."""
    folder = resolve_base_model(base_model)
    if not Path(folder).is_dir():
        from huggingface_hub import snapshot_download

        folder = snapshot_download(folder)
    return folder_digest(folder)


def prefix(base_digest: str) -> str:
    return f"bases/{check_digest(base_digest)}"


def store_once(store: ObjectStore, base_model: str) -> str:
    """Put the base in the object store under its digest unless it is there; returns the digest."""
    d = digest(base_model)
    with _LOCK:
        if not store.exists(f"{prefix(d)}/manifest.json"):
            store.upload_dir(Path(resolve_base_model(base_model)), f"{prefix(d)}/files")
            put_json(store, f"{prefix(d)}/manifest.json", {"digest": d, "base_model": base_model})
    return d


def check_digest(base_digest: str) -> str:
    """``base_digest`` if it is exactly what :func:`folder_digest` writes (24 lowercase hex digits): a digest
    read from a registry record becomes a folder name, so nothing else may pass (``../``, ``/``...)."""
    if not isinstance(base_digest, str) or not re.fullmatch(DIGEST_PATTERN, base_digest):
        raise StorageError(f"base digest {str(base_digest)[:40]!r}: not a fleet content hash (24 hex digits); refused")
    return base_digest


def cache_folder(base_digest: str) -> Path:
    root = (bases_home() / "by-digest").resolve()
    folder = root / check_digest(base_digest)
    if folder.resolve().parent != root:  # a link planted in the cache: never followed out of it
        raise StorageError(f"{folder}: leads outside {root}; refused")
    return folder


def _fill(dest: Path, fetch: Callable[[Path], object], base_digest: str, origin: str) -> None:
    """Fetch into a temporary folder beside ``dest``, hash it, and rename it into place only when it hashes to
    ``base_digest``: files altered where they were kept are refused, and nothing half-fetched is left."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest.parent))
    try:
        fetch(tmp)
        got = folder_digest(tmp)
        if got != base_digest:
            raise StorageError(
                f"base {base_digest} fetched from {origin} hashes to {got}: its files were changed after it was "
                "stored; refused (nothing was cached)"
            )
        os.replace(tmp, dest)
    except OSError:
        if not dest.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fleet_bases_run(uri: str, base_digest: str) -> None:
    """``uri`` must be the fleet's own run for this base (``runs:/RUN_ID/base`` in the ``fleet-bases``
    experiment, tagged with the digest): a record may not send the fetch to any other artifact."""
    import mlflow

    match = re.fullmatch(BASE_URI_PATTERN, uri or "")
    if match is None:
        raise StorageError(f"base_uri {str(uri)[:80]!r}: not a fleet bases run (runs:/RUN_ID/base); refused")
    client = mlflow.MlflowClient()
    try:
        run = client.get_run(uri.split("/")[1])
        experiment = client.get_experiment(run.info.experiment_id).name
    except Exception as exc:  # MlflowException for an unknown run, or the server's own errors
        raise StorageError(f"base_uri {uri}: cannot read its run ({str(exc).splitlines()[0][:120]})") from None
    if experiment != BASES_EXPERIMENT or run.data.tags.get("base_digest") != base_digest:
        raise StorageError(f"base_uri {uri}: not the fleet's bases run of {base_digest}; refused")


def locate(base_model: str, base_digest: str, store: ObjectStore | None = None, fallback: str | None = None) -> str:
    """A local folder holding exactly the base with ``base_digest`` (see the module's docstring)."""
    try:
        folder = resolve_base_model(base_model)
        if Path(folder).is_dir() and folder_digest(folder) == base_digest:
            return folder
    except TrainingError:
        pass
    cached = cache_folder(base_digest)
    if cached.is_dir() and folder_digest(cached) != base_digest:
        raise StorageError(f"{cached}: its files no longer hash to {base_digest}; delete the folder to fetch it again")
    if not cached.is_dir() and store is not None and store.exists(f"{prefix(base_digest)}/manifest.json"):
        _fill(cached, lambda tmp: store.download_dir(f"{prefix(base_digest)}/files", tmp), base_digest, store.url)
    if not cached.is_dir() and fallback:
        import mlflow

        _fleet_bases_run(fallback, base_digest)

        def from_mlflow(tmp: Path) -> None:
            shutil.copytree(mlflow.artifacts.download_artifacts(fallback), tmp, dirs_exist_ok=True)

        _fill(cached, from_mlflow, base_digest, fallback)
    if not cached.is_dir():
        raise StorageError(
            f"base model {base_model!r} ({base_digest}): not installed here, not in "
            f"{store.url if store else 'any object store'}, and no copy to fetch"
        )
    return str(cached)


def locate_for(record: ModelRecord, store: ObjectStore | None = None) -> str:
    """The local folder of the base an adapter's ``fleet.json`` names (MLflow's copy as the last resort)."""
    base_model, base_digest, base_uri = record.base_ref()
    return locate(base_model, base_digest, store, fallback=base_uri)


def gguf_file(folder: str | Path, base_digest: str, quant: str = "f16") -> Path:
    """The base in ``folder`` (content hash ``base_digest``) as a GGUF file for llama.cpp, written once per
    (digest, quantization) under ``$FLEET_HOME/bases/gguf/``."""
    from fleet.models.gguf_export import write_base

    if quant not in ("f16", "q8_0", "q4_k_m"):
        raise StorageError(f"GGUF quantization {quant[:20]!r}: one of f16, q8_0, q4_k_m")
    dest = bases_home() / "gguf" / f"{check_digest(base_digest)}-{quant}.gguf"
    with _LOCK:
        if not dest.is_file():
            write_base(folder, dest, base_digest, quant)
    return dest


def adapter_gguf(model_dir: str | Path, folder: str | Path, base_digest: str) -> Path:
    """A version's LoRA adapter as a GGUF file: the one saved with it (``adapter.gguf``), or, for versions
    saved before there was one, converted once into ``$FLEET_HOME/bases/gguf/adapters/``."""
    from fleet.models.gguf_export import ADAPTER_FILE, write_adapter

    saved = Path(model_dir) / ADAPTER_FILE
    if saved.is_file():
        return saved
    dest = bases_home() / "gguf" / "adapters" / f"{folder_digest(model_dir)}.gguf"
    with _LOCK:
        if not dest.is_file():
            write_adapter(model_dir, folder, dest, base_digest)
    return dest
