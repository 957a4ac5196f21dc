"""Watch specialists' traffic; emit `fleet.specialist.drift-detected` when a window drifted."""

from __future__ import annotations

from prefect import flow

from fleet.core.settings import Settings
from flows.specialist import DEFAULT_FLEET_FILE
from tasks import drift as d
from tasks import labeling as lab
from tasks import specialist as t


@flow(name="monitor", flow_run_name="monitor-{name}")
def monitor_flow(name: str, fleet_file: str = DEFAULT_FLEET_FILE) -> dict:
    """One specialist's drift verdict on its latest traffic window; an event when it drifted."""
    settings = Settings.load().apply()
    spec = t.load_spec(fleet_file, name, settings)
    report = d.check_drift(spec, settings)
    event_id = d.emit_drift(report) if report.drifted else None
    sla_event = d.emit_sla(report.sla) if report.sla is not None and report.sla.breaches else None
    awaiting = lab.awaiting_teacher(spec, settings)
    pool_event = lab.emit_pool_grew(spec, awaiting) if awaiting >= spec.labeling.trigger_rows else None
    return {
        "specialist": name,
        "status": report.status,
        "report_id": report.id,
        "event_id": event_id,
        "fired": report.fired,
        "pool_event_id": pool_event,
        "sla_breaches": report.sla.breaches if report.sla is not None else [],
        "sla_event_id": sla_event,
    }


@flow(name="monitor-fleet", flow_run_name="monitor-fleet")
def monitor_fleet_flow(fleet_file: str = DEFAULT_FLEET_FILE, only: list[str] | None = None) -> list[dict]:
    """The monitor for all (or some) specialists."""
    settings = Settings.load().apply()
    names = [s.name for s in t.load_fleet_spec(fleet_file, settings).select(only)]
    return [monitor_flow(name=n, fleet_file=fleet_file) for n in names]
