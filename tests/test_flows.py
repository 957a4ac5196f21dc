"""The specialist and fleet flows end to end on tiny data, under Prefect's test harness.

These train the real packaged MiniLM with LoRA on 120 rows: a few seconds each.
"""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from conftest import write_toy_fleet
from fleet.core.results import FleetRunError

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def run_fleet(fleet_file, **kw):
    from flows.fleet_run import fleet_flow

    return fleet_flow(fleet_file=str(fleet_file), **kw)


def test_specialist_path_then_up_to_date_then_worse_challenger(tmp_path, fleet_home):
    fleet_file = write_toy_fleet(tmp_path / "f")
    [first] = run_fleet(fleet_file)
    assert first.status == "trained" and first.alias == "champion" and first.version == "1"
    assert first.metric == "macro_f1" and first.scores["challenger"] > first.scores["baseline"]

    client = MlflowClient()
    v1 = client.get_model_version_by_alias("toy", "champion")
    tags = v1.tags
    assert tags["trigger"] == "manual" and tags["dataset_version"] == first.dataset_version
    assert tags["base_model"] == "minilm-l6" and tags["code_version"] and tags["gate.verdict"] == "promote"
    assert {"challenger.macro_f1", "baseline.macro_f1", "champion.macro_f1"} <= set(tags)
    assert "## Evaluation (frozen test split)" in v1.description

    record = mlflow.artifacts.load_dict(f"runs:/{v1.run_id}/decision/record.json")
    assert record["verdict"] == "promote" and record["thresholds"]["min_gain_over_baseline"] == 0.0
    chal = record["contenders"]["challenger"]
    f1 = chal["metrics"]["macro_f1"]
    assert set(chal["slices"]) == {"mentions-rain", "short"} and f1["ci"][0] <= f1["value"]
    assert chal["cost"]["cost_per_1k"] > 0 and chal["cost"]["latency_p95_ms"] > 0 and chal["parameters"] > 20_000_000
    artifacts = {a.path for a in client.list_artifacts(v1.run_id, "evaluation")}
    assert {"evaluation/confusion_challenger.png", "evaluation/confusion_baseline.png"} <= artifacts
    assert {a.path for a in client.list_artifacts(v1.run_id, "dataset")} >= {
        "dataset/DATASET.md",
        "dataset/lengths.png",
    }
    # embedded: artifacts under the home, never in MLflow's default ./mlruns of the working folder
    assert client.get_run(v1.run_id).info.artifact_uri.startswith(
        (fleet_home / "mlflow" / "artifacts").resolve().as_uri()
    )

    model = mlflow.pyfunc.load_model("models:/toy@champion")
    pred = model.predict(["It will rain in Madrid tomorrow", "I cooked pasta in Madrid"])
    assert pred["label"].tolist() == ["weather", "food"]
    assert all(0.5 < s <= 1.0 for s in pred["score"])

    # nothing changed: nothing is trained or registered again
    [again] = run_fleet(fleet_file)
    assert again.status == "up-to-date" and again.version == "1"
    assert again.verdict == "promote" and again.scores == first.scores  # read back from the decision record
    assert len(client.search_model_versions("name='toy'")) == 1

    # new settings that train a much worse model: registered, but the champion stays
    worse = write_toy_fleet(tmp_path / "f", extra_train=", learning_rate: 1.0e-7, epochs: 0.2")
    [third] = run_fleet(worse, trigger="schedule")
    assert third.status == "trained" and third.alias == "challenger" and third.verdict == "keep-champion"
    assert str(client.get_model_version_by_alias("toy", "champion").version) == "1"
    v2 = client.get_model_version_by_alias("toy", "challenger")
    assert str(v2.version) == "2" and v2.tags["trigger"] == "schedule" and v2.tags["gate.verdict"] == "keep-champion"
    assert "vs champion" in v2.tags["gate.reason"]
    # never scored twice: the champion was scored as the first run's challenger, the baseline by the first run
    report2 = mlflow.artifacts.load_dict(f"runs:/{v2.run_id}/evaluation/report.json")
    assert report2["champion"]["reused"] and report2["champion"]["role"] == "champion"
    assert all(b["reused"] for b in report2["baselines"]) and not report2["challenger"]["reused"]

    # manual promotion and rollback, both recorded; unknown names and versions are refused
    from fleet.core.settings import Settings
    from fleet.ops import champions
    from fleet.stages import registry

    store = Settings.load().store_handle()
    champions.promote(store, "toy", "2")
    assert str(client.get_model_version_by_alias("toy", "champion").version) == "2"
    assert champions.rollback(store, "toy") == ("2", "1")
    assert str(client.get_model_version_by_alias("toy", "champion").version) == "1"
    history = [h["reason"] for h in registry.history("toy")]
    assert history == ["gate: promote", "manual promotion", "rollback from 2"]
    # a second rollback never goes forward to the version just rolled back from
    with pytest.raises(registry.RegistryError, match="nothing to roll back to"):
        champions.rollback(store, "toy")
    assert str(client.get_model_version_by_alias("toy", "champion").version) == "1"
    with pytest.raises(registry.RegistryError, match="no specialist 'ghost'"):
        champions.promote(store, "ghost", "1")
    with pytest.raises(registry.RegistryError, match=r"toy: no version '9' \(versions: 1, 2\)"):
        champions.promote(store, "toy", "9")


