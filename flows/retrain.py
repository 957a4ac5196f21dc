"""Retrain one specialist after drift: feedback merged, same curate -> train -> evaluate -> gate path."""

from __future__ import annotations

from prefect import flow
from prefect.states import Cancelled

from fleet.core.settings import Settings
from flows.specialist import DEFAULT_FLEET_FILE, specialist_flow
from tasks import drift as d
from tasks import specialist as t


@flow(name="retrain", flow_run_name="retrain-{name}")
def retrain_flow(name: str, drift_report: str | None = None, fleet_file: str = DEFAULT_FLEET_FILE):
    """At most one retrain per specialist at a time, and none within its cooldown: such runs end Cancelled."""
    settings = Settings.load().apply()
    spec = t.load_spec(fleet_file, name, settings)
    with d.retrain_lock(name) as got:
        if not got:
            return Cancelled(message=f"{name}: another retrain is running")
        go, reason = d.claim_retrain(spec, settings, drift_report)
        if not go:
            return Cancelled(message=reason)
        return specialist_flow(name=name, fleet_file=fleet_file, trigger="drift", drift_report=drift_report)
