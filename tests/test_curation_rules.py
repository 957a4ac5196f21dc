"""Curation rules a compliance team signs: PII, near-duplicates and leakage, lengths, rare labels, bad rows."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest

from conftest import sentences
from fleet.core.spec import CurationSpec
from fleet.core.storage import LocalStore
from fleet.data.dedup import near_duplicate_groups, shingles
from fleet.data.pii import PiiRedactor, iban_ok, luhn_ok
from fleet.data.sources import CurationError
from fleet.data.versions import load_split
from fleet.kinds import parse_fleet
from fleet.kinds.classification import clean
from fleet.stages.curation import curate

LABELS = ["ham", "spam"]


def jaccard(a: str, b: str, n: int = 5, kind: str = "chars") -> float:
    """Exact Jaccard similarity of two texts' shingle sets: what the MinHash estimate approximates."""
    sa, sb = shingles(a, n, kind), shingles(b, n, kind)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def frame(texts, labels=None):
    return pd.DataFrame({"text": texts, "label": labels or ["ham"] * len(texts), "row": range(1, len(texts) + 1)})


def spec_for(source: str, curation: dict | None = None, **data):
    raw = {"specialists": {"s": {"data": {"source": source, **data}, "labels": LABELS, "curation": curation or {}}}}
    return parse_fleet(raw).specialists["s"]


# ---------------------------------------------------------------- PII


@pytest.mark.parametrize(
    "text, expected",
    [
        ("write to jane.roe+x@mail.example.org today", "write to <EMAIL> today"),
        ("call me on +44 20 7946 0958", "call me on <PHONE>"),
        ("US office (415) 555-2671", "US office <PHONE>"),
        ("visa 4111-1111-1111-1111 exp", "visa <CARD> exp"),
        ("pay to DE89 3704 0044 0532 0130 00 thanks", "pay to <IBAN> thanks"),
        ("host 10.0.0.254 down", "host <IP> down"),
        ("v6 2001:db8::8a2e:370:7334 up", "v6 <IP> up"),
    ],
)
def test_pii_is_redacted_with_typed_placeholders(text, expected):
    assert PiiRedactor().redact(text).text == expected


@pytest.mark.parametrize(
    "text",
    [
        "order number 4111 1111 1111 1112 shipped",  # 16 digits that fail Luhn
        "ref DE89 3704 0044 0532 0130 01",  # IBAN shape, wrong checksum
        "score was 300.1.2.999 points",  # not an IP address
        "meet at 10:30:15",  # a time, not IPv6
        "room 12, floor 3, 2 people",  # too few digits for a phone
        "email me at john at example dot com",
    ],
)
def test_pii_true_negatives_are_left_alone(text):
    assert PiiRedactor().redact(text).text == text


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB82WEST12345698765433")


def test_pii_kinds_and_drop_row_action():
    df = frame(["mail a@b.co now", "card 4111111111111111", "clean text"], ["ham", "spam", "ham"])
    good, q = clean(df, LABELS, {}, CurationSpec(pii={"kinds": ["email"], "action": "drop-row"}))
    assert good["text"].tolist() == ["card 4111111111111111", "clean text"]  # cards not configured
    [rec] = q.to_dict("records")
    assert (rec["row"], rec["rule"], rec["action"], rec["detail"], rec["text"]) == (
        1,
        "pii",
        "dropped",
        "email",
        "mail <EMAIL> now",
    )
    good, q = clean(df, LABELS, {}, CurationSpec())
    assert good["text"].tolist()[:2] == ["mail <EMAIL> now", "card <CARD>"]
    assert q["action"].tolist() == ["changed", "changed"]


