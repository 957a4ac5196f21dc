"""A fleet file that travels with its runs, for workers that share nothing but the servers.

``ship`` stores a fleet file and the local data files its specialists name by a relative path (the ones
beside it) in the object store, under ``fleets/DIGEST/`` where DIGEST hashes them all, and returns the
reference ``store:fleets/DIGEST`` that a deployment run takes as its ``fleet_file``. ``fetch``, on the
worker, downloads them into a folder of its own home, checks every file against the stored manifest, and
returns the local fleet file; its relative sources then resolve there as they did beside the original.
The manifest is written last, so a half-shipped fleet is never fetched; the same content ships once.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import yaml

from fleet.core.spec import SpecError
from fleet.core.storage import ObjectStore, StorageError, get_json, put_json
from fleet.core.yamlfile import strict_yaml

PREFIX = "fleets"
REFERENCE = re.compile(r"store:fleets/([0-9a-f]{24})")
FLEET_NAME = "fleet.yaml"


def is_shipped(fleet_file: str) -> bool:
    return fleet_file.startswith("store:")


def _relative_sources(raw: object) -> list[str]:
    """The relative local data sources the fleet file names (its defaults' and each specialist's)."""
    if not isinstance(raw, dict):
        return []
    entries = [raw.get("defaults")]
    specialists = raw.get("specialists")
    if isinstance(specialists, dict):
        entries += list(specialists.values())
    found = []
    for entry in entries:
        data = entry.get("data") if isinstance(entry, dict) else None
        src = data.get("source") if isinstance(data, dict) else None
        if isinstance(src, str) and src and "://" not in src and not Path(src).expanduser().is_absolute():
            found.append(src)
    return sorted(set(found))


def _files(fleet_file: Path) -> dict[str, bytes]:
    """{path relative to the fleet file's folder: content} of the fleet file and its relative sources."""
    where = str(fleet_file)
    if not fleet_file.is_file():
        raise SpecError(where, [f"{fleet_file}: file not found"])
    text = fleet_file.read_bytes()
    try:
        raw = strict_yaml(text.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SpecError(where, [f"not valid YAML: {exc}"]) from None
    files = {FLEET_NAME: text}
    folder = fleet_file.resolve().parent
    for src in _relative_sources(raw):
        path = (folder / src).resolve()
        if folder not in path.parents:
            raise SpecError(
                where, [f"data source {src}: outside the fleet file's folder; it cannot travel with the run"]
            )
        if not path.is_file():
            raise SpecError(where, [f"data source {src}: file not found ({path})"])
        files[path.relative_to(folder).as_posix()] = path.read_bytes()
    return files


def _manifest(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())}


def _digest(manifest: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:24]


def ship(fleet_file: str | Path, store: ObjectStore) -> str:
    """Store ``fleet_file`` and its relative data files once; the reference a worker fetches them by."""
    files = _files(Path(fleet_file))
    manifest = _manifest(files)
    digest = _digest(manifest)
    prefix = f"{PREFIX}/{digest}"
    if not store.exists(f"{prefix}/manifest.json"):
        for name, data in files.items():
            store.put_bytes(f"{prefix}/files/{name}", data)
        put_json(store, f"{prefix}/manifest.json", {"files": manifest, "source": str(fleet_file)})  # last
    return f"store:{prefix}"


def fetch(reference: str, store: ObjectStore, folder: Path) -> Path:
    """The shipped fleet file, downloaded under ``folder/DIGEST/`` with its data files and checked."""
    m = REFERENCE.fullmatch(reference)
    if m is None:
        raise SpecError(reference, ["expected store:fleets/ and 24 hex digits (what `ship` returns)"])
    digest = m.group(1)
    local = folder / digest
    if (local / FLEET_NAME).is_file():
        return local / FLEET_NAME  # renamed into place only after every file was checked
    prefix = f"{PREFIX}/{digest}"
    try:
        manifest = get_json(store, f"{prefix}/manifest.json")["files"]
    except (StorageError, KeyError, TypeError):
        raise SpecError(reference, [f"no shipped fleet {digest} in the store ({store})"]) from None
    if not isinstance(manifest, dict) or FLEET_NAME not in manifest or _digest(manifest) != digest:
        raise SpecError(reference, ["the stored manifest does not match its digest: refused"])
    partial = folder / f".fetching-{digest}"
    shutil.rmtree(partial, ignore_errors=True)
    for name, sha in manifest.items():
        dest = (partial / name).resolve()
        if partial.resolve() not in dest.parents:
            raise SpecError(reference, [f"{name}: a path outside the fleet's folder: refused"])
        data = store.get_bytes(f"{prefix}/files/{name}")
        if hashlib.sha256(data).hexdigest() != sha:
            shutil.rmtree(partial, ignore_errors=True)
            raise SpecError(reference, [f"{name}: its content does not match the manifest: refused"])
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    try:
        partial.rename(local)
    except OSError:  # another run of this worker fetched it meanwhile
        shutil.rmtree(partial, ignore_errors=True)
    return local / FLEET_NAME
