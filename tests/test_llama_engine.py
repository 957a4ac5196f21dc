"""llama.cpp as the engine of generative specialists: GGUF files written from the fleet's own base and peft
adapters (``fleet.models.gguf_export``), answered by ``fleet.models.llama_engine``, compared token for token
with transformers + peft on the same prompts."""

from __future__ import annotations

import json

import pytest

from fleet.models import gguf_export
from fleet.models.gguf_export import GgufError


@pytest.fixture(scope="module")
def smollm(tmp_path_factory):
    """SmolLM2's transformers folder, its f16 GGUF, and a random LoRA adapter (q, k and v) on it, in GGUF too."""
    import torch
    from peft import LoraConfig, get_peft_model

    from fleet.models import base_store, cache

    root = tmp_path_factory.mktemp("llama")
    mp = pytest.MonkeyPatch()
    mp.setenv("FLEET_HOME", str(root / "home"))
    folder = base_store.resolve_base_model("smollm2-135m")
    digest = base_store.digest("smollm2-135m")
    tokenizer, base = cache.causal(folder)
    torch.manual_seed(0)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj"], init_lora_weights=False)
    tuned = get_peft_model(__import__("copy").deepcopy(base), config)
    for name, p in tuned.named_parameters():
        if "lora_B" in name:
            p.data.mul_(0.05)  # a noticeable change of the answers, far from ties
    tuned.save_pretrained(str(root / "adapter"))
    gguf = gguf_export.write_base(folder, root / "base.gguf", digest)
    adapter = gguf_export.write_adapter(root / "adapter", folder, root / "adapter.gguf", digest)
    yield {
        "root": root,
        "folder": folder,
        "digest": digest,
        "tokenizer": tokenizer,
        "base": base,
        "tuned": tuned.merge_and_unload().eval(),
        "gguf": gguf,
        "adapter": adapter,
    }
    mp.undo()


PROMPTS = ["Name three colours.", "What is 2 + 2?", "Write a JSON object with a key a and the value 1."]


def _greedy(tokenizer, model, n: int) -> list[list[int]]:
    import torch

    from fleet.kinds.generation.chat_template import messages, render

    out = []
    for p in PROMPTS:
        ids = tokenizer(render(tokenizer, messages(None, p)), return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            seq = model.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        out.append(seq[0, ids["input_ids"].shape[1] :].tolist())
    return out


@pytest.mark.slow
def test_llama_cpp_answers_as_transformers_does_with_and_without_the_adapter(smollm):
    from fleet.kinds.generation.chat_template import messages, render
    from fleet.models.llama_engine import LlamaBase

    tok, n = smollm["tokenizer"], 12
    engine = LlamaBase(smollm["gguf"], slots=2)
    engine.add_adapter("random", smollm["adapter"])
    ids = [tok(render(tok, messages(None, p)), add_special_tokens=False)["input_ids"] for p in PROMPTS]
    eos = [tok.eos_token_id]
    bare, tuned = engine.generate(ids, n, eos), engine.generate(ids, n, eos, "random")
    assert bare == _greedy(tok, smollm["base"], n)
    assert tuned == _greedy(tok, smollm["tuned"], n)  # q/k rows permuted as llama.cpp lays them out
    assert tuned != bare  # the adapter is applied, and only when asked for
    assert engine.generate(ids, n, eos) == bare
    first = engine.next_token_logits(ids + ids[:1]).argmax(axis=1).tolist()  # more prompts than slots
    assert first == [a[0] for a in bare + bare[:1]]
    assert engine.next_token_logits(ids, "random").argmax(axis=1).tolist() == [a[0] for a in tuned]
    assert smollm["adapter"].stat().st_size < 5_000_000
    q8 = gguf_export.write_base(smollm["folder"], smollm["root"] / "base-q8.gguf", smollm["digest"], "q8_0")
    assert q8.stat().st_size < 0.6 * smollm["gguf"].stat().st_size
    assert gguf_export.read_digest(q8) == smollm["digest"]
    engine.close()


@pytest.mark.slow
def test_an_adapter_made_for_another_base_is_refused(smollm):
    from fleet.models.llama_engine import LlamaBase

    other = gguf_export.write_adapter(
        smollm["root"] / "adapter", smollm["folder"], smollm["root"] / "other.gguf", "0123456789abcdef01234567"
    )
    engine = LlamaBase(smollm["gguf"], slots=1)
    with pytest.raises(GgufError, match=r"made for base 0123456789abcdef01234567, but the loaded base is"):
        engine.add_adapter("other", other)
    assert engine.adapters == {}
    with pytest.raises(GgufError, match="is not loaded"):
        engine.generate([[1, 2, 3]], 2, [2], "other")
    engine.close()


def test_what_cannot_be_converted_is_refused_with_its_reason(tmp_path):
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(GgufError, match="a BertModel model; GGUF export supports Llama-family bases"):
        gguf_export.write_base(bert, tmp_path / "x.gguf", "d")
    with pytest.raises(GgufError, match="choose one of f16, q8_0, q4_k_m"):
        gguf_export.write_base(bert, tmp_path / "x.gguf", "d", "q2")
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 1}))
    with pytest.raises(GgufError, match="no readable peft adapter"):
        gguf_export.write_adapter(tmp_path / "missing", llama, tmp_path / "a.gguf", "d")
    assert not list(tmp_path.glob("*.gguf*"))  # nothing half-written is left
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file")
    with pytest.raises(GgufError, match="not a readable GGUF file"):
        gguf_export.read_digest(tmp_path / "junk.gguf")


@pytest.mark.slow
def test_a_gguf_file_is_a_contender_with_its_own_tokenizer_and_chat_template(smollm):
    """The base's GGUF file named as a ``gguf`` contender answers as the base model does through the fleet's
    own tokenizer and template (llama.cpp tokenizes and renders the chat itself here)."""
    import pandas as pd

    from fleet.core.sections import BaselineSpec
    from fleet.kinds import parse_fleet
    from fleet.kinds.generation.baselines import GgufModel, PromptedBase

    raw = {"task": "text-generation", "data": {"source": "x.jsonl"}, "generation": {"system": "Answer briefly."}}
    spec = parse_fleet({"specialists": {"g": raw}}).specialists["g"]
    none = pd.DataFrame({"text": [], "response": []})
    contender = GgufModel(spec, BaselineSpec(kind="gguf", model=str(smollm["gguf"])), none)
    assert contender.name == f"zero-shot {smollm['gguf']}" and contender.parameters() > 100_000_000
    ours = PromptedBase(spec, BaselineSpec(kind="base-model"), none)
    assert ours.llama is not None  # the default engine
    a, b = contender.predict(PROMPTS), ours.predict(PROMPTS)
    assert a.predictions == b.predictions and all(a.predictions)
    with pytest.raises(Exception, match=r"not an alias .* or a \.gguf file"):
        GgufModel(spec, BaselineSpec(kind="gguf", model="no-such-model"), none)
