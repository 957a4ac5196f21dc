"""Both object stores behave the same; S3 runs against moto's server on loopback."""

import boto3
import pytest

from fleet.storage import LocalStore, S3Store, StorageError


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_env")
    bucket = f"b-{abs(hash(str(tmp_path))) % 10**8}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return S3Store(f"s3://{bucket}/prefix")


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
