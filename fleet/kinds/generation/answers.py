"""Answers of a generative specialist: JSON parsing, schema checks, field comparison, and the curation
rules for expected responses."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from fleet.data.cleaning import TargetCheck, Verdict

_WS = re.compile(r"\s+")


def parse_json(text: str) -> dict | None:
    """The JSON object an answer holds: the whole answer (code fences allowed), or its outermost {...}."""
    text = text.strip()
    candidates = [_unfenced(text)]
    if "{" in text and "}" in text:
        candidates.append(text[text.index("{") : text.rindex("}") + 1])
    for candidate in candidates:
        try:
            obj = json.loads(candidate)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(obj, dict):
            return obj
    return None


def _unfenced(text: str) -> str:
    """The answer inside a Markdown code fence (```json ... ```), else the answer. String operations, not a
    regular expression: a lazy pattern between two runs of spaces backtracks in quadratic time on a long
    run of spaces (an answer of 20,000 spaces took minutes)."""
    if len(text) < 6 or not (text.startswith("```") and text.endswith("```")):
        return text
    inner = text[3:-3]
    return (inner[4:] if inner.startswith("json") else inner).strip()


@lru_cache(maxsize=16)
def _validator(schema_json: str) -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(json.loads(schema_json))


def schema_error(obj: Any, schema: dict | None) -> str | None:
    """The first way ``obj`` breaks ``schema`` ("path: message"), or None when it matches."""
    if schema is None:
        return None
    for err in sorted(_validator(json.dumps(schema, sort_keys=True)).iter_errors(obj), key=lambda e: list(e.path)):
        where = ".".join(str(p) for p in err.path) or "(top)"
        return f"{where}: {err.message}"
    return None


def valid(text: str, schema: dict | None) -> bool:
    obj = parse_json(text)
    return obj is not None and schema_error(obj, schema) is None


def _value(v: Any) -> str:
    """A field's value for comparison: numbers by value, text case- and space-insensitive."""
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, int | float):
        return f"{float(v):.6g}"
    if isinstance(v, str):
        return _WS.sub(" ", v).strip().casefold()
    return json.dumps(v, sort_keys=True, ensure_ascii=False)


def fields(obj: dict | None) -> dict[str, str]:
    """Top-level fields of an answer, values normalized for comparison (nested values compared whole)."""
    return {str(k): _value(v) for k, v in (obj or {}).items()}


def canonical(text: str, as_json: bool) -> str:
    """What exact match compares: the parsed object (keys sorted) for JSON answers, else the spaced-out text."""
    if as_json:
        obj = parse_json(text)
        return json.dumps({k: _value(v) for k, v in obj.items()}, sort_keys=True) if obj is not None else "\0invalid"
    return _WS.sub(" ", text).strip()


def response_check(output: str, schema: dict | None, count: Any, max_prompt: int, max_response: int) -> TargetCheck:
    """The curation rules for one (prompt, response) pair; ``count(text, response)`` gives their token counts."""

    def check(text: str, raw: str) -> Verdict:
        if not raw:
            return Verdict(raw, "empty-response")
        prompt_tokens, response_tokens = count(text, raw)
        if prompt_tokens > max_prompt:
            return Verdict(raw, "prompt-too-long", f"{prompt_tokens} tokens > {max_prompt}")
        if response_tokens > max_response:
            return Verdict(raw, "response-too-long", f"{response_tokens} tokens > {max_response}")
        if output != "json":
            return Verdict(raw)
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            return Verdict(raw, "invalid-json", exc.msg)
        if not isinstance(obj, dict):
            return Verdict(raw, "invalid-json", "not a JSON object")
        if (problem := schema_error(obj, schema)) is not None:
            return Verdict(raw, "schema-mismatch", problem)
        tidy = json.dumps(obj, ensure_ascii=False)
        return Verdict(tidy, changed="json-normalized" if tidy != raw else None)

    return check
