"""The traffic log: every prediction and every feedback label, per specialist, in the object store.

Layout: ``traffic/NAME/date=YYYY-MM-DD/part-<time>-<uuid>.jsonl`` and the same under
``feedback/``. Object stores cannot append, so each batch is its own part file; a
window is read back by listing the date partitions it spans. Texts are stored
redacted (the curation PII rules) with a keyed hash (HMAC-SHA-256) of the original for joining feedback to
answers: unsalted, a redacted phone number could be found again by hashing every number. The key is
``FLEET_TRAFFIC_HASH_KEY`` where set (then whoever reads the logs without it cannot test guesses), else one
random key made once per store (``keys/traffic-hmac``), which stops precomputed tables but not a reader
of that key: set the setting in production.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd

from fleet.core.storage import ObjectStore, StorageError
from fleet.data.pii import PiiRedactor
from fleet.data.sources import json_objects

KINDS = ("traffic", "feedback")


KEY_OBJECT = "keys/traffic-hmac"
_KEYS: dict[str, bytes] = {}


def store_key(store: ObjectStore) -> bytes:
    """The store's own hashing key: made once (a conditional create, so every process gets the same one)."""
    if store.url not in _KEYS:
        store.create_if_absent(KEY_OBJECT, secrets.token_hex(32).encode())
        _KEYS[store.url] = store.get_bytes(KEY_OBJECT)
    return _KEYS[store.url]


def text_hash(text: str, key: bytes) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def _part_key(kind: str, name: str, when: datetime) -> str:
    return f"{kind}/{name}/date={when:%Y-%m-%d}/part-{when:%H%M%S}-{uuid.uuid4().hex[:12]}.jsonl"


def append(
    store: ObjectStore,
    kind: str,
    name: str,
    rows: list[dict],
    when: datetime | None = None,
    redactor: PiiRedactor | None = None,
    key: bytes | None = None,
) -> str | None:
    """Write one part file of records; each needs ``text``. Returns its key (None for no rows). ``key``: the
    hashing key (``Settings.traffic_key``); None: the store's own."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    if not rows:
        return None
    when = when or datetime.now(UTC)
    redactor = redactor or PiiRedactor()
    secret = key or store_key(store)
    lines = []
    for r in rows:
        rec = {
            **r,
            "text_hash": text_hash(r["text"], secret),
            "text": redactor.redact(r["text"]).text,
            "time": r.get("time") or when.isoformat(),
        }
        lines.append(json.dumps(rec, ensure_ascii=False, sort_keys=True))
    part = _part_key(kind, name, when)
    store.put_bytes(part, ("\n".join(lines) + "\n").encode())
    return part


def log_predictions(
    store: ObjectStore,
    name: str,
    rows: list[dict],
    model_version: str,
    when: datetime | None = None,
    key: bytes | None = None,
) -> str | None:
    """Log answered requests: each row has ``text`` and the kind's answer fields (a classifier's
    ``label`` and ``score``), and the ``client`` that asked where known."""
    rows = [{**r, "model_version": str(model_version)} for r in rows]
    return append(store, "traffic", name, rows, when, key=key)


def window_days(hours: float, now: datetime) -> tuple[datetime, list[str]]:
    """(the start of the last ``hours`` before ``now``, the ``YYYY-MM-DD`` date partitions it spans, in order)."""
    start = now - timedelta(hours=hours)
    days = {(start + timedelta(days=i)).strftime("%Y-%m-%d") for i in range((now - start).days + 2)}
    return start, sorted(days)


def read_window(
    store: ObjectStore, kind: str, name: str, hours: float = 24.0, now: datetime | None = None
) -> pd.DataFrame:
    """Records of the last ``hours`` (by their ``time``), oldest first."""
    now = now or datetime.now(UTC)
    start, days = window_days(hours, now)
    rows = [r for day in days for key in store.list(f"{kind}/{name}/date={day}") for r in read_part(store, key)]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    t = pd.to_datetime(df["time"], utc=True)
    return df[(t >= start) & (t <= now)].assign(_t=t).sort_values("_t").drop(columns="_t").reset_index(drop=True)


def part_keys(store: ObjectStore, kind: str, name: str) -> list[str]:
    """The keys of a specialist's log parts, oldest first (each part is written once and never changed)."""
    return store.list(f"{kind}/{name}")


def read_part(store: ObjectStore, key: str) -> list[dict]:
    """A part's records; a part that is not UTF-8 JSON lines of objects is a ``StorageError`` naming its line."""
    try:
        text = store.get_bytes(key).decode()
    except UnicodeDecodeError as exc:
        raise StorageError(f"{key}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return json_objects(text, key, StorageError)


def read_all(store: ObjectStore, kind: str, name: str) -> pd.DataFrame:
    """Every record of a specialist's log (feedback merged into retraining data), oldest part first."""
    rows = [r for key in part_keys(store, kind, name) for r in read_part(store, key)]
    return pd.DataFrame(rows, columns=None if rows else ["text", "label"])
