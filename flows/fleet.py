"""All (or some) specialists of a fleet, one after the other."""

from __future__ import annotations

from prefect import flow

from fleet.results import FleetRunError
from flows.specialist import DEFAULT_FLEET_FILE, specialist_flow
from tasks import specialist as t


@flow(name="fleet", flow_run_name="fleet-{trigger}")
def fleet_flow(fleet_file: str = DEFAULT_FLEET_FILE, only: list[str] | None = None, trigger: str = "manual") -> list[dict]:
    """Run the specialist flow for each selected specialist; one failure does not stop the others."""
    names = [s.name for s in t.load_fleet_spec(fleet_file).select(only)]
    states = {n: specialist_flow(name=n, fleet_file=fleet_file, trigger=trigger, return_state=True) for n in names}
    results = t.summarize(states)
    t.publish_summary(results)
    if any(r["status"] == "failed" for r in results):
        raise FleetRunError(results)
    return results
