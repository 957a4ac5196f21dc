"""Answering through the cascade: the specialist first, its fallback for the requests it is unsure of.

A version registered with a cascade carries its threshold (the tag ``cascade.raw_threshold``, on the
specialist's raw confidence). :func:`to_escalate` picks the rows below it (all of them while an SLA breach
says ``escalate-all``); :class:`Fallback` asks the fallback model for them, at most
``serving.max_concurrency`` calls at once and within ``serving.timeout_s`` (the ``openai`` client retries
``serving.retries`` times); :func:`merge` serves the fallback's answer where it is usable (a label of the set,
parseable JSON) and the specialist's, marked with the failure, where it is not. Every answer says who gave it
(``answered_by``), and the traffic row keeps the specialist's own answer (what drift watches) next to the
fallback's (what the flywheel learns from).
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fleet.core.results import Outputs
from fleet.core.spec import SpecialistSpec
from fleet.kinds import kind_of
from fleet.kinds.base import Baseline, SpecialistKind

SPECIALIST, FALLBACK = "specialist", "fallback"


def threshold_of(tags: dict[str, str]) -> float | None:
    """A version's raw cascade threshold from its registry tags; None without one, or when the tag is not a
    finite number (a registry tag is not trusted: a bad one turns the cascade off, it cannot break serving)."""
    raw = tags.get("cascade.raw_threshold")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def to_escalate(
    kind: SpecialistKind, spec: SpecialistSpec, outputs: Outputs, threshold: float | None, all_: bool
) -> list[int]:
    """The rows whose answers go to the fallback."""
    n = len(outputs.predictions)
    if spec.serving.fallback is None:
        return []
    if all_:
        return list(range(n))
    if threshold is None:
        return []
    return [int(i) for i in np.flatnonzero(kind.confidence(spec, outputs) < threshold)]


def serving_fallback(spec: SpecialistSpec) -> Baseline:
    """The fallback built for serving: ``serving``'s timeout, retries and concurrency; zero-shot (few-shot
    examples would need the training split in the server)."""
    from fleet.stages.cascade import fallback_of

    fb = spec.serving.fallback
    assert fb is not None
    s = spec.serving
    tuned = fb.model_copy(
        update={"timeout_s": s.timeout_s, "max_retries": s.retries, "max_concurrency": s.max_concurrency, "shots": 0}
    )
    served = spec.model_copy(update={"serving": s.model_copy(update={"fallback": tuned})})
    return fallback_of(served, pd.DataFrame(columns=pd.Index(["text", kind_of(spec).target])))


@dataclass
class Asked:
    """What the fallback said for the escalated rows: its answers (None when the call failed) and which of
    them may be served; the failure's reason; what it cost."""

    outputs: Outputs | None
    usable: list[bool] = field(default_factory=list)
    error: str | None = None
    cost: float = 0.0


class Fallback:
    """One specialist's fallback model, called from threads (``serving.max_concurrency`` calls at once)."""

    def __init__(self, spec: SpecialistSpec):
        self.spec, self.kind = spec, kind_of(spec)
        self.pool = ThreadPoolExecutor(
            max_workers=spec.serving.max_concurrency, thread_name_prefix=f"fallback-{spec.name}"
        )
        self._model: Baseline | None = None
        self._lock = threading.Lock()
        self._spent = 0.0

    @property
    def model(self) -> Baseline:
        with self._lock:
            if self._model is None:
                self._model = serving_fallback(self.spec)
            return self._model

    def _cost_since_last(self) -> float:
        """The spend the client reported since the last call's reading (concurrent calls share it out; the sum
        is exact)."""
        client = getattr(self.model, "client", None)
        if client is None:
            return 0.0
        with self._lock:
            total = client.spend()
            delta, self._spent = total - self._spent, total
        return max(delta, 0.0)

    def ask(self, texts: list[str]) -> Asked:
        """The fallback's answers to ``texts`` (blocking); a failure of any kind is reported, never raised."""
        try:
            out = self.model.predict(texts)
        except Exception as exc:  # down, slow, rate-limited, not JSON...: the specialist's answer is served
            return Asked(None, [False] * len(texts), f"{type(exc).__name__}: {exc}"[:200], self._cost_since_last())
        ok = self.kind.usable(self.spec, out).tolist()
        error = None if all(ok) else "answer outside the expected set or shape"
        return Asked(out, ok, error, self._cost_since_last())

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class Routed:
    """The answers as served, and per row who gave them and the fallback's answer and failure."""

    outputs: Outputs
    answered_by: list[str]
    fallback: list[Outputs | None]
    errors: list[str | None]
    cost: float


def merge(outputs: Outputs, escalated: list[int], asked: Asked | None) -> Routed:
    """The specialist's ``outputs`` with the fallback's usable answers put in at the ``escalated`` rows."""
    n = len(outputs.predictions)
    by, fb, errors = [SPECIALIST] * n, [None] * n, [None] * n  # type: list[str], list[Outputs | None], list[str | None]
    parts = [outputs.rows([i]) for i in range(n)]
    for j, i in enumerate(escalated):
        if asked is None or asked.outputs is None:
            errors[i] = asked.error if asked is not None else "fallback unavailable"
            continue
        answer = asked.outputs.rows([j])
        if not asked.usable[j]:
            errors[i] = "fallback answer outside the expected set or shape"
            continue
        by[i], fb[i] = FALLBACK, answer
        parts[i] = _like(answer, outputs)
    return Routed(Outputs.concat(parts) if parts else outputs, by, fb, errors, asked.cost if asked else 0.0)


def _like(answer: Outputs, template: Outputs) -> Outputs:
    """The fallback's answer with the specialist's fields (a missing list filled, so the rows concatenate)."""
    return Outputs(
        predictions=answer.predictions,
        probabilities=answer.probabilities if template.probabilities is not None else None,
        tokens=(answer.tokens or [0]) if template.tokens is not None else None,
        confidence=(answer.confidence or [1.0]) if template.confidence is not None else None,
    )


def route(
    spec: SpecialistSpec | None, kind: SpecialistKind, texts: list[str], outputs: Outputs, threshold: float | None
) -> Routed:
    """The cascade in one blocking call (``fleet predict``): the unsure rows asked of the fallback, merged."""
    rows = [] if spec is None else to_escalate(kind, spec, outputs, threshold, False)
    if not rows or spec is None:
        return merge(outputs, [], None)
    fb = Fallback(spec)
    try:
        return merge(outputs, rows, fb.ask([texts[i] for i in rows]))
    finally:
        fb.close()


def answer_fields(routed: Routed) -> list[dict]:
    """Per row, what an answer adds to the kind's fields: who answered, and the failure when the fallback failed."""
    return [
        {"answered_by": by} | ({"fallback_error": e} if e else {}) for by, e in zip(routed.answered_by, routed.errors)
    ]


def traffic_fields(routed: Routed, kind: SpecialistKind, texts: list[str]) -> list[dict]:
    """Per row, what the traffic log keeps besides the specialist's answer: who answered, the fallback's answer
    (``fallback_answer``, in the kind's answer field) and cost, or its failure."""
    out = []
    per_row = routed.cost / max(sum(b == FALLBACK for b in routed.answered_by) or len(texts), 1)
    for text, by, fb, e in zip(texts, routed.answered_by, routed.fallback, routed.errors):
        row: dict = {"answered_by": by}
        if fb is not None:
            row["fallback_answer"] = kind.traffic_rows([text], fb)[0][kind.answer_column]
            row["fallback_cost"] = round(per_row, 8)
        if e:
            row["fallback_error"] = e
        out.append(row)
    return out
