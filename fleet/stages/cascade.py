"""The cascade's calibration at evaluation: how sure the new version must be to answer without its fallback.

With ``serving.fallback`` set, after the gate: the new version and the fallback answer (at most
``serving.cascade.calibration_rows``) validation rows; the version's confidence is calibrated (isotonic) and
the threshold chosen on them (``fleet.metrics.cascade``); then the test split's answers already in the
evaluation report (the version's, and the fallback's when it is one of the baselines; else it answers the
test split once) give the figures with intervals. Answers are kept in the store by who answered and which
rows (``cascade/NAME/answers/KEY.json``), so a second calibration of the same version runs no model again.
Recalibrated at every retrain: the threshold belongs to the version.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pandas as pd

from fleet.core import compute
from fleet.core.results import CascadeReport, EvaluationReport, Outputs, TrainedModel
from fleet.core.spec import SpecialistSpec
from fleet.core.storage import ObjectStore, StorageError, get_json, put_json
from fleet.kinds import kind_of
from fleet.kinds.base import Baseline, Predictor
from fleet.metrics import cascade as cm
from fleet.stages import score_cache

log = logging.getLogger("fleet.stages.cascade")
FEW_ROWS = 100  # fewer validation rows than this: the threshold is said to be uncertain


def fallback_of(spec: SpecialistSpec, train: pd.DataFrame) -> Baseline:
    """The specialist's fallback model, built as its kind builds a baseline (``train``: few-shot examples)."""
    fb = spec.serving.fallback
    assert fb is not None
    only = spec.model_copy(update={"evaluation": spec.evaluation.model_copy(update={"baselines": [fb]})})
    return kind_of(spec).baselines(only, train)[0]


def _answers(
    store: ObjectStore | None, name: str, predictor: Predictor, rows: pd.DataFrame, tag: str
) -> tuple[Outputs, bool]:
    """``predictor``'s answers on ``rows`` (stored under its identity and the rows' hash), and whether they were
    read back rather than asked. A predictor without an identity (a remote API) is always asked."""
    identity = getattr(predictor, "identity", None)
    key = None
    if store is not None and identity:
        digest = hashlib.sha256(f"{identity}\0{score_cache.test_version(rows)}".encode()).hexdigest()[:24]
        key = f"cascade/{name}/answers/{tag}-{digest}.json"
        try:
            if store.exists(key):
                return Outputs.model_validate(get_json(store, key)), True
        except (StorageError, ValueError) as exc:
            log.warning("%s: stored answers unreadable (%s); asking again", key, exc)
    with compute.slot():
        out = predictor.predict(rows["text"].tolist())
    if key is not None and store is not None:
        put_json(store, key, out.model_dump(mode="json"))
    return out, False


def _fallback_on_test(
    report: EvaluationReport, fallback: Baseline, test: pd.DataFrame, store: ObjectStore | None, name: str
) -> tuple[Outputs, float, bool]:
    """The fallback's test answers and its cost per 1,000: a baseline's stored ones when it is one of them."""
    for b in report.baselines:
        if b.model == fallback.name and b.outputs is not None and len(b.outputs.predictions) == len(test):
            return b.outputs, float(b.cost.cost_per_1k or 0.0), True
    out, _ = _answers(store, name, fallback, test, "fallback-test")
    return out, float(fallback.billed_cost_per_1k(len(test)) or 0.0), False


def calibrate(
    spec: SpecialistSpec,
    report: EvaluationReport,
    model: TrainedModel,
    validation: pd.DataFrame,
    test: pd.DataFrame,
    train: pd.DataFrame,
    store: ObjectStore | None = None,
) -> CascadeReport | None:
    """The cascade of the new version in front of ``serving.fallback`` (None without one)."""
    if spec.serving.fallback is None:
        return None
    kind, cfg = kind_of(spec), spec.serving.cascade
    val = validation.sample(n=min(len(validation), cfg.calibration_rows), random_state=spec.split.seed)
    val = val.sort_index().reset_index(drop=True)
    val_refs = val[kind.target].astype(str).tolist()
    with compute.slot():
        new = kind.load(model.model_dir, "new version", spec)
    specialist_val, _ = _answers(store, spec.name, new, val, "specialist-validation")
    fallback = fallback_of(spec, train)
    fallback_val, _ = _answers(store, spec.name, fallback, val, "fallback-validation")
    fallback_test, fallback_cost, reused = _fallback_on_test(report, fallback, test, store, spec.name)
    ch_out = report.challenger.outputs
    assert ch_out is not None

    metric, s_val = kind.row_quality(spec, specialist_val, val_refs)
    f_val = kind.row_quality(spec, fallback_val, val_refs)[1] * kind.usable(spec, fallback_val)
    conf_val = kind.confidence(spec, specialist_val)
    calibration = cm.calibrate(conf_val, s_val)
    choice = cm.choose(conf_val, s_val, f_val, cfg)

    refs, ch = report.references, report.challenger
    s_test = kind.row_quality(spec, ch_out, refs)[1]
    f_test = kind.row_quality(spec, fallback_test, refs)[1] * kind.usable(spec, fallback_test)
    ev = spec.evaluation
    fig = cm.figures(
        kind.confidence(spec, ch_out),
        s_test,
        f_test,
        choice.raw_threshold,
        (float(ch.cost.cost_per_1k or 0.0), fallback_cost),
        ev.bootstrap_resamples,
        ev.seed,
        ev.confidence_level,
    )
    if abs(choice.raw_threshold) < cm.NEVER:
        threshold = float(calibration(np.array([choice.raw_threshold]))[0])
    else:  # keeps all, or escalates all
        threshold = 0.0 if choice.raw_threshold < 0 else 1.0
    return CascadeReport(
        fallback=fallback.name,
        metric=metric,
        target=cfg.target if cfg.target == "max-fallback-share" else f"match-fallback (epsilon {cfg.epsilon:g})",
        threshold=round(threshold, 6),
        raw_threshold=choice.raw_threshold,
        calibration=calibration.as_dict(),
        validation_rows=len(val),
        validation={
            "kept_share": round(choice.kept_share, 6),
            "cascade_quality": round(choice.quality, 6),
            "specialist_quality": round(choice.specialist_quality, 6),
            "fallback_quality": round(choice.fallback_quality, 6),
        },
        test_rows=len(refs),
        kept_share=fig.kept_share,
        cascade_quality=fig.cascade_quality,
        specialist_quality=fig.specialist_quality,
        fallback_quality=fig.fallback_quality,
        cost_per_1k=fig.cost_per_1k,
        fallback_reused=reused,
        note=(
            f"The threshold was chosen on {len(val)} validation rows only: expect the test split's figures to "
            "differ from the validation's (a larger validation split, split.validation, steadies it)."
            if len(val) < FEW_ROWS
            else ""
        ),
    )
