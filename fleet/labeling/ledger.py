"""The label ledger: every label a pooled row received, who or what gave it, and when.

Object stores cannot append, so each decision batch is one part file under ``labeling/NAME/labels/``
written in one put (a batch is stored whole or not at all). A row's label is the latest human decision,
else the teacher's; a human ``skip`` hides a row from the queue without labelling it. Imported files are
remembered by their content hash, so the same file is never applied twice.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import pandas as pd

from fleet.core.storage import ObjectStore

SOURCES = ("human", "teacher", "skip")
COLUMNS = ["id", "text", "label", "source", "by", "at", "confidence", "batch", "origin", "audit"]


class LabelingError(ValueError):
    """A labelling input is refused (unknown row, label outside the set, another specialist...); nothing applied."""


def row_id(text: str) -> str:
    """A pooled row's id: the hash of its cleaned text (the same text is one row, wherever it came from)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class LabelEvent:
    id: str
    text: str
    label: str | None
    source: str  # human | teacher | skip
    by: str  # a reviewer's name, the teacher's name
    at: str = ""
    confidence: float | None = None
    batch: str = ""
    origin: str = ""  # who sent the row's text: client:NAME (a token's name), ingest:FILE, traffic (unknown)
    audit: bool = False  # a teacher label drawn for human review (labeling.audit_share)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}")


def _prefix(name: str) -> str:
    return f"labeling/{name}/labels"


def record(store: ObjectStore, name: str, events: list[LabelEvent], batch: str | None = None) -> str | None:
    """Store ``events`` as one part file (all or nothing); returns its key."""
    if not events:
        return None
    now = datetime.now(UTC)
    batch = batch or uuid.uuid4().hex[:12]
    lines = []
    for e in events:
        rec = asdict(e) | {"at": e.at or now.isoformat(), "batch": batch}
        lines.append(json.dumps(rec, ensure_ascii=False, sort_keys=True))
    key = f"{_prefix(name)}/part-{now:%Y%m%dT%H%M%S%f}-{batch}.jsonl"
    store.put_bytes(key, ("\n".join(lines) + "\n").encode())
    return key


def events(store: ObjectStore, name: str) -> pd.DataFrame:
    """Every recorded event, oldest part first."""
    rows = []
    for key in store.list(_prefix(name)):
        rows += [json.loads(line) for line in store.get_bytes(key).decode().split("\n") if line.strip()]
    return pd.DataFrame(rows, columns=pd.Index(COLUMNS)) if rows else pd.DataFrame(columns=pd.Index(COLUMNS))


def current(ev: pd.DataFrame) -> pd.DataFrame:
    """One row per id: its human decision (latest; a skip included) and its teacher label (latest).

    Columns: id, text, human (label or None), human_source (human/skip), human_by, human_at, teacher,
    teacher_confidence, teacher_by, teacher_at, origin (who sent the text, as the teacher's event says),
    audit (the teacher's label was drawn for review)."""
    out = pd.DataFrame(
        columns=pd.Index(["id", "text", "human", "human_source", "human_by", "human_at", *TEACHER_COLUMNS])
    )
    if ev.empty:
        return out
    people = ev[ev["source"] != "teacher"].drop_duplicates("id", keep="last")
    people = people.rename(columns={"label": "human", "source": "human_source", "by": "human_by", "at": "human_at"})[
        ["id", "text", "human", "human_source", "human_by", "human_at"]
    ]
    teacher = ev[(ev["source"] == "teacher") & ev["label"].notna()].drop_duplicates("id", keep="last")
    teacher = teacher.rename(
        columns={"label": "teacher", "confidence": "teacher_confidence", "by": "teacher_by", "at": "teacher_at"}
    )[["id", "text", *TEACHER_COLUMNS]]
    teacher = teacher.assign(
        origin=teacher["origin"].fillna("").astype(str), audit=teacher["audit"].fillna(False).astype(bool)
    )
    merged = people.merge(teacher, on="id", how="outer", suffixes=("", "_t"))
    merged["text"] = merged["text"].fillna(merged.pop("text_t"))
    return merged.reset_index(drop=True)


TEACHER_COLUMNS = ["teacher", "teacher_confidence", "teacher_by", "teacher_at", "origin", "audit"]


def import_batch(payload: bytes) -> str:
    """The batch name of an imported file's labels: its content hash."""
    return "import-" + hashlib.sha256(payload).hexdigest()[:24]


def import_marker(name: str, payload: bytes) -> str:
    return f"labeling/{name}/imports/{hashlib.sha256(payload).hexdigest()[:24]}.json"


def claim_import(store: ObjectStore, name: str, payload: bytes, meta: dict) -> bool:
    """Mark an import file as applied; False when the same bytes were applied before."""
    return store.create_if_absent(import_marker(name, payload), json.dumps(meta, sort_keys=True).encode())


def reviews_in_month(store: ObjectStore, name: str, month: str) -> int:
    """Human decisions (labels and skips) recorded in a calendar month (``YYYY-MM``, UTC)."""
    ev = events(store, name)
    if ev.empty:
        return 0
    people = ev[ev["source"].isin(["human", "skip"])]
    return int(people["at"].astype(str).str.startswith(month).sum())
