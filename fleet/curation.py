"""Curation: load a specialist's raw data, clean it, split it, store an immutable version.

Every row either lands in exactly one split or in the quarantine file with the
reason it was set aside; nothing is dropped silently. The curated set is
written under a content hash (the dataset version) and never overwritten: the
version's ``manifest.json`` is written last, so a version without a manifest is
an unfinished write and is ignored.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import random
import re
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from fleet.spec import DataSpec, SpecialistSpec, SplitSpec
from fleet.storage import ObjectStore, StorageError, get_json, put_json

SPLITS = ("train", "validation", "test")
_WS = re.compile(r"\s+")
_CONTROL = dict.fromkeys(c for c in range(32) if chr(c) not in "\t\n\r")


class CurationError(ValueError):
    """The data cannot be curated; the message names the source and the problem."""


@dataclass
class DatasetVersion:
    """A stored, immutable curated data set."""

    specialist: str
    version: str
    uri: str
    counts: dict[str, int]
    label_counts: dict[str, dict[str, int]]
    quarantined: dict[str, int]
    source: str
    rows_read: int
    created: bool = field(default=False, metadata={"doc": "False when this version already existed"})

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- loading


def _format_of(source: str, declared: str) -> str:
    if declared != "auto":
        return declared
    suffix = Path(urlparse(source).path).suffix.lower()
    fmt = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}.get(suffix)
    if fmt is None:
        raise CurationError(f"{source}: cannot tell the format from {suffix or 'no extension'!r}; set data.format")
    return fmt


def resolve_package(source: str) -> Path:
    """``package://PKG/PATH`` -> the file inside the installed package ``PKG``."""
    rest = source[len("package://") :]
    pkg, _, sub = rest.partition("/")
    if not pkg or not sub:
        raise CurationError(f"{source}: expected package://PACKAGE/PATH/IN/PACKAGE")
    # find_spec locates a top-level package without running its __init__ (some data packages no longer import)
    found = importlib.util.find_spec(pkg) if "." not in pkg else None
    if found is None or not found.submodule_search_locations:
        raise CurationError(f"{source}: Python package {pkg!r} is not installed (is the 'demo' extra installed?)")
    path = Path(list(found.submodule_search_locations)[0]) / sub
    if not path.is_file():
        raise CurationError(f"{source}: no file {sub!r} in package {pkg!r} ({path})")
    return path


def check_source(data: DataSpec) -> None:
    """Fail early, before any work, when a local or packaged source is missing."""
    src = data.source
    if src.startswith("package://"):
        resolve_package(src)
    elif src.startswith("hf://"):
        name = src[len("hf://") :]
        if not name:
            raise CurationError(f"{src}: expected hf://DATASET_NAME_OR_SAVED_FOLDER")
    elif src.startswith("s3://"):
        if not urlparse(src).netloc or not urlparse(src).path.strip("/"):
            raise CurationError(f"{src}: expected s3://BUCKET/KEY")
    elif "://" in src:
        raise CurationError(f"{src}: unsupported scheme (use package://, hf://, s3:// or a local path)")
    elif not Path(src).exists():
        raise CurationError(f"{src}: data file not found")


