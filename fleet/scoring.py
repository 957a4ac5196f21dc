"""Batch scoring: texts from a file or an S3 prefix in, predictions out, every one logged as traffic."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from fleet import registry, traffic
from fleet.curation import CurationError, load_raw
from fleet.spec import DataSpec
from fleet.storage import ObjectStore, S3Store


def read_texts(source: str, text_column: str = "text") -> list[str]:
    """Texts from a local file, ``s3://BUCKET/KEY``, or every file under ``s3://BUCKET/PREFIX/``."""
    sources = [source]
    if source.startswith("s3://") and source.endswith("/"):
        parsed = urlparse(source)
        bucket = S3Store(f"s3://{parsed.netloc}")
        sources = [f"s3://{parsed.netloc}/{k}" for k in bucket.list(parsed.path.strip("/"))]
        if not sources:
            raise CurationError(f"{source}: no files under this prefix")
    texts: list[str] = []
    for src in sources:
        df = load_raw(DataSpec(source=src, text_column=text_column, label_column=text_column))
        texts += [str(t) for t in df["text"] if str(t).strip()]
    return texts


def score(name: str, texts: list[str], store: ObjectStore, alias: str = "champion") -> pd.DataFrame:
    from fleet.training import TextClassifier

    v = registry.champion_version(name) if alias == "champion" else None
    version = str(v.version) if v is not None else None
    if version is None:
        raise registry.RegistryError(f"{name}: no {alias} version to score with")
    with tempfile.TemporaryDirectory() as tmp:
        preds = TextClassifier(registry.download_model_dir(name, version, tmp)).predict(texts)
    out = pd.DataFrame({"text": texts, "label": [p[0] for p in preds], "score": [p[1] for p in preds],
                        "model_version": version})
    traffic.log_predictions(store, name, texts, out["label"].tolist(), out["score"].tolist(), version)
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
