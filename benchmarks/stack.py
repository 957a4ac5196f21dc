"""The production-like stack (`fleet up`) against the embedded default, on the same specialist.

Times `fleet up`, then one specialist of the demo fleet (default sms-spam) end to end through the `fleet`
command twice on each profile: first run (curate, fine-tune, evaluate, register) and second run (nothing
changed: every stage finds its work done). Each profile starts from an empty home, so both train.
Embedded: Prefect's temporary server, MLflow on SQLite, a local folder. Stack: Prefect server and MLflow
server on PostgreSQL, artifacts and data on moto's S3 server. Then `fleet down`.
Writes benchmarks/results/stack.json.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLEET_BIN = str(Path(sys.executable).parent / "fleet")


def timed(args: list[str], env: dict, log: Path) -> float:
    t0 = time.monotonic()
    with log.open("ab") as f:
        r = subprocess.run([FLEET_BIN, *args], env=env, stdout=f, stderr=subprocess.STDOUT)
    elapsed = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit(f"fleet {' '.join(args)} failed ({r.returncode}); see {log}")
    print(f"fleet {' '.join(args)}: {elapsed:.1f} s", flush=True)
    return round(elapsed, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fleet", default=str(ROOT / "deployments" / "fleet.yaml"))
    ap.add_argument("--specialist", default="sms-spam")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "stack.json"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fleet-bench-stack-"))
    log = work / "commands.log"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "FLEET_", "AWS_"))}
    base["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    run = ["run", "--fleet", args.fleet, "--only", args.specialist]
    result = {"specialist": args.specialist, "machine": f"{platform.machine()}, {os.cpu_count()} cores", "runs": {}}

    embedded = {**base, "FLEET_HOME": str(work / "embedded")}
    result["runs"]["embedded"] = {"first_s": timed(run, embedded, log), "second_s": timed(run, embedded, log)}

    stack_env = {**base, "FLEET_HOME": str(work / "stack")}
    result["fleet_up_s"] = timed(["up"], stack_env, log)
    try:
        on_stack = {**stack_env, "FLEET_ENV_FILE": str(work / "stack" / "stack" / "fleet.env")}
        result["runs"]["stack"] = {"first_s": timed(run, on_stack, log), "second_s": timed(run, on_stack, log)}
    finally:
        result["fleet_down_s"] = timed(["down"], stack_env, log)
    e, s = result["runs"]["embedded"], result["runs"]["stack"]
    result["stack_over_embedded"] = {
        "first": round(s["first_s"] / e["first_s"], 3),
        "second": round(s["second_s"] / e["second_s"], 3),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
