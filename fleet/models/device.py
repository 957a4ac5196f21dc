"""Where the fleet's models run, decided in one place: the device (cuda, mps, cpu) and the training dtype.

- CUDA: bf16 mixed precision where the GPU supports it, else fp16 (transformers' Trainer then scales the
  loss with a gradient scaler); inference on the GPU.
- Apple silicon (MPS): fp32 (mixed precision on MPS is not reliable across torch versions).
- CPU: fp32 (bf16 is slower than fp32 on most CPUs).

Training (the Trainer's flags), evaluation (which price a measured second costs: ``price_per_gpu_hour`` on a
GPU), the classifiers' predictors, the ``hf-zero-shot`` pipeline and llama.cpp's layer offload all ask
:func:`current`. :func:`choose` takes a :class:`Capability`, so the choice is tested with a capability faked;
the GPU path has not been run on real hardware here (no GPU on these machines).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any


@dataclass(frozen=True)
class Capability:
    """What this machine offers torch."""

    cuda: bool = False
    cuda_bf16: bool = False
    mps: bool = False
    name: str = "cpu"


@dataclass(frozen=True)
class Placement:
    device: str  # cuda | mps | cpu
    dtype: str  # bf16 | fp16 | fp32: the training precision
    name: str  # what the device is, for a version's environment tags

    @property
    def gpu(self) -> bool:
        return self.device != "cpu"

    def training_flags(self) -> dict[str, Any]:
        """transformers ``TrainingArguments`` flags (fp16 on CUDA trains with a gradient scaler)."""
        return {"use_cpu": self.device == "cpu", "bf16": self.dtype == "bf16", "fp16": self.dtype == "fp16"}

    @property
    def pipeline_device(self) -> int | str:
        """transformers ``pipeline(device=...)``: the first GPU, ``mps``, or -1 for the CPU."""
        if self.device == "cuda":
            return 0
        return "mps" if self.device == "mps" else -1


def probe() -> Capability:
    import torch

    if torch.cuda.is_available():
        return Capability(cuda=True, cuda_bf16=torch.cuda.is_bf16_supported(), name=torch.cuda.get_device_name(0))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return Capability(mps=True, name="mps")
    return Capability()


def choose(cap: Capability) -> Placement:
    if cap.cuda:
        return Placement("cuda", "bf16" if cap.cuda_bf16 else "fp16", cap.name)
    if cap.mps:
        return Placement("mps", "fp32", cap.name)
    return Placement("cpu", "fp32", "cpu")


@lru_cache(maxsize=1)
def current() -> Placement:
    """This process's placement (probed once)."""
    return choose(probe())
