"""Evaluation on the frozen test split and the promotion gate.

Three contenders are scored on the same test rows: the new model (challenger),
the model in production (champion, when there is one), and general-purpose
baselines that are not fine-tuned (``fleet.baselines``; by default zero-shot
classification by cosine similarity between the base encoder's sentence
embedding of a text and of each label's description). Each gets metrics with
bootstrap intervals, calibration, per-slice metrics, and its measured latency,
throughput and cost; the gate compares them with paired tests.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

from fleet.spec import EvaluationSpec, GateSpec, SliceSpec, SpecialistSpec
from fleet.stats import expected_calibration_error, mcnemar_exact, metrics_with_ci


def metrics(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict[str, float]:
    """Accuracy and macro-F1 over the declared labels (a label never predicted scores 0 F1)."""
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "n": len(y_true),
    }


class ZeroShotEmbeddingBaseline:
    """The general baseline: nearest label description in the base encoder's embedding space."""

    temperature = 0.05  # turns cosine similarities into a peaked distribution for scores

    def __init__(self, base_model: str, label_descriptions: dict[str, str], max_length: int = 128):
        from transformers import AutoModel

        from fleet.training import load_tokenizer, resolve_base_model

        self.labels = list(label_descriptions)
        self.name = f"zero-shot {base_model}"
        self.tokenizer = load_tokenizer(base_model)
        self.model_dir = resolve_base_model(base_model)
        self.model = AutoModel.from_pretrained(self.model_dir).eval()
        self.max_length = max_length
        self.label_emb = self.embed([label_descriptions[lab] for lab in self.labels])

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Mean-pooled, L2-normalised sentence embeddings (the sentence-transformers recipe)."""
        import torch

        from fleet.modeling import batches, mean_pool

        out = []
        with torch.inference_mode():
            for enc in batches(self.tokenizer, texts, self.max_length, batch_size):
                pooled = mean_pool(self.model(**enc).last_hidden_state, enc["attention_mask"])
                out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.config.hidden_size))

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        sims = self.embed(texts) @ self.label_emb.T
        z = np.exp((sims - sims.max(axis=1, keepdims=True)) / self.temperature)
        return z / z.sum(axis=1, keepdims=True)

    def predict(self, texts: list[str]) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]


@dataclass
class GateDecision:
    promote: bool
    verdict: str  # promote | keep-champion | reject | retire
    metric: str
    reasons: list[str] = field(default_factory=list)
    thresholds: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


VERDICTS = ("promote", "keep-champion", "reject", "retire")


def gate(
    challenger: dict,
    baseline: dict,
    champion: dict | None,
    spec: GateSpec,
    p_vs_champion: float | None = None,
    slice_regressions: list[str] | None = None,
    slice_tolerances: dict[str, float] | None = None,
) -> GateDecision:
    """The promotion decision, with every threshold it used and a reason per check.

    Promote only if the challenger beats the best general baseline by ``min_gain_over_baseline``;
    beats the champion (if any) by more than ``min_gain_over_champion`` with McNemar p < ``alpha``;
    regresses on no guarded slice; and stays within the latency and cost budgets. When neither
    challenger nor champion clears the baseline margin, the verdict is ``retire``: the general
    model does the job as well, so the specialist no longer earns its keep.
    """
    m = spec.metric
    c, b = challenger[m], baseline[m]
    reasons: list[str] = []
    ok_baseline = c - b >= spec.min_gain_over_baseline
    reasons.append(f"{m} {c:.4f} vs general baseline {b:.4f}: gain {c - b:+.4f} "
                   f"{'>=' if ok_baseline else '<'} required {spec.min_gain_over_baseline:.4f}")
    ok_champion = True
    champion_earns = True
    if champion is None:
        reasons.append("no champion yet")
    else:
        ch = champion[m]
        champion_earns = ch - b >= spec.min_gain_over_baseline
        gain_ok = c - ch > spec.min_gain_over_champion
        significant = p_vs_champion is not None and p_vs_champion < spec.alpha
        ok_champion = gain_ok and significant
        p_text = "n/a" if p_vs_champion is None else f"{p_vs_champion:.4g}"
        reasons.append(f"{m} {c:.4f} vs champion {ch:.4f}: gain {c - ch:+.4f} "
                       f"{'>' if gain_ok else '<='} required {spec.min_gain_over_champion:.4f}; "
                       f"McNemar p={p_text} {'<' if significant else '>='} alpha {spec.alpha}")
        if not champion_earns:
            reasons.append(f"champion's gain over the general baseline {ch - b:+.4f} < {spec.min_gain_over_baseline:.4f}")
    regressions = list(slice_regressions or [])
    reasons += [f"guarded slice regressed: {r}" for r in regressions]
    budget_fail = []
    lat = challenger.get("latency_p95_ms")
    if spec.max_latency_p95_ms is not None:
        if lat is None or lat > spec.max_latency_p95_ms:
            budget_fail.append(f"latency p95 {lat} ms > budget {spec.max_latency_p95_ms} ms")
    cost = challenger.get("cost_per_1k")
    if spec.max_cost_per_1k is not None:
        if cost is None or cost > spec.max_cost_per_1k:
            budget_fail.append(f"cost per 1k {cost} > budget {spec.max_cost_per_1k}")
    reasons += budget_fail

    if not ok_baseline:
        verdict = "retire" if champion is not None and not champion_earns else "reject"
    elif regressions or budget_fail:
        verdict = "reject"
    elif not ok_champion:
        verdict = "keep-champion"
    else:
        verdict = "promote"
    return GateDecision(
        promote=verdict == "promote",
        verdict=verdict,
        metric=m,
        reasons=reasons,
        thresholds={
            "metric": m,
            "min_gain_over_baseline": spec.min_gain_over_baseline,
            "min_gain_over_champion": spec.min_gain_over_champion,
            "alpha": spec.alpha,
            "max_latency_p95_ms": spec.max_latency_p95_ms,
            "max_cost_per_1k": spec.max_cost_per_1k,
            "guarded_slice_tolerances": dict(slice_tolerances or {}),
        },
    )


# --------------------------------------------------------------------------- measuring


def slice_mask(sl: SliceSpec, test: pd.DataFrame) -> np.ndarray:
    mask = np.ones(len(test), dtype=bool)
    texts = test["text"].astype(str)
    if sl.column is not None:
        if sl.column not in test.columns:
            raise ValueError(f"slice {sl.name}: column {sl.column!r} is not kept (add it to data.extra_columns)")
        mask &= (test[sl.column].astype(str) == sl.value).to_numpy()
    if sl.min_chars is not None:
        mask &= (texts.str.len() >= sl.min_chars).to_numpy()
    if sl.max_chars is not None:
        mask &= (texts.str.len() <= sl.max_chars).to_numpy()
    if sl.regex is not None:
        pattern = re.compile(sl.regex)
        mask &= np.array([bool(pattern.search(t)) for t in texts])
    return mask


def measure(predict_proba, texts: list[str], ev: EvaluationSpec, on_gpu: bool = False) -> tuple[np.ndarray, dict]:
    """Predict the whole test split at the serving batch size (timed), then time single-text calls."""
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    probs = np.concatenate([predict_proba(texts[i : i + ev.serving_batch_size])
                            for i in range(0, len(texts), ev.serving_batch_size)])
    wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    lat = []
    for i in range(min(ev.latency_samples, len(texts))):
        t0 = time.perf_counter()
        predict_proba(texts[i : i + 1])
        lat.append((time.perf_counter() - t0) * 1000)
    n = max(len(texts), 1)
    cpu_per_1k = cpu / n * 1000
    cost = (wall / n * 1000) / 3600 * ev.price_per_gpu_hour if on_gpu else cpu_per_1k / 3600 * ev.price_per_cpu_hour
    return probs, {
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 2) if lat else None,
        "latency_p95_ms": round(float(np.percentile(lat, 95)), 2) if lat else None,
        "throughput_per_s": round(n / wall, 1) if wall > 0 else None,
        "serving_batch_size": ev.serving_batch_size,
        "cpu_seconds_per_1k": round(cpu_per_1k, 3),
        "cost_per_1k": round(cost, 6),
    }


def dir_size(path: str | Path | None) -> int | None:
    if not path or not Path(path).is_dir():
        return None
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def score(name: str, probs: np.ndarray, y: np.ndarray, labels: list[str], test: pd.DataFrame, spec: SpecialistSpec,
          cost: dict, size: dict) -> dict:
    ev = spec.evaluation
    pred = probs.argmax(axis=1)
    out = {"model": name, **metrics_with_ci(y, pred, labels, ev.bootstrap_resamples, ev.seed, ev.confidence_level)}
    out["ece"] = round(expected_calibration_error(probs, y), 4)
    out["slices"] = {}
    for sl in ev.slices:
        mask = slice_mask(sl, test)
        if mask.sum() == 0:
            out["slices"][sl.name] = {"n": 0}
            continue
        # score a slice over the labels that occur in it (a label absent from the slice would add a 0 F1)
        active = sorted(set(y[mask].tolist()) | set(pred[mask].tolist()))
        recode = {c: i for i, c in enumerate(active)}
        res = metrics_with_ci(np.array([recode[c] for c in y[mask]]), np.array([recode[c] for c in pred[mask]]),
                              [labels[c] for c in active], ev.bootstrap_resamples, ev.seed, ev.confidence_level)
        out["slices"][sl.name] = {**{k: res[k] for k in ("n", "accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci")},
                                  "labels": [labels[c] for c in active]}
    return {**out, **cost, **size, "predictions": pred.tolist()}


def confusion_png(y: np.ndarray, pred: np.ndarray, labels: list[str], title: str, path: str | Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fleet.stats import confusion

    cm = confusion(np.asarray(y), np.asarray(pred), len(labels))
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2.5, 1.1 * len(labels) + 2), dpi=100)
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def evaluate_specialist(
    spec: SpecialistSpec,
    test: pd.DataFrame,
    dataset_version: str,
    model_dir: str,
    max_length: int,
    champion: tuple[str, str] | None = None,
    workdir: str | Path | None = None,
) -> dict:
    """Score challenger, champion (``(version, model folder)``) and the baselines on ``test``; apply the gate."""
    import torch

    from fleet.baselines import build_baseline
    from fleet.training import TextClassifier

    texts = test["text"].tolist()
    labels = list(spec.labels)
    y = np.array([labels.index(lab) for lab in test["label"]])
    ev = spec.evaluation
    gpu = torch.cuda.is_available()

    def model_score(name: str, folder: str) -> dict:
        clf = TextClassifier(folder)
        probs, cost = measure(lambda b: clf.predict_proba(b, batch_size=ev.serving_batch_size), texts, ev, gpu)
        size = {"size_bytes": dir_size(folder), "parameters": sum(p.numel() for p in clf.model.parameters())}
        return score(name, probs, y, labels, test, spec, cost, size)

    contenders: dict[str, dict | None] = {"challenger": model_score("new version", model_dir)}
    contenders["champion"] = model_score(f"v{champion[0]}", champion[1]) if champion else None
    baselines = []
    for bspec in ev.baselines:
        b = build_baseline(bspec, spec, max_length)
        probs, cost = measure(b.predict_proba, texts, ev, gpu)
        api_cost = b.cost_per_1k(len(texts) + min(ev.latency_samples, len(texts))) if hasattr(b, "cost_per_1k") else None
        if api_cost is not None:  # a remote model: what it costs is what the API bills
            cost = {**cost, "cost_per_1k": round(api_cost, 6), "cpu_seconds_per_1k": None}
        model = getattr(b, "model", None)
        size = {"size_bytes": dir_size(getattr(b, "model_dir", None)),
                "parameters": sum(p.numel() for p in model.parameters()) if hasattr(model, "parameters") else None}
        baselines.append(score(b.name, probs, y, labels, test, spec, cost, size))
    m = spec.gate.metric
    contenders["baseline"] = max(baselines, key=lambda r: r[m])  # the gate faces the strongest general model

    chal_pred = np.array(contenders["challenger"]["predictions"])
    paired = {"vs_baseline": mcnemar_exact(y, chal_pred, np.array(contenders["baseline"]["predictions"]))}
    regressions, tolerances = [], {}
    if contenders["champion"]:
        paired["vs_champion"] = mcnemar_exact(y, chal_pred, np.array(contenders["champion"]["predictions"]))
        for sl in ev.slices:
            if not sl.guarded:
                continue
            tolerances[sl.name] = sl.tolerance
            new, old = contenders["challenger"]["slices"][sl.name], contenders["champion"]["slices"][sl.name]
            if new.get("n") and old.get(m) is not None and new[m] < old[m] - sl.tolerance:
                regressions.append(f"{sl.name}: {m} {new[m]:.4f} < champion {old[m]:.4f} - tolerance {sl.tolerance}")
    decision = gate(
        contenders["challenger"], contenders["baseline"], contenders["champion"], spec.gate,
        p_vs_champion=paired.get("vs_champion", {}).get("p_value"),
        slice_regressions=regressions, slice_tolerances=tolerances,
    )
    plots = {}
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        for role in ("challenger", "champion", "baseline"):
            if contenders.get(role):
                plots[role] = confusion_png(y, np.array(contenders[role]["predictions"]), labels,
                                            f"{spec.name}: {role} ({contenders[role]['model']})",
                                            Path(workdir) / f"confusion_{role}.png")
    for r in [*baselines, *(c for c in contenders.values() if c)]:
        r.pop("predictions", None)
    return {
        "specialist": spec.name,
        "dataset_version": dataset_version,
        "test_examples": len(test),
        "labels": labels,
        "contenders": contenders,
        "baselines": baselines,
        "paired_tests": paired,
        "gate": decision.to_dict(),
        "plots": plots,
    }


def _ci(c: dict, key: str) -> str:
    lo, hi = c.get(f"{key}_ci", [None, None])
    return f"{c[key]:.4f} [{lo:.3f}, {hi:.3f}]" if lo is not None else f"{c[key]:.4f}"


def report_markdown(report: dict) -> str:
    """The evaluation report and decision record as markdown (shown as a Prefect artifact)."""
    lines = [
        f"# Evaluation of `{report['specialist']}`",
        "",
        f"Frozen test split of dataset version `{report['dataset_version']}`: {report['test_examples']} examples. "
        "Intervals: 95% bootstrap.",
        "",
        "| contender | model | accuracy | macro-F1 | ECE | p50 / p95 ms | per s | cost / 1k |",
        "|---|---|---|---|---:|---|---:|---:|",
    ]
    for role in ("challenger", "champion", "baseline"):
        c = report["contenders"].get(role)
        if not c:
            lines.append(f"| {role} | none | | | | | | |")
            continue
        cost = "" if c.get("cost_per_1k") is None else f"{c['cost_per_1k']:.6f}"
        lines.append(f"| {role} | {c['model']} | {_ci(c, 'accuracy')} | {_ci(c, 'macro_f1')} | {c.get('ece', '')} | "
                     f"{c.get('latency_p50_ms')} / {c.get('latency_p95_ms')} | {c.get('throughput_per_s')} | {cost} |")
    slices = report["contenders"]["challenger"].get("slices") or {}
    if slices:
        lines += ["", "| slice | n | challenger macro-F1 | champion macro-F1 | baseline macro-F1 |", "|---|---:|---|---|---|"]
        for name, sl in slices.items():
            cells = []
            for role in ("challenger", "champion", "baseline"):
                c = report["contenders"].get(role)
                s = (c or {}).get("slices", {}).get(name, {})
                cells.append(_ci(s, "macro_f1") if s.get("n") else "")
            lines.append(f"| {name} | {sl.get('n', 0)} | " + " | ".join(cells) + " |")
    pt = report.get("paired_tests", {})
    if pt:
        lines += [""] + [f"- McNemar {k.replace('_', ' ')}: only challenger right {v['only_a_correct']}, "
                         f"only other right {v['only_b_correct']}, p = {v['p_value']:.4g}" for k, v in pt.items()]
    g = report["gate"]
    lines += ["", f"**Gate verdict: {g['verdict']}** (metric `{g['metric']}`)", ""]
    lines += [f"- {r}" for r in g["reasons"]]
    lines += ["", "Thresholds: " + ", ".join(f"`{k}`={v}" for k, v in g["thresholds"].items())]
    return "\n".join(lines) + "\n"
