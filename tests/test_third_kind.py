"""A third kind of specialist, added in this file alone: the stages, the registry and the pyfunc know no task.

``keyword-tagging`` is a classifier whose model is a table of the words most typical of each label (no
neural network, so the whole path runs in seconds). It owns its spec (task name, defaults, the baselines
that can judge it, its gate metrics) and its implementation; it borrows the classifier's data handling,
scoring and drift. Registered with ``fleet.kinds.register``, it goes through curation, training, evaluation
against its own baseline, the gate and the MLflow registry (SQLite), and loads back as a pyfunc.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar, Literal

import mlflow
import pandas as pd
import pytest
from pydantic import Field

from fleet import kinds
from fleet.core.records import ModelRecord
from fleet.core.results import EvaluationReport, Outputs, TrainedModel
from fleet.core.spec import SpecError, SpecialistSpec
from fleet.core.storage import LocalStore
from fleet.data import versions
from fleet.kinds.base import Fit
from fleet.kinds.classification import TextClassification
from fleet.stages import curation, evaluation, registry, training

TASK = "keyword-tagging"
TABLE = "keywords.json"


class KeywordSpec(SpecialistSpec):
    defaults: ClassVar[dict[str, Any]] = {
        "base_model": "minilm-l6",  # its tokenizer's neighbourhood; only its name enters the training key
        "evaluation": {"baselines": [{"kind": "majority"}], "latency_samples": 2, "timing_rows": 4},
        "gate": {"min_gain_over_baseline": 0.1},
    }
    baseline_kinds: ClassVar[frozenset[str]] = frozenset({"majority"})
    gate_metrics: ClassVar[tuple[str, ...]] = ("accuracy", "macro_f1")
    task: Literal["keyword-tagging"] = Field(TASK)
    keywords_per_label: int = Field(20, gt=0, description="Words kept per label.")


class KeywordModel:
    size_bytes = None

    def __init__(self, folder: Path, name: str):
        self.name, self.table = name, json.loads((Path(folder) / TABLE).read_text())

    def parameters(self) -> int:
        return sum(len(words) for words in self.table.values())

    def predict(self, inputs: list[str]) -> Outputs:
        labels = list(self.table)  # the spec's order, as a classifier's probabilities are
        probs = []
        for text in inputs:
            hits = [1 + sum(w in self.table[lab] for w in text.lower().split()) for lab in labels]
            probs.append([h / sum(hits) for h in hits])
        return Outputs(predictions=[labels[p.index(max(p))] for p in probs], probabilities=probs)


class Majority:
    """A general model that always answers the most frequent training label."""

    size_bytes = None

    def __init__(self, train: pd.DataFrame, labels: list[str]):
        self.name, self.labels = "majority", labels
        self.answer = Counter(train["label"]).most_common(1)[0][0]

    def parameters(self) -> int:
        return 0

    def predict(self, inputs: list[str]) -> Outputs:
        one_hot = [float(lab == self.answer) for lab in self.labels]
        return Outputs(predictions=[self.answer] * len(inputs), probabilities=[one_hot] * len(inputs))

    def billed_cost_per_1k(self, n_predictions: int) -> float | None:
        return None


class KeywordTagging(TextClassification):
    task = TASK
    spec_model = KeywordSpec

    def training_settings(self, spec: SpecialistSpec) -> dict:
        assert isinstance(spec, KeywordSpec)
        return {"keywords_per_label": spec.keywords_per_label}  # part of the training key

    def train(self, spec: SpecialistSpec, train: pd.DataFrame, run_dir: Path, progress: bool = True) -> Fit:
        assert isinstance(spec, KeywordSpec)
        counts = {lab: Counter() for lab in spec.labels}
        for text, lab in zip(train["text"], train["label"]):
            counts[lab].update(set(str(text).lower().split()))
        everywhere = set.intersection(*(set(c) for c in counts.values()))
        table = {
            lab: [w for w, _ in c.most_common() if w not in everywhere][: spec.keywords_per_label]
            for lab, c in counts.items()
        }
        folder = run_dir / "model"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / TABLE).write_text(json.dumps(table))
        ModelRecord(task=TASK).write(folder)
        n = sum(len(w) for w in table.values())
        return Fit(0, len(train), 0.0, 0.0, n, n, None)

    def load(self, model_dir: str | Path, name: str, spec: SpecialistSpec | None = None) -> KeywordModel:
        return KeywordModel(Path(model_dir), name)

    def baselines(self, spec: SpecialistSpec, train: pd.DataFrame) -> list:
        return [Majority(train, list(spec.labels))]

    def int8_check(self, spec: SpecialistSpec, model: TrainedModel, report: EvaluationReport, texts: list[str]):
        return None


@pytest.fixture
def keyword_kind(monkeypatch):
    monkeypatch.setattr(kinds, "_EXTRA", {})  # the registrations of this test only, gone after it
    kinds.register(KeywordTagging)


def write_csv(path: Path, records: list[tuple[str, str]]) -> str:
    pd.DataFrame(records, columns=["text", "label"]).to_csv(path, index=False)
    return str(path)


def keyword_fleet(source: Path, **over) -> dict:
    entry = {"task": TASK, "data": {"source": str(source)}, "labels": ["weather", "food"], **over}
    return {"specialists": {"tagger": entry}}


def rows(n: int = 60) -> list[tuple[str, str]]:
    """``n`` texts per label, each a seeded draw of that label's words among words both labels use."""
    rng = random.Random(0)
    words = {
        "weather": [
            "rain",
            "wind",
            "storm",
            "snow",
            "sunny",
            "cloudy",
            "thunder",
            "fog",
            "frost",
            "drizzle",
            "breeze",
            "humid",
        ],
        "food": [
            "pasta",
            "bread",
            "soup",
            "cheese",
            "spicy",
            "salad",
            "grill",
            "dessert",
            "noodles",
            "curry",
            "roast",
            "bakery",
        ],
    }
    shared = ["today", "tonight", "in", "the", "city", "near", "our", "town", "this", "week", "again"]
    return [(" ".join(rng.sample(words[lab], 3) + rng.sample(shared, 3)), lab) for lab in words for _ in range(n)]


