"""A classifier's serving group: the encoder base once, each specialist's adapter and head on top."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from fleet.core.results import Outputs
from fleet.kinds.classification.record import ClassifierRecord
from fleet.models import cache, mixed_lora
from fleet.models.adapter_group import AdapterGroup
from fleet.models.encoders import mean_pool


class EncoderGroup(AdapterGroup[ClassifierRecord]):
    record_type = ClassifierRecord

    def __init__(self, base_folder: str, int8: bool = False):
        super().__init__(base_folder, int8)
        self.tokenizer = cache.encoder(base_folder)[0]
        self.heads: dict[str, torch.nn.Linear] = {}

    def _base(self) -> Any:
        return copy.deepcopy(cache.encoder(self.base_folder)[1])

    def _added(self, name: str, model_dir: Path) -> None:
        from safetensors.torch import load_file

        head = load_file(str(model_dir / "classifier_head.safetensors"))
        with cache.RNG:
            layer = torch.nn.Linear(head["weight"].shape[1], head["weight"].shape[0])
        layer.load_state_dict(head)
        self.heads[name] = layer.eval()

    def run(self, rows: list[tuple[str, str]]) -> list[Outputs]:
        with torch.inference_mode():
            ids = [self.tokenizer(t, truncation=True, max_length=self.meta[a].max_length)["input_ids"] for a, t in rows]
            enc = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt")
            hidden = mixed_lora.forward(self.model, [a for a, _ in rows], **enc).last_hidden_state
            pooled = mean_pool(hidden, enc["attention_mask"])
            out = []
            for i, (a, _) in enumerate(rows):
                probs = torch.softmax(self.heads[a](pooled[i : i + 1]).float(), dim=-1)[0].tolist()
                labels = self.meta[a].labels
                out.append(
                    Outputs(predictions=[labels[max(range(len(probs)), key=probs.__getitem__)]], probabilities=[probs])
                )
            return out
