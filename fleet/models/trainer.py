"""What every kind's fine-tuning shares: transformers' Trainer settings, checkpoints and resuming.

Checkpoints go to ``RUN_DIR/checkpoints``; an interrupted run resumes from the last one. The
Trainer runs on accelerate, so the same code trains on one CPU, one GPU, or several GPUs under
``accelerate launch`` / ``torchrun`` (where each process trains on its share of each batch).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fleet.core.sections import TrainSpec
from fleet.models import device


def training_args(cfg: TrainSpec, run_dir: Path, examples: int, progress: bool, **extra: Any) -> Any:
    from fleet.models.base_models import ml_imports

    ml_imports()
    from transformers import TrainingArguments

    steps_per_epoch = math.ceil(examples / cfg.batch_size)
    return TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
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
        **device.current().training_flags(),  # cpu, or the GPU with bf16 / fp16 (fleet.models.device)
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        label_names=["labels"],
        **extra,
    )


def last_checkpoint(run_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    out = run_dir / "checkpoints"
    return get_last_checkpoint(str(out)) if out.is_dir() else None


def train(trainer: Any, run_dir: Path) -> tuple[dict, str | None]:
    """Run (or resume) training; returns the Trainer's metrics and the checkpoint it resumed from."""
    resume = last_checkpoint(run_dir)
    out = trainer.train(resume_from_checkpoint=resume)
    return dict(out.metrics), resume


def is_main_process() -> bool:
    """False only in the non-zero ranks of a distributed launch (`accelerate launch`, torchrun)."""
    return int(os.environ.get("RANK", "0")) == 0


def trainable_counts(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return int(trainable), int(sum(p.numel() for p in model.parameters()))


def cpu_threads(wanted: int | None) -> int:
    """``wanted``, or the cores this process may use."""
    if wanted:
        return wanted
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def fixed_threads(wanted: int | None) -> Iterator[int]:
    """torch's intra-op threads set to ``cpu_threads(wanted)`` for a fine-tune, restored after it.

    On CPU the same data and settings then give the same bits whatever ran the fine-tune (threads, Dask
    workers, a deployment run); what still differs is listed in the README (GPU kernels, other machines).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(cpu_threads(wanted))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def environment(threads: int) -> dict[str, str]:
    """What a fine-tune's bits depend on besides data and settings: library versions, threads, device."""
    import peft
    import torch
    import transformers

    where = device.current()
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "torch_threads": str(threads),
        "device": where.name,  # "cpu", or the GPU's name
    }
