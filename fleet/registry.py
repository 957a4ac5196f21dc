"""The MLflow model registry: one registered model per specialist.

Each version is a pyfunc model holding the merged transformers classifier, so
``mlflow.pyfunc.load_model("models:/NAME@champion").predict(["some text"])``
returns labels and scores offline. Versions carry lineage tags (dataset
version, base model, code version, trigger, training key) and the metrics of
all three contenders. The ``champion`` alias moves last, only when the gate
passed; otherwise the version gets the ``challenger`` alias and the reason.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from fleet.curation import DatasetVersion
from fleet.spec import SpecialistSpec

CHAMPION = "champion"
CHALLENGER = "challenger"
TRIGGERS = ("manual", "schedule", "drift")


class RegistryError(RuntimeError):
    """The registry could not be read or written; the message names the model and the server."""


class SpecialistModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: a list of texts in, a frame of ``label`` and ``score`` out."""

    def load_context(self, context):
        from fleet.training import TextClassifier

        self.classifier = TextClassifier(context.artifacts["model"])

    def predict(self, context, model_input: list[str], params=None) -> pd.DataFrame:
        texts = [str(t) for t in model_input]
        preds = self.classifier.predict(texts)
        return pd.DataFrame({"label": [p[0] for p in preds], "score": [p[1] for p in preds]})


def code_version() -> str:
    """The git commit of the checkout this code runs from, or the installed package's version."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return "specialist-fleet==" + version("specialist-fleet")
        except PackageNotFoundError:
            return "unknown"


def _client() -> MlflowClient:
    return MlflowClient()


def _experiment(name: str, artifact_root: str | None) -> str:
    client = _client()
    exp_name = f"fleet-{name}"
    exp = client.get_experiment_by_name(exp_name)
    if exp is not None:
        return exp.experiment_id
    location = f"{artifact_root.rstrip('/')}/{exp_name}" if artifact_root else None
    if location and "://" not in location:
        location = Path(location).resolve().as_uri()
    return client.create_experiment(exp_name, artifact_location=location)


def champion_version(name: str):
    """The champion's ModelVersion, or None when the specialist has none yet."""
    try:
        return _client().get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise RegistryError(f"registered model {name!r}: cannot read its champion: {exc.message}") from None


def download_model_dir(name: str, version: str, dest: str | Path) -> str:
    """Fetch a version's classifier folder (the pyfunc's ``model`` artifact) to ``dest``."""
    local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(dest))
    model_dir = Path(local) / "artifacts" / "model"
    if not (model_dir / "fleet.json").is_file():
        raise RegistryError(f"models:/{name}/{version}: not a fleet specialist model (no artifacts/model/fleet.json)")
    return str(model_dir)


def find_version(name: str, train_key: str):
    """A registered version trained with ``train_key`` (same data and settings), if any."""
    try:
        found = _client().search_model_versions(f"name='{name}' and tags.train_key='{train_key}'")
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise RegistryError(f"registered model {name!r}: search failed: {exc.message}") from None
    return max(found, key=lambda v: int(v.version)) if found else None


