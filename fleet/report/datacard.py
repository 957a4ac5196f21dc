"""The curation report: what each rule did, labels before and after, lengths, examples.

It is stored beside each dataset version as ``report.json``, ``DATASET.md`` (the data card) and
``lengths.png``, published as a Prefect artifact by the task layer, and logged to MLflow with the model
trained on it. Examples come from the quarantine, whose texts are already redacted.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from fleet.core.records import DataCard, LengthStats, RuleExample
from fleet.core.spec import SpecialistSpec
from fleet.core.text import normalize_text
from fleet.report.figures import bars_png
from fleet.report.markdown import render

EXAMPLES_PER_RULE = 3
BINS = [0, 20, 40, 80, 160, 320, 640, 1280, 5000, 10**9]


def _lengths(texts: pd.Series) -> LengthStats:
    lengths = texts.astype(str).str.len().to_numpy() if len(texts) else np.zeros(0)
    hist, _ = np.histogram(lengths, bins=BINS)
    some = len(lengths) > 0
    return LengthStats(
        bins=BINS,
        counts=hist.tolist(),
        min=int(lengths.min()) if some else 0,
        median=float(np.median(lengths)) if some else 0.0,
        p95=float(np.percentile(lengths, 95)) if some else 0.0,
        max=int(lengths.max()) if some else 0,
    )


def _examples(quarantine: pd.DataFrame) -> dict[str, list[RuleExample]]:
    examples: dict[str, list[RuleExample]] = {}
    for rule, group in quarantine.groupby("rule", sort=True):
        examples[str(rule)] = [
            RuleExample(
                row=int(r["row"]),
                action=r["action"],
                text=(r["text"] or "")[:200],
                detail=r.get("detail") or None,
            )
            for r in group.head(EXAMPLES_PER_RULE).to_dict("records")
        ]
    return examples


def build_report(
    spec: SpecialistSpec,
    target: str,
    raw: pd.DataFrame,
    quarantine: pd.DataFrame,
    splits: dict[str, pd.DataFrame],
    version: str,
    sampled_out: int = 0,
) -> DataCard:
    kept = pd.concat(list(splits.values()))
    dropped = quarantine[quarantine["action"] == "dropped"]
    changed = quarantine[quarantine["action"] == "changed"]
    is_label = target == "label"
    lengths = {"text": _lengths(kept["text"])} | ({} if is_label else {target: _lengths(kept[target])})
    return DataCard(
        specialist=spec.name,
        version=version,
        source=spec.data.source,
        rows_read=len(raw),
        rows_kept=len(kept),
        dropped=dict(sorted(Counter(dropped["rule"]).items())),
        changed=dict(sorted(Counter(changed["rule"]).items())),
        sampled_out=int(sampled_out),
        labels_before=dict(sorted(Counter(normalize_text(x) for x in raw[target]).most_common(50)))
        if is_label
        else None,
        labels_after={s: dict(sorted(Counter(df[target]).items())) for s, df in splits.items()} if is_label else None,
        splits={s: len(df) for s, df in splits.items()},
        label_sources=dict(
            sorted(Counter(splits["train"].get("label_source", ["original"] * len(splits["train"]))).items())
        ),
        lengths=lengths,
        examples=_examples(quarantine),
        rules=spec.curation.model_dump(),
    )


def report_markdown(report: DataCard) -> str:
    """The data card."""
    label_rows: list[str] = []
    if report.labels_before is not None:
        after = report.labels_after or {}
        label_rows = sorted(set(report.labels_before) | {lab for s in after.values() for lab in s})
    return render("dataset.md.j2", r=report, label_rows=label_rows, zip=zip)


def length_histogram_png(report: DataCard) -> bytes:
    lc = report.lengths["text"]
    names = [f"{lo}-{hi - 1}" if hi < 10**9 else f"{lo}+" for lo, hi in zip(lc.bins[:-1], lc.bins[1:])]
    return bars_png(names, lc.counts, f"{report.specialist} {report.version}: text length", "characters", "rows kept")
