"""``task: text-generation``: an instruction in, a generated answer out (free text, or JSON).

Data: ``prompt_column`` and ``response_column`` (and optionally ``group_column``: a group stays in one
split); responses must be non-empty and within ``generation.max_response_tokens`` of the base model's
tokenizer, prompts within ``max_prompt_tokens``; for a JSON task, responses must parse and match
``generation.json_schema``. Model: a LoRA adapter on a small causal language model, trained on the
responses with the base model's chat template. Metrics: exact match and, for JSON, field-level F1
(default gate metric) and schema validity, else chrF; paired tests row by row. Baselines: the base
model zero-shot and few-shot, and any OpenAI-compatible endpoint. Drift: prompt embeddings, answer
length, JSON validity, and exact match on feedback.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fleet.core.results import ContenderScore, EvaluationReport, Outputs, PairedTest, TrainedModel
from fleet.core.spec import SpecialistSpec
from fleet.data.cleaning import Quarantine, TargetCheck
from fleet.data.sources import CurationError
from fleet.data.splitting import group_split, stratified_sample, stratified_split
from fleet.kinds.base import Baseline, Fit, Predictor, SpecialistKind
from fleet.kinds.generation import answers, drift, scoring
from fleet.kinds.generation.spec import TASK, GenerativeSpec, generation_of
from fleet.metrics.drift import DriftVerdict, Reference, TrafficWindow
from fleet.report.figures import bars_png

if TYPE_CHECKING:
    from fleet.kinds.generation.serving import CausalGroup


class TextGeneration(SpecialistKind):
    task = TASK
    spec_model = GenerativeSpec
    target = "response"
    answer_column = "output"
    conflict_rule = "conflicting-responses"
    redact_target = True

    def source_columns(self, spec: SpecialistSpec) -> dict[str, str]:
        return {"text": spec.data.prompt_column, "response": spec.data.response_column}

    def labels(self, spec: SpecialistSpec) -> list[str]:
        return []

    def target_check(self, spec: SpecialistSpec) -> TargetCheck:
        from fleet.kinds.generation.chat_template import token_counter
        from fleet.models.base_models import load_tokenizer

        g = generation_of(spec)
        count = token_counter(load_tokenizer(spec.base_model), g.system)
        return answers.response_check(g.output, g.json_schema, count, g.max_prompt_tokens, g.max_response_tokens)

    def check_base(self, spec: SpecialistSpec) -> list[str]:
        """llama.cpp (the default engine) answers with the base as the fleet's GGUF writer converts it, which
        knows Llama-family bases only: any other architecture is refused here, before curation and training,
        not after them. Without llama-cpp-python installed, transformers answers instead (a note says so)."""
        from fleet.models import base_models, gguf_export, llama_engine

        if generation_of(spec).engine != "llama-cpp":
            return []
        if not llama_engine.available():
            return [
                "llama-cpp-python is not installed, so transformers answers for it (engine: transformers); "
                "install the `gguf` extra (pip install 'specialist-fleet[gguf]', cmake and a C++ compiler) for llama.cpp"
            ]
        arch = base_models.architecture(spec.base_model)
        if arch is not None and arch != gguf_export.ARCH:
            raise base_models.TrainingError(
                f"base model {spec.base_model!r} is a {arch} model, and the llama.cpp engine (the default) answers "
                f"with Llama-family bases only (model_type {gguf_export.ARCH}: SmolLM2, TinyLlama, Llama 3, ...); set "
                "`engine: transformers` in this specialist's generation section, or choose a Llama-family base"
            )
        return []

    def check_dataset(self, spec: SpecialistSpec, good: pd.DataFrame, q: Quarantine) -> pd.DataFrame:
        if len(good) < 10:
            raise CurationError(
                f"{spec.data.source}: after cleaning, {len(good)} pair(s) remain; "
                f"specialist {spec.name} needs at least 10 to train and test"
            )
        return good

    def sample(self, spec: SpecialistSpec, good: pd.DataFrame, n: int) -> pd.DataFrame:
        return stratified_sample(good, n, spec.split.seed, by=spec.data.group_column)

    def split(self, spec: SpecialistSpec, good: pd.DataFrame) -> dict[str, pd.DataFrame]:
        if spec.data.group_column:
            return group_split(good, spec.split, spec.data.group_column)
        return stratified_split(good, spec.split, by=None)

    def training_settings(self, spec: SpecialistSpec) -> dict:
        g = generation_of(spec)
        return {
            "system": g.system,
            "output": g.output,
            "json_schema": g.json_schema,  # max_new_tokens: stored with it
            "max_prompt_tokens": g.max_prompt_tokens,
            "max_response_tokens": g.max_response_tokens,
            "max_new_tokens": g.max_new_tokens,
        }

    def train(self, spec: SpecialistSpec, train: pd.DataFrame, run_dir: Path, progress: bool = True) -> Fit:
        from fleet.kinds.generation.train import fine_tune

        return fine_tune(spec, train, run_dir, progress)

    def load(self, model_dir: str | Path, name: str, spec: SpecialistSpec | None = None) -> Predictor:
        from fleet.kinds.generation.predict import Generator

        if spec is None:
            return Generator(model_dir, name=name)
        g = generation_of(spec)
        return Generator(model_dir, name=name, engine=g.engine, quant=g.gguf_quant)

    def save_merged(self, model_dir: Path, dest: Path) -> None:
        from fleet.kinds.generation.predict import Generator

        generator = Generator(model_dir, engine="transformers")
        generator.model.save_pretrained(str(dest))
        generator.tokenizer.save_pretrained(str(dest))

    def to_frame(self, outputs: Outputs) -> pd.DataFrame:
        frame = pd.DataFrame({"output": outputs.predictions})
        parsed = [answers.parse_json(a) for a in outputs.predictions]
        if any(p is not None for p in parsed):
            frame["json"] = pd.Series(parsed, dtype=object)
        return frame

    def baselines(self, spec: SpecialistSpec, train: pd.DataFrame) -> list[Baseline]:
        from fleet.kinds.generation.baselines import build

        return [build(spec, b, train) for b in spec.evaluation.baselines or []]

    def score(self, spec: SpecialistSpec, role: str, name: str, outputs: Outputs, test: pd.DataFrame) -> ContenderScore:
        return scoring.score(spec, role, name, outputs, test)

    def paired_test(self, spec: SpecialistSpec, references: list[str], a: Outputs, b: Outputs) -> PairedTest:
        return scoring.paired_test(spec, references, a, b)

    def confidence(self, spec: SpecialistSpec, outputs: Outputs) -> np.ndarray:
        """The answer's mean token log-probability (0 at best); a JSON answer that breaks the schema is below
        every valid one (-1000 plus its log-probability), so it escalates first."""
        n = len(outputs.predictions)
        lp = np.zeros(n) if outputs.confidence is None else np.asarray(outputs.confidence, dtype=float)
        g = generation_of(spec)
        if g.output == "json":
            ok = np.array([answers.valid(a, g.json_schema) for a in outputs.predictions], dtype=bool)
            lp = np.where(ok, lp, lp - 1000.0)
        return lp

    def row_quality(self, spec: SpecialistSpec, outputs: Outputs, references: list[str]) -> tuple[str, np.ndarray]:
        return spec.gate.metric, scoring.row_metric(spec, scoring.per_row(spec, outputs, references)).astype(float)

    def usable(self, spec: SpecialistSpec, outputs: Outputs) -> np.ndarray:
        g = generation_of(spec)
        if g.output == "json":
            return np.array([answers.parse_json(a) is not None for a in outputs.predictions], dtype=bool)
        return np.array([bool(a.strip()) for a in outputs.predictions], dtype=bool)

    def figures(self, report: EvaluationReport) -> dict[str, bytes]:
        m = report.metric
        scores = [(c.model, c.value(m)) for c in [report.challenger, report.champion, *report.baselines] if c]
        return {
            f"{m}.png": bars_png(
                [s[0] for s in scores], [s[1] for s in scores], f"{report.specialist}: {m}", "contender", m
            )
        }

    def embedding_length(self, model: TrainedModel) -> int:
        return 128  # prompts are embedded by a sentence encoder, not the generative model

    def serving_group(self, base_folder: str, int8: bool) -> CausalGroup:
        from fleet.kinds.generation.serving import CausalGroup

        return CausalGroup(base_folder)  # int8 is an encoder path

    def reference(
        self, spec: SpecialistSpec, embeddings: np.ndarray, texts: list[str], max_length: int, report: EvaluationReport
    ) -> bytes:
        model = spec.drift.embedding_model or "minilm-l6"
        return drift.build_reference(
            embeddings, report, model, max_length, generation_of(spec).output == "json"
        ).to_bytes()

    def drift(self, spec: SpecialistSpec, reference: bytes, window: TrafficWindow) -> DriftVerdict:
        d = spec.drift
        schema = generation_of(spec).json_schema
        return drift.detect(Reference.from_bytes(reference), window, d.thresholds(), d.permutations, d.seed, schema)

    def drift_figure(self, spec: SpecialistSpec, reference: bytes, window: pd.DataFrame) -> bytes:
        return drift.figure(spec.name, Reference.from_bytes(reference), window, generation_of(spec).json_schema)

    def traffic_rows(self, texts: list[str], outputs: Outputs) -> list[dict]:
        return [{"text": t, "output": a} for t, a in zip(texts, outputs.predictions)]
