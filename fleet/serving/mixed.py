"""Mixed-adapter batches in two matrix products per layer, whatever the number of adapters in the batch.

peft answers ``adapter_names`` (one adapter per row) by looping over the distinct adapters of the batch:
for each, it copies out that adapter's rows, runs them through its LoRA matrices and adds the result
back, so a batch of 32 rows for 32 specialists costs 32 small passes per adapted layer. Here every
adapter's LoRA matrices are stacked once (``A``: adapters x r x in, ``B``: adapters x out x r, ranks
padded with zeros, which adds nothing) and each row gathers its own: one batched product through ``A``,
one through ``B`` (the "gather, then batched matmul" of punica's BGMV kernel, which LoRAX uses on GPUs).
Rows of ``__base__`` (or of an adapter a layer lacks) gather zeros: the base model's answer.
"""

from __future__ import annotations

import types
from typing import Any

import torch


def _stack(layer: Any) -> tuple[dict[str, int], torch.Tensor, torch.Tensor, torch.Tensor]:
    """The layer's adapters stacked (built again when its adapters change); the last slot is zeros."""
    names = list(layer.lora_A.keys())
    key = tuple((n, id(layer.lora_A[n].weight), id(layer.lora_B[n].weight)) for n in names)
    cached = getattr(layer, "_fleet_stack", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    rank = max(layer.lora_A[n].weight.shape[0] for n in names)
    a_in, b_out = layer.lora_A[names[0]].weight.shape[1], layer.lora_B[names[0]].weight.shape[0]
    dtype = layer.lora_A[names[0]].weight.dtype
    a = torch.zeros(len(names) + 1, rank, a_in, dtype=dtype)
    b = torch.zeros(len(names) + 1, b_out, rank, dtype=dtype)
    scaling = torch.zeros(len(names) + 1, dtype=dtype)
    for i, n in enumerate(names):
        r = layer.lora_A[n].weight.shape[0]
        a[i, :r], b[i, :, :r] = layer.lora_A[n].weight.detach(), layer.lora_B[n].weight.detach()
        scaling[i] = layer.scaling[n]
    stacked = ({n: i for i, n in enumerate(names)}, a, b, scaling)
    layer._fleet_stack = (key, stacked)
    return stacked


def _gathered(self: Any, x: torch.Tensor, *args: Any, adapter_names: list[str], **kwargs: Any) -> torch.Tensor:
    from peft.tuners.lora.layer import VARIANT_KWARG_KEYS

    variant = {k: kwargs.pop(k, None) for k in VARIANT_KWARG_KEYS}  # LoRA variants (aLoRA, DoRA): peft's loop
    if self.training or x.dim() != 3 or self.lora_variant or any(v is not None for v in variant.values()):
        return type(self)._mixed_batch_forward(self, x, *args, adapter_names=adapter_names, **variant, **kwargs)
    result = self.base_layer(x, *args, **kwargs)
    index, a, b, scaling = _stack(self)
    rows = torch.tensor([index.get(n, len(index)) for n in adapter_names])
    hidden = torch.bmm(x.to(a.dtype), a[rows].transpose(1, 2))  # rows x tokens x r
    delta = torch.bmm(hidden, b[rows].transpose(1, 2)) * scaling[rows].view(-1, 1, 1)
    return result + delta.to(result.dtype)


def install(model: Any) -> Any:
    """Make every LoRA linear layer of the peft ``model`` answer mixed batches by gathering (in place)."""
    from peft.tuners.lora.layer import Linear

    for module in model.modules():
        if isinstance(module, Linear):
            module._mixed_batch_forward = types.MethodType(_gathered, module)  # type: ignore[method-assign]
    return model
