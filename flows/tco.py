"""The fleet's monthly bill: what each specialist costs, against all of its traffic sent to its fallback."""

from __future__ import annotations

from prefect import flow

from fleet.core.settings import Settings
from flows.specialist import DEFAULT_FLEET_FILE
from tasks import specialist as t
from tasks import tco


@flow(name="tco", flow_run_name="tco-{month}")
def tco_flow(
    month: str, fleet_file: str = DEFAULT_FLEET_FILE, requests_per_month: int | None = None, months: int = 12
) -> dict:
    settings = Settings.load().apply()
    fleet = t.load_fleet_spec(fleet_file, settings)
    return tco.monthly_bill(fleet, settings, month, requests_per_month, months)
