"""Both object stores behave the same; S3 runs against moto's server on loopback."""

import boto3
import pytest

from fleet.core.storage import S3Store, StorageError


def test_roundtrip_list_exists(store, tmp_path):
    store.put_bytes("a/b/c.txt", b"hello")
    store.put_bytes("a/d.txt", b"x")
    assert store.get_bytes("a/b/c.txt") == b"hello"
    assert store.exists("a/d.txt") and not store.exists("a/zz")
    assert store.list("a") == ["a/b/c.txt", "a/d.txt"]
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f.bin").write_bytes(b"\x00\x01")
    store.upload_dir(src, "up")
    dest = tmp_path / "dest"
    store.download_dir("up", dest)
    assert (dest / "sub" / "f.bin").read_bytes() == b"\x00\x01"


def test_missing_objects_and_bad_keys(store, tmp_path):
    with pytest.raises(StorageError, match="no such object"):
        store.get_bytes("nope.txt")
    with pytest.raises(StorageError, match="invalid object key"):
        store.put_bytes("../escape", b"")
    with pytest.raises(StorageError, match="no such folder"):
        store.download_dir("nothing-here", tmp_path / "x")


def test_unreachable_s3_names_the_location(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(StorageError, match="s3://nowhere"):
        S3Store("s3://nowhere/p").put_bytes("k", b"v")


class _Fault:
    """A botocore before-send hook: answer some PutObject calls with HTTP 503, as a flaky S3 would."""

    def __init__(self, key_part: str, times: int):
        self.key_part, self.times, self.seen = key_part, times, 0

    def __call__(self, request, **_):
        from botocore.awsrequest import AWSResponse

        if request.method == "PUT" and self.key_part in request.url and self.seen < self.times:
            self.seen += 1
            return AWSResponse(request.url, 503, {}, _Raw(b"<Error><Code>SlowDown</Code></Error>"))
        return None


class _Raw:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **_):
        yield self.body

    def read(self, *_):
        return self.body


def _faulty_store(bucket: str, fault: _Fault, max_attempts: int = 3) -> S3Store:
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", config=Config(retries={"max_attempts": max_attempts, "mode": "standard"}))
    client.meta.events.register("before-send.s3.PutObject", fault)
    return S3Store(f"s3://{bucket}/home", client=client)


def _toy_spec(tmp_path):
    import pandas as pd

    from conftest import sentences
    from fleet.kinds import parse_fleet

    rows = [{"text": t, "label": ["ham", "spam"][i % 2]} for i, t in enumerate(sentences(60))]
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    return parse_fleet(
        {"specialists": {"s": {"data": {"source": str(tmp_path / "d.csv")}, "labels": ["ham", "spam"]}}}
    ).specialists["s"]


def test_transient_s3_errors_are_retried(s3_env, tmp_path):
    from fleet.data.versions import load_split
    from fleet.stages.curation import curate

    boto3.client("s3").create_bucket(Bucket="flaky")
    fault = _Fault("train.jsonl", times=2)
    store = _faulty_store("flaky", fault, max_attempts=3)
    ds = curate(_toy_spec(tmp_path), store)
    assert fault.seen == 2 and store.exists(f"datasets/s/{ds.version}/manifest.json")
    assert len(load_split(store, "s", ds.version, "train")) == ds.counts["train"]


def test_a_fault_mid_upload_leaves_no_visible_version(s3_env, tmp_path):
    from fleet.data.versions import load_split
    from fleet.stages.curation import CurationError, curate

    boto3.client("s3").create_bucket(Bucket="broken")
    spec = _toy_spec(tmp_path)
    fault = _Fault("test.jsonl", times=10**6)  # the third file never uploads
    with pytest.raises(StorageError, match="upload failed"):
        curate(spec, _faulty_store("broken", fault))
    healthy = S3Store("s3://broken/home")
    written = healthy.list("datasets/s")
    assert written and not any(k.endswith("manifest.json") for k in written)  # partial files, but no version
    version = written[0].split("/")[2]
    with pytest.raises(CurationError, match="no such dataset version"):
        load_split(healthy, "s", version, "train")
    ds = curate(spec, healthy)  # the next attempt completes the same version
    assert ds.version == version and ds.created and len(load_split(healthy, "s", version, "test")) == ds.counts["test"]


def test_specialists_whose_names_are_prefixes_of_each_other_never_mix(store):
    """A listing is of a folder: sms's traffic and leases do not include sms-spam's (on S3 a key prefix
    "traffic/sms" would have listed "traffic/sms-spam/..." too)."""
    from fleet.core.leases import Lease
    from fleet.ops import traffic

    traffic.log_predictions(store, "sms", [{"text": "hi", "label": "ham"}], "1")
    traffic.log_predictions(store, "sms-spam", [{"text": "win", "label": "spam"}] * 2, "1")
    assert traffic.read_all(store, "traffic", "sms")["label"].tolist() == ["ham"]
    assert len(traffic.read_all(store, "traffic", "sms-spam")) == 2
    assert store.list("traffic/sms") == [k for k in store.list("traffic") if k.startswith("traffic/sms/")]

    spam = Lease(store, "register/sms-spam")
    assert spam.try_acquire()[0]
    won, holder = Lease(store, "register/sms").try_acquire()  # another specialist's lease: free
    assert won and holder is None
