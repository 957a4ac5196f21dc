"""The `fleet` command: clear errors that leave the registry as it was, status and predict."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from cli.main import app
from conftest import write_toy_fleet

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]
runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prefect_harness):
    """A home with the toy specialist trained once (shared by this module's tests)."""
    folder = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLEET_HOME", str(folder / "home"))
        for var in ("MLFLOW_TRACKING_URI", "FLEET_STORE", "FLEET_ARTIFACT_ROOT"):
            mp.delenv(var, raising=False)
        fleet_file = write_toy_fleet(folder / "f")
        result = runner.invoke(app, ["run", "--fleet", str(fleet_file)])
        assert result.exit_code == 0, result.output
        yield folder, fleet_file


def registry_snapshot():
    client = MlflowClient()
    return sorted(
        (m.name, str(v.version), tuple(sorted(v.aliases)))
        for m in client.search_registered_models()
        for v in client.search_model_versions(f"name='{m.name}'")
    )


def cli(*args):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_status_json_and_predict(trained):
    code, out = cli("status", "--json", "--fleet", str(trained[1]))
    assert code == 0
    [row] = json.loads(out)
    assert row["specialist"] == "toy" and row["champion_version"] == "1"
    assert row["metric"] == "macro_f1" and row["champion"]["score"] > row["baseline"]["score"]
    code, out = cli("predict", "toy", "Snow is falling in Madrid", "We baked bread at Madrid")
    assert code == 0
    lines = [line.split("\t") for line in out.splitlines() if "\t" in line]
    assert [(cols[0], cols[2]) for cols in lines] == [
        ("weather", "Snow is falling in Madrid"),
        ("food", "We baked bread at Madrid"),
    ]
    assert all(0.5 < float(cols[1]) <= 1 for cols in lines)
    code, out = cli("predict", "nobody", "x")
    assert code == 2 and "models:/nobody@champion: cannot load" in out


def test_predict_runs_no_code_from_the_registry(trained):
    """Whoever can write to the registry's artifacts must not get to run code where `fleet predict` runs."""
    folder, _ = trained
    marker = folder / "pwned"
    logged = list((folder / "home" / "mlflow").rglob("pyfunc_code.py"))
    assert logged  # the code MLflow keeps with each version (for its own pyfunc loader)
    for code_file in logged:
        code_file.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    code, out = cli("predict", "toy", "Snow is falling in Madrid", "--no-log")
    assert code == 0 and out.startswith("weather\t") and not marker.exists()


def test_wrong_field_exits_before_any_work(trained):
    folder, fleet_file = trained
    before = registry_snapshot()
    bad = folder / "bad.yaml"
    bad.write_text(fleet_file.read_text().replace("epochs: 3", "epochs: 3, lora: {r: 0}"))
    code, out = cli("run", "--fleet", str(bad))
    assert code == 2 and "specialists.toy.train.lora.r: must be > 0" in out
    assert registry_snapshot() == before


def test_missing_data_file_exits_before_any_work(trained):
    folder, fleet_file = trained
    before = registry_snapshot()
    bad = folder / "f" / "missing.yaml"
    bad.write_text(fleet_file.read_text().replace("source: toy.csv", "source: nowhere.csv"))
    code, out = cli("run", "--fleet", str(bad))
    assert code == 2 and "specialists.toy.data.source" in out and "nowhere.csv: data file not found" in out
    assert registry_snapshot() == before


def test_one_label_data_fails_clearly_and_registers_nothing(trained):
    folder, fleet_file = trained
    before = registry_snapshot()
    pd.DataFrame({"text": [f"only weather {i}" for i in range(30)], "label": "weather"}).to_csv(
        folder / "f" / "one.csv", index=False
    )
    bad = folder / "f" / "one.yaml"
    bad.write_text(fleet_file.read_text().replace("source: toy.csv", "source: one.csv"))
    code, out = cli("run", "--fleet", str(bad))
    assert code == 2 and "has 1 label(s) (weather)" in out
    assert registry_snapshot() == before


def test_unknown_only_name(trained):
    code, out = cli("run", "--fleet", str(trained[1]), "--only", "ghost")
    assert code == 2 and "--only ghost: no such specialist" in out


def test_batch_scoring_writes_answers_and_logs_traffic(trained):
    folder, _ = trained
    from fleet.core.settings import Settings
    from fleet.ops import traffic

    pd.DataFrame({"text": ["Strong wind expected near Madrid", "Fresh salad served in Madrid"]}).to_csv(
        folder / "batch.csv", index=False
    )
    dest = folder / "out" / "answers.jsonl"
    code, out = cli("score", "toy", str(folder / "batch.csv"), str(dest))
    assert code == 0 and "2 answer(s) written" in out
    answers = [json.loads(line) for line in dest.read_text().splitlines()]
    assert [a["label"] for a in answers] == ["weather", "food"] and all(a["model_version"] == "1" for a in answers)
    logged = traffic.read_all(Settings.load().store_handle(), "traffic", "toy")
    assert {"Strong wind expected near Madrid", "Fresh salad served in Madrid"} <= set(logged["text"])
    code, out = cli("score", "ghost", str(folder / "batch.csv"), str(dest))
    assert code == 1 and "ghost: no champion version" in out


def test_export_merged_checks_parity(trained):
    folder, _ = trained
    code, out = cli("export", "toy", "--merged", str(folder / "merged"))
    assert code == 0 and "exported merged" in out, out
    diff = float(out.split("largest difference ")[1].split()[0])
    assert diff < 1e-5 and (folder / "merged" / "config.json").is_file()
    assert json.loads((folder / "merged" / "fleet.json").read_text())["merged"] is True
    code, out = cli("export", "ghost", "--merged", str(folder / "nothing"))
    assert code == 2 and "ghost" in out
