"""Running an encoder over many texts: length-sorted batches, mean pooling, sentence embeddings.

Texts are batched in order of length, so each batch pads to a similar length (on short, varied texts
this roughly halves the work), and results come back in the callers' order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch


def batches(tokenizer: Any, texts: list[str], max_length: int, batch_size: int = 64, device: str = "cpu") -> Iterator:
    """Tokenized, padded batches of ``texts`` in their order (truncated to ``max_length`` tokens)."""
    for i in range(0, len(texts), batch_size):
        yield tokenizer(
            list(texts[i : i + batch_size]), truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        ).to(device)


def by_length(texts: list[str], batch_size: int, run: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """``run`` over batches of similar length, results put back in the order of ``texts``."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    parts = [run([texts[j] for j in order[i : i + batch_size]]) for i in range(0, len(texts), batch_size)]
    if not parts:
        return np.zeros((0, 0))
    out = np.empty((len(texts), *parts[0].shape[1:]), dtype=parts[0].dtype)
    out[order] = np.concatenate(parts)
    return out


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The average of the token vectors, ignoring padding."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def embed(
    tokenizer: Any, model: Any, texts: list[str], max_length: int = 128, batch_size: int = 64, normalize: bool = True
) -> np.ndarray:
    """Mean-pooled sentence embeddings (L2-normalised: the sentence-transformers recipe)."""

    def run(batch: list[str]) -> np.ndarray:
        enc = tokenizer(batch, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        with torch.inference_mode():
            pooled = mean_pool(model(**enc).last_hidden_state, enc["attention_mask"])
        return (torch.nn.functional.normalize(pooled, dim=-1) if normalize else pooled).numpy()

    if not texts:
        return np.zeros((0, model.config.hidden_size), dtype=np.float32)
    return by_length(list(texts), batch_size, run)
