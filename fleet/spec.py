"""The fleet file, parsed into typed models.

A fleet file has fleet-wide ``defaults`` and one entry per specialist under ``specialists``. A specialist's
settings are deep-merged over the defaults, then validated, so that every error names the specialist and
the field it belongs to, for example ``specialists.sms-spam.train.lora.r: must be > 0``.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from fleet.config import (
    BaselineSpec,
    CurationSpec,
    DataSpec,
    DriftSpec,
    EvaluationSpec,
    GateSpec,
    LoraSpec,
    NearDuplicateSpec,
    PiiSpec,
    SliceSpec,
    SplitSpec,
    TrainSpec,
    _Model,
)
from fleet.config_generation import GenerationSpec
from fleet.yamlfile import strict_yaml, yaml_problem

__all__ = [
    "BaselineSpec",
    "CurationSpec",
    "DataSpec",
    "DriftSpec",
    "EvaluationSpec",
    "FleetSpec",
    "GateSpec",
    "GenerationSpec",
    "LoraSpec",
    "NearDuplicateSpec",
    "PiiSpec",
    "SliceSpec",
    "SpecError",
    "SpecialistSpec",
    "SplitSpec",
    "TrainSpec",
    "load_fleet",
    "parse_fleet",
]

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class SpecError(ValueError):
    """An invalid fleet file: ``problems`` holds one line per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid fleet file {source} ({len(problems)} problem(s)):\n{lines}")


CLASSIFICATION: Final = "text-classification"
GENERATION: Final = "text-generation"
BASELINES = {
    CLASSIFICATION: {"embedding-zero-shot", "hf-zero-shot", "openai-chat"},
    GENERATION: {"base-model", "openai-chat"},
}
METRICS = {CLASSIFICATION: {"macro_f1", "accuracy"}, GENERATION: {"field_f1", "exact_match", "schema_valid", "chrf"}}
# What a task changes in the defaults (a specialist's own settings and the fleet's `defaults` win).
TASK_DEFAULTS: dict[str, dict] = {
    CLASSIFICATION: {"evaluation": {"baselines": [{"kind": "embedding-zero-shot"}]}},
    GENERATION: {
        "base_model": "smollm2-135m",
        "labels": {},
        "train": {"lora": {"target_modules": ["q_proj", "v_proj"]}, "batch_size": 8, "learning_rate": 1.0e-3},
        "evaluation": {
            "latency_samples": 5,
            "timing_rows": 16,
            "serving_batch_size": 8,
            "baselines": [{"kind": "base-model", "shots": 0}, {"kind": "base-model", "shots": 3}],
        },
        "drift": {"embedding_model": "minilm-l6"},
    },
}


class SpecialistSpec(_Model):
    name: str = Field(..., description="Unique name; also the MLflow registered model's name.")
    task: Literal["text-classification", "text-generation"] = Field(
        CLASSIFICATION, description="text-classification: a text in, one of the labels out; text-generation: an "
        "instruction in, a generated answer out (free text or JSON).")  # fmt: skip
    description: str = Field("", description="One line on what the specialist does, for its model card.")
    base_model: str = Field(
        "minilm-l6", min_length=1,
        description="Local path, package alias (minilm-l6, smollm2-135m) or Hugging Face hub id.",
    )  # fmt: skip
    data: DataSpec
    labels: dict[str, str] = Field(
        ..., description="Classifiers: label -> natural-language description (used by the zero-shot baseline)."
    )
    generation: GenerationSpec = Field(default_factory=GenerationSpec, description="Generative specialists only.")
    curation: CurationSpec = Field(default_factory=CurationSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    split: SplitSpec = Field(default_factory=SplitSpec)
    gate: GateSpec = Field(default_factory=GateSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    drift: DriftSpec = Field(default_factory=DriftSpec)

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("must be lowercase letters, digits and dashes, starting with a letter or digit")
        return v

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, v: Any) -> Any:
        if isinstance(v, list):
            v = {str(x): str(x) for x in v}
        if isinstance(v, dict):
            if len(v) == 1:
                raise ValueError("needs at least two labels")
            return {str(k): (str(d) if d else str(k)) for k, d in v.items()}
        return v

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        task = raw.get("task", CLASSIFICATION)
        defaults = copy.deepcopy(TASK_DEFAULTS.get(task, {}) if isinstance(task, str) else {})
        generation: dict = raw["generation"] if isinstance(raw.get("generation"), dict) else {}
        if task == GENERATION:
            json_out = generation.get("output") == "json" or generation.get("json_schema") is not None
            defaults["gate"] = {"metric": "field_f1" if json_out else "chrf"}
        return deep_merge(defaults, raw)

    @model_validator(mode="after")
    def _fits_task(self) -> SpecialistSpec:
        if self.task == CLASSIFICATION and len(self.labels) < 2:
            raise ValueError("labels: needs at least two labels")
        wrong = [b.kind for b in self.evaluation.baselines or [] if b.kind not in BASELINES[self.task]]
        if wrong:
            raise ValueError(
                f"evaluation.baselines: {', '.join(wrong)} cannot judge a {self.task} specialist "
                f"(use {', '.join(sorted(BASELINES[self.task]))})"
            )
        if self.gate.metric not in METRICS[self.task]:
            raise ValueError(
                f"gate.metric: {self.gate.metric} does not apply to {self.task} "
                f"(use {', '.join(sorted(METRICS[self.task]))})"
            )
        if self.gate.metric in ("field_f1", "schema_valid") and self.generation.output != "json":
            raise ValueError(f"gate.metric: {self.gate.metric} needs generation.output: json")
        return self


class FleetSpec(_Model):
    specialists: dict[str, SpecialistSpec]
    source: str = Field("<memory>", exclude=True)

    def select(self, only: list[str] | None) -> list[SpecialistSpec]:
        """The specialists named in ``only`` (all when empty); unknown names are an error."""
        if not only:
            return list(self.specialists.values())
        unknown = [n for n in only if n not in self.specialists]
        if unknown:
            raise SpecError(
                self.source,
                [f"--only {n}: no such specialist (known: {', '.join(self.specialists)})" for n in unknown],
            )
        return [self.specialists[n] for n in only]


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``; nested mappings merge, everything else replaces."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


_SIMPLE = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "missing": "required field is missing",
    "extra_forbidden": "unknown field",
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "too_short": "must have at least {min_length} item(s)",
    "string_too_short": "must not be empty",
}


