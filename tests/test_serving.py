"""`fleet serve-models` on loopback: two specialists on one base, batched together; a newly promoted
champion served within 10 s, without a restart and without a failed request while a client keeps asking."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from cli.health import free_port, wait_http
from conftest import write_toy_fleet

pytestmark = [pytest.mark.slow, pytest.mark.integration]
FLEET_BIN = str(Path(sys.executable).parent / "fleet")
SECOND = "\n  toy2:\n    data: {source: toy.csv}\n    labels: {weather: about the weather, food: about food}\n"


def call(url: str, body: dict | None = None, timeout: float = 30):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method="POST" if data else "GET", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
        return r.status, (json.loads(raw) if r.headers.get_content_type() == "application/json" else raw.decode())


def fleet(env: dict, *args: str) -> str:
    r = subprocess.run([FLEET_BIN, *args], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serving")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "MLFLOW_", "FLEET_"))}
    env.update(FLEET_HOME=str(folder / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    fleet_file = write_toy_fleet(folder / "f", extra_specialists=SECOND)
    fleet(env, "run", "--fleet", str(fleet_file))
    port = free_port()
    log = folder / "server.log"
    proc = subprocess.Popen(
        [FLEET_BIN, "serve-models", "--port", str(port), "--reload-interval", "1", "--fleet", str(fleet_file)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 180, "fleet serve-models", proc, log)
        yield {"url": f"http://127.0.0.1:{port}", "env": env, "fleet": fleet_file, "folder": folder, "pid": proc.pid}
    finally:
        proc.terminate()
        proc.wait(30)


def test_two_specialists_on_one_base_are_answered_in_one_batch(served):
    url = served["url"]
    _, health = call(f"{url}/healthz")
    assert set(health["specialists"]) == {"toy", "toy2"} and health["bases"] == 1  # the base is loaded once
    _, results = call(
        f"{url}/v1/predict",
        {
            "requests": [
                {"specialist": "toy", "inputs": ["It will rain in Bergen tomorrow", "We baked bread at Bergen"]},
                {"specialist": "toy2", "inputs": ["Fresh salad served in Bergen"]},
            ]
        },
    )
    assert [[a["label"] for a in r["answers"]] for r in results] == [["weather", "food"], ["food"]]
    _, metrics = call(f"{url}/metrics")
    mixed = [line for line in metrics.splitlines() if line.startswith("fleet_mixed_batches_total")]
    assert mixed and float(mixed[0].split()[-1]) >= 1  # rows of both specialists went through one forward pass
    assert 'fleet_request_seconds_bucket{le="0.5",specialist="toy"}' in metrics
    status, _ = call(f"{url}/docs")
    _, spec = call(f"{url}/openapi.json")
    assert status == 200 and "/v1/specialists/{name}/predict" in spec["paths"]
    listening = {c.laddr.ip for c in psutil.Process(served["pid"]).net_connections("inet") if c.status == "LISTEN"}
    assert listening == {"127.0.0.1"}  # this machine only, unless told otherwise
    with pytest.raises(urllib.error.HTTPError, match="404"):
        call(f"{url}/v1/specialists/ghost/predict", {"inputs": ["x"]})

    from fleet.core.storage import LocalStore
    from fleet.ops import traffic

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        logged = traffic.read_all(LocalStore(served["folder"] / "home" / "store"), "traffic", "toy2")
        if len(logged):
            break
        time.sleep(0.5)
    assert logged["text"].tolist() == ["Fresh salad served in Bergen"] and logged["model_version"].tolist() == ["1"]


def test_a_promoted_champion_is_served_within_10_s_without_a_failed_request(served):
    url, env = served["url"], served["env"]
    retrain = write_toy_fleet(served["folder"] / "f", extra_train=", seed: 9", extra_specialists=SECOND)
    out = fleet(env, "run", "--fleet", str(retrain), "--only", "toy")
    assert "challenger" in out or "champion" in out
    seen: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def client():
        while not stop.is_set():
            try:
                status, body = call(f"{url}/v1/specialists/toy/predict", {"inputs": ["Snow is falling in Bergen"]})
                seen.append((time.monotonic(), status, body["version"]))
            except Exception as exc:  # any failure is what this test is about
                seen.append((time.monotonic(), 0, repr(exc)))
            time.sleep(0.05)

    thread = threading.Thread(target=client)
    thread.start()
    time.sleep(2)
    promoted = time.monotonic()
    fleet(env, "promote", "toy", "2")
    deadline = promoted + 15
    while time.monotonic() < deadline and not any(v == "2" for _, _, v in seen):
        time.sleep(0.2)
    time.sleep(2)
    stop.set()
    thread.join(30)
    assert all(status == 200 for _, status, _ in seen), [s for s in seen if s[1] != 200][:3]
    versions = [v for _, _, v in seen]
    assert versions[0] == "1" and versions[-1] == "2" and versions == sorted(versions)  # 1, 1, ..., 2, 2
    switched = min(t for t, _, v in seen if v == "2") - promoted
    print(f"\nnew champion served {switched:.1f} s after `fleet promote` returned ({len(seen)} requests, none failed)")
    assert switched <= 10


TOKEN = "a-long-random-token-for-the-test"


def _raw(url: str, body: bytes, token: str | None = TOKEN, timeout: float = 60) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _post_head(port: int, length: int) -> socket.socket:
    """A connection that announced a POST of ``length`` body bytes and sent none of them yet."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /v1/specialists/toy/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
    s.sendall(f"Authorization: Bearer {TOKEN}\r\nContent-Length: {length}\r\n\r\n".encode())
    return s


