"""The fleet file, parsed into typed models.

A fleet file has fleet-wide ``defaults`` and one entry per specialist under ``specialists``. A specialist's
settings are deep-merged over the defaults, then validated, so that every error names the specialist and
the field it belongs to, for example ``specialists.sms-spam.train.lora.r: must be > 0``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import Field, SerializeAsAny, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from fleet.core.sections import (
    BaselineSpec,
    CurationSpec,
    DataSpec,
    DriftSpec,
    EvaluationSpec,
    GateSpec,
    LabelingSpec,
    LoraSpec,
    NearDuplicateSpec,
    PiiSpec,
    ServingSpec,
    SlaSpec,
    SliceSpec,
    SplitSpec,
    TcoSpec,
    TrainSpec,
    _Model,
)
from fleet.core.yamlfile import strict_yaml, yaml_problem

__all__ = [
    "BaselineSpec",
    "CurationSpec",
    "DataSpec",
    "DriftSpec",
    "EvaluationSpec",
    "FleetSpec",
    "GateSpec",
    "LabelingSpec",
    "LoraSpec",
    "NearDuplicateSpec",
    "PiiSpec",
    "ServingSpec",
    "SlaSpec",
    "SliceSpec",
    "SpecError",
    "SpecialistSpec",
    "SplitSpec",
    "TcoSpec",
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


class SpecialistSpec(_Model):
    """What every specialist has, whatever its kind.

    Each kind extends it with what only it knows (``fleet.kinds.<kind>.spec``, as peft's tuners own their
    configs): its own section of the fleet file, its defaults, the baselines that can judge it and the gate
    metrics it scores. The class variables below are those; a kind's spec sets them.
    """

    defaults: ClassVar[dict[str, Any]] = {}  # merged under the specialist's own settings
    baseline_kinds: ClassVar[frozenset[str]] = frozenset()  # evaluation.baselines[].kind that can judge it
    gate_metrics: ClassVar[tuple[str, ...]] = ()  # metrics the gate may use; the first is the default

    name: str = Field(..., description="Unique name; also the MLflow registered model's name.")
    task: str = Field(
        ...,
        description="The kind of specialist (``fleet.kinds``), e.g. text-classification or "
        "text-generation; it decides the data, model, metrics and baselines.",
    )
    description: str = Field("", description="One line on what the specialist does, for its model card.")
    base_model: str = Field(
        ...,
        min_length=1,
        description="Local path, package alias (minilm-l6, smollm2-135m) or Hugging Face hub id; "
        "each kind has a default.",
    )
    data: DataSpec
    compute: Literal["auto", "cpu", "gpu"] = Field(
        "auto",
        description="What its runs need when specialists run as deployments (FLEET_TASK_RUNNER=deployments): "
        "gpu sends them to the GPU work queue (FLEET_GPU_WORK_QUEUE), cpu to the pool's default queue; auto: "
        "gpu when the base's weights are larger than FLEET_CPU_MAX_BASE_GB, else cpu.",
    )
    labels: dict[str, str] = Field(
        ..., description="Classifiers: label -> natural-language description (used by the zero-shot baseline)."
    )
    curation: CurationSpec = Field(default_factory=CurationSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    split: SplitSpec = Field(default_factory=SplitSpec)
    gate: GateSpec = Field(default_factory=GateSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    drift: DriftSpec = Field(default_factory=DriftSpec)
    labeling: LabelingSpec = Field(default_factory=LabelingSpec)
    serving: ServingSpec = Field(default_factory=ServingSpec)
    sla: SlaSpec = Field(default_factory=SlaSpec)
    tco: TcoSpec = Field(default_factory=TcoSpec)

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

    @classmethod
    def kind_defaults(cls, raw: dict[str, Any]) -> dict[str, Any]:
        """The kind's defaults for this specialist (``raw``: its own settings, for defaults that depend on them)."""
        out = copy.deepcopy(cls.defaults)
        if cls.gate_metrics:
            out.setdefault("gate", {}).setdefault("metric", cls.gate_metrics[0])
        return out

    @model_validator(mode="before")
    @classmethod
    def _with_kind_defaults(cls, raw: Any) -> Any:
        return deep_merge(cls.kind_defaults(raw), raw) if isinstance(raw, dict) else raw

    @model_validator(mode="after")
    def _fits_kind(self) -> SpecialistSpec:
        wrong = [b.kind for b in self.evaluation.baselines or [] if b.kind not in self.baseline_kinds]
        if wrong:
            raise ValueError(
                f"evaluation.baselines: {', '.join(wrong)} cannot judge a {self.task} specialist "
                f"(use {', '.join(sorted(self.baseline_kinds))})"
            )
        teacher = self.labeling.teacher
        if teacher is not None and teacher.kind not in self.baseline_kinds:
            raise ValueError(
                f"labeling.teacher: {teacher.kind} cannot label for a {self.task} specialist "
                f"(use {', '.join(sorted(self.baseline_kinds))})"
            )
        fallback = self.serving.fallback
        if fallback is not None and fallback.kind not in self.baseline_kinds:
            raise ValueError(
                f"serving.fallback: {fallback.kind} cannot answer for a {self.task} specialist "
                f"(use {', '.join(sorted(self.baseline_kinds))})"
            )
        if self.sla.on_quality_breach == "escalate-all" and fallback is None:
            raise ValueError("sla.on_quality_breach: escalate-all needs serving.fallback (where else would it go?)")
        if self.gate.metric not in self.gate_metrics:
            raise ValueError(
                f"gate.metric: {self.gate.metric} does not apply to {self.task} "
                f"(use {', '.join(sorted(self.gate_metrics))})"
            )
        return self


