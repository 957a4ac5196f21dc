"""Exports, on demand: a version as files other tools run, checked against the fleet's own answers.

- merged: the adapter folded into its base, saved as a plain model folder. A classifier's export is a
  transformers encoder with its head (``fleet.json`` says ``merged: true``); a generative specialist's is
  a transformers causal language model with its tokenizer. Both load without the base.
- gguf (generative specialists): the base as one GGUF file (f16, q8_0 or q4_k_m), the adapter as a GGUF
  LoRA file, and ``llama-server.sh``, a ready command line for llama.cpp's server (loopback, API key).
Both are checked on sample inputs against the adapter as the fleet runs it (parity).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from fleet.core.records import ModelRecord
from fleet.kinds import kind_of


class ExportError(ValueError):
    """The destination cannot take an export (nothing was changed there)."""


class Export(BaseModel):
    folder: str
    task: str
    size_bytes: int
    parity: str  # what was compared
    max_difference: float  # largest difference seen (probabilities, or differing answers)


GGUF_MARK = "gguf-export.json"  # what marks a folder as an earlier GGUF export


def check_destination(dest: Path) -> None:
    """``dest`` may be written: absent, empty, or an earlier export (its ``fleet.json`` says merged, or it
    holds a GGUF export's ``gguf-export.json``)."""
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise ExportError(f"{dest}: not a folder; give a new or empty folder, or an earlier export")
    if dest.is_dir() and any(dest.iterdir()):
        try:
            earlier = (dest / GGUF_MARK).is_file() or ModelRecord.read(dest).merged
        except ValueError:
            earlier = False
        if not earlier:
            raise ExportError(
                f"{dest}: a folder with other files in it; give a new or empty folder, or an earlier export"
            )


def _replace(dest: Path, write: Callable[[Path], None]) -> None:
    """Write an export into a temporary folder beside ``dest`` and rename it into place at the end: an
    export cut short leaves ``dest`` as it was."""
    check_destination(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        write(tmp)
        old = dest.with_name(f".{dest.name}-old") if dest.exists() else None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
            dest.rename(old)
        tmp.rename(dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _save(model_dir: Path, dest: Path) -> None:
    check_destination(dest)  # before reading anything: a folder of other files is refused first
    record = ModelRecord.read(model_dir)
    whole = {k: v for k, v in record.to_json().items() if not k.startswith("base_")} | {"merged": True}

    def write(tmp: Path) -> None:
        kind_of(record.task).save_merged(model_dir, tmp)
        ModelRecord.model_validate(whole).write(tmp)

    _replace(dest, write)


def merged(model_dir: str | Path, dest: str | Path, samples: list[str]) -> Export:
    """Export ``model_dir`` merged to ``dest``; compare both forms' answers on ``samples``."""
    model_dir, dest = Path(model_dir), Path(dest)
    _save(model_dir, dest)
    kind = kind_of(ModelRecord.read(model_dir).task)
    a, b = kind.load(model_dir, "adapter").predict(samples), kind.load(dest, "merged").predict(samples)
    if a.probabilities is not None and b.probabilities is not None:
        diff, what = float(np.abs(np.asarray(a.probabilities) - np.asarray(b.probabilities)).max()), "probabilities"
    else:
        diff, what = float(sum(x != y for x, y in zip(a.predictions, b.predictions))), "answers that differ"
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    return Export(
        folder=str(dest),
        task=kind.task,
        size_bytes=size,
        parity=f"{what} on {len(samples)} samples",
        max_difference=diff,
    )


def gguf(model_dir: str | Path, dest: str | Path, samples: list[str], name: str, quant: str = "f16") -> Export:
    """Export a generative version to ``dest`` for llama.cpp (see the module's docstring); its answers by
    llama.cpp are compared with transformers' on ``samples``."""
    from fleet.kinds.generation.predict import Generator
    from fleet.kinds.generation.record import GeneratorRecord
    from fleet.kinds.generation.spec import TASK as GENERATION
    from fleet.models import base_store, gguf_export

    model_dir, dest = Path(model_dir), Path(dest)
    record = ModelRecord.read(model_dir)
    if record.task != GENERATION or record.merged:
        raise ExportError(f"{name}: a {record.task} {'export' if record.merged else 'version'} has no GGUF form")
    meta = GeneratorRecord.read(model_dir)
    safe_name(name, "specialist name")
    folder, digest = base_store.locate_for(meta), meta.base_ref()[1]
    base_file = safe_name(f"{Path(meta.base_model or 'base').name}-{digest[:12]}-{quant}.gguf", "base file name")

    def write(tmp: Path) -> None:
        shutil.copyfile(base_store.gguf_file(folder, digest, quant), tmp / base_file)
        shutil.copyfile(base_store.adapter_gguf(model_dir, folder, digest), tmp / f"{name}.lora.gguf")
        (tmp / "system-prompt.txt").write_text(meta.system or "")
        (tmp / "llama-server.sh").write_text(server_command(base_file, f"{name}.lora.gguf", meta.max_new_tokens))
        (tmp / "llama-server.sh").chmod(0o755)
        info = {"specialist": name, "base_digest": digest, "quant": quant, "system": meta.system}
        (tmp / GGUF_MARK).write_text(json.dumps(info, indent=2))

    try:
        _replace(dest, write)
    except gguf_export.GgufError as exc:
        raise ExportError(f"{name}: GGUF conversion failed: {exc}") from None
    a = Generator(model_dir, "transformers", engine="transformers").predict(samples)
    b = Generator(model_dir, "llama.cpp", engine="llama-cpp", quant=quant).predict(samples)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    differ = float(sum(x != y for x, y in zip(a.predictions, b.predictions)))
    return Export(
        folder=str(dest),
        task=record.task,
        size_bytes=size,
        parity=f"answers that differ from transformers' on {len(samples)} samples ({quant})",
        max_difference=differ,
    )


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def safe_name(value: str, what: str) -> str:
    """``value`` if it is a plain file name (letters, digits, ``.``, ``_``, ``-``): names that reach a script
    come from the registry, so anything else is refused rather than escaped."""
    if not SAFE_NAME.fullmatch(value) or ".." in value:
        raise ExportError(f"{what} {value[:60]!r}: only letters, digits, '.', '_' and '-' may go into the export")
    return value


def server_command(base_file: str, adapter_file: str, max_new_tokens: int) -> str:
    """A shell script starting llama.cpp's server on the export: loopback only, an API key required, the
    adapter applied, answers as long as the fleet lets them be. The system prompt is the client's to send
    (``system-prompt.txt``). Every value written into it is checked (:func:`safe_name`) and quoted."""
    base, adapter = shlex.quote(safe_name(base_file, "base file")), shlex.quote(safe_name(adapter_file, "adapter"))
    return (
        "#!/bin/sh\n"
        "# llama.cpp's OpenAI-compatible server on this export (https://github.com/ggml-org/llama.cpp).\n"
        "# Set LLAMA_API_KEY; send system-prompt.txt as the system message of every chat request.\n"
        'cd "$(dirname "$0")"\n'
        f'exec llama-server -m {base} --lora {adapter} --host "${{HOST:-127.0.0.1}}" '
        f'--port "${{PORT:-8080}}" --api-key "${{LLAMA_API_KEY:?set LLAMA_API_KEY}}" -n {int(max_new_tokens)} '
        '--parallel 4 "$@"\n'
    )
