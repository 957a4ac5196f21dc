"""Drift detection quality and speed on the demo fleet.

Needs a home where the demo fleet was trained (`make demo`; FLEET_HOME, default .fleet).
For sms-spam: 50 unshifted windows (held-out test texts), 50 prior-shifted (the rare label
made the majority) and 50 domain-shifted (support-sentiment texts), each of --rows rows,
scored by the champion; the false alarm rate and the detection rates come from
`fleet.metrics.drift.detect` with the spec's thresholds. Champion scores and embeddings of the pools
are computed once; each window is a seeded sample of them. Throughput is measured end to end
on one window through the traffic log (`fleet.ops.monitoring.check`: read, embed, test).
The event-to-run latency is measured against a real `prefect server start` on loopback with the
retrain deployment served by `fleet serve`: --events drift events, 30 s apart, each the start of
one retrain run (the specialist's cooldown is set first, so the runs end Cancelled, untrained).
Writes benchmarks/results/drift.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fleet", default=str(ROOT / "deployments" / "fleet.yaml"))
    ap.add_argument("--specialist", default="sms-spam")
    ap.add_argument("--other", default="support-sentiment")
    ap.add_argument("--windows", type=int, default=50)
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--events", type=int, default=5, help="Drift events for the latency measurement (0: skip).")
    args = ap.parse_args()

    os.environ.setdefault("FLEET_HOME", str(ROOT / ".fleet"))
    from fleet.core.settings import Settings
    from fleet.core.text import normalize_text
    from fleet.data.sources import load_raw
    from fleet.data.versions import load_split
    from fleet.kinds import load_fleet
    from fleet.kinds.classification.drift import detect
    from fleet.kinds.classification.predict import TextClassifier
    from fleet.metrics.drift import Reference
    from fleet.ops.monitoring import champion_reference, check
    from fleet.stages import profiles, registry

    settings = Settings.load().apply()
    store = settings.store_handle()
    fleet = load_fleet(args.fleet)
    spec, other = fleet.specialists[args.specialist], fleet.specialists[args.other]
    version, blob = champion_reference(spec, store)
    ref = Reference.from_bytes(blob)
    champ = registry.champion_version(spec.name)
    test = load_split(store, spec.name, champ.tags["dataset_version"], "test")
    rng = random.Random(0)
    other_texts = list(dict.fromkeys(t for t in (normalize_text(x) for x in load_raw(other.data)["text"]) if t))
    other_texts = rng.sample(other_texts, min(2000, len(other_texts)))

    with tempfile.TemporaryDirectory() as tmp:
        clf = TextClassifier(registry.download_model_dir(spec.name, version, tmp))

        def pool(texts):
            probs = clf.predict_proba(texts)
            emb = profiles.embeddings(spec, texts, ref.max_length)
            return {"emb": emb, "label": [ref.labels[i] for i in probs.argmax(1)], "conf": probs.max(1)}

        held_out = pool(test["text"].tolist())
        domain = pool(other_texts)
    rare = test["label"].value_counts().idxmin()
    rare_idx = [i for i, lab in enumerate(test["label"]) if lab == rare]
    rest_idx = [i for i, lab in enumerate(test["label"]) if lab != rare]

    def window(p, idx):
        return detect(
            ref,
            p["emb"][idx],
            [p["label"][i] for i in idx],
            p["conf"][idx],
            spec.drift.thresholds(),
            permutations=spec.drift.permutations,
            seed=int(idx[0]),
        )

    results = {}
    for kind in ("none", "prior", "domain"):
        fired, signals = 0, {}
        for w in range(args.windows):
            r = random.Random(1000 * w + hash(kind) % 1000)
            if kind == "none":
                idx = r.sample(range(len(test)), min(args.rows, len(test)))
                v = window(held_out, np.array(idx))
            elif kind == "prior":
                idx = [r.choice(rare_idx) if r.random() < 0.8 else r.choice(rest_idx) for _ in range(args.rows)]
                idx = list(dict.fromkeys(idx))  # distinct texts
                v = window(held_out, np.array(idx))
            else:
                idx = r.sample(range(len(other_texts)), args.rows)
                v = window(domain, np.array(idx))
            fired += v.drifted
            for s in v.fired:
                signals[s] = signals.get(s, 0) + 1
        results[kind] = {
            "windows": args.windows,
            "alarms": fired,
            "rate": fired / args.windows,
            "signals_fired": signals,
        }

    # end to end through the traffic log: write a window, time check()
    from fleet.ops.monitoring import simulate

    simulate(spec, store, "none", args.rows, seed=123)
    t0 = time.perf_counter()
    rep = check(spec, store).report
    seconds = time.perf_counter() - t0
    out = {
        "specialist": spec.name,
        "window_rows": args.rows,
        "thresholds": spec.drift.thresholds(),
        "false_alarm_rate_unshifted": results["none"]["rate"],
        "detection_rate_prior_shift": results["prior"]["rate"],
        "detection_rate_domain_shift": results["domain"]["rate"],
        "windows": results,
        "monitor_seconds_per_window": round(seconds, 2),
        "scoring_throughput_rows_per_s": round(rep.window_rows / seconds, 1),
        "targets": {"false_alarm_rate_max": 0.05, "detection_rate_min": 0.95},
    }
    if args.events:
        out["event_to_run_start"] = event_latency(args.fleet, spec.name, args.events)
    (ROOT / "benchmarks" / "results" / "drift.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


def event_latency(fleet_file: str, name: str, events: int) -> dict:
    import subprocess
    import urllib.request
    from datetime import datetime

    from cli.localserver import start_prefect_server
    from fleet.core.settings import Settings
    from fleet.core.storage import put_json

    settings = Settings.load().apply()
    put_json(
        settings.store_handle(),
        f"retrains/{name}/last.json",
        {"at": datetime.now(UTC).isoformat(), "drift_report": "benchmark"},
    )
    with tempfile.TemporaryDirectory() as tmp:
        server = start_prefect_server(Path(tmp) / "server")
        env = {
            **os.environ,
            "PREFECT_API_URL": server.url,
            "PREFECT_HOME": str(Path(tmp) / "client"),
            "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        }
        serve = subprocess.Popen(
            [str(Path(sys.executable).parent / "fleet"), "serve", "--fleet", fleet_file, "--train-cron", ""],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def post(path, body):
            req = urllib.request.Request(
                server.url + path,
                data=json.dumps(body).encode(),
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read())

        try:
            deadline = time.monotonic() + 180
            while not post("/automations/filter", {}) and time.monotonic() < deadline:
                time.sleep(1)
            script = (
                "import sys, time\nfrom prefect.events import emit_event\n"
                f"for i in range({events}):\n"
                "    print(time.time(), flush=True)\n"
                f"    emit_event(event='fleet.specialist.drift-detected', resource={{'prefect.resource.id': "
                f"'fleet.specialist.{name}', 'fleet.name': '{name}'}}, payload={{'report_id': f'bench-{{i}}'}})\n"
                "    time.sleep(30)\n"
            )
            emitted = [
                float(x)
                for x in subprocess.run(
                    [sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True
                ).stdout.split()
            ]
            deadline = time.monotonic() + 300
            starts: list[float] = []
            while time.monotonic() < deadline:
                flows = {f["id"]: f["name"] for f in post("/flows/filter", {})}
                runs = [
                    r
                    for r in post("/flow_runs/filter", {"limit": 100})
                    if r.get("start_time") and flows.get(r["flow_id"]) == "retrain"
                ]
                starts = sorted(
                    datetime.fromisoformat(r["start_time"].replace("Z", "+00:00")).timestamp() for r in runs
                )
                if len(starts) >= events:
                    break
                time.sleep(2)
        finally:
            serve.terminate()
            serve.wait(30)
            server.stop()
    delays = [s - e for e, s in zip(emitted, starts)]
    return {
        "events": events,
        "runs_started": len(starts),
        "seconds": [round(d, 1) for d in delays],
        "median_seconds": round(float(np.median(delays)), 1) if delays else None,
    }


if __name__ == "__main__":
    main()
