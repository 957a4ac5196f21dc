"""Versioned storage of curated data sets: content-addressed, written once, manifest last.

A version is ``datasets/NAME/VERSION/`` with its splits, quarantine and data card; ``VERSION`` is a hash
of the labels and the splits' bytes. The manifest is written last, so a version without one is an
unfinished write and is ignored; an existing version is never overwritten. Beside the versions,
``datasets/NAME/inputs/HASH.json`` remembers which version a given input (source bytes, settings,
curation code) produced, so an unchanged specialist is not curated again.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import pandas as pd

from fleet.core.records import DatasetManifest
from fleet.core.results import DatasetVersion
from fleet.core.storage import ObjectStore, StorageError, get_json, put_json
from fleet.data.sources import CurationError

CARD_FILES = ("DATASET.md", "report.json", "lengths.png")  # written beside every version
# the curation code, relative to the package: its rules, the text normalization, the stage, and every kind
_CURATION_CODE = (
    "data/sources.py",
    "data/cleaning.py",
    "data/splitting.py",
    "data/dedup.py",
    "data/pii.py",
    "data/versions.py",
    "core/text.py",
    "stages/curation.py",
)


class VersionExistsError(CurationError):
    """A dataset version is immutable: writing it again is refused."""


def prefix(specialist: str, version: str) -> str:
    return f"datasets/{specialist}/{version}"


def to_jsonl(df: pd.DataFrame) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in df.to_dict("records")).encode()


def content_version(labels: list[str], blobs: dict[str, bytes], splits: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(labels).encode())
    for s in splits:
        digest.update(s.encode() + b"\0" + blobs[f"{s}.jsonl"])
    return digest.hexdigest()[:16]


def write_version(store: ObjectStore, where: str, files: dict[str, bytes], manifest: DatasetManifest) -> None:
    """Write a version's files, then its manifest; refuse if the version already exists.

    Until the manifest lands the version does not exist for readers, so a failure half-way
    leaves nothing visible, and the next attempt writes the same bytes again.
    """
    if store.exists(f"{where}/manifest.json"):
        raise VersionExistsError(f"{store.url}/{where}: this dataset version exists and is never overwritten")
    for name, blob in files.items():
        store.put_bytes(f"{where}/{name}", blob)
    put_json(store, f"{where}/manifest.json", manifest.model_dump(mode="json"))


def exists(store: ObjectStore, specialist: str, version: str) -> bool:
    return store.exists(f"{prefix(specialist, version)}/manifest.json")


def load_split(store: ObjectStore, specialist: str, version: str, split: str) -> pd.DataFrame:
    """One split of a stored version; refuses a version whose manifest was never written."""
    where = prefix(specialist, version)
    if not exists(store, specialist, version):
        raise CurationError(f"{store.url}/{where}: no such dataset version (or an unfinished write)")
    raw = store.get_bytes(f"{where}/{split}.jsonl").decode()
    records = [json.loads(line) for line in raw.split("\n") if line.strip()]
    return pd.DataFrame(records) if records else pd.DataFrame(columns=["row", "text", "label"])


def card_files(store: ObjectStore, specialist: str, version: str) -> dict[str, bytes]:
    """The data card, report and length histogram of a stored version."""
    return {name: store.get_bytes(f"{prefix(specialist, version)}/{name}") for name in CARD_FILES}


def load_card(store: ObjectStore, specialist: str, version: str) -> str:
    return store.get_bytes(f"{prefix(specialist, version)}/DATASET.md").decode()


@lru_cache(maxsize=1)
def _code_digest() -> str:
    """The curation code itself: a change to any rule makes every input new."""
    package = Path(__file__).resolve().parents[1]
    files = sorted([*(package / f for f in _CURATION_CODE), *(package / "kinds").rglob("*.py")])
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


def input_hash(raw: bytes, settings: dict, extra: bytes = b"") -> str:
    """What decides a curation's outcome: the source's bytes, the settings, extra rows and the code."""
    digest = hashlib.sha256(_code_digest().encode())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for part in (raw, extra):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:24]


def remembered(store: ObjectStore, specialist: str, key: str) -> DatasetVersion | None:
    """The version an identical input produced before, if it is still stored."""
    pointer = f"datasets/{specialist}/inputs/{key}.json"
    try:
        found = DatasetVersion.model_validate(get_json(store, pointer)) if store.exists(pointer) else None
    except (StorageError, ValueError):
        return None
    if found is None or not exists(store, specialist, found.version):
        return None
    return found.model_copy(update={"created": False})


def remember(store: ObjectStore, specialist: str, key: str, version: DatasetVersion) -> None:
    put_json(store, f"datasets/{specialist}/inputs/{key}.json", version.model_dump(mode="json"))
