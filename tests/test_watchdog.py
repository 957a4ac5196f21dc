"""The watchdog's view of a run on a worker elsewhere (issue 31, item 5): its heartbeat in the store, how long
it has been silent in its state, and the findings `fleet status` lists. The whole path (a worker killed, its
run crashed and started again elsewhere) runs on the real stack in tests/test_stack.py."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from prefect.states import Late, Pending, Running, Scheduled

from fleet.core.settings import Settings
from fleet.core.storage import LocalStore
from fleet.ops import heartbeats
from tasks import watchdog


def test_a_run_beats_while_it_works_and_goes_silent_when_it_stops(tmp_path):
    store, run = LocalStore(tmp_path), str(uuid.uuid4())
    assert heartbeats.last(store, run) is None
    started = time.time()
    with heartbeats.beating(store, run, "w1:42", every_s=0.05):
        time.sleep(0.3)
        assert heartbeats.last(store, run)["on"] == "w1:42"
        assert heartbeats.silent_for(store, run, since=started - 100) < 1  # beats count, not the state's age
    stopped = heartbeats.last(store, run)["at"]
    assert heartbeats.silent_for(store, run, since=started, now=stopped + 60) == pytest.approx(60, abs=0.01)
    with pytest.raises(ValueError):
        heartbeats.beat(store, "../../etc/passwd", "x")


def _aged(state, seconds: float):
    state.timestamp = datetime.now(UTC) - timedelta(seconds=seconds)
    return state


def test_silence_counts_the_states_a_run_can_be_stuck_in(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    settings = Settings.load()
    run = str(uuid.uuid4())
    assert watchdog._silence(_aged(Running(), 500), run, settings) == pytest.approx(500, abs=5)  # never beat
    heartbeats.beat(settings.store_handle(), run, "w2:7")
    assert watchdog._silence(_aged(Running(), 500), run, settings) < 5  # it beats: alive, however long it runs
    assert watchdog._silence(_aged(Pending(), 90), run, settings) == pytest.approx(90, abs=5)  # taken, not started
    late = _aged(Late(scheduled_time=datetime.now(UTC) - timedelta(seconds=120)), 60)
    assert watchdog._silence(late, run, settings) == pytest.approx(60, abs=5)  # no worker takes it
    future = Scheduled(scheduled_time=datetime.now(UTC) + timedelta(hours=1))
    assert watchdog._silence(_aged(future, 600), run, settings) == 0  # waiting for its time is not stuck


def test_findings_are_kept_for_fleet_status_newest_first(tmp_path):
    store = LocalStore(tmp_path)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    heartbeats.record_stuck(store, {"run_id": a, "specialist": "x", "state": "Running", "silent_s": 40.0})
    time.sleep(0.01)
    heartbeats.record_stuck(store, {"run_id": b, "specialist": "y", "state": "Late", "silent_s": 400.0})
    assert [f["run_id"] for f in heartbeats.recent_stuck(store)] == [b, a]


@pytest.mark.usefixtures("prefect_harness")
def test_the_sweep_crashes_a_silent_run_and_leaves_a_beating_one(tmp_path, monkeypatch):
    """The watchdog deployment's sweep, against a real (temporary) Prefect server: two runs of the specialist
    deployment marked Running; the one without a heartbeat is marked Crashed and reported, the other is not."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Running as RunningState

    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    monkeypatch.setenv("FLEET_STUCK_AFTER_S", "1")
    settings = Settings.load()

    @flow(name="specialist")
    def specialist(name: str) -> None:  # a stand-in with the deployment's name: the sweep only reads runs
        pass

    deployment_id = specialist.to_deployment(name="specialist").apply()
    with get_client(sync_client=True) as client:
        silent, beating = (
            client.create_flow_run_from_deployment(deployment_id, parameters={"name": n}) for n in ("silent", "beating")
        )
        for run in (silent, beating):
            client.set_flow_run_state(run.id, RunningState(), force=True)
        time.sleep(1.5)
        heartbeats.beat(settings.store_handle(), str(beating.id), "w1:1")
        findings = watchdog.sweep(settings)
        assert [(f["specialist"], f["state"], f["action"]) for f in findings] == [
            ("silent", "Running", "marked Crashed")
        ]
        assert client.read_flow_run(silent.id).state.is_crashed()
        assert client.read_flow_run(beating.id).state.is_running()
    assert [f["run_id"] for f in heartbeats.recent_stuck(settings.store_handle())] == [str(silent.id)]
