"""What every kind's fine-tuning shares: transformers' Trainer settings, checkpoints and resuming.

Checkpoints go to ``RUN_DIR/checkpoints``; an interrupted run resumes from the last one. Under ``mirrored``
each checkpoint is also handed to a mirror as it is written (the stage keeps them in the object store), and a
run without a local checkpoint resumes from the mirror's: a retry on another machine goes on where the
stopped one was. The
Trainer runs on accelerate, so the same code trains on one CPU, one GPU, or several GPUs under
``accelerate launch`` / ``torchrun`` (where each process trains on its share of each batch).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

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


class CheckpointMirror(Protocol):
    """Where checkpoints are kept besides this machine's run folder."""

    def save(self, folder: Path, step: int) -> None: ...

    def fetch(self, checkpoints: Path) -> str | None:
        """The newest mirrored checkpoint, fetched into ``checkpoints``; None when there is none."""
        ...


_MIRROR: contextvars.ContextVar[CheckpointMirror | None] = contextvars.ContextVar("fleet_checkpoints", default=None)


@contextlib.contextmanager
def mirrored(mirror: CheckpointMirror) -> Iterator[None]:
    """Fine-tunes started in this context hand each checkpoint to ``mirror`` and resume from its newest."""
    token = _MIRROR.set(mirror)
    try:
        yield
    finally:
        _MIRROR.reset(token)


def _mirror_callback(mirror: CheckpointMirror) -> Any:
    from transformers import TrainerCallback

    class Mirror(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                mirror.save(Path(args.output_dir) / f"checkpoint-{state.global_step}", state.global_step)

    return Mirror()


def train(trainer: Any, run_dir: Path) -> tuple[dict, str | None]:
    """Run (or resume) training; returns the Trainer's metrics and the checkpoint it resumed from."""
    mirror = _MIRROR.get()
    resume = last_checkpoint(run_dir)
    if resume is None and mirror is not None and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        resume = mirror.fetch(run_dir / "checkpoints")  # (ranks of a distributed launch share the local one)
    if mirror is not None:
        trainer.add_callback(_mirror_callback(mirror))
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
