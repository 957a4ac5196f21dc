"""The code MLflow logs with every specialist version (MLflow's models-from-code): nothing is pickled.

MLflow runs this file when it loads a version; the model's weights are the version's ``model`` artifact
(the adapter and its ``fleet.json``). Only MLflow runs it: nothing in the library imports it.
"""

import mlflow

from fleet.stages.pyfunc import SpecialistModel

mlflow.models.set_model(SpecialistModel())