def _decode(raw: bytes, encoding: str, source: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise CurationError(
            f"{source}: not valid {encoding} at line {line} (byte {exc.start}); set data.encoding to the file's encoding"
        ) from None
    except LookupError:
        raise CurationError(f"{source}: unknown encoding {encoding!r} in data.encoding") from None


def _parse_bytes(raw: bytes, fmt: str, data: DataSpec, source: str) -> pd.DataFrame:
    if not raw.strip():
        raise CurationError(f"{source}: the file is empty")
    try:
        if fmt == "parquet":
            return pd.read_parquet(io.BytesIO(raw)).astype(object)
        text = _decode(raw, data.encoding, source)
        if fmt == "jsonl":
            rows = []
            for i, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise CurationError(f"{source}: line {i} is not valid JSON ({exc.msg})") from None
                if not isinstance(obj, dict):
                    raise CurationError(f"{source}: line {i} is not a JSON object")
                rows.append(obj)
            return pd.DataFrame(rows, dtype=object)
        sep = "\t" if fmt == "tsv" else ","
        return pd.read_csv(
            io.StringIO(text),
            sep=sep,
            header=0 if data.header else None,
            names=None if data.header else data.names,
            dtype=str,
            keep_default_na=False,
            quoting=3 if fmt == "tsv" else 0,  # TSV: quotes are text, not delimiters
            on_bad_lines="error",
            engine="python",
        )
    except CurationError:
        raise
    except Exception as exc:  # pandas/pyarrow parse errors: name the file and the format
        raise CurationError(f"{source}: not a valid {fmt} file: {exc}") from None


def load_raw(data: DataSpec) -> pd.DataFrame:
    """The source as a frame with ``text``, ``label`` and ``row`` (1-based row number in the source)."""
    src = data.source
    check_source(data)
    if src.startswith("hf://"):
        df = _load_hf(src[len("hf://") :], data.hf_split)
    else:
        fmt = _format_of(src, data.format)
        if src.startswith("s3://"):
            raw = _read_s3(src)
        else:
            path = resolve_package(src) if src.startswith("package://") else Path(src)
            if path.is_dir():
                raise CurationError(f"{src}: is a folder; name a file")
            raw = path.read_bytes()
        df = _parse_bytes(raw, fmt, data, src)
    missing = [c for c in (data.text_column, data.label_column) if c not in df.columns]
    if missing:
        raise CurationError(
            f"{src}: missing column(s) {', '.join(missing)}; the file has {', '.join(map(str, df.columns)) or 'none'}"
            " (set data.text_column / data.label_column)"
        )
    out = pd.DataFrame(
        {
            "text": df[data.text_column].tolist(),
            "label": df[data.label_column].tolist(),
            "row": range(1, len(df) + 1),
        }
    )
    if out.empty:
        raise CurationError(f"{src}: no data rows")
    return out


def _read_s3(src: str) -> bytes:
    from fleet.storage import S3Store

    parsed = urlparse(src)
    store = S3Store(f"s3://{parsed.netloc}")
    try:
        return store.get_bytes(parsed.path.lstrip("/"))
    except StorageError as exc:
        raise CurationError(str(exc)) from None


def _load_hf(name: str, split: str) -> pd.DataFrame:
    import datasets

    try:
        if Path(name).exists():
            ds = datasets.load_from_disk(name)
        else:
            ds = datasets.load_dataset(name, split=split)
    except Exception as exc:
        raise CurationError(f"hf://{name}: cannot load the data set: {exc}") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise CurationError(f"hf://{name}: no split {split!r} (has {', '.join(ds)}); set data.hf_split")
        ds = ds[split]
    return ds.to_pandas().astype(object)


# --------------------------------------------------------------------------- cleaning


def normalize_text(value) -> str:
    """NFKC, control characters removed, whitespace collapsed. Missing values become ''."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    text = unicodedata.normalize("NFKC", str(value)).translate(_CONTROL)
    return _WS.sub(" ", text).strip()


def clean(df: pd.DataFrame, labels: list[str], label_map: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split raw rows into (clean rows, quarantined rows with a ``reason``)."""
    known = set(labels)
    keep: list[dict] = []
    quarantine: list[dict] = []
    for text, label, row in zip(df["text"], df["label"], df["row"]):
        ntext = normalize_text(text)
        nlabel = normalize_text(label)
        nlabel = label_map.get(nlabel, nlabel)
        rec = {"row": int(row), "text": ntext, "label": nlabel}
        if not ntext:
            quarantine.append({**rec, "reason": "empty-text"})
        elif not nlabel:
            quarantine.append({**rec, "reason": "missing-label"})
        elif nlabel not in known:
            quarantine.append({**rec, "reason": f"unknown-label: {nlabel}"})
        else:
            keep.append(rec)

    # exact duplicates: keep the first copy; a text seen with different labels is ambiguous, so all copies go
    by_text: dict[str, list[dict]] = {}
    for rec in keep:
        by_text.setdefault(rec["text"], []).append(rec)
    kept: list[dict] = []
    for text, recs in by_text.items():
        if len({r["label"] for r in recs}) > 1:
            quarantine += [{**r, "reason": "conflicting-labels"} for r in recs]
            continue
        kept.append(recs[0])
        quarantine += [{**r, "reason": f"duplicate-of-row {recs[0]['row']}"} for r in recs[1:]]
    kept.sort(key=lambda r: r["row"])
    quarantine.sort(key=lambda r: r["row"])
    return pd.DataFrame(kept, columns=["row", "text", "label"]), pd.DataFrame(
        quarantine, columns=["row", "text", "label", "reason"]
    )


def stratified_sample(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most ``n`` rows, keeping each label's share (at least 3 rows of a label that has them)."""
    if len(df) <= n:
        return df
    rng = random.Random(seed)
    parts = []
    for label, group in sorted(df.groupby("label"), key=lambda kv: kv[0]):
        take = max(min(3, len(group)), round(len(group) * n / len(df)))
        idx = sorted(group.index)
        rng.shuffle(idx)
        parts.extend(idx[:take])
    return df.loc[sorted(parts)]


def stratified_split(df: pd.DataFrame, split: SplitSpec) -> dict[str, pd.DataFrame]:
    """Seeded, per-label split. Texts are unique after cleaning, so no text is in two splits."""
    rng = random.Random(split.seed)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for label, group in sorted(df.groupby("label"), key=lambda kv: kv[0]):
        idx = sorted(group.index)
        rng.shuffle(idx)
        n = len(idx)
        n_test = max(1, round(n * split.test))
        n_val = max(1, round(n * split.validation))
        out["test"] += idx[:n_test]
        out["validation"] += idx[n_test : n_test + n_val]
        out["train"] += idx[n_test + n_val :]
    return {s: df.loc[sorted(ix)].reset_index(drop=True) for s, ix in out.items()}


def _jsonl(df: pd.DataFrame) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in df.to_dict("records")).encode()


def curate(spec: SpecialistSpec, store: ObjectStore) -> DatasetVersion:
    """Load, clean, split and store ``spec``'s data; return the (possibly existing) version."""
    raw = load_raw(spec.data)
    labels = list(spec.labels)
    good, quarantine = clean(raw, labels, spec.data.label_map)
    if spec.data.max_rows:
        good = stratified_sample(good, spec.data.max_rows, spec.split.seed)

    present = Counter(good["label"])
    src = spec.data.source
    if len(present) < 2:
        only = ", ".join(present) or "none"
        raise CurationError(
            f"{src}: after cleaning, the data has {len(present)} label(s) ({only}); "
            f"specialist {spec.name} needs at least two of {', '.join(labels)}"
        )
    few = [f"{lab} ({present.get(lab, 0)})" for lab in labels if present.get(lab, 0) < 3]
    if few:
        raise CurationError(
            f"{src}: label(s) with fewer than 3 clean examples, too few for train/validation/test: {', '.join(few)}"
        )

    splits = stratified_split(good, spec.split)
    blobs = {s: _jsonl(splits[s]) for s in SPLITS}
    digest = hashlib.sha256()
    digest.update(json.dumps(labels).encode())
    for s in SPLITS:
        digest.update(s.encode() + b"\0" + blobs[s])
    version = digest.hexdigest()[:16]
    prefix = f"datasets/{spec.name}/{version}"

    counts = {s: len(splits[s]) for s in SPLITS}
    label_counts = {s: dict(sorted(Counter(splits[s]["label"]).items())) for s in SPLITS}
    reasons = Counter(r.split(":")[0].split(" ")[0] for r in quarantine["reason"])
    manifest = {
        "specialist": spec.name,
        "version": version,
        "source": src,
        "labels": labels,
        "rows_read": len(raw),
        "counts": counts,
        "label_counts": label_counts,
        "quarantined": dict(sorted(reasons.items())),
        "split": spec.split.model_dump(),
        "max_rows": spec.data.max_rows,
        "files": [f"{s}.jsonl" for s in SPLITS] + ["quarantine.jsonl"],
    }
    created = False
    if not store.exists(f"{prefix}/manifest.json"):
        for s in SPLITS:
            store.put_bytes(f"{prefix}/{s}.jsonl", blobs[s])
        store.put_bytes(f"{prefix}/quarantine.jsonl", _jsonl(quarantine))
        put_json(store, f"{prefix}/manifest.json", manifest)  # last: the version becomes visible
        created = True
    return DatasetVersion(
        specialist=spec.name,
        version=version,
        uri=f"{store.url}/{prefix}",
        counts=counts,
        label_counts=label_counts,
        quarantined=manifest["quarantined"],
        source=src,
        rows_read=len(raw),
        created=created,
    )


def load_split(store: ObjectStore, specialist: str, version: str, split: str) -> pd.DataFrame:
    """One split of a stored version; refuses a version whose manifest was never written."""
    prefix = f"datasets/{specialist}/{version}"
    if not store.exists(f"{prefix}/manifest.json"):
        raise CurationError(f"{store.url}/{prefix}: no such dataset version (or an unfinished write)")
    raw = store.get_bytes(f"{prefix}/{split}.jsonl").decode()
    return pd.DataFrame([json.loads(line) for line in raw.splitlines() if line], columns=["row", "text", "label"])


def load_manifest(store: ObjectStore, specialist: str, version: str) -> dict:
    return get_json(store, f"datasets/{specialist}/{version}/manifest.json")
