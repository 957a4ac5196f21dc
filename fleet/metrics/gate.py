"""The promotion gate: challenger vs champion vs the strongest general baseline, with its reasons.

Promote only if the challenger beats the best general baseline by ``min_gain_over_baseline``; beats
the champion (if any) by more than ``min_gain_over_champion`` with the paired test's p < ``alpha``;
regresses on no guarded slice; and stays within the latency and cost budgets. When neither challenger
nor champion clears the baseline margin, the verdict is ``retire``: the general model does the job as
well, so the specialist no longer earns its keep.
"""

from __future__ import annotations

from fleet.core.results import ContenderScore, GateDecision
from fleet.core.sections import GateSpec, SliceSpec

VERDICTS = ("promote", "keep-champion", "reject", "retire")


def _vs_champion(
    c: float, b: float, champion: ContenderScore, spec: GateSpec, p: float | None
) -> tuple[bool, bool, list[str]]:
    """(challenger beats champion, champion still beats the baseline, reasons)."""
    m = spec.metric
    ch = champion.value(m)
    gain_ok = c - ch > spec.min_gain_over_champion
    significant = p is not None and p < spec.alpha
    p_text = "n/a" if p is None else f"{p:.4g}"
    reasons = [
        f"{m} {c:.4f} vs champion {ch:.4f}: gain {c - ch:+.4f} {'>' if gain_ok else '<='} required "
        f"{spec.min_gain_over_champion:.4f}; paired test p={p_text} {'<' if significant else '>='} alpha {spec.alpha}"
    ]
    earns = ch - b >= spec.min_gain_over_baseline
    if not earns:
        reasons.append(f"champion's gain over the general baseline {ch - b:+.4f} < {spec.min_gain_over_baseline:.4f}")
    return gain_ok and significant, earns, reasons


def _budgets(challenger: ContenderScore, spec: GateSpec) -> list[str]:
    fails = []
    lat, cost = challenger.cost.latency_p95_ms, challenger.cost.cost_per_1k
    if spec.max_latency_p95_ms is not None and (lat is None or lat > spec.max_latency_p95_ms):
        fails.append(f"latency p95 {lat} ms > budget {spec.max_latency_p95_ms} ms")
    if spec.max_cost_per_1k is not None and (cost is None or cost > spec.max_cost_per_1k):
        fails.append(f"cost per 1k {cost} > budget {spec.max_cost_per_1k}")
    return fails


def _thresholds(spec: GateSpec, slice_tolerances: dict[str, float] | None) -> dict:
    return {
        "metric": spec.metric,
        "min_gain_over_baseline": spec.min_gain_over_baseline,
        "min_gain_over_champion": spec.min_gain_over_champion,
        "alpha": spec.alpha,
        "max_latency_p95_ms": spec.max_latency_p95_ms,
        "max_cost_per_1k": spec.max_cost_per_1k,
        "guarded_slice_tolerances": dict(slice_tolerances or {}),
    }


def gate(
    challenger: ContenderScore,
    baseline: ContenderScore,
    champion: ContenderScore | None,
    spec: GateSpec,
    p_vs_champion: float | None = None,
    slice_regressions: list[str] | None = None,
    slice_tolerances: dict[str, float] | None = None,
) -> GateDecision:
    """The promotion decision, with every threshold it used and a reason per check."""
    m = spec.metric
    c, b = challenger.value(m), baseline.value(m)
    ok_baseline = c - b >= spec.min_gain_over_baseline
    reasons = [
        f"{m} {c:.4f} vs general baseline {b:.4f}: gain {c - b:+.4f} "
        f"{'>=' if ok_baseline else '<'} required {spec.min_gain_over_baseline:.4f}"
    ]
    ok_champion, champion_earns = True, True
    if champion is None:
        reasons.append("no champion yet")
    else:
        ok_champion, champion_earns, more = _vs_champion(c, b, champion, spec, p_vs_champion)
        reasons += more
    regressions = list(slice_regressions or [])
    reasons += [f"guarded slice regressed: {r}" for r in regressions]
    budget_fail = _budgets(challenger, spec)
    reasons += budget_fail
    if not ok_baseline:
        verdict = "retire" if champion is not None and not champion_earns else "reject"
    elif regressions or budget_fail:
        verdict = "reject"
    else:
        verdict = "promote" if ok_champion else "keep-champion"
    return GateDecision(
        promote=verdict == "promote",
        verdict=verdict,
        metric=m,
        reasons=reasons,
        thresholds=_thresholds(spec, slice_tolerances),
    )


def slice_regressions(
    slices: list[SliceSpec], metric: str, challenger: ContenderScore, champion: ContenderScore
) -> tuple[list[str], dict[str, float]]:
    """Guarded slices on which the challenger falls below the champion by more than the tolerance."""
    regressions, tolerances = [], {}
    for sl in slices:
        if not sl.guarded:
            continue
        tolerances[sl.name] = sl.tolerance
        new, old = challenger.slices.get(sl.name), champion.slices.get(sl.name)
        if new and old and new.n and metric in new.metrics and metric in old.metrics:
            a, b = new.metrics[metric].value, old.metrics[metric].value
            if a < b - sl.tolerance:
                regressions.append(f"{sl.name}: {metric} {a:.4f} < champion {b:.4f} - tolerance {sl.tolerance}")
    return regressions, tolerances
