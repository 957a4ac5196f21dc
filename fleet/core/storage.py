"""One small object-store interface: a local folder (default) or S3 through boto3.

Keys are ``/``-separated paths. Both stores write each object whole: the local
store writes a temporary file and renames it; S3 ``put_object`` is atomic per
object. Multi-object versions (datasets, models) become visible only when
their ``manifest.json`` is written, which callers do last.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse


class StorageError(RuntimeError):
    """An object store could not be read or written; the message names the location."""


class ObjectStore(Protocol):
    url: str

    def put_bytes(self, key: str, data: bytes) -> None: ...
    def create_if_absent(self, key: str, data: bytes) -> bool: ...
    def get_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]:
        """Keys under the folder ``prefix`` (``a/b`` lists ``a/b/...``, never ``a/bc/...``), sorted."""
        ...

    def upload_dir(self, local: Path, prefix: str) -> None: ...
    def download_dir(self, prefix: str, local: Path) -> None: ...
    def delete(self, key: str) -> None: ...


def _clean_key(key: str) -> str:
    key = key.strip("/")
    if not key or any(part in ("", ".", "..") for part in key.split("/")):
        raise StorageError(f"invalid object key {key!r}")
    return key


class LocalStore:
    """Objects as files under one folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / _clean_key(key)

    def _written(self, key: str, data: bytes) -> tuple[Path, Path]:
        """``data`` in a hidden temporary file beside ``key``'s path (removed again if writing fails)."""
        path, tmp = self._path(key), ""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        except BaseException as exc:  # a full disk, say: nothing half-written stays
            if tmp:
                Path(tmp).unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise StorageError(f"{path}: cannot write ({exc.strerror or exc})") from exc
            raise
        return path, Path(tmp)

    def put_bytes(self, key: str, data: bytes) -> None:
        path, tmp = self._written(key, data)
        try:
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def create_if_absent(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist, atomically (a hard link fails on an existing name)."""
        path, tmp = self._written(key, data)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise StorageError(f"{path}: no such object") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix.strip("/") if prefix.strip("/") else self.root
        if not base.exists():
            return []
        return sorted(
            str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file() and not p.name.startswith(".tmp-")
        )

    def upload_dir(self, local: Path, prefix: str) -> None:
        for p in sorted(Path(local).rglob("*")):
            if p.is_file():
                self.put_bytes(f"{prefix.strip('/')}/{p.relative_to(local).as_posix()}", p.read_bytes())

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def download_dir(self, prefix: str, local: Path) -> None:
        src = self._path(prefix)
        if not src.is_dir():
            raise StorageError(f"{src}: no such folder")
        shutil.copytree(src, local, dirs_exist_ok=True)


class S3Store:
    """Objects under ``s3://BUCKET/PREFIX``; endpoint and credentials from the standard AWS settings."""

    def __init__(self, url: str, client=None):
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise StorageError(f"{url}: not an s3://BUCKET[/PREFIX] URL")
        self.url = url.rstrip("/")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self._client = client

    @property
    def client(self):
        if self._client is None:
            self._client = s3_client()
        return self._client

    def _key(self, key: str) -> str:
        key = _clean_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, fn, **kw):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kw)
        except ClientError as exc:
            raise StorageError(
                f"s3://{self.bucket}/{kw.get('Key', kw.get('Prefix', ''))}: {what} failed: {exc}"
            ) from exc
        except BotoCoreError as exc:
            raise StorageError(f"{self.url}: {what} failed: {exc}") from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call("upload", self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data)

    def delete(self, key: str) -> None:
        self._call("delete", self.client.delete_object, Bucket=self.bucket, Key=self._key(key))

    def create_if_absent(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist (S3 conditional write, ``If-None-Match: *``)."""
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise StorageError(f"s3://{self.bucket}/{self._key(key)}: conditional upload failed: {exc}") from exc

    def get_bytes(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                raise StorageError(f"s3://{self.bucket}/{self._key(key)}: no such object") from None
            raise StorageError(f"s3://{self.bucket}/{self._key(key)}: download failed: {exc}") from exc

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StorageError(f"s3://{self.bucket}/{self._key(key)}: lookup failed: {exc}") from exc

    def list(self, prefix: str) -> list[str]:
        # a folder, as in a local store: "traffic/sms" must not list "traffic/sms-spam/..."
        folder = prefix.strip("/")
        full = self._key(folder) + "/" if folder else (f"{self.prefix}/" if self.prefix else "")
        out = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for obj in page.get("Contents", []):
                k = obj["Key"]
                out.append(k[len(self.prefix) + 1 :] if self.prefix else k)
        return sorted(out)

    def upload_dir(self, local: Path, prefix: str) -> None:
        for p in sorted(Path(local).rglob("*")):
            if p.is_file():
                self.put_bytes(f"{prefix.strip('/')}/{p.relative_to(local).as_posix()}", p.read_bytes())

    def download_dir(self, prefix: str, local: Path) -> None:
        keys = self.list(prefix.strip("/") + "/")
        if not keys:
            raise StorageError(f"s3://{self.bucket}/{self._key(prefix)}: no such folder")
        for k in keys:
            dest = Path(local) / k[len(prefix.strip("/")) + 1 :]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(self.get_bytes(k))


def s3_client():
    """A boto3 S3 client from the standard AWS chain; ``AWS_ENDPOINT_URL`` selects MinIO or moto."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None,
        config=Config(retries={"max_attempts": 5, "mode": "standard"}),
    )


def open_store(url: str | Path) -> ObjectStore:
    """A store for a local folder or an ``s3://`` URL."""
    if str(url).startswith("s3://"):
        return S3Store(str(url))
    return LocalStore(url)


def check_conditional_writes(store: ObjectStore) -> None:
    """Refuse a store that ignores conditional writes (some S3-compatible servers accept ``If-None-Match``
    and overwrite anyway): leases, and so one fine-tune per training key, would not be exclusive there."""
    key = f"leases/.probe/{uuid.uuid4().hex}.json"
    try:
        first = store.create_if_absent(key, b"{}")
        second = store.create_if_absent(key, b"{}")
    finally:
        store.delete(key)
    if not first or second:
        raise StorageError(
            f"{store.url}: this object store ignores conditional writes (If-None-Match: *), so two runs could both "
            "take one lease; use a store that honours them (AWS S3, MinIO, a local folder)"
        )


def put_json(store: ObjectStore, key: str, obj) -> None:
    store.put_bytes(key, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def get_json(store: ObjectStore, key: str):
    return json.loads(store.get_bytes(key))
