"""The served traffic, logged in batches off the request path, with a bounded buffer.

Answers are queued here and written as one part file per specialist and version every ``flush_rows`` rows
or ``flush_s`` seconds, whichever comes first, by one background thread. The buffer holds at most
``max_rows`` rows: when the store is slow or away, new rows beyond it are dropped and counted (``dropped``,
exported in ``/metrics``), and rows whose write failed go back to the buffer while it has room. An answer
never waits for the log.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict

from fleet.core.storage import ObjectStore
from fleet.ops import sla, traffic

log = logging.getLogger("fleet.ops.serving")


class TrafficBuffer:
    def __init__(
        self,
        store: ObjectStore,
        flush_rows: int = 500,
        flush_s: float = 5.0,
        max_rows: int = 10_000,
        key: bytes | None = None,
    ):
        self.store, self.flush_rows, self.flush_s, self.max_rows = store, flush_rows, flush_s, max_rows
        self.key = key  # the traffic log's hashing key (None: the store's own)
        self.rows: dict[tuple[str, str], list[dict]] = defaultdict(list)  # (specialist, version) -> rows
        self.buffered = 0
        self.dropped = 0  # rows never logged: the buffer was full
        self.written = 0
        self.errors: dict[str, int] = defaultdict(int)  # requests refused (busy, timeout) per specialist, unwritten
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="traffic-log")
        self._thread.start()

    def add(self, name: str, version: str, rows: list[dict]) -> bool:
        """Queue answered rows; False (and counted as dropped) when the buffer is full."""
        with self._lock:
            if self.buffered + len(rows) > self.max_rows:
                self.dropped += len(rows)
                return False
            self.rows[(name, version)] += rows
            self.buffered += len(rows)
            if self.buffered >= self.flush_rows:
                self._wake.set()
        return True

    def refused(self, name: str) -> None:
        with self._lock:
            self.errors[name] += 1

    def _take(self) -> dict[tuple[str, str], list[dict]]:
        with self._lock:
            taken, self.rows, self.buffered = self.rows, defaultdict(list), 0
        return taken

    def flush(self) -> bool:
        """Write what is buffered, one part file per specialist and version; False when a write failed."""
        ok = True
        with self._lock:
            errors, self.errors = dict(self.errors), defaultdict(int)
        try:
            sla.log_errors(self.store, errors)
        except Exception as exc:  # the store away: the counts come back for the next flush
            log.warning("refused-request counts not written: %s", exc)
            with self._lock:
                for name, n in errors.items():
                    self.errors[name] += n
            ok = False
        for (name, version), rows in self._take().items():
            try:
                traffic.log_predictions(self.store, name, rows, version, key=self.key)
                self.written += len(rows)
            except Exception as exc:  # the store is away: keep the rows while there is room, else count them
                log.warning("%s: traffic log write failed (%d rows kept or dropped): %s", name, len(rows), exc)
                self.add(name, version, rows)
                ok = False
        return ok

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_s)
            self._wake.clear()
            if not self.flush():  # the store is away: try again in flush_s, not as soon as the rows are back
                self._stop.wait(self.flush_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the thread after a last flush."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)
        self.flush()
