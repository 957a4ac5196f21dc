"""LoRA supervised fine-tuning of a small causal language model (peft, ``TaskType.CAUSAL_LM``).

Every example is rendered with the base model's chat template and the specialist's system prompt;
the loss is on the response tokens only. The saved model is the adapter alone (a few MB) with a
``fleet.json`` naming its base and its generation settings: it loads on top of the shared base.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from fleet.core.spec import SpecialistSpec
from fleet.kinds.base import Fit
from fleet.kinds.generation.chat_template import example
from fleet.kinds.generation.record import GeneratorRecord
from fleet.kinds.generation.spec import generation_of
from fleet.models import base_models, base_store, cache, gguf_export, trainer

log = logging.getLogger("fleet.stages.training")


def _lora(spec: SpecialistSpec, model: Any) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model

    names = {n.split(".")[-1] for n, _ in model.named_modules()}
    cfg = spec.train.lora
    missing = [m for m in cfg.target_modules if m not in names]
    if missing:
        raise base_models.TrainingError(
            f"specialists.{spec.name}.train.lora.target_modules: {', '.join(missing)} not found in {spec.base_model} "
            "(causal language models name them q_proj, k_proj, v_proj, o_proj, ...)"
        )
    return get_peft_model(
        model,
        LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=cfg.r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=list(cfg.target_modules),
            modules_to_save=list(cfg.modules_to_save) or None,
        ),
    )


def meta(spec: SpecialistSpec, max_length: int) -> GeneratorRecord:
    """What a saved adapter needs to answer: its base and the generation settings it was trained with."""
    g = generation_of(spec)
    return GeneratorRecord(
        task=spec.task,
        base_model=spec.base_model,
        base_digest=base_store.digest(spec.base_model),
        system=g.system,
        output=g.output,
        json_schema=g.json_schema,
        max_new_tokens=g.max_new_tokens,
        batch_size=g.batch_size,
        max_length=max_length,
        max_prompt_tokens=g.max_prompt_tokens,
        engine=g.engine,
        gguf_quant=g.gguf_quant,
    )


def cut_answers(spec: SpecialistSpec, rows: list[dict]) -> str | None:
    """A warning when ``generation.max_new_tokens`` is shorter than some training answers (with their end
    token): the model learns to write them but could only write their start, cut mid-answer."""
    lengths = [sum(x != -100 for x in r["labels"]) for r in rows]
    limit = generation_of(spec).max_new_tokens
    longer = sum(n > limit for n in lengths)
    if not longer:
        return None
    return (
        f"specialists.{spec.name}.generation.max_new_tokens is {limit}, but {longer} of {len(rows)} training "
        f"answers are longer (the longest {max(lengths)} tokens with its end token): such answers will be cut "
        f"when generated; set it to at least {max(lengths)}"
    )


def save(model: Any, spec: SpecialistSpec, folder: Path, max_length: int) -> None:
    """The adapter (peft's files, and the same adapter as a GGUF LoRA file for llama.cpp) and its record."""
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(str(folder))  # adapter_config.json + adapter_model.safetensors
    record = meta(spec, max_length)
    if record.engine == "llama-cpp":
        _save_gguf(spec, folder, record.base_ref()[1])
    record.write(folder)


def _save_gguf(spec: SpecialistSpec, folder: Path, base_digest: str) -> None:
    try:
        base = base_models.resolve_base_model(spec.base_model)
        gguf_export.write_adapter(folder, base, folder / gguf_export.ADAPTER_FILE, base_digest)
    except gguf_export.GgufError as exc:
        raise base_models.TrainingError(
            f"{spec.name}: the adapter could not be converted to GGUF for llama.cpp ({exc}); "
            "set generation.engine: transformers to serve it without llama.cpp"
        ) from None


def fine_tune(spec: SpecialistSpec, train: pd.DataFrame, run_dir: Path, progress: bool = True) -> Fit:
    """Train the adapter on ``train`` (columns ``text`` and ``response``) and save it under ``run_dir/model``."""
    base_models.ml_imports()
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, Trainer, set_seed

    tokenizer, model = cache.trainable(spec.base_model, is_causal=True)
    set_seed(spec.train.seed)
    limit = generation_of(spec).max_prompt_tokens + generation_of(spec).max_response_tokens + 1
    rows = [
        example(tokenizer, generation_of(spec).system, p, r, limit) for p, r in zip(train["text"], train["response"])
    ]
    if (warning := cut_answers(spec, rows)) is not None:
        log.warning(warning)
    model = _lora(spec, model)
    trainable, total = trainer.trainable_counts(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    args = trainer.training_args(spec.train, run_dir, len(rows), progress, train_sampling_strategy="group_by_length")
    collate = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True)
    t = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows), data_collator=collate)
    metrics, resumed = trainer.train(t, run_dir)
    max_length = max(len(r["input_ids"]) for r in rows)
    if t.is_world_process_zero():
        save(model, spec, run_dir / "model", max_length)
    t.accelerator.wait_for_everyone()
    return Fit.from_trainer(metrics, len(rows), max_length, (trainable, total), resumed, int(args.world_size))
