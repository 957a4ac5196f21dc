"""Teacher labels: a general model answers the pooled rows, each answer with a confidence and its cost.

``labeling.teacher`` names the model, as a baseline is named (``fleet.core.sections.BaselineSpec``):

- ``openai-chat``: any OpenAI-compatible endpoint (a hosted model, vLLM, a llama.cpp server) through the
  ``openai`` client, with its retries and a rate limit. The confidence is the probability of the answer's
  tokens when the endpoint gives log-probabilities, else the agreement of ``labeling.samples`` sampled
  answers with their majority.
- the specialist's local baseline kinds (e.g. ``embedding-zero-shot``, ``base-model``): the baseline answers
  the rows, and its top probability is the confidence where it gives one.

An answer outside the label set, an unreachable or failing endpoint (after its retries): the row stays
unlabelled, is counted and recorded as a failure (asked again after a doubling wait, given up after
``labeling.max_attempts``: ``fleet.labeling.trust``). Labels are stored batch by batch through the ledger, each
batch whole, with the row's source and, for a random ``labeling.audit_share``, a mark sending it to review.
The text goes into the prompt as a JSON string; only an exact label counts, and a confidence is clamped to
[0, 1].
"""

from __future__ import annotations

import math
import os
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import pandas as pd

from fleet.core.sections import BaselineSpec
from fleet.core.spec import SpecialistSpec
from fleet.core.storage import ObjectStore, put_json
from fleet.kinds import kind_of
from fleet.kinds.classification.baselines import classify_prompt, label_of
from fleet.labeling import ledger, trust


@dataclass
class Answer:
    label: str | None
    confidence: float | None = None
    problem: str | None = None  # unknown-label, failed: why


@dataclass
class TeacherRun:
    """What one labelling run did and cost."""

    teacher: str
    asked: int = 0
    labelled: int = 0
    unknown_label: int = 0
    failed: int = 0
    confident: int = 0  # labels at or above labeling.min_confidence
    audited: int = 0  # labels drawn for human review (labeling.audit_share)
    given_up: int = 0  # rows not asked again: failed labeling.max_attempts times
    stopped: str = ""  # why the run stopped before its rows were done (the daily budget)
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0  # what the endpoint bills at the configured prices
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)  # the first few, for the log

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def probability(value: float, log: bool = True) -> float | None:
    """A confidence in [0, 1] from what an endpoint reported (a log-probability when ``log``): an endpoint's
    numbers are not trusted to be one (a positive log-probability, NaN, infinity)."""
    if not math.isfinite(value):
        return None
    p = math.exp(min(value, 0.0)) if log else value
    return min(max(p, 0.0), 1.0)


class Teacher(Protocol):
    name: str
    tokens_in: int
    tokens_out: int

    def answer(self, texts: list[str]) -> list[Answer]: ...


def _prompt(spec: SpecialistSpec, tspec: BaselineSpec, text: str) -> list[dict]:
    labels = kind_of(spec).labels(spec)
    if labels:
        descriptions = "\n".join(f"- {lab}: {spec.labels[lab]}" for lab in labels)
        content = classify_prompt(tspec.prompt, labels, descriptions, text)
        return [{"role": "user", "content": content}]
    from fleet.kinds.generation.spec import generation_of

    system = generation_of(spec).system
    return [*([{"role": "system", "content": system}] if system else []), {"role": "user", "content": text}]


class ChatTeacher:
    """An OpenAI-compatible endpoint, through the ``openai`` client."""

    def __init__(self, spec: SpecialistSpec, tspec: BaselineSpec):
        from openai import OpenAI

        self.spec, self.tspec = spec, tspec
        self.name = tspec.name or f"openai-chat {tspec.model}"
        self.labels = kind_of(spec).labels(spec)
        lab = spec.labeling
        self.client = OpenAI(
            base_url=tspec.url,
            api_key=os.environ.get(tspec.api_key_env) or "unset",
            max_retries=lab.max_retries,
            timeout=tspec.timeout_s,
        )
        self.interval = 60.0 / lab.requests_per_minute
        self.samples, self.temperature = lab.samples, lab.temperature
        self.tokens_in = self.tokens_out = 0
        self._next = 0.0
        self._lock = threading.Lock()

    def _wait_turn(self) -> None:
        with self._lock:
            now = time.monotonic()
            delay, self._next = max(0.0, self._next - now), max(now, self._next) + self.interval
        if delay:
            time.sleep(delay)

    def _ask(self, messages: list[dict], temperature: float, logprobs: bool) -> tuple[str, float | None]:
        self._wait_turn()
        resp = self.client.chat.completions.create(
            model=self.tspec.model or "",
            messages=messages,  # type: ignore[arg-type]
            temperature=temperature,
            max_tokens=256,
            logprobs=logprobs or None,
        )
        if resp.usage is not None:
            self.tokens_in += int(resp.usage.prompt_tokens or 0)
            self.tokens_out += int(resp.usage.completion_tokens or 0)
        choice = resp.choices[0]
        content = choice.message.content or ""
        lp = getattr(choice, "logprobs", None)
        tokens = getattr(lp, "content", None) if lp is not None else None
        if tokens:
            return content, probability(sum(float(t.logprob) for t in tokens))
        return content, None

    def _parse(self, content: str) -> str | None:
        if self.labels:
            i = label_of(self.labels, content)
            return None if i is None else self.labels[i]
        return content.strip() or None

    def _one(self, text: str) -> Answer:
        messages = _prompt(self.spec, self.tspec, text)
        content, p = self._ask(messages, 0.0, logprobs=True)
        label = self._parse(content)
        if label is None:
            return Answer(None, problem=f"unknown-label: {content.strip()[:60]!r}")
        if p is not None or self.samples == 1:
            return Answer(label, p)
        votes = [label] + [
            self._parse(self._ask(messages, self.temperature, False)[0]) for _ in range(self.samples - 1)
        ]
        return Answer(label, Counter(votes)[label] / len(votes))

    def answer(self, texts: list[str]) -> list[Answer]:
        import openai

        out = []
        for text in texts:
            try:
                out.append(self._one(text))
            except (openai.OpenAIError, ValueError) as exc:  # after the client's retries; ValueError: not JSON
                out.append(Answer(None, problem=f"failed: {self.tspec.url}: {type(exc).__name__}: {exc}"[:200]))
        return out

    def cost(self) -> float:
        return (
            self.tokens_in * self.tspec.price_per_1k_input_tokens
            + self.tokens_out * self.tspec.price_per_1k_output_tokens
        ) / 1000


