"""Batch scoring: texts from a file or an S3 prefix in, the champion's answers out, each one logged as
traffic (so batch jobs feed drift monitoring like live requests do)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from fleet.core.records import ModelRecord
from fleet.core.sections import DataSpec
from fleet.core.spec import source_in_roots
from fleet.core.storage import ObjectStore, S3Store
from fleet.data.sources import CurationError, load_raw
from fleet.kinds import kind_of
from fleet.ops import traffic
from fleet.stages import registry


def read_texts(source: str, text_column: str = "text", roots: Sequence[Path] | None = None) -> list[str]:
    """Texts from a local file, ``s3://BUCKET/KEY``, or every file under ``s3://BUCKET/PREFIX/``; ``roots``
    (``FLEET_DATA_ROOTS``): the folders a local file must lie in (None: any)."""
    why, source = source_in_roots(source, roots)
    if why is not None:
        raise CurationError(why)
    sources = [source]
    if source.startswith("s3://") and source.endswith("/"):
        parsed = urlparse(source)
        bucket = S3Store(f"s3://{parsed.netloc}")
        sources = [f"s3://{parsed.netloc}/{k}" for k in bucket.list(parsed.path.strip("/"))]
        if not sources:
            raise CurationError(f"{source}: no files under this prefix")
    texts: list[str] = []
    for src in sources:
        df = load_raw(DataSpec(source=src), {"text": text_column})
        texts += [str(t) for t in df["text"] if str(t).strip()]
    return texts


def score(name: str, texts: list[str], store: ObjectStore, key: bytes | None = None) -> pd.DataFrame:
    """The champion's answers to ``texts`` (one row each, with the version that answered); ``key``: the traffic
    log's hashing key (None: the store's own)."""
    v = registry.champion_version(name)
    if v is None:
        raise registry.RegistryError(
            f"{name}: no champion version to score with; train it with `fleet run --only {name}`"
        )
    version = str(v.version)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = registry.download_model_dir(name, version, tmp)
        kind = kind_of(ModelRecord.read(model_dir).task)
        outputs = kind.load(model_dir, f"v{version}").predict(texts)
    out = kind.to_frame(outputs)
    out.insert(0, "text", texts)
    out["model_version"] = version
    rows = [r | {"client": "batch"} for r in kind.traffic_rows(texts, outputs)]
    traffic.log_predictions(store, name, rows, version, key=key)
    return out


def write_predictions(df: pd.DataFrame, dest: str) -> str:
    blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in df.to_dict("records")).encode()
    if dest.startswith("s3://"):
        parsed = urlparse(dest)
        S3Store(f"s3://{parsed.netloc}").put_bytes(parsed.path.lstrip("/"), blob)
    else:
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        Path(dest).write_bytes(blob)
    return dest
