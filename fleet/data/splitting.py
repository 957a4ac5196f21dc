"""Sampling and splitting without leakage.

Splits are seeded and drawn per stratum (per label for a classifier), so each split keeps the label mix.
Texts are unique after cleaning, so no text is in two splits; after the split, every validation/test text
is also checked against train for a remaining near-twin (exact Jaccard on LSH candidates), which is
quarantined as ``leakage``.
"""

from __future__ import annotations

import random

import pandas as pd

from fleet.core.sections import CurationSpec, SplitSpec
from fleet.data.cleaning import Quarantine

SPLITS = ("train", "validation", "test")


def _strata(df: pd.DataFrame, by: str | None) -> list[list[int]]:
    if by is None:
        return [sorted(df.index)]
    return [sorted(group.index) for _, group in sorted(df.groupby(by), key=lambda kv: str(kv[0]))]


def stratified_sample(df: pd.DataFrame, n: int, seed: int, by: str | None = "label") -> pd.DataFrame:
    """At most ``n`` rows, keeping each stratum's share (at least 3 rows of a stratum that has them)."""
    if len(df) <= n:
        return df
    rng = random.Random(seed)
    parts = []
    for idx in _strata(df, by):
        take = max(min(3, len(idx)), round(len(idx) * n / len(df)))
        rng.shuffle(idx)
        parts.extend(idx[:take])
    return df.loc[sorted(parts)]


def stratified_split(df: pd.DataFrame, split: SplitSpec, by: str | None = "label") -> dict[str, pd.DataFrame]:
    """Seeded split per stratum: each gets at least one test and one validation row."""
    rng = random.Random(split.seed)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for idx in _strata(df, by):
        rng.shuffle(idx)
        n_test = max(1, round(len(idx) * split.test))
        n_val = max(1, round(len(idx) * split.validation))
        out["test"] += idx[:n_test]
        out["validation"] += idx[n_test : n_test + n_val]
        out["train"] += idx[n_test + n_val :]
    return {s: df.loc[sorted(ix)].reset_index(drop=True) for s, ix in out.items()}


def group_split(df: pd.DataFrame, split: SplitSpec, group: str) -> dict[str, pd.DataFrame]:
    """Seeded split by whole groups (e.g. the template a generated row came from): a group is in one split.
    Rows without a group (feedback, say) are split row by row, so they never move the groups' split."""
    known = df[group].map(lambda g: isinstance(g, str) and g != "")
    grouped, loose = df[known], df[~known]
    rng = random.Random(split.seed)
    groups = sorted(grouped[group].unique())
    rng.shuffle(groups)
    n_test = max(1, round(len(groups) * split.test))
    n_val = max(1, round(len(groups) * split.validation))
    which = dict.fromkeys(groups[:n_test], "test") | dict.fromkeys(groups[n_test : n_test + n_val], "validation")
    assigned = grouped[group].map(lambda g: which.get(g, "train"))
    out = {s: grouped[assigned == s] for s in SPLITS}
    if len(loose):
        more = stratified_split(loose.reset_index(drop=True), split, by=None)
        out = {s: pd.concat([out[s], more[s]]) for s in SPLITS}
    return {s: out[s].reset_index(drop=True) for s in SPLITS}


def remove_leaks(splits: dict[str, pd.DataFrame], rules: CurationSpec, q: Quarantine) -> dict[str, pd.DataFrame]:
    """Quarantine validation/test rows that still have a near-twin in train (an exact check after LSH)."""
    from fleet.data.dedup import cross_matches

    nd = rules.near_duplicates
    if not nd.enabled:
        return splits
    train = splits["train"]
    for name in ("validation", "test"):
        part = splits[name]
        hits = cross_matches(
            train["text"].tolist(), part["text"].tolist(), nd.threshold, nd.shingle_size, nd.num_perm, nd.shingle
        )
        for qi, ri, j in hits:
            rec = part.iloc[qi]
            q.add(
                rec["row"],
                "leakage",
                rec["text"],
                rec[q.target],
                detail=f"{name} text near-twin of train row {train.iloc[ri]['row']} (Jaccard {j:.2f})",
            )
        if hits:
            splits[name] = part.drop(part.index[[h[0] for h in hits]]).reset_index(drop=True)
    return splits
