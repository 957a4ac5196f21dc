"""The leaderboard: per specialist, its champion against the general baselines, read from the champion's
decision record (what the gate saw when that version was the challenger)."""

from __future__ import annotations

import time

from pydantic import BaseModel, Field

from fleet.core.results import ContenderScore, DecisionRecord, PairedTest
from fleet.stages import registry


class Standing(BaseModel):
    model: str
    score: float
    ci: tuple[float, float] | None = None
    cost_per_1k: float | None = None

    @classmethod
    def of(cls, c: ContenderScore, metric: str) -> Standing:
        return cls(model=c.model, score=c.value(metric), ci=c.metrics[metric].ci, cost_per_1k=c.cost.cost_per_1k)


class LeaderboardRow(BaseModel):
    specialist: str
    task: str | None = None
    metric: str | None = None
    champion_version: str | None = None
    champion: Standing | None = None
    baseline: Standing | None = Field(None, description="The strongest general baseline.")
    baselines: list[Standing] = Field(default_factory=list)
    gain_points: float | None = Field(None, description="Champion minus strongest baseline, in metric points (x100).")
    gain_points_per_cost: float | None = Field(
        None, description="gain_points per unit of the champion's cost per 1,000."
    )
    vs_baseline: PairedTest | None = Field(None, description="The paired test, champion vs the strongest baseline.")
    dataset_version: str | None = None
    last_trained: str | None = None


def row(name: str, version, record: DecisionRecord | None) -> LeaderboardRow:
    out = LeaderboardRow(
        specialist=name,
        champion_version=str(version.version),
        dataset_version=(version.tags or {}).get("dataset_version"),
        last_trained=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(version.creation_timestamp / 1000)),
    )
    own = None if record is None else record.contenders.get("challenger")
    if record is None or own is None:
        return out
    m, best = record.metric, record.contenders.get("baseline")
    out.task, out.metric = record.task, m
    out.champion = Standing.of(own, m)
    out.baselines = [Standing.of(b, m) for b in record.baselines]
    if best is not None:
        out.baseline = Standing.of(best, m)
        out.gain_points = round(100 * (out.champion.score - out.baseline.score), 2)
        out.vs_baseline = record.paired_tests.get("vs_baseline")
        if out.champion.cost_per_1k:
            out.gain_points_per_cost = round(out.gain_points / out.champion.cost_per_1k, 1)
    return out


def fleet_status(names: list[str]) -> list[LeaderboardRow]:
    """One row per specialist; ``gain_points_per_cost`` is what each unit of serving cost buys."""
    rows = []
    for name in names:
        v = registry.champion_version(name)
        rows.append(LeaderboardRow(specialist=name) if v is None else row(name, v, registry.decision_record(name, v)))
    return rows


def flat(r: LeaderboardRow) -> dict:
    """A row as flat columns (for tables)."""

    def ci(s: Standing | None) -> str:
        return "" if s is None else f"{s.score:.4f}" + (f" [{s.ci[0]:.3f}, {s.ci[1]:.3f}]" if s.ci else "")

    return {
        "specialist": r.specialist,
        "task": r.task,
        "metric": r.metric,
        "champion": r.champion_version,
        "champion score": ci(r.champion),
        "baseline": r.baseline.model if r.baseline else None,
        "baseline score": ci(r.baseline),
        "champion cost/1k": r.champion.cost_per_1k if r.champion else None,
        "baseline cost/1k": r.baseline.cost_per_1k if r.baseline else None,
        "gain (points)": r.gain_points,
        "points per cost": r.gain_points_per_cost,
        "dataset": r.dataset_version,
        "trained": r.last_trained,
    }
