"""Never score the same thing twice: a contender's score on a test split, stored and reused.

A score depends on three things only: what answered (the contender's ``identity``: a version's files and
engine, a general model with its prompt and settings), the test split's rows, and how it is scored (the
kind's and the metrics' source, and the evaluation settings: intervals, slices, timing, the label set). Stored under their hash in the object store (``scores/NAME/KEY.json``),
it is reused by any later run with the same three: a retrain whose test split and champion are unchanged
scores only the challenger, and an unchanged baseline is not run again. A contender without an
``identity`` (or with a random one) is always scored.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import pandas as pd

from fleet.core.results import ContenderScore
from fleet.core.spec import SpecialistSpec
from fleet.core.storage import ObjectStore, StorageError, get_json, put_json

log = logging.getLogger("fleet.stages.evaluation")


def test_version(test: pd.DataFrame) -> str:
    """The content hash of a test split's rows (every column, in order)."""
    rows = pd.util.hash_pandas_object(test.reset_index(drop=True).astype(str), index=True)
    return hashlib.sha256(rows.to_numpy().tobytes() + ",".join(map(str, test.columns)).encode()).hexdigest()[:16]


@lru_cache(maxsize=8)
def scoring_version(kind_module: str) -> str:
    """The hash of the code that turns answers into scores: the kind's package and ``fleet.metrics``."""
    import importlib

    digest = hashlib.sha256()
    package = Path(importlib.import_module(kind_module).__file__ or "").parent
    metrics = Path(__file__).resolve().parents[1] / "metrics"
    for path in sorted([*package.glob("*.py"), *metrics.glob("*.py")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def scoring_key(spec: SpecialistSpec, kind_module: str) -> str:
    """What scoring depends on besides the answers: the code, and the settings it reads (the evaluation
    section: intervals, slices, timing; the label set)."""
    settings = json.dumps(
        [spec.evaluation.model_dump(mode="json"), spec.labels, scoring_version(kind_module)], sort_keys=True
    )
    return hashlib.sha256(settings.encode()).hexdigest()[:16]


def versions_of(spec: SpecialistSpec, test: pd.DataFrame, kind_module: str) -> tuple[str, str]:
    """(test split version, scoring key): with a contender's identity, what a stored score is keyed by."""
    return test_version(test), scoring_key(spec, kind_module)


def key(identity: str, test: str, scoring: str) -> str:
    return hashlib.sha256(f"{identity}\0{test}\0{scoring}".encode()).hexdigest()[:24]


def scored(
    store: ObjectStore | None,
    specialist: str,
    identity: str | None,
    versions: tuple[str, str],
    name: str,
    score: Callable[[], ContenderScore],
    role: str | None = None,
) -> ContenderScore:
    """The stored score of (``identity``, test split, scoring code) = ``versions``' pair, else ``score()``, stored.

    ``role``: the contender's role in this run, when it may differ from the stored one (a challenger scored
    by one run is the champion of the next)."""
    if store is None or not identity:
        return score()
    where = f"scores/{specialist}/{key(identity, *versions)}.json"
    try:
        if store.exists(where):
            found = ContenderScore.model_validate(get_json(store, where))
            log.info("%s: %s scored before on this test split (%s): score reused", specialist, name, where)
            return found.model_copy(update={"model": name, "reused": True, "role": role or found.role})
    except (StorageError, ValueError) as exc:  # unreadable: scored again, stored again
        log.warning("%s: stored score %s unreadable (%s); scoring again", specialist, where, exc)
    fresh = score()
    put_json(store, where, fresh.model_dump(mode="json"))
    return fresh
