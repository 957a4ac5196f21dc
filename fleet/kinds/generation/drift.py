"""A generative specialist's drift signals: input (prompt embeddings), output length, JSON validity and,
with feedback, exact match; its reference comes from the challenger's own evaluation outputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fleet.core.results import EvaluationReport
from fleet.kinds.generation.answers import valid
from fleet.metrics.drift import (
    DriftVerdict,
    Reference,
    TrafficWindow,
    distribution_drift,
    input_drift,
    rate_drift,
    verdict,
)
from fleet.report.figures import reference_vs_current_png


def build_reference(
    embeddings: np.ndarray, report: EvaluationReport, embedding_model: str, max_length: int, as_json: bool
) -> Reference:
    c = report.challenger
    answers = c.outputs.predictions if c.outputs else []
    rates = {"exact_match": c.value("exact_match")}
    if as_json:
        rates["schema_valid"] = c.value("schema_valid")
    return Reference(
        embeddings=embeddings,
        samples={"output_length": np.array([len(a) for a in answers], float)},
        rates=rates,
        embedding_model=embedding_model,
        max_length=max_length,
    )


def validity(rows: pd.DataFrame, schema: dict | None) -> np.ndarray:
    return np.array([valid(str(a), schema) for a in rows["output"]], dtype=bool)


def detect(
    ref: Reference,
    window: TrafficWindow,
    thresholds: dict[str, float],
    permutations: int,
    seed: int,
    schema: dict | None,
) -> DriftVerdict:
    rows = window.rows
    lengths = rows["output"].astype(str).str.len().to_numpy(dtype=float)
    signals = {
        "input": input_drift(ref.embeddings, window.embeddings, permutations, seed),
        "output_length": distribution_drift(ref.samples["output_length"], lengths),
    }
    if "schema_valid" in ref.rates:
        signals["schema_valid"] = rate_drift(ref.rates["schema_valid"], int(validity(rows, schema).sum()), len(rows))
    if window.feedback is not None and window.feedback[1] > 0:
        signals["performance"] = rate_drift(ref.rates["exact_match"], *window.feedback)
    return verdict(signals, thresholds, len(rows))


def figure(name: str, ref: Reference, rows: pd.DataFrame, schema: dict | None) -> bytes:
    panels: list[tuple[str, str, Any, Any]] = [
        (
            "answer length (characters)",
            "hist",
            ref.samples["output_length"],
            rows["output"].astype(str).str.len().to_numpy(dtype=float),
        )
    ]
    if "schema_valid" in ref.rates:
        current = float(validity(rows, schema).mean()) if len(rows) else 0.0
        panels.append(("valid JSON answers", "bars", {"valid": ref.rates["schema_valid"]}, {"valid": current}))
    return reference_vs_current_png(f"{name}: reference vs current traffic", panels)
