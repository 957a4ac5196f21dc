"""The monitor's work for one specialist, the traffic simulator used by the demo and tests, and the
retrain guardrail (cooldown)."""

from __future__ import annotations

import json
import random
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
from pydantic import BaseModel, Field

from fleet.core.spec import SpecialistSpec
from fleet.core.storage import ObjectStore, StorageError
from fleet.data import versions
from fleet.data.sources import load_raw
from fleet.kinds import kind_of
from fleet.metrics.drift import Reference, Signal, TrafficWindow
from fleet.ops import sla as sla_checks
from fleet.ops import traffic
from fleet.ops.sla import SlaReport
from fleet.report.markdown import render
from fleet.stages import profiles, registry

SHIFTS = ("none", "prior", "domain")


class MonitorError(RuntimeError):
    """The monitor cannot judge this specialist (no champion, no reference); the message says why."""


class DriftReport(BaseModel):
    id: str
    specialist: str
    champion_version: str
    window_hours: float
    window_rows: int
    status: str = "insufficient-data"  # drift | no-drift | insufficient-data
    drifted: bool = False
    reason: str = ""
    fired: list[str] = Field(default_factory=list)
    signals: dict[str, Signal] = Field(default_factory=dict)
    sla: SlaReport | None = None


@dataclass
class DriftCheck:
    report: DriftReport
    plot_png: bytes | None = None


def champion_reference(spec: SpecialistSpec, store: ObjectStore) -> tuple[str, bytes]:
    champ = registry.champion_version(spec.name)
    if champ is None:
        raise MonitorError(f"{spec.name}: no champion yet; run `fleet run --only {spec.name}` first")
    key = (champ.tags or {}).get("train_key", "")
    try:
        return str(champ.version), store.get_bytes(profiles.reference_key(spec.name, key))
    except StorageError:
        raise MonitorError(f"{spec.name}: champion v{champ.version} has no reference profile in {store.url}") from None


def _feedback(spec: SpecialistSpec, store: ObjectStore, window: pd.DataFrame, now: datetime | None):
    """(correct, n) of the window's answers that have feedback, or None."""
    kind = kind_of(spec)
    fb = traffic.read_window(store, "feedback", spec.name, spec.drift.window_hours, now)
    if fb.empty or kind.target not in fb:
        return None
    answers = window[["text_hash", kind.answer_column]].rename(columns={kind.answer_column: "_answer"})
    joined = fb.merge(answers, on="text_hash")
    return (int((joined[kind.target] == joined["_answer"]).sum()), len(joined)) if len(joined) else None


def _sla(
    spec: SpecialistSpec,
    store: ObjectStore,
    version: str,
    window: pd.DataFrame,
    estimate: float | None,
    feedback: tuple[int, int] | None,
    now: datetime | None,
) -> SlaReport | None:
    """The window against the specialist's SLA (None when it promises nothing or the window is empty)."""
    promised = spec.sla.p95_ms is not None or spec.sla.max_error_rate is not None or spec.sla.min_quality is not None
    refused = sla_checks.errors_in(store, spec.name, spec.drift.window_hours, now) if promised else 0
    if not promised or (window.empty and not refused):
        return None
    return sla_checks.measure(spec, version, window, refused, estimate, feedback)


def check(spec: SpecialistSpec, store: ObjectStore, now: datetime | None = None) -> DriftCheck:
    """The drift verdict on the latest traffic window (``status``: drift, no-drift or insufficient-data)."""
    version, ref = champion_reference(spec, store)
    d = spec.drift
    window = traffic.read_window(store, "traffic", spec.name, d.window_hours, now)
    report = DriftReport(
        id=uuid.uuid4().hex[:12],
        specialist=spec.name,
        champion_version=version,
        window_hours=d.window_hours,
        window_rows=len(window),
    )
    if len(window) < d.min_window_rows:
        report.reason = f"{len(window)} rows in the last {d.window_hours:g} h < min_window_rows {d.min_window_rows}"
        report.sla = _sla(spec, store, version, window, None, None, now)
        return DriftCheck(report)
    window = window.tail(d.max_window_rows)
    kind = kind_of(spec)
    # input drift on distinct texts: repeats of one message are not evidence of a new distribution
    emb = profiles.embeddings(spec, list(dict.fromkeys(window["text"].tolist())), Reference.from_bytes(ref).max_length)
    feedback = _feedback(spec, store, window, now)
    verdict = kind.drift(spec, ref, TrafficWindow(window, emb, feedback))
    estimate = verdict.signals.get("estimated_performance")
    report = report.model_copy(
        update={
            "status": "drift" if verdict.drifted else "no-drift",
            "drifted": verdict.drifted,
            "fired": verdict.fired,
            "signals": verdict.signals,
            "window_rows": verdict.window_rows,
            "sla": _sla(spec, store, version, window, estimate.statistic if estimate else None, feedback, now),
        }
    )
    return DriftCheck(report, kind.drift_figure(spec, ref, window))


