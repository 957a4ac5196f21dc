"""Generative specialists: the GGUF base model, the chat format and loss masking, curation of
(prompt, response) pairs with JSON schemas, and scoring."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import TOY_SCHEMA
from fleet.core.results import Outputs
from fleet.kinds import parse_fleet
from fleet.kinds.generation import answers, chat_template, scoring


def gen_spec(**over):
    raw = {
        "task": "text-generation",
        "data": {"source": "x.jsonl"},
        "generation": {"output": "json", "json_schema": TOY_SCHEMA, "system": "JSON please."},
    }
    raw.update(over)
    return parse_fleet({"specialists": {"g": raw}}).specialists["g"]


def test_task_defaults_and_per_task_checks():
    spec = gen_spec()
    assert spec.base_model == "smollm2-135m" and spec.gate.metric == "field_f1" and spec.labels == {}
    assert spec.train.lora.target_modules == ["q_proj", "v_proj"]
    assert [b.kind for b in spec.evaluation.baselines] == ["base-model", "base-model"]
    from fleet.core.spec import SpecError

    with pytest.raises(SpecError, match=r"g\.evaluation\.baselines: embedding-zero-shot cannot judge"):
        gen_spec(evaluation={"baselines": [{"kind": "embedding-zero-shot"}]})
    with pytest.raises(SpecError, match=r"g\.gate\.metric: field_f1 needs generation\.output: json"):
        gen_spec(generation={"output": "text"}, gate={"metric": "field_f1"})
    with pytest.raises(SpecError, match=r"json_schema: not a valid JSON Schema"):
        gen_spec(generation={"output": "json", "json_schema": {"type": "nonsense"}})


@pytest.mark.slow
def test_the_gguf_alias_loads_as_a_transformers_model():
    from fleet.models import base_models, cache

    folder = base_models.resolve_base_model("smollm2-135m")  # converted once, then loaded from the converted folder
    assert "smollm2-135m-" in folder and base_models.resolve_base_model("smollm2-135m") == folder
    tokenizer, model = cache.causal("smollm2-135m")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert 134_000_000 < sum(p.numel() for p in model.parameters()) < 135_000_000
    assert "<|im_start|>assistant" in chat_template.render(tokenizer, chat_template.messages("sys", "hi"))


@pytest.mark.slow
def test_loss_is_on_the_response_only():
    from fleet.models import base_models

    tokenizer = base_models.load_tokenizer("smollm2-135m")
    ex = chat_template.example(tokenizer, "Answer in JSON.", "Paris is at 21 degrees.", '{"city": "Paris"}', 512)
    labels = np.array(ex["labels"])
    masked = labels == -100
    assert masked.sum() > 10 and masked[: masked.sum()].all()  # the prompt, template and system prompt: no loss
    learned = tokenizer.decode(np.array(ex["input_ids"])[~masked])
    assert learned == '{"city": "Paris"}' + tokenizer.eos_token  # the answer and the end of the turn
    assert len(ex["input_ids"]) == len(ex["labels"]) == len(ex["attention_mask"])


def test_common_prefix_leaves_each_prompt_a_token_of_its_own():
    from fleet.kinds.generation.predict import common_prefix

    shared = list(range(20))
    assert common_prefix([[*shared, 7, 8], [*shared, 9]]) == shared
    assert common_prefix([shared, [*shared, 1]]) == shared[:19]  # the shorter prompt keeps its last token
    assert common_prefix([[*shared[:10], 1], [*shared[:10], 2]]) == []  # too short to be worth a pass
    assert common_prefix([[*shared, 1]]) == []  # one prompt: nothing is shared


@pytest.mark.slow
def test_few_shot_prompts_answer_the_same_with_their_shared_prefix_computed_once(monkeypatch):
    from fleet.kinds.generation import predict
    from fleet.models import cache, prompt_prefix

    tokenizer, model = cache.causal("smollm2-135m")
    shots = [(f"Invoice {n} from Acme, total {n}.50 EUR.", json.dumps({"invoice_number": str(n)})) for n in (11, 12)]
    emails = ["Invoice 77 from Brightwater, 12 USD.", "Hi, invoice INV-3 is attached.", "Total due: 9 GBP, no. 5"]
    prompts = [chat_template.render(tokenizer, chat_template.messages("Answer in JSON.", e, shots)) for e in emails]
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    assert len(predict.common_prefix(ids)) > 50  # system prompt and both examples
    cached = predict.generate(tokenizer, model, prompts, 24, 2)
    monkeypatch.setattr(prompt_prefix, "PREFIX_MIN", 10**6)  # no shared prefix: each prompt computed whole
    whole = predict.generate(tokenizer, model, prompts, 24, 2)
    assert cached.predictions == whole.predictions and cached.tokens == whole.tokens
    assert all(cached.predictions)
    # each answer's mean token log-probability (the cascade's confidence), the same either way
    assert cached.confidence is not None and all(-20 < c <= 0 for c in cached.confidence)
    assert cached.confidence == pytest.approx(whole.confidence, abs=1e-3)


def pairs_file(tmp_path, rows):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.slow
def test_curation_rules_for_pairs_and_json_schemas(tmp_path):
    from fleet.core.storage import LocalStore
    from fleet.data.versions import load_split
    from fleet.stages.curation import curate

    good = [
        {
            "prompt": f"Report {i}: city number {i} is warm, about {20 + i} degrees.",
            "response": json.dumps({"city": f"c{i}", "temp": 20 + i}),
            "g": f"g{i % 5}",
        }
        for i in range(30)
    ]
    bad = [
        {"prompt": "empty answer", "response": "  ", "g": "g0"},
        {"prompt": "broken", "response": '{"city": "x", "temp": ', "g": "g0"},
        {"prompt": "a list", "response": "[1, 2]", "g": "g0"},
        {"prompt": "wrong type", "response": '{"city": "x", "temp": "hot"}', "g": "g0"},
        {"prompt": "extra key", "response": '{"city": "x", "temp": 3, "wind": 1}', "g": "g0"},
        {"prompt": "too long " + "word " * 400, "response": '{"city": "x", "temp": 3}', "g": "g0"},
        {"prompt": "mail me at jo@example.org", "response": '{"city":"jo@example.org","temp":4}', "g": "g1"},
        {"prompt": "same prompt", "response": '{"city": "a", "temp": 1}', "g": "g2"},
        {"prompt": "same prompt", "response": '{"city": "b", "temp": 1}', "g": "g2"},
    ]
    spec = gen_spec(
        data={"source": pairs_file(tmp_path, good + bad), "group_column": "g"},
        curation={"near_duplicates": {"enabled": False}},
        generation={"output": "json", "json_schema": TOY_SCHEMA, "max_prompt_tokens": 128},
    )
    store = LocalStore(tmp_path / "store")
    ds = curate(spec, store)
    assert ds.quarantined == {
        "conflicting-responses": 2,
        "empty-response": 1,
        "invalid-json": 2,
        "prompt-too-long": 1,
        "schema-mismatch": 2,
    }
    assert ds.changed == {"json-normalized": 1, "pii": 1}
    splits = {s: load_split(store, "g", ds.version, s) for s in ("train", "validation", "test")}
    groups = {s: set(df["g"]) for s, df in splits.items()}
    assert not (groups["train"] & groups["test"]) and not (groups["train"] & groups["validation"])
    kept = pd.concat(splits.values())
    redacted = kept[kept["text"].str.contains("<EMAIL>")]
    assert json.loads(redacted["response"].item()) == {"city": "<EMAIL>", "temp": 4}  # redacted on both sides
    card = store.get_bytes(f"datasets/g/{ds.version}/DATASET.md").decode()
    assert "| schema-mismatch | 2 | 0 |" in card and "Length of the response" in card


def test_scores_exact_match_fields_validity_and_paired_test():
    spec = gen_spec(evaluation={"bootstrap_resamples": 200, "slices": []})
    refs = [json.dumps({"city": c, "temp": t}) for c, t in [("Oslo", 3), ("Rome", 20), ("Lima", 15), ("Cairo", 30)]]
    test = pd.DataFrame({"text": ["a", "b", "c", "d"], "response": refs})
    answers_ = ['{"temp": 3, "city": "oslo"}', 'Sure! {"city": "Rome", "temp": 21}', "no idea", '{"city": "Cairo"}']
    s = scoring.score(spec, "challenger", "m", Outputs(predictions=answers_), test)
    assert s.value("exact_match") == 0.25  # key order and case do not matter
    assert s.value("schema_valid") == 0.5  # "Cairo" lacks temp; text around JSON is tolerated when parsing
    # fields right: 2 + 1 + 0 + 1 = 4 of 5 predicted and 8 expected
    assert s.value("field_precision") == pytest.approx(4 / 5) and s.value("field_recall") == pytest.approx(4 / 8)
    assert s.metrics["field_f1"].ci[0] <= s.value("field_f1") <= s.metrics["field_f1"].ci[1]
    assert s.per_label["temp"].support == 4 and s.per_label["city"].recall.value == 0.75
    same = scoring.paired_test(spec, refs, Outputs(predictions=refs), Outputs(predictions=refs))
    assert same.p_value == 1.0
    worse = scoring.paired_test(spec, refs * 5, Outputs(predictions=refs * 5), Outputs(predictions=["{}"] * 20))
    assert worse.a_wins == 20 and worse.p_value < 0.001
    assert scoring.chrf("the cat sat", "the cat sat") == 1.0 and scoring.chrf("xyz", "the cat") == 0.0


def test_json_answers_are_found_and_checked():
    assert answers.parse_json('```json\n{"a": 1}\n```') == {"a": 1}
    assert answers.parse_json('Here you go: {"a": 1} hope it helps') == {"a": 1}
    assert answers.parse_json("[1]") is None and answers.parse_json("nope") is None
    assert answers.schema_error({"city": "x"}, TOY_SCHEMA) == "(top): 'temp' is a required property"
    assert answers.valid('{"city": "x", "temp": 2}', TOY_SCHEMA)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_tiny_generative_specialist_end_to_end(tmp_path, fleet_home):
    """Curate, fine-tune SmolLM2 with LoRA, judge against the base model zero-shot and one-shot, register,
    then answer through the registered pyfunc; the status leaderboard lists every contender."""
    import mlflow
    from mlflow import MlflowClient

    from conftest import write_toy_generation
    from fleet.ops.leaderboard import fleet_status
    from flows.fleet_run import fleet_flow

    [row] = fleet_flow(fleet_file=str(write_toy_generation(tmp_path / "f")))
    assert row.status == "trained" and row.metric == "field_f1" and row.version == "1"
    assert row.scores["challenger"] >= 0.8  # learned the format on phrasings it never saw
    version = MlflowClient().get_model_version("extract", "1")
    assert version.tags["task"] == "text-generation" and version.tags["base_model"] == "smollm2-135m"
    record = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/decision/record.json")
    scores = {b["model"]: b["metrics"]["field_f1"]["value"] for b in record["baselines"]}
    assert set(scores) == {"zero-shot smollm2-135m", "1-shot smollm2-135m"}
    assert row.scores["challenger"] > scores["zero-shot smollm2-135m"]
    chal = record["contenders"]["challenger"]
    assert {"exact_match", "field_f1", "schema_valid", "chrf"} <= set(chal["metrics"]) and chal["cost"][
        "tokens_per_s"
    ] > 0
    assert record["paired_tests"]["vs_baseline"]["test"] == "paired permutation"

    model = mlflow.pyfunc.load_model("models:/extract@champion")
    frame = model.predict(["Right now Madrid has 25 degrees."])
    assert list(frame.columns[:1]) == ["output"] and isinstance(frame["output"][0], str)
    [status] = fleet_status(["extract"])
    assert status.metric == "field_f1" and len(status.baselines) == 2 and status.champion.ci is not None
    from fleet.stages import registry

    registered = registry.download_model_dir("extract", "1", str(tmp_path / "v1"))
    assert (tmp_path / "v1").exists() and (Path(registered) / "adapter.gguf").stat().st_size < 5_000_000
    _export_gguf(tmp_path)


def _export_gguf(tmp_path):
    """`fleet export extract --gguf DIR`: base and adapter as GGUF, a llama-server command line, parity."""
    from typer.testing import CliRunner

    from cli.main import app

    dest = tmp_path / "gguf"
    result = CliRunner().invoke(app, ["export", "extract", "--gguf", str(dest), "--quant", "q8_0"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # the console wraps long lines
    assert "exported for llama.cpp" in said and "answers that differ from transformers' on" in said
    names = {p.name for p in dest.iterdir()}
    assert {"extract.lora.gguf", "llama-server.sh", "system-prompt.txt", "gguf-export.json"} <= names
    assert any(n.startswith("smollm2-135m-") and n.endswith("-q8_0.gguf") for n in names)
    assert (dest / "extract.lora.gguf").stat().st_size < 5_000_000
    script = (dest / "llama-server.sh").read_text()
    assert '--host "${HOST:-127.0.0.1}"' in script and "--api-key" in script and "--lora extract.lora.gguf" in script
    again = CliRunner().invoke(app, ["export", "extract", "--gguf", str(dest)])  # an earlier export: replaced
    assert again.exit_code == 0, again.output
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    refused = CliRunner().invoke(app, ["export", "extract", "--gguf", str(tmp_path / "other")])
    assert refused.exit_code == 2 and (tmp_path / "other" / "keep.txt").read_text() == "mine"


def test_group_split_keeps_groups_whole_and_spreads_rows_without_a_group():
    import pandas as pd

    from fleet.core.sections import SplitSpec
    from fleet.data.splitting import group_split

    rows = pd.DataFrame({"text": [f"t{i}" for i in range(200)], "template": [f"g{i % 20}" for i in range(200)]})
    alone = group_split(rows, SplitSpec(), "template")
    feedback = pd.DataFrame({"text": [f"f{i}" for i in range(40)], "template": [None] * 40})
    both = group_split(pd.concat([rows, feedback], ignore_index=True), SplitSpec(), "template")
    for s in ("train", "validation", "test"):
        groups = set(both[s]["template"].dropna())
        assert groups == set(alone[s]["template"])  # feedback moves no group to another split
        assert all(not groups & set(both[o]["template"].dropna()) for o in ("train", "validation", "test") if o != s)
    assert len(both["train"]) - len(alone["train"]) > 20  # most feedback rows train
    assert sum(len(both[s]) for s in both) == 240


def test_a_warning_names_max_new_tokens_when_training_answers_are_longer():
    from fleet.kinds.generation.train import cut_answers
    from fleet.models import base_models

    spec = gen_spec(generation={"max_new_tokens": 8})
    tokenizer = base_models.load_tokenizer("smollm2-135m")
    short = chat_template.example(tokenizer, None, "Say hi.", "Hi.", 512)
    long = chat_template.example(tokenizer, None, "Count.", "one two three four five six seven eight nine ten", 512)
    assert cut_answers(spec, [short]) is None
    warning = cut_answers(spec, [short, long])
    answer_tokens = sum(x != -100 for x in long["labels"])
    assert answer_tokens > 8
    assert warning is not None and "specialists.g.generation.max_new_tokens is 8" in warning
    assert f"1 of 2 training answers are longer (the longest {answer_tokens} tokens" in warning


@pytest.mark.parametrize("answer", ["```" + " " * 100_000 + "x", "```json" + " " * 100_000, " " * 100_000 + "}"])
def test_answer_parsing_is_linear_in_the_answers_length(answer):
    """A lazy fence pattern between runs of spaces backtracked quadratically (20,000 spaces took minutes)."""
    start = time.perf_counter()
    assert answers.parse_json(answer) is None
    assert time.perf_counter() - start < 0.1
    assert answers.parse_json('```json\n{"a": 1}\n```') == {"a": 1} and answers.parse_json("```{}```") == {}
