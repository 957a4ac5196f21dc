"""A simulated general model: an OpenAI-compatible ``/chat/completions`` server on loopback that knows the
expected answers.

No strong general model runs on these machines, so tests and ``benchmarks/portfolio.py`` stand this one up.
It answers the expected answer of a text it was given (``gold``: text -> answer) with a set accuracy, decided
per text from a seeded hash (the same text always gets the same answer), and otherwise a wrong one (another
label of the set, or for JSON answers the expected object with its first field blanked); a text it was not
given gets ``unknown``. The label set of a classification prompt is read from the prompt (``labels`` otherwise). It reports token usage (about four characters per token) so the caller bills it at a
frontier model's prices. It is **a simulated model**: its figures are named so wherever they appear.

Failure modes for the cascade's tests: ``mode`` = ``ok``, ``slow`` (sleeps ``delay_s``), ``rate-limited``
(HTTP 429), ``garbage`` (a body that is not JSON), ``off-label`` (an answer outside any label set).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cli.health import free_port

_WS = re.compile(r"\s+")


def norm(text: str) -> str:
    return _WS.sub(" ", str(text)).strip()


class SimulatedLLM:
    def __init__(
        self,
        gold: dict[str, str],
        accuracy: float = 0.97,
        labels: list[str] | None = None,
        seed: int = 0,
        token: str | None = None,
        port: int | None = None,
        key=None,
    ):
        self.key = key or norm  # how a text is looked up (e.g. the fleet's own cleaning)
        self.gold = {self.key(k): v for k, v in gold.items()}
        self.accuracy, self.labels, self.seed, self.token = accuracy, labels or [], seed, token
        self.mode, self.delay_s = "ok", 5.0
        self.calls = 0
        self.port = port or free_port()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> SimulatedLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def learn(self, gold: dict[str, str]) -> None:
        """Know more expected answers (e.g. a curated split's, once it exists)."""
        self.gold.update({self.key(k): v for k, v in gold.items()})

    def right(self, text: str) -> bool:
        h = hashlib.sha256(f"{self.seed}\0{text}".encode()).digest()
        return int.from_bytes(h[:8], "big") / 2**64 < self.accuracy

    def answer(self, content: str) -> str:
        """The answer to a user message: a classification prompt holds the text as a JSON string after
        ``Text:``; any other message is the text itself (a generative specialist's prompt)."""
        m = re.search(r"Text: (\".*\")\s*\n", content, flags=re.S)
        text = self.key(json.loads(m.group(1)) if m else content)
        expected = self.gold.get(text)
        if expected is None:
            return "unknown"
        if self.right(text):
            return expected
        asked = re.search(r"one of these labels: ([^\n]*?)\.\n", content)  # the fleet's classification prompt
        labels = asked.group(1).split(", ") if asked else self.labels
        if labels:
            others = [lab for lab in labels if lab != expected] or labels
            return others[int(hashlib.sha256(text.encode()).hexdigest(), 16) % len(others)]
        try:
            obj = json.loads(expected)
            first = next(iter(obj))
            return json.dumps(obj | {first: ""})
        except (ValueError, StopIteration, TypeError):
            return expected[::-1]

    def _handler(self):
        sim = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if sim.token and self.headers.get("Authorization") != f"Bearer {sim.token}":
                    return self._send(401, b'{"error": "unauthorized"}')
                with sim._lock:
                    sim.calls += 1
                mode = sim.mode
                if mode == "slow":
                    time.sleep(sim.delay_s)
                if mode == "rate-limited":
                    return self._send(429, b'{"error": {"message": "rate limited"}}')
                if mode == "garbage":
                    return self._send(200, b"<html>not json</html>", "text/html")
                body = json.loads(raw)
                content = str(body["messages"][-1]["content"])
                text = "certainly-not-a-label" if mode == "off-label" else sim.answer(content)
                reply = {
                    "id": "sim",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", "simulated"),
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    ],
                    "usage": {
                        "prompt_tokens": max(1, len(content) // 4),
                        "completion_tokens": max(1, len(text) // 4),
                        "total_tokens": max(1, len(content) // 4) + max(1, len(text) // 4),
                    },
                }
                return self._send(200, json.dumps(reply).encode())

        return Handler
