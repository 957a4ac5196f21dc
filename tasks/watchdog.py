"""Watching specialist runs on workers elsewhere: done, still alive, or stuck (issue 31, items 3 and 5).

A run of the ``specialist`` deployment is alive while its heartbeat in the store is fresh
(``fleet.ops.heartbeats``). The fleet run waiting for it finds it stuck when it is Running with no heartbeat
for ``stuck_after_s`` (its worker died, was killed or lost its machine), Pending that long (a worker took it
and never started it), or Late that long (no worker takes it). Each finding is recorded for ``fleet status``
and emitted as the event ``fleet.run.stuck``; a stuck Running or Pending run is marked Crashed, so the fleet
run starts it again (``FLEET_SPECIALIST_ATTEMPTS``) and whichever worker is free takes it. A Late run is only
reported: another run would wait in the same queue.
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
            silent = _silence(state, str(run_id), settings)
            if silent > settings.stuck_after_s:
                crash = state.type in (StateType.RUNNING, StateType.PENDING)
                action = "marked Crashed, started again" if crash else "reported (waiting for a worker)"
                if crash or not reported:
                    finding = report_stuck(name, str(run_id), state, silent, action, settings)
                    logger.warning(
                        "%s: run %s stuck (%s, no sign of life for %.0f s on %s): %s",
                        name,
                        run_id,
                        state.name,
                        silent,
                        finding["on"] or "no worker",
                        action,
                    )
                    reported = True
                if crash:
                    message = f"no sign of life for {silent:.0f} s in {state.name} (its worker is gone)"
                    client.set_flow_run_state(run_id, Crashed(message=message), force=True)
                    return client.read_flow_run(run_id).state or Crashed(message=message)
            time.sleep(poll_s)
