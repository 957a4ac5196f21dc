"""The HTTP face of the served fleet (FastAPI on uvicorn).

- ``POST /v1/specialists/{name}/predict`` ``{"inputs": [...]}``: the champion's answers (a classifier:
  label and score; a generative specialist: output, and json for JSON answers), and the version;
- ``POST /v1/predict`` ``{"requests": [{"specialist": ..., "inputs": [...]}, ...]}``: many at once;
- ``GET /livez``: liveness (the process answers; a long batch is no reason to restart it); ``GET /readyz``:
  readiness (503 while nothing is served or a base made no progress for ``stall_s`` while work waits);
  ``GET /healthz``: the same verdict as readiness, and what is served to a caller with a token;
  ``GET /metrics``: Prometheus (requests, latency histogram, predictions per specialist, batch sizes, mixed
  batches, dropped log rows, answers by who gave them, escalations, fallback errors and cost); ``GET /docs``:
  OpenAPI.

The cascade: a specialist whose fleet-file settings name a ``serving.fallback`` and whose version carries a
threshold sends its unsure answers to the fallback (``fleet.ops.escalation``; every answer says
``answered_by``), or all of them while an SLA breach says escalate-all (``fleet.ops.sla``).

Who may ask: with tokens set (``FLEET_SERVE_TOKEN``, or named ones in ``FLEET_SERVE_TOKENS``), every request
but the three health paths carries ``Authorization: Bearer <token>``, checked on the headers before the body
is read (401 otherwise; compared in constant time; :class:`Gate`). A specialist of the fleet without a
champion (its alias removed: a kill switch) answers 503 saying so. What one request may cost: body bytes
(declared or chunked), rows and characters per text are bounded (413 with a JSON error naming the limit), a
base's queue is bounded (503 with ``Retry-After``), and an answer that takes longer than ``timeout_s`` is a
504 (:class:`ServeLimits`). Every answer is logged to the specialist's traffic log (what drift monitoring and
the flywheel's pool read) with the name of the token that asked, in batches, off the request's path
(:class:`TrafficBuffer`). FastAPI because it gives the typed request models, validation and the OpenAPI
page with little code, and runs on uvicorn; the model work happens in one thread per loaded base.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, fields
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, Field

from fleet.core.results import Outputs
from fleet.core.settings import Settings
from fleet.core.spec import SpecialistSpec
from fleet.core.storage import ObjectStore
from fleet.ops import escalation, sla
from fleet.ops.escalation import Fallback
from fleet.ops.serving.batcher import Batcher, Busy
from fleet.ops.serving.hub import Hub
from fleet.ops.serving.traffic_buffer import TrafficBuffer

log = logging.getLogger("fleet.ops.serving")


def _default(name: str) -> Any:
    return Settings.model_fields[f"serve_{name}"].default


@dataclass(frozen=True)
class ServeLimits:
    """What one request may cost: the settings ``FLEET_SERVE_*`` (``serve_*`` in :class:`Settings`, where
    their defaults and meanings are; the README's Security section lists them)."""

    max_rows: int = _default("max_rows")  # texts per request (all requests of a /v1/predict together)
    max_chars: int = _default("max_chars")  # characters per text
    max_body_bytes: int = _default("max_body_bytes")
    max_queued_rows: int = _default("max_queued_rows")  # rows waiting per loaded base
    timeout_s: float = _default("timeout_s")  # a request's answer time
    stall_s: float = _default("stall_s")  # /healthz fails when a base made no progress for this long

    @classmethod
    def of(cls, settings: Settings) -> ServeLimits:
        return cls(**{f.name: getattr(settings, f"serve_{f.name}") for f in fields(cls)})


class LimitError(HTTPException):
    """A request over one of the limits: 413 with the limit's name and value."""

    def __init__(self, limit: str, value: int, detail: str):
        super().__init__(413, {"error": detail, "limit": limit, "max": value})


class PredictRequest(BaseModel):
    inputs: list[str] = Field(min_length=1, description="Texts (prompts) to answer.")


class SpecialistRequest(PredictRequest):
    specialist: str = Field(max_length=200)


class BatchRequest(BaseModel):
    requests: list[SpecialistRequest] = Field(min_length=1, max_length=64)


class PredictResponse(BaseModel):
    specialist: str
    version: str
    answers: list[dict[str, Any]]


UNKNOWN = "(unknown)"  # the one metrics label of every name that is not served


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
        self.log_dropped = Gauge("fleet_traffic_rows_dropped", "Answered rows not logged (buffer full)", registry=r)
        self.log_buffered = Gauge("fleet_traffic_rows_buffered", "Answered rows waiting to be logged", registry=r)
        self.answered = Counter(
            "fleet_answers", "Answered inputs by who answered", ["specialist", "answered_by"], registry=r
        )
        self.escalations = Counter("fleet_escalations", "Inputs sent to the fallback", ["specialist"], registry=r)
        self.fallback_errors = Counter(
            "fleet_fallback_errors", "Escalated inputs the fallback did not answer usably", ["specialist"], registry=r
        )
        self.fallback_cost = Counter(
            "fleet_fallback_cost", "What the fallback billed (its prices)", ["specialist"], registry=r
        )

    def batch(self, rows: int, specialists: int) -> None:
        self.batch_rows.observe(rows)
        if specialists > 1:
            self.mixed.inc()


class Server:
    """The served hub with one batcher per loaded base, and the traffic log's buffer."""

    def __init__(
        self,
        hub: Hub,
        store: ObjectStore | None,
        limits: ServeLimits,
        max_wait_ms: float = 10.0,
        traffic_key: bytes | None = None,
        specs: dict[str, SpecialistSpec] | None = None,
    ):
        self.hub, self.limits, self.max_wait_s = hub, limits, max_wait_ms / 1000
        self.metrics = Metrics()
        self.batchers: dict[int, Batcher] = {}
        self.traffic = TrafficBuffer(store, key=traffic_key) if store is not None else None
        self.specs = specs or {}
        self.fallbacks: dict[str, Fallback] = {}
        self.in_flight: dict[str, asyncio.Semaphore] = {}
        self.escalate_all: set[str] = set()  # specialists an SLA breach sends wholly to the fallback

    def batcher(self, group: Any) -> Batcher:
        if id(group) not in self.batchers:
            b = Batcher(
                group,
                max_wait_s=self.max_wait_s,
                max_queued_rows=self.limits.max_queued_rows,
                on_batch=self.metrics.batch,
            )
            self.batchers[id(group)] = b
            asyncio.get_running_loop().create_task(b.run())
        return self.batchers[id(group)]

    def check(self, texts: list[str]) -> None:
        """413 for a request over the rows or characters limits."""
        lim = self.limits
        if len(texts) > lim.max_rows:
            raise LimitError("max_rows", lim.max_rows, f"{len(texts)} texts in one request; at most {lim.max_rows}")
        longest = max((len(t) for t in texts), default=0)
        if longest > lim.max_chars:
            raise LimitError("max_chars", lim.max_chars, f"a text of {longest} characters; at most {lim.max_chars}")

    async def answer(self, name: str, texts: list[str], client: str = "anonymous") -> PredictResponse:
        served = self.hub.served.get(name)
        if served is None and name in self.hub.withdrawn:
            self.metrics.requests.labels(name, "withdrawn").inc()
            raise HTTPException(503, f"{name} is not answering: {self.hub.withdrawn[name]}")
        if served is None:
            self.metrics.requests.labels(UNKNOWN, "unknown").inc()
            raise HTTPException(404, "no such specialist is served")
        start = time.perf_counter()
        try:
            results = await asyncio.wait_for(self.batcher(served.group).submit(name, texts), self.limits.timeout_s)
        except Busy as exc:
            self.metrics.requests.labels(name, "busy").inc()
            self.refused(name)
            raise HTTPException(503, f"busy: {exc}", headers={"Retry-After": "1"}) from None
        except TimeoutError:
            self.metrics.requests.labels(name, "timeout").inc()
            self.refused(name)
            raise HTTPException(504, f"no answer within {self.limits.timeout_s:g} s") from None
        outputs, version = Outputs.concat([o for o, _ in results]), results[0][1]
        routed = await self.cascade(name, served, texts, outputs)
        elapsed = time.perf_counter() - start
        self.metrics.latency.labels(name).observe(elapsed)
        self.metrics.requests.labels(name, "ok").inc()
        self.metrics.predictions.labels(name, version).inc(len(texts))
        kind = served.kind
        if self.traffic is not None:
            extra = escalation.traffic_fields(routed, kind, texts)
            rows = kind.traffic_rows(texts, outputs)  # the specialist's own answers: what drift watches
            stamp = {"client": client, "latency_ms": round(elapsed * 1000, 2), "request": uuid.uuid4().hex[:16]}
            self.traffic.add(name, version, [r | stamp | e for r, e in zip(rows, extra)])
        marks = escalation.answer_fields(routed)
        answers = [a | m for a, m in zip(kind.to_frame(routed.outputs).to_dict("records"), marks)]
        return PredictResponse(specialist=name, version=version, answers=answers)

    async def cascade(self, name: str, served: Any, texts: list[str], outputs: Outputs) -> escalation.Routed:
        """The specialist's answers, with the fallback's where it was unsure (``fleet.ops.escalation``)."""
        spec = self.specs.get(name)
        rows = (
            []
            if spec is None
            else escalation.to_escalate(served.kind, spec, outputs, served.threshold, name in self.escalate_all)
        )
        asked = await self.ask_fallback(name, spec, [texts[i] for i in rows]) if rows and spec else None
        routed = escalation.merge(outputs, rows, asked)
        m = self.metrics
        for who in (escalation.SPECIALIST, escalation.FALLBACK):
            count = routed.answered_by.count(who)
            if count:
                m.answered.labels(name, who).inc(count)
        if rows:
            m.escalations.labels(name).inc(len(rows))
            m.fallback_errors.labels(name).inc(sum(e is not None for e in routed.errors))
            m.fallback_cost.labels(name).inc(routed.cost)
        return routed

    async def ask_fallback(self, name: str, spec: SpecialistSpec, texts: list[str]) -> escalation.Asked:
        """The fallback's answers, at most ``serving.max_concurrency`` calls in flight for this specialist and
        within ``serving.timeout_s`` (a call past it keeps its slot until it ends, so a slow fallback cannot
        pile up threads); a failure is an answer saying so."""
        s = spec.serving
        if name not in self.fallbacks:  # built once per specialist (its model loads on the first call, off the loop)
            self.fallbacks[name] = Fallback(spec)
            self.in_flight[name] = asyncio.Semaphore(s.max_concurrency)
        fb, gate = self.fallbacks[name], self.in_flight[name]
        failed = escalation.Asked(None, [False] * len(texts))
        try:
            await asyncio.wait_for(gate.acquire(), s.timeout_s)
        except TimeoutError:
            failed.error = f"fallback busy: {s.max_concurrency} calls in flight for {s.timeout_s:g} s"
            return failed
        future = asyncio.get_running_loop().run_in_executor(fb.pool, fb.ask, texts)
        future.add_done_callback(lambda _: gate.release())
        try:
            return await asyncio.wait_for(asyncio.shield(future), s.timeout_s)
        except TimeoutError:
            failed.error = f"no fallback answer within {s.timeout_s:g} s"
            return failed

    def refused(self, name: str) -> None:
        """Count a request answered with an error (what an SLA's error rate reads, written with the traffic)."""
        if self.traffic is not None:
            self.traffic.refused(name)

    def watch_sla(self, every_s: float, stop: threading.Event) -> None:
        """Every ``every_s`` s: which specialists an SLA breach sends wholly to the fallback (``fleet.ops.sla``)."""
        while not stop.wait(every_s):
            if self.traffic is None:
                continue
            for name, spec in self.specs.items():
                served = self.hub.served.get(name)
                if served is None or spec.sla.on_quality_breach != "escalate-all":
                    continue
                try:
                    on = sla.escalating(self.traffic.store, name, served.version)
                except Exception as exc:  # the store away: keep what was decided
                    log.warning("%s: SLA state unreadable (%s)", name, exc)
                    continue
                if on != (name in self.escalate_all):
                    log.warning("%s: all traffic to the fallback: %s", name, "on (SLA breach)" if on else "off")
                    (self.escalate_all.add if on else self.escalate_all.discard)(name)

    def stalled(self) -> list[str]:
        return [b.group.base_folder for b in self.batchers.values() if b.stalled(self.limits.stall_s)]


OPEN_PATHS = ("/healthz", "/livez", "/readyz")  # answered without a token (and with no body read)
CLIENT_KEY = "fleet.client"  # the ASGI scope's key for the name of the token a request carried


class Gate:
    """ASGI middleware in front of the app: who may ask, and how much they may send, before any work.

    The bearer token is checked on the headers alone, before a byte of the body is read or parsed, so an
    unauthenticated request costs nothing but its headers (``/docs``, ``/openapi.json`` and ``/redoc`` are
    behind it too). Then the body is read here, declared length or chunked, and refused with 413 as soon as
    it passes ``max_bytes``; only a whole, bounded body reaches FastAPI. The name of the token that matched
    (``tokens``: name -> secret; None: anyone) goes into the scope as ``fleet.client``."""

    def __init__(self, app: Any, tokens: dict[str, str] | None, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes
        self.tokens = None if tokens is None else {n: t.encode() for n, t in tokens.items()}

    def client(self, headers: dict[bytes, bytes]) -> str | None:
        """The name of the token the request carries (every token compared in constant time), or None."""
        if self.tokens is None:
            return "anonymous"
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        found = None
        for name, secret in self.tokens.items():
            if hmac.compare_digest(given.strip(), secret) and scheme.lower() == b"bearer":
                found = name
        return found

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        client = self.client(headers)
        if client is None and scope["path"] not in OPEN_PATHS:
            return await _refuse(
                send, 401, {"detail": "a bearer token is required"}, [(b"www-authenticate", b"Bearer")]
            )
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await self._too_large(send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self._too_large(send)
            more = message.get("more_body", False)
        body, given = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        await self.app({**scope, CLIENT_KEY: client}, replay, send)

    async def _too_large(self, send: Any) -> None:
        body = {"detail": {"error": "request body too large", "limit": "max_body_bytes", "max": self.max_bytes}}
        await _refuse(send, 413, body)


async def _refuse(send: Any, status: int, body: dict, headers: list | None = None) -> None:
    raw = json.dumps(body).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": raw})


def _health_routes(app: FastAPI, server: Server) -> None:
    hub = server.hub

    @app.get("/livez")
    async def livez() -> JSONResponse:
        """Liveness: the process answers (a long batch is no reason to restart it)."""
        return JSONResponse({"status": "alive"})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness: something is served and no base is stalled (else 503: send traffic elsewhere)."""
        stalled = server.stalled()
        ready = bool(hub.served) and not stalled
        return JSONResponse({"status": "ready" if ready else "not ready"}, status_code=200 if ready else 503)

    @app.get("/healthz")
    async def healthz(request: Request) -> JSONResponse:
        stalled = server.stalled()
        body: dict[str, Any] = {"status": "stalled" if stalled else "ok"}
        if request.scope.get(CLIENT_KEY) is not None:
            served = {n: {"version": s.version, "task": s.kind.task, "int8": s.int8} for n, s in hub.served.items()}
            body |= {"specialists": served, "bases": len(hub.groups), "switches": hub.reloads, "stalled": stalled}
            body["withdrawn"] = dict(hub.withdrawn)
        return JSONResponse(body, status_code=503 if stalled else 200)


def create_app(
    hub: Hub,
    store: ObjectStore | None,
    reload_s: float = 5.0,
    max_wait_ms: float = 10.0,
    limits: ServeLimits | None = None,
    token: str | dict[str, str] | None = None,
    traffic_key: bytes | None = None,
    specs: dict[str, SpecialistSpec] | None = None,
) -> Any:
    """The FastAPI app behind the :class:`Gate`. ``token``: one token, or named tokens (name -> token; the
    name is logged with each request's traffic rows as the client that sent them); None serves anyone who
    can connect."""
    server = Server(hub, store, limits or ServeLimits(), max_wait_ms, traffic_key, specs)
    tokens = {"default": token} if isinstance(token, str) else token

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        stop = threading.Event()
        watcher = threading.Thread(target=hub.watch, args=(reload_s, stop), daemon=True, name="champion-watch")
        watcher.start()
        threading.Thread(target=server.watch_sla, args=(reload_s, stop), daemon=True, name="sla-watch").start()
        yield
        stop.set()
        for fb in server.fallbacks.values():
            fb.close()
        if server.traffic is not None:
            server.traffic.close()

    app = FastAPI(
        title="Specialist Fleet",
        summary="Every specialist's champion, several per loaded base model.",
        lifespan=lifespan,
    )

    @app.post("/v1/specialists/{name}/predict", response_model=PredictResponse)
    async def predict(name: str, body: PredictRequest, request: Request) -> PredictResponse:
        server.check(body.inputs)
        return await server.answer(name, body.inputs, request.scope[CLIENT_KEY])

    @app.post("/v1/predict", response_model=list[PredictResponse])
    async def predict_many(batch: BatchRequest, request: Request) -> list[PredictResponse]:
        server.check([t for r in batch.requests for t in r.inputs])
        client = request.scope[CLIENT_KEY]
        return list(await asyncio.gather(*(server.answer(r.specialist, r.inputs, client) for r in batch.requests)))

    _health_routes(app, server)

    @app.get("/metrics")
    async def metrics() -> Response:
        if server.traffic is not None:
            server.metrics.log_dropped.set(server.traffic.dropped)
            server.metrics.log_buffered.set(server.traffic.buffered)
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Gate(app, tokens, server.limits.max_body_bytes)
