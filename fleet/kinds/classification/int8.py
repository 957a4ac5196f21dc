"""The int8 path for encoder specialists, and the parity check that guards it.

The base encoder's linear layers are quantized to int8 (torch's dynamic quantization: weights int8,
activations quantized on the fly), the adapter stays in float32 on top; that is the model
``fleet serve-models`` runs for a version whose check passed (``fleet.kinds.classification.serving``). The check, at
registration: on the frozen test split, the int8 model's labels agree with the float32 model's on at
least 99% of the rows, and its macro-F1 is at most 0.5 points lower. Speed is measured on the same
rows and batch size as the evaluation's float32 timing. ONNX Runtime was the other choice; torch's
dynamic quantization needs no export step and keeps the adapters swappable on a shared base.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from fleet.core import compute
from fleet.core.results import EvaluationReport, TrainedModel
from fleet.core.spec import SpecialistSpec
from fleet.models import base_store

MIN_AGREEMENT = 0.99
MAX_F1_DROP = 0.005


class Int8Parity(BaseModel):
    passed: bool
    agreement: float
    macro_f1_fp32: float
    macro_f1_int8: float
    int8_rows_per_s: float
    fp32_rows_per_s: float | None

    @property
    def speedup(self) -> float | None:
        return None if not self.fp32_rows_per_s else round(self.int8_rows_per_s / self.fp32_rows_per_s, 2)


def check(spec: SpecialistSpec, model: TrainedModel, report: EvaluationReport, texts: list[str]) -> Int8Parity:
    """The int8 model against the evaluation's float32 answers on the test split ``texts`` (in a compute slot)."""
    with compute.slot():
        return _check(spec, model, report, texts)


def _check(spec: SpecialistSpec, model: TrainedModel, report: EvaluationReport, texts: list[str]) -> Int8Parity:

    from fleet.kinds.classification.record import ClassifierRecord
    from fleet.kinds.classification.scoring import codes
    from fleet.kinds.classification.serving import EncoderGroup
    from fleet.metrics.stats import metrics_with_ci

    group = EncoderGroup(base_store.locate_for(ClassifierRecord.read(model.model_dir)), int8=True)
    group.add("candidate", Path(model.model_dir))
    group.route(spec.name, "candidate", "candidate")
    ev = spec.evaluation
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # length-sorted batches: little padding
    int8: list[str] = [""] * len(texts)
    for first in range(0, len(order), 64):
        rows = order[first : first + 64]
        for i, (out, _) in zip(rows, group.answer([(spec.name, texts[i]) for i in rows])):
            int8[i] = out.predictions[0]
    timed = texts[ev.latency_samples : ev.latency_samples + ev.timing_rows] or texts
    start = time.perf_counter()
    for i in range(0, len(timed), ev.serving_batch_size):
        group.answer([(spec.name, t) for t in timed[i : i + ev.serving_batch_size]])
    rows_per_s = len(timed) / (time.perf_counter() - start)
    labels, fp32 = report.labels, report.challenger.outputs.predictions if report.challenger.outputs else []
    agreement = float(np.mean([a == b for a, b in zip(int8, fp32)]))
    f1 = metrics_with_ci(codes(labels, report.references), codes(labels, int8), labels, 100).macro_f1.value
    fp32_f1 = report.challenger.value("macro_f1")
    return Int8Parity(
        passed=agreement >= MIN_AGREEMENT and fp32_f1 - f1 <= MAX_F1_DROP,
        agreement=round(agreement, 4),
        macro_f1_fp32=round(fp32_f1, 4),
        macro_f1_int8=round(f1, 4),
        int8_rows_per_s=round(rows_per_s, 1),
        fp32_rows_per_s=report.challenger.cost.throughput_per_s,
    )
