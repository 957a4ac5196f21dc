"""``task: text-classification``: a text in, one of a fixed set of labels out.

Data: ``text_column`` and ``label_column`` (mapped through ``label_map``); every label needs
``curation.min_examples_per_label`` clean rows; splits are stratified by label. Model: the base encoder
with mean pooling and a linear head, LoRA-tuned (LP-FT). Metrics: macro-F1 (default gate metric) and
accuracy with bootstrap intervals, ECE, per label and per slice; McNemar's exact test between
contenders. Baselines: embedding zero-shot, an NLI zero-shot pipeline, an OpenAI-compatible chat model.
Drift: input embeddings, predicted-label mix, confidence, and accuracy on feedback.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fleet.core.results import ContenderScore, EvaluationReport, Outputs, PairedTest, TrainedModel
from fleet.core.sections import CurationSpec
from fleet.core.spec import SpecialistSpec
from fleet.data.cleaning import Cleaner, Quarantine, TargetCheck, Verdict, clean_rows
from fleet.data.sources import CurationError
from fleet.data.splitting import stratified_sample, stratified_split
from fleet.kinds.base import Baseline, Fit, Predictor, SpecialistKind
from fleet.kinds.classification import drift, scoring
from fleet.kinds.classification.baselines import build_baseline
from fleet.kinds.classification.spec import TASK, ClassificationSpec
from fleet.metrics.drift import DriftVerdict, Reference, TrafficWindow
from fleet.metrics.stats import confusion
from fleet.report.figures import confusion_png, reference_vs_current_png

if TYPE_CHECKING:
    from fleet.kinds.classification.serving import EncoderGroup


def label_check(labels: list[str], label_map: dict[str, str]) -> TargetCheck:
    known = set(labels)

    def check(text: str, raw: str) -> Verdict:
        value = label_map.get(raw, raw)
        if not value:
            return Verdict(value, "missing-label")
        if value not in known:
            return Verdict(value, "unknown-label", value)
        if value != raw:
            return Verdict(value, changed="label-map", detail=f"{raw} -> {value}")
        return Verdict(value)

    return check


def clean(
    df: pd.DataFrame, labels: list[str], label_map: dict[str, str], rules: CurationSpec | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every rule over a frame of ``row``, ``text``, ``label``: (kept rows, quarantine)."""
    q = Quarantine("label")
    good = clean_rows(df, Cleaner(rules or CurationSpec(), label_check(labels, label_map), q), "conflicting-labels")
    return good, q.frame()


def check_labels(spec: SpecialistSpec, good: pd.DataFrame, q: Quarantine) -> pd.DataFrame:
    """Every label needs ``min_examples_per_label`` clean rows (or is dropped with ``on_too_few: drop-label``)."""
    labels, rules, src = list(spec.labels), spec.curation, spec.data.source
    present = Counter(good["label"])
    few = [lab for lab in labels if present.get(lab, 0) < rules.min_examples_per_label]
    if few and rules.on_too_few == "drop-label":
        for rec in good[good["label"].isin(few)].to_dict("records"):
            q.add(
                rec["row"],
                "label-too-rare",
                rec["text"],
                rec["label"],
                detail=f"{present[rec['label']]} < {rules.min_examples_per_label}",
            )
        good = good[~good["label"].isin(few)]
        present, few = Counter(good["label"]), []
    if len(present) < 2:
        raise CurationError(
            f"{src}: after cleaning, the data has {len(present)} label(s) "
            f"({', '.join(present) or 'none'}); specialist {spec.name} needs at least two of "
            f"{', '.join(labels)}"
        )
    if few:
        counts = ", ".join(f"{lab} ({present.get(lab, 0)})" for lab in few)
        raise CurationError(
            f"{src}: label(s) with fewer than {rules.min_examples_per_label} clean examples "
            f"(curation.min_examples_per_label): {counts}; add data, or set curation.on_too_few: "
            "drop-label"
        )
    return good


def window_probabilities(rows: pd.DataFrame, labels: list[str]) -> np.ndarray | None:
    """The logged label distributions of a traffic window (None when its rows predate them)."""
    if "probs" not in rows or rows["probs"].isna().any():
        if len(labels) == 2 and len(rows):  # two labels: the top score says it all
            top = rows["score"].to_numpy(dtype=float)
            first = np.array([lab == labels[0] for lab in rows["label"]])
            p0 = np.where(first, top, 1 - top)
            return np.column_stack([p0, 1 - p0])
        return None
    probs = np.array(rows["probs"].tolist(), dtype=float)
    return probs if probs.ndim == 2 and probs.shape[1] == len(labels) else None


