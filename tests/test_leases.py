"""Leases: exactly one holder at a time, on the local store and on S3 (moto's server on loopback)."""

import threading
import time

import pytest

from fleet.core import leases


def test_create_if_absent_has_one_winner(store):
    assert store.create_if_absent("k/one.json", b"first")
    assert not store.create_if_absent("k/one.json", b"second")
    assert store.get_bytes("k/one.json") == b"first"


def test_one_holder_at_a_time_across_threads(store):
    inside, most, lock = [0], [0], threading.Lock()

    def work():
        with leases.held(store, "train/x/key", wait_s=60, poll_s=0.05):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.2)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1
    assert len(store.list("leases/train/x/key")) == 4  # one numbered record per holder


def test_busy_lease_names_its_holder_and_expires(store):
    first = leases.Lease(store, "register/y", ttl_s=1.0)
    assert first.try_acquire()[0]
    told = []
    busy = pytest.raises(leases.LeaseBusy, match=r"register/y: .* holds it")
    with busy, leases.held(store, "register/y", wait_s=0.3, poll_s=0.05, on_wait=told.append):
        pass
    assert told and told[0]["owner"] == first.owner
    time.sleep(1.1)  # the holder died without letting go: its lease runs out
    with leases.held(store, "register/y", wait_s=5, poll_s=0.05) as lease:
        assert lease.key.endswith("000002.json")


def test_a_holder_that_lost_its_lease_is_fenced_off(store):
    """A holder whose lease expired and was taken over gets LeaseLost before its next side effect."""
    from fleet.core.leases import Lease, LeaseLost
    from fleet.core.storage import check_conditional_writes

    check_conditional_writes(store)  # both stores honour them (moto's S3 server too)
    first = Lease(store, "register/x", ttl_s=1.5)  # long enough for a loaded machine's S3 round trips
    assert first.try_acquire()[0]
    first.check()  # still ours
    time.sleep(1.6)
    with pytest.raises(LeaseLost, match="expired"):
        first.check()
    second = Lease(store, "register/x", ttl_s=60)
    assert second.try_acquire()[0]
    with pytest.raises(LeaseLost, match="another run holds this lease"):
        first.check()
    second.check()


def test_a_store_that_ignores_conditional_writes_is_refused(tmp_path):
    from fleet.core.storage import LocalStore, StorageError, check_conditional_writes

    class Careless(LocalStore):
        def create_if_absent(self, key: str, data: bytes) -> bool:
            self.put_bytes(key, data)
            return True

    check_conditional_writes(LocalStore(tmp_path / "fine"))
    with pytest.raises(StorageError, match="ignores conditional writes"):
        check_conditional_writes(Careless(tmp_path / "careless"))
    assert not LocalStore(tmp_path / "careless").list("leases")  # the probe leaves nothing behind
