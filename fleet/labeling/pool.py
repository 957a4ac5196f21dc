"""The unlabelled pool: served requests and ingested files, curated by the training data's own rules.

``fleet ingest NAME FILE`` stores a file's texts under ``labeling/NAME/ingest/`` (redacted, one part file
per ingest); the traffic log (``fleet.ops.traffic``) holds served requests. The pool is derived from both:
each text is normalized, redacted and held to the length rules (the curation ``Cleaner``), exact duplicates
become one row (its id the hash of the cleaned text; origin and time are those of its first arrival), and
rows already in the specialist's dataset, or near-twins of its test or validation split, are left out (they
would leak into the evaluation).

Input parts are written once and never changed, so the pool is kept as an index
(``labeling/NAME/pool-index/FINGERPRINT.json``, one per dataset version and curation settings) that
records which parts it has read: a build reads only the parts that arrived since, and starts over when a
part it read is gone (log retention) or the index cannot be read. The index is a cache of what the parts
say: deleting it loses nothing.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd

from fleet.core.spec import SpecialistSpec
from fleet.core.storage import ObjectStore, StorageError, get_json, put_json
from fleet.data import versions
from fleet.data.cleaning import Cleaner, Quarantine, Verdict
from fleet.data.dedup import cross_matches
from fleet.data.pii import PiiRedactor
from fleet.labeling.ledger import row_id
from fleet.ops import traffic

POOL_COLUMNS = ["id", "text", "origin", "first_seen"]


@dataclass
class Pool:
    """The pool's rows (``id``, ``text``, ``origin``, ``first_seen``) and what curation set aside, by rule."""

    rows: pd.DataFrame
    read: int = 0
    set_aside: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)


def _ingest_prefix(name: str) -> str:
    return f"labeling/{name}/ingest"


def ingest(store: ObjectStore, name: str, texts: list[str], origin: str) -> tuple[str | None, int]:
    """Store ``texts`` (redacted) as one part of the pool's input; returns (key, rows stored)."""
    now = datetime.now(UTC)
    redactor = PiiRedactor()
    lines = [
        json.dumps({"text": redactor.redact(t).text, "origin": origin, "time": now.isoformat()}, ensure_ascii=False)
        for t in texts
        if t and t.strip()
    ]
    if not lines:
        return None, 0
    key = f"{_ingest_prefix(name)}/part-{now:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:12]}.jsonl"
    store.put_bytes(key, ("\n".join(lines) + "\n").encode())
    return key, len(lines)


def _parts(spec: SpecialistSpec, store: ObjectStore) -> list[str]:
    """Every input part's key: the traffic log's (when it joins the pool), then the ingested files'."""
    keys = traffic.part_keys(store, "traffic", spec.name) if spec.labeling.include_traffic else []
    return keys + store.list(_ingest_prefix(spec.name))


def origin_of(r: dict) -> str:
    """Who sent a record's text: an ingested file (``ingest:FILE``), a served client (``client:NAME``, the
    token's name), another fleet command (``cli:predict``, ``batch``), or ``traffic`` (logged before clients were)."""
    if isinstance(r.get("origin"), str):
        return r["origin"]
    client = r.get("client")
    if not isinstance(client, str) or not client:
        return "traffic"
    return client if client.startswith("cli:") or client == "batch" else f"client:{client}"


def _records(store: ObjectStore, key: str) -> list[dict]:
    """A part's rows as (text, origin, time): traffic records name their client, ingested ones their file."""
    return [
        {"text": r["text"], "origin": origin_of(r), "time": r.get("time", "")}
        for r in traffic.read_part(store, key)
        if isinstance(r.get("text"), str)
    ]


def _accept(text: str, target: str) -> Verdict:
    return Verdict(target)


def _index_key(spec: SpecialistSpec, dataset_version: str | None) -> str:
    settings = [dataset_version or "", spec.curation.model_dump(mode="json"), spec.labeling.include_traffic]
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"labeling/{spec.name}/pool-index/{fingerprint}.json"