def model_card(spec: SpecialistSpec, dataset: DatasetVersion, report: dict, tags: dict, train: dict) -> str:
    """The version description: what the model is for, what it was trained on, how it scored."""
    c = report["contenders"]
    lines = [
        f"# {spec.name}",
        "",
        spec.description or f"Text classifier for {spec.name}.",
        "",
        "## Labels",
        *[f"- `{lab}`: {desc}" for lab, desc in spec.labels.items()],
        "",
        "## Training",
        f"- Base model: `{spec.base_model}`, LoRA r={spec.train.lora.r}, alpha={spec.train.lora.alpha}, "
        f"targets {', '.join(spec.train.lora.target_modules)}; adapter merged into the weights.",
        f"- {train['train_examples']} training examples, {spec.train.epochs:g} epoch(s), lr {spec.train.learning_rate:g}, "
        f"max length {train['max_length']} tokens, seed {spec.train.seed}.",
        f"- Dataset version `{dataset.version}` from `{dataset.source}` "
        f"(splits: {', '.join(f'{k} {v}' for k, v in dataset.counts.items())}).",
        f"- Code version `{tags['code_version']}`, trigger `{tags['trigger']}`.",
        "",
        "## Evaluation (frozen test split)",
        "| contender | accuracy | macro-F1 |",
        "|---|---:|---:|",
    ]
    for role in ("challenger", "champion", "baseline"):
        if c.get(role):
            lines.append(f"| {role} ({c[role]['model']}) | {c[role]['accuracy']:.4f} | {c[role]['macro_f1']:.4f} |")
    lines += ["", f"## Gate: {report['gate']['verdict']}", *[f"- {r}" for r in report["gate"]["reasons"]]]
    lines += ["", "## Use", "```python", "import mlflow", f'm = mlflow.pyfunc.load_model("models:/{spec.name}@champion")',
              'm.predict(["some text"])  # -> DataFrame with label, score', "```"]
    return "\n".join(lines) + "\n"


@dataclass
class Registration:
    name: str
    version: str
    run_id: str
    alias: str
    verdict: str

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def _flat(prefix: str, d: dict) -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(_flat(key, v))
        else:
            out[key] = v if not isinstance(v, list) else ",".join(map(str, v))
    return out


def register(
    spec: SpecialistSpec,
    dataset: DatasetVersion,
    splits: dict[str, pd.DataFrame],
    model_dir: str,
    train: dict,
    report: dict,
    trigger: str,
    train_key: str,
    artifact_root: str | None = None,
    dataset_files: dict[str, bytes] | None = None,
    reference: bytes | None = None,
    lineage: dict[str, str] | None = None,
) -> Registration:
    """Log the run and the model, register a version, tag it, and move an alias (last)."""
    if trigger not in TRIGGERS:
        raise RegistryError(f"trigger {trigger!r}: must be one of {', '.join(TRIGGERS)}")
    from fleet.training import base_model_id

    client = _client()
    exp_id = _experiment(spec.name, artifact_root)
    contenders = report["contenders"]
    decision = report["gate"]
    tags = {
        "specialist": spec.name,
        "dataset_version": dataset.version,
        "base_model": base_model_id(spec.base_model),
        "code_version": code_version(),
        "trigger": trigger,
        "train_key": train_key,
        **(lineage or {}),
        "gate.verdict": decision["verdict"],
        "gate.reason": "; ".join(decision["reasons"]),
    }
    for role in ("challenger", "champion", "baseline"):
        c = contenders.get(role) or {}
        for metric in ("accuracy", "macro_f1"):
            value = c.get(metric)
            tags[f"{role}.{metric}"] = "none" if value is None else f"{value:.4f}"
        ci = c.get("macro_f1_ci")
        tags[f"{role}.macro_f1_ci"] = "none" if not ci else f"{ci[0]:.4f},{ci[1]:.4f}"
        tags[f"{role}.cost_per_1k"] = "none" if c.get("cost_per_1k") is None else f"{c['cost_per_1k']:.6g}"
        tags[f"{role}.model"] = str(c.get("model", "none"))

    with mlflow.start_run(experiment_id=exp_id, run_name=f"{spec.name}-{train_key[:8]}") as run:
        mlflow.set_tags({k: v for k, v in tags.items() if k != "gate.reason"})
        mlflow.log_params(_flat("train", spec.train.model_dump()) | {"base_model": spec.base_model,
                          "max_length": train["max_length"], "labels": ",".join(spec.labels)})
        for split, df in splits.items():
            ds = mlflow.data.from_pandas(
                df[["text", "label"]], source=dataset.uri, name=f"{spec.name}-{split}", targets="label"
            )
            mlflow.log_input(ds, context=split, tags={"dataset_version": dataset.version})
        numbers = {"train_loss": train["train_loss"], "train_seconds": train["train_seconds"]}
        for role, c in contenders.items():
            if not c:
                continue
            for k in ("accuracy", "macro_f1", "ece", "latency_p50_ms", "latency_p95_ms", "throughput_per_s", "cost_per_1k"):
                if isinstance(c.get(k), (int, float)):
                    numbers[f"{role}_{k}"] = c[k]
            for sl, v in (c.get("slices") or {}).items():
                if v.get("n"):
                    numbers[f"{role}_slice_{sl}_macro_f1"] = v["macro_f1"]
        mlflow.log_metrics({re.sub(r"[^A-Za-z0-9_./ -]", "_", k): float(v) for k, v in numbers.items()})
        mlflow.log_dict({k: v for k, v in report.items() if k != "plots"}, "evaluation/report.json")
        mlflow.log_dict(decision_record(spec, dataset, report, trigger), "decision/record.json")
        for role, png in (report.get("plots") or {}).items():
            mlflow.log_artifact(png, "evaluation")
        if reference is not None:
            _log_blobs({"reference.npz": reference}, "drift")
        mlflow.log_dict(dataset.to_dict(), "dataset/manifest.json")
        if dataset_files:
            _log_blobs(dataset_files, "dataset")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=SpecialistModel(),
            artifacts={"model": model_dir},
            input_example=["an example text"],
            pip_requirements=["torch", "transformers", "pandas"],
            registered_model_name=spec.name,
        )
        version = str(info.registered_model_version)

    try:
        card = model_card(spec, dataset, report, tags, train)
        client.update_model_version(spec.name, version, description=card)
        for k, v in tags.items():
            client.set_model_version_tag(spec.name, version, k, v)
        client.update_registered_model(
            spec.name, description=f"{spec.description or spec.name}\n\nLabels: {', '.join(spec.labels)}."
        )
    except Exception:
        # a version without its tags and card would look registered but not be: take it back out
        client.delete_model_version(spec.name, version)
        raise
    # The alias moves last, so a failure above leaves the champion where it was.
    alias = CHAMPION if decision["promote"] else CHALLENGER
    if alias == CHAMPION:
        _move_champion(spec.name, version, f"gate: {decision['verdict']}")
    else:
        client.set_registered_model_alias(spec.name, alias, version)
    return Registration(spec.name, version, run.info.run_id, alias, decision["verdict"])


