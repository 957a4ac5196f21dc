"""Micro-batching: requests for any specialists on one base that arrive within a few milliseconds are
answered in one forward pass, each row with its own adapter."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fleet.core.results import Outputs
from fleet.models.adapter_group import AdapterGroup


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
    on_batch: Callable[[int, int], None] = lambda rows, adapters: None  # metrics: rows, distinct adapters
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=1))

    async def submit(self, specialist: str, texts: list[str]) -> list[tuple[Outputs, str]]:
        """Each text's answer and the version that gave it."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(Pending(specialist, texts, future))
        return await future

    async def _collect(self) -> list[Pending]:
        batch = [await self.queue.get()]
        deadline = time.monotonic() + self.max_wait_s
        while sum(len(p.texts) for p in batch) < self.max_rows and (left := deadline - time.monotonic()) > 0:
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except TimeoutError:
                break
        return batch

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            rows = [(p.specialist, t) for p in batch for t in p.texts]
            try:
                outputs = await loop.run_in_executor(self.executor, self.group.answer, rows)
            except Exception as exc:  # the batch's requests fail together, the batcher goes on
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            self.on_batch(len(rows), len({a for a, _ in rows}))
            start = 0
            for p in batch:
                if not p.future.done():
                    p.future.set_result(outputs[start : start + len(p.texts)])
                start += len(p.texts)
