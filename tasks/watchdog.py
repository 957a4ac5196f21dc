"""Watching specialist runs on workers elsewhere: done, still alive, or stuck (issue 31, items 3 and 5).

A run of the ``specialist`` deployment is alive while its heartbeat in the store is fresh
(``fleet.ops.heartbeats``). The fleet run waiting for it finds it stuck when it is Running with no heartbeat
for ``stuck_after_s`` (its worker died, was killed or lost its machine), Pending that long (a worker took it
and never started it), or Late that long (no worker takes it). Each finding is recorded for ``fleet status``
and emitted as the event ``fleet.run.stuck``; a stuck Running or Pending run is marked Crashed, so the fleet
run starts it again (``FLEET_SPECIALIST_ATTEMPTS``) and whichever worker is free takes it. A Late run is only
reported: another run would wait in the same queue.

``sweep`` applies the same rules to every run of the specialist deployment, for the ``watchdog`` deployment
(every 5 minutes): it catches stuck runs that no fleet run is waiting for (a drift retrain's, one started by
hand, one whose fleet run died too). It only marks and reports them; starting them again is the waiting
fleet run's (or the next schedule's) business.
"""

from __future__ import annotations

import logging
import time
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State, StateType
from prefect.events import emit_event
from prefect.states import Crashed

from fleet.core.settings import Settings
from fleet.ops import heartbeats

STUCK_EVENT = "fleet.run.stuck"
log = logging.getLogger("tasks.watchdog")


def _silence(state: State, run_id: str, settings: Settings) -> float:
    """Seconds the run has shown no sign of life in its current state (0: not a state that can be stuck)."""
    since = state.timestamp.timestamp()
    if state.type == StateType.RUNNING:
        return heartbeats.silent_for(settings.store_handle(), run_id, since)
    if state.type == StateType.PENDING or state.name == "Late":
        return max(0.0, time.time() - since)
    return 0.0


def report_stuck(name: str, run_id: str, state: State, silent_s: float, action: str, settings: Settings) -> dict:
    hb = heartbeats.last(settings.store_handle(), run_id)
    finding = {
        "run_id": run_id,
        "specialist": name,
        "state": state.name,
        "silent_s": round(silent_s, 1),
        "on": hb["on"] if hb else None,
        "action": action,
    }
    heartbeats.record_stuck(settings.store_handle(), finding)
    emit_event(
        event=STUCK_EVENT,
        resource={"prefect.resource.id": f"fleet.specialist.{name}", "prefect.resource.name": name, "fleet.name": name},
        related=[{"prefect.resource.id": f"prefect.flow-run.{run_id}", "prefect.resource.role": "flow-run"}],
        payload=finding,
    )
    return finding


def _verdict(state: State, run_id: str, settings: Settings) -> tuple[float, bool] | None:
    """(silence, crash it) when the run is stuck, else None."""
    silent = _silence(state, run_id, settings)
    if silent <= settings.stuck_after_s:
        return None
    return silent, state.type in (StateType.RUNNING, StateType.PENDING)


def _act(client, name: str, run_id: UUID, state: State, silent: float, crash: bool, settings: Settings) -> dict:
    action = "marked Crashed" if crash else "reported (waiting for a worker)"
    finding = report_stuck(name, str(run_id), state, silent, action, settings)
    if crash:
        message = f"no sign of life for {silent:.0f} s in {state.name} (its worker is gone)"
        client.set_flow_run_state(run_id, Crashed(message=message), force=True)
    return finding


def sweep(settings: Settings, deployment: str | None = None) -> list[dict]:
    """Every run of the specialist deployment (``FLOW/DEPLOYMENT``) found stuck now, marked and reported."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )

    deployment_name = (deployment or settings.specialist_deployment).split("/")[-1]
    waiting = [StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED]
    findings = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=waiting))),
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment_name])),
            limit=200,
        )
        for run in runs:
            state = run.state
            verdict = _verdict(state, str(run.id), settings) if state is not None else None
            if state is not None and verdict is not None:
                name = str((run.parameters or {}).get("name") or run.name)
                findings.append(_act(client, name, run.id, state, *verdict, settings))
    return findings


def wait_for(
    run_id: UUID, name: str, settings: Settings, logger: logging.Logger | logging.LoggerAdapter = log
) -> State:
    """The run's final state; a stuck Running or Pending run is marked Crashed (and that state returned)."""
    poll_s = max(0.5, min(5.0, settings.heartbeat_s))
    reported = False
    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(run_id).state
            if state is None:
                time.sleep(poll_s)
                continue
            if state.is_final():
                return state
            verdict = _verdict(state, str(run_id), settings)
            if verdict is not None and (verdict[1] or not reported):
                finding = _act(client, name, run_id, state, *verdict, settings)
                logger.warning(
                    "%s: run %s stuck (%s, no sign of life for %.0f s on %s): %s",
                    name,
                    run_id,
                    state.name,
                    verdict[0],
                    finding["on"] or "no worker",
                    finding["action"],
                )
                reported = True
                if verdict[1]:  # marked Crashed: the caller starts it again
                    return client.read_flow_run(run_id).state or state
            time.sleep(poll_s)
