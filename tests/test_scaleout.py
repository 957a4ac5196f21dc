"""The fleet flow fans specialists out through the task runner chosen in settings.

Two tiny specialists trained by a 2-worker local Dask cluster must match what the thread runner trains.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from conftest import write_toy_fleet

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

SECOND = """
  toy2:
    data: {source: toy.csv}
    labels: {weather: about the weather, food: about food}
    train: {seed: 7}
"""


def _run(fleet_file, home, monkeypatch, runner: str, workers: int = 2) -> tuple[dict, dict, dict]:
    """Run the fleet in its own home with ``runner``; return its rows, each specialist's test probabilities,
    and the digest of each one's adapter weights."""
    import hashlib

    from fleet.core.settings import Settings
    from fleet.data.versions import load_split
    from fleet.kinds.classification.predict import TextClassifier
    from fleet.models.trainer import cpu_threads
    from fleet.stages.registry import client, download_model_dir
    from flows.fleet_run import fleet_flow

    monkeypatch.setenv("FLEET_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the previous run exported its own
    monkeypatch.setenv("FLEET_TASK_RUNNER", runner)
    monkeypatch.setenv("FLEET_DASK_WORKERS", "2")
    monkeypatch.setenv("FLEET_MAX_WORKERS", str(workers))
    rows = {r.specialist: r for r in fleet_flow(fleet_file=str(fleet_file))}
    settings = Settings.load().apply()
    probs, weights = {}, {}
    for name, row in rows.items():
        test = load_split(settings.store_handle(), name, row.dataset_version, "test")
        folder = Path(download_model_dir(name, row.version, home / "check" / name))
        probs[name] = TextClassifier(str(folder)).predict_proba(test["text"].tolist())
        weights[name] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.safetensors")}
        tags = client().get_model_version(name, row.version).tags
        assert tags["env.torch_threads"] == str(cpu_threads(None)) and tags["env.torch"] and tags["env.peft"], tags
    return rows, probs, weights


def test_runners_and_worker_counts_train_the_same_bits(tmp_path, fleet_home, monkeypatch):
    """Reproducible fine-tuning: the thread runner (2 at once, or 1), and 2 Dask worker processes, whose
    torch starts with one thread (Dask sets OMP_NUM_THREADS=1), give bit-identical models and predictions,
    since a fine-tune fixes torch's thread count (``train.cpu_threads``)."""
    fleet_file = write_toy_fleet(tmp_path / "f", extra_specialists=SECOND)
    threads, p_threads, w_threads = _run(fleet_file, tmp_path / "threads", monkeypatch, "threads")
    dask, p_dask, w_dask = _run(fleet_file, tmp_path / "dask", monkeypatch, "dask")
    one, p_one, w_one = _run(fleet_file, tmp_path / "one", monkeypatch, "threads", workers=1)

    assert set(threads) == set(dask) == set(one) == {"toy", "toy2"}
    here = f":{os.getpid()}"
    assert all(r.ran_on.endswith(here) for r in threads.values())
    assert not any(r.ran_on.endswith(here) for r in dask.values()), "the Dask run did not run in worker processes"
    for name in threads:
        for other in (dask[name], one[name]):
            a, b = threads[name], other
            assert a.status == b.status == "trained", (a, b)
            for k in ("dataset_version", "version", "alias", "verdict", "metric", "scores"):
                assert getattr(a, k) == getattr(b, k), (name, k, getattr(a, k), getattr(b, k))
        assert w_threads[name] and w_threads[name] == w_dask[name] == w_one[name]
        np.testing.assert_array_equal(p_threads[name], p_dask[name])
        np.testing.assert_array_equal(p_threads[name], p_one[name])


def test_distributed_fine_tune_then_register(tmp_path, fleet_home, monkeypatch):
    """`fleet train` in 2 processes (DDP over gloo on CPU): the model is stored once, and the next fleet run
    evaluates and registers that model instead of training again.

    Launched with torchrun, the launcher `accelerate launch --multi_gpu` runs on GPUs (accelerate has no
    multi-process CPU mode without MPI); the Trainer goes through accelerate either way."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from conftest import free_port
    from fleet.core.settings import Settings
    from flows.fleet_run import fleet_flow

    fleet_file = write_toy_fleet(tmp_path / "f")
    env = {**os.environ, "FLEET_HOME": str(fleet_home), "OMP_NUM_THREADS": "1"}
    launcher = Path(sys.executable).parent / "torchrun"
    r = subprocess.run(
        [
            str(launcher),
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(free_port()),
            "-m",
            "cli.main",
            "train",
            "--fleet",
            str(fleet_file),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("trained by 2 process(es)") == 1, r.stdout  # printed by the main process only

    store = Settings.load().store_handle()
    [manifest_key] = [k for k in store.list("models/toy/") if k.endswith("/manifest.json")]
    manifest = json.loads(store.get_bytes(manifest_key))
    assert manifest["world_size"] == 2

    [row] = fleet_flow(fleet_file=str(fleet_file))
    assert row.status == "trained" and row.version == "1"
    from mlflow import MlflowClient

    version = MlflowClient().get_model_version("toy", "1")
    assert version.tags["train_key"] == manifest["training_key"]
    assert [k for k in store.list("models/toy/") if k.endswith("/manifest.json")] == [manifest_key]
    assert json.loads(store.get_bytes(manifest_key)) == manifest  # not trained again
