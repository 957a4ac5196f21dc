"""Merged exports, on demand: a version's adapter folded into its base, saved as a plain model folder.

A classifier's export is a transformers encoder with its head (``fleet.json`` says ``merged: true``);
a generative specialist's is a transformers causal language model with its tokenizer. Both load
without the base, and both are checked against the adapter form on sample inputs (parity).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from fleet.core.records import ModelRecord
from fleet.kinds import kind_of


class Export(BaseModel):
    folder: str
    task: str
    size_bytes: int
    parity: str  # what was compared
    max_difference: float  # largest difference seen (probabilities, or differing answers)


def _save(model_dir: Path, dest: Path) -> None:
    record = ModelRecord.read(model_dir)
    whole = {k: v for k, v in record.to_json().items() if not k.startswith("base_")} | {"merged": True}
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    kind_of(record.task).save_merged(model_dir, dest)
    ModelRecord.model_validate(whole).write(dest)


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
