"""Tasks of the drift loop: check a window, publish the report, emit the event, guard retrains."""

from __future__ import annotations

import base64
import contextlib

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.events import emit_event

from fleet.core.settings import Settings
from fleet.core.spec import SpecialistSpec
from fleet.core.storage import put_json
from fleet.ops import monitoring, sla

DRIFT_EVENT = "fleet.specialist.drift-detected"


@task(name="check-drift", cache_policy=NONE)
def check_drift(spec: SpecialistSpec, settings: Settings) -> monitoring.DriftReport:
    store = settings.store_handle()
    checked = monitoring.check(spec, store)
    report = checked.report
    md = monitoring.report_markdown(report)
    prefix = f"drift/{spec.name}/{report.id}"
    put_json(store, f"{prefix}/report.json", report.model_dump(mode="json"))
    put_json(store, f"drift/{spec.name}/latest.json", report.model_dump(mode="json"))  # for `fleet status`
    if checked.plot_png:
        store.put_bytes(f"{prefix}/distributions.png", checked.plot_png)
        md += f"\n![reference vs current](data:image/png;base64,{base64.b64encode(checked.plot_png).decode()})\n"
    create_markdown_artifact(key=f"{spec.name}-drift", markdown=md, description=f"Drift report {report.id}")
    get_run_logger().info("%s: %s (%s rows)", spec.name, report.status, report.window_rows)
    if report.sla is not None:
        sla.record(store, report.sla)
        if report.sla.breaches:
            get_run_logger().warning("%s: SLA breached: %s", spec.name, "; ".join(report.sla.breaches))
    return report


@task(name="emit-sla-event", cache_policy=NONE)
def emit_sla(report: sla.SlaReport) -> str | None:
    """``fleet.sla.violated`` for a window that broke the specialist's SLA."""
    name = report.specialist
    event = emit_event(
        event=sla.SLA_EVENT,
        resource={"prefect.resource.id": f"fleet.specialist.{name}", "prefect.resource.name": name, "fleet.name": name},
        payload=report.model_dump(mode="json"),
    )
    return str(event.id) if event else None


@task(name="emit-drift-event", cache_policy=NONE)
def emit_drift(report: monitoring.DriftReport) -> str | None:
    name = report.specialist
    payload = {
        "report_id": report.id,
        "champion_version": report.champion_version,
        "fired": report.fired,
        "signals": {k: {"statistic": v.statistic, "p_value": v.p_value} for k, v in report.signals.items()},
    }
    event = emit_event(
        event=DRIFT_EVENT,
        resource={"prefect.resource.id": f"fleet.specialist.{name}", "prefect.resource.name": name, "fleet.name": name},
        payload=payload,
    )
    return str(event.id) if event else None


@contextlib.contextmanager
def retrain_lock(name: str, wait_s: float = 30.0):
    """Hold the specialist's retrain slot (a Prefect global concurrency limit of 1); yields False if busy.

    The wait covers slow slot acquisition on a busy server; a run that gets the slot after another
    retrain finished is then turned away by the cooldown, so either way it never trains twice.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists

    limit = f"retrain-{name}"
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=limit, limit=1))
    try:
        ctx = concurrency(limit, occupy=1, timeout_seconds=wait_s, strict=True)
        ctx.__enter__()
    except TimeoutError:
        yield False
        return
    try:
        yield True
    finally:
        ctx.__exit__(None, None, None)


@task(name="claim-retrain", cache_policy=NONE)
def claim_retrain(spec: SpecialistSpec, settings: Settings, drift_report: str | None) -> tuple[bool, str]:
    return monitoring.claim_retrain(spec, settings.store_handle(), drift_report)
