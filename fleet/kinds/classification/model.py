"""The specialist model: a transformer encoder, mean pooling, and a linear head.

Sentence encoders such as all-MiniLM-L6-v2 were trained with mean pooling; their
first-token (CLS) output carries little meaning. ``AutoModelForSequenceClassification``
classifies from that first token, so on small data it learns shortcuts (in SMS
spam: "has a phone number"). Pooling the way the encoder was trained keeps the
semantics the base model already has, and the LoRA adapter refines them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from fleet.kinds.classification.record import ClassifierRecord
from fleet.kinds.classification.spec import TASK
from fleet.models import cache
from fleet.models.encoders import mean_pool

HEAD_FILE = "classifier_head.safetensors"
ADAPTER_FILE = "adapter_model.safetensors"


class MeanPoolClassifier(nn.Module):
    """encoder -> mean pooling -> dropout -> linear; returns transformers' usual output."""

    def __init__(self, encoder: Any, num_labels: int, dropout: float = 0.1, class_weights=None):
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config  # the Trainer and peft read it
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)
        # loss weights per label (training only; not saved with the model)
        self.class_weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **_):
        kw = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kw["token_type_ids"] = token_type_ids
        hidden = self.encoder(**kw).last_hidden_state
        logits = self.classifier(self.dropout(mean_pool(hidden, attention_mask)))
        loss = None
        if labels is not None:
            w = None if self.class_weights is None else self.class_weights.to(logits.device, logits.dtype)
            loss = nn.functional.cross_entropy(logits, labels, weight=w)
        return SequenceClassifierOutput(loss=loss, logits=logits)


def save_adapter(model: Any, folder: Path, labels: list[str], max_length: int, base: dict) -> None:
    """The trained specialist as a thin layer: the encoder's LoRA adapter (a standard peft adapter of the
    bare base encoder, so any process can load it onto a shared base), the head, and ``fleet.json``
    (labels, token limit, and the base it belongs to: ``base`` has ``base_model`` and ``base_digest``)."""
    from peft import LoraConfig, get_peft_model_state_dict
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    trained = model.peft_config["default"]
    own = {
        k.replace("base_model.model.encoder.", "base_model.model.", 1): v.detach().cpu().contiguous()
        for k, v in get_peft_model_state_dict(model).items()
        if k.startswith("base_model.model.encoder.")
    }
    config = LoraConfig(
        r=trained.r, lora_alpha=trained.lora_alpha, target_modules=sorted(trained.target_modules), lora_dropout=0.0
    )
    config.save_pretrained(str(folder))
    save_file(own, str(folder / ADAPTER_FILE))
    head = model.base_model.model.classifier  # peft keeps the trained copy of the head in modules_to_save
    head = head.modules_to_save["default"] if hasattr(head, "modules_to_save") else head
    save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, str(folder / HEAD_FILE))
    ClassifierRecord(task=TASK, labels=labels, max_length=max_length, pooling="mean", **base).write(folder)


def load_classifier(folder: Path, encoder: Any) -> tuple[MeanPoolClassifier, ClassifierRecord]:
    """A saved specialist on ``encoder`` (a private copy of its base): the adapter merged, the head loaded.
    A folder written before adapters were stored (a full encoder, ``config.json``) loads as it is."""
    from safetensors.torch import load_file

    meta = ClassifierRecord.read(folder)
    with cache.RNG:  # building modules draws random numbers: not while a fine-tune runs (see cache.RNG)
        if (folder / "config.json").is_file():
            from transformers import AutoModel

            encoder = AutoModel.from_pretrained(str(folder))
        else:
            from peft import PeftModel

            encoder = PeftModel.from_pretrained(encoder, str(folder)).merge_and_unload()
        model = MeanPoolClassifier(encoder, len(meta.labels))
    model.classifier.load_state_dict(load_file(str(folder / HEAD_FILE)))
    return model.eval(), meta


def linear_probe_init(model: MeanPoolClassifier, x: Any, label_ids: list[int], balanced: bool) -> None:
    """Set the head to a logistic regression fitted on the frozen encoder's pooled embeddings ``x`` (LP-FT)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(label_ids)
    k = model.classifier.out_features
    lr = LogisticRegression(max_iter=1000, class_weight="balanced" if balanced else None).fit(x, y)
    coef = np.zeros((k, x.shape[1]), dtype=np.float32)
    bias = np.full(k, -10.0, dtype=np.float32)  # a label absent from training starts unlikely
    if len(lr.classes_) == 2:  # sklearn keeps one row for two classes: split it symmetrically
        a, b = lr.classes_
        coef[a], coef[b] = -lr.coef_[0] / 2, lr.coef_[0] / 2
        bias[a], bias[b] = -lr.intercept_[0] / 2, lr.intercept_[0] / 2
    else:
        coef[lr.classes_], bias[lr.classes_] = lr.coef_, lr.intercept_
    with torch.no_grad():
        model.classifier.weight.copy_(torch.from_numpy(coef))
        model.classifier.bias.copy_(torch.from_numpy(bias))
