"""`fleet serve-models` serving generative specialists through llama.cpp beside a classifier: two generative
specialists on one llama.cpp base (the adapter chosen per request), the same API, limits and metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

from cli.health import free_port, wait_http
from conftest import write_toy_fleet, write_toy_generation

pytestmark = [pytest.mark.slow, pytest.mark.integration]
FLEET_BIN = str(Path(sys.executable).parent / "fleet")
TOKEN = "generative-serving-test-token"


def call(url: str, body: dict | None = None, timeout: float = 120) -> tuple[int, dict | str]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET", headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
        return r.status, (json.loads(raw) if r.headers.get_content_type() == "application/json" else raw.decode())


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gen-serving")
    generation = yaml.safe_load(write_toy_generation(folder / "f").read_text())
    fleet = yaml.safe_load(write_toy_fleet(folder / "f").read_text())
    extract = generation["specialists"]["extract"]
    fleet["specialists"] |= {"extract": extract, "extract2": {**extract, "train": {**extract["train"], "seed": 7}}}
    fleet_file = folder / "f" / "fleet.yaml"
    fleet_file.write_text(yaml.safe_dump(fleet))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "MLFLOW_", "FLEET_"))}
    env.update(FLEET_HOME=str(folder / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false", FLEET_SERVE_TOKEN=TOKEN)
    run = subprocess.run([FLEET_BIN, "run", "--fleet", str(fleet_file)], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    port, log = free_port(), folder / "server.log"
    proc = subprocess.Popen(
        [FLEET_BIN, "serve-models", "--port", str(port), "--fleet", str(fleet_file)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 180, "fleet serve-models", proc, log)
        yield {"url": f"http://127.0.0.1:{port}", "pid": proc.pid, "log": log}
    finally:
        proc.terminate()
        proc.wait(30)


def test_generative_specialists_share_one_llama_cpp_base_beside_a_classifier(served):
    url = served["url"]
    _, health = call(f"{url}/healthz")
    assert set(health["specialists"]) == {"toy", "extract", "extract2"} and health["bases"] == 2
    _, results = call(
        f"{url}/v1/predict",
        {
            "requests": [
                {"specialist": "extract", "inputs": ["In Madrid it is 25 degrees today.", "Oslo reports 3 degrees."]},
                {"specialist": "extract2", "inputs": ["Right now Lima has 18 degrees."]},
                {"specialist": "toy", "inputs": ["It will rain in Bergen tomorrow"]},
            ]
        },
    )
    answers = [[a.get("output", a.get("label")) for a in r["answers"]] for r in results]
    for output in answers[0] + answers[1]:
        assert set(json.loads(output)) == {"city", "temp"}  # the adapters answer in their trained format
    assert answers[2] == ["weather"]
    process = psutil.Process(served["pid"])
    libraries = {Path(m.path).name for m in process.memory_maps() if m.path}
    assert any(n.startswith("libllama") for n in libraries)  # answered by llama.cpp, in the server's process


def test_a_long_prompt_is_cut_to_max_prompt_tokens_and_does_not_hold_the_others(served):
    url = served["url"]
    long_prompt = "In Madrid it is 25 degrees today. " * 500  # 17,500 characters: under the text limit
    status, result = call(f"{url}/v1/specialists/extract/predict", {"inputs": [long_prompt]})
    assert status == 200 and len(result["answers"]) == 1
    _, metrics = call(f"{url}/metrics")
    assert 'specialist="extract"' in metrics and 'specialist="extract2"' in metrics
    with pytest.raises(urllib.error.HTTPError, match="413"):
        call(f"{url}/v1/specialists/extract/predict", {"inputs": ["x" * 20_001]})
