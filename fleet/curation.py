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

from fleet.spec import CurationSpec, DataSpec, SpecialistSpec, SplitSpec
from fleet.storage import ObjectStore, StorageError, put_json

SPLITS = ("train", "validation", "test")
CARD_FILES = ("DATASET.md", "report.json", "lengths.png")  # written beside every version
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
    changed: dict[str, int] = field(default_factory=dict)

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


BAD_BYTES = "\U0010fffd"  # private-use sentinel for bytes that do not decode (never valid input text)


def _mark_bad_bytes(exc: UnicodeDecodeError):
    return BAD_BYTES, exc.end


def _decode(raw: bytes, encoding: str, source: str) -> str:
    """Decode; undecodable bytes become BAD_BYTES so that `clean` quarantines their rows ("invalid-encoding")."""
    import codecs

    try:
        codecs.lookup_error("fleet-mark-bad-bytes")
    except LookupError:
        codecs.register_error("fleet-mark-bad-bytes", _mark_bad_bytes)
    try:
        return raw.decode(encoding, errors="fleet-mark-bad-bytes")
    except LookupError:
        raise CurationError(f"{source}: unknown encoding {encoding!r} in data.encoding") from None


def _parse_bytes(raw: bytes, fmt: str, data: DataSpec, source: str) -> pd.DataFrame:
    if not raw.strip():
        raise CurationError(f"{source}: the file is empty")
    try:
        if fmt == "parquet":
            return pd.read_parquet(io.BytesIO(raw)).astype(object)
        if fmt == "jsonl":
            text = _decode(raw, data.encoding, source)
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
        return pd.read_csv(
            io.StringIO(_decode(raw, data.encoding, source)),
            sep="\t" if fmt == "tsv" else ",",
            header=0 if data.header else None,
            names=None if data.header else data.names,
            dtype=str,
            keep_default_na=False,
            quoting=3 if fmt == "tsv" else 0,  # TSV: quotes are text, not delimiters
            on_bad_lines="error",
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


_TOKEN = re.compile(r"\w+")
QUARANTINE_TEXT_LIMIT = 1000  # characters of a quarantined text kept in the file (the row number points to the rest)


class _Quarantine:
    """Collects removed and changed rows, each with its rule, action and original row number."""

    def __init__(self):
        self.records: list[dict] = []

    def add(self, row: int, rule: str, text: str, label: str, action: str = "dropped", detail: str = "") -> None:
        if len(text) > QUARANTINE_TEXT_LIMIT:
            text = text[:QUARANTINE_TEXT_LIMIT] + f" ...[{len(text)} characters]"
        rec = {"row": int(row), "rule": rule, "action": action, "text": text, "label": label}
        if detail:
            rec["detail"] = detail
        self.records.append(rec)

    def frame(self) -> pd.DataFrame:
        cols = ["row", "rule", "action", "text", "label", "detail"]
        df = pd.DataFrame(sorted(self.records, key=lambda r: (r["row"], r["rule"])), columns=cols)
        return df.astype({"detail": object}).where(df.notna(), None)


def _language_filter(language: str | None):
    if not language:
        return None
    try:
        import langid
    except ImportError:
        raise CurationError("curation.language is set but the `langid` package is not installed (pip install langid)") from None
    return lambda text: langid.classify(text)[0]


def clean(
    df: pd.DataFrame, labels: list[str], label_map: dict[str, str], rules: CurationSpec | None = None,
    q: _Quarantine | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply the curation rules: (kept rows, quarantine with ``rule`` and ``action`` per removed or changed row).

    Rules, in order: invalid encoding, empty text, missing/unknown label (after ``label_map``), PII
    (redact or drop), length in characters and words, language, exact duplicates, near-duplicates.
    """
    from fleet.pii import PiiRedactor

    rules = rules or CurationSpec()
    q = q if q is not None else _Quarantine()  # curate() passes its own, to add later rules' rows
    known = set(labels)
    redactor = PiiRedactor(rules.pii.kinds, rules.pii.phone_regions) if rules.pii.kinds else None
    detect = _language_filter(rules.language)
    keep: list[dict] = []
    redacted: dict = {}
    for text, label, row in zip(df["text"], df["label"], df["row"]):
        raw_text = "" if text is None or (isinstance(text, float) and text != text) else str(text)
        if BAD_BYTES in raw_text or BAD_BYTES in str(label):
            q.add(row, "invalid-encoding", normalize_text(raw_text).replace(BAD_BYTES, "\ufffd"), "")
            continue
        ntext = normalize_text(raw_text)
        raw_label = normalize_text(label)
        nlabel = label_map.get(raw_label, raw_label)
        if redactor is not None and ntext:
            red = redacted.get(ntext)
            if red is None:  # duplicates are common in raw data: redact each distinct text once
                red = redacted[ntext] = redactor.redact(ntext)
            if red.hits:
                kinds = ",".join(sorted(red.hits))
                if rules.pii.action == "drop-row":
                    q.add(row, "pii", red.text, nlabel, detail=kinds)
                    continue
                q.add(row, "pii", red.text, nlabel, action="changed", detail=kinds)
                ntext = red.text
        if not ntext:
            q.add(row, "empty-text", ntext, nlabel)
        elif not nlabel:
            q.add(row, "missing-label", ntext, nlabel)
        elif nlabel not in known:
            q.add(row, "unknown-label", ntext, nlabel, detail=nlabel)
        elif len(ntext) < rules.min_chars:
            q.add(row, "too-short", ntext, nlabel, detail=f"{len(ntext)} chars")
        elif len(ntext) > rules.max_chars:
            q.add(row, "too-long", ntext, nlabel, detail=f"{len(ntext)} chars")
        else:
            words = len(_TOKEN.findall(ntext))
            if words < rules.min_tokens:
                q.add(row, "too-few-tokens", ntext, nlabel, detail=f"{words} words")
            elif rules.max_tokens is not None and words > rules.max_tokens:
                q.add(row, "too-many-tokens", ntext, nlabel, detail=f"{words} words")
            elif detect is not None and (lang := detect(ntext)) != rules.language:
                q.add(row, "language", ntext, nlabel, detail=lang)
            else:
                if nlabel != raw_label:
                    q.add(row, "label-map", ntext, nlabel, action="changed", detail=f"{raw_label} -> {nlabel}")
                keep.append({"row": int(row), "text": ntext, "label": nlabel})

    # exact duplicates: keep the first copy; a text seen with different labels is ambiguous, so all copies go
    by_text: dict[str, list[dict]] = {}
    for rec in keep:
        by_text.setdefault(rec["text"], []).append(rec)
    kept: list[dict] = []
    for recs in by_text.values():
        if len({r["label"] for r in recs}) > 1:
            for r in recs:
                q.add(r["row"], "conflicting-labels", r["text"], r["label"])
            continue
        kept.append(recs[0])
        for r in recs[1:]:
            q.add(r["row"], "duplicate", r["text"], r["label"], detail=f"of row {recs[0]['row']}")
    kept.sort(key=lambda r: r["row"])

    nd = rules.near_duplicates
    if nd.enabled and kept:
        from fleet.dedup import near_duplicate_groups

        groups = near_duplicate_groups([r["text"] for r in kept], nd.threshold, nd.shingle_size, nd.num_perm, nd.shingle)
        survivors = []
        for i, rec in enumerate(kept):
            if groups[i] == i:
                survivors.append(rec)
            else:
                q.add(rec["row"], "near-duplicate", rec["text"], rec["label"], detail=f"of row {kept[groups[i]]['row']}")
        kept = survivors
    return pd.DataFrame(kept, columns=["row", "text", "label"]), q.frame()


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


class VersionExistsError(CurationError):
    """A dataset version is immutable: writing it again is refused."""


def write_version(store: ObjectStore, prefix: str, files: dict[str, bytes], manifest: dict) -> None:
    """Write a version's files, then its manifest; refuse if the version already exists.

    Until the manifest lands the version does not exist for readers, so a failure half-way
    leaves nothing visible, and the next attempt writes the same bytes again.
    """
    if store.exists(f"{prefix}/manifest.json"):
        raise VersionExistsError(f"{store.url}/{prefix}: this dataset version exists and is never overwritten")
    for name, blob in files.items():
        store.put_bytes(f"{prefix}/{name}", blob)
    put_json(store, f"{prefix}/manifest.json", manifest)


def _check_labels(good: pd.DataFrame, q: _Quarantine, labels: list[str], rules: CurationSpec, src: str, name: str):
    present = Counter(good["label"])
    few = [lab for lab in labels if present.get(lab, 0) < rules.min_examples_per_label]
    if few and rules.on_too_few == "drop-label":
        for rec in good[good["label"].isin(few)].to_dict("records"):
            q.add(rec["row"], "label-too-rare", rec["text"], rec["label"],
                  detail=f"{present[rec['label']]} < {rules.min_examples_per_label}")
        good = good[~good["label"].isin(few)]
        present = Counter(good["label"])
        few = []
    if len(present) < 2:
        only = ", ".join(present) or "none"
        raise CurationError(
            f"{src}: after cleaning, the data has {len(present)} label(s) ({only}); "
            f"specialist {name} needs at least two of {', '.join(labels)}"
        )
    if few:
        raise CurationError(
            f"{src}: label(s) with fewer than {rules.min_examples_per_label} clean examples "
            f"(curation.min_examples_per_label): {', '.join(f'{lab} ({present.get(lab, 0)})' for lab in few)}; "
            "add data, or set curation.on_too_few: drop-label"
        )
    return good


def _remove_leaks(splits: dict[str, pd.DataFrame], rules: CurationSpec, q: _Quarantine) -> dict[str, pd.DataFrame]:
    """Quarantine validation/test rows that still have a near-twin in train (an exact check after LSH)."""
    from fleet.dedup import cross_matches

    nd = rules.near_duplicates
    train = splits["train"]
    for name in ("validation", "test"):
        part = splits[name]
        hits = cross_matches(train["text"].tolist(), part["text"].tolist(), nd.threshold, nd.shingle_size,
                             nd.num_perm, nd.shingle)
        for qi, ri, j in hits:
            rec = part.iloc[qi]
            q.add(rec["row"], "leakage", rec["text"], rec["label"],
                  detail=f"{name} text near-twin of train row {train.iloc[ri]['row']} (Jaccard {j:.2f})")
        if hits:
            splits[name] = part.drop(part.index[[h[0] for h in hits]]).reset_index(drop=True)
    return splits


def curate(spec: SpecialistSpec, store: ObjectStore, extra: pd.DataFrame | None = None) -> DatasetVersion:
    """Load, clean, split and store ``spec``'s data; return the (possibly existing) version.

    ``extra`` (columns ``text`` and ``label``, e.g. labelled feedback) is appended to the source's
    rows before cleaning; its rows are numbered after the source's.
    """
    from fleet.datacard import build_report, length_histogram_png, report_markdown

    raw = load_raw(spec.data)
    source_rows = len(raw)
    if extra is not None and len(extra):
        more = pd.DataFrame({"text": extra["text"].tolist(), "label": extra["label"].tolist(),
                             "row": range(len(raw) + 1, len(raw) + len(extra) + 1)})
        raw = pd.concat([raw, more], ignore_index=True)
    labels = list(spec.labels)
    rules = spec.curation
    src = spec.data.source
    q = _Quarantine()
    good, _ = clean(raw, labels, spec.data.label_map, rules, q)
    bad_enc = sum(r["rule"] == "invalid-encoding" for r in q.records)
    if bad_enc > len(raw) / 2:
        raise CurationError(
            f"{src}: {bad_enc} of {len(raw)} rows are not valid {spec.data.encoding}; set data.encoding to the file's encoding"
        )
    good = _check_labels(good, q, labels, rules, src, spec.name)
    before_sample = len(good)
    if spec.data.max_rows:  # caps the source's rows; extra rows (feedback) are always kept
        from_source = good["row"] <= source_rows
        good = pd.concat([stratified_sample(good[from_source], spec.data.max_rows, spec.split.seed), good[~from_source]])

    splits = stratified_split(good.reset_index(drop=True), spec.split)
    if rules.near_duplicates.enabled:
        splits = _remove_leaks(splits, rules, q)
    quarantine = q.frame()
    blobs = {f"{s}.jsonl": _jsonl(splits[s]) for s in SPLITS}
    digest = hashlib.sha256()
    digest.update(json.dumps(labels).encode())
    for s in SPLITS:
        digest.update(s.encode() + b"\0" + blobs[f"{s}.jsonl"])
    version = digest.hexdigest()[:16]
    prefix = f"datasets/{spec.name}/{version}"

    counts = {s: len(splits[s]) for s in SPLITS}
    label_counts = {s: dict(sorted(Counter(splits[s]["label"]).items())) for s in SPLITS}
    report = build_report(spec, raw, quarantine, splits, version, sampled_out=before_sample - len(good))
    manifest = {
        "specialist": spec.name,
        "version": version,
        "source": src,
        "labels": labels,
        "rows_read": len(raw),
        "counts": counts,
        "label_counts": label_counts,
        "quarantined": report["dropped"],
        "changed": report["changed"],
        "sampled_out": report["sampled_out"],
        "curation": rules.model_dump(),
        "split": spec.split.model_dump(),
        "files": sorted(blobs) + ["quarantine.jsonl", *CARD_FILES],
    }
    created = False
    if not store.exists(f"{prefix}/manifest.json"):
        files = {
            **blobs,
            "quarantine.jsonl": _jsonl(quarantine),
            "report.json": json.dumps(report, indent=2, default=str).encode(),
            "DATASET.md": report_markdown(report).encode(),
            "lengths.png": length_histogram_png(report),
        }
        write_version(store, prefix, files, manifest)
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
        changed=manifest["changed"],
    )


def load_split(store: ObjectStore, specialist: str, version: str, split: str) -> pd.DataFrame:
    """One split of a stored version; refuses a version whose manifest was never written."""
    prefix = f"datasets/{specialist}/{version}"
    if not store.exists(f"{prefix}/manifest.json"):
        raise CurationError(f"{store.url}/{prefix}: no such dataset version (or an unfinished write)")
    raw = store.get_bytes(f"{prefix}/{split}.jsonl").decode()
    return pd.DataFrame([json.loads(line) for line in raw.splitlines() if line], columns=["row", "text", "label"])



def card_files(store: ObjectStore, specialist: str, version: str) -> dict[str, bytes]:
    """The data card, report and length histogram of a stored version."""
    return {name: store.get_bytes(f"datasets/{specialist}/{version}/{name}") for name in CARD_FILES}


def load_card(store: ObjectStore, specialist: str, version: str) -> str:
    return store.get_bytes(f"datasets/{specialist}/{version}/DATASET.md").decode()
