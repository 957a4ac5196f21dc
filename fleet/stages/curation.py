"""Curation: load a specialist's raw data, clean it, split it, store an immutable version.

Every row either lands in exactly one split or in the quarantine file with the reason it was set aside;
nothing is dropped silently. The parts: reading sources (``fleet.data.sources``), the rules
(``fleet.data.cleaning`` and the kind's own), splitting (``fleet.data.splitting``), versioned storage
(``fleet.data.versions``) and the data card (``fleet.report.datacard``). An input curated before (same source
bytes, settings and curation code) is not curated again: its version is found by the input's hash.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

from fleet.core.records import DatasetManifest
from fleet.core.results import DatasetVersion
from fleet.core.spec import SpecialistSpec
from fleet.core.storage import ObjectStore
from fleet.data import versions
from fleet.data.cleaning import Cleaner, Quarantine, clean_rows
from fleet.data.dedup import cross_matches
from fleet.data.sources import CurationError, load_frame, read_bytes, select_columns
from fleet.data.splitting import SPLITS, remove_leaks
from fleet.kinds import kind_of
from fleet.kinds.base import SpecialistKind
from fleet.report.datacard import build_report, length_histogram_png, report_markdown

__all__ = ["CurationError", "DatasetVersion", "curate"]


def _with_extra(raw: pd.DataFrame, extra: pd.DataFrame | None, target: str) -> pd.DataFrame:
    """``extra`` rows (e.g. labelled feedback) appended, numbered after the source's rows."""
    if extra is None or not len(extra):
        return raw
    more = pd.DataFrame(
        {
            "text": extra["text"].tolist(),
            target: extra[target].tolist(),
            "row": range(len(raw) + 1, len(raw) + len(extra) + 1),
        }
    )
    return pd.concat([raw, more], ignore_index=True)


def columns(spec: SpecialistSpec, kind: SpecialistKind) -> dict[str, str]:
    """Our columns -> the source's: the kind's own, then the kept extras (slices, the split's group)."""
    extras = [*spec.data.extra_columns, *([spec.data.group_column] if spec.data.group_column else [])]
    return kind.source_columns(spec) | {c: c for c in extras}


LABEL_SOURCE = ["label_source", "labeled_by", "labeled_at"]  # who or what gave each training label, and when


def _held_out_twins(spec: SpecialistSpec, splits: dict[str, pd.DataFrame], texts: list[str]) -> dict[int, str]:
    """Index in ``texts`` -> why it leaks into the validation or test split (the same text, or a near-twin)."""
    held = pd.concat([splits["validation"], splits["test"]])
    held_texts = held["text"].tolist()
    known = set(held_texts)
    out = {i: "in the validation/test split" for i, t in enumerate(texts) if t in known}
    nd = spec.curation.near_duplicates
    if nd.enabled:
        for qi, ri, j in cross_matches(held_texts, texts, nd.threshold, nd.shingle_size, nd.num_perm, nd.shingle):
            out.setdefault(qi, f"near-twin of held-out row {held.iloc[ri]['row']} (Jaccard {j:.2f})")
    return out


def _add_reviewed(
    spec: SpecialistSpec, kind: SpecialistKind, splits: dict[str, pd.DataFrame], reviewed: pd.DataFrame, q: Quarantine
) -> dict[str, pd.DataFrame]:
    """The flywheel's rows (``fleet.labeling``) joined to the training split only, so the evaluation's splits
    stay as they were: same cleaning rules; a row that leaks into validation/test is quarantined; a human label
    on a text already in train replaces its label (recorded), a teacher label there is dropped as a duplicate."""
    first = int(max(int(df["row"].max()) if len(df) else 0 for df in splits.values())) + 1
    cleaner = Cleaner(spec.curation, kind.target_check(spec), q, kind.redact_target)
    meta = reviewed[LABEL_SOURCE].to_dict("records")
    rows = [
        r
        for r in map(cleaner.row, range(first, first + len(reviewed)), reviewed["text"], reviewed[kind.target], meta)
        if r is not None
    ]
    leaks = _held_out_twins(spec, splits, [r["text"] for r in rows])
    for i, why in leaks.items():
        q.add(rows[i]["row"], "leakage", rows[i]["text"], rows[i][kind.target], detail=f"reviewed row {why}")
    train = splits["train"].assign(label_source="original", labeled_by=None, labeled_at=None)
    records = train.to_dict("records")
    position = {rec["text"]: rec for rec in records}
    target = kind.target
    for i, r in enumerate(rows):
        old = position.get(r["text"])
        if i in leaks:
            continue
        if old is None:
            records.append(r)
        elif r["label_source"] == "human" and old[target] != r[target]:
            detail = f"{old[target]} -> {r[target]} by {r['labeled_by']}"
            q.add(int(old["row"]), "relabelled", r["text"], r[target], action="changed", detail=detail)
            old.update({c: r[c] for c in (target, *LABEL_SOURCE)})
        else:
            q.add(r["row"], "duplicate", r["text"], r[target], detail=f"of train row {old['row']}")
    out = dict(splits)
    out["train"] = pd.DataFrame(records, columns=train.columns)
    return out


