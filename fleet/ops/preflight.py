"""Checks before any work: each data source reads as its spec says, and every server answers.

``check_data`` parses the whole source (parsing is cheap next to curation) and runs, on the raw rows,
every check that decides whether curation can succeed: the file parses, the columns exist, no field is
absurdly long, the text decodes, and enough rows carry valid answers (labels in the spec, two labels or
more, enough of each; well-formed responses). It counts every raw row with a valid answer, so it never
refuses data that curation would accept. ``check_services`` asks the object store, the MLflow server
and the Prefect server for a sign of life, with short timeouts, and names the one that failed.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections import Counter
from urllib.parse import urlparse

import pandas as pd

from fleet.core.spec import SpecialistSpec
from fleet.data import sources
from fleet.data.cleaning import Quarantine
from fleet.data.sources import BAD_BYTES, CurationError
from fleet.kinds import kind_of
from fleet.stages import curation


class ServiceError(RuntimeError):
    """A server or store named in the settings cannot be used; the message says which and why."""


def check_data(spec: SpecialistSpec) -> list[str]:
    """Raise :class:`CurationError` (one line) when curation cannot succeed; return notes on what it drops."""
    data, kind = spec.data, kind_of(spec)
    if not data.source.startswith("hf://"):
        _check_utf16(sources.read_bytes(data), data.encoding, data.source)
    raw = sources.select_columns(sources.load_frame(data), curation.columns(spec, kind), data.source)
    cols = list(kind.source_columns(spec))
    undecodable = raw[cols].apply(lambda col: col.astype(str).str.contains(BAD_BYTES, regex=False)).any(axis=1)
    if undecodable.sum() > len(raw) / 2:
        raise CurationError(
            f"{data.source}: {int(undecodable.sum())} of {len(raw)} rows are not valid "
            f"{data.encoding}; set data.encoding to the file's encoding"
        )
    check = kind.target_check(spec)
    usable, dropped, unknown = [], 0, Counter[str]()
    for row in raw[~undecodable].to_dict("records"):
        verdict = check(str(row["text"]), str(row[kind.target]))
        if str(row["text"]).strip() and verdict.rule is None:
            usable.append({**row, kind.target: verdict.value})
        else:
            dropped += 1
            unknown.update([verdict.detail] if verdict.rule == "unknown-label" else [])
    others = ", ".join(f"{lab!r} ({n})" for lab, n in unknown.most_common(5))
    if others:
        others = (
            f"labels in the file but not in the spec: {others} (add them to labels or map them with data.label_map)"
        )
    if not usable:
        raise CurationError(
            f"{data.source}: none of its {len(raw)} rows has both a text and a valid {kind.target}"
            + (f"; {others}" if others else "")
        )
    try:
        kind.check_dataset(spec, pd.DataFrame(usable, columns=raw.columns), Quarantine(kind.target))
    except CurationError as exc:
        raise CurationError(f"{exc}; {others}" if others else str(exc)) from None
    notes = [f"{int(undecodable.sum())} row(s) do not decode as {data.encoding}"] if undecodable.any() else []
    return notes + ([f"{dropped} row(s) have an empty text or an answer curation will drop"] if dropped else [])


def _check_utf16(raw: bytes, encoding: str, source: str) -> None:
    if encoding.lower().replace("_", "-") in ("utf-16", "utf-16-le", "utf-16-be"):
        return
    head = raw[:4096]
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or (head and head.count(b"\x00") > len(head) // 4):
        raise CurationError(f"{source}: the file looks like UTF-16 text, not {encoding}; set data.encoding: utf-16")


def _get(url: str, timeout: float = 5.0) -> None:
    with urllib.request.urlopen(urllib.request.Request(url), timeout=timeout) as r:
        r.read(64)


def _why(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason if reason is not None else exc).splitlines()[0][:160]


def check_http(what: str, url: str, health: str, fix: str) -> None:
    """``url`` answers ``health`` (any HTTP answer but a server error counts as alive)."""
    try:
        _get(url.rstrip("/") + health)
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            raise ServiceError(f"{what} at {url} answers with an error ({exc.code} {exc.reason}); {fix}") from None
    except (OSError, ValueError) as exc:
        raise ServiceError(f"{what} at {url} does not answer ({_why(exc)}); {fix}") from None


def check_s3(url: str) -> None:
    """The bucket of ``url`` can be listed with the configured endpoint and credentials."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    bucket = urlparse(url).netloc
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
    config = Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"})
    try:
        client = boto3.client("s3", endpoint_url=None if endpoint == "AWS S3" else endpoint, config=config)
        client.list_objects_v2(Bucket=bucket, MaxKeys=1)
    except NoCredentialsError:
        raise ServiceError(
            f"{url}: no AWS credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
        ) from None
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        if code in ("NoSuchBucket", "404"):
            raise ServiceError(f"{url}: bucket {bucket!r} does not exist at {endpoint}") from None
        raise ServiceError(f"{url}: {endpoint} refused the request ({code}): check the AWS credentials") from None
    except (BotoCoreError, ValueError) as exc:
        raise ServiceError(f"{url}: the S3 endpoint {endpoint} does not answer ({_why(exc)})") from None


def check_services(store_url: str, tracking_uri: str, prefect_api_url: str | None) -> None:
    """Each configured server answers; a local store and the embedded defaults need nothing."""
    if store_url.startswith("s3://"):
        check_s3(store_url)
    if urlparse(tracking_uri).scheme in ("http", "https"):
        check_http("the MLflow tracking server", tracking_uri, "/health", "start it or fix MLFLOW_TRACKING_URI")
    if prefect_api_url:
        check_http(
            "the Prefect server",
            prefect_api_url,
            "/health",
            "start it (`fleet up`) or unset PREFECT_API_URL for a temporary local one",
        )
