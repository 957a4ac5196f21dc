"""Micro-batching: requests for any specialists on one base that arrive within a few milliseconds are
answered in one forward pass, each row with its own adapter.

The work one request can cause is bounded: at most ``max_queued_rows`` rows wait per base (a request that
would pass it is refused at once, :class:`Busy`), and a request is fed to the base ``max_rows`` rows at a
time, the next part only once the last was answered, so other requests' rows are batched in between and a
big request never holds the base for longer than one batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fleet.core.results import Outputs
from fleet.models.adapter_group import AdapterGroup


class Busy(RuntimeError):
    """The base's queue is full: the caller should retry later."""


@dataclass
class Pending:
    specialist: str
    texts: list[str]
    future: asyncio.Future


@dataclass
class Batcher:
    group: AdapterGroup
    max_rows: int = 32
    max_wait_s: float = 0.01
    max_queued_rows: int = 1024
    on_batch: Callable[[int, int], None] = lambda rows, adapters: None  # metrics: rows, distinct adapters
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=1))
    waiting_rows: int = 0  # rows of admitted requests not answered (or dropped) yet
    running: bool = False  # a batch is in the model now
    last_progress: float = field(default_factory=time.monotonic)

    async def submit(self, specialist: str, texts: list[str]) -> list[tuple[Outputs, str]]:
        """Each text's answer and the version that gave it; :class:`Busy` when the queue is full.

        ``waiting_rows`` counts the rows of admitted requests until the model has answered them, and the
        batcher uncounts what it put on the queue: a request that times out keeps its rows counted until the
        batcher drops them from the queue (or its batch ends), so a stuck base fills the bound and refuses
        more (503) instead of growing a queue of abandoned rows with every timeout."""
        if self.waiting_rows + len(texts) > self.max_queued_rows:
            raise Busy(f"{self.waiting_rows} rows are waiting for this base (at most {self.max_queued_rows})")
        if self.waiting_rows == 0:
            self.last_progress = time.monotonic()  # idle until now: not a stall
        self.waiting_rows += len(texts)
        queued = 0  # rows put on the queue: the batcher uncounts those
        answered: list[tuple[Outputs, str]] = []
        try:
            for start in range(0, len(texts), self.max_rows):
                part = texts[start : start + self.max_rows]
                future = asyncio.get_running_loop().create_future()
                self.queue.put_nowait(Pending(specialist, part, future))
                queued += len(part)
                answered += await future
        finally:
            self.waiting_rows -= len(texts) - queued
        return answered

    def stalled(self, after_s: float) -> bool:
        """Work is waiting or running and no batch finished for ``after_s`` seconds."""
        return (self.waiting_rows > 0 or self.running) and time.monotonic() - self.last_progress > after_s

    async def _collect(self) -> list[Pending]:
        batch = [await self.queue.get()]
        deadline = time.monotonic() + self.max_wait_s
        while sum(len(p.texts) for p in batch) < self.max_rows and (left := deadline - time.monotonic()) > 0:
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except TimeoutError:
                break
        live = [p for p in batch if not p.future.done()]  # a request that timed out is not answered
        self.waiting_rows -= sum(len(p.texts) for p in batch if p.future.done())
        return live

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            rows = [(p.specialist, t) for p in batch for t in p.texts]
            if not rows:
                continue
            self.running = True
            try:
                outputs = await loop.run_in_executor(self.executor, self.group.answer, rows)
            except Exception as exc:  # the batch's requests fail together, the batcher goes on
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            finally:
                self.running, self.last_progress = False, time.monotonic()
                self.waiting_rows -= len(rows)  # answered or failed, whether or not their request still waits
            self.on_batch(len(rows), len({a for a, _ in rows}))
            start = 0
            for p in batch:
                if not p.future.done():
                    p.future.set_result(outputs[start : start + len(p.texts)])
                start += len(p.texts)
