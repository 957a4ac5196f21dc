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
from typing import Any

import numpy as np

from fleet.models.base_models import TrainingError, load_tokenizer, ml_imports, resolve_base_model

_LOCK = threading.Lock()
# Held by a fine-tune from its seed to its end, and by whoever builds torch modules in this process:
# building one draws from torch's global random generator (initial weights, then overwritten by loaded
# ones), and so does dropout in training, so a model loaded by another stage meanwhile would shift the
# fine-tune's random numbers and change its bits. Taken before ``_LOCK``, never after it.
RNG = threading.RLock()


_MODELS: dict[tuple[str, bool], tuple[Any, Any]] = {}


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


def _shared(base: str, causal: bool) -> tuple[Any, Any]:
    """The process's copy of ``base``; only a first load waits for a running fine-tune (see ``RNG``)."""
    key = (resolve_base_model(base), causal)
    with _LOCK:
        if key in _MODELS:
            return _MODELS[key]
    with RNG, _LOCK:
        if key not in _MODELS:
            _MODELS[key] = _load(*key)
        return _MODELS[key]


def encoder(base: str) -> tuple[Any, Any]:
    """(tokenizer, encoder) of ``base`` (a name or its folder), loaded once per process, frozen: for reading only."""
    return _shared(base, False)


def causal(base: str) -> tuple[Any, Any]:
    """(tokenizer, causal language model) of ``base`` (a name or its folder), loaded once per process, frozen."""
    return _shared(base, True)


def trainable(base: str, is_causal: bool = False) -> tuple[Any, Any]:
    """A private, trainable copy of ``base`` (copied in memory from the shared one)."""
    tokenizer, model = causal(base) if is_causal else encoder(base)
    own = copy.deepcopy(model)
    own.requires_grad_(True)
    return copy.deepcopy(tokenizer), own.train()  # its own tokenizer too: training may set padding


_POOLED: OrderedDict[tuple[str, int, str], np.ndarray] = OrderedDict()
_POOLED_MAX = 100_000  # embeddings remembered per process (about 150 MB at 384 dimensions)


def pooled(base: str, texts: list[str], max_length: int, normalize: bool = True, fresh: bool = False) -> np.ndarray:
    """Mean-pooled embeddings of ``texts`` by the shared ``base`` (L2-normalised unless told), remembered.

    A text's bits depend on the batch it was embedded in (padding, kernel choice) and on torch's thread
    count, so a remembered one may differ in the last bits from another run's; ``fresh`` embeds every text
    now, in the order given (what training needs to be reproducible), and remembers the result."""
    from fleet.models.encoders import embed

    keys = [(base, max_length, t) for t in texts]
    with _LOCK:
        missing = list(dict.fromkeys(k[2] for k in keys if fresh or k not in _POOLED))
    if missing:
        tokenizer, model = encoder(base)
        vectors = embed(tokenizer, model, missing, max_length, normalize=False)
        with _LOCK:
            for text, vec in zip(missing, vectors):
                _POOLED[(base, max_length, text)] = vec
            while len(_POOLED) > _POOLED_MAX:
                _POOLED.popitem(last=False)
    with _LOCK:
        out = np.stack([_POOLED[k] for k in keys]) if keys else np.zeros((0, 0), dtype=np.float32)
    if normalize and len(out):
        out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out


_LLAMA: dict[str, Any] = {}


def llama(gguf: str, slots: int = 16) -> Any:
    """The process's llama.cpp copy of a GGUF base (``fleet.models.llama_engine.LlamaBase``), loaded once."""
    from fleet.models.llama_engine import LlamaBase

    with _LOCK:
        if gguf not in _LLAMA:
            _LLAMA[gguf] = LlamaBase(gguf, slots=slots)
        return _LLAMA[gguf]
