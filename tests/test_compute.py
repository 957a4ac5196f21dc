"""Compute slots: model-heavy stages of one process take turns (fleet.core.compute)."""

from __future__ import annotations

import threading
import time

import pytest

from fleet.core import compute
from fleet.core.settings import Settings, SettingsError


def _overlap(n_threads: int) -> int:
    """The most threads seen inside a slot at once, each holding it for a moment."""
    inside, most, lock = 0, 0, threading.Lock()

    def work() -> None:
        nonlocal inside, most
        with compute.slot():
            with lock:
                inside += 1
                most = max(most, inside)
            time.sleep(0.2)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return most


@pytest.fixture(autouse=True)
def _one_slot_after():
    yield
    compute.configure(1)


def test_one_slot_runs_stages_one_at_a_time():
    compute.configure(1)
    assert _overlap(3) == 1


def test_more_slots_let_stages_overlap():
    compute.configure(2)
    assert _overlap(3) == 2


def test_a_slot_is_reentrant_within_a_thread():
    compute.configure(1)
    done = threading.Event()

    def nested() -> None:
        with compute.slot(), compute.slot():  # a stage calling another keeps its slot
            done.set()

    t = threading.Thread(target=nested)
    t.start()
    t.join(5)
    assert done.is_set()
    with compute.slot():  # and it was released
        pass


def test_the_setting_reaches_the_slots_and_a_bad_one_is_refused(monkeypatch, fleet_home):
    monkeypatch.setenv("FLEET_COMPUTE_SLOTS", "3")
    Settings.load().apply()
    assert compute.slots() == 3
    monkeypatch.setenv("FLEET_COMPUTE_SLOTS", "many")
    with pytest.raises(SettingsError, match="FLEET_COMPUTE_SLOTS='many'"):
        Settings.load()