def _message(err: ErrorDetails) -> str:
    t = err["type"]
    ctx = {k: (f"{v:g}" if isinstance(v, float) else v) for k, v in (err.get("ctx") or {}).items()}
    if t in _SIMPLE:
        try:
            return _SIMPLE[t].format(**ctx)
        except KeyError:
            return _SIMPLE[t]
    if t == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if t == "value_error":
        return str(ctx.get("error", err["msg"]))
    return err["msg"]


def _problems(prefix: str, exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = _message(err)
        # model-level validators report "field: message"; fold the field into the location
        m = re.match(r"^([a-z_][a-z_.]*): (.*)$", msg)
        if m and err["type"] == "value_error":
            loc, msg = (f"{loc}.{m.group(1)}" if loc else m.group(1)), m.group(2)
        out.append(f"{prefix}{'.' + loc if loc else ''}: {msg}")
    return out


def parse_fleet(raw: Any, source: str = "<memory>", base_dir: Path | None = None) -> FleetSpec:
    """Validate a parsed fleet document; raise :class:`SpecError` listing every problem.

    Relative local data paths are taken relative to ``base_dir`` (the fleet file's folder).
    """
    if not isinstance(raw, dict):
        raise SpecError(source, ["top level: must be a mapping with 'defaults' and 'specialists'"])
    problems: list[str] = []
    unknown = sorted(set(raw) - {"defaults", "specialists"})
    problems += [f"{k}: unknown top-level field (expected 'defaults' and 'specialists')" for k in unknown]
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        problems.append("defaults: must be a mapping")
        defaults = {}
    entries = raw.get("specialists")
    if not isinstance(entries, dict) or not entries:
        problems.append("specialists: must be a non-empty mapping of name -> settings")
        raise SpecError(source, problems)

    specialists: dict[str, SpecialistSpec] = {}
    for name, entry in entries.items():
        prefix = f"specialists.{name}"
        if entry is None:
            entry = {}
        if not isinstance(entry, dict):
            problems.append(f"{prefix}: must be a mapping")
            continue
        merged = deep_merge(defaults, entry)
        merged["name"] = str(name)
        data = merged.get("data")
        if base_dir is not None and isinstance(data, dict) and isinstance(data.get("source"), str):
            src = data["source"]
            if src and "://" not in src and not Path(src).expanduser().is_absolute():
                data["source"] = str((base_dir / src).resolve())
        try:
            specialists[str(name)] = SpecialistSpec.model_validate(merged)
        except ValidationError as exc:
            problems += _problems(prefix, exc)
    if problems:
        raise SpecError(source, problems)
    return FleetSpec(specialists=specialists, source=source)


def load_fleet(path: str | Path) -> FleetSpec:
    """Read and validate a fleet file."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(str(path), [f"{path}: file not found"])
    try:
        raw = strict_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SpecError(str(path), [f"not valid YAML: {yaml_problem(exc)}"]) from None
    except UnicodeDecodeError as exc:
        raise SpecError(str(path), [f"not UTF-8 text: {exc}"]) from None
    return parse_fleet(raw, str(path), base_dir=path.resolve().parent)
