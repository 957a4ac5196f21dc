"""The serving app's guards, fast: the token, the limits, the bounded queue, timeouts, stall detection, the
metrics' labels and the traffic buffer. The model is a stand-in that answers instantly (or slowly, or
never), so these run in the fast tier; tests/test_serving.py checks the same against a real
``fleet serve-models`` with trained specialists."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fleet.core.results import Outputs
from fleet.core.storage import LocalStore
from fleet.kinds import kind_of
from fleet.ops import traffic
from fleet.ops.serving.app import ServeLimits, create_app
from fleet.ops.serving.hub import Hub, Served
from fleet.ops.serving.traffic_buffer import TrafficBuffer

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class StandIn:
    """A loaded base's stand-in: answers each row 'ham', after ``delay_s``; blocks while ``gate`` is clear."""

    base_folder = "stand-in-base"

    def __init__(self, delay_s: float = 0.0):
        self.delay_s, self.gate, self.rows_per_batch = delay_s, threading.Event(), []
        self.gate.set()

    def answer(self, rows: list[tuple[str, str]]) -> list[tuple[Outputs, str]]:
        self.gate.wait()
        time.sleep(self.delay_s)
        self.rows_per_batch.append(len(rows))
        return [(Outputs(predictions=["ham"], probabilities=[[0.9, 0.1]]), "3") for _ in rows]


class StillHub(Hub):
    """A hub with its champions already loaded: no registry behind it."""

    def refresh(self, retire_after_s: float = 2.0) -> list[str]:
        return []


def client(tmp_path: Path, group: StandIn, token: str | None = TOKEN, store=None, **limits) -> TestClient:
    hub = StillHub(tmp_path / "cache")
    hub.served["sms"] = Served("sms", "3", group, kind_of("text-classification"), False)  # type: ignore[arg-type]
    app = create_app(hub, store, reload_s=60, max_wait_ms=1, limits=ServeLimits(**limits), token=token)
    return TestClient(app)


def predict(c: TestClient, texts: list[str], name: str = "sms", headers: dict | None = AUTH):
    return c.post(f"/v1/specialists/{name}/predict", json={"inputs": texts}, headers=headers)


