"""Reliability: faults in the middle of a run, two runs at once, and reproducible fine-tuning.

- faults: runs tests/test_faults.py, where each case cuts a real server's port (MLflow during registration,
  S3 during curation and during the model upload), kills and restarts a real Prefect server during a fleet
  run, or fills the disk while a dataset version is written, and then checks that nothing partial is
  visible, the champion holds, and the next run completes without training again. Each case is reported as
  survived, or as failed with what its test found.
- concurrency: in a fresh home, `fleet run --only sms-spam` once; then, with a changed training setting,
  two `fleet run --only sms-spam` started at once (separate processes): fine-tunes, new versions, wall times.
- reproducibility: the demo fleet (or --only) cold in two fresh homes: each champion's gate metric and its
  answers on the test split, compared exactly.
Writes benchmarks/results/reliability.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
FLEET_BIN = str(Path(sys.executable).parent / "fleet")
DEMO = ROOT / "deployments" / "fleet.yaml"


def env_for(home: Path, prefect_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "FLEET_"))}
    return env | {
        "FLEET_HOME": str(home),
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def start_run(fleet_file: Path, home: Path, log: Path, only: list[str]) -> tuple[subprocess.Popen, float]:
    cmd = [FLEET_BIN, "run", "--fleet", str(fleet_file), *[a for n in only for a in ("--only", n)]]
    proc = subprocess.Popen(
        cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env_for(home, log.with_suffix(".p"))
    )
    return proc, time.monotonic()


def finish(proc: subprocess.Popen, began: float, log: Path) -> tuple[float, str]:
    if proc.wait(7200) != 0:
        raise SystemExit(f"`fleet run` failed; its output {log}:\n{log.read_text()[-3000:]}")
    return round(time.monotonic() - began, 1), log.read_text()


def status_of(output: str, name: str) -> str:
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if cells[0] == name and len(cells) > 1:
            return cells[1]
    return "?"


def faults(folder: Path) -> dict:
    report = folder / "faults.xml"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        str(ROOT / "tests" / "test_faults.py"),
        f"--junitxml={report}",
    ]
    subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    cases = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        cases[case.get("name", "?")] = {
            "outcome": "survived" if problem is None else "failed",
            "seconds": round(float(case.get("time", 0)), 1),
            **({} if problem is None else {"what": (problem.get("message") or "")[:500]}),
        }
    return {"cases": cases, "data_lost": [n for n, c in cases.items() if c["outcome"] != "survived"]}


def changed_fleet(folder: Path, name: str) -> Path:
    """The demo fleet with one training setting of ``name`` changed (a new training key), sources made absolute."""
    raw = yaml.safe_load(DEMO.read_text())
    for spec in raw["specialists"].values():
        src = spec.get("data", {}).get("source", "")
        if src and "://" not in src and not Path(src).is_absolute():
            spec["data"]["source"] = str((DEMO.parent / src).resolve())
    raw["specialists"][name].setdefault("train", {})["seed"] = 4242
    path = folder / "changed.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def versions(home: Path, name: str) -> list[dict]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    return [
        {"version": v.version, "train_key": v.tags.get("train_key")}
        for v in client.search_model_versions(f"name='{name}'")
    ]


def concurrency(folder: Path, name: str) -> dict:
    folder.mkdir(parents=True)
    home = folder / "home"
    first_s, _ = finish(*start_run(DEMO, home, folder / "cold.log", [name]), folder / "cold.log")
    fleet_file = changed_fleet(folder, name)
    logs = [folder / "a.log", folder / "b.log"]
    started = [start_run(fleet_file, home, log, [name]) for log in logs]
    ended: dict[int, float] = {}
    while len(ended) < len(started):  # each one's wall time as it ends, not as it is waited for
        ended |= {i: time.monotonic() for i, (p, _) in enumerate(started) if i not in ended and p.poll() is not None}
        time.sleep(0.2)
    done = [finish(p, t, log) for (p, t), log in zip(started, logs)]
    walls = [round(ended[i] - t, 1) for i, (_, t) in enumerate(started)]
    outputs = [o for _, o in done]
    found = versions(home, name)
    return {
        "specialist": name,
        "cold_run_s": first_s,
        "wall_s": walls,
        "second_minus_first_s": round(max(walls) - min(walls), 1),
        "statuses": [status_of(o, name) for o in outputs],
        "fine_tunes": sum("is being trained by" not in o for o in outputs),
        "runs_that_waited_for_the_lease": sum("is being trained by" in o for o in outputs),
        "versions": found,
        "new_versions": len(found) - 1,
        "distinct_train_keys": len({v["train_key"] for v in found}),
    }


def champion_answers(home: Path, name: str) -> dict:
    """The champion's gate metric (from its decision record) and its answers on its test split."""
    import mlflow

    from fleet.core.settings import Settings
    from fleet.data.versions import load_split
    from fleet.stages import registry

    os.environ.update({"FLEET_HOME": str(home)})
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    settings = Settings.load().apply()
    version = registry.champion_version(name)
    record = registry.decision_record(name, version)
    tags = registry.client().get_model_version(name, str(version.version)).tags
    test = load_split(settings.store_handle(), name, tags["dataset_version"], "test")
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    column = "prompt" if "prompt" in test.columns else "text"
    answers = model.predict(test[column].tolist())
    challenger = record.contenders.get("challenger") if record else None
    return {
        "version": str(version.version),
        "dataset_version": tags["dataset_version"],
        "train_key": tags["train_key"],
        "metric": record.metric if record else None,
        "score": None if challenger is None or record is None else challenger.value(record.metric),
        "answers": answers.astype(str).to_numpy().tolist(),
    }


