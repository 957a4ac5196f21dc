"""The MLflow pyfunc of a specialist version: inputs in, the kind's answers out, offline.

``mlflow.pyfunc.load_model("models:/NAME@champion").predict(["some text"])`` loads the saved model
folder (the ``model`` artifact) with the kind named in its ``fleet.json`` and returns the kind's frame
(a classifier: ``label`` and ``score``).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel


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
