"""The curation report: what each rule did, label mix before and after, lengths, examples.

It is stored beside each dataset version as ``report.json``, ``DATASET.md`` (the
data card) and ``lengths.png``, published as a Prefect artifact by the task
layer, and logged to MLflow with the model trained on it. Examples are taken
from the quarantine file, whose texts are already redacted.
"""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pandas as pd

from fleet.spec import SpecialistSpec

EXAMPLES_PER_RULE = 3
BINS = [0, 20, 40, 80, 160, 320, 640, 1280, 5000, 10**9]


def build_report(
    spec: SpecialistSpec, raw: pd.DataFrame, quarantine: pd.DataFrame, splits: dict[str, pd.DataFrame],
    version: str, sampled_out: int = 0,
) -> dict:
    from fleet.curation import normalize_text

    kept = pd.concat(list(splits.values()))
    lengths = kept["text"].str.len().to_numpy() if len(kept) else np.zeros(0)
    dropped = quarantine[quarantine["action"] == "dropped"]
    changed = quarantine[quarantine["action"] == "changed"]
    examples = {}
    for rule, group in quarantine.groupby("rule", sort=True):
        examples[rule] = [
            {"row": int(r["row"]), "action": r["action"], "text": (r["text"] or "")[:200], **({"detail": r["detail"]} if r.get("detail") else {})}
            for r in group.head(EXAMPLES_PER_RULE).to_dict("records")
        ]
    hist, _ = np.histogram(lengths, bins=BINS)
    return {
        "specialist": spec.name,
        "version": version,
        "source": spec.data.source,
        "rows_read": len(raw),
        "rows_kept": len(kept),
        "dropped": dict(sorted(Counter(dropped["rule"]).items())),
        "changed": dict(sorted(Counter(changed["rule"]).items())),
        "sampled_out": int(sampled_out),
        "labels_before": dict(sorted(Counter(normalize_text(x) for x in raw["label"]).most_common(50))),
        "labels_after": {s: dict(sorted(Counter(df["label"]).items())) for s, df in splits.items()},
        "splits": {s: len(df) for s, df in splits.items()},
        "length_chars": {
            "bins": BINS,
            "counts": hist.tolist(),
            "min": int(lengths.min()) if len(lengths) else 0,
            "median": float(np.median(lengths)) if len(lengths) else 0.0,
            "p95": float(np.percentile(lengths, 95)) if len(lengths) else 0.0,
            "max": int(lengths.max()) if len(lengths) else 0,
        },
        "examples": examples,
        "rules": spec.curation.model_dump(),
    }


def report_markdown(report: dict) -> str:
    """The data card."""
    r = report
    lines = [
        f"# Dataset `{r['specialist']}` version `{r['version']}`",
        "",
        f"Source: `{r['source']}`. Rows read: {r['rows_read']}; kept: {r['rows_kept']} "
        f"({', '.join(f'{k} {v}' for k, v in r['splits'].items())})"
        + (f"; {r['sampled_out']} clean rows left out by `max_rows`." if r["sampled_out"] else "."),
        "",
        "## Rules",
        "| rule | rows dropped | rows changed |",
        "|---|---:|---:|",
    ]
    for rule in sorted(set(r["dropped"]) | set(r["changed"])):
        lines.append(f"| {rule} | {r['dropped'].get(rule, 0)} | {r['changed'].get(rule, 0)} |")
    if not (r["dropped"] or r["changed"]):
        lines.append("| (none fired) | 0 | 0 |")
    lines += ["", "## Labels", "| label | in the file | train | validation | test |", "|---|---:|---:|---:|---:|"]
    after = r["labels_after"]
    for label in sorted(set(r["labels_before"]) | {lab for s in after.values() for lab in s}):
        lines.append(
            f"| {label or '(empty)'} | {r['labels_before'].get(label, 0)} | "
            + " | ".join(str(after[s].get(label, 0)) for s in ("train", "validation", "test")) + " |"
        )
    lc = r["length_chars"]
    lines += [
        "",
        f"## Length (characters, kept rows)\nmin {lc['min']}, median {lc['median']:.0f}, p95 {lc['p95']:.0f}, max {lc['max']}",
        "",
        "| chars | rows |",
        "|---|---:|",
    ]
    for lo, hi, n in zip(lc["bins"][:-1], lc["bins"][1:], lc["counts"]):
        lines.append(f"| {lo}-{hi - 1 if hi < 10**9 else '...'} | {n} |")
    if r["examples"]:
        lines += ["", "## Examples of each rule's hits (texts redacted)"]
        for rule, exs in r["examples"].items():
            lines.append(f"\n**{rule}**")
            for e in exs:
                detail = f" ({e['detail']})" if e.get("detail") else ""
                text = e["text"].replace("|", "\\|").replace("\n", " ")
                lines.append(f"- row {e['row']}, {e['action']}{detail}: {text}")
    return "\n".join(lines) + "\n"


def length_histogram_png(report: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lc = report["length_chars"]
    labels = [f"{lo}-{hi - 1}" if hi < 10**9 else f"{lo}+" for lo, hi in zip(lc["bins"][:-1], lc["bins"][1:])]
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    ax.bar(labels, lc["counts"], color="#4C72B0")
    ax.set_xlabel("characters")
    ax.set_ylabel("rows kept")
    ax.set_title(f"{report['specialist']} {report['version']}: text length")
    ax.tick_params(axis="x", labelsize=8, rotation=30)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
