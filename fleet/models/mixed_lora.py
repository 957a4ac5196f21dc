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


def _stack(layer: Any) -> tuple[dict[str, int], torch.Tensor, torch.Tensor]:
    """The layer's adapters stacked, ready to multiply (built again when its adapters change): ``A``
    transposed (adapters x in x r) and ``B`` transposed with its scaling folded in (adapters x r x out);
    the last slot is zeros."""
    names = list(layer.lora_A.keys())
    key = tuple((n, id(layer.lora_A[n].weight), id(layer.lora_B[n].weight)) for n in names)
    cached = getattr(layer, "_fleet_stack", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    rank = max(layer.lora_A[n].weight.shape[0] for n in names)
    a_in, b_out = layer.lora_A[names[0]].weight.shape[1], layer.lora_B[names[0]].weight.shape[0]
    dtype = layer.lora_A[names[0]].weight.dtype
    a = torch.zeros(len(names) + 1, a_in, rank, dtype=dtype)
    b = torch.zeros(len(names) + 1, rank, b_out, dtype=dtype)
    for i, n in enumerate(names):
        r = layer.lora_A[n].weight.shape[0]
        a[i, :, :r] = layer.lora_A[n].weight.detach().T
        b[i, :r] = layer.lora_B[n].weight.detach().T * layer.scaling[n]
    stacked = ({n: i for i, n in enumerate(names)}, a, b)
    layer._fleet_stack = (key, stacked)
    return stacked


def _gathered(self: Any, x: torch.Tensor, *args: Any, adapter_names: list[str], **kwargs: Any) -> torch.Tensor:
    from peft.tuners.lora.layer import VARIANT_KWARG_KEYS

    variant = {k: kwargs.pop(k, None) for k in VARIANT_KWARG_KEYS}  # LoRA variants (aLoRA, DoRA): peft's loop
    if self.training or x.dim() != 3 or self.lora_variant or any(v is not None for v in variant.values()):
        return type(self)._mixed_batch_forward(self, x, *args, adapter_names=adapter_names, **variant, **kwargs)
    result = self.base_layer(x, *args, **kwargs)
    index, a, b = _stack(self)
    slots = [index.get(n, len(index)) for n in adapter_names]
    if len(set(slots)) == 1:  # one adapter for the whole batch: two plain products
        delta = torch.matmul(torch.matmul(x.to(a.dtype), a[slots[0]]), b[slots[0]])
    else:
        rows = torch.tensor(slots)
        delta = torch.bmm(torch.bmm(x.to(a.dtype), a[rows]), b[rows])  # rows x tokens x r, then x out
    return result.add_(delta.to(result.dtype))


def _routed(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """The layer's forward; inside :func:`forward`, with each row's adapter set by it."""
    rows = self.__dict__.get("_fleet_rows")
    if rows is not None and "adapter_names" not in kwargs:
        return _gathered(self, x, *args, adapter_names=rows, **kwargs)
    return type(self).forward(self, x, *args, **kwargs)


def install(model: Any) -> Any:
    """Make every LoRA linear layer of the peft ``model`` answer mixed batches by gathering (in place)."""
    from peft.tuners.lora.layer import Linear

    layers = []
    for module in model.modules():
        if isinstance(module, Linear):
            module._mixed_batch_forward = types.MethodType(_gathered, module)  # type: ignore[method-assign]
            module.forward = types.MethodType(_routed, module)  # type: ignore[method-assign]
            layers.append(module)
    model._fleet_lora_layers = layers
    return model


def forward(model: Any, adapter_names: list[str], **inputs: Any) -> Any:
    """``model(**inputs, adapter_names=adapter_names)`` for a model made ready by :func:`install`, without
    peft's hooks: on every call peft walks all the model's modules to hook its LoRA layers (9 ms of a
    90 ms int8 batch of 32 here); the layers :func:`install` found are given the rows directly."""
    layers = model._fleet_lora_layers
    for layer in layers:
        layer._fleet_rows = adapter_names
    try:
        return model.get_base_model()(**inputs)
    finally:
        for layer in layers:
            layer._fleet_rows = None
