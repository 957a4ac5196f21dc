"""The openai-chat baseline against a real OpenAI-compatible server: llama-cpp-python's server on the same
SmolLM2 GGUF file, started on loopback by the test (skipped where llama-cpp-python is not installed;
`make test` installs it)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from cli.health import free_port, wait_http
from conftest import TOY_SCHEMA

pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed"),
]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    from fleet.models.base_models import MODEL_ALIASES, _package_folder

    alias = MODEL_ALIASES["smollm2-135m"]
    gguf = _package_folder("smollm2-135m", alias) / (alias.gguf or "")
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", 120, "llama-cpp-python server", proc, log)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(20)


def test_generative_openai_chat_baseline_answers_and_bills(llama_server):
    from fleet.kinds import parse_fleet
    from fleet.kinds.generation.baselines import build

    raw = {
        "task": "text-generation",
        "data": {"source": "x.jsonl"},
        "generation": {
            "output": "json",
            "json_schema": TOY_SCHEMA,
            "system": "Answer with JSON.",
            "max_new_tokens": 24,
        },
        "evaluation": {
            "baselines": [
                {
                    "kind": "openai-chat",
                    "url": llama_server,
                    "model": "smollm2",
                    "price_per_1k_input_tokens": 0.5,
                    "price_per_1k_output_tokens": 1.5,
                }
            ]
        },
    }
    spec = parse_fleet({"specialists": {"g": raw}}).specialists["g"]
    [bspec] = spec.evaluation.baselines or []
    baseline = build(spec, bspec, None)
    out = baseline.predict(["Oslo is at 3 degrees.", "Rome: 20 degrees."])
    assert len(out.predictions) == 2 and all(isinstance(a, str) and a for a in out.predictions)
    assert out.tokens is not None and all(0 < t <= 24 for t in out.tokens)  # the server's own token counts
    client = baseline.client
    assert client.tokens_in > 20 and client.tokens_out == sum(out.tokens)
    expected = (client.tokens_in * 0.5 + client.tokens_out * 1.5) / 1000 / 2 * 1000
    assert baseline.billed_cost_per_1k(2) == pytest.approx(expected)


def test_classifying_openai_chat_baseline_against_the_same_server(llama_server):
    from fleet.core.sections import BaselineSpec
    from fleet.kinds.classification.baselines import OpenAIChatBaseline

    b = OpenAIChatBaseline(
        BaselineSpec(kind="openai-chat", url=llama_server, model="smollm2"),
        {"weather": "about the weather", "food": "about food"},
    )
    probs = b.predict_proba(["It will rain in Oslo tomorrow", "I cooked pasta"])
    assert probs.shape == (2, 2) and (abs(probs.sum(axis=1) - 1) < 1e-9).all()
    assert b.client.tokens_in > 0 and b.client.tokens_out > 0


def test_a_llama_cpp_server_teaches_with_token_probabilities(llama_server, tmp_path):
    """The flywheel's teacher on a real OpenAI-compatible server: answers become labels, each with the
    probability of its tokens (or the agreement of samples where the server gives none), tokens counted."""
    import pandas as pd

    from conftest import write_toy_fleet
    from fleet.core.sections import BaselineSpec, LabelingSpec
    from fleet.core.storage import LocalStore
    from fleet.kinds import load_fleet
    from fleet.labeling import ledger, teacher
    from fleet.labeling.ledger import row_id

    spec = load_fleet(write_toy_fleet(tmp_path / "f")).specialists["toy"]
    tspec = BaselineSpec(kind="openai-chat", url=llama_server, model="smollm2", timeout_s=60)
    spec = spec.model_copy(update={"labeling": LabelingSpec(teacher=tspec, samples=2, max_retries=0)})
    rows = pd.DataFrame({"text": ["It will rain in Oslo tomorrow", "I cooked pasta in Rome"]})
    rows["id"] = [row_id(t) for t in rows["text"]]
    store = LocalStore(tmp_path / "store")
    run = teacher.label(spec, store, teacher.build(spec, pd.DataFrame()), rows)
    assert run.asked == 2 and run.labelled + run.unknown_label == 2 and run.failed == 0, run.problems
    assert run.tokens_in > 20 and run.tokens_out > 0
    labelled = ledger.events(store, "toy")
    assert set(labelled["label"]) <= {"weather", "food"}
    assert all(0.0 < c <= 1.0 for c in labelled["confidence"])