def test_nothing_unredacted_is_stored(tmp_path):
    rows = [
        {"text": f"{t} from user{i}@corp.example call +1 415 555 {1000 + i}", "label": LABELS[i % 2]}
        for i, t in enumerate(sentences(40))
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    store = LocalStore(tmp_path / "store")
    ds = curate(spec_for(str(tmp_path / "d.csv")), store)
    blob = b"".join(store.get_bytes(k) for k in store.list("") if not k.endswith(".png"))
    assert b"@corp.example" not in blob and b"555 10" not in blob
    assert ds.changed == {"pii": 40}


# ---------------------------------------------------------------- near-duplicates and leakage


def test_near_duplicates_grouped_transitively():
    base = "the quick brown fox jumps over the lazy dog near the river bank today"
    texts = [
        base,
        base + " again",
        "something else entirely about cooking pasta with fresh tomatoes and basil",
        base.replace("today", "now"),
    ]
    assert near_duplicate_groups(texts, threshold=0.7, n=3, kind="words") == [0, 0, 2, 0]
    assert near_duplicate_groups(texts) == [0, 0, 2, 0]  # default: character 5-grams at 0.6
    assert jaccard(texts[0], texts[2], 3, "words") == 0


def test_no_test_text_has_a_near_twin_in_train(tmp_path):
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(400)]
    rows = []
    for i in range(150):
        words = rng.sample(vocab, 18)
        label = LABELS[i % 2]
        rows.append({"text": " ".join(words), "label": label})
        if i % 3 == 0:  # a near-twin: one word changed, maybe a different label casing
            twin = words[:]
            twin[rng.randrange(18)] = "changed"
            rows.append({"text": " ".join(twin), "label": label})
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    store = LocalStore(tmp_path / "store")
    ds = curate(spec_for(str(tmp_path / "d.csv")), store)
    # LSH may miss a pair (it is probabilistic); the exact leakage check after the split catches it
    assert ds.quarantined.get("near-duplicate", 0) + ds.quarantined.get("leakage", 0) >= 48
    train = load_split(store, "s", ds.version, "train")["text"].tolist()
    for split in ("test", "validation"):
        for t in load_split(store, "s", ds.version, split)["text"]:
            assert max(jaccard(t, x) for x in train) < 0.6
    # with near-duplicate removal off, twins do leak: the property above is the rule's doing
    off = curate(spec_for(str(tmp_path / "d.csv"), {"near_duplicates": {"enabled": False}}), store)
    train = load_split(store, "s", off.version, "train")["text"].tolist()
    test = load_split(store, "s", off.version, "test")["text"].tolist()
    assert any(max(jaccard(t, x) for x in train) >= 0.6 for t in test)


# ---------------------------------------------------------------- lengths, labels, languages


def test_length_rules_and_their_counts():
    df = frame(["hi", "a perfectly fine message", "x" * 60, "one two three four five six seven"])
    rules = CurationSpec(min_chars=3, max_chars=50, max_tokens=6, near_duplicates={"enabled": False})
    good, q = clean(df, LABELS, {}, rules)
    assert good["text"].tolist() == ["a perfectly fine message"]
    assert dict(zip(q["row"], q["rule"])) == {1: "too-short", 3: "too-long", 4: "too-many-tokens"}


def test_rare_label_error_or_drop(tmp_path):
    texts = sentences(33)
    rows = [{"text": t, "label": "ham" if i < 30 else "spam"} for i, t in enumerate(texts)]
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    store = LocalStore(tmp_path / "store")
    with pytest.raises(CurationError, match=r"fewer than 5 clean examples .*spam \(3\)"):
        curate(spec_for(str(tmp_path / "d.csv"), {"min_examples_per_label": 5}), store)
    assert store.list("") == []
    # dropping the label leaves one label: still a clear error, never a one-label data set
    with pytest.raises(CurationError, match=r"has 1 label\(s\) \(ham\)"):
        curate(spec_for(str(tmp_path / "d.csv"), {"min_examples_per_label": 5, "on_too_few": "drop-label"}), store)


def test_label_map_is_recorded_as_a_change():
    df = frame(["a b c", "d e f"], ["Spam", "ham"])
    good, q = clean(df, LABELS, {"Spam": "spam"}, CurationSpec())
    assert good["label"].tolist() == ["spam", "ham"]
    assert q.to_dict("records")[0]["detail"] == "Spam -> spam"


# ---------------------------------------------------------------- bad input


def test_invalid_utf8_rows_are_quarantined_not_fatal(tmp_path):
    lines = (
        [b"text,label"]
        + [f"{t},{LABELS[i % 2]}".encode() for i, t in enumerate(sentences(20))]
        + [b"bad \xff\xfe row,ham"]
    )
    (tmp_path / "d.csv").write_bytes(b"\n".join(lines) + b"\n")
    store = LocalStore(tmp_path / "store")
    ds = curate(spec_for(str(tmp_path / "d.csv")), store)
    assert ds.quarantined == {"invalid-encoding": 1}
    q = [json.loads(x) for x in store.get_bytes(f"datasets/s/{ds.version}/quarantine.jsonl").splitlines()]
    assert q[0]["row"] == 21 and "\ufffd" in q[0]["text"]


