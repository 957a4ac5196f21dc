"""Security of the model server: what each bad request gets, whether refusing big requests slows the others,
and whether the traffic log's memory stays bounded when the store is away.

- cases: `fleet serve-models` with a token, on a home with trained champions (default: the demo's, `make
  demo`), on loopback; each bad request once (missing/wrong token, malformed JSON, wrong types, 257 rows, a 1
  MB text, a 10 MB body, an unknown specialist), and its status code;
- latency: p95 of normal requests one at a time, idle, and while another client sends oversized requests (a
  1 MB text or a 10 MB body, refused), one every ``--oversized-every`` seconds; the ratio (goal <= 1.2);
- memory: the server's traffic buffer fed 10,000, then 20,000, 40,000, 80,000 and 160,000 answered requests while its store
  (S3) does not answer: Python memory growth after each (bounded: it stops growing once the buffer is full),
  rows dropped and buffered;
- trust probes (issue 29): docs without a token, a chunked oversize body, a token with a newline in the
  server's secret, the champion alias removed, p95 while unauthenticated 4 MiB bodies arrive, a traversal
  digest and a tampered base; ``--poisoning``: the flywheel poisoning scenario with and without the defences.
Writes benchmarks/results/security.json (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FLEET_BIN = str(Path(sys.executable).parent / "fleet")
TOKEN = "benchmark-token-" + os.urandom(8).hex()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: bytes, token: str | None = TOKEN) -> int:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    return status(urllib.request.Request(url, data=body, method="POST", headers=headers))


def get(url: str, token: str | None = None) -> int:
    return status(urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {}))


def status(req: urllib.request.Request) -> int:
    """The status the server answers ``req`` with; 0 when it closed the connection first."""
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (ConnectionError, urllib.error.URLError):
        return 0  # the server closed the connection (a body refused before it was read)


def big_body(port: int, size: int, name: str) -> int:
    """Announce ``size`` body bytes, send 64 KB: the status comes back before the rest is read."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"POST /v1/specialists/{name}/predict HTTP/1.1\r\nHost: x\r\n".encode())
        s.sendall(f"Authorization: Bearer {TOKEN}\r\nContent-Length: {size}\r\n\r\n".encode())
        s.sendall(b'{"inputs": ["' + b"x" * 65_536)
        return int(s.recv(1024).decode(errors="replace").split(" ", 2)[1])


