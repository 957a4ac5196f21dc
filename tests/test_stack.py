"""The production profile on this machine: `fleet up` -> one specialist end to end -> `fleet down`.

`fleet up` starts PostgreSQL (a private cluster), a Prefect server and an MLflow server on it, and moto's
S3 server. The toy specialist then runs through the `fleet` command against that stack, once in-process
(threads runner) and once more as a run of the `specialist` deployment served by `fleet serve`
(FLEET_TASK_RUNNER=deployments). Secrets set in the environment must never show in output, logs,
the Prefect API or MLflow. Skipped where PostgreSQL's server binaries are not installed (`.ci/run`
installs them).
"""

from __future__ import annotations

import contextlib
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


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """One `fleet up` for the module's tests (the last one, test_fleet_up_run_down, takes it down)."""
    home = tmp_path_factory.mktemp("stack") / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "FLEET_", "AWS_"))}
    env.update(
        FLEET_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_RUNNER_POLL_FREQUENCY="2",
        MLFLOW_TRACKING_USERNAME="fleet",
        MLFLOW_TRACKING_PASSWORD=SECRET,
        PREFECT_API_KEY=SECRET,
    )
    t0 = time.monotonic()
    try:
        up = fleet("up", env=env, timeout=400)
        yield home, env, up, time.monotonic() - t0
    finally:
        fleet_stack.down(home, progress=lambda *_: None)


def stack_s3(st):
    """An S3 client of the stack's object store (moto's server accepts any key)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=st.env["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )


def three_specialist_fleet(folder: Path) -> Path:
    """The toy specialist three times: alpha and beta (trained in seconds) and gamma (12 epochs: long enough
    to lose its worker after a checkpoint)."""
    toy = write_toy_fleet(folder).read_text()
    head, _, block = toy.partition("specialists:\n")
    one = block.replace("  toy:\n", "  NAME:\n", 1)
    gamma = one.replace("NAME", "gamma").replace(
        "    data: {source: toy.csv}\n", "    data: {source: toy.csv}\n    train: {epochs: 12}\n"
    )
    entries = one.replace("NAME", "alpha") + one.replace("NAME", "beta") + gamma
    (folder / "fleet.yaml").write_text(head + "specialists:\n" + entries)
    return folder / "fleet.yaml"


def start_worker(name: str, pool: str, root: Path, env: dict) -> subprocess.Popen:
    """`prefect worker start` with a home and an empty working folder of its own: it shares nothing with the
    submitter but the servers (their addresses and credentials come in its environment)."""
    (root / name / "cwd").mkdir(parents=True)
    wenv = {
        **env,
        "FLEET_HOME": str(root / name / "home"),
        "FLEET_WORKER_NAME": name,
        "PREFECT_WORKER_QUERY_SECONDS": "2",
    }
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "prefect"),
            "worker",
            "start",
            "--pool",
            pool,
            "--name",
            name,
            "--limit",
            "1",
        ],
        env=wenv,
        cwd=root / name / "cwd",
        stdout=(root / f"{name}.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a worker and every process under it: its machine is gone."""
    import psutil

    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    proc.wait(10)