def fleet_status(names: list[str]) -> list[dict]:
    """The leaderboard: per specialist, champion vs general baseline on macro-F1 (with intervals) and cost.

    ``gain_points_per_cost`` is the champion's lead over the baseline in macro-F1 points divided by
    the champion's cost per 1,000 predictions: what each unit of serving cost buys.
    """
    rows = []
    for name in names:
        v = champion_version(name)
        row = {"specialist": name, "champion_version": None, "champion_macro_f1": None, "champion_macro_f1_ci": None,
               "baseline": None, "baseline_macro_f1": None, "baseline_macro_f1_ci": None, "champion_cost_per_1k": None,
               "baseline_cost_per_1k": None, "gain_points": None, "gain_points_per_cost": None,
               "dataset_version": None, "last_trained": None}
        if v is None:
            rows.append(row)
            continue
        tags = v.tags or {}

        def num(key):
            try:
                return float(tags[key])
            except (KeyError, ValueError):
                return None

        def ci(key):
            try:
                lo, hi = tags[key].split(",")
                return [float(lo), float(hi)]
            except (KeyError, ValueError):
                return None

        # a version's own scores were recorded when it was the challenger
        row.update({
            "champion_version": str(v.version),
            "champion_macro_f1": num("challenger.macro_f1"),
            "champion_macro_f1_ci": ci("challenger.macro_f1_ci"),
            "baseline": tags.get("baseline.model"),
            "baseline_macro_f1": num("baseline.macro_f1"),
            "baseline_macro_f1_ci": ci("baseline.macro_f1_ci"),
            "champion_cost_per_1k": num("challenger.cost_per_1k"),
            "baseline_cost_per_1k": num("baseline.cost_per_1k"),
            "dataset_version": tags.get("dataset_version"),
            "last_trained": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v.creation_timestamp / 1000)),
        })
        if row["champion_macro_f1"] is not None and row["baseline_macro_f1"] is not None:
            row["gain_points"] = round(100 * (row["champion_macro_f1"] - row["baseline_macro_f1"]), 2)
            if row["champion_cost_per_1k"]:
                row["gain_points_per_cost"] = round(row["gain_points"] / row["champion_cost_per_1k"], 1)
        rows.append(row)
    return rows


