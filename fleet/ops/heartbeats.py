"""Heartbeats of runs on workers elsewhere, and the runs found stuck, in the object store.

A specialist run started through the deployments runner writes ``heartbeats/RUN_ID.json`` (when, where it
runs) every few seconds from a thread of its own; the fleet run that waits for it reads it, and declares the
run stuck when it is Running with no heartbeat for longer than a limit (its worker is gone: killed, out of
memory, its machine lost), or Late/Pending that long (no worker takes it). Each finding is kept under
``stuck/DATE/RUN_ID.json`` for ``fleet status``. The store is the one thing every worker shares.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from fleet.core.storage import ObjectStore, StorageError, get_json, put_json

log = logging.getLogger("fleet.ops.heartbeats")
RUN_ID = re.compile(r"[0-9a-f-]{36}")


def _key(run_id: str) -> str:
    if not RUN_ID.fullmatch(run_id):
        raise ValueError(f"{run_id!r}: not a flow run id")
    return f"heartbeats/{run_id}.json"


def beat(store: ObjectStore, run_id: str, on: str) -> None:
    put_json(store, _key(run_id), {"at": time.time(), "on": on})


def last(store: ObjectStore, run_id: str) -> dict | None:
    """The run's last heartbeat ({"at": epoch seconds, "on": where}), or None when it never beat."""
    try:
        return get_json(store, _key(run_id)) if store.exists(_key(run_id)) else None
    except StorageError:
        return None


@contextlib.contextmanager
def beating(store: ObjectStore, run_id: str, on: str, every_s: float) -> Iterator[None]:
    """Heartbeats every ``every_s`` seconds while the block runs; a store that does not answer is retried."""
    stop = threading.Event()

    def loop() -> None:
        while True:
            try:
                beat(store, run_id, on)
            except StorageError as exc:  # the next one may get through; the watcher tolerates a gap
                log.warning("heartbeat of %s not written: %s", run_id, exc)
            if stop.wait(every_s):
                return

    thread = threading.Thread(target=loop, daemon=True, name=f"heartbeat-{run_id[:8]}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def silent_for(store: ObjectStore, run_id: str, since: float, now: float | None = None) -> float:
    """Seconds since the run's last sign of life: its last heartbeat, or ``since`` (when it entered its
    state) if that is later or it never beat."""
    now = time.time() if now is None else now
    hb = last(store, run_id)
    seen = max(since, float(hb["at"])) if hb else since
    return max(0.0, now - seen)


def record_stuck(store: ObjectStore, finding: dict) -> None:
    """Keep a stuck run's finding ({"run_id", "specialist", "state", "silent_s", "on", "action"})."""
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    put_json(store, f"stuck/{day}/{finding['run_id']}.json", {**finding, "at": time.time()})


def recent_stuck(store: ObjectStore, days: int = 2) -> list[dict]:
    """The stuck runs found in the last ``days`` days, newest first."""
    today = datetime.now(UTC).date()
    found = []
    for n in range(days):
        day = (today - timedelta(days=n)).strftime("%Y-%m-%d")
        for key in store.list(f"stuck/{day}/"):
            with contextlib.suppress(StorageError, ValueError):
                found.append(get_json(store, key))
    return sorted(found, key=lambda f: -float(f.get("at", 0)))