def report_markdown(r: DriftReport) -> str:
    return render("drift.md.j2", r=r)


def _window_texts(
    spec: SpecialistSpec, test: pd.DataFrame, shift: str, rows: int, rng: random.Random, other: SpecialistSpec | None
) -> list[str]:
    if shift == "none":
        pool = test["text"].tolist()
        return rng.sample(pool, rows) if rows <= len(pool) else [rng.choice(pool) for _ in range(rows)]
    if shift == "prior":  # the rarest answer in the test split becomes the majority
        target = kind_of(spec).target
        rare = test[target].value_counts().idxmin()
        pool_rare, pool_rest = test[test[target] == rare]["text"].tolist(), test[test[target] != rare]["text"].tolist()
        return [rng.choice(pool_rare) if rng.random() < 0.8 else rng.choice(pool_rest) for _ in range(rows)]
    if other is None:
        raise MonitorError("--shift domain needs another specialist's data (--from NAME)")
    from fleet.core.text import normalize_text

    pool = [
        t for t in (normalize_text(x) for x in load_raw(other.data, kind_of(other).source_columns(other))["text"]) if t
    ]
    return [rng.choice(pool) for _ in range(rows)]


def simulate(
    spec: SpecialistSpec,
    store: ObjectStore,
    shift: str,
    rows: int = 200,
    seed: int = 0,
    other: SpecialistSpec | None = None,
    when: datetime | None = None,
    key: bytes | None = None,
) -> str | None:
    """Write a traffic window answered by the champion: held-out data (none), a changed answer mix (prior),
    or another specialist's data (domain). Returns the part file's key."""
    if shift not in SHIFTS:
        raise ValueError(f"--shift {shift}: must be one of {', '.join(SHIFTS)}")
    champ = registry.champion_version(spec.name)
    if champ is None:
        raise MonitorError(f"{spec.name}: no champion to score simulated traffic; run `fleet run --only {spec.name}`")
    test = versions.load_split(store, spec.name, champ.tags["dataset_version"], "test")
    texts = _window_texts(spec, test, shift, rows, random.Random(seed), other)
    kind = kind_of(spec)
    with tempfile.TemporaryDirectory(prefix="fleet-sim-") as tmp:
        predictor = kind.load(registry.download_model_dir(spec.name, str(champ.version), tmp), "champion", spec)
        answers = kind.traffic_rows(texts, predictor.predict(texts))
    answers = [r | {"client": "cli:simulate"} for r in answers]
    return traffic.log_predictions(store, spec.name, answers, str(champ.version), when, key=key)


def claim_retrain(
    spec: SpecialistSpec, store: ObjectStore, drift_report: str | None, now: datetime | None = None
) -> tuple[bool, str]:
    """Start a retrain unless one started within the cooldown; the alarm is recorded either way.

    Callers hold the specialist's retrain lock around this, so check-and-set is not racy."""
    now = now or datetime.now(UTC)
    marker = f"retrains/{spec.name}/last.json"
    record = {"at": now.isoformat(), "drift_report": drift_report}
    alarm = f"alarms/{spec.name}/{now:%Y%m%dT%H%M%S%f}.json"
    if store.exists(marker):
        age_min = (now - datetime.fromisoformat(json.loads(store.get_bytes(marker))["at"])).total_seconds() / 60
        if age_min < spec.drift.cooldown_minutes:
            store.put_bytes(alarm, json.dumps({**record, "action": "recorded, cooldown"}).encode())
            return False, (
                f"{spec.name}: retrain started {age_min:.1f} min ago, within the "
                f"{spec.drift.cooldown_minutes:g} min cooldown; alarm recorded"
            )
    store.put_bytes(marker, json.dumps(record).encode())
    store.put_bytes(alarm, json.dumps({**record, "action": "retrain"}).encode())
    return True, "retrain started"
