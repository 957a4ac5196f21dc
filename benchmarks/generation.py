"""Generative specialists through llama.cpp against transformers: speed, answer parity, serving many on one base.

Needs a home with a trained generative champion (default: the demo's, `make demo` -> .fleet; --home).

- engines: the champion of --specialist (default invoice-extractor) answers its whole test split through
  transformers + peft (adapter merged) and through llama.cpp with the base as f16, q8_0 and q4_k_m GGUF
  (adapter applied per call), engines alternated for --rounds rounds in this one process (this machine is
  shared: ratios within a run are what count), each pass timed as evaluation times it
  (`fleet.metrics.timing.measure`: the first `latency_samples` rows one at a time, the next `timing_rows`
  in batches of `serving_batch_size`, the rest in batches of 64; both engines batch the rows of a call,
  with the prompts' shared start computed once; in a thread other than the first, as Prefect runs the
  evaluation task). Per engine (medians of the rounds): `tokens_per_s` (the
  evaluation's figure: generated tokens per second at the serving batch size), `latency_p50_ms` (one
  prompt at a time), `split_s` (the whole pass), and field-F1, exact match and schema-valid rate.
  `speedup_*`: llama.cpp's tokens_per_s over transformers'; `latency_speedup_*` and `split_speedup_*` the
  same for the p50 latency and the whole pass; `field_f1_delta_*`: llama.cpp's field-F1 minus transformers'.
- serve: the serving group of `fleet serve-models` (one llama.cpp base, adapters per request) holding 1 and
  then 8 generative specialists (the champion's adapter and 7 copies with their LoRA B matrices scaled by
  1.01..1.07, so each is a distinct adapter), each in its own process, rounds 1, 8, 8, 1: resident memory
  after the traffic, and the latency of CLIENTS clients sending one test prompt each to a specialist drawn
  at random; `memory_ratio` and `p95_ratio` are 8 over 1 (medians of the rounds), `failed` counts errors.
Writes benchmarks/results/generation.json (or --out), keeping the file's other keys (e.g. `demo`, filled
from benchmarks/pipeline.py runs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINES = [("transformers", None), ("llama-cpp", "f16"), ("llama-cpp", "q8_0"), ("llama-cpp", "q4_k_m")]
CLIENTS, REQUESTS = 4, 48


def champion(home: Path, name: str, dest: Path) -> tuple[Path, list[str], list[str], object]:
    """(model folder, test prompts, test answers, spec) of ``name``'s champion in ``home``."""
    from fleet.core.settings import Settings
    from fleet.data import versions
    from fleet.kinds import load_fleet
    from fleet.stages import registry

    os.environ["FLEET_HOME"] = str(home)
    settings = Settings.load()
    settings.apply()
    found = registry.champion_model(name, dest)
    if found is None:
        sys.exit(f"{name}: no champion in {home}; run `make demo` (or --home a home with one)")
    version = registry.client().get_model_version(name, found[0])
    test = versions.load_split(settings.store_handle(), name, version.tags["dataset_version"], "test")
    spec = load_fleet(ROOT / "deployments" / "fleet.yaml").specialists[name]
    return Path(found[1]), test["text"].tolist(), test["response"].tolist(), spec


def engines(model_dir: Path, prompts: list[str], spec, test, rounds: int) -> dict:
    from fleet.kinds.generation import scoring
    from fleet.kinds.generation.predict import Generator
    from fleet.metrics.timing import measure

    loaded = {(e, q): Generator(model_dir, f"{e} {q or ''}".strip(), engine=e, quant=q) for e, q in ENGINES}
    for g in loaded.values():
        g.predict(prompts[:2])  # warm: first calls allocate
    timings: dict[str, list[dict]] = {}
    scores: dict[str, dict] = {}
    for r in range(rounds):
        for g in loaded.values():
            start = time.perf_counter()
            out, cost = measure(g.predict, prompts, spec.evaluation)
            split_s = time.perf_counter() - start
            timings.setdefault(g.name, []).append(
                {"tokens_per_s": cost.tokens_per_s, "latency_p50_ms": cost.latency_p50_ms, "split_s": split_s}
            )
            if r == 0:
                s = scoring.score(spec, "challenger", g.name, out, test)
                scores[g.name] = {m: round(s.value(m), 4) for m in ("field_f1", "exact_match", "schema_valid")}
                scores[g.name]["answers"] = out.predictions
            print(f"round {r} {g.name}: {timings[g.name][-1]}", flush=True)
    base = scores["transformers"]["answers"]
    result: dict = {}
    for name, runs in timings.items():
        row = {k: round(statistics.median(x[k] for x in runs), 2) for k in runs[0]} | {"rounds": runs}
        answers = scores[name].pop("answers")
        row |= scores[name] | {"answers_differing_from_transformers": sum(a != b for a, b in zip(answers, base))}
        result[name] = row
    t = result["transformers"]
    for q in ("f16", "q8_0", "q4_k_m"):
        lc = result[f"llama-cpp {q}"]
        result[f"speedup_{q}"] = round(lc["tokens_per_s"] / t["tokens_per_s"], 2)
        result[f"latency_speedup_{q}"] = round(t["latency_p50_ms"] / lc["latency_p50_ms"], 2)
        result[f"split_speedup_{q}"] = round(t["split_s"] / lc["split_s"], 2)
        result[f"field_f1_delta_{q}"] = round(lc["field_f1"] - t["field_f1"], 4)
    return result