def reproducibility(folder: Path, only: list[str]) -> dict:
    """Two cold runs, one after the other, each in a fresh home; every champion compared exactly."""
    folder.mkdir(parents=True)
    runs = []
    for i in (1, 2):
        home, log = folder / f"home{i}", folder / f"cold{i}.log"
        wall, _ = finish(*start_run(DEMO, home, log, only), log)
        runs.append((home, wall))
    names = only or list(yaml.safe_load(DEMO.read_text())["specialists"])
    out: dict = {"cold_run_s": [w for _, w in runs], "specialists": {}}
    for name in names:
        a, b = (champion_answers(home, name) for home, _ in runs)
        same = sum(x == y for x, y in zip(a["answers"], b["answers"]))
        out["specialists"][name] = {
            "metric": a["metric"],
            "scores": [a["score"], b["score"]],
            "scores_equal_to_4_decimals": round(a["score"], 4) == round(b["score"], 4),
            "train_keys_equal": a["train_key"] == b["train_key"],
            "dataset_versions_equal": a["dataset_version"] == b["dataset_version"],
            "test_answers": len(a["answers"]),
            "identical_test_answers": same,
            "all_identical": same == len(a["answers"]) == len(b["answers"]),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reliability.json"))
    ap.add_argument("--only", action="append", default=[], help="Reproducibility: these demo specialists only.")
    ap.add_argument("--skip", action="append", default=[], choices=["faults", "concurrency", "reproducibility"])
    args = ap.parse_args()
    out = Path(args.out)
    result = json.loads(out.read_text()) if out.exists() else {}  # a skipped part keeps its last figures
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} cores"
    with tempfile.TemporaryDirectory(prefix="fleet-reliability-") as tmp:
        parts = {
            "faults": lambda: faults(Path(tmp)),
            "concurrency": lambda: concurrency(Path(tmp) / "c", "sms-spam"),
            "reproducibility": lambda: reproducibility(Path(tmp) / "r", args.only),
        }
        for part, run in parts.items():
            if part not in args.skip:
                started = time.monotonic()
                result[part] = run() | {"benchmark_s": round(time.monotonic() - started, 1)}
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(result, indent=2) + "\n")
                print(f"{part}: done in {result[part]['benchmark_s']} s", flush=True)
    print(json.dumps({k: v for k, v in result.items() if k != "reproducibility"}, indent=2))


if __name__ == "__main__":
    main()
