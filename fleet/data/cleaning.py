"""Cleaning rules: every row is kept, changed (with a record) or quarantined with its rule and reason.

The rules that depend on what a specialist predicts (a label, a response) come from its kind as a
:class:`TargetCheck`; the rest apply to every kind, in this order: invalid encoding, PII (redact or drop),
empty text, the target's own rules, length in characters and words, language, exact duplicates (a text
seen with two different targets is ambiguous: all copies go), near-duplicates.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from fleet.core.sections import CurationSpec
from fleet.core.text import normalize_text
from fleet.data.pii import PiiRedactor
from fleet.data.sources import BAD_BYTES, CurationError

_TOKEN = re.compile(r"\w+")
QUARANTINE_TEXT_LIMIT = 1000  # characters of a quarantined text kept in the file (the row number points to the rest)


@dataclass
class Verdict:
    """What a target check decided: the (possibly mapped) value, and the rule that quarantines it, if any."""

    value: str
    rule: str | None = None
    detail: str = ""
    changed: str | None = None  # a rule that changed the value (recorded, row kept)


TargetCheck = Callable[[str, str], Verdict]  # (text, expected answer) -> verdict on the answer


@dataclass
class Quarantine:
    """Collects removed and changed rows, each with its rule, action and original row number."""

    target: str = "label"
    records: list[dict] = field(default_factory=list)

    def add(self, row: int, rule: str, text: str, target: str, action: str = "dropped", detail: str = "") -> None:
        if len(text) > QUARANTINE_TEXT_LIMIT:
            text = text[:QUARANTINE_TEXT_LIMIT] + f" ...[{len(text)} characters]"
        rec = {"row": int(row), "rule": rule, "action": action, "text": text, self.target: target}
        if detail:
            rec["detail"] = detail
        self.records.append(rec)

    def count(self, rule: str) -> int:
        return sum(r["rule"] == rule for r in self.records)

    def frame(self) -> pd.DataFrame:
        cols = ["row", "rule", "action", "text", self.target, "detail"]
        records = sorted(self.records, key=lambda r: (r["row"], r["rule"]))
        df = pd.DataFrame(records, columns=pd.Index(cols))
        return df.astype({"detail": object}).where(df.notna(), None)


class _Redactor:
    """PII redaction, memoized per distinct text (duplicates are common in raw data)."""

    def __init__(self, rules: CurationSpec):
        self.redactor = PiiRedactor(rules.pii.kinds, rules.pii.phone_regions) if rules.pii.kinds else None
        self.seen: dict = {}

    def __call__(self, text: str):
        if self.redactor is None or not text:
            return None
        if text not in self.seen:
            self.seen[text] = self.redactor.redact(text)
        red = self.seen[text]
        return red if red.hits else None


def _language_filter(language: str | None):
    if not language:
        return None
    try:
        import langid
    except ImportError:
        raise CurationError(
            "curation.language is set but the `langid` package is not installed (pip install langid)"
        ) from None
    return lambda text: langid.classify(text)[0]


def _length_rule(text: str, rules: CurationSpec, detect) -> tuple[str, str] | None:
    if len(text) < rules.min_chars:
        return "too-short", f"{len(text)} chars"
    if len(text) > rules.max_chars:
        return "too-long", f"{len(text)} chars"
    words = len(_TOKEN.findall(text))
    if words < rules.min_tokens:
        return "too-few-tokens", f"{words} words"
    if rules.max_tokens is not None and words > rules.max_tokens:
        return "too-many-tokens", f"{words} words"
    if detect is not None and (lang := detect(text)) != rules.language:
        return "language", lang
    return None


@dataclass
class Cleaner:
    """Applies the per-row rules; ``redact_target`` also redacts the target (a generated response)."""

    rules: CurationSpec
    check: TargetCheck
    q: Quarantine
    redact_target: bool = False

    def __post_init__(self) -> None:
        self.redact = _Redactor(self.rules)
        self.detect = _language_filter(self.rules.language)

    def _pii(self, row: int, text: str, target: str) -> tuple[str, str] | None:
        """Redacted (text, target), or None when the row was dropped for PII; one record per row."""
        found = self.redact(text)
        found_target = self.redact(target) if self.redact_target else None
        if found is None and found_target is None:
            return text, target
        kinds = ",".join(sorted(set(found.hits if found else ()) | set(found_target.hits if found_target else ())))
        text = found.text if found else text
        target = found_target.text if found_target else target
        if self.rules.pii.action == "drop-row":
            self.q.add(row, "pii", text, target, detail=kinds)
            return None
        self.q.add(row, "pii", text, target, action="changed", detail=kinds)
        return text, target

    def row(self, row: int, text, target, extra: dict | None = None) -> dict | None:
        """The cleaned row (with ``extra`` columns kept as they are), or None when a rule quarantined it."""
        raw_text = "" if text is None or (isinstance(text, float) and text != text) else str(text)
        if BAD_BYTES in raw_text or BAD_BYTES in str(target):
            self.q.add(row, "invalid-encoding", normalize_text(raw_text).replace(BAD_BYTES, "\ufffd"), "")
            return None
        pair = self._pii(row, normalize_text(raw_text), normalize_text(target))
        if pair is None:
            return None
        ntext, verdict = pair[0], self.check(pair[0], pair[1])
        hit = ("empty-text", "") if not ntext else (verdict.rule, verdict.detail) if verdict.rule else None
        hit = hit or _length_rule(ntext, self.rules, self.detect)
        if hit is not None:
            self.q.add(row, hit[0], ntext, verdict.value, detail=hit[1])
            return None
        if verdict.changed:
            self.q.add(row, verdict.changed, ntext, verdict.value, action="changed", detail=verdict.detail)
        return {"row": int(row), "text": ntext, self.q.target: verdict.value, **(extra or {})}


def drop_exact_duplicates(keep: list[dict], q: Quarantine, conflict_rule: str) -> list[dict]:
    """Keep the first copy of each text; a text seen with different targets is ambiguous, so all copies go."""
    by_text: dict[str, list[dict]] = {}
    for rec in keep:
        by_text.setdefault(rec["text"], []).append(rec)
    kept: list[dict] = []
    for recs in by_text.values():
        if len({r[q.target] for r in recs}) > 1:
            for r in recs:
                q.add(r["row"], conflict_rule, r["text"], r[q.target])
            continue
        kept.append(recs[0])
        for r in recs[1:]:
            q.add(r["row"], "duplicate", r["text"], r[q.target], detail=f"of row {recs[0]['row']}")
    return sorted(kept, key=lambda r: r["row"])


def drop_near_duplicates(kept: list[dict], rules: CurationSpec, q: Quarantine) -> list[dict]:
    """Keep the first row of each near-duplicate group (MinHash LSH on the text)."""
    from fleet.data.dedup import near_duplicate_groups

    nd = rules.near_duplicates
    if not nd.enabled or not kept:
        return kept
    groups = near_duplicate_groups([r["text"] for r in kept], nd.threshold, nd.shingle_size, nd.num_perm, nd.shingle)
    survivors = []
    for i, rec in enumerate(kept):
        if groups[i] == i:
            survivors.append(rec)
        else:
            q.add(rec["row"], "near-duplicate", rec["text"], rec[q.target], detail=f"of row {kept[groups[i]]['row']}")
    return survivors


def clean_rows(df: pd.DataFrame, cleaner: Cleaner, conflict_rule: str) -> pd.DataFrame:
    """Every rule over ``df`` (columns ``row``, ``text`` and the target): the kept rows."""
    target = cleaner.q.target
    extras = [c for c in df.columns if c not in ("row", "text", target)]
    rows = df[extras].to_dict("records") if extras else [{}] * len(df)
    keep = [r for r in map(cleaner.row, df["row"], df["text"], df[target], rows) if r is not None]
    kept = drop_exact_duplicates(keep, cleaner.q, conflict_rule)
    kept = drop_near_duplicates(kept, cleaner.rules, cleaner.q)
    return pd.DataFrame(kept, columns=["row", "text", target, *extras])
