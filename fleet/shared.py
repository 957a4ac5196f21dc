"""Base models loaded once per process, and the embeddings they computed.

:func:`encoder` and :func:`causal` load a base once per process and hand the same frozen copy to
everyone who only reads it (the linear probe, the baselines, the drift embedder); training takes its
own copy (:func:`trainable`), copied in memory from the shared one, so a run reads the weights from disk
once. :func:`pooled` embeds texts with the shared encoder and remembers the results, so a text is
embedded once per run at a given length: the reference profile reuses the embeddings the linear
probe computed for the training texts.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from functools import lru_cache
from typing import Any

import numpy as np

from fleet.bases import TrainingError, load_tokenizer, ml_imports, resolve_base_model

_LOCK = threading.Lock()


@lru_cache(maxsize=4)
def _load(base: str, causal: bool) -> tuple[Any, Any]:
    ml_imports()
    from transformers import AutoModel, AutoModelForCausalLM

    tokenizer = load_tokenizer(base)
    try:
        model = (AutoModelForCausalLM if causal else AutoModel).from_pretrained(resolve_base_model(base))
    except OSError as exc:
        raise TrainingError(f"base model {base!r}: cannot load it ({exc})") from None
    model.eval().requires_grad_(False)
    return tokenizer, model


def encoder(base: str) -> tuple[Any, Any]:
    """(tokenizer, encoder) of ``base`` (a name or its folder), loaded once per process, frozen: for reading only."""
    folder = resolve_base_model(base)
    with _LOCK:
        return _load(folder, False)


def causal(base: str) -> tuple[Any, Any]:
    """(tokenizer, causal language model) of ``base`` (a name or its folder), loaded once per process, frozen."""
    folder = resolve_base_model(base)
    with _LOCK:
        return _load(folder, True)


def trainable(base: str, is_causal: bool = False) -> tuple[Any, Any]:
    """A private, trainable copy of ``base`` (copied in memory from the shared one)."""
    tokenizer, model = causal(base) if is_causal else encoder(base)
    own = copy.deepcopy(model)
    own.requires_grad_(True)
    return copy.deepcopy(tokenizer), own.train()  # its own tokenizer too: training may set padding


_POOLED: OrderedDict[tuple[str, int, str], np.ndarray] = OrderedDict()
_POOLED_MAX = 100_000  # embeddings remembered per process (about 150 MB at 384 dimensions)


def pooled(base: str, texts: list[str], max_length: int, normalize: bool = True) -> np.ndarray:
    """Mean-pooled embeddings of ``texts`` by the shared ``base`` (L2-normalised unless told), remembered."""
    from fleet.encoders import embed

    keys = [(base, max_length, t) for t in texts]
    with _LOCK:
        missing = list(dict.fromkeys(k[2] for k in keys if k not in _POOLED))
    if missing:
        tokenizer, model = encoder(base)
        fresh = embed(tokenizer, model, missing, max_length, normalize=False)
        with _LOCK:
            for text, vec in zip(missing, fresh):
                _POOLED[(base, max_length, text)] = vec
            while len(_POOLED) > _POOLED_MAX:
                _POOLED.popitem(last=False)
    with _LOCK:
        out = np.stack([_POOLED[k] for k in keys]) if keys else np.zeros((0, 0), dtype=np.float32)
    if normalize and len(out):
        out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out
