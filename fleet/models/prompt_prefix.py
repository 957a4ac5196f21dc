"""The start every prompt of a call shares (chat template, system prompt, few-shot examples): both inference
engines compute it once and reuse its attention cache for every prompt."""

from __future__ import annotations

PREFIX_MIN = 16  # tokens every prompt must share before their common start is computed once


def common_prefix(ids: list[list[int]]) -> list[int]:
    """The tokens every prompt starts with (system prompt, few-shot examples), leaving each prompt at least
    one token of its own; empty when shorter than ``PREFIX_MIN`` or for a single prompt."""
    if len(ids) < 2:
        return []
    first, most, n = ids[0], min(len(x) for x in ids) - 1, 0
    while n < most and all(x[n] == first[n] for x in ids):
        n += 1
    return first[:n] if n >= PREFIX_MIN else []
