"""Two `fleet run --only NAME` at once on one home: one fine-tune, one new version, the other run waits.

The two are real processes of the installed `fleet` command, each with its own temporary Prefect server,
sharing the home (the object store, where the training lease lives, and MLflow's database).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from cli.main import app
from conftest import write_toy_fleet

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def start(fleet_file: Path, home: Path, log: Path) -> tuple[subprocess.Popen, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "MLFLOW_", "FLEET_"))}
    env |= {"FLEET_HOME": str(home), "PREFECT_HOME": str(log.with_suffix(".prefect"))}  # one Prefect DB each
    exe = Path(sys.executable).parent / "fleet"
    cmd = [str(exe), "run", "--fleet", str(fleet_file), "--only", "toy"]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env), time.monotonic()


def status_of(output: str, name: str) -> str:
    """The status column of ``name``'s row in the table `fleet run` prints."""
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if cells[0] == name and len(cells) > 1:
            return cells[1]
    raise AssertionError(f"no row for {name} in:\n{output[-2000:]}")


def test_two_runs_at_once_train_once_and_register_once(tmp_path, fleet_home, monkeypatch):
    fleet_file = write_toy_fleet(tmp_path / "f")
    result = CliRunner().invoke(app, ["run", "--fleet", str(fleet_file)])
    assert result.exit_code == 0, result.output
    changed = fleet_file.with_name("changed.yaml")
    changed.write_text(fleet_file.read_text().replace("epochs: 3", "epochs: 4"))  # a new training key

    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start(changed, fleet_home, log) for log in logs]
    ended: dict[int, float] = {}
    deadline = time.monotonic() + 900
    while len(ended) < len(procs) and time.monotonic() < deadline:  # each wall time as it ends
        ended |= {i: time.monotonic() for i, (p, _) in enumerate(procs) if i not in ended and p.poll() is not None}
        time.sleep(0.2)
    for proc, _ in procs:
        assert proc.wait(60) == 0, "\n".join(log.read_text()[-3000:] for log in logs)
    walls = [ended[i] - began for i, (_, began) in enumerate(procs)]
    outputs = [log.read_text() for log in logs]

    versions = MlflowClient().search_model_versions("name='toy'")
    keys = [v.tags["train_key"] for v in versions]
    assert len(versions) == 2 and len(set(keys)) == 2, keys  # version 1, and one new version
    waited = [out for out in outputs if "is being trained by" in out]
    assert len(waited) == 1, outputs  # the other run waited for the lease and reused the stored model
    statuses = sorted(status_of(out, "toy") for out in outputs)
    assert statuses == ["trained", "up-to-date"], outputs
    assert max(walls) <= min(walls) + 30, walls  # the waiting run is not slower than the trainer by much
