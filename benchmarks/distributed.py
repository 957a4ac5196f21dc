"""Specialists through Prefect workers that share nothing but the servers (issue 31).

Starts the stack (`fleet up`: PostgreSQL, Prefect, MLflow, S3) in a temporary home, a process work pool and
two `prefect worker` processes, each with its own home and empty working folder, and measures:

- overhead: the same toy specialists through the thread runner (in `fleet run`) and through the deployments
  runner (a run of the `specialist` deployment each, on the workers): per specialist, submission to start
  (flow run created -> started on a worker) and result collection (its end -> the fleet run's task done);
  the fleet runs' wall times and their ratio;
- kill: a 12-epoch toy whose worker is SIGKILLed (with the run under it) once a checkpoint is in the store:
  the checkpoint's step, the work lost (seconds between that checkpoint and the kill), the time until the
  watchdog marked the run Crashed, and until the retry on the other worker finished;
- slots: 24 tiny specialists through the 2 workers (each takes 3 runs at once) with one fine-tune slot per
  worker (FLEET_FINE_TUNE_SLOTS=1): the most fine-tunes that overlapped on one worker, read from the fine-tune
  task runs' start and end times (goal: 1), and the wall time.
Writes benchmarks/results/distributed.json (or --out). Takes about 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TOY_ROWS = {
    "weather": ["It will rain {} tomorrow", "Strong wind expected near {}", "Sunny skies over {} today"],
    "food": ["The best pizza in {}", "A new bakery opened in {}", "Street food markets of {}"],
}
PLACES = ["Paris", "Lima", "Oslo", "Cairo", "Quito", "Hanoi", "Perth", "Dakar", "Bern", "Riga"]


def post(url: str, body: dict):
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def write_fleet(folder: Path, names: list[str], epochs: dict[str, int] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["text,label"] + [f"{t.format(p)},{label}" for label, ts in TOY_ROWS.items() for t in ts for p in PLACES]
    (folder / "toy.csv").write_text("\n".join(rows) + "\n")
    lines = [
        "defaults:",
        "  train: {epochs: 3, batch_size: 8, learning_rate: 2.0e-3, max_length: 16}",
        "  gate: {min_gain_over_baseline: 0.0}",
        "  curation: {near_duplicates: {enabled: false}}",
        "  evaluation: {bootstrap_resamples: 100, latency_samples: 3}",
        "specialists:",
    ]
    for name in names:
        lines += [
            f"  {name}:",
            "    data: {source: toy.csv}",
            "    labels: {weather: rain and wind, food: cooking a meal}",
        ]
        if epochs and name in epochs:
            lines.append(f"    train: {{epochs: {epochs[name]}}}")
    (folder / "fleet.yaml").write_text("\n".join(lines) + "\n")
    return folder / "fleet.yaml"


class Bench:
    def __init__(self, root: Path):
        self.root = root
        self.home = root / "stack-home"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "FLEET_", "AWS_"))}
        self.env.update(FLEET_HOME=str(self.home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        self.workers: dict[str, subprocess.Popen] = {}

    def fleet(self, *args: str, env: dict | None = None, timeout: float = 1200) -> subprocess.CompletedProcess:
        r = subprocess.run(
            [str(BIN / "fleet"), *args], env=env or self.env, capture_output=True, text=True, timeout=timeout
        )
        if r.returncode != 0:
            raise RuntimeError(f"fleet {' '.join(args)}: {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        return r

    def up(self) -> None:
        self.fleet("up", timeout=600)
        from cli import stack as fleet_stack

        st = fleet_stack.Stack.read(self.home / "stack")
        self.stack_env = st.env
        self.api = st.env["PREFECT_API_URL"]
        self.env = {**self.env, **st.env, "FLEET_ENV_FILE": str(fleet_stack.env_file(self.home))}
        self.env.update(FLEET_HEARTBEAT_S="2", FLEET_STUCK_AFTER_S="30", FLEET_LEASE_TTL_S="20")

    def s3(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.stack_env["AWS_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="y",
        )

    def start_worker(self, name: str, limit: int) -> None:
        (self.root / name / "cwd").mkdir(parents=True, exist_ok=True)
        env = {
            **self.env,
            "FLEET_HOME": str(self.root / name / "home"),
            "FLEET_WORKER_NAME": name,
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "FLEET_FINE_TUNE_SLOTS": "1",
        }
        self.workers[name] = subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", "bench", "--name", name, "--limit", str(limit)],
            env=env,
            cwd=self.root / name / "cwd",
            stdout=(self.root / f"{name}.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop_workers(self) -> None:
        import psutil

        for proc in self.workers.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        p.kill()
            proc.wait(10)
        self.workers = {}

    def submitter_env(self, runner: str, tag: str) -> dict:
        return {**self.env, "FLEET_TASK_RUNNER": runner, "FLEET_HOME": str(self.root / f"submitter-{tag}")}

    def runs(self, names: list[str]) -> list[dict]:
        return post(f"{self.api}/flow_runs/filter", {"flow_runs": {"name": {"any_": names}}, "limit": 200})


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def overhead(b: Bench, names: list[str]) -> dict:
    """The same toy specialists (same data and settings, their names prefixed) through the thread runner and
    through the deployments runner."""
    threaded, deployed = [f"t-{n}" for n in names], [f"d-{n}" for n in names]
    t0 = time.monotonic()
    b.fleet("run", "--fleet", str(write_fleet(b.root / "threads", threaded)), env=b.submitter_env("threads", "threads"))
    threads_s = time.monotonic() - t0
    t0 = time.monotonic()
    b.fleet(
        "run",
        "--fleet",
        str(write_fleet(b.root / "deployments", deployed)),
        env=b.submitter_env("deployments", "deployments"),
    )
    deployments_s = time.monotonic() - t0
    per = {}
    for r in b.runs(deployed):
        if r["deployment_id"] and r["state_type"] == "COMPLETED":
            created, start, end = _ts(r["created"]), _ts(r["start_time"]), _ts(r["end_time"])
            per[r["name"]] = {
                "submission_to_start_s": round(start - created, 1),
                "run_s": round(end - start, 1),
                "end": end,
            }
    # the fleet run's task for each specialist (named after it) ends once the result is read back
    for t in post(f"{b.api}/task_runs/filter", {"task_runs": {"name": {"any_": deployed}}, "limit": 200}):
        if t["name"] in per and t["end_time"]:
            per[t["name"]]["result_collection_s"] = round(_ts(t["end_time"]) - per[t["name"]]["end"], 1)
    for row in per.values():
        row.pop("end")
    return {
        "specialists": names,
        "threads_runner_s": round(threads_s, 1),
        "deployments_runner_s": round(deployments_s, 1),
        "ratio": round(deployments_s / threads_s, 2),
        "per_specialist": per,
    }


def kill(b: Bench) -> dict:
    fleet_file = write_fleet(b.root / "kill", ["gamma"], epochs={"gamma": 12})
    s3 = b.s3()
    env = b.submitter_env("deployments", "kill")
    submit = subprocess.Popen(
        [str(BIN / "fleet"), "run", "--fleet", str(fleet_file)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    t0 = time.monotonic()
    latest = None
    while latest is None:
        if time.monotonic() - t0 > 600 or submit.poll() is not None:
            raise RuntimeError("no checkpoint of gamma was stored")
        found = [
            o["Key"]
            for o in s3.list_objects_v2(Bucket="fleet", Prefix="store/checkpoints/gamma/").get("Contents", [])
            if o["Key"].endswith("latest.json")
        ]
        latest = found[0] if found else None
        time.sleep(0.25)
    stored_at = time.time()
    step = json.loads(s3.get_object(Bucket="fleet", Key=latest)["Body"].read())["step"]
    time.sleep(2)  # a little work past the checkpoint, lost with the worker
    first = b.runs(["gamma"])[0]
    beat = json.loads(s3.get_object(Bucket="fleet", Key=f"store/heartbeats/{first['id']}.json")["Body"].read())
    victim = beat["on"].split(":")[0]
    killed = time.time()
    import psutil

    proc = b.workers[victim]
    for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    stdout, stderr = submit.communicate(timeout=900)
    done = time.time()
    if submit.returncode != 0:
        raise RuntimeError(f"fleet run: {stdout[-2000:]}\n{stderr[-2000:]}")
    crashed = next(r for r in b.runs(["gamma"]) if r["id"] == first["id"])
    return {
        "killed_worker": victim,
        "checkpoint_step": step,
        "work_lost_s": round(killed - stored_at, 1),
        "kill_to_crashed_s": round(_ts(crashed["end_time"]) - killed, 1) if crashed["end_time"] else None,
        "kill_to_done_s": round(done - killed, 1),
        "stuck_after_s": float(b.env["FLEET_STUCK_AFTER_S"]),
        "lease_ttl_s": float(b.env["FLEET_LEASE_TTL_S"]),
    }


def slots(b: Bench, n: int) -> dict:
    names = [f"tiny-{i:02d}" for i in range(n)]
    fleet_file = write_fleet(b.root / "slots", names)
    t0 = time.monotonic()
    # 6 flow-run processes starting at once on 2 cores stay Pending longer than the kill measure's 30 s: the
    # watchdog would take them for stuck (it did, in a first run of this measure), so 120 s here
    env = {**b.submitter_env("deployments", "slots"), "FLEET_STUCK_AFTER_S": "120"}
    b.fleet("run", "--fleet", str(fleet_file), env=env, timeout=3600)
    wall = time.monotonic() - t0
    s3 = b.s3()
    where, spans, names_by_id = {}, {}, {}
    for r in b.runs(names):
        names_by_id[r["id"]] = r["name"]
        if r["deployment_id"] and r["state_type"] == "COMPLETED":
            res = json.loads(
                s3.get_object(Bucket="fleet", Key=f"store/results/specialist/{r['id']}.json")["Body"].read()
            )
            where[r["id"]] = res["ran_on"].split(":")[0]
    # fine-tune task runs (from the wait for a slot to the end) and the time each held its worker's slot
    # (between its "took a slot" and "released a slot" log lines)
    tasks = post(
        f"{b.api}/task_runs/filter",
        {"task_runs": {"name": {"like_": "fine-tune"}}, "flow_runs": {"id": {"any_": list(where)}}, "limit": 200},
    )
    task_spans: dict[str, list] = {}
    for t in tasks:
        if t["start_time"] and t["end_time"] and t["flow_run_id"] in where:
            task_spans.setdefault(where[t["flow_run_id"]], []).append((_ts(t["start_time"]), _ts(t["end_time"])))
    logs: list[dict] = []
    for offset in range(0, 2000, 200):
        page = post(
            f"{b.api}/logs/filter",
            {"logs": {"flow_run_id": {"any_": list(where)}, "level": {"ge_": 20}}, "limit": 200, "offset": offset},
        )
        logs += page
        if len(page) < 200:
            break
    taken, released = {}, {}
    for entry in logs:
        if entry["message"].startswith("took a slot of fine-tune-"):
            taken[entry["flow_run_id"]] = _ts(entry["timestamp"])
        elif entry["message"].startswith("released a slot of fine-tune-"):
            released[entry["flow_run_id"]] = _ts(entry["timestamp"])
    for run_id, start in taken.items():
        if run_id in released:
            spans.setdefault(where[run_id], []).append((start, released[run_id]))
    most = {w: most_at_once(v) for w, v in spans.items()}
    return {
        "specialists": n,
        "workers_runs_at_once": 3,
        "fine_tune_slots_per_worker": 1,
        "wall_s": round(wall, 1),
        "completed_runs": len(where),
        "fine_tunes_per_worker": {w: len(v) for w, v in spans.items()},
        "fine_tune_task_runs_at_once": {w: most_at_once(v) for w, v in task_spans.items()},  # waiting ones too
        "most_fine_tunes_holding_a_slot_at_once": most,
        "specialists_fine_tuned": len({names_by_id[r] for r in released}),
        "stuck_findings": len(s3.list_objects_v2(Bucket="fleet", Prefix="store/stuck/").get("Contents", [])),
        "limit_held": bool(most) and max(most.values()) <= 1,
    }


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    level = peak = 0
    for _, d in events:
        level += d
        peak = max(peak, level)
    return peak


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "distributed.json")
    parser.add_argument("--specialists", type=int, default=24, help="tiny specialists of the slots measure")
    parser.add_argument(
        "--parts", default="overhead,kill,slots", help="measures to run; the others are kept from --out"
    )
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    kept = json.loads(args.out.read_text()) if args.out.exists() else {}
    result: dict = {
        k: {**v, "measured": kept.get("when")} for k, v in kept.items() if k in {"overhead", "kill", "slots"} - parts
    }
    result |= {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores (workers and servers on one machine)",
    }
    with tempfile.TemporaryDirectory() as tmp:
        b = Bench(Path(tmp))
        try:
            b.up()
            subprocess.run(
                [str(BIN / "prefect"), "work-pool", "create", "bench", "--type", "process"],
                env=b.env,
                check=True,
                capture_output=True,
            )
            b.fleet(
                "deploy",
                "--pool",
                "bench",
                "--fleet",
                str(write_fleet(b.root / "deploy", ["x"])),
                "--train-cron",
                "",
                "-d",
                "specialist",
            )
            for w in ("w1", "w2"):
                b.start_worker(w, limit=1)
            if "overhead" in parts:
                result["overhead"] = overhead(b, ["alpha", "beta"])
                print("overhead", result["overhead"]["ratio"], file=sys.stderr)
            if "kill" in parts:
                result["kill"] = kill(b)
                print("kill", result["kill"], file=sys.stderr)
            if "slots" in parts:
                b.stop_workers()
                for w in ("w1", "w2"):
                    b.start_worker(w, limit=3)
                result["slots"] = slots(b, args.specialists)
                print("slots", result["slots"]["most_fine_tunes_holding_a_slot_at_once"], file=sys.stderr)
        finally:
            b.stop_workers()
            from cli import stack as fleet_stack

            fleet_stack.down(b.home, progress=lambda *_: None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
