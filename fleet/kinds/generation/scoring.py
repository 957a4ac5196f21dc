"""How a generative specialist is scored on the frozen test split, row by row, with bootstrap intervals.

- exact match: the answer equals the expected one (JSON: the same fields and values; text: the same text);
- JSON answers: schema validity, and field-level precision, recall and F1 (micro over fields: a field is
  right when the answer has it with the expected value; numbers by value, text ignoring case and spaces);
  per-field scores are kept as the "per label" table;
- free text: chrF (character n-gram F-score, n = 1..6, beta = 2), the mean of the rows' scores.

Contenders are compared row by row: McNemar's exact test for exact match, a paired permutation test
(signs of the per-row differences flipped, 9,999 resamples) for the other metrics.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fleet.core.results import ContenderScore, LabelScore, Metric, Outputs, PairedTest, SliceScore
from fleet.core.spec import SpecialistSpec
from fleet.kinds.generation.answers import canonical, fields, parse_json, schema_error
from fleet.kinds.generation.spec import generation_of
from fleet.metrics.bootstrap import bootstrap_indices, interval, mean_with_ci, slice_mask
from fleet.metrics.stats import mcnemar_exact


def chrf(hypothesis: str, reference: str, n: int = 6, beta: float = 2.0) -> float:
    """Sentence chrF (Popovic 2015), spaces removed as sacreBLEU does; 0-1."""
    hyp, ref = hypothesis.replace(" ", ""), reference.replace(" ", "")
    precisions, recalls = [], []
    for k in range(1, n + 1):
        got = Counter(hyp[i : i + k] for i in range(len(hyp) - k + 1))
        want = Counter(ref[i : i + k] for i in range(len(ref) - k + 1))
        if not got or not want:
            continue
        match = sum((got & want).values())
        precisions.append(match / sum(got.values()))
        recalls.append(match / sum(want.values()))
    if not precisions:
        return float(hyp == ref)
    p, r = float(np.mean(precisions)), float(np.mean(recalls))
    return 0.0 if p + r == 0 else (1 + beta**2) * p * r / (beta**2 * p + r)


@dataclass
class Rows:
    """Per-row scores of one contender."""

    exact: np.ndarray
    valid: np.ndarray
    chrf: np.ndarray
    tp: np.ndarray  # fields right
    predicted: np.ndarray  # fields in the answer
    expected: np.ndarray  # fields expected
    per_field: dict[str, np.ndarray]  # field -> (tp, predicted, expected) per row, shape (n, 3)


def per_row(spec: SpecialistSpec, outputs: Outputs, references: list[str]) -> Rows:
    as_json, schema = generation_of(spec).output == "json", generation_of(spec).json_schema
    n = len(references)
    rows = Rows(np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n), {})
    for i, (answer, ref) in enumerate(zip(outputs.predictions, references)):
        rows.exact[i] = canonical(answer, as_json) == canonical(ref, as_json)
        rows.chrf[i] = chrf(answer, ref)
        if as_json:
            obj = parse_json(answer)
            rows.valid[i] = obj is not None and schema_error(obj, schema) is None
            got, want = fields(obj), fields(parse_json(ref))
            for name in set(got) | set(want):
                cell = rows.per_field.setdefault(name, np.zeros((n, 3)))
                cell[i] = (name in got and got.get(name) == want.get(name), name in got, name in want)
            rows.tp[i], rows.predicted[i], rows.expected[i] = (
                sum(got.get(k) == v for k, v in want.items()),
                len(got),
                len(want),
            )
    return rows


def _prf(counts: np.ndarray) -> np.ndarray:
    """(..., 3) sums of (tp, predicted, expected) -> (..., 3) precision, recall, F1."""
    tp, pred, exp = counts[..., 0], counts[..., 1], counts[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(pred > 0, tp / pred, 0.0)
        r = np.where(exp > 0, tp / exp, 0.0)
        f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return np.stack([p, r, f], axis=-1)


def field_scores(counts: np.ndarray, resamples: int, seed: int, level: float) -> list[Metric]:
    """Micro precision, recall and F1 over rows' (tp, predicted, expected), with bootstrap intervals."""
    point = _prf(counts.sum(axis=0))
    boot = _prf(counts[bootstrap_indices(len(counts), resamples, seed)].sum(axis=1))
    return [Metric(value=float(point[j]), ci=interval(boot[:, j], level)) for j in range(3)]


def _metrics(spec: SpecialistSpec, rows: Rows, mask: np.ndarray) -> dict[str, Metric]:
    ev = spec.evaluation
    args = (ev.bootstrap_resamples, ev.seed, ev.confidence_level)
    out = {"exact_match": mean_with_ci(rows.exact[mask], *args), "chrf": mean_with_ci(rows.chrf[mask], *args)}
    if generation_of(spec).output == "json":
        counts = np.stack([rows.tp, rows.predicted, rows.expected], axis=1)[mask]
        out["field_precision"], out["field_recall"], out["field_f1"] = field_scores(counts, *args)
        out["schema_valid"] = mean_with_ci(rows.valid[mask], *args)
    return out


def score(spec: SpecialistSpec, role: str, name: str, outputs: Outputs, test: pd.DataFrame) -> ContenderScore:
    rows = per_row(spec, outputs, test["response"].astype(str).tolist())
    everything = np.ones(len(test), dtype=bool)
    ev = spec.evaluation
    per_field = {}
    for field, counts in sorted(rows.per_field.items()):
        p, r, f = field_scores(counts, ev.bootstrap_resamples, ev.seed, ev.confidence_level)
        per_field[field] = LabelScore(support=int(counts[:, 2].sum()), precision=p, recall=r, f1=f)
    slices = {}
    for sl in ev.slices:
        mask = slice_mask(sl, test)
        slices[sl.name] = SliceScore(n=int(mask.sum()), metrics=_metrics(spec, rows, mask) if mask.any() else {})
    return ContenderScore(
        role=role,
        model=name,
        n=len(test),
        metrics=_metrics(spec, rows, everything),
        per_label=per_field,
        slices=slices,
        outputs=outputs,
    )


def row_metric(spec: SpecialistSpec, rows: Rows) -> np.ndarray:
    metric = spec.gate.metric
    if metric == "field_f1":
        with np.errstate(divide="ignore", invalid="ignore"):
            denominator = rows.predicted + rows.expected
            return np.where(denominator > 0, 2 * rows.tp / denominator, 1.0)
    return {"schema_valid": rows.valid, "chrf": rows.chrf}.get(metric, rows.exact)


def paired_test(spec: SpecialistSpec, references: list[str], a: Outputs, b: Outputs) -> PairedTest:
    """A vs B on the gate metric, row by row."""
    ra, rb = per_row(spec, a, references), per_row(spec, b, references)
    if spec.gate.metric == "exact_match":
        ones = np.ones(len(references))
        return mcnemar_exact(ones, ra.exact, rb.exact)
    from scipy.stats import permutation_test

    x, y = row_metric(spec, ra), row_metric(spec, rb)
    if np.allclose(x, y):
        return PairedTest(test="paired permutation", a_wins=0, b_wins=0, p_value=1.0)
    res = permutation_test(
        (x, y),
        lambda u, v: np.mean(u - v),
        permutation_type="samples",
        n_resamples=9999,
        random_state=spec.evaluation.seed,
    )
    return PairedTest(
        test="paired permutation", a_wins=int((x > y).sum()), b_wins=int((y > x).sum()), p_value=float(res.pvalue)
    )
