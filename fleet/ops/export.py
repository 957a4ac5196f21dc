"""Merged exports, on demand: a version's adapter folded into its base, saved as a plain model folder.

A classifier's export is a transformers encoder with its head (``fleet.json`` says ``merged: true``);
a generative specialist's is a transformers causal language model with its tokenizer. Both load
without the base, and both are checked against the adapter form on sample inputs (parity).
"""

from __future__ import annotations

import shutil
import tempfile
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


def check_destination(dest: Path) -> None:
    """``dest`` may be written: absent, empty, or an earlier export (its ``fleet.json`` says merged)."""
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise ExportError(f"{dest}: not a folder; give a new or empty folder, or an earlier export")
    if dest.is_dir() and any(dest.iterdir()):
        try:
            earlier = ModelRecord.read(dest).merged
        except ValueError:
            earlier = False
        if not earlier:
            raise ExportError(
                f"{dest}: a folder with other files in it; give a new or empty folder, or an earlier export"
            )


def _save(model_dir: Path, dest: Path) -> None:
    """Write the merged model beside ``dest`` and rename it into place at the end: an export cut short
    leaves ``dest`` as it was."""
    check_destination(dest)
    record = ModelRecord.read(model_dir)
    whole = {k: v for k, v in record.to_json().items() if not k.startswith("base_")} | {"merged": True}
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        kind_of(record.task).save_merged(model_dir, tmp)
        ModelRecord.model_validate(whole).write(tmp)
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
