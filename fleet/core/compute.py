"""Compute slots: how many model-heavy stages of one process run at once.

Fine-tuning, scoring a contender, building a drift profile and the int8 check each keep every core busy
(torch's intra-op threads). Run side by side in threads of one process they do not finish sooner: they
share the same cores and the GIL (a generation loop is mostly small operations); the README's
"Scale-out" section gives the figures measured. And a contender timed while another stage runs would report the other's load
as its own latency and cost. So each such stage takes a slot; the ``compute_slots`` setting
(``FLEET_COMPUTE_SLOTS``, default 1; ``Settings.apply`` passes it to :func:`configure`) sets how many there
are (more on a machine whose cores or GPUs one stage cannot fill).
Light stages (curation, registration, I/O) never wait for one. A slot is re-entrant within a thread:
a stage that calls another keeps the slot it has.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_COND = threading.Condition()
_BUSY = 0
_SLOTS = 1
_HELD = threading.local()


def configure(slots: int) -> None:
    """Set the number of compute slots of this process (at least 1); stages waiting for one re-check."""
    global _SLOTS
    with _COND:
        _SLOTS = max(1, int(slots))
        _COND.notify_all()


def slots() -> int:
    """The number of compute slots of this process."""
    return _SLOTS


@contextlib.contextmanager
def slot() -> Iterator[None]:
    """Hold a compute slot for the block, waiting for one to be free."""
    global _BUSY
    if getattr(_HELD, "depth", 0):
        _HELD.depth += 1
        try:
            yield
        finally:
            _HELD.depth -= 1
        return
    with _COND:
        _COND.wait_for(lambda: slots() > _BUSY)
        _BUSY += 1
    _HELD.depth = 1
    try:
        yield
    finally:
        _HELD.depth = 0
        with _COND:
            _BUSY -= 1
            _COND.notify_all()