class TextClassification(SpecialistKind):
    task = TASK
    spec_model = ClassificationSpec
    target = "label"
    answer_column = "label"
    conflict_rule = "conflicting-labels"

    def source_columns(self, spec: SpecialistSpec) -> dict[str, str]:
        return {"text": spec.data.text_column, "label": spec.data.label_column}

    def labels(self, spec: SpecialistSpec) -> list[str]:
        return list(spec.labels)

    def target_check(self, spec: SpecialistSpec) -> TargetCheck:
        return label_check(list(spec.labels), spec.data.label_map)

    def check_dataset(self, spec: SpecialistSpec, good: pd.DataFrame, q: Quarantine) -> pd.DataFrame:
        return check_labels(spec, good, q)

    def sample(self, spec: SpecialistSpec, good: pd.DataFrame, n: int) -> pd.DataFrame:
        return stratified_sample(good, n, spec.split.seed, by="label")

    def split(self, spec: SpecialistSpec, good: pd.DataFrame) -> dict[str, pd.DataFrame]:
        return stratified_split(good, spec.split, by="label")

    def train(self, spec: SpecialistSpec, train: pd.DataFrame, run_dir: Path, progress: bool = True) -> Fit:
        from fleet.kinds.classification.train import fine_tune

        return fine_tune(spec, train, run_dir, progress)

    def load(self, model_dir: str | Path, name: str, spec: SpecialistSpec | None = None) -> Predictor:
        from fleet.kinds.classification.predict import TextClassifier

        return TextClassifier(model_dir, name=name)

    def save_merged(self, model_dir: Path, dest: Path) -> None:
        import shutil

        from fleet.kinds.classification.predict import TextClassifier

        clf = TextClassifier(model_dir)
        clf.model.encoder.save_pretrained(str(dest))
        clf.tokenizer.save_pretrained(str(dest))
        shutil.copy(model_dir / "classifier_head.safetensors", dest / "classifier_head.safetensors")

    def to_frame(self, outputs: Outputs) -> pd.DataFrame:
        probs = np.asarray(outputs.probabilities, dtype=float)
        return pd.DataFrame({"label": outputs.predictions, "score": probs.max(axis=1) if len(probs) else []})

    def baselines(self, spec: SpecialistSpec, train: pd.DataFrame) -> list[Baseline]:
        # the baselines read texts up to the specialist's token limit, or 128 tokens when it picks its own
        max_length = spec.train.max_length or 128
        return [build_baseline(b, spec.base_model, spec.labels, max_length) for b in spec.evaluation.baselines or []]

    def score(self, spec: SpecialistSpec, role: str, name: str, outputs: Outputs, test: pd.DataFrame) -> ContenderScore:
        return scoring.score(spec, role, name, outputs, test)

    def paired_test(self, spec: SpecialistSpec, references: list[str], a: Outputs, b: Outputs) -> PairedTest:
        labels = sorted(set(references) | set(a.predictions) | set(b.predictions))
        return scoring.paired_test(labels, references, a, b)

    def confidence(self, spec: SpecialistSpec, outputs: Outputs) -> np.ndarray:
        probs = np.asarray(outputs.probabilities, dtype=float)
        return probs.max(axis=1) if len(probs) else np.zeros(0)

    def row_quality(self, spec: SpecialistSpec, outputs: Outputs, references: list[str]) -> tuple[str, np.ndarray]:
        return "accuracy", (np.array(outputs.predictions) == np.array(references)).astype(float)

    def usable(self, spec: SpecialistSpec, outputs: Outputs) -> np.ndarray:
        known = np.array([p in spec.labels for p in outputs.predictions], dtype=bool)
        if outputs.confidence is not None:  # a chat model whose answer was no label of the set says 0
            known &= np.asarray(outputs.confidence, dtype=float) > 0
        return known

    def figures(self, report: EvaluationReport) -> dict[str, bytes]:
        y = scoring.codes(report.labels, report.references)
        out = {}
        for role, c in report.contenders().items():
            if c is not None and c.outputs is not None:
                cm = confusion(y, scoring.codes(report.labels, c.outputs.predictions), len(report.labels))
                out[f"confusion_{role}.png"] = confusion_png(
                    cm, report.labels, f"{report.specialist}: {role} ({c.model})"
                )
        return out

    def int8_check(self, spec: SpecialistSpec, model: TrainedModel, report: EvaluationReport, texts: list[str]):
        from fleet.kinds.classification import int8

        return int8.check(spec, model, report, texts)

    def serving_group(self, base_folder: str, int8: bool) -> EncoderGroup:
        from fleet.kinds.classification.serving import EncoderGroup

        return EncoderGroup(base_folder, int8)

    def int8_served(self, tags: dict[str, str]) -> bool:
        return tags.get("int8") == "passed"  # the parity check at registration passed

    def reference(
        self, spec: SpecialistSpec, embeddings: np.ndarray, texts: list[str], max_length: int, report: EvaluationReport
    ) -> bytes:
        return drift.build_reference(list(spec.labels), embeddings, report, spec.base_model, max_length).to_bytes()

    def drift(self, spec: SpecialistSpec, reference: bytes, window: TrafficWindow) -> DriftVerdict:
        d, rows, ref = spec.drift, window.rows, Reference.from_bytes(reference)
        found = drift.detect(
            ref,
            window.embeddings,
            rows["label"].tolist(),
            rows["score"].to_numpy(dtype=float),
            d.thresholds(),
            window.feedback,
            d.permutations,
            d.seed,
        )
        probs = window_probabilities(rows, ref.labels)
        estimate = drift.estimated_performance(ref, probs, d.min_estimated_score, d.estimate_assumes)
        if estimate is not None:
            found.signals["estimated_performance"] = estimate
            if estimate.fired:
                found.fired.append("estimated_performance")
                found.drifted = True
        return found

    def drift_figure(self, spec: SpecialistSpec, reference: bytes, window: pd.DataFrame) -> bytes:
        ref = Reference.from_bytes(reference)
        counts = window["label"].value_counts()
        total = max(int(counts.sum()), 1)
        current = {lab: float(counts.get(lab, 0)) / total for lab in ref.labels}
        return reference_vs_current_png(
            f"{spec.name}: reference vs current traffic",
            [
                ("predicted labels", "bars", ref.label_dist, current),
                ("top-label confidence", "hist", ref.samples["confidence"], window["score"].astype(float).to_numpy()),
            ],
        )

    def traffic_rows(self, texts: list[str], outputs: Outputs) -> list[dict]:
        probs = np.asarray(outputs.probabilities, dtype=float)
        return [
            {"text": t, "label": lab, "score": float(p.max()), "probs": [round(float(x), 5) for x in p]}
            for t, lab, p in zip(texts, outputs.predictions, probs)
        ]
