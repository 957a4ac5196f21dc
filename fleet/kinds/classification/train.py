"""LoRA fine-tuning of a text classifier: base encoder + mean pooling + linear head (LP-FT).

The head is first fitted by a linear probe on the frozen encoder's embeddings, then LoRA adapters on
the encoder and the head are trained together with transformers' Trainer and peft. The saved model is
the adapter and the head (about 0.5 MB for MiniLM), naming its base by content hash.
"""

from __future__ import annotations

import math
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fleet.core.spec import SpecialistSpec
from fleet.kinds.base import Fit
from fleet.kinds.classification.model import MeanPoolClassifier, linear_probe_init, save_adapter
from fleet.models import base_models, base_store, cache, trainer
from fleet.models.base_models import TrainingError


def choose_max_length(tokenizer: Any, texts: list[str], cap: int = 256) -> int:
    """The 95th percentile of token counts, rounded up to a multiple of 8, within [16, cap]."""
    sample = texts[:2000]
    lengths = [len(ids) for ids in tokenizer(sample, add_special_tokens=True, truncation=False)["input_ids"]]
    p95 = float(np.percentile(lengths, 95)) if lengths else 16
    limit = min(cap, getattr(tokenizer, "model_max_length", cap) or cap)
    return int(max(16, min(limit, math.ceil(p95 / 8) * 8)))


def _class_weights(spec: SpecialistSpec, labels: list[str]) -> list[float] | None:
    if spec.train.class_weighting != "balanced":
        return None
    counts = Counter(labels)
    names = list(spec.labels)
    return [len(labels) / (len(names) * counts[lab]) if counts[lab] else 0.0 for lab in names]


def _check_modules(spec: SpecialistSpec, model: Any) -> None:
    names = {n.split(".")[-1] for n, _ in model.named_modules()} | {n for n, _ in model.named_modules()}
    for field, wanted in (
        ("target_modules", spec.train.lora.target_modules),
        ("modules_to_save", spec.train.lora.modules_to_save),
    ):
        missing = [m for m in wanted if m not in names]
        if missing:
            raise TrainingError(
                f"specialists.{spec.name}.train.lora.{field}: {', '.join(missing)} not found in {spec.base_model}"
            )


def _lora(spec: SpecialistSpec, model: Any) -> Any:
    from peft import LoraConfig, get_peft_model

    _check_modules(spec, model)
    cfg = spec.train.lora
    return get_peft_model(
        model,
        LoraConfig(
            r=cfg.r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=list(cfg.target_modules),
            modules_to_save=["classifier", *cfg.modules_to_save],  # the new head is trained in full
        ),
    )


def _model(spec: SpecialistSpec, texts: list[str], label_ids: list[int], labels: list[str]) -> tuple[Any, Any, int]:
    """(tokenizer, LoRA model, max length): the base copied, the head probed, adapters attached."""
    from transformers import set_seed

    tokenizer, encoder = cache.trainable(spec.base_model)
    set_seed(spec.train.seed)
    max_length = spec.train.max_length or choose_max_length(tokenizer, texts)
    model = MeanPoolClassifier(encoder, len(spec.labels), class_weights=_class_weights(spec, labels))
    if spec.train.linear_probe_init:  # embeddings of the frozen base (the shared copy has the same weights)
        features = cache.pooled(spec.base_model, texts, max_length, normalize=False, fresh=True)
        linear_probe_init(model, features, label_ids, balanced=spec.train.class_weighting == "balanced")
    return tokenizer, _lora(spec, model), max_length


def fine_tune(spec: SpecialistSpec, train: pd.DataFrame, run_dir: Path, progress: bool = True) -> Fit:
    """Train, merge the adapter, and save the model under ``run_dir/model``."""
    base_models.ml_imports()
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer

    texts, labels = train["text"].tolist(), train["label"].tolist()
    label2id = {lab: i for i, lab in enumerate(spec.labels)}
    ids = [label2id[x] for x in labels]
    tokenizer, model, max_length = _model(spec, texts, ids, labels)
    trainable, total = trainer.trainable_counts(model)
    enc = tokenizer(texts, truncation=True, max_length=max_length)
    ds = Dataset.from_dict({**enc, "labels": ids})
    args = trainer.training_args(spec.train, run_dir, len(ds), progress)
    t = Trainer(
        model=model,
        args=args,
        train_dataset=ds,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    metrics, resumed = trainer.train(t, run_dir)
    if t.is_world_process_zero():  # under `accelerate launch`, one process writes the model
        shutil.rmtree(run_dir / "model", ignore_errors=True)
        base = {"base_model": spec.base_model, "base_digest": base_store.digest(spec.base_model)}
        save_adapter(model, run_dir / "model", list(spec.labels), max_length, base)
    t.accelerator.wait_for_everyone()
    return Fit.from_trainer(metrics, len(ds), max_length, (trainable, total), resumed, int(args.world_size))
