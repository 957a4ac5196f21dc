"""One specialist: curate -> fine-tune (general contenders scored apart) -> evaluate -> reference -> register."""

from __future__ import annotations

import os
import socket

from prefect import flow
from prefect.runtime import flow_run

from fleet.core.results import Lineage, SpecialistResult
from fleet.core.settings import Settings
from fleet.ops import heartbeats
from fleet.stages import summary
from tasks import specialist as t

DEFAULT_FLEET_FILE = "deployments/fleet.yaml"


@flow(name="specialist", flow_run_name="{name}")
def specialist_flow(
    name: str, fleet_file: str = DEFAULT_FLEET_FILE, trigger: str = "manual", drift_report: str | None = None
) -> SpecialistResult:
    """Bring one specialist up to date. Nothing is retrained when its data and settings did not change.

    A drift-triggered run merges the specialist's labelled feedback into its data; ``drift_report``
    (the report that raised the alarm) is tagged on the new version for lineage.
    """
    settings = Settings.load().apply()
    on = f"{settings.worker_name or socket.gethostname()}:{os.getpid()}"
    run_id = flow_run.id
    if run_id is None:  # no flow run to follow
        return _specialist(name, fleet_file, trigger, drift_report, settings, on)
    # a heartbeat in the store while it runs: the fleet run waiting for it on another machine tells a slow
    # run from one whose worker is gone (fleet.ops.heartbeats)
    with heartbeats.beating(settings.store_handle(), run_id, on, settings.heartbeat_s):
        return _specialist(name, fleet_file, trigger, drift_report, settings, on)


def _specialist(
    name: str, fleet_file: str, trigger: str, drift_report: str | None, settings: Settings, on: str
) -> SpecialistResult:
    spec = t.load_spec(fleet_file, name, settings)
    dataset = t.curate(spec, settings, with_feedback=trigger == "drift")
    result = t.find_registered(spec, dataset, settings)
    if result is None:
        others = t.evaluate_general.submit(spec, dataset, settings)  # needs no model: beside it if a slot is free
        model = t.fine_tune(spec, dataset, settings)
        report = t.evaluate(spec, dataset, model, others.result(), settings)  # raises if scoring them failed
        reference = t.reference_profile(spec, model, report, settings)
        reg = t.register(
            spec, dataset, model, report, Lineage(trigger=trigger, drift_report=drift_report), settings, reference
        )
        result = summary.trained(dataset, report, reg)
    result.ran_on = on
    t.store_result(settings, result)
    return result
