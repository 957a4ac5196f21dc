"""Registered models load anywhere MLflow does (issue 30, item 3): a fresh virtual environment, in a folder
outside the checkout, with only a version's logged requirements installed (not this project), loads the
champions of a classifier and a generative specialist with ``mlflow.pyfunc.load_model`` and answers as
``fleet predict`` does; ``mlflow models serve`` answers one request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import yaml

from cli.health import free_port, wait_http
from conftest import write_toy_fleet, write_toy_generation

pytestmark = [pytest.mark.slow]
FLEET_BIN = str(Path(sys.executable).parent / "fleet")
TEXTS = ["It will rain in Bergen tomorrow", "We baked bread at Bergen"]
PROMPT = ["Hi team, the reading from Oslo today was 21 degrees."]


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "MLFLOW_", "FLEET_", "PYTHON"))}
    return env | {"FLEET_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


@pytest.fixture(scope="module")
def champions(tmp_path_factory):
    folder = tmp_path_factory.mktemp("portable")
    fleet = yaml.safe_load(write_toy_fleet(folder / "f").read_text())
    generation = yaml.safe_load(write_toy_generation(folder / "f").read_text())
    fleet["specialists"] |= generation["specialists"]
    path = folder / "f" / "fleet.yaml"
    path.write_text(yaml.safe_dump(fleet))
    env = _env(folder / "home")
    run = subprocess.run([FLEET_BIN, "run", "--fleet", str(path)], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return folder, env


def _predict(env: dict, name: str, texts: list[str]) -> list[str]:
    r = subprocess.run([FLEET_BIN, "predict", name, *texts, "--no-log"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.splitlines()


def test_a_version_loads_and_answers_in_a_fresh_environment_without_this_project(champions, tmp_path):
    folder, env = champions
    tracking = f"sqlite:///{folder / 'home' / 'mlflow' / 'mlflow.db'}"
    requirements = tmp_path / "requirements.txt"
    got = subprocess.run(
        [
            sys.executable,
            "-c",
            "import mlflow, sys; print(mlflow.pyfunc.get_model_dependencies(sys.argv[1]))",
            "models:/toy@champion",
        ],
        env=env | {"MLFLOW_TRACKING_URI": tracking},
        capture_output=True,
        text=True,
        check=True,
    )
    requirements.write_text(Path(got.stdout.strip().splitlines()[-1]).read_text())
    pins = [line for line in requirements.read_text().splitlines() if line and not line.startswith("#")]
    assert all("==" in p for p in pins) and not [p for p in pins if "+" in p or "specialist-fleet" in p], pins

    outside = tmp_path / "elsewhere"  # not the checkout: `fleet` is importable only from the version itself
    venv.create(outside / "venv", with_pip=True)
    py = str(outside / "venv" / "bin" / "python")
    install = subprocess.run(
        [py, "-m", "pip", "install", "-q", "-r", str(requirements)], capture_output=True, text=True
    )
    assert install.returncode == 0, install.stderr[-3000:]
    assert subprocess.run([py, "-c", "import fleet"], cwd=outside, capture_output=True).returncode != 0

    script = """
import json, sys, mlflow
out = {}
for name, texts in json.loads(sys.argv[1]).items():
    frame = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(texts)
    out[name] = frame["label"].tolist() if "label" in frame else frame["output"].tolist()
print(json.dumps(out))
"""
    asked = {"toy": TEXTS, "extract": PROMPT}
    r = subprocess.run(
        [py, "-c", script, json.dumps(asked)],
        cwd=outside,
        env=_env(outside / ".fleet") | {"MLFLOW_TRACKING_URI": tracking},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    answers = json.loads(r.stdout.strip().splitlines()[-1])
    assert answers["toy"] == [line.split("\t")[0] for line in _predict(env, "toy", TEXTS)]
    assert answers["extract"] == _predict(env, "extract", PROMPT)

    port = free_port()
    log = tmp_path / "serve.log"
    serve = subprocess.Popen(
        [
            str(outside / "venv" / "bin" / "mlflow"),
            "models",
            "serve",
            "-m",
            "models:/toy@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=outside,  # as in an activated environment: its bin first on PATH (mlflow starts its uvicorn from there)
        env=_env(outside / ".fleet")
        | {"MLFLOW_TRACKING_URI": tracking, "PATH": f"{outside / 'venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", 300, "mlflow models serve", serve, log)
        import urllib.request

        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": TEXTS}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=120) as resp:
            served = json.loads(resp.read())
        labels = [row["label"] for row in served["predictions"]]
        assert labels == answers["toy"]
    finally:
        serve.terminate()
        serve.wait(30)
