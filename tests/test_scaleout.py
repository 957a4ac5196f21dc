"""The fleet flow fans specialists out through the task runner chosen in settings.

Two tiny specialists trained by a 2-worker local Dask cluster must match what the thread runner trains.
"""

from __future__ import annotations

import os

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


def _run(fleet_file, home, monkeypatch, runner: str) -> tuple[dict, dict]:
    """Run the fleet in its own home with ``runner``; return its rows and each specialist's test probabilities."""
    from fleet.curation import load_split
    from fleet.registry import download_model_dir
    from fleet.settings import Settings
    from fleet.training import TextClassifier
    from flows.fleet import fleet_flow

    monkeypatch.setenv("FLEET_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the previous run exported its own
    monkeypatch.setenv("FLEET_TASK_RUNNER", runner)
    monkeypatch.setenv("FLEET_DASK_WORKERS", "2")
    rows = {r["specialist"]: r for r in fleet_flow(fleet_file=str(fleet_file))}
    settings = Settings.load().apply()
    probs = {}
    for name, row in rows.items():
        test = load_split(settings.store_handle(), name, row["dataset_version"], "test")
        model = TextClassifier(download_model_dir(name, row["version"], home / "check" / name))
        probs[name] = model.predict_proba(test["text"].tolist())
    return rows, probs


def test_dask_runner_matches_thread_runner(tmp_path, fleet_home, monkeypatch):
    fleet_file = write_toy_fleet(tmp_path / "f", extra_specialists=SECOND)
    threads, p_threads = _run(fleet_file, tmp_path / "threads", monkeypatch, "threads")
    dask, p_dask = _run(fleet_file, tmp_path / "dask", monkeypatch, "dask")

    assert set(threads) == set(dask) == {"toy", "toy2"}
    here = f":{os.getpid()}"
    assert all(r["ran_on"].endswith(here) for r in threads.values())
    assert not any(r["ran_on"].endswith(here) for r in dask.values()), "the Dask run did not run in worker processes"
    for name in threads:
        a, b = threads[name], dask[name]
        assert a["status"] == b["status"] == "trained", (a, b)
        for k in ("dataset_version", "version", "alias", "verdict", "challenger_macro_f1", "baseline_macro_f1"):
            assert a[k] == b[k], (name, k, a[k], b[k])
        np.testing.assert_allclose(p_threads[name], p_dask[name], atol=1e-5)