def _input_key(
    spec: SpecialistSpec, raw: bytes | None, extra: pd.DataFrame | None, reviewed: pd.DataFrame | None = None
) -> str | None:
    if raw is None:  # hf:// data sets: no bytes to hash
        return None
    settings = {
        "task": spec.task,
        "data": spec.data.model_dump(),
        "labels": spec.labels,
        "curation": spec.curation.model_dump(),
        "split": spec.split.model_dump(),
    }
    extra_bytes = b"" if extra is None else extra.to_json(orient="records").encode()
    if reviewed is not None and len(reviewed):
        extra_bytes += b"\0reviewed\0" + reviewed.to_json(orient="records").encode()
    return versions.input_hash(raw, settings, extra_bytes)


def _clean(
    spec: SpecialistSpec, kind: SpecialistKind, raw: pd.DataFrame, source_rows: int, q: Quarantine
) -> tuple[pd.DataFrame, int]:
    """The kept rows (sampled to ``data.max_rows``) and how many clean rows the sample left out."""
    cleaner = Cleaner(spec.curation, kind.target_check(spec), q, kind.redact_target)
    good = clean_rows(raw, cleaner, kind.conflict_rule)
    bad = q.count("invalid-encoding")
    if bad > len(raw) / 2:
        raise CurationError(
            f"{spec.data.source}: {bad} of {len(raw)} rows are not valid {spec.data.encoding}; "
            "set data.encoding to the file's encoding"
        )
    good = kind.check_dataset(spec, good, q)
    before = len(good)
    if spec.data.max_rows:  # caps the source's rows; extra rows (feedback) are always kept
        from_source = good["row"] <= source_rows
        good = pd.concat([kind.sample(spec, good[from_source], spec.data.max_rows), good[~from_source]])
    return good.reset_index(drop=True), before - len(good)


def _label_sources(splits: dict[str, pd.DataFrame]) -> dict[str, int]:
    """Training rows by who labelled them (original data, human review, teacher); every row is original
    without the flywheel."""
    train = splits["train"]
    if "label_source" not in train:
        return {"original": len(train)}
    return dict(sorted(Counter(train["label_source"]).items()))


def _store(
    spec: SpecialistSpec,
    kind: SpecialistKind,
    store: ObjectStore,
    raw: pd.DataFrame,
    splits: dict[str, pd.DataFrame],
    q: Quarantine,
    sampled_out: int,
) -> DatasetVersion:
    blobs = {f"{s}.jsonl": versions.to_jsonl(splits[s]) for s in SPLITS}
    labels = kind.labels(spec)
    version = versions.content_version(labels, blobs, SPLITS)
    quarantine = q.frame()
    report = build_report(spec, kind.target, raw, quarantine, splits, version, sampled_out)
    ds = DatasetVersion(
        specialist=spec.name,
        task=spec.task,
        version=version,
        uri=f"{store.url}/{versions.prefix(spec.name, version)}",
        source=spec.data.source,
        rows_read=len(raw),
        counts={s: len(splits[s]) for s in SPLITS},
        label_counts={s: dict(sorted(Counter(splits[s][kind.target]).items())) for s in SPLITS} if labels else {},
        quarantined=report.dropped,
        changed=report.changed,
        label_sources=_label_sources(splits),
    )
    if not versions.exists(store, spec.name, version):
        manifest = DatasetManifest(
            **ds.model_dump(exclude={"created", "uri"}),
            labels=labels,
            target=kind.target,
            sampled_out=sampled_out,
            curation=spec.curation.model_dump(),
            split=spec.split.model_dump(),
            files=[*sorted(blobs), "quarantine.jsonl", *versions.CARD_FILES],
        )
        files = {
            **blobs,
            "quarantine.jsonl": versions.to_jsonl(quarantine),
            "report.json": report.model_dump_json(indent=2).encode(),
            "DATASET.md": report_markdown(report).encode(),
            "lengths.png": length_histogram_png(report),
        }
        versions.write_version(store, versions.prefix(spec.name, version), files, manifest)
        ds.created = True
    return ds


def curate(
    spec: SpecialistSpec, store: ObjectStore, extra: pd.DataFrame | None = None, reviewed: pd.DataFrame | None = None
) -> DatasetVersion:
    """Load, clean, split and store ``spec``'s data; return the (possibly existing) version.

    ``extra`` (columns ``text`` and the target, e.g. labelled feedback) is appended to the source's rows
    before cleaning; its rows are numbered after the source's. ``reviewed`` (the flywheel's rows: ``text``,
    the target and ``LABEL_SOURCE``) joins the training split only, after the split.
    """
    kind = kind_of(spec)
    raw_bytes = None if spec.data.source.startswith("hf://") else read_bytes(spec.data)
    key = _input_key(spec, raw_bytes, extra, reviewed)
    if key is not None and (known := versions.remembered(store, spec.name, key)) is not None:
        return known
    raw = select_columns(load_frame(spec.data, raw_bytes), columns(spec, kind), spec.data.source)
    source_rows = len(raw)
    raw = _with_extra(raw, extra, kind.target)
    q = Quarantine(kind.target)
    good, sampled_out = _clean(spec, kind, raw, source_rows, q)
    splits = remove_leaks(kind.split(spec, good), spec.curation, q)
    if reviewed is not None and len(reviewed):
        splits = _add_reviewed(spec, kind, splits, reviewed, q)
    ds = _store(spec, kind, store, raw, splits, q, sampled_out)
    if key is not None:
        versions.remember(store, spec.name, key, ds)
    return ds
