"""Answering prompts with a causal language model: the chat template, batched greedy decoding."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from fleet import bases, basestore, shared
from fleet.cleaning import normalize_text
from fleet.kinds.classification.predict import dir_size
from fleet.kinds.generation.chat import messages, render
from fleet.results import Outputs


def generate(tokenizer: Any, model: Any, prompts: list[str], max_new_tokens: int, batch_size: int,
             adapter_names: list[str] | None = None) -> Outputs:  # fmt: skip
    """Greedy answers to already-rendered prompts, in length-sorted, left-padded batches (the rows' order kept);
    ``adapter_names`` (one per prompt) picks each row's adapter of a multi-adapter model."""
    import torch

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    texts: list[str] = [""] * len(prompts)
    counts: list[int] = [0] * len(prompts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        enc = tokenizer([prompts[i] for i in rows], return_tensors="pt", padding=True, add_special_tokens=False,
                        padding_side="left")  # fmt: skip
        extra = {"adapter_names": [adapter_names[i] for i in rows]} if adapter_names else {}
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                                 eos_token_id=tokenizer.eos_token_id, **extra)  # fmt: skip
        for i, seq in zip(rows, out[:, enc["input_ids"].shape[1] :]):
            ended = (seq == tokenizer.eos_token_id).nonzero()
            used = seq[: int(ended[0]) + 1] if len(ended) else seq
            counts[i] = len(used)
            texts[i] = tokenizer.decode(used, skip_special_tokens=True).strip()
    return Outputs(predictions=texts, tokens=counts)


class Generator:
    """A saved generative specialist: its adapter on a private copy of the shared base, merged for speed."""

    def __init__(self, model_dir: str | Path, name: str = "specialist"):
        bases.ml_imports()
        from peft import PeftModel

        self.name = name
        self.meta = json.loads((Path(model_dir) / "fleet.json").read_text())
        if self.meta.get("merged"):  # an export: a whole model, no base needed
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
            with shared.RNG:
                self.model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
        else:
            meta = self.meta
            folder = basestore.locate(meta["base_model"], meta["base_digest"], fallback=meta.get("base_uri"))
            self.tokenizer, base = shared.causal(folder)
            with shared.RNG:  # building modules draws random numbers: not while a fine-tune runs
                tuned = PeftModel.from_pretrained(copy.deepcopy(base), str(model_dir))
            self.model = tuned.merge_and_unload().eval()
        self.size_bytes = dir_size(model_dir)  # the adapter: what this version adds to its base

    def parameters(self) -> int | None:
        return sum(p.numel() for p in self.model.parameters())

    def predict(self, inputs: list[str]) -> Outputs:
        # prompts normalized as curation normalized the training prompts (NFKC, whitespace)
        rendered = [render(self.tokenizer, messages(self.meta["system"], normalize_text(p))) for p in inputs]
        return generate(self.tokenizer, self.model, rendered, self.meta["max_new_tokens"], self.meta["batch_size"])
