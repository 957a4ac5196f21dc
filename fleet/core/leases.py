"""Leases: one holder at a time for a piece of work (training a key, registering it), across processes
and machines, kept in the object store.

A lease is a series of numbered files ``leases/WHAT/000001.json``, ``000002.json``, ... created with a
conditional create (the local store: a hard link, which fails if the file exists; S3: ``If-None-Match``),
so exactly one contender wins each number. The newest file says who holds the lease and until when;
only its owner writes it again (heartbeats, release). A holder that dies stops renewing, its lease
expires, and the next number is taken. Waiters poll and say whom they wait for.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from fleet.core.storage import ObjectStore, StorageError

log = logging.getLogger("fleet.core.leases")
# Leases this process held but could not mark released (the store was away): the holder's block has
# ended, so this process may take them over at once instead of waiting for them to expire.
_UNRELEASED: dict[str, str] = {}


class LeaseBusy(RuntimeError):
    """Another run holds the lease and did not let go in time; the message names it."""


class LeaseLost(RuntimeError):
    """This holder's lease expired and another run took it: stop before the next side effect."""


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:6]}"


class Lease:
    def __init__(self, store: ObjectStore, what: str, ttl_s: float = 600.0):
        self.store, self.prefix, self.ttl_s = store, f"leases/{what}", ttl_s
        self.owner, self.key = owner_id(), ""

    def _newest(self) -> tuple[int, dict | None]:
        keys = [k for k in self.store.list(self.prefix) if k.endswith(".json")]
        if not keys:
            return 0, None
        key = max(keys)
        try:
            return int(key.rsplit("/", 1)[1][:-5]), json.loads(self.store.get_bytes(key))
        except (StorageError, ValueError):  # being written: treat as held for now
            return int(key.rsplit("/", 1)[1][:-5]), {"owner": "?", "until": time.time() + 1}

    def _record(self, released: bool = False) -> bytes:
        until = time.time() + self.ttl_s
        return json.dumps({"owner": self.owner, "until": until, "released": released}).encode()

    def try_acquire(self) -> tuple[bool, dict | None]:
        """(won, the current holder's record if not)."""
        n, current = self._newest()
        ours = current is not None and current.get("owner") == _UNRELEASED.get(self.prefix)
        if current is not None and not current.get("released") and current["until"] > time.time() and not ours:
            return False, current
        key = f"{self.prefix}/{n + 1:06d}.json"
        if self.store.create_if_absent(key, self._record()):
            self.key = key
            return True, None
        return False, self._newest()[1]

    def renew(self) -> None:
        if self.key:
            self.store.put_bytes(self.key, self._record())

    def check(self) -> None:
        """Fencing: raise :class:`LeaseLost` unless this holder still has the lease (its record is the newest
        and has not expired). Holders call it before each side effect (a sweep, an alias move)."""
        n, current = self._newest()
        newest = f"{self.prefix}/{n:06d}.json"
        owner = current and current.get("owner")
        if newest == self.key and owner == "?":  # our own record could not be read: ownership unconfirmed
            raise LeaseLost(f"{self.prefix}: cannot confirm this run still holds the lease (its record is unreadable)")
        if not self.key or newest != self.key or current is None or owner != self.owner:
            raise LeaseLost(f"{self.prefix}: another run holds this lease now ({owner})")
        if current["until"] <= time.time():
            raise LeaseLost(f"{self.prefix}: this run's lease expired (its heartbeat could not renew it)")

    def release(self) -> None:
        if self.key:
            self.store.put_bytes(self.key, self._record(released=True))
            self.key = ""


def _heartbeat(lease: Lease, stop: threading.Event) -> None:
    while not stop.wait(lease.ttl_s / 3):
        with contextlib.suppress(StorageError):  # the store is away for a moment: the next beat tries again
            lease.renew()


@contextmanager
def held(
    store: ObjectStore,
    what: str,
    wait_s: float = 7200.0,
    ttl_s: float = 600.0,
    poll_s: float = 2.0,
    on_wait=lambda holder: None,
) -> Iterator[Lease]:
    """Hold the lease on ``what`` for the block (renewed while held); wait up to ``wait_s`` for it."""
    lease, deadline, told = Lease(store, what, ttl_s), time.monotonic() + wait_s, False
    while True:
        won, holder = lease.try_acquire()
        if won:
            break
        if time.monotonic() > deadline:
            raise LeaseBusy(
                f"{what}: {holder and holder.get('owner')} holds it (until "
                f"{time.strftime('%H:%M:%S', time.localtime(holder['until'])) if holder else '?'})"
            )
        if not told:
            on_wait(holder)
            told = True
        time.sleep(poll_s)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(lease, stop), daemon=True, name=f"lease-{what}")
    beat.start()
    try:
        yield lease
    finally:
        stop.set()
        beat.join()  # no renewal after the release below
        _release(lease)


def _release(lease: Lease) -> None:
    """Mark the lease released; with the store away, leave it to expire (or to this process to take over)."""
    try:
        lease.release()
        _UNRELEASED.pop(lease.prefix, None)
    except StorageError as exc:
        _UNRELEASED[lease.prefix] = lease.owner
        log.warning("%s: could not release the lease (%s); it expires in %.0f s", lease.prefix, exc, lease.ttl_s)