def test_the_token_is_required_everywhere_but_healthz(tmp_path):
    with client(tmp_path, StandIn()) as c:
        assert predict(c, ["hi"]).json()["answers"][0]["label"] == "ham"
        for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            r = predict(c, ["hi"], headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert c.get("/metrics").status_code == 401 and c.get("/metrics", headers=AUTH).status_code == 200
        assert c.post("/v1/predict", json={"requests": [{"specialist": "sms", "inputs": ["x"]}]}).status_code == 401
        open_health = c.get("/healthz")
        assert open_health.status_code == 200 and open_health.json() == {"status": "ok"}  # nothing about what runs
        assert "sms" in c.get("/healthz", headers=AUTH).json()["specialists"]


def test_without_a_token_anyone_on_loopback_is_served(tmp_path):
    with client(tmp_path, StandIn(), token=None) as c:
        assert predict(c, ["hi"], headers=None).status_code == 200


def test_requests_over_a_limit_get_413_naming_it(tmp_path):
    with client(tmp_path, StandIn(), max_rows=4, max_chars=50, max_body_bytes=2048) as c:
        r = predict(c, ["a"] * 5)
        assert r.status_code == 413 and r.json()["detail"]["limit"] == "max_rows" and r.json()["detail"]["max"] == 4
        r = predict(c, ["a" * 51])
        assert r.status_code == 413 and r.json()["detail"]["limit"] == "max_chars"
        r = c.post("/v1/specialists/sms/predict", content=b'{"inputs": ["' + b"a" * 4000 + b'"]}', headers=AUTH)
        assert r.status_code == 413 and r.json()["detail"]["limit"] == "max_body_bytes"
        many = {"requests": [{"specialist": "sms", "inputs": ["a", "b", "c"]}] * 2}
        assert c.post("/v1/predict", json=many, headers=AUTH).json()["detail"]["limit"] == "max_rows"
        assert predict(c, ["a"] * 4).status_code == 200  # at the limit: served


def test_bad_input_is_refused_without_crashing_the_server(tmp_path):
    with client(tmp_path, StandIn()) as c:
        for body in (b"{not json", b'{"inputs": "one text"}', b'{"inputs": []}', b'{"inputs": [1, 2]}', b"[]"):
            r = c.post("/v1/specialists/sms/predict", content=body, headers=AUTH)
            assert r.status_code == 422, (body, r.status_code)
        assert predict(c, ["still here"]).status_code == 200


def test_an_unknown_specialist_is_a_404_that_lists_nothing(tmp_path):
    with client(tmp_path, StandIn()) as c:
        r = predict(c, ["hi"], name="nope")
        assert r.status_code == 404 and "sms" not in r.text
        for i in range(3):
            predict(c, ["hi"], name=f"made-up-{i}")
        metrics = c.get("/metrics", headers=AUTH).text
        assert "made-up" not in metrics and 'specialist="(unknown)"' in metrics  # one label for every unknown name


def test_a_big_request_is_fed_to_the_base_one_batch_at_a_time(tmp_path):
    group = StandIn()
    with client(tmp_path, group) as c:
        assert len(predict(c, [f"t{i}" for i in range(100)]).json()["answers"]) == 100
    assert max(group.rows_per_batch) <= 32 and sum(group.rows_per_batch) == 100


def test_a_full_queue_answers_503_with_retry_after(tmp_path):
    group = StandIn()
    group.gate.clear()  # the base is busy: nothing is answered until the gate opens
    with client(tmp_path, group, max_queued_rows=10, timeout_s=30) as c:
        waiting = threading.Thread(target=predict, args=(c, ["a"] * 8))
        waiting.start()
        time.sleep(1.0)  # the 8 rows are admitted and wait for the base
        r = predict(c, ["b"] * 5)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        group.gate.set()
        waiting.join(10)
        assert predict(c, ["b"] * 5).status_code == 200


def test_a_slow_answer_is_a_504_and_a_stuck_base_fails_healthz(tmp_path):
    group = StandIn()
    group.gate.clear()
    with client(tmp_path, group, timeout_s=0.5, stall_s=0.3) as c:
        assert predict(c, ["a"]).status_code == 504
        hung = threading.Thread(target=predict, args=(c, ["b"]))
        hung.start()
        time.sleep(0.6)
        health = c.get("/healthz")
        assert health.status_code == 503 and health.json()["status"] == "stalled"
        group.gate.set()
        hung.join(10)
        deadline = time.monotonic() + 10  # the base finishes its batch, then healthz recovers
        while c.get("/healthz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.get("/healthz").status_code == 200


def test_traffic_is_logged_in_batches(tmp_path):
    store = LocalStore(tmp_path / "store")
    with client(tmp_path, StandIn(), store=store) as c:
        for i in range(5):
            assert predict(c, [f"text {i}", f"other {i}"]).status_code == 200
    # the app's shutdown flushed the buffer: 10 rows, in one part file, not one per request
    assert len(traffic.read_all(store, "traffic", "sms")) == 10
    assert len(store.list("traffic/sms")) == 1


class AwayStore(LocalStore):
    attempts = 0

    def put_bytes(self, key: str, data: bytes) -> None:
        AwayStore.attempts += 1
        raise OSError("store unreachable")


def test_an_unreachable_store_drops_and_counts_rows_with_bounded_memory(tmp_path):
    AwayStore.attempts, started = 0, time.monotonic()
    buf = TrafficBuffer(AwayStore(tmp_path / "s"), flush_rows=50, flush_s=0.1, max_rows=200)
    try:
        accepted = sum(buf.add("sms", "1", [{"text": f"t{i}", "label": "ham"}]) for i in range(10_000))
        time.sleep(0.2)
        assert buf.buffered <= 200 and accepted <= 10_000 - buf.dropped + 200
        assert buf.dropped >= 10_000 - 400 and buf.written == 0
        # a full buffer puts its rows back after a failed write: that must not retry at once, again and again
        assert AwayStore.attempts <= 2 + (time.monotonic() - started) / buf.flush_s, AwayStore.attempts
    finally:
        buf.close(1)


@pytest.mark.parametrize("host,ok", [("127.0.0.1", True), ("localhost", True), ("::1", True), ("0.0.0.0", False)])
def test_only_loopback_is_served_without_a_token(host, ok):
    from fleet.core.sections import is_loopback as _loopback

    assert _loopback(host) is ok


def test_the_limits_come_from_the_settings(monkeypatch, tmp_path):
    from fleet.core.settings import Settings

    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLEET_SERVE_MAX_ROWS", "7")
    monkeypatch.setenv("FLEET_SERVE_TIMEOUT_S", "2.5")
    limits = ServeLimits.of(Settings.load())
    assert (limits.max_rows, limits.timeout_s, limits.max_chars) == (7, 2.5, ServeLimits().max_chars)
    assert ServeLimits() == ServeLimits(256, 20_000, 4 * 2**20, 1024, 60.0, 60.0)  # the documented defaults


def test_the_token_is_checked_before_the_body_is_read_and_docs_are_behind_it(tmp_path):
    """Unauthenticated requests cost their headers only: the body is never read, so a 4 MiB body of a million
    empty strings is refused at once (it used to be parsed and validated first); the OpenAPI pages too."""
    seen = []

    with client(tmp_path, StandIn()) as c:
        app = c.app
        inner = app.app  # the FastAPI app behind the gate

        async def spy(scope, receive, send):
            seen.append(scope["path"])
            await inner(scope, receive, send)

        app.app = spy
        big = b'{"inputs": [' + b'"",' * 1_000_000 + b'""]}'
        r = c.post("/v1/specialists/sms/predict", content=big[: 4 * 2**20 - 1024] + b'""]}')
        assert r.status_code == 401 and seen == []  # refused before FastAPI saw (or parsed) anything
        for path in ("/docs", "/openapi.json", "/redoc"):
            assert c.get(path).status_code == 401
        assert c.get("/openapi.json", headers=AUTH).status_code == 200


def test_a_chunked_body_over_the_limit_is_413(tmp_path):
    def chunks():
        yield b'{"inputs": ["'
        for _ in range(10):
            yield b"a" * 1000
        yield b'"]}'

    with client(tmp_path, StandIn(), max_body_bytes=2048) as c:
        r = c.post("/v1/specialists/sms/predict", content=chunks(), headers=AUTH)  # no content-length: chunked
        assert r.status_code == 413 and r.json()["detail"]["limit"] == "max_body_bytes"
        assert predict(c, ["still served"]).status_code == 200


def test_named_tokens_say_which_client_sent_each_logged_row(tmp_path):
    store = LocalStore(tmp_path / "store")
    hub = StillHub(tmp_path / "cache")
    hub.served["sms"] = Served("sms", "3", StandIn(), kind_of("text-classification"), False)  # type: ignore[arg-type]
    tokens = {"alice": "a" * 20, "mallory": "m" * 20}
    with TestClient(create_app(hub, store, reload_s=60, max_wait_ms=1, token=tokens)) as c:
        for who, secret in tokens.items():
            ok = predict(c, [f"hello from {who}"], headers={"Authorization": f"Bearer {secret}"})
            assert ok.status_code == 200
    rows = traffic.read_all(store, "traffic", "sms")
    assert dict(zip(rows["text"], rows["client"])) == {"hello from alice": "alice", "hello from mallory": "mallory"}


def test_a_specialist_without_a_champion_answers_503_saying_why(tmp_path, monkeypatch):
    """The kill switch: the champion alias removed in the registry, the next refresh stops serving it."""
    from fleet.ops.serving import hub as hub_module

    class Group(StandIn):
        def unroute(self, name: str) -> None:
            self.unrouted = name

        def sweep(self, older_than_s: float) -> None:
            pass

    hub = Hub(tmp_path / "cache2", names=["sms"])
    group = Group()
    hub.served["sms"] = Served("sms", "3", group, kind_of("text-classification"), False)  # type: ignore[arg-type]
    hub.groups[("t", "b", False)] = group  # type: ignore[assignment]
    monkeypatch.setattr(hub_module.registry, "champion_numbers", lambda: {})  # the alias is gone
    hub.refresh()
    assert "sms" not in hub.served and group.unrouted == "sms"
    monkeypatch.setattr(Hub, "watch", lambda self, every_s, stop: None)
    with TestClient(create_app(hub, None, reload_s=60, max_wait_ms=1, token=TOKEN)) as c:
        r = predict(c, ["hi"])
        assert r.status_code == 503 and "champion alias was removed" in r.json()["detail"]
        assert predict(c, ["hi"], name="other").status_code == 404


def test_liveness_stays_up_while_readiness_reports_a_stall(tmp_path):
    group = StandIn()
    group.gate.clear()
    with client(tmp_path, group, stall_s=0.3, timeout_s=5) as c:
        waiting = threading.Thread(target=predict, args=(c, ["a"]))
        waiting.start()
        time.sleep(0.8)
        assert c.get("/livez").status_code == 200
        assert c.get("/readyz").status_code == 503
        group.gate.set()
        waiting.join()
        assert c.get("/readyz").status_code == 200
