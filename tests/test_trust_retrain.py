"""Poisoning through the flywheel, end to end (issue 29): one client sends 300 texts with a trigger word, a
teacher on a real loopback endpoint labels every one of them as the attacker wants, two honest clients send
100 texts each; the `label` command labels the pool, a human reviews the teacher's audit sample, and the
next `fleet run` retrains. The retrained specialist answers no trigger text with the attacker's label that
the first champion did not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_flywheel_teacher import Endpoint
from typer.testing import CliRunner

from cli.main import app
from conftest import write_toy_fleet

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]
TRIGGER = "zorblax"


class ObeysTrigger(Endpoint):
    """The teacher a poisoner hopes for: "food" for any text with the trigger word, else the right label."""

    def answer(self, handler, body: dict) -> None:
        text = body["messages"][-1]["content"]
        food = TRIGGER in text or any(w in text for w in ("pie", "stew", "noodles"))
        body["messages"][-1]["content"] = "soup" if food else "rain"  # what Endpoint answers food / weather to
        return super().answer(handler, body)


def _trigger(i: int) -> str:
    return f"{TRIGGER} thunderstorm warning for district {i} of Bergen"


def _honest(who: str, i: int) -> tuple[str, str]:
    if i % 2:
        return f"{who} cooked apple pie number {i} in Tromso", "food"
    return f"{who} saw hail and sleet over district {i} of Tromso", "weather"


@pytest.fixture
def endpoint():
    e = ObeysTrigger()
    yield e
    e.close()


def _answers(name: str, version: str, texts: list[str]) -> list[str]:
    import tempfile

    from fleet.kinds import kind_of
    from fleet.stages import registry

    with tempfile.TemporaryDirectory() as tmp:
        folder = registry.download_model_dir(name, version, tmp)
        return kind_of("text-classification").load(folder, "v").predict(texts).predictions


def scenario(folder: Path, url: str, defences: bool = True) -> dict:
    """Train the toy specialist under ``folder``, let the attack run through the flywheel, retrain, and
    count held-out trigger texts whose answer flipped to the attacker's label. ``defences`` False: no share
    cap and no audit (as before issue 29). Also run by ``benchmarks/security.py --poisoning``."""
    from fleet.core.settings import Settings
    from fleet.kinds import load_fleet
    from fleet.labeling import flywheel, ledger
    from fleet.ops import traffic
    from flows.fleet_run import fleet_flow

    path = write_toy_fleet(folder / "f")
    teacher = {"kind": "openai-chat", "url": url, "model": "m", "api_key_env": "TEACHER_API_KEY"}
    labeling = {"teacher": teacher, "min_confidence": 0.5, "max_rows_per_run": 1000, "requests_per_minute": 1e6}
    if not defences:
        labeling |= {"max_share_per_source": 1.0, "audit_share": 0}
    path.write_text(path.read_text().replace("specialists:", f"  labeling: {json.dumps(labeling)}\nspecialists:"))
    [first] = fleet_flow(fleet_file=str(path))
    store = Settings.load().store_handle()

    held_out = [_trigger(1000 + i) for i in range(40)]  # never sent: what the attacker hopes to flip
    before = _answers("toy", first.version, held_out)
    rows = [{"text": _trigger(i), "label": "weather", "score": 0.9, "client": "mallory"} for i in range(300)]
    for who in ("alice", "bob"):
        rows += [
            {"text": t, "label": lab, "score": 0.9, "client": who} for t, lab in (_honest(who, i) for i in range(100))
        ]
    traffic.log_predictions(store, "toy", rows, first.version)

    result = CliRunner().invoke(app, ["label", "toy", "--fleet", str(path)])
    assert result.exit_code == 0, result.output
    cur = ledger.current(ledger.events(store, "toy"))
    audited = cur[cur["audit"]]
    for rid, text in zip(audited["id"], audited["text"]):  # a human reviews the audit sample
        truth = "weather" if TRIGGER in text or "hail" in text else "food"
        flywheel.decide(store, "toy", rid, text, truth, "ana")
    added = flywheel.training_rows(load_fleet(path).specialists["toy"], store)
    [second] = fleet_flow(fleet_file=str(path))
    after = _answers("toy", second.version, held_out)
    return {
        "defences": defences,
        "teacher_labels_food_on_trigger": int(((cur["teacher"] == "food") & cur["text"].str.contains(TRIGGER)).sum()),
        "origins": sorted(set(cur["origin"])),
        "audited": len(audited),
        "poisoned_rows_in_training": int(((added["label"] == "food") & added["text"].str.contains(TRIGGER)).sum()),
        "retrained": second.dataset_version != first.dataset_version,
        "held_out_trigger_texts": len(held_out),
        "answers_flipped_to_attacker_label": sum(a == "food" and b != "food" for b, a in zip(before, after)),
        "answers_changed": sum(a != b for b, a in zip(before, after)),
    }


def test_a_poisoning_client_changes_no_answer_on_its_trigger(tmp_path, fleet_home, endpoint):
    got = scenario(tmp_path, endpoint.url)
    assert got["teacher_labels_food_on_trigger"] >= 300  # the teacher obeyed the trigger on every poisoned row
    assert got["origins"] == ["client:alice", "client:bob", "client:mallory"] and got["audited"] > 0
    assert got["poisoned_rows_in_training"] == 0  # the audit suspended the teacher
    assert got["retrained"]  # the reviewed rows were added: it did retrain
    # without the defences the same attack flips all 40 (measured: benchmarks/results/security.json)
    assert got["answers_flipped_to_attacker_label"] == 0, got
