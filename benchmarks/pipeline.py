"""Where a fleet run's wall time goes: each stage of each specialist, for a cold and a warm run.

Runs `fleet run` on a fleet file (default: the demo fleet) twice in a fresh home, as a user would (a
subprocess each), then reads the stages' start and end times from Prefect's own records (the task runs
of each specialist's flow run, in the home's Prefect database). Reported per trained specialist: curate,
fine-tune, evaluate, reference, register, and the time outside fine-tuning; for the fleet flow: its wall
time, the sum of the fine-tunes, and the fine-tuning share of the wall time. Stages that wait for a compute
slot (``fleet.core.compute``) count the wait in their stage time, so each specialist's time inside its training
slot (``fit_seconds``, from its stored model) is reported too, with ``outside_fit_s`` (its flow's wall time
less that) and ``fit_share``; with ``--workers 1`` a specialist's ``outside_fit_s`` is its own cost alone.
``--set generation.engine=transformers`` runs a variant of the fleet file (the setting given to every
specialist run); ``--retrain-set train.seed=7`` adds a third run after the warm one with only that training
setting changed: its stage times, and how many contender scores it reused instead of scoring again.
Writes benchmarks/results/pipeline.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLEET_BIN = str(Path(sys.executable).parent / "fleet")
STAGES = {
    "curate": "curate",
    "fine-tune": "fine_tune",
    "evaluate-general": "evaluate_general",
    "evaluate": "evaluate",
    "reference-profile": "reference",
    "register": "register",
}


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def _union(intervals: list[tuple[datetime, datetime]]) -> float:
    """Seconds covered by at least one interval."""
    total, end = 0.0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += (b - a).total_seconds()
            end = b
        elif b > end:
            total += (b - end).total_seconds()
            end = b
    return total


def stage_times(db: Path, fleet_run_name: str, newest: bool = True) -> dict:
    """The newest (or oldest) fleet flow run named ``fleet_run_name``, its specialists' flow runs and task runs.

    Fine-tunes in one process take turns (one training slot), so a fine-tune task's time includes waiting
    for the other's; the fleet's fine-tuning time is the union of the fine-tune tasks' intervals (the time
    during which some fine-tune was running)."""
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    fleet = con.execute(
        f"select * from flow_run where name = ? order by start_time {'desc' if newest else 'asc'} limit 1",
        (fleet_run_name,),
    ).fetchone()
    out: dict = {"fleet_flow_s": _seconds(fleet["start_time"], fleet["end_time"]), "specialists": {}}
    children = con.execute(
        "select fr.* from flow_run fr join task_run tr on fr.parent_task_run_id = tr.id where tr.flow_run_id = ?",
        (fleet["id"],),
    ).fetchall()
    tuning = []
    for child in children:
        stages: dict[str, float] = {}
        for tr in con.execute("select * from task_run where flow_run_id = ?", (child["id"],)):
            key = STAGES.get(tr["name"].rsplit("-", 1)[0])
            if key is not None and tr["start_time"] and tr["end_time"]:
                stages[key] = round(stages.get(key, 0.0) + (_seconds(tr["start_time"], tr["end_time"]) or 0.0), 2)
                if key == "fine_tune":
                    tuning.append((datetime.fromisoformat(tr["start_time"]), datetime.fromisoformat(tr["end_time"])))
        row = {"flow_s": round(_seconds(child["start_time"], child["end_time"]) or 0.0, 2), "stages": stages}
        if "fine_tune" in stages:
            row["outside_fine_tune_s"] = round(sum(v for k, v in stages.items() if k != "fine_tune"), 2)
            after = [stages.get(k, 0.0) for k in ("evaluate", "reference", "register")]
            row["after_fine_tune_s"] = round(sum(after), 2)
            row["wall_outside_fine_tune_s"] = round(row["flow_s"] - stages["fine_tune"], 2)
        out["specialists"][child["name"]] = row
    out["fine_tuning_s"] = round(_union(tuning), 2)
    out["fine_tune_share"] = round(out["fine_tuning_s"] / out["fleet_flow_s"], 4) if out["fleet_flow_s"] else None
    return out


def fit_seconds(store: Path) -> dict[str, float]:
    """Each trained model's time inside the training slot (recorded by the fine-tune stage, when it does)."""
    out = {}
    for manifest in store.glob("models/*/*/manifest.json"):
        info = json.loads(manifest.read_text())
        if "fit_seconds" in info:
            out[info.get("specialist", manifest.parts[-3])] = info["fit_seconds"]
    return out


