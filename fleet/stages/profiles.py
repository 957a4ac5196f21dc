"""Reference profiles: what a trained model looked like on its own data, the baseline drift is measured from.

Built once per trained model from the challenger's evaluation outputs (no second prediction of the
test split) and a seeded sample of training-text embeddings from the shared embedding model, and stored
as ``profiles/NAME/TRAINING_KEY/reference.npz`` beside the model (and logged with its version).
"""

from __future__ import annotations

import numpy as np

from fleet.core import compute
from fleet.core.results import EvaluationReport, TrainedModel
from fleet.core.spec import SpecialistSpec
from fleet.core.storage import ObjectStore
from fleet.data import versions
from fleet.kinds import kind_of
from fleet.metrics.drift import sample_indices
from fleet.models import cache
from fleet.models.base_models import ml_imports

SAMPLE = 500  # training texts whose embeddings make up the reference


def embedding_model(spec: SpecialistSpec) -> str:
    """The encoder input drift is measured with (``drift.embedding_model``; a classifier's own base by default)."""
    return spec.drift.embedding_model or spec.base_model


def embeddings(spec: SpecialistSpec, texts: list[str], max_length: int) -> np.ndarray:
    """Sentence embeddings at the model's own token limit (the reference and the monitor use the same)."""
    return cache.pooled(embedding_model(spec), texts, max_length)


def reference_key(name: str, train_key: str) -> str:
    return f"profiles/{name}/{train_key}/reference.npz"


def build(spec: SpecialistSpec, store: ObjectStore, model: TrainedModel, report: EvaluationReport) -> bytes:
    """The reference profile of a trained model, stored beside it; returns its bytes."""
    ml_imports()
    train = versions.load_split(store, spec.name, model.dataset_version, "train")
    idx = sample_indices(len(train), SAMPLE, spec.drift.seed)
    texts = train["text"].iloc[idx].tolist()
    kind = kind_of(spec)
    length = kind.embedding_length(model)
    with compute.slot():
        blob = kind.reference(spec, embeddings(spec, texts, length), texts, length, report)
    store.put_bytes(reference_key(spec.name, model.training_key), blob)
    return blob