class BaselineTeacher:
    """One of the specialist's local general models (a baseline kind) as the teacher."""

    def __init__(self, spec: SpecialistSpec, tspec: BaselineSpec, train: pd.DataFrame):
        self.model = kind_of(spec).baselines(spec.model_copy(update={"evaluation": _only(spec, tspec)}), train)[0]
        self.name = self.model.name
        self.labels = kind_of(spec).labels(spec)
        self.tokens_in = self.tokens_out = 0

    def answer(self, texts: list[str]) -> list[Answer]:
        out = self.model.predict(texts)
        probs: list[list[float] | None] = list(out.probabilities) if out.probabilities else [None] * len(texts)
        answers = []
        for pred, p in zip(out.predictions, probs):
            if self.labels and pred not in self.labels:
                answers.append(Answer(None, problem=f"unknown-label: {pred!r}"))
            else:
                answers.append(Answer(pred, probability(max(p), log=False) if p else None))
        return answers

    def cost(self) -> float:
        return 0.0


def _only(spec: SpecialistSpec, tspec: BaselineSpec):
    return spec.evaluation.model_copy(update={"baselines": [tspec]})


def build(spec: SpecialistSpec, train: pd.DataFrame) -> ChatTeacher | BaselineTeacher:
    """The teacher ``labeling.teacher`` names (``train``: few-shot examples for local teachers)."""
    tspec = spec.labeling.teacher
    if tspec is None:
        raise ledger.LabelingError(
            f"{spec.name}: labeling.teacher is not set in the fleet file; name a general model to label the pool"
        )
    if tspec.kind == "openai-chat":
        return ChatTeacher(spec, tspec)
    return BaselineTeacher(spec, tspec, train)


def label(
    spec: SpecialistSpec,
    store: ObjectStore,
    teacher: ChatTeacher | BaselineTeacher,
    rows: pd.DataFrame,
    batch_size: int = 32,
    progress: bool = False,
    budget: float | None = None,
) -> TeacherRun:
    """Teacher-label ``rows`` (``id``, ``text``, ``origin``); each batch's labels, and the rows it failed, are
    stored whole. ``budget``: what this run may cost at most (checked after each batch; None: no limit).
    A random ``labeling.audit_share`` of the labels is marked for human review. Returns the run's account."""
    from tqdm.auto import tqdm

    run = TeacherRun(teacher=teacher.name)
    start = time.perf_counter()
    origins = rows["origin"] if "origin" in rows else pd.Series([""] * len(rows), index=rows.index)
    bar = tqdm(total=len(rows), desc=f"{spec.name}: teacher labels", unit="row", disable=not progress)
    for lo in range(0, len(rows), batch_size):
        if budget is not None and teacher.cost() >= budget:
            run.stopped = f"daily budget reached (labeling.max_cost_per_day {spec.labeling.max_cost_per_day:g})"
            break
        part = rows.iloc[lo : lo + batch_size]
        answers = teacher.answer(part["text"].tolist())
        events, failed = [], {}
        for rid, text, origin, a in zip(part["id"], part["text"], origins.iloc[lo : lo + batch_size], answers):
            run.asked += 1
            if a.label is None:
                run.unknown_label += (a.problem or "").startswith("unknown-label")
                run.failed += (a.problem or "").startswith("failed")
                failed[rid] = a.problem or "no label"
                if len(run.problems) < 5:
                    run.problems.append(a.problem or "")
                continue
            run.labelled += 1
            run.confident += a.confidence is not None and a.confidence >= spec.labeling.min_confidence
            audit = trust.draw_audit(spec.labeling.audit_share)
            run.audited += audit
            events.append(
                ledger.LabelEvent(
                    rid,
                    text,
                    a.label,
                    "teacher",
                    teacher.name,
                    confidence=a.confidence,
                    origin=str(origin),
                    audit=audit,
                )
            )
        ledger.record(store, spec.name, events)
        trust.record_failures(store, spec.name, failed)
        bar.update(len(part))
    bar.close()
    run.tokens_in, run.tokens_out = teacher.tokens_in, teacher.tokens_out
    run.cost, run.seconds = teacher.cost(), time.perf_counter() - start
    now = datetime.now(UTC)
    put_json(
        store, f"{trust.runs_prefix(spec.name)}/{now:%Y%m%d}/{now:%H%M%S}-{uuid.uuid4().hex[:8]}.json", run.as_dict()
    )
    return run
