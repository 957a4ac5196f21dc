"""Serving many specialists on one base: memory, latency under mixed traffic, int8, and merged models.

How the adapters were made: 32 real specialists trained by `fleet run` in a fresh home, all on the demo's
base (MiniLM-L6). s00 is the demo's sms-spam (2,500 rows); s01..s31 are 300-row slices of the demo data
(shuffled with a fixed seed; odd numbers: support-sentiment, 3 labels; even: sms-spam, 2 labels), one epoch
each, the gate relaxed (no gain over the baseline needed) so that each one's first version is champion.

Then, for N = 1, 8 and 32 (the first N specialists):
- `fleet serve-models --int8 off` serving them (one base, N adapters): its resident memory (RSS, PSS)
  after the traffic, and the latency of mixed traffic (CLIENTS clients at once, each request one text
  for a specialist drawn at random, REQUESTS requests after a warm-up); each N served ROUNDS times, in
  the order 1, 8, 32, 32, 8, 1, 1, ..., and the median of the rounds reported (this machine is shared:
  one round's tail can be another tenant's);
- the same with the merged fp32 models, one process each (`fleet export --merged` in-process, each
  served by a minimal FastAPI process: `--merged-worker`), memory summed over the N processes.
- the int8 path against fp32 (the serving groups `fleet serve-models` uses, in this process): rows per
  second at the same batch size on mixed batches, interleaved rounds; parity on every test split.
Writes benchmarks/results/serving.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FLEET_BIN = str(Path(sys.executable).parent / "fleet")
DEMO = ROOT / "deployments" / "fleet.yaml"
SLICE_ROWS, CLIENTS, REQUESTS, BATCH, ROUNDS = 300, 4, 1000, 32, 3


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "FLEET_"))}
    return env | {
        "FLEET_HOME": str(home),
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def demo_frames() -> dict:
    from fleet.data.sources import load_raw
    from fleet.kinds import kind_of, load_fleet
    from fleet.stages.curation import columns

    demo = load_fleet(DEMO).specialists
    out = {}
    for name in ("sms-spam", "support-sentiment"):
        spec = demo[name]
        frame = load_raw(spec.data.model_copy(update={"max_rows": None}), columns(spec, kind_of(spec)))
        out[name] = (frame.sample(frac=1.0, random_state=7).reset_index(drop=True), spec.labels)
    return out


def make_fleet(folder: Path, n: int, quick: bool = False) -> Path:
    """s00 = the demo's sms-spam (quick: a slice too); s01.. = 300-row slices of the demo data, alternating
    the two sources."""
    raw = yaml.safe_load(DEMO.read_text())
    frames = demo_frames()
    specialists = {"s00": raw["specialists"]["sms-spam"]}
    for i in range(1 - quick, n):
        source = "support-sentiment" if i % 2 else "sms-spam"
        frame, labels = frames[source]
        part = frame.iloc[(i // 2) * SLICE_ROWS : (i // 2 + 1) * SLICE_ROWS]
        part[["text", "label"]].to_csv(folder / f"s{i:02d}.csv", index=False)
        specialists[f"s{i:02d}"] = {
            "description": f"{source}, {SLICE_ROWS} rows (slice {i // 2})",
            "data": {"source": f"s{i:02d}.csv"},
            "labels": labels,
        }
    defaults = raw["defaults"] | {"gate": {"min_gain_over_baseline": 0.0, "alpha": 0.5}}
    defaults["evaluation"] = {"bootstrap_resamples": 200, "latency_samples": 10, "timing_rows": 32}
    path = folder / "fleet.yaml"
    path.write_text(yaml.safe_dump({"defaults": defaults, "specialists": specialists}, sort_keys=False))
    return path


def train(fleet_file: Path, home: Path) -> dict:
    started = time.monotonic()
    log = home.parent / "train.log"
    with log.open("w") as out:
        rc = subprocess.run(
            [FLEET_BIN, "run", "--fleet", str(fleet_file)],
            env=env_for(home),
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=7200,
        ).returncode
    if rc != 0:
        raise SystemExit(f"`fleet run` failed; its output {log}:\n{log.read_text()[-3000:]}")
    return {"fleet_run_s": round(time.monotonic() - started, 1)}


def champions(names: list[str]) -> dict:
    """Each specialist's champion; a version the gate held back is promoted by hand (counted)."""
    from fleet.ops import champions as promoting
    from fleet.stages import registry

    out, by_hand = {}, []
    for name in names:
        version = registry.champion_version(name)
        if version is None:
            version = max(registry.client().search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
            promoting.promote(name, str(version.version))
            by_hand.append(name)
        out[name] = version
    return {"versions": out, "promoted_by_hand": by_hand}


def test_texts(names: list[str], versions: dict) -> dict[str, tuple[list[str], list[str]]]:
    from fleet.core.settings import Settings
    from fleet.data.versions import load_split

    store = Settings.load().store_handle()
    out = {}
    for name in names:
        test = load_split(store, name, versions[name].tags["dataset_version"], "test")
        out[name] = (test["text"].tolist(), test["label"].tolist())
    return out


def size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.exists() else 0


def storage(store: Path, versions: list) -> dict:
    """MB per registered version (its run's MLflow artifacts + its model in the object store, both local
    folders in the default home), and the copies of each base, in the store and in MLflow."""
    from fleet.stages import registry
    from fleet.stages.registered_bases import EXPERIMENT

    client = registry.client()
    local = lambda uri: Path(uri.removeprefix("file://"))  # noqa: E731
    per = {
        f"{v.name} v{v.version}": size(local(client.get_run(v.run_id).info.artifact_uri))
        + size(store / "models" / v.name / v.tags["train_key"])
        for v in versions
    }
    bases = client.get_experiment_by_name(EXPERIMENT)
    in_mlflow = [size(local(r.info.artifact_uri)) for r in client.search_runs([bases.experiment_id])] if bases else []
    in_store = [size(p) for p in (store / "bases").iterdir()] if (store / "bases").exists() else []
    return {
        "versions": len(per),
        "per_version_mb": {
            "max": round(max(per.values()) / 1e6, 2),
            "mean": round(statistics.mean(per.values()) / 1e6, 2),
        },
        "largest": max(per, key=per.__getitem__),
        "base_copies_mb": {
            "store": [round(b / 1e6, 1) for b in in_store],
            "mlflow": [round(b / 1e6, 1) for b in in_mlflow],
        },
    }


def storage_of(home: Path) -> dict:
    """``storage`` of every registered version in an existing home (after `make demo`: .fleet)."""
    from fleet.core.settings import Settings
    from fleet.stages import registry

    os.environ.update(env_for(home.resolve()))
    settings = Settings.load().apply()
    found = [v for n in registry.registered_names() for v in registry.client().search_model_versions(f"name='{n}'")]
    return storage(Path(settings.store_handle().root), found)


def post(url: str, body: dict, timeout: float = 60) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def pool(texts: dict) -> list[str]:
    """Every specialist's test texts: what requests carry, whichever specialist they ask (same for every N)."""
    return sorted({t for inputs, _ in texts.values() for t in inputs})


def traffic(url_of: dict[str, str], texts: dict, requests: int, seed: int = 0) -> dict:
    """Mixed traffic: CLIENTS clients at once, each request one text (drawn from ``pool``) for a specialist
    drawn at random."""
    rng, inputs = random.Random(seed), pool(texts)
    names = list(url_of)
    plan = [(rng.choice(names), rng.choice(inputs)) for _ in range(requests)]
    for name in names:  # warm-up: every specialist answers once before timing
        post(f"{url_of[name]}/v1/specialists/{name}/predict", {"inputs": [texts[name][0][0]]})

    def one(job: tuple[str, str]) -> float | None:
        start = time.perf_counter()
        try:
            post(f"{url_of[job[0]]}/v1/specialists/{job[0]}/predict", {"inputs": [job[1]]})
        except OSError:
            return None
        return time.perf_counter() - start

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as clients:
        seconds = list(clients.map(one, plan))
    wall = time.perf_counter() - started
    ok = sorted(s for s in seconds if s is not None)
    return {
        "requests": requests,
        "failed": requests - len(ok),
        "requests_per_s": round(len(ok) / wall, 1),
        "p50_ms": round(1000 * ok[len(ok) // 2], 1),
        "p95_ms": round(1000 * ok[int(0.95 * (len(ok) - 1))], 1),
    }


def memory(pids: list[int]) -> dict:
    import psutil

    infos = [psutil.Process(p).memory_full_info() for p in pids]
    return {
        "processes": len(pids),
        "rss_mb": round(sum(i.rss for i in infos) / 2**20, 1),
        "pss_mb": round(sum(i.pss for i in infos) / 2**20, 1),
    }


def start(cmd: list[str], env: dict, log: Path, url: str, timeout: float = 900) -> subprocess.Popen:
    from cli.health import wait_http

    proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_http(f"{url}/healthz", timeout, " ".join(cmd[:2]), proc, log)
    return proc


def serve_adapters(home: Path, names: list[str], texts: dict) -> dict:
    from cli.health import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [FLEET_BIN, "serve-models", "--port", str(port), "--int8", "off", *[a for n in names for a in ("--only", n)]]
    began = time.monotonic()
    proc = start(cmd, env_for(home), home.parent / f"serve-{len(names)}.log", url)
    try:
        up_s = round(time.monotonic() - began, 1)
        return {"start_s": up_s, **traffic(dict.fromkeys(names, url), texts, REQUESTS), **memory([proc.pid])}
    finally:
        proc.terminate()
        proc.wait(60)


def export_merged(folder: Path, names: list[str], versions: dict, texts: dict) -> dict[str, Path]:
    from fleet.ops import export
    from fleet.stages import registry

    out = {}
    for name in names:
        dest = folder / "merged" / name
        if not dest.exists():
            model_dir = registry.download_model_dir(name, str(versions[name].version), folder / "dl" / name)
            result = export.merged(model_dir, dest, texts[name][0][:16])
            assert result.max_difference < 1e-4, (name, result)
        out[name] = dest
    return out


def serve_merged(home: Path, merged: dict[str, Path], texts: dict) -> dict:
    from cli.health import free_port

    ports = {n: free_port() for n in merged}
    began = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--merged-worker", str(d), "--name", n, "--port", str(ports[n])],
            env=env_for(home),
            stdout=(home.parent / f"merged-{n}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for n, d in merged.items()
    ]
    try:
        from cli.health import wait_http

        for (n, port), proc in zip(ports.items(), procs):
            wait_http(f"http://127.0.0.1:{port}/healthz", 900, f"merged {n}", proc, home.parent / f"merged-{n}.log")
        up_s = round(time.monotonic() - began, 1)
        urls = {n: f"http://127.0.0.1:{p}" for n, p in ports.items()}
        return {"start_s": up_s, **traffic(urls, texts, REQUESTS), **memory([p.pid for p in procs])}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)


class Body(BaseModel):
    inputs: list[str]


def merged_worker(folder: str, name: str, port: int) -> None:
    """One merged fp32 model in its own process, answering the server's predict route one request at a time."""
    import uvicorn
    from fastapi import FastAPI

    from fleet.kinds import kind_of

    kind = kind_of("text-classification")
    model = kind.load(folder, "merged")
    app = FastAPI()

    @app.post("/v1/specialists/{specialist}/predict")
    async def predict(specialist: str, body: Body) -> dict:  # async: one request at a time, like one model
        return {"specialist": name, "answers": kind.to_frame(model.predict(body.inputs)).to_dict("records")}

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def groups(names: list[str], versions: dict, folder: Path) -> dict:
    """fp32 and int8 serving groups with every adapter of ``names`` (the classes `fleet serve-models` uses)."""
    from fleet.kinds.classification.serving import EncoderGroup
    from fleet.models import base_store
    from fleet.stages import registry

    out = {}
    for int8 in (False, True):
        group = None
        for name in names:
            model_dir = Path(registry.download_model_dir(name, str(versions[name].version), folder / "dl" / name))
            if group is None:
                meta = json.loads((model_dir / "fleet.json").read_text())
                group = EncoderGroup(base_store.locate(meta["base_model"], meta["base_digest"]), int8=int8)
            group.add(name, model_dir)
            group.route(name, name, str(versions[name].version))
        out["int8" if int8 else "fp32"] = group
    return out


def speed(groups_: dict, texts: dict, one: bool, rounds: int = 6) -> dict:
    """Rows per second at batch size BATCH, fp32 and int8 rounds interleaved; batches of one specialist's
    rows (``one``) or of mixed rows (a specialist drawn at random per row)."""
    rng, inputs, names = random.Random(1), pool(texts), list(texts)
    batches = [[(names[0] if one else rng.choice(names), rng.choice(inputs)) for _ in range(BATCH)] for _ in range(8)]
    seconds = dict.fromkeys(groups_, 0.0)
    for group in groups_.values():
        group.answer(batches[0])  # warm-up
    for _ in range(rounds):
        for key, group in groups_.items():
            started = time.perf_counter()
            for batch in batches:
                group.answer(batch)
            seconds[key] += time.perf_counter() - started
    rows = rounds * len(batches) * BATCH
    rate = {k: round(rows / s, 1) for k, s in seconds.items()}
    return {"rows_per_s": rate, "int8_speedup": round(rate["int8"] / rate["fp32"], 2)}


def parity(groups_: dict, texts: dict) -> dict:
    """On every specialist's test split: int8 labels against fp32 labels, and each one's macro-F1 drop."""
    from sklearn.metrics import f1_score

    agree = total = 0
    drops = []
    for name, (inputs, refs) in texts.items():
        answers = {}
        for key, group in groups_.items():
            answers[key] = [
                o.predictions[0]
                for i in range(0, len(inputs), 64)
                for o, _ in group.answer([(name, t) for t in inputs[i : i + 64]])
            ]
        agree += sum(a == b for a, b in zip(answers["int8"], answers["fp32"]))
        total += len(inputs)
        f1 = {k: f1_score(refs, a, average="macro") for k, a in answers.items()}
        drops.append(round(100 * (f1["fp32"] - f1["int8"]), 2))
    return {
        "test_rows": total,
        "label_agreement": round(agree / total, 4),
        "macro_f1_drop_points": {"mean": round(statistics.mean(drops), 2), "max": max(drops)},
        "specialists_within_0_5_points": sum(d <= 0.5 for d in drops),
        "specialists": len(drops),
    }


def ratios(result: dict, top: int) -> dict:
    one, many = result["adapters"]["1"], result["adapters"][str(top)]
    merged = result.get("merged", {}).get(str(top))
    out = {
        "adapters_rss_n32_over_n1": round(many["rss_mb"] / one["rss_mb"], 2),
        "adapters_p95_n32_over_n1": round(many["p95_ms"] / one["p95_ms"], 2),
    }
    if merged:
        out["merged_rss_n32_over_adapters_n1"] = round(merged["rss_mb"] / one["rss_mb"], 2)
        out["merged_pss_n32_over_adapters_n1"] = round(merged["pss_mb"] / one["pss_mb"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serving.json"))
    ap.add_argument("--n", type=int, action="append", help="Specialist counts (default 1, 8, 32).")
    ap.add_argument("--skip-merged", action="store_true")
    ap.add_argument(
        "--folder",
        type=Path,
        help="Work here and keep it (default: a temporary folder); "
        "a folder kept from an earlier run is served again without training.",
    )
    ap.add_argument("--quick", action="store_true", help="s00 a slice too (a smoke test, not the figures).")
    ap.add_argument(
        "--storage-of",
        type=Path,
        help="Only report the storage of every version in this home (e.g. .fleet after make demo).",
    )
    ap.add_argument("--merged-worker"), ap.add_argument("--name"), ap.add_argument("--port", type=int)
    args = ap.parse_args()
    if args.merged_worker:
        return merged_worker(args.merged_worker, args.name, args.port)
    if args.storage_of:  # printed, and kept in the results as "demo_storage"
        found = storage_of(args.storage_of)
        out = Path(args.out)
        doc = json.loads(out.read_text()) if out.is_file() else {}
        out.write_text(json.dumps(doc | {"demo_storage": found}, indent=2) + "\n")
        return print(json.dumps(found, indent=2))
    counts = sorted(args.n or [1, 8, 32])
    if args.folder:
        return run(args.folder.resolve(), counts, args, Path(args.out))
    with tempfile.TemporaryDirectory(prefix="fleet-serving-") as tmp:
        run(Path(tmp), counts, args, Path(args.out))


def summary(runs: list[dict]) -> dict:
    """Several servings of the same N (interleaved with the other Ns): their median, and each one."""
    keys = [k for k, v in runs[0].items() if isinstance(v, int | float)]
    return {k: round(statistics.median(r[k] for r in runs), 1) for k in keys} | {"runs": runs}


def serve_rounds(home: Path, names: list[str], counts: list[int], texts: dict, rounds: int = ROUNDS) -> dict:
    """Each N served ``rounds`` times, in the order 1, 8, 32, 32, 8, 1, ... (slow drifts of the machine
    touch every N alike)."""
    order = [n for r in range(rounds) for n in (counts if r % 2 == 0 else counts[::-1])]
    runs: dict[int, list[dict]] = {n: [] for n in counts}
    for n in order:
        runs[n].append(serve_adapters(home, names[:n], texts))
    return {str(n): summary(r) for n, r in runs.items()}


def run(folder: Path, counts: list[int], args: argparse.Namespace, out: Path) -> None:
    home = folder / "home"
    trained = (home / "mlflow").exists()  # a kept --folder: its specialists are trained already
    home.mkdir(parents=True, exist_ok=True)
    os.environ.update(env_for(home))
    from fleet.core.settings import Settings

    settings = Settings.load().apply()
    result: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "how": __doc__.split("\n\n")[1],
        "clients": CLIENTS,
        "requests": REQUESTS,
    }
    earlier = json.loads(out.read_text()).get("training", {}) if trained and out.exists() else {}
    result["training"] = earlier if trained else train(make_fleet(folder, max(counts), args.quick), home)
    names = [f"s{i:02d}" for i in range(max(counts))]
    found = champions(names)
    versions, texts = found["versions"], test_texts(names, found["versions"])
    result["training"]["promoted_by_hand"] = found["promoted_by_hand"]
    result["storage"] = storage(Path(settings.store_handle().root), list(versions.values()))
    result["adapters"] = serve_rounds(home, names, counts, texts)
    if not args.skip_merged:
        merged = export_merged(folder, names, versions, texts)
        result["merged"] = {str(n): serve_merged(home, {k: merged[k] for k in names[:n]}, texts) for n in counts}
    result["ratios"] = ratios(result, max(counts))
    both = groups(names, versions, folder)
    result["int8"] = {
        "batch_size": BATCH,
        "one_specialist": speed(both, texts, True),
        "mixed_specialists": speed(both, texts, False),
        "parity": parity(both, texts),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
