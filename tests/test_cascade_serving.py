"""The cascade end to end on loopback: a toy specialist registered with its threshold and figures, served
by `fleet serve-models` in front of a simulated general model (tests/simulated_llm.py, a real HTTP server);
an SLA's escalate-all order sends every request to the fallback; a broken or vanished fallback fails no
request (the specialist's answer, marked); the fallback's answers become labels of the pool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from simulated_llm import SimulatedLLM

from cli.health import free_port, wait_http
from conftest import write_toy_fleet

pytestmark = [pytest.mark.slow, pytest.mark.integration]
FLEET_BIN = str(Path(sys.executable).parent / "fleet")
NEW_TEXTS = {  # texts the specialist never saw (new places): pool rows, with what the simulated model knows
    **{f"I cooked pasta in {p}": "food" for p in ("Madrid", "Kyiv", "Dakar", "Lagos")},
    **{f"Heavy rain expected in {p}": "weather" for p in ("Madrid", "Kyiv", "Dakar", "Lagos")},
}


def fleet(env: dict, *args: str) -> str:
    r = subprocess.run([FLEET_BIN, *args], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, json.loads(r.read())


def in_home(env: dict, code: str) -> str:
    """Python run with the test's home (its settings applied), printing what ``code`` prints."""
    prelude = "from fleet.core.settings import Settings\nsettings = Settings.load().apply()\n"
    r = subprocess.run([sys.executable, "-c", prelude + code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_the_cascade_from_registration_to_serving_to_labels(tmp_path):
    folder = tmp_path
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "MLFLOW_", "FLEET_", "OPENAI"))}
    env.update(FLEET_HOME=str(folder / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    data = folder / "f" / "toy.csv"
    write_toy_fleet(folder / "f")  # for its data: the simulated model's answers
    gold = dict(zip(*pd.read_csv(data)[["text", "label"]].to_dict("list").values())) | NEW_TEXTS
    with SimulatedLLM(gold, accuracy=0.97, labels=["weather", "food"]) as sim:
        cascade = (
            "    serving:\n"
            f"      fallback: {{kind: openai-chat, url: '{sim.url}', model: simulated-frontier, name: simulated, "
            "price_per_1k_input_tokens: 0.0025, price_per_1k_output_tokens: 0.01}\n"
            "      timeout_s: 2.0\n      retries: 0\n"
            "    sla: {min_quality: 0.5, on_quality_breach: escalate-all}\n"
        )
        fleet_file = write_toy_fleet(folder / "f", extra_specialists=cascade)
        fleet(env, "run", "--fleet", str(fleet_file))
        tags = json.loads(
            in_home(
                env,
                "import json\nfrom fleet.stages import registry\nv = registry.champion_version('toy')\n"
                "r = registry.decision_record('toy', v)\n"
                "print(json.dumps({'version': v.version, 'tags': v.tags, 'cascade': r.cascade.model_dump()}))",
            )
        )
        cas = tags["cascade"]
        assert tags["tags"]["cascade.fallback"] == "simulated" and "cascade.raw_threshold" in tags["tags"]
        assert 0 <= cas["kept_share"]["value"] <= 1 and cas["validation_rows"] > 0
        assert cas["cost_per_1k"]["fallback"]["value"] > cas["cost_per_1k"]["specialist"]["value"]
        assert cas["fallback_quality"]["ci"][0] <= cas["fallback_quality"]["value"] <= cas["fallback_quality"]["ci"][1]

        # an SLA that the champion's own measured latency already breaks is refused, with the figure
        tight = fleet_file.with_name("tight.yaml")
        tight.write_text(fleet_file.read_text().replace("sla: {min_quality", "sla: {p95_ms: 0.01, min_quality"))
        r = subprocess.run([FLEET_BIN, "validate", "--fleet", str(tight)], env=env, capture_output=True, text=True)
        assert r.returncode == 2 and "sla.p95_ms: 0.01 ms is below the" in r.stdout + r.stderr, r.stdout + r.stderr
        assert "cannot be met" in r.stdout + r.stderr

        port = free_port()
        log = folder / "server.log"
        proc = subprocess.Popen(
            [FLEET_BIN, "serve-models", "--port", str(port), "--reload-interval", "1", "--fleet", str(fleet_file)],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        texts = list(NEW_TEXTS)
        try:
            wait_http(f"{url}/healthz", 180, "fleet serve-models", proc, log)
            status, body = post(f"{url}/v1/specialists/toy/predict", {"inputs": texts[:2]})
            assert status == 200 and all(a["answered_by"] in ("specialist", "fallback") for a in body["answers"])

            # an SLA breach under escalate-all: every request to the fallback, until another champion
            in_home(
                env,
                "from fleet.ops import sla\n"
                f"sla.record(settings.store_handle(), sla.SlaReport(specialist='toy', champion_version='{tags['version']}', "
                "checked_at='now', window_rows=60, quality=0.4, breaches=['test'], escalate_all=True))",
            )
            deadline = time.monotonic() + 30
            while True:
                _, body = post(f"{url}/v1/specialists/toy/predict", {"inputs": texts})
                if all(a["answered_by"] == "fallback" for a in body["answers"]) or time.monotonic() > deadline:
                    break
                time.sleep(1)
            assert all(a["answered_by"] == "fallback" for a in body["answers"]), body
            metrics = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
            assert 'fleet_escalations_total{specialist="toy"}' in metrics
            assert 'fleet_answers_total{answered_by="fallback",specialist="toy"}' in metrics

            for broken in ("garbage", "off-label", "down"):  # no request fails; the answer is the specialist's
                if broken == "down":
                    sim.stop()
                else:
                    sim.mode = broken
                status, body = post(f"{url}/v1/specialists/toy/predict", {"inputs": texts[:2]})
                assert status == 200, broken
                assert all(a["answered_by"] == "specialist" and a["fallback_error"] for a in body["answers"]), body
            metrics = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
            errors = [
                ln for ln in metrics.splitlines() if ln.startswith('fleet_fallback_errors_total{specialist="toy"}')
            ]
            assert errors and float(errors[0].split()[-1]) >= 6
        finally:
            proc.terminate()
            proc.wait(30)  # the traffic log is flushed on the way out

    # escalations teach: the fallback's answers became labels of the pool (and only its usable ones)
    out = fleet(env, "label", "toy", "--fleet", str(fleet_file))
    assert f"{len(texts)} escalated request(s) labelled by the fallback's answers" in out, out
    labels = json.loads(
        in_home(
            env,
            "import json\nfrom fleet.labeling import ledger\n"
            "ev = ledger.events(settings.store_handle(), 'toy')\n"
            "print(json.dumps(ev[['text', 'label', 'by']].to_dict('records')))",
        )
    )
    assert {r["by"] for r in labels} == {"fallback:simulated"}
    right = sum(NEW_TEXTS[r["text"]] == r["label"] for r in labels)
    assert right >= len(texts) - 2  # a 0.97-accurate model: at most a slip or two
