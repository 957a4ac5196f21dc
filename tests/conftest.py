"""Shared fixtures. Every test gets its own FLEET_HOME; Prefect's test server starts once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.health import ServerError, free_port, wait_http

ROOT = Path(__file__).resolve().parents[1]
# Prefect's telemetry heartbeat only adds SQLite lock contention in tests.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
DEMO_FLEET = ROOT / "deployments" / "fleet.yaml"


@pytest.fixture(scope="session")
def moto_server():
    """moto's S3 server on a free loopback port; yields its endpoint URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/moto-api/", 60, "moto server", proc)
    except ServerError as exc:
        proc.kill()
        pytest.fail(str(exc))
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def s3_env(moto_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return moto_server


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    """An empty object store of each kind: a local folder, and a bucket on moto's server."""
    from fleet.core.storage import LocalStore, S3Store

    if request.param == "local":
        return LocalStore(tmp_path / "store")
    import boto3

    endpoint = request.getfixturevalue("s3_env")
    bucket = f"b-{abs(hash(str(tmp_path))) % 10**8}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return S3Store(f"s3://{bucket}/prefix")


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server for the whole session (it takes 7-15 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture
def fleet_home(tmp_path, monkeypatch):
    """A fresh FLEET_HOME (MLflow store, object store, runs) for one test."""
    home = tmp_path / "home"
    monkeypatch.setenv("FLEET_HOME", str(home))
    for var in ("MLFLOW_TRACKING_URI", "FLEET_STORE", "FLEET_ARTIFACT_ROOT"):
        monkeypatch.delenv(var, raising=False)
    yield home
    import mlflow

    mlflow.set_tracking_uri(None)


TOY_TOPICS = {
    # the label descriptions are deliberately swapped, so the zero-shot baseline does badly
    "weather": (
        "rain and wind",
        [
            "It will rain {} tomorrow",
            "Strong wind expected near {}",
            "Sunny skies over {} today",
            "Snow is falling in {}",
            "A storm hits {} tonight",
        ],
    ),
    "food": (
        "cooking a meal",
        [
            "I cooked pasta in {}",
            "The best pizza is in {}",
            "We baked bread at {}",
            "Fresh salad served in {}",
            "Soup recipe from {}",
        ],
    ),
}
PLACES = ["Paris", "Oslo", "Lima", "Cairo", "Delhi", "Tokyo", "Quito", "Rome", "Bern", "Accra", "Hanoi", "Perth"]


def write_toy_fleet(folder: Path, *, extra_train: str = "", extra_specialists: str = "") -> Path:
    """A one-specialist fleet on 120 easy, hand-made rows, trained in seconds."""
    import pandas as pd

    rows = [
        {"text": t.format(p), "label": lab} for lab, (_, temps) in TOY_TOPICS.items() for t in temps for p in PLACES
    ]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "toy.csv", index=False)
    train = {"epochs": "3", "batch_size": "8", "learning_rate": "2.0e-3", "max_length": "16"}
    for part in filter(str.strip, extra_train.split(",")):  # overrides: a key twice is an error in a fleet file
        key, value = part.split(":", 1)
        train[key.strip()] = value.strip()
    (folder / "fleet.yaml").write_text(f"""
defaults:
  train: {{{", ".join(f"{k}: {v}" for k, v in train.items())}}}
  gate: {{min_gain_over_baseline: 0.0}}
  curation: {{near_duplicates: {{enabled: false}}}}  # the toy rows are templates: near-twins on purpose
  evaluation:
    bootstrap_resamples: 200
    latency_samples: 5
    slices:
      - {{name: mentions-rain, regex: "(?i)rain", guarded: true, tolerance: 0.0}}
      - {{name: short, max_chars: 24}}
specialists:
  toy:
    data: {{source: toy.csv}}
    labels:
      weather: {TOY_TOPICS["food"][0]}
      food: {TOY_TOPICS["weather"][0]}
{extra_specialists}""")
    return folder / "fleet.yaml"


def sentences(n: int, seed: int = 0, words: int = 8) -> list[str]:
    """``n`` distinct sentences of random pseudo-words: no two are near-duplicates of each other."""
    import random
    import string

    rng = random.Random(seed)
    return [
        " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 8))) for _ in range(words))
        for _ in range(n)
    ]


TOY_SCHEMA = {
    "type": "object",
    "required": ["city", "temp"],
    "additionalProperties": False,
    "properties": {"city": {"type": "string"}, "temp": {"type": "integer"}},
}
TOY_PHRASINGS = [
    "Weather report: {c} is at {t} degrees.",
    "In {c} it is {t} degrees today.",
    "{c}: {t} degrees right now.",
    "Temperature in {c}: {t} degrees.",
    "Right now {c} has {t} degrees.",
    "It's {t} degrees in {c}.",
]
TOY_CITIES = ["Paris", "Oslo", "Lima", "Cairo", "Delhi", "Tokyo", "Quito", "Rome"]


def write_toy_generation(folder: Path, *, name: str = "extract", epochs: int = 2) -> Path:
    """A generative specialist on 48 tiny e-mails -> JSON pairs (6 phrasings, split by phrasing), trained in seconds."""
    import json

    rows = [
        {
            "prompt": p.format(c=c, t=10 + 3 * i + j),
            "response": json.dumps({"city": c, "temp": 10 + 3 * i + j}),
            "phrasing": f"p{j}",
        }
        for j, p in enumerate(TOY_PHRASINGS)
        for i, c in enumerate(TOY_CITIES)
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "toy_gen.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "fleet.yaml").write_text(f"""
specialists:
  {name}:
    task: text-generation
    data: {{source: toy_gen.jsonl, group_column: phrasing}}
    curation: {{near_duplicates: {{enabled: false}}}}
    split: {{validation: 0.17, test: 0.17, seed: 3}}
    generation:
      system: Answer with JSON with the keys city and temp.
      output: json
      max_new_tokens: 16
      json_schema: {json.dumps(TOY_SCHEMA)}
    train: {{epochs: {epochs}, learning_rate: 3.0e-3, batch_size: 8, lora: {{r: 8, alpha: 16}}}}
    gate: {{min_gain_over_baseline: 0.0}}
    evaluation:
      bootstrap_resamples: 200
      latency_samples: 2
      timing_rows: 4
      baselines: [{{kind: base-model, shots: 0}}, {{kind: base-model, shots: 1}}]
""")
    return folder / "fleet.yaml"
