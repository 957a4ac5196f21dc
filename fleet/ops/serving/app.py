"""The HTTP face of the served fleet (FastAPI on uvicorn).

- ``POST /v1/specialists/{name}/predict`` ``{"inputs": [...]}``: the champion's answers (a classifier:
  label and score; a generative specialist: output, and json for JSON answers), and the version;
- ``POST /v1/predict`` ``{"requests": [{"specialist": ..., "inputs": [...]}, ...]}``: many at once;
- ``GET /healthz``: what is served; ``GET /metrics``: Prometheus (requests, latency histogram,
  predictions per specialist, batch sizes, mixed batches, champion switches); ``GET /docs``: OpenAPI.

Every answer is logged to the specialist's traffic log (what drift monitoring reads), off the
request's path. FastAPI because it gives the typed request models, validation and the OpenAPI page
with little code, and runs on uvicorn; the model work happens in one thread per loaded base.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, Field

from fleet.core.results import Outputs
from fleet.core.storage import ObjectStore
from fleet.ops import traffic
from fleet.ops.serving.batcher import Batcher
from fleet.ops.serving.hub import Hub

log = logging.getLogger("fleet.ops.serving")


class PredictRequest(BaseModel):
    inputs: list[str] = Field(min_length=1, max_length=256, description="Texts (prompts) to answer.")


class SpecialistRequest(PredictRequest):
    specialist: str


class BatchRequest(BaseModel):
    requests: list[SpecialistRequest] = Field(min_length=1, max_length=64)


class PredictResponse(BaseModel):
    specialist: str
    version: str
    answers: list[dict[str, Any]]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("fleet_requests", "Requests", ["specialist", "status"], registry=r)
        self.latency = Histogram(
            "fleet_request_seconds",
            "Request latency",
            ["specialist"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.predictions = Counter("fleet_predictions", "Answered inputs", ["specialist", "version"], registry=r)
        self.batch_rows = Histogram(
            "fleet_batch_rows", "Rows per model batch", registry=r, buckets=(1, 2, 4, 8, 16, 32, 64)
        )
        self.mixed = Counter("fleet_mixed_batches", "Batches with rows of more than one specialist", registry=r)

    def batch(self, rows: int, specialists: int) -> None:
        self.batch_rows.observe(rows)
        if specialists > 1:
            self.mixed.inc()


class Server:
    """The served hub with one batcher per loaded base, and the traffic logger."""

    def __init__(self, hub: Hub, store: ObjectStore | None, max_wait_ms: float = 10.0):
        self.hub, self.store, self.max_wait_s = hub, store, max_wait_ms / 1000
        self.metrics = Metrics()
        self.batchers: dict[int, Batcher] = {}
        self.logger = ThreadPoolExecutor(max_workers=1)

    def batcher(self, group: Any) -> Batcher:
        if id(group) not in self.batchers:
            b = Batcher(group, max_wait_s=self.max_wait_s, on_batch=self.metrics.batch)
            self.batchers[id(group)] = b
            asyncio.get_running_loop().create_task(b.run())
        return self.batchers[id(group)]

    def _log(self, name: str, texts: list[str], outputs: Outputs, version: str) -> None:
        if self.store is None:
            return
        try:
            traffic.log_predictions(self.store, name, self.hub.served[name].kind.traffic_rows(texts, outputs), version)
        except Exception as exc:  # the answer was given; a lost log line must not fail it
            log.warning("%s: traffic log write failed: %s", name, exc)

    async def answer(self, name: str, texts: list[str]) -> PredictResponse:
        served = self.hub.served.get(name)
        if served is None:
            self.metrics.requests.labels(name, "unknown").inc()
            raise HTTPException(
                404, f"no specialist {name!r} is served (served: {', '.join(self.hub.served) or 'none'})"
            )
        start = time.perf_counter()
        results = await self.batcher(served.group).submit(name, texts)
        outputs, version = Outputs.concat([o for o, _ in results]), results[0][1]
        self.metrics.latency.labels(name).observe(time.perf_counter() - start)
        self.metrics.requests.labels(name, "ok").inc()
        self.metrics.predictions.labels(name, version).inc(len(texts))
        self.logger.submit(self._log, name, texts, outputs, version)
        answers = served.kind.to_frame(outputs).to_dict("records")
        return PredictResponse(specialist=name, version=version, answers=answers)


def create_app(hub: Hub, store: ObjectStore | None, reload_s: float = 5.0, max_wait_ms: float = 10.0) -> FastAPI:
    server = Server(hub, store, max_wait_ms)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        stop = threading.Event()
        watcher = threading.Thread(target=hub.watch, args=(reload_s, stop), daemon=True, name="champion-watch")
        watcher.start()
        yield
        stop.set()

    app = FastAPI(
        title="Specialist Fleet",
        summary="Every specialist's champion, several per loaded base model.",
        lifespan=lifespan,
    )

    @app.post("/v1/specialists/{name}/predict", response_model=PredictResponse)
    async def predict(name: str, request: PredictRequest) -> PredictResponse:
        return await server.answer(name, request.inputs)

    @app.post("/v1/predict", response_model=list[PredictResponse])
    async def predict_many(batch: BatchRequest) -> list[PredictResponse]:
        return list(await asyncio.gather(*(server.answer(r.specialist, r.inputs) for r in batch.requests)))

    @app.get("/healthz")
    async def healthz() -> dict:
        served = {n: {"version": s.version, "task": s.kind.task, "int8": s.int8} for n, s in hub.served.items()}
        return {"status": "ok", "specialists": served, "bases": len(hub.groups), "switches": hub.reloads}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
