"""One home, found (issue 30, item 6): the fleet's folder is found the way git finds its repository, a fleet
file named from elsewhere brings its home along, and a command run where there is no fleet says so instead of
making an empty home and showing an empty fleet. An existing ./.fleet keeps working."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fleet.core import discovery

FLEET_BIN = str(Path(sys.executable).parent / "fleet")


def test_the_root_is_the_nearest_folder_with_a_home_or_a_fleet_file(tmp_path):
    project = tmp_path / "project"
    (project / "deployments").mkdir(parents=True)
    (project / "deployments" / "fleet.yaml").write_text("specialists: {}\n")
    deep = project / "src" / "a" / "b"
    deep.mkdir(parents=True)
    assert discovery.find_root(deep) == project.resolve()
    assert discovery.fleet_file(project) == project / "deployments" / "fleet.yaml"
    (project / "src" / ".fleet").mkdir()  # a home nearer than the fleet file wins, as git's nearest .git does
    assert discovery.find_root(deep) == (project / "src").resolve()
    (project / "fleet.yaml").write_text("specialists: {}\n")
    assert discovery.fleet_file(project) == project / "fleet.yaml"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert discovery.find_root(elsewhere) is None


def _fleet(cwd: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "MLFLOW_", "PREFECT_API"))}
    env |= {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", **extra}
    return subprocess.run([FLEET_BIN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_a_command_where_there_is_no_fleet_says_so_and_makes_no_home(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _fleet(empty, "status")
    assert r.returncode == 2 and "no fleet here" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (empty / ".fleet").exists()


def test_the_home_is_found_from_a_subfolder_and_beside_a_fleet_file_named_from_elsewhere(tmp_path):
    project = tmp_path / "project"
    (project / "sub" / "deeper").mkdir(parents=True)
    (project / "fleet.yaml").write_text("specialists: {}\n")
    r = _fleet(project / "sub" / "deeper", "settings", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["home"] == str((project / ".fleet").resolve())

    outside = tmp_path / "outside"
    outside.mkdir()
    r = _fleet(outside, "status", "--json", "--fleet", str(project / "fleet.yaml"))
    assert r.returncode == 0 and json.loads(r.stdout) == [], r.stderr
    assert (project / ".fleet").is_dir() and not (outside / ".fleet").exists()
    r = _fleet(outside, "status", "--json", "--fleet", str(project / "fleet.yaml"), FLEET_HOME=str(tmp_path / "h"))
    assert r.returncode == 0 and (tmp_path / "h").is_dir()  # FLEET_HOME still wins
