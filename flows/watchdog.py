"""Stuck specialist runs, found every few minutes (``tasks.watchdog.sweep``): the ``watchdog`` deployment."""

from __future__ import annotations

from prefect import flow, get_run_logger

from fleet.core.settings import Settings
from tasks import watchdog as w


@flow(name="watchdog", flow_run_name="watchdog")
def watchdog_flow() -> list[dict]:
    """Mark and report the specialist deployment's runs that are stuck (fleet status, fleet.run.stuck)."""
    settings = Settings.load().apply()
    findings = w.sweep(settings)
    log = get_run_logger()
    for f in findings:
        log.warning(
            "%s: run %s %s after %.0f s without a sign of life: %s",
            f["specialist"],
            f["run_id"],
            f["state"],
            f["silent_s"],
            f["action"],
        )
    log.info("%d stuck run(s) of %s", len(findings), settings.specialist_deployment)
    return findings