def adapters(model_dir: Path, n: int, root: Path) -> list[Path]:
    """The champion's adapter and n-1 distinct copies (LoRA B scaled by 1.01, 1.02, ...), each served by
    llama.cpp (their record says so, whatever the champion's says)."""
    from safetensors.numpy import load_file, save_file

    from fleet.kinds.generation.record import GeneratorRecord
    from fleet.models.gguf_export import ADAPTER_FILE

    out = []
    for i in range(n):
        copy = root / f"a{i}"
        if not copy.is_dir():
            shutil.copytree(model_dir, copy)
            record = GeneratorRecord.read(copy)
            record.model_copy(update={"engine": "llama-cpp"}).write(copy)
            if i:
                (copy / ADAPTER_FILE).unlink(missing_ok=True)  # converted again from the scaled weights
                weights = load_file(str(copy / "adapter_model.safetensors"))
                scaled = {k: v * (1 + 0.01 * i) if "lora_B" in k else v for k, v in weights.items()}
                save_file(scaled, str(copy / "adapter_model.safetensors"))
        out.append(copy)
    return out


def serve_worker(home: str, folders: list[str], prompts_file: str) -> None:
    """In its own process: one serving group with the given adapters, CLIENTS clients, REQUESTS requests."""
    import psutil

    from fleet.core.records import ModelRecord
    from fleet.core.settings import Settings
    from fleet.kinds import kind_of
    from fleet.models import base_store

    os.environ["FLEET_HOME"] = home
    Settings.load().apply()
    prompts = json.loads(Path(prompts_file).read_text())
    record = ModelRecord.read(folders[0])
    group = kind_of(record.task).serving_group(base_store.locate_for(record), False)
    for i, folder in enumerate(folders):
        group.add(f"s{i}", Path(folder))
        group.route(f"s{i}", f"s{i}", "1")
    group.answer([("s0", prompts[0])])  # warm
    rng = random.Random(0)
    jobs = [(f"s{rng.randrange(len(folders))}", prompts[i % len(prompts)]) for i in range(REQUESTS)]
    failed, latencies = 0, []

    def ask(job: tuple[str, str]) -> None:
        nonlocal failed
        start = time.perf_counter()
        try:
            [(out, _)] = group.answer([job])
            assert out.predictions and isinstance(out.predictions[0], str)
        except Exception:  # counted, not raised: the benchmark reports failures
            failed += 1
        latencies.append(time.perf_counter() - start)

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(ask, jobs))
    latencies.sort()
    rss = psutil.Process().memory_info().rss
    print(
        json.dumps(
            {
                "rss_mb": round(rss / 2**20, 1),
                "p50_s": round(latencies[len(latencies) // 2], 3),
                "p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
                "failed": failed,
            }
        )
    )


def serve(home: Path, model_dir: Path, prompts: list[str], root: Path) -> dict:
    folders = adapters(model_dir, 8, root)
    prompts_file = root / "prompts.json"
    prompts_file.write_text(json.dumps(prompts))
    runs: dict[int, list[dict]] = {1: [], 8: []}
    for n in (1, 8, 8, 1):
        cmd = [sys.executable, __file__, "--serve-worker", str(home), str(prompts_file), *map(str, folders[:n])]
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "FLEET_HOME": str(home)})
        if r.returncode != 0:
            sys.exit(f"serve worker ({n} adapters) failed:\n{r.stderr[-3000:]}")
        runs[n].append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(f"serve {n}: {runs[n][-1]}", flush=True)

    def med(n: int, key: str) -> float:
        return statistics.median(x[key] for x in runs[n])

    return {
        "clients": CLIENTS,
        "requests": REQUESTS,
        "one": runs[1],
        "eight": runs[8],
        "memory_ratio": round(med(8, "rss_mb") / med(1, "rss_mb"), 3),
        "p95_ratio": round(med(8, "p95_s") / med(1, "p95_s"), 3),
        "failed": sum(x["failed"] for n in runs for x in runs[n]),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-worker":
        serve_worker(sys.argv[2], sys.argv[4:], sys.argv[3])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, default=ROOT / ".fleet")
    ap.add_argument("--specialist", default="invoice-extractor")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--parts", default="engines,serve")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "generation.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleet-bench-generation-") as tmp:
        import pandas as pd

        model_dir, prompts, answers, spec = champion(args.home, args.specialist, Path(tmp) / "champion")
        test = pd.DataFrame({"text": prompts, "response": answers})
        result: dict = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "specialist": args.specialist,
            "test_rows": len(prompts),
        }
        if "engines" in args.parts:  # in a thread of its own, as a Prefect task runs evaluation
            with ThreadPoolExecutor(1) as worker:
                result["engines"] = worker.submit(engines, model_dir, prompts, spec, test, args.rounds).result()
        if "serve" in args.parts:
            result["serve"] = serve(args.home, model_dir, prompts, Path(tmp))
    doc = json.loads(args.out.read_text()) if args.out.is_file() else {}
    doc.update(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
