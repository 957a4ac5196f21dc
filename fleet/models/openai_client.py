"""A client for any OpenAI-compatible ``/chat/completions`` endpoint (a hosted model, vLLM, llama.cpp...).

It counts the tokens the endpoint reports, so a baseline's cost is what the API would bill at the
configured prices. Errors name the endpoint and the cause.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass

from fleet.core.sections import BaselineSpec


class BaselineError(RuntimeError):
    """A baseline could not be built or queried; the message names it and the cause."""


@dataclass
class ChatClient:
    spec: BaselineSpec
    name: str
    tokens_in: int = 0
    tokens_out: int = 0

    @property
    def key(self) -> str:
        return os.environ.get(self.spec.api_key_env, "")

    def _post(self, body: dict) -> dict:
        url = (self.spec.url or "").rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {self.key}"} if self.key else {})}
        req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.spec.timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise BaselineError(f"baseline {self.name}: {self.spec.url} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise BaselineError(f"baseline {self.name}: cannot reach {self.spec.url} ({exc})") from None
        except json.JSONDecodeError:
            raise BaselineError(f"baseline {self.name}: {self.spec.url} did not answer JSON") from None

    def complete(self, messages: list[dict], max_tokens: int | None = None) -> str:
        """The assistant's answer to ``messages`` (temperature 0)."""
        body: dict = {"model": self.spec.model, "temperature": 0, "messages": messages}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        data = self._post(body)
        usage = data.get("usage") or {}
        self.tokens_in += int(usage.get("prompt_tokens", 0))
        self.tokens_out += int(usage.get("completion_tokens", 0))
        try:
            return str(data["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError):
            raise BaselineError(f"baseline {self.name}: unexpected answer shape from {self.spec.url}") from None

    def cost_per_1k(self, n: int) -> float:
        """What the calls so far cost, per 1,000 of ``n`` predictions."""
        if n == 0:
            return 0.0
        spend = (
            self.tokens_in * self.spec.price_per_1k_input_tokens
            + self.tokens_out * self.spec.price_per_1k_output_tokens
        ) / 1000
        return spend / n * 1000