def chunked(port: int, path: str, size: int, token: str | None = TOKEN) -> int:
    """A chunked body (no Content-Length) of ``size`` bytes in 16 KB chunks; the status that comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n".encode())
        with contextlib.suppress(OSError):  # the server may answer and close before the last chunk
            sent = 0
            while sent < size:
                s.sendall(b"4000\r\n" + b"x" * 0x4000 + b"\r\n")
                sent += 0x4000
            s.sendall(b"0\r\n\r\n")
        return int(s.recv(1024).decode(errors="replace").split(" ", 2)[1])


def cases(url: str, port: int, name: str) -> dict[str, int]:
    predict, ok = f"{url}/v1/specialists/{name}/predict", json.dumps({"inputs": ["Hello, are we still on?"]})
    return {
        "no token": post(predict, ok.encode(), token=None),
        "wrong token": post(predict, ok.encode(), token="not-the-token-at-all"),
        "malformed JSON": post(predict, b'{"inputs": [oops'),
        "wrong types": post(predict, b'{"inputs": [1, {"a": 2}]}'),
        "257 rows": post(predict, json.dumps({"inputs": ["x"] * 257}).encode()),
        "a 1 MB text": post(predict, json.dumps({"inputs": ["x" * 1_000_000]}).encode()),
        "a 10 MB body": big_body(port, 10_000_000, name),
        "unknown specialist": post(f"{url}/v1/specialists/no-such-one/predict", ok.encode()),
        "docs without a token": get(f"{url}/docs"),
        "openapi.json without a token": get(f"{url}/openapi.json"),
        "redoc without a token": get(f"{url}/redoc"),
        "a chunked 8 MB body": chunked(port, f"/v1/specialists/{name}/predict", 8 * 2**20),
        "a token with a trailing newline in the server's secret": post(predict, ok.encode()),
        "normal request": post(predict, ok.encode()),
    }


def p95_ms(url: str, name: str, n: int) -> float:
    predict, ok = f"{url}/v1/specialists/{name}/predict", json.dumps({"inputs": ["Hello, are we still on?"]}).encode()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        assert post(predict, ok) == 200
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 95))


def latency(url: str, port: int, name: str, n: int, every_s: float, unauthenticated: bool = False) -> dict:
    """p95 idle and while oversized requests arrive; ``unauthenticated``: bodies of 4 MiB (a million empty
    strings, just under the body limit) with no token, which used to be parsed before the token was checked."""
    p95_ms(url, name, 10)  # warm-up
    idle = p95_ms(url, name, n)
    stop, refused = threading.Event(), []
    one_mb = json.dumps({"inputs": ["x" * 1_000_000]}).encode()
    empties = b'{"inputs": [' + b'"",' * 1_000_000 + b'""]}'

    def oversized() -> None:
        while not stop.wait(every_s):
            if unauthenticated:
                refused.append(post(f"{url}/v1/specialists/{name}/predict", empties, token=None))
                continue
            refused.append(big_body(port, 10_000_000, name))
            if not stop.wait(every_s):
                refused.append(post(f"{url}/v1/specialists/{name}/predict", one_mb))

    flood = threading.Thread(target=oversized, daemon=True)
    flood.start()
    busy = p95_ms(url, name, n)
    stop.set()
    flood.join(60)
    return {
        "requests": n,
        "idle_p95_ms": round(idle, 2),
        "while_refusing_p95_ms": round(busy, 2),
        "ratio": round(busy / idle, 3),
        "goal_ratio_max": 1.2,
        "oversized_every_s": every_s,
        "oversized": "unauthenticated 4 MiB bodies" if unauthenticated else "a 10 MB body and a 1 MB text, in turn",
        "oversized_refused": len(refused),
        "oversized_statuses": sorted(set(refused)),
    }


def withdrawn(url: str, home: str, name: str) -> int:
    """Remove the champion alias (the kill switch) and return the status a request then gets; the alias is put
    back afterwards."""
    os.environ["FLEET_HOME"] = home
    from fleet.core.settings import Settings
    from fleet.stages import registry

    Settings.load().apply()
    number = registry.champion_numbers()[name]
    registry.client().delete_registered_model_alias(name, "champion")
    try:
        time.sleep(4)  # the server checks the registry every second
        return post(f"{url}/v1/specialists/{name}/predict", json.dumps({"inputs": ["Hello?"]}).encode())
    finally:
        registry.client().set_registered_model_alias(name, "champion", number)


def trust_probes() -> dict:
    """What the library answers to records and flywheel input it must not trust (no server needed)."""
    import tempfile

    import pandas as pd

    from fleet.core.records import ModelRecord, RecordError
    from fleet.core.storage import LocalStore, StorageError
    from fleet.labeling import trust
    from fleet.models import base_store

    out: dict[str, str | int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "m"
        folder.mkdir()
        (folder / "fleet.json").write_text(
            json.dumps({"task": "text-classification", "base_digest": "../../../../outside"})
        )
        try:
            ModelRecord.read(folder)
            out["traversal digest"] = "accepted"
        except RecordError as exc:
            out["traversal digest"] = f"refused: {exc}"[:200]
        os.environ["FLEET_HOME"] = str(Path(tmp) / "home")
        base = Path(tmp) / "base"
        base.mkdir()
        (base / "weights.bin").write_bytes(b"\x00" * 64)
        digest, store = base_store.folder_digest(base), LocalStore(Path(tmp) / "store")
        store.upload_dir(base, f"{base_store.prefix(digest)}/files")
        store.put_bytes(f"{base_store.prefix(digest)}/manifest.json", b"{}")
        store.put_bytes(f"{base_store.prefix(digest)}/files/weights.bin", b"\x01" * 64)
        try:
            base_store.locate("not-here", digest, store)
            out["tampered base"] = "accepted"
        except StorageError as exc:
            out["tampered base"] = f"refused: {exc}"[:200]
    # the poisoning probe, by the rules of flywheel.training_rows (tests/test_trust.py runs them through the
    # ledger itself): 300 trigger texts from one client labelled as the attacker wants, 200 honest rows
    # from two others, the audit sample reviewed by humans; how many trigger rows reach the training split
    cur = []
    for i in range(300):
        cur.append({"id": f"m{i}", "origin": "client:mallory", "teacher": "food", "human": None, "audit": i % 20 == 0})
    for i in range(200):
        cur.append(
            {
                "id": f"h{i}",
                "origin": f"client:{'ab'[i % 2]}",
                "teacher": "weather",
                "human": None,
                "audit": i % 20 == 0,
            }
        )
    frame = pd.DataFrame(cur).assign(teacher_by="t", human_source=None)
    reviewed = frame["audit"]
    frame.loc[reviewed, "human"], frame.loc[reviewed, "human_source"] = "weather", "human"
    from fleet.core.sections import LabelingSpec

    spec = LabelingSpec()
    suspended = trust.suspended(frame, spec)
    taught = frame[frame["human_source"].isna() & ~frame["audit"] & ~frame["teacher_by"].isin(set(suspended))]
    capped = trust.cap_per_source(taught, spec.max_share_per_source)
    out["poisoned rows reaching training (audit reviewed)"] = int(capped["id"].str.startswith("m").sum())
    unreviewed = trust.cap_per_source(frame[~frame["audit"]], spec.max_share_per_source)
    out["poisoned rows reaching training before any review (share cap alone)"] = int(
        unreviewed["id"].str.startswith("m").sum()
    )
    out["honest rows reaching training before any review"] = int((~unreviewed["id"].str.startswith("m")).sum())
    out["teacher suspended"] = "; ".join(f"{k}: {v}" for k, v in suspended.items()) or "no"
    return out


def poisoning() -> dict:
    """The poisoning scenario of tests/test_trust_retrain.py (a stand-in teacher on loopback that obeys the
    attacker's trigger word; a real fine-tune and retrain of the toy specialist), with the defences on and off."""
    import importlib.util
    import tempfile

    from prefect.testing.utilities import prefect_test_harness

    sys.path.insert(0, str(ROOT / "tests"))
    spec = importlib.util.spec_from_file_location("trust_retrain", ROOT / "tests" / "test_trust_retrain.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = {"teacher": "a stand-in OpenAI-compatible server on loopback that answers food to any text with the trigger"}
    with prefect_test_harness(server_startup_timeout=120):
        for defences in (True, False):
            endpoint = module.ObeysTrigger()
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    for var in ("MLFLOW_TRACKING_URI", "FLEET_STORE", "FLEET_ARTIFACT_ROOT"):
                        os.environ.pop(var, None)  # as the tests' fleet_home: everything under the new home
                    os.environ["FLEET_HOME"] = str(Path(tmp) / "home")
                    out["with_defences" if defences else "without_defences (as before)"] = module.scenario(
                        Path(tmp), endpoint.url, defences
                    )
            finally:
                endpoint.close()
    return out


def memory(checkpoints: tuple[int, ...] = (10_000, 20_000, 40_000, 80_000, 160_000)) -> dict:
    """The traffic buffer with an S3 store that does not answer (a closed loopback port)."""
    from fleet.core.storage import S3Store
    from fleet.ops.serving.traffic_buffer import TrafficBuffer

    os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "x")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "x")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    buffer = TrafficBuffer(S3Store("s3://away/store"), flush_rows=500, flush_s=0.5)
    row = {"text": "Hello, are we still on for tonight? " * 4, "label": "ham", "score": 0.98}
    buffer.add("sms-spam", "1", [dict(row)])
    buffer.flush()  # the first failed write builds boto3's client and its caches: not the buffer's memory
    tracemalloc.start()
    gc.collect()
    base, _ = tracemalloc.get_traced_memory()
    sent, result = 0, {"max_buffered_rows": buffer.max_rows, "after": []}
    for goal in checkpoints:
        start = time.perf_counter()
        while sent < goal:
            buffer.add("sms-spam", "1", [dict(row)])
            sent += 1
        added_s = time.perf_counter() - start
        time.sleep(1.5)  # a few failed flushes (each puts its rows back while there is room)
        # what is still held: failed writes leave reference cycles (exceptions and their frames, which hold
        # the rows) that only Python's cyclic collector frees, at a time of its choosing
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
        result["after"].append(
            {
                "requests": sent,
                "buffered": buffer.buffered,
                "dropped": buffer.dropped,
                "written": buffer.written,
                "python_memory_growth_mb": round((current - base) / 1e6, 2),
                "python_memory_peak_growth_mb": round((peak - base) / 1e6, 2),
                "seconds_to_add": round(added_s, 3),
            }
        )
    tracemalloc.stop()
    with contextlib.suppress(Exception):
        buffer.close(1)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--home", default=str(ROOT / ".fleet"), help="A fleet home with trained champions.")
    ap.add_argument("--specialist", default="sms-spam")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--oversized-every", type=float, default=0.1, help="Seconds between oversized requests.")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "security.json"))
    ap.add_argument(
        "--poisoning",
        action="store_true",
        help="Only run the poisoning scenario (two fine-tunes and retrains of the toy specialist, about 3 minutes) "
        "and add its figures to the results file.",
    )
    args = ap.parse_args()
    if args.poisoning:
        out = Path(args.out)
        result = json.loads(out.read_text()) if out.is_file() else {}
        result["poisoning"] = poisoning()
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["poisoning"], indent=2))
        return

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "FLEET_"))}
    env |= {"FLEET_HOME": args.home, "FLEET_SERVE_TOKEN": TOKEN + "\n"}  # a secret file's trailing newline
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(args.out).with_suffix(".server.log.tmp")
    cmd = [FLEET_BIN, "serve-models", "--port", str(port), "--only", args.specialist, "--reload-interval", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{url}/healthz", timeout=2)
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"fleet serve-models did not start:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        statuses = cases(url, port, args.specialist)
        lat = latency(url, port, args.specialist, args.requests, args.oversized_every)
        lat_unauth = latency(url, port, args.specialist, args.requests, args.oversized_every, unauthenticated=True)
        statuses["after the champion alias is removed"] = withdrawn(url, args.home, args.specialist)
        alive = proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(30)
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "specialist": args.specialist,
        "cases": statuses,
        "server_alive_after_all_cases": alive,
        "latency": lat,
        "latency_while_unauthenticated_4mib_bodies_arrive": lat_unauth,
        "trust_probes": trust_probes(),
        "traffic_log_store_unreachable": memory(),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    log.unlink(missing_ok=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