def test_a_long_row_is_quarantined_and_a_10mb_field_refuses_the_file(tmp_path):
    rows = [{"text": t, "label": LABELS[i % 2]} for i, t in enumerate(sentences(20))]
    rows.append({"text": "y " * 450_000, "label": "ham"})  # 0.9 MB: a long text
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    store = LocalStore(tmp_path / "store")
    ds = curate(spec_for(str(tmp_path / "d.csv")), store)
    assert ds.quarantined == {"too-long": 1}
    q = store.get_bytes(f"datasets/s/{ds.version}/quarantine.jsonl")
    assert len(q) < 5000  # the quarantine keeps the row number and a prefix, not the whole row
    rows[-1]["text"] = "y " * 5_000_000  # 10 MB in one field: a quote left open swallowed the file, or binary data
    pd.DataFrame(rows).to_csv(tmp_path / "big.csv", index=False)
    with pytest.raises(CurationError, match=r"big\.csv: row 21: text is 10,000,000 characters long"):
        curate(spec_for(str(tmp_path / "big.csv")), LocalStore(tmp_path / "other"))


def test_data_card_is_written_beside_the_version(tmp_path):
    rows = [{"text": f"{t} mail x{i}@y.org", "label": LABELS[i % 2]} for i, t in enumerate(sentences(20))]
    rows.append({"text": "", "label": "ham"})
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    store = LocalStore(tmp_path / "store")
    ds = curate(spec_for(str(tmp_path / "d.csv")), store)
    card = store.get_bytes(f"datasets/s/{ds.version}/DATASET.md").decode()
    assert "| empty-text | 1 | 0 |" in card and "| pii | 0 | 20 |" in card
    assert f"{sentences(1)[0]} mail <EMAIL>" in card and "@y.org" not in card
    assert store.get_bytes(f"datasets/s/{ds.version}/lengths.png")[:4] == b"\x89PNG"
    report = json.loads(store.get_bytes(f"datasets/s/{ds.version}/report.json"))
    assert report["labels_before"] == {"ham": 11, "spam": 10}


def test_leakage_check_removes_a_twin_that_lsh_missed(tmp_path):
    """Near-duplicate removal off in the grouping stage cannot happen with the check on, so test the check alone."""
    from fleet.data.cleaning import Quarantine
    from fleet.data.splitting import remove_leaks

    base = sentences(30, seed=3, words=12)
    train = pd.DataFrame({"row": range(1, 31), "text": base, "label": "ham"})
    twin = base[5].split()
    twin[3] = "different"
    test = pd.DataFrame({"row": [100, 101], "text": [" ".join(twin), sentences(1, seed=99)[0]], "label": "ham"})
    q = Quarantine()
    out = remove_leaks({"train": train, "validation": test.iloc[:0], "test": test}, CurationSpec(), q)
    assert out["test"]["row"].tolist() == [101]
    [rec] = q.records
    assert rec["row"] == 100 and rec["rule"] == "leakage" and "train row 6" in rec["detail"]


def test_language_filter():
    df = frame(
        [
            "this is a perfectly normal english sentence about the weather",
            "ceci est une phrase parfaitement normale en français sur la météo",
            "another english message about dinner plans tonight",
        ]
    )
    good, q = clean(df, LABELS, {}, CurationSpec(language="en", near_duplicates={"enabled": False}))
    assert good["row"].tolist() == [1, 3]
    [rec] = q.to_dict("records")
    assert (rec["row"], rec["rule"], rec["detail"]) == (2, "language", "fr")


def test_signatures_and_groups_are_exactly_datasketchs():
    """fleet.data.dedup computes datasketch's MinHash (2.x, affine32, seed 1, xxh32 shingles) for all texts at once:
    same signatures, so near-duplicate groups and data versions are the same as with datasketch itself."""
    import numpy as np
    import xxhash
    from datasketch import MinHash, MinHashLSH

    from fleet.data.dedup import shingles, signatures

    texts = [*sentences(300, seed=5), "", "a", "héllo wörld ünïcode", "emoji 😀😀😀😀 here", "日本語のテキストです長い"]
    texts += [t.replace("a", "e", 1) for t in texts[:60]]  # one-edit twins
    for kind in ("words", "chars"):
        ours = signatures(texts, 5, 128, kind)
        mh = MinHash.bulk([shingles(t, 5, kind) for t in texts], num_perm=128, seed=1, hashfunc=xxhash.xxh32_intdigest)
        assert np.array_equal(ours, np.stack([m.hashvalues for m in mh]))
    lsh = MinHashLSH(threshold=0.6, num_perm=128)  # the character 5-gram signatures, as curation uses them
    for i, m in enumerate(mh):
        lsh.insert(i, m)
    expected = {
        (min(i, j), max(i, j)) for i, m in enumerate(mh) for j in lsh.query(m) if i != j and m.jaccard(mh[j]) >= 0.6
    }
    groups = near_duplicate_groups(texts)
    assert len(expected) >= 40 and all(groups[j] == groups[i] for i, j in expected)
    assert sum(g != i for i, g in enumerate(groups)) == len({j for _, j in expected})