def _slow_client(port: int, stop: threading.Event) -> None:
    """Announces a body of 1,000 bytes and sends one byte every 0.2 s."""
    with contextlib.suppress(OSError), _post_head(port, 1000) as s:
        while not stop.wait(0.2):
            s.sendall(b" ")


def _big_body(port: int, size: int) -> tuple[int, str]:
    """Announce a body of ``size`` bytes, send its first 64 KB: the answer comes before the rest is read."""
    with _post_head(port, size) as s:
        s.sendall(b'{"inputs": ["' + b"x" * 65_536)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _content_length(data):
            chunk = s.recv(65_536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    return int(head.split(" ", 2)[1]), body


def _content_length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def call_with_token(url: str) -> dict:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_bad_input_and_64_clients_against_a_server_with_a_token(served):
    """Every bad request gets its status code, none crashes the server, and 64 clients keep being answered
    meanwhile (`fleet serve-models` with FLEET_SERVE_TOKEN, on loopback)."""
    port = free_port()
    env = {**served["env"], "FLEET_SERVE_TOKEN": TOKEN}
    log = served["folder"] / "server-token.log"
    cmd = [FLEET_BIN, "serve-models", "--port", str(port), "--reload-interval", "1", "--fleet", str(served["fleet"])]
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    predict = f"{url}/v1/specialists/toy/predict"
    ok = json.dumps({"inputs": ["It will rain in Bergen tomorrow"]}).encode()
    try:
        wait_http(f"{url}/healthz", 180, "fleet serve-models", proc, log)
        stop = threading.Event()
        slow = threading.Thread(target=_slow_client, args=(port, stop), daemon=True)
        slow.start()
        cases = {
            "no token": (_raw(predict, ok, token=None), 401),
            "wrong token": (_raw(predict, ok, token="guess"), 401),
            "malformed JSON": (_raw(predict, b'{"inputs": [oops'), 422),
            "wrong types": (_raw(predict, b'{"inputs": [1, {"a": 2}]}'), 422),
            "257 rows": (_raw(predict, json.dumps({"inputs": ["x"] * 257}).encode()), 413),
            "a 1 MB text": (_raw(predict, json.dumps({"inputs": ["x" * 1_000_000]}).encode()), 413),
            "a 10 MB body": (_big_body(port, 10_000_000), 413),
            "unknown specialist": (_raw(f"{url}/v1/specialists/ghost/predict", ok), 404),
        }
        wrong = {name: got for name, (got, want) in cases.items() if got[0] != want}
        assert not wrong, wrong
        assert "toy" not in cases["unknown specialist"][0][1]
        assert json.loads(cases["257 rows"][0][1])["detail"]["limit"] == "max_rows"
        assert json.loads(cases["a 10 MB body"][0][1])["detail"]["limit"] == "max_body_bytes"

        champion = call_with_token(f"{url}/healthz")["specialists"]["toy"]["version"]
        answers: list[tuple[int, str]] = []
        done = threading.Event()

        def ask() -> None:
            while not done.is_set():
                answers.append(_raw(predict, ok))

        clients = [threading.Thread(target=ask) for _ in range(64)]
        for c in clients:
            c.start()
        if champion == "2":  # the promotion test ran first: roll back to 1 while the 64 clients ask
            fleet(env, "promote", "toy", "1")
            time.sleep(3)  # the server picks it up within its reload interval
        else:
            time.sleep(5)
        done.set()
        for c in clients:
            c.join(60)
        assert len(answers) >= 64 and {s for s, _ in answers} == {200}
        assert {json.loads(b)["answers"][0]["label"] for _, b in answers} == {"weather"}
        if champion == "2":
            assert {json.loads(b)["version"] for _, b in answers} == {"1", "2"}
        stop.set()
        assert call(f"{url}/healthz")[1] == {"status": "ok"}  # open, and says nothing about what is served
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(30)
