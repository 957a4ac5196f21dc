"""The flywheel's pool at traffic scale: how long `fleet status`, `fleet label` and the review queue wait
for it. Writes benchmarks/results/pool.json.

The demo's sms-spam data is curated into a temporary store; its source corpus's rows that the dataset never
used, repeated with small edits up to --rows texts, are logged as served traffic in parts of --part-rows
(as `fleet serve-models` logs batches). Timed, each as the median of --repeats: the pool built from
nothing (every part read, cleaned, deduplicated and checked for leaks), built again with nothing new (the
index says every part was read) and built after one more part arrived (that part alone is read). The
speed-up of the incremental builds is the cold build's time over theirs, within this one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fleet", default=str(ROOT / "deployments" / "fleet.yaml"))
    ap.add_argument("--specialist", default="sms-spam")
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--part-rows", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pool.json"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fleet-bench-pool-"))
    os.environ["FLEET_HOME"] = str(work / "home")
    from fleet.core.storage import LocalStore
    from fleet.data import versions
    from fleet.data.sources import load_raw
    from fleet.kinds import kind_of, load_fleet
    from fleet.labeling import pool
    from fleet.ops import traffic
    from fleet.stages.curation import curate

    spec = load_fleet(args.fleet).specialists[args.specialist]
    store = LocalStore(work / "store")
    ds = curate(spec, store)
    used = {
        t for s in ("train", "validation", "test") for t in versions.load_split(store, spec.name, ds.version, s)["text"]
    }
    source = [str(t) for t in load_raw(spec.data, kind_of(spec).source_columns(spec))["text"] if str(t) not in used]
    texts = [
        f"{source[i % len(source)]} #{i // len(source)}" if i >= len(source) else source[i] for i in range(args.rows)
    ]
    for start in range(0, len(texts), args.part_rows):
        rows = [{"text": t, "label": "ham", "score": 0.9} for t in texts[start : start + args.part_rows]]
        traffic.log_predictions(store, spec.name, rows, "1")

    parts = len(traffic.part_keys(store, "traffic", spec.name))

    def cold():
        for key in store.list(f"labeling/{spec.name}/pool-index"):
            store.delete(key)
        return pool.build(spec, store, ds.version)

    cold_s, built = _timed(cold, args.repeats)
    warm_s, _ = _timed(lambda: pool.build(spec, store, ds.version), args.repeats)

    arrivals = iter(range(args.repeats))

    def one_more_part():  # new texts each time: cleaned, deduplicated and checked for leaks
        n = next(arrivals)
        extra = [{"text": f"{t} (again, {n})", "label": "ham", "score": 0.9} for t in texts[: args.part_rows]]
        traffic.log_predictions(store, spec.name, extra, "1")
        return pool.build(spec, store, ds.version)

    incremental_s, grown = _timed(one_more_part, args.repeats)
    result = {
        "about": __doc__.strip().splitlines()[0],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "specialist": spec.name,
        "traffic_rows": len(texts),
        "part_rows": args.part_rows,
        "parts": parts,
        "pool_rows": len(built),  # type: ignore[arg-type]
        "pool_rows_after": len(grown),  # type: ignore[arg-type]
        "cold_build_s": round(cold_s, 3),
        "nothing_new_s": round(warm_s, 3),
        "one_new_part_s": round(incremental_s, 3),
        "speedup_nothing_new": round(cold_s / warm_s, 1),
        "speedup_one_new_part": round(cold_s / incremental_s, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