def outside_fit(cold: dict) -> None:
    """Per specialist, its flow's wall time less its time inside the training slot (``outside_fit_s``: with one
    specialist at a time, everything else it costs), and the fleet's share of time spent fitting."""
    fits = cold["fit_seconds"]
    for name, row in cold["specialists"].items():
        if name in fits:
            row["outside_fit_s"] = round(row["flow_s"] - fits[name], 2)
    if cold["fleet_flow_s"]:
        cold["fit_share"] = round(sum(fits.values()) / cold["fleet_flow_s"], 4)


def concurrency(env: dict) -> dict:
    """The run's specialists at once and compute slots: as set for it, else the settings' defaults."""
    from fleet.core.settings import Settings

    fields = Settings.model_fields
    return {
        "max_workers": int(env.get("FLEET_MAX_WORKERS", fields["max_workers"].default)),
        "compute_slots": int(env.get("FLEET_COMPUTE_SLOTS", fields["compute_slots"].default)),
    }


def variant(fleet_file: str, settings: list[str], only: list[str], tag: str) -> str:
    """A copy of the fleet file beside it (its relative data paths still hold) with ``settings``
    (``a.b=value``, value read as YAML) set in every specialist named in ``only`` (all when empty)."""
    import yaml

    if not settings:
        return fleet_file
    doc = yaml.safe_load(Path(fleet_file).read_text())
    for name, spec in doc["specialists"].items():
        if only and name not in only:
            continue
        for item in settings:
            path, value = item.split("=", 1)
            *parents, leaf = path.split(".")
            node = spec
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = yaml.safe_load(value)
    out = Path(fleet_file).with_name(f".bench-{tag}-{Path(fleet_file).name}")
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(out)


def timed_run(fleet_file: str, env: dict, log: Path, only: list[str]) -> float:
    t0 = time.monotonic()
    with log.open("ab") as f:
        cmd = [FLEET_BIN, "run", "--fleet", fleet_file, *only]
        r = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        sys.exit(f"fleet run failed ({r.returncode}); see {log}")
    return round(time.monotonic() - t0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fleet", default=str(ROOT / "deployments" / "fleet.yaml"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pipeline.json"))
    ap.add_argument("--label", default="after", help="Key of this measurement in the output (e.g. before, after).")
    ap.add_argument("--only", action="append", default=[], help="These specialists of the fleet file only.")
    ap.add_argument("--set", action="append", default=[], help="PATH=VALUE set in each specialist run (all runs).")
    ap.add_argument("--retrain-set", action="append", default=[], help="PATH=VALUE changed for a third run.")
    ap.add_argument(
        "--workers",
        type=int,
        help="FLEET_MAX_WORKERS (1: one specialist at a time, so each "
        "specialist's time outside its fine-tune is its own, not another's turn on the cores).",
    )
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="fleet-bench-pipeline-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "FLEET_", "AWS_"))}
    env.update(FLEET_HOME=str(home / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.update({k: os.environ[k] for k in ("FLEET_MAX_WORKERS", "FLEET_COMPUTE_SLOTS") if k in os.environ})
    if args.workers:
        env["FLEET_MAX_WORKERS"] = str(args.workers)
    log, only = home / "fleet-run.log", [a for n in args.only for a in ("--only", n)]
    fleet_file = variant(args.fleet, args.set, args.only, "set")
    try:
        result = measure(args, fleet_file, env, home, log, only)
    finally:
        for made in {fleet_file, variant(args.fleet, args.set + args.retrain_set, args.only, "retrain")}:
            if made != args.fleet:
                Path(made).unlink(missing_ok=True)
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.is_file() else {}
    doc[args.label] = result
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def measure(args: argparse.Namespace, fleet_file: str, env: dict, home: Path, log: Path, only: list[str]) -> dict:
    cold_s = timed_run(fleet_file, env, log, only)
    cold = stage_times(home / "home" / "prefect" / "prefect.db", "fleet-manual")
    cold["fit_seconds"] = fit_seconds(home / "home" / "store")
    outside_fit(cold)
    warm_s = timed_run(fleet_file, env, log, only)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "fleet": args.fleet,
        "only": args.only,
        "set": args.set,
        **concurrency(env),
        "cold": {"command_s": cold_s, **cold},
        "warm": {"command_s": warm_s},
        "warm_over_cold": round(warm_s / cold_s, 3),
    }
    if args.retrain_set:
        before = log.read_text(errors="replace").count("score reused")
        retrain_file = variant(args.fleet, args.set + args.retrain_set, args.only, "retrain")
        retrain_s = timed_run(retrain_file, env, log, only)
        stages = stage_times(home / "home" / "prefect" / "prefect.db", "fleet-manual")
        reused = log.read_text(errors="replace").count("score reused") - before
        result["retrain"] = {"changed": args.retrain_set, "command_s": retrain_s, "scores_reused": reused, **stages}
    return result


if __name__ == "__main__":
    main()
