"""What each specialist costs per month, against sending the same traffic to its general fallback.

Measured, for one calendar month (UTC), per specialist:

- **training**: every version registered that month, its fine-tune's wall time x the price of what it ran on
  (``evaluation.price_per_cpu_hour`` per core-hour x its torch threads, or ``price_per_gpu_hour``);
- **inference**: the requests its traffic log holds x the champion's measured cost per request (CPU- or
  GPU-seconds per 1,000 at evaluation x the price);
- **fallback**: what the escalated requests cost (``fallback_cost`` in the traffic log, the fallback's
  token prices);
- **teacher**: what the flywheel's teacher runs cost (their stored accounts);
- **reviews**: the human decisions recorded that month x ``tco.price_per_review``.

Against it, **all-fallback**: the same requests sent to the fallback, at its cost per request from the version's
cascade (or the escalations' own average). :func:`project` carries both forward month by month at a stated
volume, the fallback's price falling by ``tco.api_price_change_per_year`` (compounded monthly: equal capability
has cost about a tenth a year later), and finds the month from which the fleet has cost less in total.
"""

from __future__ import annotations

import calendar
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
from pydantic import BaseModel, Field

from fleet.core.results import DecisionRecord
from fleet.core.spec import SpecialistSpec
from fleet.core.storage import ObjectStore
from fleet.ops import traffic

PARTS = ("training", "inference", "fallback", "teacher", "reviews")


class SpecialistBill(BaseModel):
    specialist: str
    month: str
    requests: int
    escalated: int
    costs: dict[str, float] = Field(description="What each part cost this month (PARTS).")
    all_fallback: float | None = Field(description="The same requests all sent to the fallback (None: no price).")
    fallback_per_request: float | None = None
    notes: list[str] = Field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.costs.values())


@dataclass(frozen=True)
class TrainingRun:
    """One registered version's fine-tune: when, how long, on what."""

    at: datetime
    seconds: float
    device: str
    threads: int


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """The first and last instant of ``YYYY-MM`` (UTC); ValueError for anything else."""
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"--month {month!r}: expected YYYY-MM, e.g. 2026-12") from None
    last = calendar.monthrange(start.year, start.month)[1]
    return start, start.replace(day=last, hour=23, minute=59, second=59, microsecond=999999)


def _month_rows(store: ObjectStore, kind: str, name: str, month: str) -> pd.DataFrame:
    start, end = month_bounds(month)
    rows = [
        r
        for day in range(1, end.day + 1)
        for key in store.list(f"{kind}/{name}/date={start.year:04d}-{start.month:02d}-{day:02d}")
        for r in traffic.read_part(store, key)
    ]
    return pd.DataFrame(rows)


def training_cost(spec: SpecialistSpec, runs: list[TrainingRun], month: str) -> float:
    start, end = month_bounds(month)
    ev = spec.evaluation
    total = 0.0
    for r in runs:
        if start <= r.at <= end:
            hourly = ev.price_per_cpu_hour * max(r.threads, 1) if r.device == "cpu" else ev.price_per_gpu_hour
            total += r.seconds / 3600 * hourly
    return total


def bill(
    spec: SpecialistSpec,
    store: ObjectStore,
    month: str,
    runs: list[TrainingRun],
    champion: DecisionRecord | None,
    teacher_cost: float = 0.0,
    reviews: int = 0,
) -> SpecialistBill:
    """One specialist's month (``runs``: its registered fine-tunes; ``champion``: its champion's decision record;
    ``teacher_cost`` and ``reviews``: what its flywheel's teacher runs cost that month and how many human
    decisions it recorded, ``fleet.labeling``'s accounts)."""
    notes: list[str] = []
    window = _month_rows(store, "traffic", spec.name, month)
    n = len(window)
    escalated = int((window["answered_by"] == "fallback").sum()) if "answered_by" in window else 0
    spent = window["fallback_cost"] if "fallback_cost" in window else pd.Series(dtype=float)
    fallback_spent = float(pd.to_numeric(spent, errors="coerce").fillna(0).sum())
    own = champion.contenders.get("challenger") if champion is not None else None
    per_1k = own.cost.cost_per_1k if own is not None else None
    if per_1k is None:
        notes.append("no measured inference cost (no champion record): inference counted as 0")
    cascade = champion.cascade if champion is not None else None
    per_request = cascade.cost_per_1k["fallback"].value / 1000 if cascade is not None else None
    if per_request is None and escalated:
        per_request = fallback_spent / escalated
        notes.append("all-fallback priced at the escalations' average cost")
    if per_request is None:
        notes.append("no fallback price (no cascade, no escalation): all-fallback not figured")
    costs = {
        "training": training_cost(spec, runs, month),
        "inference": n * (per_1k or 0.0) / 1000,
        "fallback": fallback_spent,
        "teacher": teacher_cost,
        "reviews": reviews * spec.tco.price_per_review,
    }
    return SpecialistBill(
        specialist=spec.name,
        month=month,
        requests=n,
        escalated=escalated,
        costs={k: round(v, 6) for k, v in costs.items()},
        all_fallback=None if per_request is None else round(n * per_request, 6),
        fallback_per_request=per_request,
        notes=notes,
    )