def registered_names() -> list[str]:
    return [m.name for m in _client().search_registered_models()]



def _log_blobs(blobs: dict[str, bytes], artifact_path: str) -> None:
    """Log in-memory files as artifacts of the active run."""
    with tempfile.TemporaryDirectory() as tmp:
        for fname, blob in blobs.items():
            (Path(tmp) / fname).write_bytes(blob)
        mlflow.log_artifacts(tmp, artifact_path)


def decision_record(spec: SpecialistSpec, dataset: DatasetVersion, report: dict, trigger: str) -> dict:
    """Everything the gate saw and decided: numbers, thresholds, verdict, reasons."""
    keep = ("model", "n", "accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "ece", "per_label", "slices",
            "latency_p50_ms", "latency_p95_ms", "throughput_per_s", "cpu_seconds_per_1k", "cost_per_1k",
            "size_bytes", "parameters")
    return {
        "specialist": spec.name,
        "dataset_version": dataset.version,
        "trigger": trigger,
        "decided_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "verdict": report["gate"]["verdict"],
        "promote": report["gate"]["promote"],
        "reasons": report["gate"]["reasons"],
        "thresholds": report["gate"]["thresholds"],
        "contenders": {r: ({k: c[k] for k in keep if k in c} if c else None) for r, c in report["contenders"].items()},
        "baselines": [{k: b[k] for k in keep if k in b} for b in report.get("baselines", [])],
        "paired_tests": report.get("paired_tests", {}),
    }


HISTORY_TAG = "champion_history"


def _history(name: str) -> list[dict]:
    tags = _client().get_registered_model(name).tags or {}
    try:
        return json.loads(tags.get(HISTORY_TAG, "[]"))
    except json.JSONDecodeError:
        return []


def _move_champion(name: str, version: str, reason: str) -> None:
    """Point ``champion`` at ``version`` and append the move to the model's champion history."""
    client = _client()
    history = _history(name)
    history.append({"version": str(version), "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "reason": reason})
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-50:]))
    client.set_registered_model_alias(name, CHAMPION, str(version))


def _require_model(name: str) -> None:
    try:
        _client().get_registered_model(name)
    except MlflowException:
        known = ", ".join(registered_names()) or "none"
        raise RegistryError(f"no specialist {name!r} in the registry (known: {known})") from None


def _require_version(name: str, version: str):
    client = _client()
    _require_model(name)
    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        raise RegistryError(f"{name}: no version {version!r} (versions: {', '.join(map(str, versions)) or 'none'})") from None


def promote(name: str, version: str, reason: str = "manual promotion") -> str:
    """Make ``version`` the champion by hand (recorded in the history and on the version)."""
    _require_version(name, version)
    _client().set_model_version_tag(name, str(version), "promoted_by", reason)
    _move_champion(name, str(version), reason)
    return str(version)


def rollback(name: str) -> tuple[str, str]:
    """Move ``champion`` back to the previous champion; returns (from, to)."""
    _require_model(name)
    current = champion_version(name)
    if current is None:
        raise RegistryError(f"{name}: has no champion to roll back")
    previous = [h["version"] for h in _history(name) if h["version"] != str(current.version)]
    if not previous:
        raise RegistryError(f"{name}: version {current.version} is the only champion it ever had; nothing to roll back to")
    target = previous[-1]
    _require_version(name, target)
    _client().set_model_version_tag(name, str(current.version), "rolled_back", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    _move_champion(name, target, f"rollback from {current.version}")
    return str(current.version), target