def test_workers_on_two_machines_share_nothing_but_the_servers(stack, tmp_path):
    """Two `prefect worker` processes, each with its own home and empty working folder, run the specialists of
    a fleet submitted with FLEET_TASK_RUNNER=deployments; one is killed in the middle of a fine-tune and its
    specialist finishes on the other, resumed from the checkpoint in the store (issue 31)."""
    from mlflow import MlflowClient

    home, env, _, _ = stack
    st = fleet_stack.Stack.read(home / "stack")
    api = st.env["PREFECT_API_URL"]
    env = {**env, **st.env, "FLEET_ENV_FILE": str(fleet_stack.env_file(home))}
    env.update(FLEET_HEARTBEAT_S="2", FLEET_STUCK_AFTER_S="45", FLEET_LEASE_TTL_S="20", FLEET_SPECIALIST_ATTEMPTS="2")
    fleet_file = three_specialist_fleet(tmp_path / "submitter")
    prefect_bin = str(Path(sys.executable).parent / "prefect")
    subprocess.run(
        [prefect_bin, "work-pool", "create", "dist", "--type", "process"], env=env, check=True, capture_output=True
    )
    fleet("deploy", "--pool", "dist", "--fleet", str(fleet_file), "--train-cron", "", "-d", "specialist", env=env)
    workers = {n: start_worker(n, "dist", tmp_path / "workers", env) for n in ("w1", "w2")}
    s3 = stack_s3(st)

    def keys(prefix: str) -> list[str]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket="fleet", Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def result_of(run_name: str) -> dict:
        runs = post(
            f"{api}/flow_runs/filter", {"flow_runs": {"name": {"any_": [run_name]}}, "sort": "EXPECTED_START_TIME_DESC"}
        )
        done = [r for r in runs if r["state_type"] == "COMPLETED" and r["deployment_id"]]
        body = s3.get_object(Bucket="fleet", Key=f"store/results/specialist/{done[0]['id']}.json")["Body"]
        return json.loads(body.read())

    run_env = {**env, "FLEET_TASK_RUNNER": "deployments", "FLEET_HOME": str(tmp_path / "submitter-home")}
    try:
        # 1. alpha and beta at once: one on each worker (each takes one run at a time)
        t0 = time.monotonic()
        fleet("run", "--fleet", str(fleet_file), "--only", "alpha", "--only", "beta", env=run_env, timeout=600)
        two_s = time.monotonic() - t0
        ran = {name: result_of(name)["ran_on"].split(":")[0] for name in ("alpha", "beta")}
        assert sorted(ran.values()) == ["w1", "w2"], ran
        for w in ("w1", "w2"):  # each fetched the shipped fleet into its own home; its working folder stayed empty
            assert list((tmp_path / "workers" / w / "home" / "fleets").glob("*/fleet.yaml"))
            assert not any((tmp_path / "workers" / w / "cwd").iterdir())
        limits = {c["name"]: c["limit"] for c in post(f"{api}/v2/concurrency_limits/filter", {})}
        assert limits.get("fine-tune-w1") == limits.get("fine-tune-w2") == 1, limits  # one fine-tune per worker
        client = MlflowClient(tracking_uri=st.env["MLFLOW_TRACKING_URI"])
        for name in ("alpha", "beta"):
            assert [v.version for v in client.search_model_versions(f"name='{name}'")] == ["1"]
        # the thread runner's bits: the same data and settings fine-tuned here, in this process
        from fleet.core.storage import LocalStore
        from fleet.kinds import load_fleet
        from fleet.stages import training
        from fleet.stages.curation import curate

        spec = load_fleet(fleet_file).specialists["alpha"]
        local = LocalStore(tmp_path / "threads-store")
        dataset = curate(spec, local)
        mine = training.ensure_trained(spec, local, dataset.version, tmp_path / "threads-runs", progress=False)
        from fleet.kinds.classification.model import ADAPTER_FILE

        theirs = s3.get_object(Bucket="fleet", Key=f"store/models/alpha/{mine.training_key}/model/{ADAPTER_FILE}")
        assert theirs["Body"].read() == (Path(mine.model_dir) / ADAPTER_FILE).read_bytes()

        # 2. gamma: its worker is killed (with the run under it) once a checkpoint is in the store
        t0 = time.monotonic()
        submit = subprocess.Popen(
            [FLEET_BIN, "run", "--fleet", str(fleet_file), "--only", "gamma"],
            env=run_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 300
        while not [k for k in keys("store/checkpoints/gamma/") if k.endswith("latest.json")]:
            assert time.monotonic() < deadline and submit.poll() is None, "no checkpoint of gamma was stored"
            time.sleep(0.5)
        [latest_key] = [k for k in keys("store/checkpoints/gamma/") if k.endswith("latest.json")]
        step = json.loads(s3.get_object(Bucket="fleet", Key=latest_key)["Body"].read())["step"]
        first = post(f"{api}/flow_runs/filter", {"flow_runs": {"name": {"any_": ["gamma"]}}})[0]
        beat = json.loads(s3.get_object(Bucket="fleet", Key=f"store/heartbeats/{first['id']}.json")["Body"].read())
        victim = beat["on"].split(":")[0]
        kill_tree(workers[victim])
        killed_at = time.monotonic()
        stdout, stderr = submit.communicate(timeout=400)
        assert submit.returncode == 0, stdout[-3000:] + stderr[-3000:]
        assert f"gamma: attempt 1 (run {first['id']}): Crashed on {victim}:" in stdout  # fleet run says where
        recovery_s = time.monotonic() - killed_at
        result = result_of("gamma")  # the newest completed run of gamma
        survivor = "w2" if victim == "w1" else "w1"
        assert result["ran_on"].startswith(f"{survivor}:") and len(result["attempts"]) == 2, result
        assert result["attempts"][0].startswith(f"attempt 1 (run {first['id']}): Crashed on {victim}:"), result
        assert (
            result["attempts"][1].startswith("attempt 2 (run ") and f"Completed on {survivor}:" in result["attempts"][1]
        )
        assert [v.version for v in client.search_model_versions("name='gamma'")] == ["1"]
        second = result["attempts"][1].split("(run ")[1].split(")")[0]
        logs = post(
            f"{api}/logs/filter", {"logs": {"flow_run_id": {"any_": [second]}, "level": {"ge_": 20}}, "limit": 200}
        )
        assert any(f"gamma: fine-tune resumed from the checkpoint of step {step}" in e["message"] for e in logs), [
            e["message"] for e in logs
        ]
        assert keys("store/checkpoints/gamma/") == []  # the model is stored: its checkpoints are gone
        gamma_keys = keys("store/models/gamma/")
        assert any(k.endswith("manifest.json") for k in gamma_keys) and not any(
            ".fetching" in k or ".tmp" in k for k in gamma_keys
        )
        stuck = [json.loads(s3.get_object(Bucket="fleet", Key=k)["Body"].read()) for k in keys("store/stuck/")]
        assert [(f["specialist"], f["state"], f["on"].split(":")[0]) for f in stuck] == [("gamma", "Running", victim)]
        status = json.loads(fleet("status", "--json", "--fleet", str(fleet_file), env=run_env).stdout)
        assert [f["run_id"] for r in status if r["specialist"] == "gamma" for f in r["stuck_runs"]] == [first["id"]]
        print(
            f"\ntwo specialists on two workers {two_s:.1f} s; gamma killed after step {step}, "
            f"finished on {survivor} {recovery_s:.1f} s later"
        )
    finally:
        for proc in workers.values():
            kill_tree(proc)
        for d in post(f"{api}/deployments/filter", {"deployments": {"name": {"any_": ["specialist"]}}}):
            urllib.request.urlopen(urllib.request.Request(f"{api}/deployments/{d['id']}", method="DELETE"), timeout=30)


def test_fleet_up_run_down(stack, tmp_path):
    home, env, up, up_s = stack
    env = dict(env)
    outputs = []
    serve = None
    try:
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
        import psycopg2
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=st.env["MLFLOW_TRACKING_URI"])
        v1 = client.get_model_version_by_alias("toy", "champion")
        assert v1.version == "1"
        s3 = stack_s3(st)
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
