"""The data flywheel end to end on the toy fleet, as a user runs it: a trained champion, traffic and an
ingested file become the pool, the teacher labels it (the `label` flow), a human reviews in the terminal
and through Label Studio files, `fleet audit` sends suspect training rows to review, the next `fleet run`
trains on original + reviewed + confident teacher rows (test split unchanged), and the monitor estimates
the champion's macro-F1 without labels (CBPE)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import app
from conftest import sentences, write_toy_fleet

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]
runner = CliRunner()

NEW_TEXTS = [
    "Thunder and heavy rain over Madrid tonight",
    "Grilled corn and soup served in Madrid",
    "Fog rolls into Madrid this morning",
    "We roasted chestnuts in Madrid",
    "Icy wind across Madrid all day",
    "Paella recipe from Madrid",
]


def fleet(*args: str, input: str | None = None):
    result = runner.invoke(app, list(args), input=input)
    return result.exit_code, result.output


@pytest.fixture
def trained(tmp_path, fleet_home):
    path = write_toy_fleet(tmp_path / "f")
    path.write_text(
        path.read_text().replace(
            "specialists:",
            # one ingested file and one served request: no share cap and no audit draw here (tests/test_trust.py
            # checks those), so what enters training does not depend on a random draw
            "  labeling: {teacher: {kind: embedding-zero-shot}, min_confidence: 0.5, review_size: 3,\n"
            "             max_share_per_source: 1.0, audit_share: 0}\n"
            "  drift: {min_window_rows: 20, min_estimated_score: 0.999}\n"
            "specialists:",
        )
    )
    from flows.fleet_run import fleet_flow

    [first] = fleet_flow(fleet_file=str(path))
    assert first.status == "trained"
    return path, first


def test_the_flywheel_turns_traffic_into_training_data(tmp_path, trained):
    from fleet.core.settings import Settings
    from fleet.data import versions
    from fleet.kinds import load_fleet
    from fleet.labeling import flywheel

    path, first = trained
    f = ("--fleet", str(path))
    pd.DataFrame({"message": NEW_TEXTS}).to_csv(tmp_path / "new.csv", index=False)
    code, out = fleet("ingest", "toy", str(tmp_path / "new.csv"), "--text-column", "message", *f)
    assert code == 0 and "6 row(s) stored" in out, out
    assert fleet("simulate", "toy", "--rows", "30", *f)[0] == 0  # served test-split texts: never pooled
    code, out = fleet("predict", "toy", "Hail storm hits Madrid")  # a served request of its own
    assert code == 0

    code, out = fleet("label", "toy", *f)
    assert code == 0 and "labelled 7 of 7 row(s)" in out and "pool 7" in out, out

    code, out = fleet("review", "toy", "-n", "2", "--reviewer", "ana", *f, input="c\n1\ns\n")
    assert code == 0 and "2 decision(s) stored" in out, out
    tasks_file = tmp_path / "tasks.json"
    code, out = fleet("review", "toy", "--export", str(tasks_file), *f)
    assert code == 0 and "3 task(s) written" in out, out
    tasks = json.loads(tasks_file.read_text())
    assert (tmp_path / "tasks.label-config.xml").read_text().startswith("<View>")
    annotated = tmp_path / "annotated.json"
    tasks[0]["annotations"] = [
        {"completed_by": {"email": "bo@example.com"}, "result": [{"value": {"choices": ["food"]}}]}
    ]
    annotated.write_text(json.dumps(tasks))
    code, out = fleet("review", "toy", "--import", str(annotated), *f)
    assert code == 0 and "1 label(s) applied" in out and "2 task(s) without an annotation" in out, out
    code, out = fleet("review", "toy", "--import", str(annotated), *f)
    assert code == 2 and "imported before; nothing applied" in out, out
    tasks[0]["data"]["specialist"] = "spam"
    annotated.write_text(json.dumps(tasks))
    code, out = fleet("review", "toy", "--import", str(annotated), *f)
    assert code == 2 and "task 1" in out and "belongs to specialist 'spam'" in out, out

    code, out = fleet("audit", "toy", "--to-review", *f)
    assert code == 0 and "likely label issue(s) in" in out, out
    code, out = fleet("status", "--json", *f)
    [row] = json.loads(out)
    assert row["review queue"] == 7 - 3 + len(flywheel.audit.flagged(Settings.load().store_handle(), "toy"))

    store = Settings.load().store_handle()
    spec = load_fleet(path).specialists["toy"]
    rows = flywheel.training_rows(spec, store)
    assert set(rows["label_source"]) == {"human", "teacher"}
    assert (rows["label_source"] == "human").sum() == 2  # one typed in the terminal, one from Label Studio
    from flows.fleet_run import fleet_flow

    [second] = fleet_flow(fleet_file=str(path))
    assert second.dataset_version != first.dataset_version
    for split in ("validation", "test"):
        assert versions.load_split(store, "toy", second.dataset_version, split).equals(
            versions.load_split(store, "toy", first.dataset_version, split)
        )
    train = versions.load_split(store, "toy", second.dataset_version, "train")
    assert train["label_source"].value_counts().to_dict()["human"] == 2
    assert "label-studio:bo@example.com" in set(train["labeled_by"])


def test_the_monitor_estimates_macro_f1_without_labels_and_alarms_below_the_minimum(trained):
    from fleet.core.settings import Settings
    from fleet.core.storage import get_json
    from flows.monitor import monitor_flow

    path, _ = trained
    # texts of neither topic: the champion is unsure of them, so its estimated macro-F1 falls
    assert fleet("predict", "toy", *sentences(40, seed=3))[0] == 0
    result = monitor_flow(name="toy", fleet_file=str(path))
    report = get_json(Settings.load().store_handle(), "drift/toy/latest.json")
    estimate = report["signals"]["estimated_performance"]
    assert 0.0 < estimate["statistic"] < 0.999 and estimate["details"]["reference_macro_f1"] > 0.9
    assert "estimated_performance" in result["fired"] and result["event_id"]  # below drift.min_estimated_score
    _code, out = fleet("status", "--json", "--fleet", str(path))
    assert json.loads(out)[0]["estimated score"] == round(estimate["statistic"], 4)
