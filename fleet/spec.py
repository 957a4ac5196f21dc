"""The fleet file, parsed into typed models.

A fleet file has fleet-wide ``defaults`` and one entry per specialist under
``specialists``. A specialist's settings are deep-merged over the defaults, then
validated, so that every error names the specialist and the field it belongs to,
for example ``specialists.sms-spam.train.lora.r: must be > 0``.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class SpecError(ValueError):
    """An invalid fleet file: ``problems`` holds one line per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid fleet file {source} ({len(problems)} problem(s)):\n{lines}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraSpec(_Model):
    r: int = Field(8, gt=0, description="LoRA rank.")
    alpha: int = Field(16, gt=0, description="LoRA scaling numerator (lora_alpha).")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on the LoRA branch.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["query", "value"],
        min_length=1,
        description="Names of the linear layers that get LoRA adapters.",
    )
    modules_to_save: list[str] = Field(
        default_factory=list,
        description="Extra layers trained in full and saved with the model (the classifier head always is).",
    )


class TrainSpec(_Model):
    epochs: float = Field(1.0, gt=0, description="Passes over the training split.")
    learning_rate: float = Field(5e-4, gt=0, description="Peak learning rate (LoRA likes higher rates than full fine-tuning).")
    batch_size: int = Field(16, gt=0, description="Examples per optimisation step.")
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: float = Field(0.06, ge=0, description="Warm-up: a fraction of all steps if < 1, else a step count.")
    max_length: int | None = Field(
        None, gt=0, le=512, description="Token limit per text; chosen from the data (95th percentile) when unset."
    )
    seed: int = Field(42, description="Seed for initialisation, shuffling and dropout.")
    class_weighting: Literal["balanced", "none"] = Field(
        "none", description="'balanced' weighs each label's loss by the inverse of its frequency (macro-F1 rewards it)."
    )
    linear_probe_init: bool = Field(
        True,
        description="Fit the head on frozen embeddings before fine-tuning (LP-FT), so a random head "
        "does not distort the pretrained features.",
    )
    lora: LoraSpec = Field(default_factory=LoraSpec)


class SplitSpec(_Model):
    validation: float = Field(0.1, gt=0, lt=0.5, description="Share of rows for the validation split.")
    test: float = Field(0.2, gt=0, lt=0.5, description="Share of rows for the frozen test split.")
    seed: int = Field(42, description="Seed for the stratified split and for sampling.")


class GateSpec(_Model):
    metric: Literal["macro_f1", "accuracy"] = Field("macro_f1", description="The primary metric of the gate.")
    min_gain_over_champion: float = Field(
        0.0, ge=0, description="The challenger must beat the champion by more than this (in metric points, 0-1)."
    )
    min_gain_over_baseline: float = Field(
        0.05, ge=0, description="The challenger must beat the best general baseline by at least this."
    )
    alpha: float = Field(
        0.05, gt=0, lt=1, description="Significance level of McNemar's exact test, challenger vs champion."
    )
    max_latency_p95_ms: float | None = Field(None, gt=0, description="Budget: p95 latency at batch size 1.")
    max_cost_per_1k: float | None = Field(None, gt=0, description="Budget: cost per 1,000 predictions.")


class SliceSpec(_Model):
    name: str = Field(..., min_length=1, description="Name shown in reports.")
    column: str | None = Field(None, description="A column kept with data.extra_columns ...")
    value: str | None = Field(None, description="... and the value it must have.")
    min_chars: int | None = Field(None, ge=0, description="Texts at least this long (characters).")
    max_chars: int | None = Field(None, gt=0, description="Texts at most this long (characters).")
    regex: str | None = Field(None, description="Texts that match this regular expression (re.search).")
    guarded: bool = Field(False, description="A guarded slice may not regress beyond its tolerance.")
    tolerance: float = Field(0.02, ge=0, description="Allowed drop of the gate metric on a guarded slice.")

    @model_validator(mode="after")
    def _one_kind(self) -> "SliceSpec":
        if (self.column is None) != (self.value is None):
            raise ValueError("column: column and value go together")
        if self.column is None and self.regex is None and self.min_chars is None and self.max_chars is None:
            raise ValueError("name: a slice needs column/value, min_chars/max_chars or regex")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex: not a valid regular expression ({exc})") from None
        return self