class FleetSpec(_Model):
    specialists: dict[str, SerializeAsAny[SpecialistSpec]]
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


SpecModels = Mapping[str, type[SpecialistSpec]]  # task -> the spec model of its kind (``fleet.kinds``)


def parse_fleet(
    raw: Any,
    models: SpecModels,
    default_task: str,
    source: str = "<memory>",
    base_dir: Path | None = None,
    data_roots: Sequence[Path] | None = None,
) -> FleetSpec:
    """Validate a parsed fleet document; raise :class:`SpecError` listing every problem.

    Each specialist is validated by the spec model of its ``task`` (``default_task`` when unset); relative
    local data paths are taken relative to ``base_dir`` (the fleet file's folder). With ``data_roots`` (a
    fleet file written by someone else), a local data source must lie under one of them once symlinks are
    resolved, and the spec keeps the resolved path.
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
        merged = _merged(entry, defaults, str(name), base_dir)
        if merged is None:
            problems.append(f"specialists.{name}: must be a mapping")
            continue
        if data_roots is not None and (outside := _outside_roots(merged, data_roots)):
            problems.append(f"specialists.{name}.data.source: {outside}")
            continue
        spec, wrong = _validate(merged, models, default_task, f"specialists.{name}")
        if spec is not None:
            specialists[str(name)] = spec
        problems += wrong
    if problems:
        raise SpecError(source, problems)
    return FleetSpec(specialists=specialists, source=source)


def _merged(entry: Any, defaults: dict, name: str, base_dir: Path | None) -> dict | None:
    """A specialist's settings over the fleet's defaults, its local data path made absolute; None if not a mapping."""
    if entry is None:
        entry = {}
    if not isinstance(entry, dict):
        return None
    merged = deep_merge(defaults, entry)
    merged["name"] = name
    data = merged.get("data")
    if base_dir is not None and isinstance(data, dict) and isinstance(data.get("source"), str):
        src = data["source"]
        if src and "://" not in src and not Path(src).expanduser().is_absolute():
            data["source"] = str((base_dir / src).resolve())
    return merged


def _outside_roots(merged: dict, roots: Sequence[Path]) -> str | None:
    """Why a local data source may not be read (outside every data root), or None; a source inside one is
    replaced by its resolved path, so a symlink swapped later is not followed."""
    data = merged.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("source"), str):
        return None
    why, data["source"] = source_in_roots(data["source"], roots)
    return why


def source_in_roots(src: str, roots: Sequence[Path] | None) -> tuple[str | None, str]:
    """``(why not, source)``: why a source may not be read under ``roots`` (None: it may), and the source to
    read (a local path resolved, so a symlink swapped later is not followed). Local files and ``hf://`` names
    that are local folders are held to the roots; ``package://``, ``s3://`` and hub names are not local."""
    if roots is None:
        return None, src
    scheme = "hf://" if src.startswith("hf://") else ""
    path = src[len(scheme) :]
    if "://" in path or (scheme and not (path.startswith(("/", ".", "~")) or Path(path).expanduser().exists())):
        return None, src
    real = Path(path).expanduser().resolve()
    allowed = [Path(r).expanduser().resolve() for r in roots]
    if not any(real == r or r in real.parents for r in allowed):
        where = ", ".join(str(r) for r in allowed) or "none configured"
        return f"{src}: outside the data roots this fleet may read (FLEET_DATA_ROOTS: {where})", src
    return None, scheme + str(real)


def _validate(merged: dict, models: SpecModels, default_task: str, prefix: str) -> tuple[SpecialistSpec | None, list]:
    """The specialist's spec, or None and its problems; an unknown task is one problem, and the rest of its
    settings are still checked (as the default kind's) so that one run lists everything."""
    task = merged.setdefault("task", default_task)
    problems = []
    if not isinstance(task, str) or task not in models:
        problems.append(f"{prefix}.task: must be one of {' or '.join(repr(t) for t in models)}")
        merged, task = {**merged, "task": default_task}, default_task
    try:
        spec = models[task].model_validate(merged)
    except ValidationError as exc:
        return None, problems + _problems(prefix, exc)
    return (None, problems) if problems else (spec, [])


def load_fleet(
    path: str | Path, models: SpecModels, default_task: str, data_roots: Sequence[Path] | None = None
) -> FleetSpec:
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
    return parse_fleet(raw, models, default_task, str(path), path.resolve().parent, data_roots)