def test_a_kind_outside_the_package_owns_its_spec(keyword_kind, tmp_path):
    src = write_csv(tmp_path / "d.csv", rows())
    spec = kinds.parse_fleet(keyword_fleet(src)).specialists["tagger"]
    assert isinstance(spec, KeywordSpec) and spec.gate.metric == "accuracy" and spec.keywords_per_label == 20
    assert [b.kind for b in spec.evaluation.baselines or []] == ["majority"]
    with pytest.raises(SpecError, match="embedding-zero-shot cannot judge a keyword-tagging specialist"):
        kinds.parse_fleet(keyword_fleet(src, evaluation={"baselines": [{"kind": "embedding-zero-shot"}]}))
    with pytest.raises(SpecError, match="keywords_per_label: unknown field"):  # the kind's own section
        entry = {"data": {"source": str(src)}, "labels": ["a", "b"], "keywords_per_label": 3}
        kinds.parse_fleet({"specialists": {"c": entry}})


def test_the_task_is_unknown_once_the_kind_is_gone(tmp_path):
    src = write_csv(tmp_path / "d.csv", rows())
    with pytest.raises(SpecError, match=r"specialists\.tagger\.task: must be one of"):
        kinds.parse_fleet(keyword_fleet(src))


def test_a_third_kind_goes_through_every_stage_and_the_registry(keyword_kind, fleet_home, tmp_path):
    from fleet.core.settings import Settings

    settings = Settings.load().apply()
    store = LocalStore(tmp_path / "store")
    spec = kinds.parse_fleet(keyword_fleet(write_csv(tmp_path / "d.csv", rows()))).specialists["tagger"]

    ds = curation.curate(spec, store)
    model = training.ensure_trained(spec, store, ds.version, settings.runs_dir, progress=False)
    test = versions.load_split(store, spec.name, ds.version, "test")
    train = versions.load_split(store, spec.name, ds.version, "train")
    report = evaluation.judge(spec, test, model, evaluation.general(spec, test, None, train))
    assert report.baselines[0].model == "majority" and report.challenger.value("accuracy") > 0.9
    assert report.decision.promote, report.decision.reasons

    reg = registry.register_once(spec, ds, model, report, registry.Registering(), store)
    assert reg.alias == "champion" and reg.version == "1"
    tags = registry.champion_version("tagger").tags
    assert tags["task"] == TASK and tags["dataset_version"] == ds.version
    answers = mlflow.pyfunc.load_model("models:/tagger@champion").predict(["heavy rain and fog", "spicy soup tonight"])
    assert answers["label"].tolist() == ["weather", "food"]


def test_a_promotion_is_checked_again_under_the_register_lease(keyword_kind, fleet_home, tmp_path):
    """Two runs judged their challengers against no champion; the first registered is promoted, the second
    finds a champion it was never compared with and stays a challenger (reason: champion-changed)."""
    from fleet.core.settings import Settings

    settings = Settings.load().apply()
    store = LocalStore(tmp_path / "store")
    source = write_csv(tmp_path / "d.csv", rows())
    outcomes = []
    for keywords in (20, 5):  # two training keys
        spec = kinds.parse_fleet(keyword_fleet(source, keywords_per_label=keywords)).specialists["tagger"]
        ds = curation.curate(spec, store)
        model = training.ensure_trained(spec, store, ds.version, settings.runs_dir, progress=False)
        test = versions.load_split(store, spec.name, ds.version, "test")
        train = versions.load_split(store, spec.name, ds.version, "train")
        report = evaluation.judge(spec, test, model, evaluation.general(spec, test, None, train))
        assert report.decision.promote and report.champion_version is None
        outcomes.append((spec, ds, model, report))
    first = registry.register_once(*outcomes[0], registry.Registering(), store)
    second = registry.register_once(*outcomes[1], registry.Registering(), store)
    assert (first.alias, first.verdict) == ("champion", "promote")
    assert (second.alias, second.verdict) == ("challenger", "champion-changed")
    assert str(registry.champion_version("tagger").version) == first.version
    tags = registry.client().get_model_version("tagger", second.version).tags
    assert tags["gate.recheck"] == "champion-changed" and "the champion is now v1" in tags["gate.recheck.reason"]
