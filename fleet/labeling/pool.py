"""The unlabelled pool: served requests and ingested files, curated by the training data's own rules.

``fleet ingest NAME FILE`` stores a file's texts under ``labeling/NAME/ingest/`` (redacted, one part file
per ingest); the traffic log (``fleet.ops.traffic``) holds served requests. The pool is computed from both
whenever it is needed, so there is no second copy to fall out of step: each text is normalized, redacted and
held to the length rules (the curation ``Cleaner``), exact duplicates become one row (its id the hash of the
cleaned text), and rows already in the specialist's dataset, or near-twins of its test or validation split,
are left out (they would leak into the evaluation).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd

from fleet.core.spec import SpecialistSpec
from fleet.core.storage import ObjectStore
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


def _inputs(spec: SpecialistSpec, store: ObjectStore) -> pd.DataFrame:
    rows: list[dict] = []
    if spec.labeling.include_traffic:
        served = traffic.read_all(store, "traffic", spec.name)
        if not served.empty and "text" in served:
            rows += [{"text": t, "origin": "traffic", "time": w} for t, w in zip(served["text"], served["time"])]
    for key in store.list(_ingest_prefix(spec.name)):
        rows += [json.loads(line) for line in store.get_bytes(key).decode().splitlines() if line.strip()]
    return pd.DataFrame(rows, columns=pd.Index(["text", "origin", "time"]))


def _accept(text: str, target: str) -> Verdict:
    return Verdict(target)


def build(spec: SpecialistSpec, store: ObjectStore, dataset_version: str | None) -> Pool:
    """The current pool of ``spec``; ``dataset_version``: the dataset whose rows and evaluation splits it avoids."""
    raw = _inputs(spec, store)
    q = Quarantine("label")
    cleaner = Cleaner(spec.curation, _accept, q)
    kept: dict[str, dict] = {}
    for i, (text, origin, when) in enumerate(zip(raw["text"], raw["origin"], raw["time"])):
        rec = cleaner.row(i, text, "")
        if rec is None:
            continue
        rid = row_id(rec["text"])
        if rid not in kept:
            kept[rid] = {"id": rid, "text": rec["text"], "origin": origin, "first_seen": when}
    rows = pd.DataFrame(list(kept.values()), columns=pd.Index(POOL_COLUMNS))
    set_aside = dict(pd.Series([r["rule"] for r in q.records]).value_counts().astype(int)) if q.records else {}
    set_aside["duplicate"] = len(raw) - len(q.records) - len(rows)
    if dataset_version and len(rows):
        rows, known, leaked = _without_dataset(spec, store, dataset_version, rows)
        set_aside["in-dataset"], set_aside["leakage"] = known, leaked
    return Pool(rows.reset_index(drop=True), len(raw), {k: int(v) for k, v in set_aside.items() if v})


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