def _load_index(store: ObjectStore, key: str, parts: list[str]) -> dict:
    """The index at ``key``, or an empty one when there is none, it is unreadable or a part it read is gone."""
    empty = {"parts": [], "seen": [], "rows": [], "read": 0, "set_aside": {}}
    if not store.exists(key):
        return empty
    try:
        index = get_json(store, key)
    except (StorageError, ValueError):
        return empty
    if not isinstance(index, dict) or not set(empty) <= set(index) or not set(index["parts"]) <= set(parts):
        return empty
    return index


def build(spec: SpecialistSpec, store: ObjectStore, dataset_version: str | None) -> Pool:
    """The current pool of ``spec``; ``dataset_version``: the dataset whose rows and evaluation splits it avoids.
    Reads only the input parts its index has not read yet, and stores the index again when there were any."""
    key, parts = _index_key(spec, dataset_version), _parts(spec, store)
    index = _load_index(store, key, parts)
    rows = pd.DataFrame(index["rows"], columns=pd.Index(POOL_COLUMNS))
    done = set(index["parts"])
    new_parts = [k for k in parts if k not in done]
    if not new_parts:
        return Pool(rows, int(index["read"]), dict(index["set_aside"]))
    # in order of arrival: parts written in the same second list in no particular order
    raw = sorted((r for k in new_parts for r in _records(store, k)), key=lambda r: str(r["time"]))
    seen = set(index["seen"])
    q = Quarantine("label")
    cleaner = Cleaner(spec.curation, _accept, q)
    kept: dict[str, dict] = {}
    for i, r in enumerate(raw):
        rec = cleaner.row(i, r["text"], "")
        if rec is None:
            continue
        rid = row_id(rec["text"])
        if rid not in seen and rid not in kept:
            kept[rid] = {"id": rid, "text": rec["text"], "origin": r["origin"], "first_seen": r["time"]}
    fresh = pd.DataFrame(list(kept.values()), columns=pd.Index(POOL_COLUMNS))
    aside = Counter(dict(index["set_aside"])) + Counter(r["rule"] for r in q.records)
    aside["duplicate"] += len(raw) - len(q.records) - len(fresh)
    if dataset_version and len(fresh):
        fresh, known, leaked = _without_dataset(spec, store, dataset_version, fresh)
        aside["in-dataset"] += known
        aside["leakage"] += leaked
    rows = pd.concat([rows, fresh], ignore_index=True) if len(rows) else fresh.reset_index(drop=True)
    pool = Pool(rows, int(index["read"]) + len(raw), {k: int(v) for k, v in aside.items() if v})
    put_json(
        store,
        key,
        {
            "parts": sorted(done | set(new_parts)),
            "seen": sorted(seen | set(kept)),
            "rows": rows.to_dict("records"),
            "read": pool.read,
            "set_aside": pool.set_aside,
        },
    )
    return pool


def _without_dataset(
    spec: SpecialistSpec, store: ObjectStore, version: str, rows: pd.DataFrame
) -> tuple[pd.DataFrame, int, int]:
    splits = {s: versions.load_split(store, spec.name, version, s) for s in ("train", "validation", "test")}
    seen = {t for df in splits.values() for t in df["text"]}
    fresh = rows[~rows["text"].isin(seen)].reset_index(drop=True)
    known = len(rows) - len(fresh)
    nd = spec.curation.near_duplicates
    if not nd.enabled:
        return fresh, known, 0
    held_out = [*splits["validation"]["text"], *splits["test"]["text"]]
    hits = cross_matches(held_out, fresh["text"].tolist(), nd.threshold, nd.shingle_size, nd.num_perm, nd.shingle)
    leaked = {qi for qi, _, _ in hits}
    return fresh.drop(fresh.index[sorted(leaked)]).reset_index(drop=True), known, len(leaked)