class BaselineSpec(_Model):
    kind: Literal["embedding-zero-shot", "hf-zero-shot", "openai-chat"] = Field(
        "embedding-zero-shot", description="How the general-purpose model classifies."
    )
    name: str | None = Field(None, description="Shown in reports; defaults to kind and model.")
    model: str | None = Field(None, description="hf-zero-shot: an NLI model (path or hub id); openai-chat: the model name.")
    url: str | None = Field(None, description="openai-chat: base URL of an OpenAI-compatible API (..../v1).")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai-chat: environment variable holding the key.")
    prompt: str = Field(
        "Classify the text into exactly one of these labels: {labels}.\n{descriptions}\nText: {text}\nAnswer with the label only.",
        description="openai-chat: prompt template with {labels}, {descriptions} and {text}.",
    )
    price_per_1k_input_tokens: float = Field(0.0, ge=0)
    price_per_1k_output_tokens: float = Field(0.0, ge=0)
    timeout_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _needs(self) -> "BaselineSpec":
        if self.kind == "openai-chat" and (not self.url or not self.model):
            raise ValueError("url: openai-chat needs url and model")
        if self.kind == "hf-zero-shot" and not self.model:
            raise ValueError("model: hf-zero-shot needs a model")
        return self


class EvaluationSpec(_Model):
    bootstrap_resamples: int = Field(1000, ge=100, description="Bootstrap resamples for confidence intervals.")
    confidence_level: float = Field(0.95, gt=0.5, lt=1)
    seed: int = Field(0, description="Seed of the bootstrap.")
    serving_batch_size: int = Field(32, gt=0, description="Batch size for the throughput measurement.")
    latency_samples: int = Field(50, gt=0, description="Single-text predictions timed for p50/p95 latency.")
    price_per_cpu_hour: float = Field(0.04, ge=0, description="Price of one CPU core-hour, for cost per 1,000 predictions.")
    price_per_gpu_hour: float = Field(2.5, ge=0, description="Price of one GPU-hour, when serving on GPU.")
    slices: list[SliceSpec] = Field(default_factory=list)
    baselines: list[BaselineSpec] = Field(default_factory=lambda: [BaselineSpec()])


class NearDuplicateSpec(_Model):
    enabled: bool = Field(True, description="Remove near-duplicates (MinHash LSH) within the data and across splits.")
    threshold: float = Field(
        0.6, gt=0, le=1,
        description="Jaccard similarity of shingle sets at which texts are twins. Default from "
        "benchmarks/near_duplicates.py: on SMS with one-word edits, character 5-grams at 0.6 catch 88% of "
        "twins and merge none of 20,000 distinct pairs; word 5-shingles at 0.8 catch 23%.",
    )
    shingle: Literal["chars", "words"] = Field("chars", description="Shingles of characters or of words.")
    shingle_size: int = Field(5, gt=0, description="Characters or words per shingle; a shorter text is one shingle.")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations (accuracy vs speed).")


class PiiSpec(_Model):
    kinds: list[Literal["email", "phone", "card", "iban", "ip"]] = Field(
        default_factory=lambda: ["email", "phone", "card", "iban", "ip"], description="Which kinds of PII to look for."
    )
    action: Literal["redact", "drop-row"] = Field("redact", description="Replace by a typed placeholder, or quarantine the row.")
    phone_regions: list[str] = Field(
        default_factory=lambda: ["US", "GB"], description="Regions whose national phone formats are recognised."
    )


class CurationSpec(_Model):
    near_duplicates: NearDuplicateSpec = Field(default_factory=NearDuplicateSpec)
    pii: PiiSpec = Field(default_factory=PiiSpec)
    min_chars: int = Field(1, ge=1, description="Shorter texts (after cleaning) are quarantined.")
    max_chars: int = Field(5000, gt=0, description="Longer texts are quarantined.")
    min_tokens: int = Field(1, ge=1, description="Fewer words (\\w+ runs) are quarantined.")
    max_tokens: int | None = Field(None, gt=0, description="More words are quarantined.")
    min_examples_per_label: int = Field(3, ge=3, description="Every label needs this many clean rows.")
    on_too_few: Literal["error", "drop-label"] = Field(
        "error", description="A label below min_examples_per_label: stop with an error, or quarantine its rows."
    )
    language: str | None = Field(None, description="Keep only texts in this language (ISO 639-1, needs `langid`).")

    @model_validator(mode="after")
    def _lengths(self) -> "CurationSpec":
        if self.max_chars < self.min_chars:
            raise ValueError("max_chars: must be >= min_chars")
        if self.max_tokens is not None and self.max_tokens < self.min_tokens:
            raise ValueError("max_tokens: must be >= min_tokens")
        return self


