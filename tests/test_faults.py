"""Faults in the middle of a run, injected against real servers on loopback: the server's port is cut (a
:class:`FaultProxy` in front of it) at the moment named, then restored. Each must leave nothing partial
visible, keep the champion, and let the next run finish what is missing without training again."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from mlflow import MlflowClient

from cli.health import free_port, wait_http
from conftest import write_toy_fleet
from faultproxy import FaultProxy
from fleet.core import storage
from fleet.core.storage import LocalStore, S3Store, StorageError
from fleet.kinds import load_fleet
from fleet.stages import training
from fleet.stages.curation import curate

pytestmark = [pytest.mark.slow]


def toy_spec(folder: Path, extra: str = ""):
    return load_fleet(write_toy_fleet(folder, extra_train=extra)).select(["toy"])[0]


def hidden_leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob(".tmp-*")]


def test_disk_full_while_writing_a_dataset_version(tmp_path, monkeypatch):
    spec = toy_spec(tmp_path / "f")
    expected = curate(spec, LocalStore(tmp_path / "clean")).version
    store = LocalStore(tmp_path / "store")
    real, calls = os.fdopen, []

    class HalfWritten:  # writes half of what it is given, then the disk is full
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            self.fh.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    def fdopen(fd, *args, **kw):
        calls.append(fd)
        fh = real(fd, *args, **kw)
        return HalfWritten(fh) if len(calls) == 3 else fh

    monkeypatch.setattr(storage.os, "fdopen", fdopen)
    with pytest.raises(StorageError, match="No space left on device"):
        curate(spec, store)
    monkeypatch.setattr(storage.os, "fdopen", real)
    assert not [k for k in store.list("datasets") if k.endswith("manifest.json")]  # no visible version
    assert hidden_leftovers(store.root) == []  # and no half-written file
    assert curate(spec, store).version == expected  # the next run completes the same version


@pytest.fixture
def s3_behind_proxy(moto_server, monkeypatch):
    """The session's moto server behind a proxy the test can cut; a fresh bucket."""
    proxy = FaultProxy(int(moto_server.rsplit(":", 1)[1]))
    for var, value in {
        "AWS_ENDPOINT_URL": proxy.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(var, value)
    bucket = f"f-{abs(hash(str(monkeypatch))) % 10**8}"
    direct = boto3.client("s3", endpoint_url=moto_server)
    direct.create_bucket(Bucket=bucket)
    yield proxy, bucket, direct
    proxy.down()


def cut_on_call(monkeypatch, proxy: FaultProxy, cls, method: str, nth: int = 1) -> list:
    """Cut the proxy just before the ``nth`` call of ``cls.method``."""
    real, calls = getattr(cls, method), []

    def cutting(self, *args, **kw):
        calls.append(args)
        if len(calls) == nth:
            proxy.down()
        return real(self, *args, **kw)

    monkeypatch.setattr(cls, method, cutting)
    return calls


def visible(direct, bucket: str, prefix: str) -> list[str]:
    listed = direct.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return [o["Key"] for o in listed]


def test_s3_down_during_curation(tmp_path, s3_behind_proxy, monkeypatch):
    proxy, bucket, direct = s3_behind_proxy
    spec = toy_spec(tmp_path / "f")
    store = S3Store(f"s3://{bucket}/home")
    cut_on_call(monkeypatch, proxy, S3Store, "put_bytes", nth=3)
    with pytest.raises(StorageError, match="failed"):
        curate(spec, store)
    monkeypatch.undo()
    proxy.up()
    assert not [k for k in visible(direct, bucket, "home/datasets") if k.endswith("manifest.json")]
    done = curate(spec, store)
    assert f"home/datasets/toy/{done.version}/manifest.json" in visible(direct, bucket, "home/datasets")


def test_s3_down_during_model_upload(tmp_path, s3_behind_proxy, monkeypatch):
    proxy, bucket, direct = s3_behind_proxy
    spec = toy_spec(tmp_path / "f")
    store = S3Store(f"s3://{bucket}/home")
    dataset = curate(spec, store)
    key = training.training_key(spec, dataset.version)
    cut_on_call(monkeypatch, proxy, S3Store, "upload_dir", nth=1)
    with pytest.raises(StorageError):
        training.ensure_trained(spec, store, dataset.version, tmp_path / "runs", progress=False)
    monkeypatch.undo()
    proxy.up()
    manifest = f"home/models/toy/{key}/manifest.json"
    assert manifest not in visible(direct, bucket, "home/models")  # the half-uploaded model is not visible
    model = training.ensure_trained(spec, store, dataset.version, tmp_path / "runs", progress=False)
    assert manifest in visible(direct, bucket, "home/models") and not model.reused
    assert model.resumed_from is not None  # the next run resumed from the checkpoint it had left


@pytest.fixture
def mlflow_behind_proxy(tmp_path):
    """A real `mlflow server` (SQLite, local artifacts) on loopback, behind a proxy the test can cut."""
    port, folder = free_port(), tmp_path / "mlflow-server"
    folder.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{folder}/mlflow.db",
        "--artifacts-destination",
        str(folder / "art"),
    ]
    log = folder / "log"
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 120, "mlflow server", proc, log)
        proxy = FaultProxy(port)
        yield proxy
        proxy.down()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)


