"""A client for any OpenAI-compatible ``/chat/completions`` endpoint (a hosted model, vLLM, llama.cpp...).

It goes through the ``openai`` client (retries with backoff, timeouts), asks up to ``max_concurrency``
questions at once, and counts the tokens the endpoint reports, so a baseline's or a fallback's cost is what
the API would bill at the configured prices. Errors name the endpoint and the cause.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from fleet.core.sections import BaselineSpec

T = TypeVar("T")


class BaselineError(RuntimeError):
    """A baseline could not be built or queried; the message names it and the cause."""


class ChatClient:
    def __init__(self, spec: BaselineSpec, name: str):
        from openai import OpenAI

        self.spec, self.name = spec, name
        self.tokens_in = self.tokens_out = 0
        self._lock = threading.Lock()
        self.client = OpenAI(
            base_url=(spec.url or "").rstrip("/"),
            api_key=os.environ.get(spec.api_key_env) or "unset",  # the client wants one; "unset" sends no secret
            max_retries=spec.max_retries,
            timeout=spec.timeout_s,
        )

    def complete(self, messages: list[dict], max_tokens: int | None = None) -> str:
        """The assistant's answer to ``messages`` (temperature 0); a ``BaselineError`` after the retries."""
        return self.complete_counted(messages, max_tokens)[0]

    def complete_counted(self, messages: list[dict], max_tokens: int | None = None) -> tuple[str, int]:
        """:meth:`complete`'s answer and the tokens the endpoint says it generated."""
        import openai

        try:
            resp = self.client.chat.completions.create(
                model=self.spec.model or "",
                messages=messages,  # type: ignore[arg-type]
                temperature=0,
                max_tokens=openai.omit if max_tokens is None else max_tokens,  # omitted: the endpoint's own limit
            )
        except openai.APIStatusError as exc:
            raise BaselineError(f"baseline {self.name}: {self.spec.url} answered HTTP {exc.status_code}") from None
        except openai.APITimeoutError:
            raise BaselineError(
                f"baseline {self.name}: {self.spec.url} gave no answer in {self.spec.timeout_s:g} s"
            ) from None
        except openai.APIConnectionError as exc:
            raise BaselineError(
                f"baseline {self.name}: cannot reach {self.spec.url} ({exc.__cause__ or exc})"
            ) from None
        except (openai.OpenAIError, ValueError):  # ValueError: a body that is not JSON
            raise BaselineError(f"baseline {self.name}: {self.spec.url} did not answer JSON") from None
        if isinstance(resp, str | bytes):  # the client hands back a body it could not read as JSON
            raise BaselineError(f"baseline {self.name}: {self.spec.url} did not answer JSON")
        if not isinstance(getattr(resp, "choices", None), list) or not resp.choices:
            raise BaselineError(f"baseline {self.name}: unexpected answer shape from {self.spec.url}")
        usage = resp.usage
        out_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        with self._lock:
            self.tokens_in += int(getattr(usage, "prompt_tokens", 0) or 0)
            self.tokens_out += out_tokens
        message = getattr(resp.choices[0], "message", None)
        content = getattr(message, "content", None)
        if not isinstance(content, str):
            raise BaselineError(f"baseline {self.name}: unexpected answer shape from {self.spec.url}")
        return content, out_tokens

    def map(self, ask: Callable[[str], T], items: Sequence[str]) -> list[T]:
        """``ask`` of every item, ``spec.max_concurrency`` at once, in the items' order."""
        if len(items) <= 1 or self.spec.max_concurrency == 1:
            return [ask(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(self.spec.max_concurrency, len(items))) as pool:
            return list(pool.map(ask, items))

    def spend(self) -> float:
        """What the calls so far cost at the configured prices."""
        return (
            self.tokens_in * self.spec.price_per_1k_input_tokens
            + self.tokens_out * self.spec.price_per_1k_output_tokens
        ) / 1000

    def cost_per_1k(self, n: int) -> float:
        """What the calls so far cost, per 1,000 of ``n`` predictions."""
        return 0.0 if n == 0 else self.spend() / n * 1000
