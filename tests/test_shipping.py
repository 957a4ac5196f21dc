"""A fleet file travels with its runs through the object store (issue 31, item 1): a worker with nothing but
the store gets the same fleet, its relative data files included, and refuses a tampered copy."""

from __future__ import annotations

import pytest

from conftest import write_toy_fleet
from fleet.core import shipping
from fleet.core.spec import SpecError
from fleet.core.storage import LocalStore
from fleet.kinds import load_fleet


def test_a_shipped_fleet_loads_on_a_worker_that_has_only_the_store(tmp_path):
    fleet_file = write_toy_fleet(tmp_path / "submitter")
    store = LocalStore(tmp_path / "store")
    ref = shipping.ship(fleet_file, store)
    assert shipping.REFERENCE.fullmatch(ref) and shipping.ship(fleet_file, store) == ref  # stored once
    (tmp_path / "submitter" / "toy.csv").unlink()  # nothing of the submitter's folder is read again
    local = shipping.fetch(ref, store, tmp_path / "worker" / "fleets")
    worker, original = load_fleet(local, [tmp_path / "worker"]), load_fleet(fleet_file)
    spec = worker.specialists["toy"]
    assert spec.data.source == str(local.parent / "toy.csv") and (local.parent / "toy.csv").is_file()
    assert spec.model_dump(exclude={"data"}) == original.specialists["toy"].model_dump(exclude={"data"})
    assert shipping.fetch(ref, store, tmp_path / "worker" / "fleets") == local  # fetched once


def test_a_changed_fleet_ships_as_another_reference_and_a_tampered_copy_is_refused(tmp_path):
    fleet_file = write_toy_fleet(tmp_path / "submitter")
    store = LocalStore(tmp_path / "store")
    ref = shipping.ship(fleet_file, store)
    with (tmp_path / "submitter" / "toy.csv").open("a") as f:
        f.write("one more row about the rain,weather\n")
    assert shipping.ship(fleet_file, store) != ref  # its data changed: another digest
    digest = ref.split("/")[-1]
    store.put_bytes(f"fleets/{digest}/files/toy.csv", b"text,label\nplanted,food\n")
    with pytest.raises(SpecError, match="does not match the manifest"):
        shipping.fetch(ref, store, tmp_path / "worker")
    assert not (tmp_path / "worker" / digest).exists()  # nothing half-fetched left to load
    with pytest.raises(SpecError, match="no shipped fleet"):
        shipping.fetch("store:fleets/" + "0" * 24, store, tmp_path / "worker")
    with pytest.raises(SpecError, match="24 hex"):
        shipping.fetch("store:fleets/../../etc", store, tmp_path / "worker")


def test_a_source_outside_the_fleet_files_folder_cannot_travel(tmp_path):
    (tmp_path / "elsewhere.csv").write_text("text,label\n")
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "fleet.yaml").write_text("specialists:\n  x:\n    data: {source: ../elsewhere.csv}\n    labels: {a: b}\n")
    with pytest.raises(SpecError, match="outside the fleet file's folder"):
        shipping.ship(folder / "fleet.yaml", LocalStore(tmp_path / "store"))