def test_the_champions_own_weights_keep_the_champion(tmp_path, fleet_home):
    from fleet.core.results import TrainedModel
    from fleet.core.settings import Settings
    from fleet.data.versions import load_split
    from fleet.kinds import load_fleet
    from fleet.stages.evaluation import evaluate
    from fleet.stages.registry import download_model_dir

    fleet_file = write_toy_fleet(tmp_path / "f")
    [first] = run_fleet(fleet_file)
    spec = load_fleet(fleet_file).specialists["toy"]
    test = load_split(Settings.load().store_handle(), "toy", first.dataset_version, "test")
    weights = download_model_dir("toy", "1", tmp_path / "champion")
    same = TrainedModel(
        specialist="toy",
        training_key="same",
        dataset_version=first.dataset_version,
        model_dir=weights,
        max_length=16,
        train_examples=0,
        train_seconds=0,
        train_loss=0,
        trainable_params=0,
        total_params=0,
    )
    report = evaluate(spec, test, same, champion=("1", weights))
    assert report.decision.verdict == "keep-champion"
    assert report.paired_tests["vs_champion"].p_value == 1.0


def test_one_failing_specialist_does_not_stop_the_others(tmp_path, fleet_home):
    extra = """
  broken:
    data: {source: toy.csv, label_column: text}
    labels: [a, b]
"""
    fleet_file = write_toy_fleet(tmp_path / "f", extra_specialists=extra)
    with pytest.raises(FleetRunError) as exc:
        run_fleet(fleet_file)
    by_name = {r.specialist: r for r in exc.value.results}
    assert by_name["toy"].status == "trained"
    assert by_name["broken"].status == "failed" and "has 0 label(s)" in by_name["broken"].error
    names = [m.name for m in MlflowClient().search_registered_models()]
    assert names == ["toy"]


def test_a_failure_while_registering_leaves_the_registry_as_it_was(tmp_path, fleet_home, monkeypatch):
    fleet_file = write_toy_fleet(tmp_path / "f")
    run_fleet(fleet_file)
    client = MlflowClient()
    before = sorted((str(v.version), tuple(v.aliases)) for v in client.search_model_versions("name='toy'"))

    def broken(self, name, version, key, value):
        raise RuntimeError("tracking server went away")

    monkeypatch.setattr(MlflowClient, "set_model_version_tag", broken)
    retrain = write_toy_fleet(tmp_path / "f", extra_train=", seed: 7")
    with pytest.raises(FleetRunError, match="tracking server went away"):
        run_fleet(retrain)
    monkeypatch.undo()
    after = sorted((str(v.version), tuple(v.aliases)) for v in client.search_model_versions("name='toy'"))
    assert after == before and str(client.get_model_version_by_alias("toy", "champion").version) == "1"
