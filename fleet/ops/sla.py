"""Service levels: what a specialist promises (``sla:`` in the fleet file), checked on each traffic window.

The monitor measures the window it reads for drift: the 95th percentile of the requests' answer times
(``latency_ms``, logged with every answer), the error rate (requests the server refused as busy or timed out,
counted in ``serving/NAME/errors/``, and answers whose fallback failed, over all requests), and the quality:
the accuracy on reviewed labels (feedback) where the window has some, else the estimated score without labels
(classifiers; ``drift.min_estimated_score``'s estimate). A breach is reported (``fleet.sla.violated``, in the
drift report and ``fleet status``); with ``sla.on_quality_breach: escalate-all`` a quality breach also sends all
of the specialist's traffic to its fallback (``sla/NAME/state.json``) until another champion is promoted.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from fleet.core.spec import SpecialistSpec
from fleet.core.storage import ObjectStore, StorageError, get_json, put_json
from fleet.ops import traffic

SLA_EVENT = "fleet.sla.violated"


class SlaReport(BaseModel):
    specialist: str
    champion_version: str
    checked_at: str
    window_rows: int
    p95_ms: float | None = None
    error_rate: float | None = None
    quality: float | None = None
    quality_source: str = Field("", description="reviewed (feedback labels) or estimated (without labels)")
    breaches: list[str] = Field(default_factory=list)
    escalate_all: bool = Field(False, description="All of its traffic goes to the fallback until a new champion.")


def _errors_prefix(name: str) -> str:
    return f"serving/{name}/errors"


def log_errors(store: ObjectStore, counts: dict[str, int], when: datetime | None = None) -> None:
    """Store refused requests per specialist (busy, timeout) as one part each: what the error rate counts."""
    when = when or datetime.now(UTC)
    for name, n in counts.items():
        if n:
            key = f"{_errors_prefix(name)}/date={when:%Y-%m-%d}/part-{when:%H%M%S}-{uuid.uuid4().hex[:12]}.json"
            store.put_bytes(key, json.dumps({"time": when.isoformat(), "requests": int(n)}).encode())


def errors_in(store: ObjectStore, name: str, hours: float, now: datetime | None = None) -> int:
    """Refused requests of the last ``hours`` (unreadable parts are skipped: the rate is then a lower bound)."""
    now = now or datetime.now(UTC)
    start, days = traffic.window_days(hours, now)
    total = 0
    for day in days:
        for key in store.list(f"{_errors_prefix(name)}/date={day}"):
            try:
                rec = get_json(store, key)
                if start <= datetime.fromisoformat(rec["time"]) <= now:
                    total += int(rec["requests"])
            except (StorageError, ValueError, KeyError, TypeError):
                continue
    return total


def _requests(window: pd.DataFrame) -> tuple[int, np.ndarray]:
    """(answered requests, their answer times in ms): rows of one request share its time and latency."""
    if "latency_ms" not in window:
        return len(window), np.array([])
    timed = window.dropna(subset=["latency_ms"])
    keys = ["request"] if "request" in timed else [c for c in ("time", "latency_ms", "client") if c in timed]
    per_request = timed.drop_duplicates(subset=keys)
    return len(per_request), per_request["latency_ms"].to_numpy(dtype=float)


def measure(
    spec: SpecialistSpec,
    version: str,
    window: pd.DataFrame,
    refused: int,
    estimate: float | None,
    feedback: tuple[int, int] | None,
) -> SlaReport:
    """The window against ``spec.sla``: its figures, and the breaches (a promise with no figure is not judged)."""
    sla = spec.sla
    answered, latencies = _requests(window)
    failed = int(window["fallback_error"].notna().sum()) if "fallback_error" in window else 0
    report = SlaReport(
        specialist=spec.name,
        champion_version=version,
        checked_at=datetime.now(UTC).isoformat(),
        window_rows=len(window),
        p95_ms=round(float(np.percentile(latencies, 95)), 2) if len(latencies) else None,
        error_rate=round((refused + failed) / (answered + refused), 6) if answered + refused else None,
    )
    if feedback is not None and feedback[1] > 0:
        report.quality, report.quality_source = round(feedback[0] / feedback[1], 6), "reviewed"
    elif estimate is not None:
        report.quality, report.quality_source = round(float(estimate), 6), "estimated"
    if sla.p95_ms is not None and report.p95_ms is not None and report.p95_ms > sla.p95_ms:
        report.breaches.append(f"p95 {report.p95_ms:.0f} ms > sla.p95_ms {sla.p95_ms:g}")
    if sla.max_error_rate is not None and report.error_rate is not None and report.error_rate > sla.max_error_rate:
        report.breaches.append(f"error rate {report.error_rate:.2%} > sla.max_error_rate {sla.max_error_rate:.2%}")
    if sla.min_quality is not None and report.quality is not None and report.quality < sla.min_quality:
        report.breaches.append(
            f"{report.quality_source} quality {report.quality:.4f} < sla.min_quality {sla.min_quality:g}"
        )
        report.escalate_all = sla.on_quality_breach == "escalate-all"
    return report


def unattainable(spec: SpecialistSpec, single_request_ms: float | None, version: str) -> str | None:
    """Why ``sla.p95_ms`` cannot be met by construction: below the median time the champion took to answer one
    request alone at its evaluation (``single_request_ms``); None when it can, or nothing was measured."""
    p95 = spec.sla.p95_ms
    if p95 is None or single_request_ms is None or p95 >= single_request_ms:
        return None
    return (
        f"specialists.{spec.name}.sla.p95_ms: {p95:g} ms is below the {single_request_ms:.1f} ms that champion "
        f"v{version} took to answer one request alone (median, measured at its evaluation): it cannot be met"
    )


def latest_key(name: str) -> str:
    return f"sla/{name}/latest.json"


def state_key(name: str) -> str:
    return f"sla/{name}/state.json"


def record(store: ObjectStore, report: SlaReport) -> None:
    """Keep the latest check (for ``fleet status``) and, after a quality breach under escalate-all, the order
    to escalate everything while this champion serves."""
    put_json(store, latest_key(report.specialist), report.model_dump(mode="json"))
    if report.escalate_all:
        state = {"escalate_all": True, "champion_version": report.champion_version, "since": report.checked_at}
        put_json(store, state_key(report.specialist), state | {"breaches": report.breaches})


def escalating(store: ObjectStore, name: str, champion_version: str) -> bool:
    """Whether all of ``name``'s traffic goes to its fallback: an escalate-all order for the champion that
    serves now (a newly promoted champion ends it)."""
    try:
        if not store.exists(state_key(name)):
            return False
        state = get_json(store, state_key(name))
    except (StorageError, ValueError):
        return False
    return (
        isinstance(state, dict)
        and bool(state.get("escalate_all"))
        and str(state.get("champion_version")) == str(champion_version)
    )


def latest(store: ObjectStore, name: str) -> SlaReport | None:
    try:
        return SlaReport.model_validate(get_json(store, latest_key(name))) if store.exists(latest_key(name)) else None
    except (StorageError, ValueError):
        return None
