"""One specialist: curate -> fine-tune -> evaluate -> register."""

from __future__ import annotations

import os
import socket

from prefect import flow

from fleet.settings import Settings
from fleet.training import training_key
from tasks import specialist as t

DEFAULT_FLEET_FILE = "deployments/fleet.yaml"


@flow(name="specialist", flow_run_name="{name}")
def specialist_flow(
    name: str, fleet_file: str = DEFAULT_FLEET_FILE, trigger: str = "manual", drift_report: str | None = None
) -> dict:
    """Bring one specialist up to date. Nothing is retrained when its data and settings did not change.

    A drift-triggered run merges the specialist's labelled feedback into its data; ``drift_report``
    (the report that raised the alarm) is tagged on the new version for lineage.
    """
    settings = Settings.load().apply()
    spec = t.load_spec(fleet_file, name)
    dataset = t.curate(spec, settings, with_feedback=trigger == "drift")
    key = training_key(spec, dataset.version)
    existing = t.find_registered(name, key)
    if existing is not None:
        result = {"specialist": name, "status": "up-to-date", "dataset_version": dataset.version, **existing}
    else:
        model = t.fine_tune(spec, dataset, settings)
        report = t.evaluate(spec, dataset, model, settings)
        reference = t.reference_profile(spec, dataset, model, settings)
        reg = t.register(spec, dataset, model, report, trigger, settings, reference, drift_report)
        result = {"specialist": name, "status": "trained", "dataset_version": dataset.version, "report": report, **reg}
    result["ran_on"] = f"{socket.gethostname()}:{os.getpid()}"
    t.store_result(settings, result)
    return result