class DataSpec(_Model):
    source: str = Field(
        ..., min_length=1, description="package://PKG/PATH, a local file, hf://NAME, or s3://BUCKET/KEY."
    )
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet"] = Field(
        "auto", description="File format; 'auto' uses the file extension."
    )
    header: bool = Field(True, description="Whether a CSV/TSV file starts with a header row.")
    names: list[str] | None = Field(None, description="Column names for a file without a header row.")
    encoding: str = Field("utf-8", description="Text encoding of CSV/TSV/JSONL files.")
    text_column: str = Field("text", min_length=1)
    label_column: str = Field("label", min_length=1)
    hf_split: str = Field("train", description="Which split of an hf:// dataset to read.")
    extra_columns: list[str] = Field(
        default_factory=list, description="Columns kept with each row (for evaluation slices)."
    )
    label_map: dict[str, str] = Field(
        default_factory=dict, description="Raw label value -> label name, applied before validation."
    )
    max_rows: int | None = Field(
        None, gt=0, description="Stratified, seeded sample of at most this many clean rows (for demos)."
    )

    @model_validator(mode="after")
    def _names_when_headerless(self) -> "DataSpec":
        if not self.header and not self.names:
            raise ValueError("names: required when header is false")
        return self


class DriftSpec(_Model):
    window_hours: float = Field(24.0, gt=0, description="How far back the monitor reads traffic.")
    min_window_rows: int = Field(50, gt=0, description="Fewer rows than this: no verdict (too little evidence).")
    max_window_rows: int = Field(500, gt=0, description="At most this many recent rows are compared (speed).")
    input_p: float = Field(0.01, gt=0, lt=1, description="Input drift fires when the MMD permutation p-value is below this.")
    prediction_p: float = Field(0.01, gt=0, lt=1, description="Prediction drift: chi-square p-value threshold.")
    confidence_p: float = Field(0.01, gt=0, lt=1, description="Confidence drift: KS p-value threshold.")
    performance_p: float = Field(0.01, gt=0, lt=1, description="Performance drift (with feedback): binomial p-value threshold.")
    permutations: int = Field(300, ge=50, description="Permutations of the MMD test.")
    schedule: str = Field("0 * * * *", description="Cron of the monitor deployment.")
    cooldown_minutes: float = Field(60.0, ge=0, description="After a retrain starts, new alarms are recorded but start nothing.")
    seed: int = 0

    def thresholds(self) -> dict[str, float]:
        return {"input": self.input_p, "prediction": self.prediction_p, "confidence": self.confidence_p,
                "performance": self.performance_p}


class SpecialistSpec(_Model):
    name: str = Field(..., description="Unique name; also the MLflow registered model's name.")
    task: Literal["text-classification"] = "text-classification"
    description: str = Field("", description="One line on what the specialist does, for its model card.")
    base_model: str = Field(
        "minilm-l6", min_length=1, description="Local path, package alias (minilm-l6) or Hugging Face hub id."
    )
    data: DataSpec
    labels: dict[str, str] = Field(
        ..., description="Label -> natural-language description (used by the zero-shot baseline)."
    )
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
            if len(v) < 2:
                raise ValueError("needs at least two labels")
            return {str(k): (str(d) if d else str(k)) for k, d in v.items()}
        return v


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


def _message(err: dict) -> str:
    t = err["type"]
    ctx = {k: (f"{v:g}" if isinstance(v, float) else v) for k, v in (err.get("ctx") or {}).items()}
    simple = {
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
    if t in simple:
        try:
            return simple[t].format(**ctx)
        except KeyError:
            return simple[t]
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
        m = re.match(r"^([a-z_]+): (.*)$", msg)
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
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SpecError(str(path), [f"not valid YAML: {exc}"]) from None
    except UnicodeDecodeError as exc:
        raise SpecError(str(path), [f"not UTF-8 text: {exc}"]) from None
    return parse_fleet(raw, str(path), base_dir=path.resolve().parent)
