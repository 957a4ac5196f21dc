"""A saved classifier answering texts: labels and probabilities."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from fleet.core.results import Outputs
from fleet.models import base_models, base_store, cache
from fleet.models.device import current as current_device
from fleet.models.encoders import by_length


def dir_size(path: str | Path | None) -> int | None:
    if not path or not Path(path).is_dir():
        return None
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


class TextClassifier:
    """A saved specialist model: texts in, labels and probabilities out."""

    def __init__(self, model_dir: str | Path, device: str | None = None, name: str = "specialist"):
        base_models.ml_imports()
        from transformers import AutoTokenizer

        from fleet.kinds.classification.model import load_classifier
        from fleet.kinds.classification.record import ClassifierRecord

        model_dir = Path(model_dir)
        self.name = name
        if (model_dir / "config.json").is_file():  # a full model (saved before versions became adapters)
            self.tokenizer, encoder = AutoTokenizer.from_pretrained(str(model_dir)), None
        else:
            folder = base_store.locate_for(ClassifierRecord.read(model_dir))
            self.tokenizer, shared_encoder = cache.encoder(folder)
            encoder = copy.deepcopy(shared_encoder)
        self.model, meta = load_classifier(model_dir, encoder)
        self.labels: list[str] = meta.labels
        self.max_length: int = meta.max_length
        self.device = device or current_device().device
        self.model.to(self.device)
        self.size_bytes = dir_size(model_dir)
        self.identity = f"classifier {base_store.version_digest(model_dir)} {self.device}"  # what its answers depend on

    def parameters(self) -> int | None:
        return sum(p.numel() for p in self.model.parameters())

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        import torch

        def run(batch: list[str]) -> np.ndarray:
            enc = self.tokenizer(
                batch, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt"
            ).to(self.device)
            with torch.inference_mode():
                return torch.softmax(self.model(**enc).logits.float(), dim=-1).cpu().numpy()

        if not texts:
            return np.zeros((0, len(self.labels)))
        return by_length(list(texts), batch_size, run)

    def predict(self, inputs: list[str]) -> Outputs:
        probs = self.predict_proba(inputs)
        return Outputs(predictions=[self.labels[int(i)] for i in probs.argmax(axis=1)], probabilities=probs.tolist())

    def classify(self, texts: list[str]) -> list[tuple[str, float]]:
        """(label, probability of that label) per text."""
        probs = self.predict_proba(texts)
        return [(self.labels[int(i)], float(p[int(i)])) for p, i in zip(probs, probs.argmax(axis=1))]
