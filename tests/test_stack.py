"""The production profile on this machine: `fleet up` -> one specialist end to end -> `fleet down`.

`fleet up` starts PostgreSQL (a private cluster), a Prefect server and an MLflow server on it, and moto's
S3 server. The toy specialist then runs through the `fleet` command against that stack, once in-process
(threads runner) and once more as a run of the `specialist` deployment served by `fleet serve`
(FLEET_TASK_RUNNER=deployments). Secrets set in the environment must never show in output, logs,
the Prefect API or MLflow. Skipped where PostgreSQL's server binaries are not installed (`.ci/run`
installs them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cli import stack as fleet_stack
from conftest import write_toy_fleet

pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.stack,
    pytest.mark.skipif(fleet_stack.find_pg_bin() is None, reason="PostgreSQL's server binaries are not installed"),
]
FLEET_BIN = str(Path(sys.executable).parent / "fleet")
SECRET = "s3cr3t-do-not-print-7f3a"


def fleet(*args, env, timeout=600, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([FLEET_BIN, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate(timeout=timeout)
    r = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    r.pid = proc.pid
    if check:
        assert r.returncode == 0, f"fleet {' '.join(args)} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def post(url: str, body: dict):
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_fleet_up_run_down(tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "FLEET_", "AWS_"))}
    env.update(
        FLEET_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_RUNNER_POLL_FREQUENCY="2",
        MLFLOW_TRACKING_USERNAME="fleet",
        MLFLOW_TRACKING_PASSWORD=SECRET,
        PREFECT_API_KEY=SECRET,
    )
    outputs = []
    serve = None
    try:
        t0 = time.monotonic()
        up = fleet("up", env=env, timeout=400)
        up_s = time.monotonic() - t0
        outputs.append(up.stdout + up.stderr)
        st = fleet_stack.Stack.read(home / "stack")
        assert [s.name for s in st.services] == ["postgres", "s3", "prefect", "mlflow"]
        assert all(fleet_stack._alive(s) for s in st.services)
        assert "already up" in fleet("up", env=env, check=False).stderr  # a second `up` refuses, touches nothing

        env["FLEET_ENV_FILE"] = str(fleet_stack.env_file(home))
        shown = fleet("settings", "--json", env=env)
        outputs.append(shown.stdout + shown.stderr)
        settings = json.loads(shown.stdout)
        assert settings["mlflow_tracking_password"] == settings["prefect_api_key"] == "**********"
        assert settings["prefect_api_url"] == st.env["PREFECT_API_URL"] and settings["store"] == "s3://fleet/store"

        fleet_file = write_toy_fleet(tmp_path / "f")
        t0 = time.monotonic()
        run = fleet("run", "--fleet", str(fleet_file), env=env)
        run_s = time.monotonic() - t0
        outputs.append(run.stdout + run.stderr)
        assert "trained" in run.stdout

        # MLflow (on PostgreSQL): version 1 is champion, and its artifacts are in the bucket
        import boto3
        import psycopg2
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=st.env["MLFLOW_TRACKING_URI"])
        v1 = client.get_model_version_by_alias("toy", "champion")
        assert v1.version == "1"
        s3 = boto3.client(
            "s3",
            endpoint_url=st.env["AWS_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="y",
        )
        keys = [
            o["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket="fleet")
            for o in page.get("Contents", [])
        ]
        run_keys = [k for k in keys if k.startswith("mlflow-artifacts/") and f"/{v1.run_id}/artifacts/" in k]
        assert any(k.endswith("decision/record.json") for k in run_keys), run_keys
        assert any(k.endswith("evaluation/confusion_challenger.png") for k in run_keys)
        from fleet.kinds.classification.model import ADAPTER_FILE

        assert any(k.startswith("mlflow-artifacts/") and k.endswith(f"model/{ADAPTER_FILE}") for k in keys)
        assert any(k.startswith("store/datasets/toy/") for k in keys) and any(
            k.startswith("store/models/toy/") for k in keys
        )
        pg = f"host=127.0.0.1 port={st.pg_port} user=postgres"
        with psycopg2.connect(f"{pg} dbname=mlflow") as conn, conn.cursor() as cur:
            cur.execute("select name, version from model_versions")
            assert ("toy", 1) in cur.fetchall()

        # Prefect (on PostgreSQL): the fleet and specialist flow runs completed
        api = st.env["PREFECT_API_URL"]
        runs = {r["name"]: r for r in post(f"{api}/flow_runs/filter", {"limit": 50})}
        assert runs["fleet-manual"]["state_type"] == "COMPLETED" and runs["toy"]["state_type"] == "COMPLETED"
        with psycopg2.connect(f"{pg} dbname=prefect") as conn, conn.cursor() as cur:
            cur.execute("select name, state_type from flow_run")
            assert ("toy", "COMPLETED") in cur.fetchall()

        # The same specialist as one run of the `specialist` deployment, served by another process
        serve = subprocess.Popen(
            [FLEET_BIN, "serve", "--fleet", str(fleet_file), "--train-cron", ""],
            env=env,
            stdout=(tmp_path / "serve.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while not post(f"{api}/deployments/filter", {"deployments": {"name": {"any_": ["specialist"]}}}):
            assert time.monotonic() < deadline and serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(2)
        remote = fleet("run", "--fleet", str(fleet_file), env={**env, "FLEET_TASK_RUNNER": "deployments"})
        outputs.append(remote.stdout + remote.stderr)
        assert "up-to-date" in remote.stdout
        runs = post(f"{api}/flow_runs/filter", {"limit": 50, "sort": "EXPECTED_START_TIME_DESC"})
        deployed = [r for r in runs if r["name"] == "toy" and r["deployment_id"]]
        assert len(deployed) == 1 and deployed[0]["state_type"] == "COMPLETED"
        result = json.loads(
            s3.get_object(Bucket="fleet", Key=f"store/results/specialist/{deployed[0]['id']}.json")["Body"].read()
        )
        assert not result["ran_on"].endswith(f":{remote.pid}")  # it ran under `fleet serve`, not in `fleet run`

        # No secret anywhere: command output, files under the home, Prefect logs, MLflow params and tags
        for text in outputs:
            assert SECRET not in text
        for path in home.rglob("*"):
            if path.is_file() and path.stat().st_size < 50_000_000:
                assert SECRET.encode() not in path.read_bytes(), path
        logs = post(f"{api}/logs/filter", {"limit": 200})
        assert logs and not any(SECRET in entry["message"] for entry in logs)
        mlrun = client.get_run(v1.run_id)
        assert SECRET not in json.dumps({**mlrun.data.params, **mlrun.data.tags})

        members = {s.name: fleet_stack.members(s) for s in st.services}
        assert all(members.values())
        os.killpg(serve.pid, signal.SIGTERM)  # `fleet serve` and the flow-run processes it started
        try:
            serve.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait(10)
        serve = None
        down = fleet("down", env=env)
        assert "stopped: mlflow, prefect, s3, postgres" in down.stdout
        import psutil

        left = [
            (name, pid)
            for name, pids in members.items()
            for pid in pids
            if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        ]
        assert not left, f"still running after fleet down: {left}"
        assert not Path(st.pg_data).exists() and not (home / "stack" / "stack.json").exists()
        assert "no stack is up" in fleet("down", env=env).stdout
        print(f"\nfleet up {up_s:.1f} s; toy specialist end to end on the stack {run_s:.1f} s")
    finally:
        if serve is not None:
            os.killpg(serve.pid, signal.SIGKILL)
        fleet_stack.down(home, progress=lambda *_: None)