@pytest.mark.usefixtures("prefect_harness")
def test_mlflow_down_during_registration(tmp_path, fleet_home, mlflow_behind_proxy, monkeypatch):
    from fleet.stages import registry
    from flows.fleet_run import fleet_flow

    proxy = mlflow_behind_proxy
    monkeypatch.setenv("MLFLOW_TRACKING_URI", proxy.url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    fleet_file = write_toy_fleet(tmp_path / "f")
    [first] = fleet_flow(fleet_file=str(fleet_file))
    assert first.status == "trained" and first.alias == "champion"
    changed = fleet_file.with_name("changed.yaml")
    changed.write_text(fleet_file.read_text().replace("epochs: 3", "epochs: 4"))

    cut_on_call(monkeypatch, proxy, type(registry.client()), "update_model_version", nth=1)  # version made, not tagged
    trains = []
    real_train = training._train
    monkeypatch.setattr(training, "_train", lambda *a, **kw: trains.append(1) or real_train(*a, **kw))
    with pytest.raises(Exception, match="did not answer while registering toy"):
        fleet_flow(fleet_file=str(changed))
    assert len(trains) == 1
    proxy.up()
    client = MlflowClient(proxy.url)
    assert client.get_model_version_by_alias("toy", "champion").version == first.version  # champion unchanged
    complete = [v.version for v in client.search_model_versions("name='toy'") if "train_key" in v.tags]
    assert complete == [first.version]  # the half-registered version is not a version anyone reads

    monkeypatch.setattr(type(registry.client()), "update_model_version", MlflowClient.update_model_version)
    [again] = fleet_flow(fleet_file=str(changed))
    assert again.status == "trained" and len(trains) == 1  # the stored model, not a new fine-tune
    versions = client.search_model_versions("name='toy'")
    assert all("train_key" in v.tags for v in versions) and len(versions) == 2  # the half one swept away


TWO = """
  toy2:
    data: {source: toy.csv}
    labels: {weather: about the weather, food: about food}
    train: {seed: 7}
"""


def manifests(store_root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store_root)): p.read_bytes() for p in store_root.glob("models/*/*/manifest.json")}


@pytest.mark.integration
def test_prefect_server_restarted_during_a_fleet_run(tmp_path):
    """A real `prefect server start` is killed once the first specialist's model is stored, and started again
    on the same port and database. The run fails or carries on; the next run finishes the rest, and the
    model stored before the crash is not trained again."""
    import time

    from cli.localserver import start_prefect_server

    server = start_prefect_server(tmp_path / "server")
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    fleet_file = write_toy_fleet(tmp_path / "f", extra_specialists=TWO)
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "FLEET_"))}
    env |= {
        "PREFECT_API_URL": server.url,
        "FLEET_HOME": str(home),
        "PREFECT_HOME": str(tmp_path / "client"),
        "FLEET_MAX_WORKERS": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    cmd = [str(Path(sys.executable).parent / "fleet"), "run", "--fleet", str(fleet_file)]
    log = tmp_path / "first.log"
    try:
        first = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while not manifests(home / "store") and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        stored = manifests(home / "store")
        assert len(stored) == 1, log.read_text()[-3000:]
        server.kill()
        server = start_prefect_server(tmp_path / "server", port=port)
        first.wait(600)
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    finally:
        server.stop()
    after = manifests(home / "store")
    assert len(after) == 2 and all(after[k] == v for k, v in stored.items())  # stored model not trained again
    client = MlflowClient(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    for name in ("toy", "toy2"):
        assert client.get_model_version_by_alias(name, "champion").tags["train_key"]
    assert "Traceback" not in second.stdout + second.stderr


def test_a_run_on_another_machine_resumes_from_the_stored_checkpoint(tmp_path, monkeypatch, caplog):
    """A worker dies after its first checkpoint: a retry elsewhere (its own empty run folder) resumes from the
    checkpoint in the store, not from zero; once the model is stored, the stored checkpoints are gone."""
    spec = toy_spec(tmp_path / "f")
    store = LocalStore(tmp_path / "store")
    dataset = curate(spec, store)
    key = training.training_key(spec, dataset.version)
    real_save = training.StoredCheckpoints.save

    class WorkerDied(Exception):
        pass

    def save_then_die(self, folder, step):
        real_save(self, folder, step)
        raise WorkerDied(f"killed after step {step}")

    monkeypatch.setattr(training.StoredCheckpoints, "save", save_then_die)
    with pytest.raises(WorkerDied):
        training.ensure_trained(spec, store, dataset.version, tmp_path / "worker-a" / "runs", progress=False)
    monkeypatch.undo()
    latest = storage.get_json(store, f"checkpoints/toy/{key}/latest.json")
    stored_files = store.list(f"checkpoints/toy/{key}/{latest['folder']}/")
    assert latest["step"] > 0 and any(k.endswith("trainer_state.json") for k in stored_files)
    assert not store.exists(f"models/toy/{key}/manifest.json")

    caplog.set_level("WARNING", logger="fleet.stages.training")
    model = training.ensure_trained(spec, store, dataset.version, tmp_path / "worker-b" / "runs", progress=False)
    assert model.resumed_from is not None and model.resumed_from.endswith(f"checkpoint-{latest['step']}")
    assert f"resuming from the stored checkpoint of step {latest['step']}" in caplog.text
    assert store.exists(f"models/toy/{key}/manifest.json") and store.list(f"checkpoints/toy/{key}/") == []
    # the same bits as a fine-tune that was never interrupted (the checkpoint holds the optimizer and RNG state)
    clean = training.ensure_trained(spec, LocalStore(tmp_path / "clean"), *_same_data(spec, tmp_path), progress=False)
    resumed_weights = (Path(model.model_dir) / "adapter_model.safetensors").read_bytes()
    assert resumed_weights == (Path(clean.model_dir) / "adapter_model.safetensors").read_bytes()


def _same_data(spec, tmp_path):
    dataset = curate(spec, LocalStore(tmp_path / "clean"))
    return dataset.version, tmp_path / "clean-runs"
