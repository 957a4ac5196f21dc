"""Which shingles and threshold find near-duplicate SMS? Measures the default of curation.near_duplicates.

Twins: 2,000 SMS texts each paired with a perturbed copy (a word dropped, swapped or
inserted, a number appended: the perturbations of benchmarks/curation.py). Distinct: 20,000
random pairs of different SMS texts. For each shingling and threshold: the share of twins
whose exact Jaccard reaches the threshold (caught) and of distinct pairs that do (merged by
mistake). Writes benchmarks/results/near_duplicates.json.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from curation import SOURCE, perturb  # noqa: E402

from fleet.data.dedup import shingles  # noqa: E402
from fleet.data.sources import resolve_package  # noqa: E402


def main() -> None:
    base = pd.read_csv(resolve_package(SOURCE), sep="\t", header=None, names=["label", "text"], quoting=3, dtype=str)
    texts = base.drop_duplicates("text").text.tolist()
    rng = random.Random(1)
    twins = []
    while len(twins) < 2000:
        t = rng.choice(texts)
        p = perturb(t, rng, rng.randrange(10**5))
        if p != t:
            twins.append((t, p))
    distinct = [tuple(rng.sample(texts, 2)) for _ in range(20000)]

    def jac(a, b, n, kind):
        sa, sb = shingles(a, n, kind), shingles(b, n, kind)
        return len(sa & sb) / len(sa | sb)

    rows = []
    for kind, n in [("words", 5), ("words", 3), ("words", 2), ("chars", 5), ("chars", 4)]:
        jt = [jac(a, b, n, kind) for a, b in twins]
        jd = [jac(a, b, n, kind) for a, b in distinct]
        for th in (0.5, 0.6, 0.7, 0.8):
            rows.append(
                {
                    "shingle": kind,
                    "size": n,
                    "threshold": th,
                    "twins_caught": round(sum(j >= th for j in jt) / len(jt), 4),
                    "distinct_merged": round(sum(j >= th for j in jd) / len(jd), 6),
                }
            )
    out = ROOT / "benchmarks" / "results" / "near_duplicates.json"
    out.write_text(json.dumps({"twins": len(twins), "distinct_pairs": len(distinct), "results": rows}, indent=2) + "\n")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
