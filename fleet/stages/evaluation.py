"""Evaluation on the frozen test split: challenger, champion and general baselines, then the gate.

Each contender answers every test row once (``fleet.metrics.timing``), timed as it goes; its kind scores the
answers (metrics with bootstrap intervals, per label and per slice), paired tests compare the
challenger with the strongest baseline and with the champion, and the gate decides. The report keeps
every contender's outputs, so later stages (the drift reference, the figures) need not predict again.
"""

from __future__ import annotations

import pandas as pd

from fleet.core import compute
from fleet.core.results import ContenderScore, EvaluationReport, GeneralScores, TrainedModel
from fleet.core.spec import SpecialistSpec
from fleet.core.storage import ObjectStore
from fleet.kinds import kind_of
from fleet.kinds.base import Baseline, Predictor, SpecialistKind
from fleet.metrics.gate import gate, slice_regressions
from fleet.metrics.timing import measure
from fleet.models import device
from fleet.models.base_models import ml_imports
from fleet.stages import score_cache


def contender(
    kind: SpecialistKind, spec: SpecialistSpec, role: str, predictor: Predictor, test: pd.DataFrame
) -> ContenderScore:
    """One contender scored on ``test``, with its measured cost."""
    outputs, cost = measure(predictor.predict, test["text"].tolist(), spec.evaluation, device.current().gpu)
    score = kind.score(spec, role, predictor.name, outputs, test)
    return score.model_copy(
        update={"cost": cost, "size_bytes": predictor.size_bytes, "parameters": predictor.parameters()}
    )


def billed(baseline: Baseline, score: ContenderScore) -> ContenderScore:
    """A remote model costs what its API bills, not the compute measured here."""
    api = baseline.billed_cost_per_1k(score.n)
    if api is None:
        return score
    return score.model_copy(
        update={"cost": score.cost.model_copy(update={"cost_per_1k": round(api, 6), "cpu_seconds_per_1k": None})}
    )


def decide(
    spec: SpecialistSpec,
    kind: SpecialistKind,
    references: list[str],
    challenger: ContenderScore,
    champion: ContenderScore | None,
    baselines: list[ContenderScore],
):
    """(paired tests, gate decision) for the contenders' scores."""
    m = spec.gate.metric
    best = max(baselines, key=lambda b: b.value(m))
    assert challenger.outputs is not None and best.outputs is not None
    paired = {"vs_baseline": kind.paired_test(spec, references, challenger.outputs, best.outputs)}
    regressions: list[str] = []
    tolerances: dict[str, float] = {}
    if champion is not None and champion.outputs is not None:
        paired["vs_champion"] = kind.paired_test(spec, references, challenger.outputs, champion.outputs)
        regressions, tolerances = slice_regressions(spec.evaluation.slices, m, challenger, champion)
    p = paired["vs_champion"].p_value if "vs_champion" in paired else None
    return paired, gate(challenger, best, champion, spec.gate, p, regressions, tolerances)


def general(
    spec: SpecialistSpec,
    test: pd.DataFrame,
    champion: tuple[str, str] | None = None,
    train: pd.DataFrame | None = None,
    store: ObjectStore | None = None,
) -> GeneralScores:
    """Score the general baselines and the champion (``(version, model folder)``): none of them depends on
    the new model, so this runs while it trains. ``train``: where few-shot baselines take their examples.
    ``store``: where scores are kept and reused (``fleet.stages.score_cache``)."""
    ml_imports()
    kind = kind_of(spec)
    versions = score_cache.versions_of(spec, test, type(kind).__module__)

    def once(role: str, predictor: Predictor) -> ContenderScore:
        def score() -> ContenderScore:
            scored = contender(kind, spec, role, predictor, test)
            return billed(predictor, scored) if role == "baseline" else scored  # type: ignore[arg-type]

        identity = getattr(predictor, "identity", None)
        return score_cache.scored(store, spec.name, identity, versions, predictor.name, score, role=role)

    champ = None
    with compute.slot():
        if champion is not None:
            champ = once("champion", kind.load(champion[1], f"v{champion[0]}", spec))
        examples = train if train is not None else test.iloc[:0]
        baselines = [once("baseline", b) for b in kind.baselines(spec, examples)]
    return GeneralScores(baselines=baselines, champion=champ, champion_version=champion[0] if champion else None)


def judge(
    spec: SpecialistSpec,
    test: pd.DataFrame,
    model: TrainedModel,
    others: GeneralScores,
    store: ObjectStore | None = None,
) -> EvaluationReport:
    """Score the new model (the challenger) against ``others`` on ``test`` and apply the gate. ``store``: where
    its score is kept, so that the run after it, where it is the champion, does not score it again."""
    ml_imports()
    kind = kind_of(spec)
    versions = score_cache.versions_of(spec, test, type(kind).__module__)
    with compute.slot():
        new = kind.load(model.model_dir, "new version", spec)
        challenger = score_cache.scored(
            store,
            spec.name,
            getattr(new, "identity", None),
            versions,
            new.name,
            lambda: contender(kind, spec, "challenger", new, test),
            role="challenger",
        )
    references = test[kind.target].astype(str).tolist()
    paired, decision = decide(spec, kind, references, challenger, others.champion, others.baselines)
    return EvaluationReport(
        specialist=spec.name,
        task=spec.task,
        dataset_version=model.dataset_version,
        test_examples=len(test),
        labels=kind.labels(spec),
        metric=spec.gate.metric,
        references=references,
        challenger=challenger,
        champion=others.champion,
        champion_version=others.champion_version,
        baselines=others.baselines,
        paired_tests=paired,
        decision=decision,
    )


def evaluate(
    spec: SpecialistSpec, test: pd.DataFrame, model: TrainedModel, champion: tuple[str, str] | None = None
) -> EvaluationReport:
    """Challenger, champion and baselines on ``test``, and the gate: :func:`general` then :func:`judge`."""
    return judge(spec, test, model, general(spec, test, champion))


def report_markdown(report: EvaluationReport) -> str:
    """The evaluation report and decision record as markdown (shown as a Prefect artifact)."""
    from fleet.report.markdown import render

    slices = list(report.challenger.slices)
    return render("evaluation.md.j2", r=report, contenders=report.contenders(), slices=slices)
