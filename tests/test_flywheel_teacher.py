"""Teacher labels against real HTTP servers on loopback: a small OpenAI-compatible server whose behaviour each
test picks (answers with log-probabilities, without them, an unknown label, non-JSON, errors, slowness), and a
closed port. What a row gets, what is counted, what is retried, and that nothing partial is stored."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from cli.health import free_port
from conftest import write_toy_fleet
from fleet.core.sections import BaselineSpec, LabelingSpec
from fleet.core.storage import LocalStore
from fleet.kinds import load_fleet
from fleet.labeling import ledger, teacher
from fleet.labeling.ledger import row_id


class Endpoint:
    """An OpenAI-compatible /v1/chat/completions on 127.0.0.1 whose answers a test scripts."""

    def __init__(self):
        self.mode = "logprobs"
        self.requests: list[dict] = []
        self.votes = ["weather", "weather", "food"]
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append(body)
                endpoint.answer(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _send(self, handler, code: int, payload: bytes) -> None:
        handler.send_response(code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def answer(self, handler, body: dict) -> None:
        text = body["messages"][-1]["content"]
        if self.mode == "error":
            return self._send(handler, 500, b'{"error": {"message": "boom"}}')
        if self.mode == "not-json":
            return self._send(handler, 200, b"<html>gateway says hi</html>")
        if self.mode == "slow":
            time.sleep(1.5)
        content = "banana" if self.mode == "unknown" else ("food" if "soup" in text else "weather")
        choice: dict = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
        if self.mode == "votes":
            content = self.votes[(len(self.requests) - 1) % len(self.votes)]
            choice["message"]["content"] = content
        elif body.get("logprobs") and self.mode != "no-logprobs":
            choice["logprobs"] = {"content": [{"token": content, "logprob": -0.105, "bytes": None, "top_logprobs": []}]}
        usage = {"prompt_tokens": 20, "completion_tokens": 1, "total_tokens": 21}
        payload = {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [choice],
            "usage": usage,
        }
        return self._send(handler, 200, json.dumps(payload).encode())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    e = Endpoint()
    yield e
    e.close()


def _spec(tmp_path, url: str, **labeling):
    spec = load_fleet(write_toy_fleet(tmp_path / "fleet")).specialists["toy"]
    tspec = BaselineSpec(
        kind="openai-chat",
        url=url,
        model="m",
        timeout_s=labeling.pop("timeout_s", 5.0),
        price_per_1k_input_tokens=0.5,
        price_per_1k_output_tokens=1.5,
    )
    return spec.model_copy(update={"labeling": LabelingSpec(teacher=tspec, **labeling)})


ROWS = pd.DataFrame({"text": ["Rain over Oslo", "Hot soup in Lima", "Wind in Rome"]}).assign(
    id=lambda d: [row_id(t) for t in d["text"]]
)


def test_labels_come_with_their_probability_and_cost(tmp_path, endpoint):
    spec, store = _spec(tmp_path, endpoint.url, max_retries=0), LocalStore(tmp_path / "store")
    run = teacher.label(spec, store, teacher.build(spec, pd.DataFrame()), ROWS)
    assert (run.asked, run.labelled, run.failed, run.unknown_label) == (3, 3, 0, 0)
    assert run.tokens_in == 60 and run.tokens_out == 3 and run.cost == pytest.approx((60 * 0.5 + 3 * 1.5) / 1000)
    cur = ledger.current(ledger.events(store, "toy")).set_index("id")
    assert cur.loc[ROWS["id"][1], "teacher"] == "food" and cur.loc[ROWS["id"][0], "teacher"] == "weather"
    assert cur["teacher_confidence"].round(3).tolist() == [0.9] * 3  # exp(-0.105)
    assert all(r.get("logprobs") for r in endpoint.requests)
    assert store.list("labeling/toy/runs")  # the run's account is kept


def test_without_log_probabilities_the_confidence_is_the_agreement_of_samples(tmp_path, endpoint):
    endpoint.mode = "votes"
    spec, store = _spec(tmp_path, endpoint.url, samples=3, max_retries=0), LocalStore(tmp_path / "store")
    run = teacher.label(spec, store, teacher.build(spec, pd.DataFrame()), ROWS.head(1))
    assert run.labelled == 1 and len(endpoint.requests) == 3
    assert [r["temperature"] for r in endpoint.requests] == [0.0, 0.7, 0.7]
    assert ledger.events(store, "toy")["confidence"].round(3).tolist() == [0.667]


def test_an_unknown_label_leaves_the_row_unlabelled_and_counted(tmp_path, endpoint):
    endpoint.mode = "unknown"
    spec, store = _spec(tmp_path, endpoint.url, max_retries=0), LocalStore(tmp_path / "store")
    run = teacher.label(spec, store, teacher.build(spec, pd.DataFrame()), ROWS)
    assert (run.labelled, run.unknown_label, run.failed) == (0, 3, 0)
    assert "banana" in run.problems[0]
    assert ledger.events(store, "toy").empty


@pytest.mark.parametrize("mode", ["error", "not-json", "slow"])
def test_a_failing_endpoint_is_retried_then_the_rows_stay_unlabelled(tmp_path, endpoint, mode):
    endpoint.mode = mode
    spec = _spec(tmp_path, endpoint.url, max_retries=1, timeout_s=0.5)
    store = LocalStore(tmp_path / "store")
    run = teacher.label(spec, store, teacher.build(spec, pd.DataFrame()), ROWS.head(2))
    assert (run.labelled, run.failed) == (0, 2), run.problems
    assert run.problems[0].startswith(f"failed: {endpoint.url}")
    if mode != "not-json":  # a 200 answer is not retried by the client; errors and timeouts are
        assert len(endpoint.requests) == 4  # each row: the request and one retry
    assert ledger.events(store, "toy").empty


def test_an_endpoint_that_is_down_fails_each_row_clearly(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    spec, store = _spec(tmp_path, url, max_retries=0), LocalStore(tmp_path / "store")
    run = teacher.label(spec, store, teacher.build(spec, pd.DataFrame()), ROWS)
    assert run.failed == 3 and "APIConnectionError" in run.problems[0]


def test_the_rate_limit_spaces_requests(tmp_path, endpoint):
    spec, store = _spec(tmp_path, endpoint.url, requests_per_minute=600), LocalStore(tmp_path / "store")
    t0 = time.perf_counter()
    teacher.label(spec, store, teacher.build(spec, pd.DataFrame()), pd.concat([ROWS, ROWS]))
    assert time.perf_counter() - t0 >= 0.5  # 6 requests, at least 0.1 s apart


def test_no_teacher_named_is_a_clear_error(tmp_path):
    spec = load_fleet(write_toy_fleet(tmp_path / "fleet")).specialists["toy"]
    with pytest.raises(ledger.LabelingError, match=r"labeling\.teacher is not set"):
        teacher.build(spec, pd.DataFrame())


def test_a_teacher_kind_that_cannot_label_this_specialist_is_refused_in_the_fleet_file(tmp_path):
    from fleet.core.spec import SpecError

    path = write_toy_fleet(tmp_path / "fleet")
    path.write_text(path.read_text().replace("specialists:", "  labeling: {teacher: {kind: base-model}}\nspecialists:"))
    with pytest.raises(SpecError, match=r"labeling\.teacher: base-model cannot label"):
        load_fleet(path)