class Projection(BaseModel):
    """Month by month at ``requests_per_month``: the fleet's and all-fallback's cumulative cost."""

    specialist: str
    requests_per_month: int
    months: int
    fleet_monthly: list[float]
    fallback_monthly: list[float]
    fleet_cumulative: list[float]
    fallback_cumulative: list[float]
    break_even_month: int | None = Field(description="First month (1-based) the fleet has cost less in total.")
    cheaper_until_month: int | None = Field(
        None,
        description="After break-even, the last month the fleet is still cheaper in total (the API's price falls).",
    )


def project(b: SpecialistBill, spec: SpecialistSpec, requests_per_month: int, months: int = 12) -> Projection | None:
    """``b``'s month carried forward at ``requests_per_month`` (its escalation share, its per-request costs; the
    first month also pays this month's training, later months the same again as retraining); None without a
    fallback price."""
    if b.fallback_per_request is None:
        return None
    share = b.escalated / b.requests if b.requests else 0.0
    scale = requests_per_month / b.requests if b.requests else 0.0
    steady = (b.costs["inference"] + b.costs["teacher"] + b.costs["reviews"]) * scale + b.costs["training"]
    fleet, fallback = [], []
    for m in range(months):
        price = b.fallback_per_request * spec.tco.api_price_change_per_year ** (m / 12)
        fleet.append(steady + requests_per_month * share * price)
        fallback.append(requests_per_month * price)
    fc = list(pd.Series(fleet).cumsum())
    ac = list(pd.Series(fallback).cumsum())
    cheaper = [f <= a for f, a in zip(fc, ac)]
    even = next((i + 1 for i, c in enumerate(cheaper) if c), None)
    until = None
    if even is not None and not all(cheaper[even - 1 :]):
        until = next(i for i in range(even - 1, months) if not cheaper[i])
    return Projection(
        specialist=b.specialist,
        requests_per_month=requests_per_month,
        months=months,
        fleet_monthly=[round(x, 4) for x in fleet],
        fallback_monthly=[round(x, 4) for x in fallback],
        fleet_cumulative=[round(x, 4) for x in fc],
        fallback_cumulative=[round(x, 4) for x in ac],
        break_even_month=even,
        cheaper_until_month=until,
    )


def figure(projections: list[Projection]) -> bytes:
    """A PNG of cumulative cost, fleet against all-fallback, per specialist and in total."""
    from fleet.report.figures import cumulative_cost_png

    series: dict[str, tuple[Sequence[float], Sequence[float]]] = {
        p.specialist: (p.fleet_cumulative, p.fallback_cumulative) for p in projections
    }
    if projections:
        months = projections[0].months
        series["total"] = (
            [sum(p.fleet_cumulative[i] for p in projections) for i in range(months)],
            [sum(p.fallback_cumulative[i] for p in projections) for i in range(months)],
        )
    return cumulative_cost_png(series)


def markdown(bills: list[SpecialistBill], projections: list[Projection], price_note: str) -> str:
    """The month's bill and the projection, for the Prefect artifact and the terminal."""
    lines = [
        f"# Fleet TCO, {bills[0].month if bills else ''}",
        "",
        "| specialist | requests | escalated | " + " | ".join(PARTS) + " | fleet | all-fallback |",
        "|---|---:|---:|" + "---:|" * (len(PARTS) + 2),
    ]
    for b in bills:
        fb = "-" if b.all_fallback is None else f"{b.all_fallback:,.4f}"
        parts = " | ".join(f"{b.costs[p]:,.4f}" for p in PARTS)
        lines.append(f"| {b.specialist} | {b.requests:,} | {b.escalated:,} | {parts} | {b.total:,.4f} | {fb} |")
    if projections:
        lines += [
            "",
            f"Projection ({price_note}):",
            "",
            "| specialist | requests/month | month 1 fleet | month 1 all-fallback | break-even month |",
            "|---|---:|---:|---:|---|",
        ]
        for p in projections:
            even = "never" if p.break_even_month is None else str(p.break_even_month)
            if p.cheaper_until_month is not None:
                even += f" (until month {p.cheaper_until_month})"
            lines.append(
                f"| {p.specialist} | {p.requests_per_month:,} | {p.fleet_monthly[0]:,.2f} | {p.fallback_monthly[0]:,.2f} | {even} |"
            )
    notes = [f"- {b.specialist}: {n}" for b in bills for n in b.notes]
    return "\n".join(lines + (["", *notes] if notes else [])) + "\n"


def to_json(bills: list[SpecialistBill], projections: list[Projection]) -> str:
    return json.dumps(
        {
            "bills": [b.model_dump(mode="json") | {"total": b.total} for b in bills],
            "projections": [p.model_dump(mode="json") for p in projections],
        },
        indent=2,
    )
