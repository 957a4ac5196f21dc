"""Pluggable general baselines; the chat baseline against a small fake OpenAI-compatible server on loopback."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import numpy as np
import pytest

from fleet.core.spec import BaselineSpec
from fleet.kinds import parse_fleet
from fleet.kinds.classification.baselines import OpenAIChatBaseline, build_baseline
from fleet.models.openai_client import BaselineError


class _FakeChat(BaseHTTPRequestHandler):
    """Answers /v1/chat/completions: 'weather' when the prompt's text mentions rain, else 'Food.'"""

    seen: ClassVar[list[dict]] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _FakeChat.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if self.path != "/v1/chat/completions":
            self.send_response(404)
            self.end_headers()
            return
        text = body["messages"][0]["content"].split("Text: ", 1)[1]
        answer = "weather" if "rain" in text.lower() else "Food."
        data = {
            "choices": [{"message": {"role": "assistant", "content": answer}}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 2},
        }
        raw = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_chat():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeChat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FakeChat.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


LABELS = {"weather": "about the weather", "food": "about food"}


def test_openai_chat_baseline_labels_and_cost(fake_chat, monkeypatch):
    monkeypatch.setenv("FAKE_API_KEY", "sk-test")
    spec = BaselineSpec(
        kind="openai-chat",
        url=fake_chat,
        model="gpt-test",
        api_key_env="FAKE_API_KEY",
        price_per_1k_input_tokens=0.01,
        price_per_1k_output_tokens=0.03,
    )
    b = OpenAIChatBaseline(spec, LABELS)
    probs = b.predict_proba(["Rain in Oslo", "Pasta tonight"])
    assert probs.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert _FakeChat.seen[0]["auth"] == "Bearer sk-test" and _FakeChat.seen[0]["body"]["model"] == "gpt-test"
    prompt = _FakeChat.seen[0]["body"]["messages"][0]["content"]
    assert "weather, food" in prompt and "- food: about food" in prompt
    # 2 calls x (50 in x 0.01 + 2 out x 0.03) / 1000 = 0.00112 for 2 predictions -> 0.56 per 1,000
    assert b.billed_cost_per_1k(2) == pytest.approx(0.56)


def test_openai_chat_errors_name_the_endpoint(fake_chat):
    b = OpenAIChatBaseline(BaselineSpec(kind="openai-chat", url=fake_chat + "/wrong", model="m"), LABELS)
    with pytest.raises(BaselineError, match="answered HTTP 404"):
        b.predict_proba(["x"])
    b = OpenAIChatBaseline(
        BaselineSpec(kind="openai-chat", url="http://127.0.0.1:9/v1", model="m", timeout_s=2), LABELS
    )
    with pytest.raises(BaselineError, match=r"cannot reach http://127\.0\.0\.1:9/v1"):
        b.predict_proba(["x"])


def test_unparseable_answer_carries_no_information(fake_chat):
    b = OpenAIChatBaseline(BaselineSpec(kind="openai-chat", url=fake_chat, model="m"), {"x": "x", "y": "y"})
    assert b.predict_proba(["hello"]).tolist() == [[0.5, 0.5]]  # "Food." is neither label


def test_spec_requires_what_each_kind_needs():
    from fleet.core.spec import SpecError

    raw = {
        "specialists": {
            "s": {
                "data": {"source": "a.csv"},
                "labels": ["a", "b"],
                "evaluation": {"baselines": [{"kind": "openai-chat"}]},
            }
        }
    }
    with pytest.raises(SpecError, match=r"specialists.s.evaluation.baselines.0.url: openai-chat needs url and model"):
        parse_fleet(raw)


def test_embedding_baseline_scores_rows():
    spec = parse_fleet({"specialists": {"s": {"data": {"source": "a.csv"}, "labels": LABELS}}}).specialists["s"]
    b = build_baseline(BaselineSpec(kind="embedding-zero-shot"), spec.base_model, spec.labels, max_length=32)
    probs = b.predict_proba(["It is raining and windy today", "I cooked a big pot of pasta"])
    assert probs.shape == (2, 2) and np.allclose(probs.sum(axis=1), 1)
    assert probs.argmax(axis=1).tolist() == [0, 1]


def test_hf_zero_shot_baseline_runs_an_nli_model(tmp_path):
    """Mechanics of the pipeline baseline on a local NLI-shaped model (MiniLM with an untrained 3-way head)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from fleet.kinds.classification.baselines import HFZeroShotBaseline
    from fleet.models.base_models import resolve_base_model

    base = resolve_base_model("minilm-l6")
    model = AutoModelForSequenceClassification.from_pretrained(
        base,
        num_labels=3,
        id2label={0: "entailment", 1: "neutral", 2: "contradiction"},
        label2id={"entailment": 0, "neutral": 1, "contradiction": 2},
    )
    model.save_pretrained(tmp_path / "nli")
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp_path / "nli")
    b = HFZeroShotBaseline(BaselineSpec(kind="hf-zero-shot", model=str(tmp_path / "nli")), LABELS)
    probs = b.predict_proba(["Rain in Oslo", "Pasta tonight", "Snow again"])
    assert probs.shape == (3, 2) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    with pytest.raises(BaselineError, match="cannot load"):
        HFZeroShotBaseline(BaselineSpec(kind="hf-zero-shot", model=str(tmp_path / "missing")), LABELS)
